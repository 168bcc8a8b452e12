"""Game state an NPC is told about, and the small condition language that gates what it knows.

The game sets facts and flags on an NPC (`quest.stage = 3`, `player.name = "Mira"`, `met_isolde = true`);
lorebook entries and memories may carry a condition such as `quest.stage >= 3 and not player.is_thief`,
and stay unknown to the NPC until it holds. Conditions are parsed by the small grammar below and
evaluated by walking the parsed tree, never by `eval`:

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := atom (("==" | "!=" | "<" | "<=" | ">" | ">=") atom)?
    atom    := NAME | NUMBER | STRING | "true" | "false" | "(" expr ")"

A fact that is not set reads as missing: it is false on its own, unequal to every value, and every
ordering comparison with it is false. Values of different kinds (numbers, strings, booleans) are never
equal and never ordered, so `quest.stage >= "3"` is simply false.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Union

from ..errors import InvalidArgumentError

Value = Union[bool, int, float, str]

MAX_CONDITION_CHARS = 1000
MAX_NESTING = 32
MAX_FACT_NAME = 64
MAX_FACT_TEXT = 256
MAX_FACTS = 10_000
FACT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>-?\d+(?:\.\d+)?)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|<=|>=|<|>|\(|\))
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "true", "false"}
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_MISSING = object()


def check_fact(name: Any, value: Any) -> None:
    """Raise InvalidArgumentError unless `name` is a dotted fact name and `value` a plain scalar."""
    if not isinstance(name, str) or len(name) > MAX_FACT_NAME or not FACT_NAME.fullmatch(name) \
            or name in _KEYWORDS:
        raise InvalidArgumentError(
            f"fact name {name!r} must be dotted words such as 'quest.stage' (at most {MAX_FACT_NAME} characters)")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"fact {name}: {value} is not a finite number")
    if isinstance(value, str) and len(value) > MAX_FACT_TEXT:
        raise InvalidArgumentError(f"fact {name}: text longer than {MAX_FACT_TEXT} characters")
    if not isinstance(value, (bool, int, float, str)):
        raise InvalidArgumentError(f"fact {name}: a value must be a bool, number or string, not {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < 1 << 63:
        raise InvalidArgumentError(f"fact {name}: {value} does not fit in 64 bits")


@dataclass(frozen=True)
class Condition:
    """A parsed condition; call it with the facts to evaluate it."""

    source: str
    _tree: tuple

    def __call__(self, facts: Mapping[str, Value]) -> bool:
        return _truthy(_evaluate(self._tree, facts))

    def names(self) -> set[str]:
        """The fact names the condition reads."""
        found: set[str] = set()
        _collect_names(self._tree, found)
        return found


ALWAYS = Condition("", ("const", True))


def parse_condition(text: str) -> Condition:
    """Parse `text`; an empty string is the condition that always holds. Raises InvalidArgumentError."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a condition must be a string, not {type(text).__name__}")
    if not text.strip():
        return ALWAYS
    if len(text) > MAX_CONDITION_CHARS:
        raise InvalidArgumentError(f"condition longer than {MAX_CONDITION_CHARS} characters")
    parser = _Parser(text)
    tree = parser.expr(0)
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()[1]!r}")
    return Condition(text, tree)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                if not text[pos:].strip():
                    break
                at = pos + len(text[pos:]) - len(text[pos:].lstrip())
                raise InvalidArgumentError(f"condition {text!r}: cannot read {text[at:at + 10]!r} at {at}")
            kind = match.lastgroup or ""
            word, start = match.group(kind), match.start(kind)
            if kind == "name" and word in _KEYWORDS:
                kind = "keyword"
            self.tokens.append((kind, word, start))
            pos = match.end()
        self.i = 0

    def fail(self, message: str) -> None:
        raise InvalidArgumentError(f"condition {self.text!r}: {message}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, word: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            self.fail("ends too early")
        if word is not None and token[1] != word:
            self.fail(f"expected {word!r} at {token[2]}, found {token[1]!r}")
        self.i += 1
        return token

    def at(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == word and token[0] in ("keyword", "op")

    def expr(self, depth: int) -> tuple:
        if depth > MAX_NESTING:
            self.fail(f"nested deeper than {MAX_NESTING}")
        tree = self.conjunction(depth)
        while self.at("or"):
            self.take()
            tree = ("or", tree, self.conjunction(depth))
        return tree

    def conjunction(self, depth: int) -> tuple:
        tree = self.negation(depth)
        while self.at("and"):
            self.take()
            tree = ("and", tree, self.negation(depth))
        return tree

    def negation(self, depth: int) -> tuple:
        if depth > MAX_NESTING:
            self.fail(f"nested deeper than {MAX_NESTING}")
        if self.at("not"):
            self.take()
            return ("not", self.negation(depth + 1))
        return self.comparison(depth)

    def comparison(self, depth: int) -> tuple:
        left = self.atom(depth)
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in _COMPARISONS:
            self.take()
            return ("cmp", token[1], left, self.atom(depth))
        return left

    def atom(self, depth: int) -> tuple:
        kind, word, pos = self.take()
        if word == "(" and kind == "op":
            tree = self.expr(depth + 1)
            self.take(")")
            return tree
        if kind == "number":
            return ("const", float(word) if "." in word else int(word))
        if kind == "string":
            return ("const", re.sub(r"\\(.)", r"\1", word[1:-1]))
        if kind == "keyword" and word in ("true", "false"):
            return ("const", word == "true")
        if kind == "name":
            return ("fact", word)
        self.fail(f"unexpected {word!r} at {pos}")
        raise AssertionError  # fail() always raises


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "missing"


def _truthy(value: Any) -> bool:
    return value is not _MISSING and bool(value)


def _evaluate(tree: tuple, facts: Mapping[str, Value]) -> Any:
    op = tree[0]
    if op == "const":
        return tree[1]
    if op == "fact":
        return facts.get(tree[1], _MISSING)
    if op == "not":
        return not _truthy(_evaluate(tree[1], facts))
    if op == "and":
        return _truthy(_evaluate(tree[1], facts)) and _truthy(_evaluate(tree[2], facts))
    if op == "or":
        return _truthy(_evaluate(tree[1], facts)) or _truthy(_evaluate(tree[2], facts))
    _, comparison, left_tree, right_tree = tree
    left, right = _evaluate(left_tree, facts), _evaluate(right_tree, facts)
    same_kind = _kind(left) == _kind(right) != "missing"
    if comparison in ("==", "!="):
        return (same_kind and left == right) == (comparison == "==")
    if not same_kind or _kind(left) == "bool":
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[comparison]


def _collect_names(tree: tuple, found: set[str]) -> None:
    if tree[0] == "fact":
        found.add(tree[1])
    for part in tree[1:]:
        if isinstance(part, tuple):
            _collect_names(part, found)


class GameState(Mapping[str, Value]):
    """The facts and flags the game has told one NPC, by dotted name (a read-only mapping plus setters)."""

    def __init__(self) -> None:
        self._facts: dict[str, Value] = {}

    def set(self, name: str, value: Value) -> None:
        check_fact(name, value)
        if name not in self._facts and len(self._facts) >= MAX_FACTS:
            raise InvalidArgumentError(f"an NPC holds at most {MAX_FACTS} facts")
        self._facts[name] = value

    def unset(self, name: str) -> None:
        self._facts.pop(name, None)

    def replace(self, facts: Mapping[str, Any]) -> None:
        """Set all facts at once (every one checked first, so a bad one changes nothing)."""
        if len(facts) > MAX_FACTS:
            raise InvalidArgumentError(f"an NPC holds at most {MAX_FACTS} facts")
        for name, value in facts.items():
            check_fact(name, value)
        self._facts = dict(facts)

    def __getitem__(self, name: str) -> Value:
        return self._facts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)
