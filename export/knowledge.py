"""What the character knows, drilled: many ways of asking one thing, several ways of answering it.

A 135M model learns a character's facts from data and epochs, not from a long prompt, and it learns a
fact only when it has seen it said in different words to different questions. The knowledge file beside
the sheet (`<sheet>.knowledge.toml`) is the writer's drill book: each topic names the sheet statements
its answers state, and gives several phrasings of one question and several answers, each fitting every
phrasing:

    format = 1
    character = "Orlando Marlo"

    [[topic]]
    covers = ["fact:15", "opinion:His own family"]   # fact:N value:N objective:N (1-based),
    questions = ["Have you brothers or sisters?", …]  # opinion:<key>, person:<name>, behaviour:<what>
    answers = ["One sister, Isolde, who is seventeen …", …]

Every question is asked once, the answers taken in turn (a topic of 5 questions and 3 answers gives 5
exchanges, each answer said at least once; all 15 pairings would cost three times the training for
little more variety), and some exchanges are given one or two exchanges of other topics as earlier
turns, so the model also meets its facts in the middle of a conversation. `coverage` counts,
for every statement of the sheet, the kept exchanges that state it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lmpc_runtime.errors import SheetError
from lmpc_runtime.sheet import CharacterSheet

from .dialogues import Dialogue, read_writer_file

KNOWLEDGE_FORMAT = 1
BEHAVIOURS = ("identity", "outside-world", "challenge", "greeting", "small-talk")
HISTORY_SHARE = 0.15  # exchanges given earlier turns from other topics (each costs training time)
MAX_HISTORY = 2


@dataclass(frozen=True)
class Topic:
    covers: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]


def knowledge_file_for(sheet_path: Path) -> Path:
    """`name.toml` → `name.knowledge.toml`."""
    return sheet_path.with_name(sheet_path.stem + ".knowledge.toml")


def statement_refs(sheet: CharacterSheet) -> dict[str, str]:
    """Every statement a topic may cover, by reference, with its text as the sheet words it."""
    refs = {f"fact:{i}": text for i, text in enumerate(sheet.facts, 1)}
    refs |= {f"value:{i}": text for i, text in enumerate(sheet.values, 1)}
    refs |= {f"objective:{i}": text for i, text in enumerate(sheet.objectives, 1)}
    refs |= {f"opinion:{topic}": f"On {topic}: {text}" for topic, text in sheet.opinions.items()}
    world = sheet.world
    refs |= {f"person:{p.name}": f"{p.name}: {p.description}"
             for p in world.important_people + world.marginalised_important_people}
    return refs


def load_knowledge(path: Path, sheet: CharacterSheet) -> list[Topic]:
    """Read a knowledge file; every problem is reported at once in one SheetError."""
    tables, problems = read_writer_file(path, sheet, KNOWLEDGE_FORMAT, "topic")
    known = set(statement_refs(sheet)) | {f"behaviour:{b}" for b in BEHAVIOURS}
    topics = []
    for where, entry in tables:
        problems += [f"{where}.{key}: unknown key" for key in sorted(set(entry) - {"covers", "questions", "answers"})]
        lists = {key: entry.get(key) for key in ("covers", "questions", "answers")}
        bad = [key for key, value in lists.items() if not isinstance(value, list) or not value
               or not all(isinstance(x, str) and x.strip() for x in value)]
        problems += [f"{where}.{key}: expected a non-empty list of non-empty strings" for key in bad]
        if bad:
            continue
        unknown = [ref for ref in lists["covers"] if ref not in known]
        if unknown:
            problems.append(f"{where}.covers: no such statement {', '.join(unknown)} (fact:N, value:N, "
                            f"objective:N, opinion:<key>, person:<name>, behaviour:<{'|'.join(BEHAVIOURS)}>)")
            continue
        topics.append(Topic(*(tuple(x.strip() for x in lists[key]) for key in ("covers", "questions", "answers"))))
    if problems:
        raise SheetError(str(path), problems)
    return topics


def drill_dialogues(topics: list[Topic], seed: int = 0) -> list[Dialogue]:
    """Each question of a topic once, with the topic's answers in turn (in a seeded order); `HISTORY_SHARE`
    of them after one or two exchanges of other topics. The dialogue's `covers` are what its last answer
    states."""
    rng = random.Random(seed)
    pairs = []
    for t in topics:
        answers = rng.sample(t.answers, len(t.answers))
        pairs += [(t, t.questions[i % len(t.questions)], answers[i % len(answers)])
                  for i in range(max(len(t.questions), len(answers)))]
    out = []
    for topic, question, reply in pairs:
        history: tuple[tuple[str, str], ...] = ()
        if len(topics) > 1 and rng.random() < HISTORY_SHARE:
            others = [rng.choice([t for t in topics if t is not topic]) for _ in range(rng.randint(1, MAX_HISTORY))]
            history = tuple((rng.choice(t.questions), rng.choice(t.answers)) for t in others)
        out.append(Dialogue(turns=history + ((question, reply),), source="knowledge", covers=topic.covers))
    return out


def coverage(sheet: CharacterSheet, dialogues: list[Dialogue]) -> dict[str, int]:
    """For every statement of the sheet, the kept exchanges whose last answer states it (0: never)."""
    counts = dict.fromkeys(statement_refs(sheet), 0)
    for dialogue in dialogues:
        for ref in dialogue.covers:
            if ref in counts:
                counts[ref] += 1
    return counts
