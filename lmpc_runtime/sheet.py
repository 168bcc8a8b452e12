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

from .errors import SheetError

SHEET_FORMAT = 1
MAX_SHEET_BYTES = 4 * 1024 * 1024
MIN_EXAMPLES = 10


@dataclass(frozen=True)
class Person:
    name: str
    description: str


@dataclass(frozen=True)
class World:
    name: str
    description: str
    political_order: str
    powers: str
    marginalised_groups: str
    important_people: tuple[Person, ...]
    marginalised_important_people: tuple[Person, ...]


@dataclass(frozen=True)
class Example:
    player: str
    npc: str
    context: str = ""


@dataclass(frozen=True)
class CharacterSheet:
    name: str
    title: str
    summary: str
    alignment: str
    speech_style: str
    backstory: str
    values: tuple[str, ...]
    objectives: tuple[str, ...]
    facts: tuple[str, ...]
    world: World
    opinions: dict[str, str]
    examples: tuple[Example, ...]
    greeting: str = ""
    catchphrases: tuple[str, ...] = ()
    fallback_lines: tuple[str, ...] = ()
    avoid_phrases: tuple[str, ...] = ()
    format: int = SHEET_FORMAT
    extensions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str) for the bundle manifest; `sheet_from_dict` reverses it."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# key -> (kind, required). Kinds: "str", "strs" (list of strings), "int".
_TOP_LEVEL = {
    "format": ("int", True),
    "name": ("str", True),
    "title": ("str", True),
    "summary": ("str", True),
    "alignment": ("str", True),
    "speech_style": ("str", True),
    "greeting": ("str", False),
    "backstory": ("str", True),
    "values": ("strs", True),
    "objectives": ("strs", True),
    "catchphrases": ("strs", False),
    "facts": ("strs", True),
    "fallback_lines": ("strs", False),
    "avoid_phrases": ("strs", False),
    "world": ("table", True),
    "opinions": ("table", True),
    "examples": ("tables", True),
    "extensions": ("table", False),
}
_WORLD = {
    "name": ("str", True),
    "description": ("str", True),
    "political_order": ("str", True),
    "powers": ("str", True),
    "marginalised_groups": ("str", True),
    "important_people": ("tables", True),
    "marginalised_important_people": ("tables", True),
}
_PERSON = {"name": ("str", True), "description": ("str", True)}
_EXAMPLE = {"player": ("str", True), "npc": ("str", True), "context": ("str", False)}


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
            if key not in data:
                if required:
                    self.problems.append(f"{path}: missing")
                continue
            out[key] = self.value(data[key], kind, path)
        return out

    def value(self, value: Any, kind: str, path: str) -> Any:
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                self.problems.append(f"{path}: expected an integer")
            return value
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
        checked = [check.table(p, _PERSON, f"world.{key}[{i}]") for i, p in enumerate(world_raw.get(key, []))]
        people[key] = tuple(Person(**p) for p in checked if len(p) == len(_PERSON))
    opinions: dict[str, str] = {}
    for topic, opinion in top.get("opinions", {}).items():
        opinions[topic] = check.value(opinion, "str", f"opinions.{topic}")
    if "opinions" in top and not opinions:
        check.problems.append("opinions: must not be empty")

    examples = []
    for i, ex in enumerate(top.get("examples", [])):
        fields = check.table(ex, _EXAMPLE, f"examples[{i}]")
        if "player" in fields and "npc" in fields:
            examples.append(Example(**fields))
    if "examples" in top and len(top["examples"]) < MIN_EXAMPLES:
        check.problems.append(
            f"examples: {len(top['examples'])} given, at least {MIN_EXAMPLES} are needed to show the voice"
        )

    if check.problems:
        raise SheetError(source, check.problems)
    world = World(
        **{k: v for k, v in world_raw.items() if k not in people},
        **people,
    )
    return CharacterSheet(
        **{k: v for k, v in top.items() if k not in ("world", "opinions", "examples")},
        world=world,
        opinions=opinions,
        examples=tuple(examples),
    )


def load_sheet(path: str | Path) -> CharacterSheet:
    """Read and validate a TOML character sheet. Raises `SheetError` listing every problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SheetError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
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
    """Rebuild a sheet from `CharacterSheet.to_dict()` output (as stored in a bundle manifest)."""
    data = dict(data)
    world = dict(data.pop("world"))
    for key in ("important_people", "marginalised_important_people"):
        world[key] = [dict(p) for p in world[key]]
    data["world"] = world
    data["examples"] = [{k: v for k, v in ex.items() if k != "context" or v} for ex in data["examples"]]
    for key in [k for k, v in data.items() if v in ((), [], "", {}) and not _TOP_LEVEL[k][1]]:
        del data[key]
    return parse_sheet(data, "<bundle manifest>")
