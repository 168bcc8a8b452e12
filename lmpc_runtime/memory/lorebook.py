"""Lorebook activation with Character Card V2 semantics, plus game-state gating and turn timers.

Each player turn the last `scan_depth` messages (the player's new line counts as one) are scanned for each
entry's keys. An entry activates when:
- it is `enabled`, its `requires` condition holds for the game's facts, and the conversation is past its
  `delay` (in player turns);
- it is `constant`, or one of its `keys` occurs in the scanned text; a `selective` entry with
  `secondary_keys` also needs them, combined by `selective_logic` (and_any, and_all, not_any, not_all);
  keys match case-insensitively unless `case_sensitive`, and as whole words unless `match_whole_words`
  is false;
- or it is still `sticky` from an earlier activation; after its activation ends it stays off for
  `cooldown` turns.
With `recursive_scanning`, the content of activated entries is scanned too, until nothing new activates.
When the active entries exceed `token_budget`, the lowest `priority` ones are dropped first (constant
entries are kept before any other); the rest are placed in `insertion_order`, lowest first.

All entries go into the memory note before the player's turn, whatever their `position`: the persona
before it is a cached prefix that lore must not invalidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import InvalidArgumentError
from ..macros import player_name, resolve
from ..sheet import LoreEntry, Lorebook
from .gating import Condition, Value, parse_condition

MAX_RECURSION = 8


@dataclass
class Timer:
    """When an entry's activation ends (last sticky turn) and until when it then cools down."""

    sticky_until: int
    cooldown_until: int


def timer_key(entry: LoreEntry, index: int) -> str:
    """Entries are remembered by their `id` when they have one, else by their place in the book."""
    return f"id:{entry.id}" if entry.id is not None else f"#{index}"


class _Matcher:
    """An entry's keys compiled to one regular expression (the keys themselves are literal text)."""

    def __init__(self, keys: tuple[str, ...], case_sensitive: bool, whole_words: bool):
        self.keys = keys
        flags = 0 if case_sensitive else re.IGNORECASE
        self._patterns = [re.compile(rf"(?<!\w){re.escape(k)}(?!\w)" if whole_words else re.escape(k), flags)
                          for k in keys]

    def matches(self, text: str) -> list[bool]:
        return [p.search(text) is not None for p in self._patterns]


class LoreScanner:
    """One NPC's view of its lorebook: compiled keys, conditions, and the timers of its entries."""

    def __init__(self, book: Lorebook, count_tokens: Callable[[str], int]):
        self.book = book
        self.count_tokens = count_tokens
        self.timers: dict[str, Timer] = {}
        self._keys = [timer_key(e, i) for i, e in enumerate(book.entries)]
        self._conditions: list[Condition] = [parse_condition(e.requires) for e in book.entries]
        self._primary = [_Matcher(e.keys, e.case_sensitive, e.match_whole_words) for e in book.entries]
        self._secondary = [_Matcher(e.secondary_keys, e.case_sensitive, e.match_whole_words) for e in book.entries]

    def activate(self, messages: list[str], facts: Mapping[str, Value], turn: int, char_name: str) -> list[str]:
        """The contents to place before the player's turn number `turn` (1 for the first), and record their
        activation. `messages` is the conversation, oldest first, ending with the player's new line."""
        book = self.book
        eligible = [i for i, e in enumerate(book.entries)
                    if e.enabled and turn > e.delay and self._conditions[i](facts)]
        sticky = {i for i in eligible if self._timer(i).sticky_until >= turn}
        ready = [i for i in eligible if i in sticky or self._timer(i).cooldown_until < turn]
        active = {i for i in ready if i in sticky or book.entries[i].constant}
        scanned = "\n".join(messages[-book.scan_depth:])
        active |= {i for i in ready if i not in active and self._triggered(i, scanned)}
        if book.recursive_scanning:
            fresh = set(active)  # the content of every active entry is scanned once
            for _ in range(MAX_RECURSION):
                scanned = "\n".join(book.entries[i].content for i in sorted(fresh))
                fresh = {i for i in ready if i not in active and self._triggered(i, scanned)}
                if not fresh:
                    break
                active |= fresh

        user = player_name(facts)
        texts = {i: resolve(book.entries[i].content, char_name, user) for i in active}
        kept, used = [], 0
        for i in sorted(active, key=lambda i: (not book.entries[i].constant, -book.entries[i].priority,
                                               book.entries[i].insertion_order, i)):
            cost = self.count_tokens(texts[i])
            if used + cost <= book.token_budget:
                kept.append(i)
                used += cost
        for i in kept:
            if i not in sticky:
                entry = book.entries[i]
                self.timers[self._keys[i]] = Timer(turn + entry.sticky, turn + entry.sticky + entry.cooldown)
        kept.sort(key=lambda i: (book.entries[i].insertion_order, i))
        return [texts[i] for i in kept]

    def _timer(self, index: int) -> Timer:
        return self.timers.get(self._keys[index], Timer(0, 0))

    def _triggered(self, index: int, text: str) -> bool:
        entry = self.book.entries[index]
        if not any(self._primary[index].matches(text)):
            return False
        if not entry.selective or not entry.secondary_keys:
            return True
        hits = self._secondary[index].matches(text)
        return {"and_any": any(hits), "and_all": all(hits), "not_any": not any(hits),
                "not_all": not all(hits)}[entry.selective_logic]

    def state(self) -> dict[str, list[int]]:
        """The timers as plain data for a save game."""
        return {key: [t.sticky_until, t.cooldown_until] for key, t in self.timers.items()}

    def restore(self, state: Any) -> None:
        """Put back timers from `state()`; timers of entries this book no longer has are dropped."""
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v) for k, v in state.items()):
            raise InvalidArgumentError("lorebook timers must map entry keys to [sticky_until, cooldown_until]")
        known = set(self._keys)
        self.timers = {k: Timer(*v) for k, v in state.items() if k in known}
