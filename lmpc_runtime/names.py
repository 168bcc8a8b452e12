"""A guard against invented proper nouns, applied while decoding.

A 135M model fills gaps in what it knows with names it makes up ("King Alcibiathos", "House Solanathia").
A name starts with a capitalised word, and mid-sentence a capitalised word is nearly always a name, so
the guard lowers, by the sampler's `name_penalty`, the score of every token that would start or extend
a capitalised word into one that no word the character may say begins with: the words of the sheet
(its world, people, lorebook, examples) and of the prompt at hand (the conversation, the memory note,
what the game told the NPC). "ĠAl" stays free because "Aldous" begins with it, and so does "d" after
it; "ĠAlc", or "c" after "Al", does not. At the start of a sentence any word may be capitalised, so the
guard is off there (`mid_sentence`). The penalty nudges rather than bans: a name the model is sure of
still wins.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Iterable

import numpy as np

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Characters after which the next word starts a sentence (or a quotation, or a new line).
_OPENERS = set(".!?…:;\"“‘(\n")
_SPACE = "Ġ"  # byte-level BPE's mark for a leading space
_BREAKS = set("ĠĊĉč")  # its marks for a space, a line feed, a tab and a carriage return
_TRAILING_CAPITALISED = re.compile(r"(?:^|[^A-Za-z'-])([A-Z][A-Za-z]*)$")


def sheet_words(value: Any) -> set[str]:
    """Every word written anywhere in a sheet's dict (`CharacterSheet.to_dict()`), capitalised as
    written and title-cased."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(_WORD.findall(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def mid_sentence(text: str) -> bool:
    """True when the next word of `text` continues a sentence (so a capital there marks a name)."""
    stripped = text.rstrip(" ")
    return bool(stripped) and stripped[-1] not in _OPENERS


class NameGuard:
    """One character's guard: the vocabulary's word-start and word-continuing tokens, and the words of
    its sheet. `for_prompt` gives the guard of one reply."""

    def __init__(self, vocab: dict[str, int], known: Iterable[str]):
        # (word start, id) of every token that is a space then a capital letter: "ĠAlc" -> ("Alc", id).
        self._starts = sorted((piece[1:], token) for piece, token in vocab.items()
                              if len(piece) > 1 and piece[0] == _SPACE and piece[1].isupper())
        # Tokens that carry on a word: letters, or bytes of a non-ASCII letter, with no leading space or
        # line break ("ibi", "athos"). Byte-level BPE writes those as letters too ("Ġ" is a space), so
        # they are told apart by their first character.
        self._continuations = {piece: token for piece, token in vocab.items()
                               if piece[:1].isalpha() and piece[0] not in _BREAKS}
        self._continuation_ids = np.array(sorted(self._continuations.values()), dtype=np.int64)
        self._known = frozenset(known)

    def for_prompt(self, context: str) -> "ReplyNames":
        """The guard of a reply whose prompt reads `context`: its words are known too."""
        words = self._known | {w for raw in _WORD.findall(context) for w in (raw, raw[0].upper() + raw[1:])}
        return ReplyNames(self, sorted(words))


class ReplyNames:
    """Which tokens to discourage at each step of one reply."""

    def __init__(self, guard: NameGuard, known: list[str]):
        self.guard = guard
        self.known = known  # sorted
        self._starts: np.ndarray | None = None
        self._continuing: dict[str, np.ndarray] = {}

    def discouraged(self, text: str) -> np.ndarray | None:
        """Token ids [n] to discourage after the reply's `text` so far; None where a capital is no sign of
        a name (the start of a sentence)."""
        word = _TRAILING_CAPITALISED.search(text)
        if word and mid_sentence(text[: word.start(1)]):
            return self._continuing_ids(word.group(1))
        if not mid_sentence(text):
            return None  # where a sentence starts, any word may be capitalised
        if self._starts is None:
            self._starts = np.array([token for start, token in self.guard._starts
                                     if not _begins_a_word(start, self.known)], dtype=np.int64)
        return self._starts

    def _continuing_ids(self, partial: str) -> np.ndarray:
        """Letters that would carry `partial` ("Al") beyond every known word it begins ("Aldous")."""
        if partial not in self._continuing:
            allowed = set()
            i = bisect.bisect_left(self.known, partial)
            while i < len(self.known) and self.known[i].startswith(partial):
                rest = self.known[i][len(partial):]
                allowed.update(self.guard._continuations[rest[:n]] for n in range(1, len(rest) + 1)
                               if rest[:n] in self.guard._continuations)
                i += 1
            ids = self.guard._continuation_ids
            self._continuing[partial] = ids[~np.isin(ids, list(allowed))] if allowed else ids
        return self._continuing[partial]


def _begins_a_word(start: str, known: list[str]) -> bool:
    i = bisect.bisect_left(known, start)
    return i < len(known) and known[i].startswith(start)
