"""The persona test: does the character know who they are, on questions it was never trained on?

A test file beside the sheet (`<sheet>.persona_test.toml`, carried in the bundle as `persona_test.toml`)
holds questions written from the sheet alone, before any training, each with what a faithful reply
must contain and what it must not say:

    format = 1
    character = "Orlando Marlo"

    [[question]]
    category = "identity"                     # one of CATEGORIES
    lines = ["Who are you, then?"]            # said in order in a fresh conversation; the last reply is scored
    must = ['\\borlando\\b', 'marlo']          # key facts: each a regex (case-insensitive) the reply must match
    must_not = ["i('m| am) an? (ai|assistant)"]   # regexes a faithful reply never matches

A reply's key-fact score is the share of `must` it matches, and zero when it matches any `must_not` (a
reply that names his sister and then gives her a husband is not faithful). The hygiene checks of
training data add invented names (a capitalised name found nowhere in the sheet or the question),
assistant speak, and loops (a repeated phrase, or a reply the runtime cut for repeating). Replies come
from the runtime itself (`evaluate.answer`) with the bundle's own sampler and each seed, and greedily;
during training, greedily from the model being trained (`train.PersonaTestCallback`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lmpc_runtime.actions import split_tail, valid_call
from lmpc_runtime.errors import ExportError
from lmpc_runtime.sheet import Action, CharacterSheet

from .calibration import read_toml
from .hygiene import Hygiene

PERSONA_TEST_FORMAT = 1
CATEGORIES = ("identity", "family", "faith-world", "past", "values", "objectives", "opinions", "people",
              "outside-world", "challenge")
GREEDY = "greedy"


@dataclass(frozen=True)
class TestQuestion:
    category: str
    lines: tuple[str, ...]
    must: tuple[re.Pattern, ...]
    must_not: tuple[re.Pattern, ...] = ()


def persona_test_file_for(sheet_path: Path) -> Path:
    """`name.toml` → `name.persona_test.toml`."""
    return sheet_path.with_name(sheet_path.stem + ".persona_test.toml")


def load_persona_test(path: str | Path, character: str | None = None) -> list[TestQuestion]:
    path = Path(path)
    data = read_toml(path, "persona test")
    if data.get("format") != PERSONA_TEST_FORMAT:
        raise ExportError(f"{path}: format: expected {PERSONA_TEST_FORMAT}")
    if character is not None and data.get("character") != character:
        raise ExportError(f"{path}: character {data.get('character')!r} is not {character!r}")
    questions = []
    for i, entry in enumerate(data.get("question", [])):
        where = f"{path}: question {i + 1}"
        if not isinstance(entry, dict) or entry.get("category") not in CATEGORIES:
            raise ExportError(f"{where}: needs a `category`, one of {', '.join(CATEGORIES)}")
        lines, must, must_not = (entry.get(key, []) for key in ("lines", "must", "must_not"))
        for key, value in (("lines", lines), ("must", must), ("must_not", must_not)):
            if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value) \
                    or (key != "must_not" and not value):
                raise ExportError(f"{where}: `{key}` must be a list of non-empty strings")
        try:
            compiled = [tuple(re.compile(p, re.IGNORECASE) for p in patterns) for patterns in (must, must_not)]
        except re.error as exc:
            raise ExportError(f"{where}: bad regex: {exc}") from exc
        questions.append(TestQuestion(entry["category"], tuple(lines), *compiled))
    if not questions:
        raise ExportError(f"{path}: no [[question]] entries")
    return questions


def conversation_rows(questions: list[TestQuestion]) -> list[tuple[int, int, str, str]]:
    """(conversation, turn, topic, line) rows for `evaluate.answer`: one conversation per question."""
    return [(q_index, turn, "", line) for q_index, q in enumerate(questions) for turn, line in enumerate(q.lines)]


@dataclass(frozen=True)
class ScoredReply:
    question: int
    run: str  # a seed ("1") or GREEDY
    reply: str
    facts: float  # share of `must` matched; 0 when a `must_not` matched
    wrong: tuple[str, ...]  # the `must_not` patterns matched
    problems: tuple[str, ...]  # invented_name, assistant_speak, loop
    actions: tuple[str, ...] = ()  # the action calls the reply ended with (a persona question asks for none)


class PersonaTestScorer:
    def __init__(self, sheet: CharacterSheet, questions: list[TestQuestion]):
        self.questions = questions
        self.hygiene = Hygiene(sheet)

    def score(self, question: int, run: str, reply: str, finish: str = "stop") -> ScoredReply:
        q = self.questions[question]
        reply = split_tail(reply)[0]  # a reply written by a model in training may end with its typed tail
        matched = sum(bool(p.search(reply)) for p in q.must)
        wrong = tuple(p.pattern for p in q.must_not if p.search(reply))
        found = set(self.hygiene.reply_problems(reply, " ".join(q.lines)))
        problems = [name for name, hit in (
            ("invented_name", "unknown_name" in found),
            ("assistant_speak", "assistant_speak" in found or "refusal" in found),
            ("loop", "repetition" in found or finish == "repetition")) if hit]
        return ScoredReply(question, run, reply, 0.0 if wrong else matched / len(q.must), wrong, tuple(problems))


def summarise(questions: list[TestQuestion], scored: list[ScoredReply], actions: Iterable[Action] = ()) -> dict:
    """Key facts overall and per category, per run and pooled; problem rates over all replies; how many
    replies acted, and how many of their actions parse and type-check against the sheet's `actions`."""
    def facts(rows: list[ScoredReply]) -> float:
        return sum(r.facts for r in rows) / len(rows) if rows else 0.0

    by_run: dict[str, list[ScoredReply]] = defaultdict(list)
    by_category: dict[str, list[ScoredReply]] = defaultdict(list)
    for r in scored:
        by_run[r.run].append(r)
        by_category[questions[r.question].category].append(r)
    sampled = [r for r in scored if r.run != GREEDY]
    n = len(scored)
    return {
        "questions": len(questions),
        "replies": n,
        "key_facts": facts(scored),
        "key_facts_sampled": facts(sampled) if sampled else None,
        "key_facts_greedy": facts(by_run[GREEDY]) if GREEDY in by_run else None,
        "by_run": {run: facts(rows) for run, rows in sorted(by_run.items())},
        "by_category": {c: facts(by_category[c]) for c in CATEGORIES if c in by_category},
        "wrong": sum(bool(r.wrong) for r in scored) / max(n, 1),
        **{p: sum(p in r.problems for r in scored) / max(n, 1) for p in ("invented_name", "assistant_speak", "loop")},
        "acted": sum(bool(r.actions) for r in scored) / max(n, 1),
        "actions_emitted": sum(len(r.actions) for r in scored),
        "actions_valid": sum(valid_call(call, list(actions)) for r in scored for call in r.actions),
    }


