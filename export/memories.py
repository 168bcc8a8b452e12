"""The character's statements a bundle indexes for retrieval, embedded at build time.

Each statement must make sense alone, since retrieval shows it without its neighbours: the sheet's
facts as written, values, aims and opinions turned into sentences about the character, and the world's
description and people. The backstory stays out: it is prose full of "he" and "his" that means little
one sentence at a time (writers put what must be recalled into `facts`). Facts already in the system
prompt are left out too, since the model reads those every turn.

Each statement is indexed with cues: the questions of the writer's drills (`knowledge.py`) whose
answers state it. A player asks in the words of a question, not of a statement, and the cues are what
lets retrieval find "Who is your mother?" under "Lady Beatrix Marlo, his mother, ..." (see
`lmpc_runtime/memory/store.py`).

The drills also ship whole, as exchanges the runtime shows the model as an earlier turn when a player's
line is like their question (`lmpc_runtime/memory/exchanges.py`), and the writer's dialogues as cues of
when the character acts (`lmpc_runtime/memory/action_cues.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from lmpc_runtime.actions import split_tail
from lmpc_runtime.memory.action_cues import NO_ACTION, ActionCues, choose_vote
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.exchanges import ExchangeBank
from lmpc_runtime.memory.store import MemoryStore
from lmpc_runtime.persona import core_facts, sentences
from lmpc_runtime.sheet import CharacterSheet

from .dialogues import Dialogue
from .knowledge import Topic

def sheet_statements(sheet: CharacterSheet, system_prompt: str) -> list[tuple[str, str, str]]:
    """(text, kind, source) of every statement to index, in sheet order."""
    first = sheet.name.split()[0]
    out: list[tuple[str, str, str]] = []
    # A sheet without facts (an imported card) is indexed by its backstory's sentences instead.
    source = "facts" if sheet.facts else "backstory"
    out += [(fact, "persona" if first in fact else "world", f"{source}[{i}]")
            for i, fact in enumerate(core_facts(sheet))]
    out += [(f"{first} values: {v}", "persona", f"values[{i}]") for i, v in enumerate(sheet.values)]
    out += [(f"{first}'s aim: {o}", "persona", f"objectives[{i}]") for i, o in enumerate(sheet.objectives)]
    out += [(f"{first}'s opinion of {topic}: {opinion}", "persona", f"opinions.{topic}")
            for topic, opinion in sheet.opinions.items()]
    world = sheet.world
    for key in ("description", "political_order", "powers", "marginalised_groups"):
        out += [(s, "world", f"world.{key}") for s in sentences(getattr(world, key))]
    for key in ("important_people", "marginalised_important_people"):
        out += [(f"{p.name}: {p.description}", "world", f"world.{key}[{i}]")
                for i, p in enumerate(getattr(world, key))]
    return [statement for statement in out if statement[0] not in system_prompt]


def statement_ref(source: str, sheet: CharacterSheet) -> str | None:
    """The knowledge file's reference (`knowledge.statement_refs`) of an indexed statement's source:
    "facts[3]" -> "fact:4"; None for the world's sentences, which no topic names."""
    kind, _, rest = source.partition("[")
    if source.startswith("opinions."):
        return "opinion:" + source.removeprefix("opinions.")
    if kind in ("facts", "values", "objectives"):
        return f"{kind[:-1]}:{int(rest.rstrip(']')) + 1}"
    if kind.startswith("world.") and "important_people" in kind:
        people = getattr(sheet.world, kind.removeprefix("world."))
        return "person:" + people[int(rest.rstrip("]"))].name
    return None


def statement_cues(sheet: CharacterSheet, statements: list[tuple[str, str, str]],
                   topics: Iterable[Topic]) -> list[list[str]]:
    """For each statement, the drill questions whose topic covers it (without repeats, in file order)."""
    questions: dict[str, list[str]] = {}
    for topic in topics:
        for ref in topic.covers:
            questions.setdefault(ref, []).extend(q for q in topic.questions if q not in questions.get(ref, []))
    return [questions.get(statement_ref(source, sheet) or "", []) for _, _, source in statements]


def drill_exchanges(topics: Iterable[Topic]) -> list[tuple[str, str]]:
    """(question, answer) for every drill question, its topic's answers taken in turn."""
    return [(q, t.answers[i % len(t.answers)]) for t in topics for i, q in enumerate(t.questions)]


def action_cues(dialogues: Iterable[Dialogue]) -> list[tuple[str, str]]:
    """(the player's last line, the action's name after it or NO_ACTION) for each of the writer's dialogues."""
    cues = []
    for dialogue in dialogues:
        player, reply = dialogue.turns[-1]
        acted = [tag.name for tag in split_tail(reply)[1] if tag.kind == "action"]
        cues.append((player, acted[0] if acted else NO_ACTION))
    return cues


def memories_state(statements: list[tuple[str, str, str]], embedder: Embedder,
                   cues: list[list[str]] | None = None, exchanges: list[tuple[str, str]] = (),
                   acting: list[tuple[str, str]] = (), log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The bundle's memories file: the statements and their `cues` (a list per statement) with their
    embeddings, as MemoryStore columns, the `exchanges` as ExchangeBank columns, and the `acting` cues
    (`action_cues`) as ActionCues columns, with the k and the margin over the exchanges' questions that
    decide them best, left one out (said through `log`)."""
    cues = cues or [[] for _ in statements]
    vectors = embedder.embed([text for text, _, _ in statements])
    cue_vectors = iter(embedder.embed([q for questions in cues for q in questions]) if any(cues) else [])
    store = MemoryStore(embedder.dim)
    for (text, kind, source), vector, questions in zip(statements, vectors, cues):
        store.add(text, vector, kind, source, cues=[(q, next(cue_vectors)) for q in questions])
    bank = ExchangeBank(embedder.dim)
    questions = embedder.embed([q for q, _ in exchanges]) if exchanges else np.zeros((0, embedder.dim), np.float32)
    if exchanges:
        bank.add(exchanges, questions)
    acts = ActionCues(embedder.dim)
    if any(label != NO_ACTION for _, label in acting):
        lines, labels = zip(*acting)
        line_vectors = embedder.embed(list(lines))
        k, margin, share = choose_vote(line_vectors, labels, questions)
        acts.add(lines, labels, line_vectors, k, margin)
        acted = sum(label != NO_ACTION for label in labels)
        log(f"actions: {len(lines)} cues from the writer's dialogues ({acted} act) decide when the character "
            f"acts: k {k}, margin {margin:+.3f} against {len(questions)} drill questions; each left out, "
            f"{share:.1%} of the dialogues and drills are decided right")
    return store.to_state() | bank.to_state() | acts.to_state()
