"""An NPC's memories: texts with metadata, their embeddings, and a nearest-neighbour index over them.

Two indexes answer the same three verbs (`add`, `remove`, `search`): `ExactIndex`, a numpy matrix product
that is exact and fastest for a few thousand memories, and `HnswIndex`, an hnswlib graph (cosine space)
for larger stores. `MemoryStore` starts exact and moves to hnswlib once it holds more than
`exact_limit` memories; the exact index is also the oracle the tests hold hnswlib to.

Embeddings are kept as int8 codes with one scale per vector: a thousand memories then save in under
400 KB, and a store rebuilt from a save indexes exactly the vectors it had before. The index is always
rebuilt from the codes, never read from a file: hnswlib's own file format is unversioned and its reader
is not hardened against a hostile save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

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
EXACT_LIMIT = 2048
# Ranking adds IMPORTANCE_WEIGHT * (importance - 0.5) to the cosine: a tie-breaker between memories about
# equally relevant, never enough to lift an unrelated memory over a relevant one.
IMPORTANCE_WEIGHT = 0.1


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

    def __init__(self, dim: int, exact_limit: int = EXACT_LIMIT):
        self.dim = dim
        self.exact_limit = exact_limit
        self.next_id = 0
        self._memories: dict[int, Memory] = {}
        self._codes: dict[int, tuple[np.ndarray, np.float32]] = {}
        self._conditions: dict[int, Condition] = {}  # only memories gated by a condition
        self._index: ExactIndex | HnswIndex = ExactIndex(dim)

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
            importance: float = 0.5, requires: str = "") -> int:
        """Store one memory with its embedding [dim]; returns its id. Raises InvalidArgumentError."""
        memory = _checked_memory(Memory(self.next_id, text, kind, source, game_time, importance, requires))
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.dim,) or not np.all(np.isfinite(vector)) or not np.any(vector):
            raise InvalidArgumentError(f"a memory's embedding must be {self.dim} finite numbers, not all zero")
        codes, scales = quantize(vector[None, :])
        self._insert([memory], codes, scales)
        return memory.id

    def forget(self, memory_id: int) -> Memory:
        """Remove a memory from the store and the index; returns what was forgotten."""
        memory = self.get(memory_id)
        del self._memories[memory_id], self._codes[memory_id]
        self._conditions.pop(memory_id, None)
        self._index.remove(memory_id)
        return memory

    def search(self, vector: np.ndarray, k: int, facts: Mapping[str, Value] | None = None,
               min_score: float = -1.0) -> list[tuple[Memory, float]]:
        """Up to k memories most relevant to the unit `vector` [dim], with their cosine similarity.

        Memories whose condition does not hold for `facts` are never returned (all gated ones are
        hidden when `facts` is None); candidates are ranked by cosine plus a small importance term.
        """
        if k <= 0 or not self._memories:
            return []
        hidden = {i for i, condition in self._conditions.items() if facts is None or not condition(facts)}
        # Over-fetch enough that, after the hidden ones are dropped, 2k candidates remain to re-rank.
        hits = self._index.search(np.asarray(vector, dtype=np.float32), 2 * k + len(hidden))
        ranked = [(self._memories[i], score) for i, score in hits if i not in hidden and score >= min_score]
        ranked.sort(key=lambda hit: (-(hit[1] + IMPORTANCE_WEIGHT * (hit[0].importance - 0.5)), hit[0].id))
        return ranked[:k]

    def to_state(self, ids: list[int] | None = None) -> dict[str, Any]:
        """The memories `ids` (default: all, in insertion order) as plain msgpack-able columns."""
        ids = list(self._memories) if ids is None else ids
        memories = [self.get(i) for i in ids]
        codes = np.stack([self._codes[i][0] for i in ids]) if ids else np.zeros((0, self.dim), np.int8)
        scales = np.asarray([self._codes[i][1] for i in ids], dtype="<f4")
        return {
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
        clashes = [m.id for m in memories if m.id in self._memories]
        if clashes:
            raise InvalidArgumentError(f"memory ids {clashes[:3]} are already in use")
        if len(self._memories) + len(memories) > MAX_MEMORIES:
            raise InvalidArgumentError(f"an NPC holds at most {MAX_MEMORIES} memories")
        self._insert(memories, codes, scales)

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
    codes, scales = state.get("codes"), state.get("scales")
    if not isinstance(codes, bytes) or len(codes) != n * dim or not isinstance(scales, bytes) or len(scales) != 4 * n:
        raise InvalidArgumentError(f"memories: codes must be {n} x {dim} int8 bytes and scales {n} float32")
    codes_array = np.frombuffer(codes, dtype=np.int8).reshape(n, dim)
    scales_array = np.frombuffer(scales, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(scales_array)) or np.any(scales_array <= 0):
        raise InvalidArgumentError("memories: scales must be positive finite numbers")
    memories = [
        _checked_memory(Memory(*fields))
        for fields in zip(*(state[name] for name in columns))
    ]
    return memories, codes_array, scales_array



def bundle_store(bundle: Bundle) -> MemoryStore:
    """A store holding the memories a bundle was built with; new memories get ids from OWN_FIRST_ID."""
    store = MemoryStore(bundle.embedder.dim)
    try:
        store.add_state(read_memories(bundle))
    except InvalidArgumentError as exc:
        raise BundleFormatError(f"{bundle.path / bundle.memories.file}: {exc}") from exc
    if store.next_id > OWN_FIRST_ID:
        raise BundleFormatError(f"{bundle.path}: memory ids must stay below {OWN_FIRST_ID}")
    store.next_id = OWN_FIRST_ID
    return store
