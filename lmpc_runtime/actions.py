"""Typed game actions and emotions: the tail a reply may end with, and the automaton that lets the model
write only a valid one.

A reply is free text, then optionally a tail of tags, each on a line of its own:

    Then take it, and read it by daylight.
    [act:give_item item=father_letter]
    [feel:sad]

The sheet declares the character's actions (arguments from closed sets or from values the game
registers at run time, and a condition on the game's facts that must hold) and its emotions. While a
reply is free text, no token holding a bracket may be sampled, except "[" right after a line break: that
opens the tail. Inside a tag only tokens that keep it the beginning of a tag valid *now* may be picked
(an open action with registered values, or an emotion), greedily. So every tail parses and type-checks
by construction, and it always ends: each token writes at least one more character of a finite tag.

A character with emotions ends every reply with one: when its speech ends without a tail, the runtime
writes the line break and "[" for it, and the model picks an action or the emotion, then the label. A
tag the model starts but whose allowed continuations it finds unlikely (an action whose gate the game has
closed, say) is dropped, not turned into another action: the sequence is rewound to the line break and
the emotion written instead.

Whether to act at all may be decided before the reply, by the writer's examples (memory/action_cues.py):
then the tail holds that action (the model writes its arguments) or none, whatever the model prefers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from .sheet import Action

ACT, FEEL = "act:", "feel:"
GAME_VALUES = "game"  # an argument whose values the game registers at run time
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,31}")
VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# More valid action tags than this (the product of an action's argument sets) is a schema too large to
# compile into the automaton: give the argument to the game instead, with fewer values.
MAX_TAGS = 4096
# A tag the model started is dropped when the tokens that would continue it validly hold less than this
# share of its next-token probability: it meant something the game does not allow now.
MIN_TAG_SHARE = 0.05


def action_problems(fields: Mapping[str, Any]) -> list[str]:
    """What is wrong with one `[[actions]]` table of a sheet (key, then problem), or [] if nothing."""
    problems = []
    name = fields.get("name")
    if isinstance(name, str) and not IDENTIFIER.fullmatch(name):
        problems.append(f"name: {name!r} must be lower-case letters, digits and _ (at most 32, a letter first)")
    tags = 1
    for arg, values in fields.get("args", {}).items():
        if not IDENTIFIER.fullmatch(arg):
            problems.append(f"args.{arg}: an argument name must be lower-case letters, digits and _")
        if values == GAME_VALUES:
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"args.{arg}: expected a non-empty list of values, or \"{GAME_VALUES}\" for values "
                            "the game registers at run time")
            continue
        problems += [f"args.{arg}: {problem}" for problem in value_problems(values)]
        tags *= len(values)
    if tags > MAX_TAGS:
        problems.append(f"args: {tags} combinations of values; at most {MAX_TAGS} compile")
    return problems


def value_problems(values: Any) -> list[str]:
    if not isinstance(values, (list, tuple)):
        return ["expected a list of values"]
    bad = [v for v in values if not isinstance(v, str) or not VALUE.fullmatch(v)]
    problems = [f"value {v!r} must be letters, digits, _ . - (at most 64, no spaces)" for v in bad[:3]]
    if len(set(values)) != len(values):
        problems.append("values are repeated")
    return problems


def emotion_problems(emotions: Iterable[Any]) -> list[str]:
    emotions = list(emotions)
    problems = [f"emotions: {e!r} must be lower-case letters, digits and _" for e in emotions
                if not isinstance(e, str) or not IDENTIFIER.fullmatch(e)]
    if len(set(map(str, emotions))) != len(emotions):
        problems.append("emotions: a label is repeated")
    return problems


def action_tags(action: "Action", game_values: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every valid tag body of `action` ("act:give_item item=father_letter"), given the values the game
    registered for its game-valued arguments; none if one of those has no values."""
    tags = [ACT + action.name]
    for arg, values in action.args.items():
        values = game_values.get(arg, ()) if values == GAME_VALUES else values
        tags = [f"{tag} {arg}={value}" for tag in tags for value in values]
        if len(tags) > MAX_TAGS:
            raise InvalidArgumentError(f"action {action.name}: more than {MAX_TAGS} combinations of values")
    return tags


def call_text(name: str, args: Mapping[str, str]) -> str:
    """An action as a tag writes it after "act:": "give_item item=father_letter"."""
    return " ".join([name, *(f"{k}={v}" for k, v in args.items())])