def markdown(summary: dict, questions: list[TestQuestion], scored: list[ScoredReply], title: str) -> str:
    s = summary
    lines = [f"## Persona test: {title}", "",
             f"{s['questions']} held-out questions, {s['replies']} replies "
             f"({', '.join(s['by_run'])}).", "",
             "| measure | value |", "|---|---:|",
             f"| key facts, all replies | {s['key_facts']:.1%} |"]
    if s["key_facts_sampled"] is not None:
        lines.append(f"| key facts, sampled (mean of seeds) | {s['key_facts_sampled']:.1%} |")
    if s["key_facts_greedy"] is not None:
        lines.append(f"| key facts, greedy | {s['key_facts_greedy']:.1%} |")
    lines += [f"| replies saying something they must not | {s['wrong']:.1%} |",
              f"| replies with an invented name | {s['invented_name']:.1%} |",
              f"| replies with assistant speak | {s['assistant_speak']:.1%} |",
              f"| replies that loop | {s['loop']:.1%} |",
              f"| replies that ended with an action | {s.get('acted', 0):.1%} "
              f"({s.get('actions_valid', 0)} of {s.get('actions_emitted', 0)} type-check) |", "",
              "| category | key facts |", "|---|---:|"]
    lines += [f"| {c} | {v:.1%} |" for c, v in s["by_category"].items()]
    worst = sorted(scored, key=lambda r: (r.facts, r.run))[:20]
    lines += ["", "Weakest replies:", ""]
    for r in worst:
        flags = ", ".join(r.problems + tuple(f"said /{w}/" for w in r.wrong))
        lines.append(f"- ({r.run}) **{' / '.join(questions[r.question].lines)}** → {r.reply} "
                     f"[{r.facts:.0%}{'; ' + flags if flags else ''}]")
    return "\n".join(lines) + "\n"
