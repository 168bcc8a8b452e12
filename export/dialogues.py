"""Dialogues: the unit of training data, and the writer's hand-written ones.

A `Dialogue` is one conversation with the character (one or more player/character exchanges), with
where it came from: `sheet` (an example exchange of the sheet), `writer` (a dialogue file the writer
polished by hand), `knowledge` (drilled from the writer's knowledge file, `knowledge.py`) or `generated`
(written by a generator model). The writer's dialogues live in a TOML
file beside the sheet, `<sheet>.dialogues.toml`:

    format = 1
    character = "Orlando Marlo"

    [[dialogues]]
    context = "a ferryman on the river Aure, at dawn"   # optional: who speaks, where
    [[dialogues.turns]]
    player = "…"
    npc = "…"
    [[dialogues.turns]]
    player = "…"
    npc = "…"
    act = "give_item item=father_letter"   # optional, last turn only: the action the reply ends with
    feel = "sad"                           # optional, last turn only: its emotion
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lmpc_runtime.actions import ACT, FEEL, valid_call, write_tail
from lmpc_runtime.errors import SheetError
from lmpc_runtime.sheet import CharacterSheet

DIALOGUES_FORMAT = 1
SOURCES = ("sheet", "writer", "knowledge", "generated")
TAG_KEYS = ("act", "feel")


@dataclass(frozen=True)
class Dialogue:
    turns: tuple[tuple[str, str], ...]  # (player line, character's reply), oldest first
    source: str
    context: str = ""
    # Facts the generator was shown before the last reply; a sample of this dialogue recalls them.
    memories: tuple[str, ...] = ()
    # The sheet statements the last reply states (`knowledge.statement_refs`), for the coverage report.
    covers: tuple[str, ...] = ()

    @property
    def replies(self) -> tuple[str, ...]:
        return tuple(npc for _, npc in self.turns)


def dialogue_file_for(sheet_path: Path) -> Path:
    """Where the writer's dialogues for a sheet live by default: `name.toml` → `name.dialogues.toml`."""
    return sheet_path.with_name(sheet_path.stem + ".dialogues.toml")


def read_writer_file(path: Path, sheet: CharacterSheet, version: int,
                     entries: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """A writer's TOML file beside the sheet (dialogues, drills): its `[[entries]]` tables, each with where
    it is ("dialogues[3]"), and the problems found so far (`format`, `character`, unknown keys, entries
    that are not tables). An unreadable file is a SheetError at once."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SheetError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SheetError(str(path), [f"not a UTF-8 TOML file: {exc}"]) from exc
    problems = []
    if data.get("format") != version:
        problems.append(f"format: expected {version}")
    if data.get("character") != sheet.name:
        problems.append(f"character: {data.get('character')!r} is not the sheet's character {sheet.name!r}")
    problems += [f"{key}: unknown key" for key in sorted(set(data) - {"format", "character", entries})]
    found = data.get(entries)
    if not isinstance(found, list) or not found:
        problems.append(f"{entries}: expected at least one [[{entries}]] table")
        found = []
    tables = []
    for i, entry in enumerate(found):
        if isinstance(entry, dict):
            tables.append((f"{entries}[{i}]", entry))
        else:
            problems.append(f"{entries}[{i}]: expected a table")
    return tables, problems


def load_dialogues(path: Path, sheet: CharacterSheet) -> list[Dialogue]:
    """Read a dialogue file; every problem is reported at once in one SheetError."""
    tables, problems = read_writer_file(path, sheet, DIALOGUES_FORMAT, "dialogues")
    dialogues = []
    for where, entry in tables:
        unknown = sorted(set(entry) - {"context", "turns"})
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (a dialogue's lines go in "
                            f"[[dialogues.turns]] tables, each with `player` and `npc`)")
        context = entry.get("context", "")
        turns = entry.get("turns")
        if not isinstance(context, str):
            problems.append(f"{where}.context: expected a string")
        if not isinstance(turns, list) or not turns:
            problems.append(f"{where}.turns: expected at least one [[{where}.turns]] table")
            continue
        pairs = []
        for j, turn in enumerate(turns):
            ok = (isinstance(turn, dict) and {"player", "npc"} <= set(turn) <= {"player", "npc", *TAG_KEYS}
                  and all(isinstance(v, str) and v.strip() for v in turn.values()))
            if not ok:
                problems.append(f"{where}.turns[{j}]: expected non-empty `player` and `npc` strings, and "
                                f"optionally `act` and `feel`")
                continue
            tail, wrong = turn_tail(turn, sheet, last=j == len(turns) - 1)
            problems += [f"{where}.turns[{j}].{problem}" for problem in wrong]
            pairs.append((turn["player"].strip(), turn["npc"].strip() + tail))
        if len(pairs) == len(turns):
            dialogues.append(Dialogue(turns=tuple(pairs), source="writer", context=context.strip()))
    if problems:
        raise SheetError(str(path), problems)
    return dialogues


def turn_tail(turn: dict, sheet: CharacterSheet, last: bool) -> tuple[str, list[str]]:
    """A turn's `act` and `feel` as the tail its reply ends with ("\\n[act:…]\\n[feel:…]", "" for neither),
    and the problems found. Only a dialogue's last turn may carry them: earlier replies reach the model as
    history, which keeps no tail."""
    act, feel = turn.get("act", "").strip(), turn.get("feel", "").strip()
    if not act and not feel:
        return "", []
    if not last:
        return "", ["act/feel: only the last turn of a dialogue may carry an action or an emotion"]
    problems = []
    if act and not valid_call(act, sheet.actions):
        name = act.split(" ")[0]
        spec = next((a for a in sheet.actions if a.name == name), None)
        problems.append(f"act: the sheet declares no action {name!r}" if spec is None else
                        f"act: {act!r} is not a valid call of {name} (arguments: {', '.join(spec.args) or 'none'})")
    if feel and feel not in sheet.emotions:
        problems.append(f"feel: {feel!r} is not one of the sheet's emotions")
    return write_tail(([ACT + act] if act else []) + ([FEEL + feel] if feel else [])), problems


def writer_dialogues(sheet: CharacterSheet, dialogue_file: Path | None) -> list[Dialogue]:
    """The hand-written material: the sheet's example exchanges, then the dialogue file's, if any."""
    found = [Dialogue(turns=((ex.player, ex.npc),), source="sheet", context=ex.context)
             for ex in sheet.examples]
    if dialogue_file is not None:
        found += load_dialogues(dialogue_file, sheet)
    return found