def valid_call(call: str, actions: Iterable["Action"]) -> bool:
    """Whether `call` ("name arg=value ...") names a declared action with exactly its arguments, each a value
    of its set (or, for a game-valued one, a well-formed value)."""
    name, *pairs = call.split(" ")
    spec = next((a for a in actions if a.name == name), None)
    if spec is None or not all("=" in p for p in pairs):
        return False
    given = dict(p.split("=", 1) for p in pairs)
    return len(given) == len(pairs) and set(given) == set(spec.args) and all(
        VALUE.fullmatch(v) and (spec.args[k] == GAME_VALUES or v in spec.args[k]) for k, v in given.items())


def tail_room(actions: Iterable["Action"], emotions: Iterable[str]) -> int:
    """The most tokens a tail can take (each token writes at least one character): the context keeps this
    much free beyond a reply's token limit. A game-valued argument counts at the longest value allowed."""
    longest = max((len(ACT + a.name) + sum(2 + len(arg) + (64 if v == GAME_VALUES else max(map(len, v)))
                                           for arg, v in a.args.items()) for a in actions), default=0)
    feel = max((len(FEEL + e) for e in emotions), default=0)
    return sum(3 + n for n in (longest, feel) if n)  # "\n[" before a tag, "]" after


@dataclass(frozen=True)
class Tag:
    """A parsed tag: an action with its arguments, or an emotion (`name` is the label, no args)."""

    kind: str  # "action" or "emotion"
    name: str
    args: dict[str, str] = field(default_factory=dict)


def parse_tag(body: str) -> Tag:
    """"act:give_item item=father_letter" → Tag("action", "give_item", {"item": "father_letter"})."""
    if body.startswith(FEEL):
        return Tag("emotion", body[len(FEEL):])
    name, *pairs = body[len(ACT):].split(" ")
    return Tag("action", name, dict(pair.split("=", 1) for pair in pairs))


def split_tail(text: str) -> tuple[str, list[Tag]]:
    """A written reply ("…\\n[act:…]\\n[feel:…]") as its speech and its tags (for training data and tests)."""
    tags: list[Tag] = []
    lines = text.rstrip().split("\n")
    while lines and re.fullmatch(r"\[(?:act|feel):[^\[\]]+\]", lines[-1].strip()):
        tags.insert(0, parse_tag(lines.pop().strip()[1:-1]))
    return "\n".join(lines).rstrip(), tags


def write_tail(tags: Iterable[str]) -> str:
    """Tag bodies as the tail a reply ends with: "\\n[act:…]\\n[feel:…]"."""
    return "".join(f"\n[{tag}]" for tag in tags)


class TokenPieces:
    """Each token's text, for matching tokens against tags. Built once per tokenizer (about 0.1 s)."""

    def __init__(self, tokenizer: "Tokenizer"):
        texts = tokenizer.decode_batch([[i] for i in range(tokenizer.get_vocab_size())], skip_special_tokens=True)
        self.texts = texts
        self.by_text: dict[str, list[int]] = {}
        for token, text in enumerate(texts):
            if text and "\ufffd" not in text:  # not a fragment of a multi-byte character
                self.by_text.setdefault(text, []).append(token)
        self.newline = self.by_text["\n"][0]
        self.open = self.by_text["["][0]
        self.brackets = np.array([t for t, text in enumerate(texts) if "[" in text or "]" in text], dtype=np.int64)
        # The same without "[" itself: the free text's mask right after a line break.
        self.brackets_but_open = self.brackets[self.brackets != self.open]


class TailGrammar:
    """The tags valid for one reply: the open actions' tags and the emotions'. Compiled lazily: the tokens
    allowed after each prefix of a tag are found once and kept (a grammar is cached per NPC while the
    game's facts and values leave it unchanged)."""

    def __init__(self, pieces: TokenPieces, actions: Iterable[str], emotions: Iterable[str]):
        self.pieces = pieces
        self.actions = tuple(sorted(actions))
        self.emotions = tuple(sorted(FEEL + e for e in emotions))
        self.action_names = frozenset(tag[len(ACT):].split(" ")[0] for tag in self.actions)
        self._allowed: dict[tuple[str | None, str], np.ndarray] = {}

    @property
    def empty(self) -> bool:
        return not self.actions and not self.emotions

    def tags(self, only: str | None) -> tuple[str, ...]:
        """The tags allowed: every one (`only` None), the emotions (FEEL) or one action's ("act:NAME")."""
        if only is None:
            return self.actions + self.emotions
        if only == FEEL:
            return self.emotions
        return tuple(tag for tag in self.actions if tag.split(" ")[0] == only)

    def complete(self, text: str, only: str | None) -> bool:
        return text.endswith("]") and text[:-1] in self.tags(only)

    def allowed(self, prefix: str, only: str | None) -> np.ndarray:
        """Token ids whose text, after `prefix` (a tag's text after "["), keeps it a valid tag of `tags(only)`
        or its start; a tag ends with "]"."""
        key = (only, prefix)
        found = self._allowed.get(key)
        if found is None:
            ids = set()
            for tag in (t + "]" for t in self.tags(only) if t.startswith(prefix)):
                rest = tag[len(prefix):]
                for n in range(1, len(rest) + 1):
                    ids.update(self.pieces.by_text.get(rest[:n], ()))
            found = self._allowed[key] = np.array(sorted(ids), dtype=np.int64)
        return found


