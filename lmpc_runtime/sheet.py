"""The character sheet: the TOML file a writer edits (format described in docs/character-sheet.md).

`load_sheet(path)` parses and validates it and returns a `CharacterSheet`; every problem found is
reported at once in one `SheetError`, each with the key path it concerns, so a writer can fix them all
in one pass.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .actions import action_problems, emotion_problems
from .errors import InvalidArgumentError, SheetError
from .memory.gating import parse_condition

SHEET_FORMAT = 1
MAX_SHEET_BYTES = 4 * 1024 * 1024
MIN_EXAMPLES = 10


@dataclass(frozen=True)
class Person:
    name: str
    description: str


@dataclass(frozen=True)
class World:
    name: str = ""
    description: str = ""
    political_order: str = ""
    powers: str = ""
    marginalised_groups: str = ""
    important_people: tuple[Person, ...] = ()
    marginalised_important_people: tuple[Person, ...] = ()


@dataclass(frozen=True)
class Example:
    player: str
    npc: str
    context: str = ""


@dataclass(frozen=True)
class LoreEntry:
    """One lorebook entry, with the Character Card V2 fields (see docs/character-sheet.md) and a few
    SillyTavern World Info ones (selective_logic, match_whole_words, sticky, cooldown, delay)."""

    content: str
    keys: tuple[str, ...] = ()
    secondary_keys: tuple[str, ...] = ()
    enabled: bool = True
    constant: bool = False
    selective: bool = False
    selective_logic: str = "and_any"
    insertion_order: int = 100
    priority: int = 0
    case_sensitive: bool = False
    match_whole_words: bool = True
    position: str = "before_char"
    requires: str = ""
    sticky: int = 0
    cooldown: int = 0
    delay: int = 0
    name: str = ""
    comment: str = ""
    id: int | None = None
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lorebook:
    entries: tuple[LoreEntry, ...] = ()
    scan_depth: int = 2
    token_budget: int = 256
    recursive_scanning: bool = False
    name: str = ""
    description: str = ""
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """Something the character can do in the game (`actions.py`). `args` maps each argument to its closed
    set of values, or to "game" when the game registers the values at run time; `requires` is a condition
    on the game's facts that must hold for the action to be open."""

    name: str
    description: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    requires: str = ""


