"""The writer's own exchanges (a question a player might ask, the character's answer), recalled by
similarity to the player's line and shown to the model as an earlier turn of the conversation.

A 135M model copies from the turns before it far more readily than it reads a note: on the demo's
held-out persona test, the tuned NPC stated 70 % of the facts its note held, no more than the 68 % it
stated when the note lacked them, while the nearest drill exchange placed as the previous turn raised
its key facts from 68.5 % to 78 % greedily (`benchmarks/grounding.py`). The exchanges are the drills of
the writer's knowledge file; they ship in the bundle's memories file as
optional columns (`exchange_questions`, `exchange_answers`, `exchange_codes`, `exchange_scales`), and a
bundle without them recalls none.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..bundle import Bundle, read_memories
from ..errors import BundleFormatError, InvalidArgumentError
from .store import ExactIndex, checked_text, dequantize, quantize, read_codes

MAX_EXCHANGES = 100_000


class ExchangeBank:
    """Exchanges with the embeddings of their questions; searched exactly (a bundle has a few thousand)."""

    def __init__(self, dim: int):
        self.dim = dim
        self._pairs: list[tuple[str, str]] = []
        self._codes = np.zeros((0, dim), np.int8)
        self._scales = np.zeros(0, np.float32)
        self._index = ExactIndex(dim)

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, pairs: Sequence[tuple[str, str]], vectors: np.ndarray) -> None:
        """Add (question, answer) pairs with their questions' embeddings [n, dim]."""
        pairs = _checked_pairs(pairs)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(pairs), self.dim) or not np.all(np.isfinite(vectors)) \
                or not np.all(np.any(vectors, axis=1)):
            raise InvalidArgumentError(f"exchanges: one embedding of {self.dim} finite numbers per question")
        self._insert(pairs, *quantize(vectors))

    def nearest(self, vector: np.ndarray, k: int, min_score: float) -> list[tuple[str, str, float]]:
        """Up to k exchanges whose question is most like the unit `vector` [dim] and at least `min_score`
        alike, as (question, answer, cosine), best first; a question asked twice counts once."""
        if k <= 0:
            return []
        out: list[tuple[str, str, float]] = []
        for row, score in self._index.search(np.asarray(vector, np.float32), 4 * k):
            question, answer = self._pairs[row]
            if score < min_score or len(out) == k:
                break
            if all(question != q for q, _, _ in out):
                out.append((question, answer, score))
        return out

    @contextmanager
    def left_out(self, question: str) -> Iterator[None]:
        """Search as if the exchanges asking `question` were not there: what a player asking in words of
        their own would be shown (leave-one-out, for training on the drills themselves)."""
        rows = [row for row, (q, _) in enumerate(self._pairs) if q == question.strip()]
        for row in rows:
            self._index.remove(row)
        try:
            yield
        finally:
            if rows:
                self._index.add(np.asarray(rows), dequantize(self._codes[rows], self._scales[rows]))

    def to_state(self) -> dict[str, Any]:
        """The bank as memories-file columns (empty when it holds nothing)."""
        if not self._pairs:
            return {}
        return {"exchange_questions": [q for q, _ in self._pairs], "exchange_answers": [a for _, a in self._pairs],
                "exchange_codes": self._codes.tobytes(), "exchange_scales": self._scales.astype("<f4").tobytes()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], dim: int) -> "ExchangeBank":
        """A bank from the optional columns of a memories file; InvalidArgumentError says what is wrong."""
        bank = cls(dim)
        questions, answers = state.get("exchange_questions", []), state.get("exchange_answers", [])
        codes, scales = state.get("exchange_codes", b""), state.get("exchange_scales", b"")
        if not isinstance(questions, list) or not isinstance(answers, list) or len(questions) != len(answers):
            raise InvalidArgumentError("exchanges: questions and answers must be lists of one length")
        if len(questions) > MAX_EXCHANGES:
            raise InvalidArgumentError(f"exchanges: at most {MAX_EXCHANGES}")
        codes_array, scales_array = read_codes(codes, scales, len(questions), dim, "exchanges:")
        bank._insert(_checked_pairs(zip(questions, answers)), codes_array, scales_array)
        return bank

    def _insert(self, pairs: list[tuple[str, str]], codes: np.ndarray, scales: np.ndarray) -> None:
        if not pairs:
            return
        first = len(self._pairs)
        self._pairs += pairs
        self._codes = np.concatenate([self._codes, codes])
        self._scales = np.concatenate([self._scales, scales])
        self._index.add(np.arange(first, first + len(pairs)), dequantize(codes, scales))


def _checked_pairs(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    return [(checked_text(q, "exchanges: a question"), checked_text(a, "exchanges: an answer")) for q, a in pairs]


def bundle_exchanges(bundle: Bundle, state: Mapping[str, Any] | None = None) -> ExchangeBank:
    """The exchanges a bundle was built with (its memories file, or `state` already read from it; none
    for a bundle built before they existed)."""
    try:
        return ExchangeBank.from_state(read_memories(bundle) if state is None else state, bundle.embedder.dim)
    except InvalidArgumentError as exc:
        raise BundleFormatError(f"{bundle.path / bundle.memories.file}: {exc}") from exc
