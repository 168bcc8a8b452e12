"""What an NPC recalls for one player turn: the lines of its memory note, and the writer's exchanges
most like the player's line (`exchanges.py`), which the prompt shows as earlier turns.

The note holds the lorebook entries the turn activates, then the k memories most relevant to the
player's line that clear the similarity floor, each gated by the game's facts. Both settings were
measured: for precision on labelled questions (`benchmarks/recall_threshold.py`) and, what decides, for
the persona test's key facts (`benchmarks/grounding.py`). The player's line is the
query as it stands: turning "you"/"your" into the character's name, to match statements written in the
third person, looked promising on a few questions but lost on a broader set (22 questions about the demo
character: top-3 hits 16 against 20 for the plain line), because the name then pulls in every statement
that mentions the character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import InvalidArgumentError
from .embedder import Embedder
from .exchanges import ExchangeBank
from .gating import Value
from .lorebook import LoreScanner
from .store import Memory, MemoryStore

@dataclass(frozen=True)
class RecallConfig:
    # Memories retrieved per player turn. Five is imprecise (benchmarks/recall_threshold.py: 85 % of what it
    # brings is beside the question), yet the tuned demo NPC states more of its facts with five than with
    # three above a higher floor (benchmarks/grounding.py): it has learnt to pick from the note.
    k: int = 5
    # Below this cosine a memory is not worth the tokens; None: the bundle's embedder says (its `min_score`).
    min_score: float | None = None
    note_tokens: int = 256  # cap on the retrieved memories' tokens; lore has its own token_budget
    # The writer's exchanges shown as earlier turns, and how alike (cosine) their question must be to the
    # player's line; measured on the demo's persona test (benchmarks/grounding.py).
    exchanges: int = 1
    exchange_min_score: float = 0.45

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 64 or not -1 <= (self.min_score or 0) <= 1 or self.note_tokens < 0 \
                or not 0 <= self.exchanges <= 8 or not -1 <= self.exchange_min_score <= 1:
            raise InvalidArgumentError(f"recall settings out of range: {self}")


@dataclass(frozen=True)
class Recalled:
    """What one player turn brings to mind."""

    note: list[str]  # the memory note's lines: lore entries, then memories
    exchanges: list[tuple[str, str]]  # (question, answer) of the writer's, least alike first
    vector: np.ndarray | None = None  # the player's line embedded [dim], unit length
    # How alike (cosine) the writer's exchange question most like the line is (None: no exchanges). A line
    # more like a question the character just answers than like one it acted on does not act (action_cues.py).
    closest_exchange: float | None = None


class Recall:
    """Builds the memory note of each turn from an NPC's store, lorebook and facts."""

    def __init__(self, store: MemoryStore, embedder: Embedder, lore: LoreScanner, count_tokens,
                 char_name: str, config: RecallConfig = RecallConfig(), exchanges: ExchangeBank | None = None):
        self.store = store
        self.exchanges = exchanges if exchanges is not None else ExchangeBank(embedder.dim)
        self.embedder = embedder
        self.lore = lore
        self.count_tokens = count_tokens
        self.char_name = char_name
        self.config = config

    def search(self, text: str, facts: Mapping[str, Value], k: int | None = None) -> list[tuple[Memory, float]]:
        """The memories most relevant to `text` that the facts allow, with their cosine similarity."""
        return self._search(self.embedder.embed_one(text), facts, k)

    def _search(self, vector: np.ndarray, facts: Mapping[str, Value], k: int | None = None) -> list[tuple[Memory, float]]:
        floor = self.embedder.spec.min_score if self.config.min_score is None else self.config.min_score
        return self.store.search(vector, self.config.k if k is None else k, facts, floor)

    def for_turn(self, player_text: str, messages: list[str], facts: Mapping[str, Value], turn: int) -> Recalled:
        """The note (lore entries, then retrieved memories) and the exchanges for `player_text`; records
        the lore's activation for turn `turn`."""
        vector = self.embedder.embed_one(player_text)
        lines = self.lore.activate(messages, facts, turn, self.char_name)
        used = 0
        for memory, _ in self._search(vector, facts):
            cost = self.count_tokens(memory.text)
            if memory.text in lines or used + cost > self.config.note_tokens:
                continue
            lines.append(memory.text)
            used += cost
        # One search for both: the nearest exchange, however unlike, and those alike enough to show (best first).
        near = self.exchanges.nearest(vector, max(self.config.exchanges, 1), -1.0)
        shown = [(q, a) for q, a, score in near[:self.config.exchanges] if score >= self.config.exchange_min_score]
        return Recalled(lines, shown[::-1], vector, near[0][2] if near else None)