@dataclass(frozen=True)
class CharacterSheet:
    """Only the name is required: a character card's few fields make an NPC that talks; each deeper field
    makes it a better one (`advice` says which are missing, most useful first)."""

    name: str
    title: str = ""
    summary: str = ""
    alignment: str = ""
    speech_style: str = ""
    backstory: str = ""
    values: tuple[str, ...] = ()
    objectives: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    world: World = World()
    opinions: dict[str, str] = field(default_factory=dict)
    examples: tuple[Example, ...] = ()
    greeting: str = ""
    catchphrases: tuple[str, ...] = ()
    fallback_lines: tuple[str, ...] = ()
    avoid_phrases: tuple[str, ...] = ()
    format: int = SHEET_FORMAT
    extensions: dict[str, Any] = field(default_factory=dict)
    lorebook: Lorebook = Lorebook()
    actions: tuple[Action, ...] = ()
    emotions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str) for the bundle manifest; `sheet_from_dict` reverses it."""
        return _plain(asdict(self))


def advice(sheet: CharacterSheet) -> list[str]:
    """What the sheet still lacks, most useful first: what the NPC must know, then how it sounds, then who
    and where it is, then what it wants and believes. Measured field by field (`benchmarks.advice`, Jory
    Tallow's persona test, untuned): leaving any one group out moved key facts by less than the test's
    noise, so the order stays a judgement: the fields pay off through training, whose drills and
    coverage report are built on the facts, values, objectives, opinions and people. Fields that reach
    neither the prompt, the memories nor training are not advised: the alignment, and the backstory when
    facts are written (without facts, its sentences stand in for them)."""
    world = sheet.world
    gaps = [
        (not sheet.facts, "facts: none; the NPC recalls, and is scored on, only what is written here "
                          "(short third-person statements, one fact each)"),
        (len(sheet.examples) < MIN_EXAMPLES,
         f"examples: {len(sheet.examples)}; at least {MIN_EXAMPLES} show the voice, 40 or more let a fine-tune learn it"),
        (not sheet.title or not sheet.summary, "title and summary: who they are, in a line and in two or three sentences"),
        (not world.name or not world.description, "world.name and world.description: where and when they live"),
        (not sheet.objectives, "objectives: what they are trying to achieve"),
        (not sheet.values, "values: what they hold dear"),
        (not sheet.opinions, "opinions: what they think of the people and powers around them"),
        (not sheet.speech_style, "speech_style: how they talk"),
        (not world.important_people, "world.important_people: who they know"),
        (not (world.political_order and world.powers and world.marginalised_groups),
         "world.political_order, world.powers, world.marginalised_groups: how their world works"),
        (not sheet.facts and not sheet.backstory, "backstory: their history, in prose (until facts are written)"),
    ]
    return [text for missing, text in gaps if missing]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# key -> (kind, required). Kinds: "str", "strs" (non-empty list of strings), "keys" (list of strings, may be
# empty), "int", "bool", "table", "tables" (array of tables).
_TOP_LEVEL = {
    "format": ("int", True),
    "name": ("str", True),
    "title": ("str", False),
    "summary": ("str", False),
    "alignment": ("str", False),
    "speech_style": ("str", False),
    "greeting": ("str", False),
    "backstory": ("str", False),
    "values": ("strs", False),
    "objectives": ("strs", False),
    "catchphrases": ("strs", False),
    "facts": ("strs", False),
    "fallback_lines": ("strs", False),
    "avoid_phrases": ("strs", False),
    "world": ("table", False),
    "opinions": ("table", False),
    "examples": ("tables", False),
    "extensions": ("table", False),
    "lorebook": ("table", False),
    "actions": ("tables", False),
    "emotions": ("strs", False),
}
_WORLD = {
    "name": ("str", False),
    "description": ("str", False),
    "political_order": ("str", False),
    "powers": ("str", False),
    "marginalised_groups": ("str", False),
    "important_people": ("tables", False),
    "marginalised_important_people": ("tables", False),
}
_PERSON = {"name": ("str", True), "description": ("str", True)}
_EXAMPLE = {"player": ("str", True), "npc": ("str", True), "context": ("str", False)}
_LOREBOOK = {
    "entries": ("tables", True),
    "scan_depth": ("int", False),
    "token_budget": ("int", False),
    "recursive_scanning": ("bool", False),
    "name": ("str", False),
    "description": ("str", False),
    "extensions": ("table", False),
}
_LORE_ENTRY = {
    "content": ("str", True),
    "keys": ("keys", False),
    "secondary_keys": ("keys", False),
    "enabled": ("bool", False),
    "constant": ("bool", False),
    "selective": ("bool", False),
    "selective_logic": ("str", False),
    "insertion_order": ("int", False),
    "priority": ("int", False),
    "case_sensitive": ("bool", False),
    "match_whole_words": ("bool", False),
    "position": ("str", False),
    "requires": ("str", False),
    "sticky": ("int", False),
    "cooldown": ("int", False),
    "delay": ("int", False),
    "name": ("str", False),
    "comment": ("str", False),
    "id": ("int", False),
    "extensions": ("table", False),
}
_ACTION = {
    "name": ("str", True),
    "description": ("str", False),
    "args": ("table", False),
    "requires": ("str", False),
}
SELECTIVE_LOGIC = ("and_any", "and_all", "not_any", "not_all")
POSITIONS = ("before_char", "after_char")
MAX_SCAN_DEPTH = 1000
MAX_LORE_BUDGET = 8192
MAX_TIMER_TURNS = 100_000


class _Checker:
    """Collects problems while reading a parsed TOML document against a schema."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def table(self, data: Any, schema: dict[str, tuple[str, bool]], where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.problems.append(f"{where or 'the sheet'}: expected a table")
            return {}
        for key in data:
            if key not in schema:
                hint = difflib.get_close_matches(key, schema, n=1)
                also = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problems.append(f"{_join(where, key)}: unknown key{also}")
        out: dict[str, Any] = {}
        for key, (kind, required) in schema.items():
            path = _join(where, key)
            if key not in data or (not required and _blank(data[key])):
                if required:
                    self.problems.append(f"{path}: missing")
                continue  # an optional field left blank is one not written yet
            out[key] = self.value(data[key], kind, path)
        return out

    def value(self, value: Any, kind: str, path: str) -> Any:
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                self.problems.append(f"{path}: expected an integer")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                self.problems.append(f"{path}: expected true or false")
            return value
        if kind == "keys":
            if not isinstance(value, list):
                self.problems.append(f"{path}: expected a list of strings")
                return ()
            return tuple(self.value(v, "str", f"{path}[{i}]") for i, v in enumerate(value))
        if kind == "str":
            if not isinstance(value, str):
                self.problems.append(f"{path}: expected a string")
                return ""
            if not value.strip():
                self.problems.append(f"{path}: must not be empty")
            return value.strip()
        if kind == "strs":
            if not isinstance(value, list):
                self.problems.append(f"{path}: expected a list of strings")
                return ()
            if not value:
                self.problems.append(f"{path}: must not be empty")
            return tuple(self.value(v, "str", f"{path}[{i}]") for i, v in enumerate(value))
        if kind == "table":
            if not isinstance(value, dict):
                self.problems.append(f"{path}: expected a table")
                return {}
            return value
        if kind == "tables":
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                self.problems.append(f"{path}: expected an array of tables ([[{path}]])")
                return []
            return value
        raise AssertionError(kind)


def _blank(value: Any) -> bool:
    """Empty text, list or table, or a table of only such values (an example or person not yet written)."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value
    if isinstance(value, dict):
        return all(_blank(v) for v in value.values())
    return False


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_sheet(data: dict[str, Any], source: str = "<sheet>") -> CharacterSheet:
    """Validate an already-parsed sheet (from TOML or an imported card) and build the dataclass."""
    check = _Checker()
    top = check.table(data, _TOP_LEVEL, "")
    if "format" in top and isinstance(top["format"], int) and top["format"] != SHEET_FORMAT:
        if top["format"] > SHEET_FORMAT:
            check.problems.append(
                f"format: this sheet uses format {top['format']}, newer than this LMPC reads ({SHEET_FORMAT})"
            )
        else:
            check.problems.append(f"format: unknown format {top['format']} (expected {SHEET_FORMAT})")

    world_raw = check.table(top.get("world", {}), _WORLD, "world") if "world" in top else {}
    people: dict[str, tuple[Person, ...]] = {}
    for key in ("important_people", "marginalised_important_people"):
        checked = [check.table(p, _PERSON, f"world.{key}[{i}]")
                   for i, p in enumerate(world_raw.get(key, [])) if not _blank(p)]
        people[key] = tuple(Person(**p) for p in checked if len(p) == len(_PERSON))
    opinions: dict[str, str] = {}
    for topic, opinion in top.get("opinions", {}).items():
        opinions[topic] = check.value(opinion, "str", f"opinions.{topic}")

    examples = []
    for i, ex in enumerate(top.get("examples", [])):
        if _blank(ex):
            continue
        fields = check.table(ex, _EXAMPLE, f"examples[{i}]")
        if "player" in fields and "npc" in fields:
            examples.append(Example(**fields))

    lorebook = _lorebook(check, top["lorebook"]) if "lorebook" in top else Lorebook()
    actions = _actions(check, top.get("actions", []))
    if "emotions" in top:
        check.problems += emotion_problems(top["emotions"])

    if check.problems:
        raise SheetError(source, check.problems)
    world = World(**{k: v for k, v in world_raw.items() if k not in people}, **people)
    return CharacterSheet(
        **{k: v for k, v in top.items() if k not in ("world", "opinions", "examples", "lorebook", "actions")},
        actions=actions,
        world=world,
        opinions=opinions,
        examples=tuple(examples),
        lorebook=lorebook,
    )


def _lorebook(check: _Checker, data: Any) -> Lorebook:
    """Read `[lorebook]` and its `[[lorebook.entries]]`, adding every problem found to `check`."""
    book = check.table(data, _LOREBOOK, "lorebook")
    _check_range(check, book, "scan_depth", 1, MAX_SCAN_DEPTH, "lorebook")
    _check_range(check, book, "token_budget", 1, MAX_LORE_BUDGET, "lorebook")
    entries, ids = [], set()
    for i, raw in enumerate(book.get("entries", [])):
        where = f"lorebook.entries[{i}]"
        entry = check.table(raw, _LORE_ENTRY, where)
        if not entry.get("constant") and not entry.get("keys"):
            check.problems.append(f"{where}.keys: an entry that is not constant needs at least one key")
        for key, allowed in (("selective_logic", SELECTIVE_LOGIC), ("position", POSITIONS)):
            if key in entry and entry[key] not in allowed:
                check.problems.append(f"{where}.{key}: must be one of {', '.join(allowed)}")
        for key in ("sticky", "cooldown", "delay"):
            _check_range(check, entry, key, 0, MAX_TIMER_TURNS, where)
        for key in ("priority", "insertion_order"):
            _check_range(check, entry, key, -(10**9), 10**9, where)
        if isinstance(entry.get("requires"), str):
            try:
                parse_condition(entry["requires"])
            except InvalidArgumentError as exc:
                check.problems.append(f"{where}.requires: {exc}")
        if isinstance(entry.get("id"), int):
            if entry["id"] in ids:
                check.problems.append(f"{where}.id: {entry['id']} is used by an earlier entry")
            ids.add(entry["id"])
        if "content" in entry:
            entries.append(LoreEntry(**entry))
    settings = {k: v for k, v in book.items() if k != "entries"}
    return Lorebook(entries=tuple(entries), **settings)


def _actions(check: _Checker, data: list[Any]) -> tuple[Action, ...]:
    """Read `[[actions]]`, adding every problem found to `check` (the rules are in actions.py)."""
    actions, names = [], set()
    for i, raw in enumerate(data):
        where = f"actions[{i}]"
        fields = check.table(raw, _ACTION, where)
        if isinstance(raw, dict) and isinstance(raw.get("args"), dict):
            fields["args"] = raw["args"]  # an argument with no values yet is an error, not a blank to skip
        problems = action_problems(fields)
        if fields.get("name") in names:
            problems.append(f"name: {fields['name']!r} is declared twice")
        names.add(fields.get("name"))
        if isinstance(fields.get("requires"), str):
            try:
                parse_condition(fields["requires"])
            except InvalidArgumentError as exc:
                problems.append(f"requires: {exc}")
        check.problems += [f"{where}.{problem}" for problem in problems]
        if not problems and "name" in fields:
            args = {arg: tuple(v) if isinstance(v, list) else v for arg, v in fields.get("args", {}).items()}
            actions.append(Action(**{**fields, "args": args}))
    return tuple(actions)


def _check_range(check: _Checker, table: dict[str, Any], key: str, low: int, high: int, where: str) -> None:
    value = table.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        check.problems.append(f"{where}.{key}: must be between {low} and {high}")


def load_sheet(path: str | Path) -> CharacterSheet:
    """Read and validate a TOML character sheet. Raises `SheetError` listing every problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise SheetError(str(path), [f"cannot read the file: {getattr(exc, 'strerror', None) or exc}"]) from exc
    if size > MAX_SHEET_BYTES:
        raise SheetError(str(path), [f"the file is {size} bytes; a sheet may be at most {MAX_SHEET_BYTES}"])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SheetError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SheetError(str(path), [f"TOML syntax: {exc}"]) from exc
    return parse_sheet(data, str(path))


def sheet_from_dict(data: dict[str, Any]) -> CharacterSheet:
    """Rebuild a sheet from `CharacterSheet.to_dict()` output (as stored in a bundle manifest).
    Data of any other shape raises `SheetError`, like a bad sheet."""
    try:
        data = _stored_to_sheet(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise SheetError("<bundle manifest>", [f"not a stored character sheet ({type(exc).__name__}: {exc})"]) \
            from exc
    return parse_sheet(data, "<bundle manifest>")


def _stored_to_sheet(data: dict[str, Any]) -> dict[str, Any]:
    """Undo what to_dict() adds to a sheet (written-out defaults), giving parse_sheet's input."""
    data = dict(data)
    world = dict(data.pop("world"))
    for key in ("important_people", "marginalised_important_people"):
        world[key] = [dict(p) for p in world[key]]
    data["world"] = world
    data["examples"] = [{k: v for k, v in ex.items() if k != "context" or v} for ex in data["examples"]]
    book = data.get("lorebook")
    if isinstance(book, dict):
        # Defaults that to_dict() wrote out (empty strings, no id) are left out again, as in a sheet.
        book["entries"] = [{k: v for k, v in e.items() if v not in ("", None)} for e in book.get("entries", [])]
        data["lorebook"] = {k: v for k, v in book.items() if v not in ("", None)} if book["entries"] else {}
    for key in [k for k, v in data.items() if v in ((), [], "", {}) and not _TOP_LEVEL[k][1]]:
        del data[key]
    return data
