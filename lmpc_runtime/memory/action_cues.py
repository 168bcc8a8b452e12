"""The writer's examples of when the character acts, recalled to decide whether a reply ends with an action.

A 135M model tuned on the writer's dialogues learns how its character speaks far better than when it
should act: on the demo's held-out action test the tuned model picked the right action (or none) in
55 % of the scenes, a vote of the writer's own material in 81 %. Each dialogue of the writer's file is
a cue: its last player line, embedded, and what the character did after it (an action's name, or
nothing). For a player's line the k most alike cues vote, each with its cosine, and the label with the
most wins.

The dialogues are about acting, so any line finds near ones: alone they had the demo NPC act on 30 of
the 180 persona-test questions ("What's your family name, sir?" gave the letter). The writer's drills
say what the character merely answers: a line acts only if it is at least as like an acting dialogue as
like the nearest drill question, less a margin (the drills are the bundle's exchanges, exchanges.py).
k and the margin are chosen when the bundle is built, by how well they predict every cue and drill
question from the others, left one out (`choose_vote`).

The runtime then has the model write the action's arguments (the automaton of actions.py offers only
valid ones) and its emotion; an action the game's facts keep closed means no action. A bundle without
cues leaves the choice to the model. The cues ship in the bundle's memories file as optional columns
(`action_cue_lines`, `action_cue_labels`, `action_cue_codes`, `action_cue_scales`, `action_cue_k`,
`action_cue_margin`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..bundle import Bundle, read_memories
from ..errors import BundleFormatError, InvalidArgumentError
from .store import ExactIndex, checked_text, dequantize, quantize, read_codes

NO_ACTION = ""
MAX_CUES = 100_000
CANDIDATE_KS = (1, 3, 5, 7, 9, 15)
CANDIDATE_MARGINS = (-0.15, -0.1, -0.075, -0.05, -0.025, 0.0, 0.025, 0.05)


def vote(scored: Iterable[tuple[str, float]]) -> str:
    """The label with the largest summed cosine among (label, cosine) pairs; a tie goes to no action, then
    to the first name in order, so the same line always decides the same way."""
    totals: dict[str, float] = defaultdict(float)
    for label, score in scored:
        totals[label] += score
    if not totals:
        return NO_ACTION
    best = max(totals.values())
    return min(label for label, total in totals.items() if total >= best - 1e-9)


def gate(acting: float, plain: float | None, margin: float) -> bool:
    """Whether a line whose nearest acting cue has cosine `acting` may act, its nearest drill question
    `plain` (None: no drills)."""
    return plain is None or acting >= plain + margin


def choose_vote(vectors: np.ndarray, labels: Sequence[str], plain: np.ndarray,
                ks: Sequence[int] = CANDIDATE_KS, margins: Sequence[float] = CANDIDATE_MARGINS) -> tuple[int, float, float]:
    """The k and margin that decide best, over every cue (unit `vectors` [n, dim] with their `labels`) and
    every drill question (`plain` [m, dim], where the right decision is no action), each predicted from
    all the others; returns them and the share decided right."""
    labels = list(labels)
    acting = np.array([label != NO_ACTION for label in labels])
    if not acting.any():
        raise InvalidArgumentError("action cues: at least one cue must act")
    # Each cue and drill question against the cues, itself left out; and its nearest other drill question.
    queries = np.concatenate([vectors, plain])
    to_cues = queries @ vectors.T
    to_cues[np.arange(len(labels)), np.arange(len(labels))] = -np.inf
    to_plain = queries @ plain.T
    to_plain[len(labels) + np.arange(len(plain)), np.arange(len(plain))] = -np.inf
    nearest_plain = to_plain.max(axis=1) if len(plain) > 1 else np.full(len(queries), None)
    nearest_acting = to_cues[:, acting].max(axis=1)
    order = np.argsort(-to_cues, axis=1)
    expected = labels + [NO_ACTION] * len(plain)
    best = (ks[0], 0.0, -1.0)
    for k in ks:
        voted = [vote((labels[j], to_cues[i, j]) for j in order[i, :k]) for i in range(len(queries))]
        for margin in (margins if len(plain) > 1 else (0.0,)):
            right = sum((voted[i] if gate(nearest_acting[i], nearest_plain[i], margin) else NO_ACTION) == expected[i]
                        for i in range(len(queries)))
            if right / len(queries) > best[2]:
                best = (k, margin, right / len(queries))
    return best


class ActionCues:
    """The cues of one bundle, searched exactly (a writer's file holds a few hundred)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.k = 0
        self.margin = 0.0
        self._lines: list[str] = []
        self._labels: list[str] = []
        self._codes = np.zeros((0, dim), np.int8)
        self._scales = np.zeros(0, np.float32)
        self._index = ExactIndex(dim)

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, lines: Sequence[str], labels: Sequence[str], vectors: np.ndarray, k: int, margin: float = 0.0) -> None:
        """Set the cues: player lines, what the character did after each (an action's name or NO_ACTION),
        their embeddings [n, dim], how many vote and the drills' margin (see the module's docstring)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(lines), self.dim) or not np.all(np.isfinite(vectors)) \
                or not np.all(np.any(vectors, axis=1)):
            raise InvalidArgumentError(f"action cues: one embedding of {self.dim} finite numbers per line")
        self._insert(lines, labels, *quantize(vectors), k, margin)

    def decide(self, vector: np.ndarray, open_actions: Iterable[str], plain: float | None = None) -> str | None:
        """What the character does after a line embedded as the unit `vector` [dim], whose nearest drill
        question has cosine `plain` (None: the bundle has no drills): an action's name, NO_ACTION (also
        when the vote's action is closed now), or None when there are no cues."""
        if not self._lines:
            return None
        vector = np.asarray(vector, np.float32)
        found = self._index.search(vector, len(self._lines))
        acting = max(score for row, score in found if self._labels[row] != NO_ACTION)
        if not gate(acting, plain, self.margin):
            return NO_ACTION
        decided = vote((self._labels[row], score) for row, score in found[:self.k])
        return decided if decided in set(open_actions) else NO_ACTION

    def to_state(self) -> dict[str, Any]:
        """The cues as memories-file columns (empty when there are none)."""
        if not self._lines:
            return {}
        return {"action_cue_lines": list(self._lines), "action_cue_labels": list(self._labels),
                "action_cue_codes": self._codes.tobytes(), "action_cue_scales": self._scales.astype("<f4").tobytes(),
                "action_cue_k": self.k, "action_cue_margin": self.margin}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], dim: int) -> "ActionCues":
        """Cues from the optional columns of a memories file; InvalidArgumentError says what is wrong."""
        cues = cls(dim)
        lines, labels = state.get("action_cue_lines", []), state.get("action_cue_labels", [])
        if not isinstance(lines, list) or not isinstance(labels, list) or len(lines) != len(labels):
            raise InvalidArgumentError("action cues: lines and labels must be lists of one length")
        if len(lines) > MAX_CUES:
            raise InvalidArgumentError(f"action cues: at most {MAX_CUES}")
        codes, scales = read_codes(state.get("action_cue_codes", b""), state.get("action_cue_scales", b""),
                                   len(lines), dim, "action cues:")
        cues._insert(lines, labels, codes, scales, state.get("action_cue_k", 0), state.get("action_cue_margin", 0.0))
        return cues

    def _insert(self, lines: Sequence[Any], labels: Sequence[Any], codes: np.ndarray, scales: np.ndarray,
                k: Any, margin: Any) -> None:
        if not lines:
            return
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(lines):
            raise InvalidArgumentError(f"action cues: k must be a whole number from 1 to {len(lines)}, not {k!r}")
        if not isinstance(margin, float) or not -1.0 <= margin <= 1.0:
            raise InvalidArgumentError(f"action cues: the margin must be a number from -1 to 1, not {margin!r}")
        if not all(isinstance(label, str) and len(label) <= 64 for label in labels) or all(not label for label in labels):
            raise InvalidArgumentError("action cues: each label must be an action's name or empty, one at least a name")
        self._lines = [checked_text(line, "action cues: a line") for line in lines]
        self._labels = list(labels)
        self._codes, self._scales, self.k, self.margin = codes, scales, k, margin
        self._index = ExactIndex(self.dim)
        self._index.add(np.arange(len(lines)), dequantize(codes, scales))


def bundle_action_cues(bundle: Bundle, state: Mapping[str, Any] | None = None) -> ActionCues:
    """The action cues a bundle was built with (none for a bundle without them)."""
    try:
        return ActionCues.from_state(read_memories(bundle) if state is None else state, bundle.embedder.dim)
    except InvalidArgumentError as exc:
        raise BundleFormatError(f"{bundle.path / bundle.memories.file}: {exc}") from exc
