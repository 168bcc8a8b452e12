"""An NPC's memories: texts with metadata, their embeddings, and a nearest-neighbour index over them.

Two indexes answer the same three verbs (`add`, `remove`, `search`): `ExactIndex`, a numpy matrix product
that is exact and fastest for a few thousand memories, and `HnswIndex`, an hnswlib graph (cosine space)
for larger stores. `MemoryStore` starts exact and moves to hnswlib once it holds more than
`exact_limit` memories; the exact index is also the oracle the tests hold hnswlib to.

Embeddings are kept as int8 codes with one scale per vector: a thousand memories then save in under
400 KB, and a store rebuilt from a save indexes exactly the vectors it had before. The index is always
rebuilt from the codes, never read from a file: hnswlib's own file format is unversioned and its reader
is not hardened against a hostile save.

A memory may also carry cues: questions a player might ask that should recall it (the writer's drill
questions, at build time). Matching a player's line against questions like it finds the right memory far
more often than matching it against the statement itself: on the demo's held-out persona test, the facts
an answer needs were in the note for 83 % of questions with cues against 70 % without, for a note of 3
memories above 0.3 (`benchmarks/recall_threshold.py`). A memory scores the best of its own text's cosine
and its cues', the latter less `CUE_DISCOUNT`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Sequence

import hnswlib
import numpy as np

from ..bundle import Bundle, read_memories
from ..errors import BundleFormatError, InvalidArgumentError, ModelError
from .gating import Condition, Value, parse_condition

KINDS = ("world", "persona", "event", "summary")
# Memories from the bundle have ids below OWN_FIRST_ID; those an NPC gains in play, from it up, so the
# ids a game holds stay valid when a patched bundle brings more memories.
OWN_FIRST_ID = 1 << 32
MAX_MEMORY_CHARS = 2000
MAX_MEMORIES = 1_000_000
MAX_CUES = 1_000_000
EXACT_LIMIT = 2048
# Ranking adds IMPORTANCE_WEIGHT * (importance - 0.5) to the cosine: a tie-breaker between memories about
# equally relevant, never enough to lift an unrelated memory over a relevant one.
IMPORTANCE_WEIGHT = 0.1
# A cue's cosine counts this much less than the memory's own text's: two questions are alike in form
# whatever they ask (MiniLM gives "Where's the dog?" 0.44 against "Where do you live?"), so a cue must be
# much closer than a statement to say as much. Measured in benchmarks/recall_threshold.py.
CUE_DISCOUNT = 0.15


@dataclass(frozen=True)
class Memory:
    id: int
    text: str
    kind: str
    source: str = ""
    game_time: float | None = None
    importance: float = 0.5
    requires: str = ""  # a gating condition (see gating.py); "" means always known


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, dim] float → int8 codes [n, dim] and float32 scales [n], one symmetric scale per vector."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scales = np.abs(vectors).max(axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The unit vectors the index holds for int8 codes [n, dim] and scales [n]."""
    vectors = codes.astype(np.float32) * scales[:, None]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class ExactIndex:
    """Exact cosine search by one matrix product over every stored unit vector."""

    def __init__(self, dim: int):
        self.dim = dim
        self._vectors = np.zeros((0, dim), dtype=np.float32)  # [capacity, dim], unit rows
        self._ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._rows: dict[int, int] = {}
        self._used = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        n = len(ids)
        if self._used + n > len(self._ids):
            capacity = max(64, 2 * (self._used + n))
            self._vectors = np.resize(self._vectors, (capacity, self.dim))
            self._ids = np.resize(self._ids, capacity)
            self._alive = np.resize(self._alive, capacity)
        rows = slice(self._used, self._used + n)
        self._vectors[rows] = vectors
        self._ids[rows] = ids
        self._alive[rows] = True
        self._rows.update(zip((int(i) for i in ids), range(self._used, self._used + n)))
        self._used += n

    def remove(self, memory_id: int) -> None:
        row = self._rows.pop(memory_id)
        self._alive[row] = False

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k ids most similar to the unit `vector` [dim], best first (ties: lower id first)."""
        k = min(k, len(self._rows))
        if k <= 0:
            return []
        scores = self._vectors[: self._used] @ vector  # [used]
        scores[~self._alive[: self._used]] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k] if k < self._used else np.arange(self._used)
        top = top[np.lexsort((self._ids[top], -scores[top]))][:k]
        return [(int(self._ids[r]), float(scores[r])) for r in top]


class HnswIndex:
    """Approximate cosine search on an hnswlib graph.

    Built with one thread and a fixed seed, so the same vectors added in the same order make the same
    graph. Measured at 10,000 MiniLM memories: recall@10 against ExactIndex and query time are in
    `benchmarks/memory.py`.
    """

    M = 16
    EF_CONSTRUCTION = 200
    EF_SEARCH = 64
    SEED = 487

    def __init__(self, dim: int, capacity: int = 1024):
        self.dim = dim
        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._index.init_index(max_elements=capacity, ef_construction=self.EF_CONSTRUCTION, M=self.M,
                               random_seed=self.SEED)
        self._index.set_num_threads(1)
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        needed = self._index.element_count + len(ids)
        if needed > self._index.max_elements:
            self._index.resize_index(max(needed, 2 * self._index.max_elements))
        self._index.add_items(vectors, ids, num_threads=1)
        self._live.update(int(i) for i in ids)

    def remove(self, memory_id: int) -> None:
        self._live.remove(memory_id)
        self._index.mark_deleted(memory_id)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        k = min(k, len(self._live))
        if k <= 0:
            return []
        # hnswlib fails when its beam finds fewer than k live items (many deletions); widen it then.
        for ef in (max(self.EF_SEARCH, k), max(len(self._live), k)):
            self._index.set_ef(ef)
            try:
                labels, distances = self._index.knn_query(vector[None, :], k=k, num_threads=1)
            except RuntimeError:
                continue
            return [(int(i), 1.0 - float(d)) for i, d in zip(labels[0], distances[0])]
        raise ModelError(f"hnswlib found fewer than {k} of {len(self._live)} memories")


class MemoryStore:
    """Memories with ids, searchable by embedding. Not thread-safe: one NPC drives it."""

    def __init__(self, dim: int, exact_limit: int = EXACT_LIMIT, cue_discount: float = CUE_DISCOUNT):
        self.dim = dim
        self.exact_limit = exact_limit
        self.cue_discount = cue_discount
        self.next_id = 0
        self._memories: dict[int, Memory] = {}
        self._codes: dict[int, tuple[np.ndarray, np.float32]] = {}
        self._conditions: dict[int, Condition] = {}  # only memories gated by a condition
        self._index: ExactIndex | HnswIndex = ExactIndex(dim)
        # Cues: an exact index of their own (a bundle has a few thousand at most), by cue id.
        self._cue_index = ExactIndex(dim)
        self._cues: dict[int, tuple[int, str, np.ndarray, np.float32]] = {}  # cue id -> memory id, text, code
        self._cues_of: dict[int, list[int]] = {}  # memory id -> its cue ids

    def __len__(self) -> int:
        return len(self._memories)

    def __iter__(self) -> Iterator[Memory]:
        return iter(list(self._memories.values()))

    def __contains__(self, memory_id: int) -> bool:
        return memory_id in self._memories

    @property
    def backend(self) -> str:
        return "hnswlib" if isinstance(self._index, HnswIndex) else "exact"

    def get(self, memory_id: int) -> Memory:
        try:
            return self._memories[memory_id]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"no memory with id {memory_id!r}") from None

    def add(self, text: str, vector: np.ndarray, kind: str, source: str = "", game_time: float | None = None,
            importance: float = 0.5, requires: str = "", cues: Sequence[tuple[str, np.ndarray]] = ()) -> int:
        """Store one memory with its embedding [dim], and its cues as (question, embedding [dim]) pairs;
        returns its id. Everything is checked first: InvalidArgumentError leaves the store unchanged."""
        memory = _checked_memory(Memory(self.next_id, text, kind, source, game_time, importance, requires))
        codes, scales = quantize(_checked_vector(vector, self.dim)[None, :])
        cue_texts = [_checked_cue(cue) for cue, _ in cues]
        cue_vectors = [_checked_vector(cue_vector, self.dim) for _, cue_vector in cues]
        self._insert([memory], codes, scales)
        if cues:
            self._insert_cues([memory.id] * len(cues), cue_texts, *quantize(np.stack(cue_vectors)))
        return memory.id

    def cues(self, memory_id: int) -> list[str]:
        """The cues that recall a memory, in the order they were added."""
        self.get(memory_id)
        return [self._cues[c][1] for c in self._cues_of.get(memory_id, [])]

    @contextmanager
    def cues_left_out(self, text: str) -> Iterator[None]:
        """Search as if no memory had the cue `text`: how retrieval does on a question the store was not
        built from, when the question is one of its cues (leave-one-out, for training and measuring)."""
        left_out = [c for c, (_, cue, _, _) in self._cues.items() if cue == text.strip()]
        for cue_id in left_out:
            self._cue_index.remove(cue_id)
        try:
            yield
        finally:
            for cue_id in left_out:
                _, _, code, scale = self._cues[cue_id]
                self._cue_index.add(np.asarray([cue_id]), dequantize(code[None, :], np.asarray([scale])))

    def forget(self, memory_id: int) -> Memory:
        """Remove a memory and its cues from the store and the indexes; returns what was forgotten."""
        memory = self.get(memory_id)
        del self._memories[memory_id], self._codes[memory_id]
        self._conditions.pop(memory_id, None)
        self._index.remove(memory_id)
        for cue_id in self._cues_of.pop(memory_id, []):
            del self._cues[cue_id]
            self._cue_index.remove(cue_id)
        return memory

    def search(self, vector: np.ndarray, k: int, facts: Mapping[str, Value] | None = None,
               min_score: float = -1.0) -> list[tuple[Memory, float]]:
        """Up to k memories most relevant to the unit `vector` [dim], with their cosine similarity (the
        best of their text's and their cues', less `cue_discount`).

        Memories whose condition does not hold for `facts` are never returned (all gated ones are
        hidden when `facts` is None); candidates are ranked by cosine plus a small importance term.
        """
        if k <= 0 or not self._memories:
            return []
        hidden = {i for i, condition in self._conditions.items() if facts is None or not condition(facts)}
        vector = np.asarray(vector, dtype=np.float32)
        # Over-fetch enough that, after the hidden ones are dropped, 2k candidates remain to re-rank.
        best = dict(self._index.search(vector, 2 * k + len(hidden)))
        if self._cues:
            # A memory's cues may crowd the top: fetch enough of them to reach 2k memories besides.
            for cue_id, score in self._cue_index.search(vector, 8 * k + len(hidden)):
                memory_id = self._cues[cue_id][0]
                best[memory_id] = max(score - self.cue_discount, best.get(memory_id, -np.inf))
        ranked = [(self._memories[i], score) for i, score in best.items() if i not in hidden and score >= min_score]
        ranked.sort(key=lambda hit: (-(hit[1] + IMPORTANCE_WEIGHT * (hit[0].importance - 0.5)), hit[0].id))
        return ranked[:k]

    def to_state(self, ids: list[int] | None = None) -> dict[str, Any]:
        """The memories `ids` (default: all, in insertion order) as plain msgpack-able columns."""
        ids = list(self._memories) if ids is None else ids
        memories = [self.get(i) for i in ids]
        codes = np.stack([self._codes[i][0] for i in ids]) if ids else np.zeros((0, self.dim), np.int8)
        scales = np.asarray([self._codes[i][1] for i in ids], dtype="<f4")
        cue_ids = [c for i in ids for c in self._cues_of.get(i, [])]
        cue_codes = [self._cues[c][2] for c in cue_ids]
        cues = {
            "cue_memories": [self._cues[c][0] for c in cue_ids],
            "cue_texts": [self._cues[c][1] for c in cue_ids],
            "cue_codes": (np.stack(cue_codes) if cue_codes else np.zeros((0, self.dim), np.int8)).tobytes(),
            "cue_scales": np.asarray([self._cues[c][3] for c in cue_ids], dtype="<f4").tobytes(),
        } if cue_ids else {}
        return cues | {
            "dim": self.dim,
            "ids": ids,
            "kinds": [m.kind for m in memories],
            "texts": [m.text for m in memories],
            "sources": [m.source for m in memories],
            "game_times": [m.game_time for m in memories],
            "importance": [m.importance for m in memories],
            "requires": [m.requires for m in memories],
            "codes": codes.tobytes(),
            "scales": scales.tobytes(),
        }

    def add_state(self, state: Mapping[str, Any]) -> None:
        """Add the memories of a `to_state()` map, keeping their ids. Checks everything first, so bad
        input raises InvalidArgumentError and leaves the store unchanged."""
        memories, codes, scales = _read_state(state, self.dim)
        cue_memories, cue_texts, cue_codes, cue_scales = _read_cues(state, self.dim, {m.id for m in memories})
        clashes = [m.id for m in memories if m.id in self._memories]
        if clashes:
            raise InvalidArgumentError(f"memory ids {clashes[:3]} are already in use")
        if len(self._memories) + len(memories) > MAX_MEMORIES:
            raise InvalidArgumentError(f"an NPC holds at most {MAX_MEMORIES} memories")
        if len(self._cues) + len(cue_memories) > MAX_CUES:
            raise InvalidArgumentError(f"an NPC holds at most {MAX_CUES} cues")
        self._insert(memories, codes, scales)
        self._insert_cues(cue_memories, cue_texts, cue_codes, cue_scales)

    def _insert_cues(self, memory_ids: list[int], texts: list[str], codes: np.ndarray, scales: np.ndarray) -> None:
        if not memory_ids:
            return
        first = max(self._cues, default=-1) + 1
        cue_ids = list(range(first, first + len(memory_ids)))
        for cue_id, memory_id, text, row, scale in zip(cue_ids, memory_ids, texts, codes, scales):
            self._cues[cue_id] = (memory_id, text, row, np.float32(scale))
            self._cues_of.setdefault(memory_id, []).append(cue_id)
        self._cue_index.add(np.asarray(cue_ids, dtype=np.int64), dequantize(codes, np.asarray(scales, np.float32)))

    def _insert(self, memories: list[Memory], codes: np.ndarray, scales: np.ndarray) -> None:
        if not memories:
            return
        for memory, row, scale in zip(memories, codes, scales):
            self._memories[memory.id] = memory
            self._codes[memory.id] = (row, np.float32(scale))
            if memory.requires:
                self._conditions[memory.id] = parse_condition(memory.requires)
        self.next_id = max(self.next_id, max(m.id for m in memories) + 1)
        if isinstance(self._index, ExactIndex) and len(self._memories) > self.exact_limit:
            self._index = HnswIndex(self.dim, capacity=2 * len(self._memories))
            memories = list(self._memories.values())  # move everything over, in insertion order
            codes = np.stack([self._codes[m.id][0] for m in memories])
            scales = np.asarray([self._codes[m.id][1] for m in memories], dtype=np.float32)
        self._index.add(np.asarray([m.id for m in memories], dtype=np.int64), dequantize(codes, scales))


def _checked_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (dim,) or not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidArgumentError(f"an embedding must be {dim} finite numbers, not all zero")
    return vector


def _checked_cue(text: str) -> str:
    return checked_text(text, "a cue")


def _checked_memory(memory: Memory) -> Memory:
    """The memory with normalised fields, or InvalidArgumentError saying what is wrong with it."""
    if not isinstance(memory.text, str) or not memory.text.strip():
        raise InvalidArgumentError("a memory's text must be a non-empty string")
    if len(memory.text) > MAX_MEMORY_CHARS:
        raise InvalidArgumentError(f"a memory's text may be at most {MAX_MEMORY_CHARS} characters")
    if memory.kind not in KINDS:
        raise InvalidArgumentError(f"memory kind {memory.kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(memory.source, str) or len(memory.source) > 200:
        raise InvalidArgumentError("a memory's source must be a string of at most 200 characters")
    game_time = memory.game_time
    if game_time is not None and (isinstance(game_time, bool) or not isinstance(game_time, (int, float))
                                  or not math.isfinite(game_time)):
        raise InvalidArgumentError(f"game_time must be a finite number or None, not {game_time!r}")
    importance = memory.importance
    if isinstance(importance, bool) or not isinstance(importance, (int, float)) or not 0 <= importance <= 1:
        raise InvalidArgumentError(f"importance must be a number in [0, 1], not {importance!r}")
    if not isinstance(memory.id, int) or not 0 <= memory.id < 1 << 62:
        raise InvalidArgumentError(f"memory id {memory.id!r} is out of range")
    parse_condition(memory.requires)  # raises on a malformed condition
    return replace(memory, text=memory.text.strip(), importance=float(importance),
                   game_time=None if game_time is None else float(game_time))


def _read_state(state: Mapping[str, Any], dim: int) -> tuple[list[Memory], np.ndarray, np.ndarray]:
    if not isinstance(state, Mapping):
        raise InvalidArgumentError("memories: expected a map")
    if state.get("dim") != dim:
        raise InvalidArgumentError(f"memories: embeddings of size {state.get('dim')!r}, expected {dim}")
    columns = ("ids", "texts", "kinds", "sources", "game_times", "importance", "requires")  # Memory order
    for name in columns:
        if not isinstance(state.get(name), list):
            raise InvalidArgumentError(f"memories: '{name}' must be a list")
    n = len(state["ids"])
    if any(len(state[name]) != n for name in columns):
        raise InvalidArgumentError("memories: the columns have different lengths")
    if len(set(map(repr, state["ids"]))) != n:
        raise InvalidArgumentError("memories: ids repeat")
    codes_array, scales_array = read_codes(state.get("codes"), state.get("scales"), n, dim, "memories:")
    memories = [
        _checked_memory(Memory(*fields))
        for fields in zip(*(state[name] for name in columns))
    ]
    return memories, codes_array, scales_array


def _read_cues(state: Mapping[str, Any], dim: int, memory_ids: set[int]) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """The optional cue columns of a `to_state()` map (none in bundles built before cues existed)."""
    memories, texts = state.get("cue_memories", []), state.get("cue_texts", [])
    codes, scales = state.get("cue_codes", b""), state.get("cue_scales", b"")
    if not isinstance(memories, list) or not isinstance(texts, list) or len(memories) != len(texts):
        raise InvalidArgumentError("memories: 'cue_memories' and 'cue_texts' must be lists of one length")
    if any(m not in memory_ids for m in memories):
        raise InvalidArgumentError("memories: a cue names a memory that is not in the same file")
    codes_array, scales_array = read_codes(codes, scales, len(memories), dim, "memories: cue")
    return list(memories), [_checked_cue(t) for t in texts], codes_array, scales_array


def read_codes(codes: Any, scales: Any, n: int, dim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Int8 codes [n, dim] and float32 scales [n] from a saved file's bytes; InvalidArgumentError
    naming `what` when they are not."""
    if not isinstance(codes, bytes) or len(codes) != n * dim or not isinstance(scales, bytes) or len(scales) != 4 * n:
        raise InvalidArgumentError(f"{what} codes must be {n} x {dim} int8 bytes and scales {n} float32")
    scales_array = np.frombuffer(scales, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(scales_array)) or np.any(scales_array <= 0):
        raise InvalidArgumentError(f"{what} scales must be positive finite numbers")
    return np.frombuffer(codes, dtype=np.int8).reshape(n, dim), scales_array


def checked_text(text: Any, what: str) -> str:
    """`text` stripped, or InvalidArgumentError when it is not a non-empty string of a memory's length."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_MEMORY_CHARS:
        raise InvalidArgumentError(f"{what} must be a non-empty string of at most {MAX_MEMORY_CHARS} characters")
    return text.strip()


def bundle_store(bundle: Bundle, state: Mapping[str, Any] | None = None) -> MemoryStore:
    """A store holding the memories a bundle was built with (its memories file, or `state` already read
    from it); new memories get ids from OWN_FIRST_ID."""
    store = MemoryStore(bundle.embedder.dim)
    try:
        store.add_state(read_memories(bundle) if state is None else state)
    except InvalidArgumentError as exc:
        raise BundleFormatError(f"{bundle.path / bundle.memories.file}: {exc}") from exc
    if store.next_id > OWN_FIRST_ID:
        raise BundleFormatError(f"{bundle.path}: memory ids must stay below {OWN_FIRST_ID}")
    store.next_id = OWN_FIRST_ID
    return store
