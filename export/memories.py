"""The character's statements a bundle indexes for retrieval, embedded at build time.

Each statement must make sense alone, since retrieval shows it without its neighbours: the sheet's
facts as written, values, aims and opinions turned into sentences about the character, and the world's
description and people. The backstory stays out: it is prose full of "he" and "his" that means little
one sentence at a time (writers put what must be recalled into `facts`). Facts already in the system
prompt are left out too, since the model reads those every turn.
"""

from __future__ import annotations

import re
from typing import Any

from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.store import MemoryStore
from lmpc_runtime.sheet import CharacterSheet

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def sheet_statements(sheet: CharacterSheet, system_prompt: str) -> list[tuple[str, str, str]]:
    """(text, kind, source) of every statement to index, in sheet order."""
    first = sheet.name.split()[0]
    out: list[tuple[str, str, str]] = []
    out += [(fact, "persona" if first in fact else "world", f"facts[{i}]") for i, fact in enumerate(sheet.facts)]
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


def memories_state(statements: list[tuple[str, str, str]], embedder: Embedder) -> dict[str, Any]:
    """The bundle's memories file: the statements with their embeddings, as MemoryStore columns."""
    vectors = embedder.embed([text for text, _, _ in statements])
    store = MemoryStore(embedder.dim)
    for (text, kind, source), vector in zip(statements, vectors):
        store.add(text, vector, kind, source)
    return store.to_state()