class TailWriter:
    """One reply's tail as it is written: what may come next, and the tags written so far."""

    def __init__(self, grammar: TailGrammar, decided: str | None = None):
        """`decided`: the action the reply ends with ("" for none), decided before it; None lets the model
        choose."""
        self.grammar = grammar
        self.pieces = grammar.pieces
        self.tags: list[str] = []  # complete tag bodies, in order
        self.open: str | None = None  # the text of the tag being written, after its "["
        self.forced: list[int] = []  # tokens the runtime writes next, whatever the model prefers
        self.rewind_to: int | None = None  # the sequence's length before the tail's line break
        # The tags a tail's first tag may be: any (None), an emotion (FEEL) or the decided action's ("act:NAME").
        self._first = None if decided is None else ACT + decided if decided else FEEL
        self._only = self._first

    @property
    def writing(self) -> bool:
        """True once the tail has begun: tokens are picked by `pick`, never shown as text."""
        return self.open is not None or bool(self.forced)

    def free_banned(self, text: str) -> np.ndarray:
        """Tokens the free text may not use after `text`: every bracket, but "[" after a line break."""
        if text.endswith("\n") and not self.grammar.empty:
            return self.pieces.brackets_but_open
        return self.pieces.brackets

    def opens(self, token: int, seq_length: int) -> bool:
        """Whether the free text's `token` opens the tail (it is "[" after a line break, the last token fed,
        so the sequence held `seq_length - 1` tokens before it)."""
        if token != self.pieces.open:
            return False
        self.open, self.rewind_to = "", seq_length - 1
        return True

    def wants_emotion(self) -> bool:
        return bool(self.grammar.emotions) and not any(t.startswith(FEEL) for t in self.tags)

    def owes_tag(self) -> bool:
        """Whether the speech, ended, still owes a tag: the emotion, or the action decided for the reply."""
        return self.wants_emotion() or (self._first not in (None, FEEL) and not self.tags)

    def write_emotion(self, or_action: bool = False) -> None:
        """The runtime writes a line break and "[", and the model picks a label: its speech ended without an
        emotion, or it meant a tag not allowed. At the end of the speech (`or_action`) the model may pick an
        action there too: how likely it finds "act" against "feel" is what it learnt of when to act, which
        is far more than whether it opens a tail on its own after a turn most training replies ended.
        An action decided for the reply is written there instead."""
        self._only = self._first if or_action and not self.tags and self.grammar.actions else FEEL
        self.open = None
        self.forced = [self.pieces.newline, self.pieces.open]

    def pick(self, logits: np.ndarray) -> int | None:
        """The next token of the tail from `logits` [vocab], or None when the model does not mean any tag
        allowed here (its tag is then dropped)."""
        if self.forced:
            return self.forced[0]
        allowed = self.grammar.allowed(self.open or "", self._only)
        if not allowed.size:
            return None
        scores = logits[allowed]
        best = int(np.argmax(scores))
        if self._only is None:  # the model's own choice: dropped if it meant something else
            top = float(np.max(logits))
            share = np.exp(scores - top).sum() / np.exp(logits - top).sum()
            if share < MIN_TAG_SHARE:
                return None
        return int(allowed[best])

    def advance(self, token: int, seq_length: int) -> bool:
        """Write `token` into the tail (the sequence holds `seq_length` tokens, the last one fed before it);
        True when the tail is complete and the reply should end."""
        if self.forced:
            self.forced.pop(0)
            if not self.forced:
                self.open = ""
                if self._only != FEEL:  # an action may follow: dropping it goes back before the "\n"
                    self.rewind_to = seq_length - 1
            return False
        self.open = (self.open or "") + self.pieces.texts[token]
        if not self.grammar.complete(self.open, self._only):
            return False
        self.tags.append(self.open[:-1])
        self.open = None
        if self.tags[-1].startswith(ACT) and self.grammar.emotions:
            self._only = FEEL
            self.forced = [self.pieces.newline, self.pieces.open]
            return False
        return True

    def parsed(self) -> list[Tag]:
        return [parse_tag(tag) for tag in self.tags]
