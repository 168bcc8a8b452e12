"""The action test: does the character act when it should, and only then, in scenes it never trained on?

A test file beside the sheet (`<sheet>.action_test.toml`, carried in the bundle as `action_test.toml`)
holds scenarios written before training, each played in a fresh conversation with the game's facts set
first; only the action after the last line is scored:

    format = 1
    character = "Orlando Marlo"

    [[scenario]]
    lines = ["Hand over that letter, knight, or I tell the Chancellor what your father did."]
    expect = "none"                              # or an action call: "give_item item=father_letter"
    facts = { "letter.given" = true }            # optional: what the game has set on the NPC

Replies come from the runtime (`evaluate.answer_side_by_side`) with the bundle's sampler and each seed,
and greedily. Every action the runtime reports is also checked against the sheet (a declared action,
its arguments, values of their sets): the automaton makes that hold by construction, and the test
counts it rather than trusting it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpc_runtime.actions import call_text, valid_call
from lmpc_runtime.errors import ExportError, InvalidArgumentError
from lmpc_runtime.memory.gating import check_fact
from lmpc_runtime.sheet import CharacterSheet

from .calibration import read_toml

ACTION_TEST_FORMAT = 1
NONE = "none"


@dataclass(frozen=True)
class Scenario:
    lines: tuple[str, ...]
    expect: str  # "none", or "name arg=value ..." as a tail writes it
    facts: dict[str, Any] = field(default_factory=dict)


def action_test_file_for(sheet_path: Path) -> Path:
    """`name.toml` → `name.action_test.toml`."""
    return sheet_path.with_name(sheet_path.stem + ".action_test.toml")


def load_action_test(path: str | Path, sheet: CharacterSheet) -> list[Scenario]:
    path = Path(path)
    data = read_toml(path, "action test")
    problems = []
    if data.get("format") != ACTION_TEST_FORMAT:
        problems.append(f"format: expected {ACTION_TEST_FORMAT}")
    if data.get("character") != sheet.name:
        problems.append(f"character: {data.get('character')!r} is not {sheet.name!r}")
    scenarios = []
    for i, raw in enumerate(data.get("scenario", [])):
        where = f"scenario[{i}]"
        lines, expect, facts = raw.get("lines"), raw.get("expect"), raw.get("facts", {})
        if set(raw) - {"lines", "expect", "facts"}:
            problems.append(f"{where}: unknown keys {sorted(set(raw) - {'lines', 'expect', 'facts'})}")
        if not isinstance(lines, list) or not lines or not all(isinstance(x, str) and x.strip() for x in lines):
            problems.append(f"{where}.lines: expected a non-empty list of lines")
            continue
        if not isinstance(expect, str) or not (expect == NONE or valid_call(expect, sheet.actions)):
            problems.append(f"{where}.expect: {expect!r} is neither \"{NONE}\" nor a valid action of the sheet")
            continue
        try:
            for name, value in facts.items():
                check_fact(name, value)
        except InvalidArgumentError as exc:  # a fact the runtime would refuse
            problems.append(f"{where}.facts: {exc}")
            continue
        scenarios.append(Scenario(tuple(lines), expect, dict(facts)))
    if not scenarios:
        problems.append("scenario: expected at least one [[scenario]]")
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))
    return scenarios


def conversation_rows(scenarios: list[Scenario]) -> list[tuple[int, int, str, str]]:
    """(conversation, turn, topic, line) rows for `evaluate.answer_side_by_side`: one conversation each."""
    return [(i, turn, s.expect, line) for i, s in enumerate(scenarios) for turn, line in enumerate(s.lines)]


def summarise(scenarios: list[Scenario], answers: dict[str, list], sheet: CharacterSheet) -> dict:
    """Right action (or none) per run and per expected action, and how many emitted actions type-check."""
    last = {i: len(s.lines) - 1 for i, s in enumerate(scenarios)}
    rows, emitted, valid = [], 0, 0
    for run, replies in answers.items():
        for a in replies:
            actions = [t for t in a.tags if t.kind == "action"]
            emitted += len(actions)
            valid += sum(valid_call(call_text(t.name, t.args), sheet.actions) for t in actions)
            if a.turn != last[a.conversation]:
                continue
            got = call_text(actions[0].name, actions[0].args) if actions else NONE
            emotion = next((t.name for t in a.tags if t.kind == "emotion"), "")
            rows.append({"scenario": a.conversation, "run": run, "expect": scenarios[a.conversation].expect,
                         "got": got, "right": got == scenarios[a.conversation].expect, "reply": a.text,
                         "emotion": emotion, "lines": list(scenarios[a.conversation].lines)})
    by_expect: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_expect[row["expect"]].append(row["right"])
    return {
        "scenarios": len(scenarios),
        "replies": len(rows),
        "right": sum(r["right"] for r in rows) / len(rows),
        "by_expected": {k: sum(v) / len(v) for k, v in sorted(by_expect.items())},
        "confusion": dict(Counter(f"{r['expect']} -> {r['got']}" for r in rows if not r["right"]).most_common()),
        "actions_emitted": emitted,
        "actions_valid": valid,
        "emotions": dict(Counter(r["emotion"] or "(none)" for r in rows).most_common()),
        "rows": rows,
    }


def markdown(summary: dict, title: str) -> str:
    lines = [f"## Action test: {title}", "",
             f"{summary['scenarios']} scenarios, {summary['replies']} scored replies. Right action (or none): "
             f"**{summary['right']:.1%}**. Actions emitted in all replies: {summary['actions_emitted']}, of which "
             f"{summary['actions_valid']} parse and type-check against the sheet.", "",
             "| expected | right |", "|---|---:|"]
    lines += [f"| {k} | {v:.0%} |" for k, v in summary["by_expected"].items()]
    lines += ["", "Emotions of the scored replies: " + ", ".join(f"{k} {v}" for k, v in summary["emotions"].items()), ""]
    wrong = [r for r in summary["rows"] if not r["right"]]
    if wrong:
        lines += ["Wrong (first 12):", ""]
        lines += [f"- [{r['run']}] expected `{r['expect']}`, got `{r['got']}`: {' / '.join(r['lines'])} → {r['reply']}"
                  for r in wrong[:12]]
    return "\n".join(lines) + "\n"
