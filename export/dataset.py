"""From dialogues to training samples: the exact token ids the runtime will show the model.

A sample is one dialogue rendered as the runtime renders a conversation: the persona (the system prompt
and example shots of `lmpc_runtime.persona`), the earlier exchanges as history, and before the last
player line, for some samples, the memory note (`persona.memory_note`) with facts the character recalls.
Ids are built turn by turn with the runtime's own `ChatFormat`, so training sees exactly the tokens a
game will feed. The loss mask covers the character's replies and the `<|im_end|>` that closes each
(so the model learns to stop), never the persona, the shots, the player or the memory note.

The writer's dialogues are weighted: each appears `writer_weight` times, once without a memory note (the
model must know its core facts by heart) and otherwise with one (it must use what retrieval hands it).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.persona import example_shots, memory_note, system_prompt
from lmpc_runtime.sheet import CharacterSheet

from .dialogues import Dialogue

# How many facts a memory note holds: the APC paper found 4-6 retrieved statements best; a 135M model
# reads fewer well.
RECALLED_FACTS = 4
_WORD = re.compile(r"[a-z][a-z'-]+")
# Words too common to say whether a fact is relevant.
_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its this that
these those he she his her him they them their you your i me my we our us not no do does did have has had so
than then there here what who whom which when where why how all any some one can could would should will
shall may might must very more most much many such only also into out up down over about after before again
just own same too
""".split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def recall(facts: tuple[str, ...], text: str, rng: random.Random, k: int = RECALLED_FACTS) -> tuple[str, ...]:
    """Up to `k` facts as retrieval might return them for `text`: those sharing the most content words
    with it (at least two), topped up with random others, in shuffled order (the model must not learn
    that the first fact is the one that matters)."""
    words = content_words(text)
    scored = sorted(((len(words & content_words(f)), i) for i, f in enumerate(facts)), reverse=True)
    chosen = [i for score, i in scored[:k] if score >= 2]
    others = [i for i in range(len(facts)) if i not in chosen]
    chosen += rng.sample(others, min(k - len(chosen), len(others)))
    rng.shuffle(chosen)
    return tuple(facts[i] for i in chosen)


@dataclass(frozen=True)
class Sample:
    dialogue: Dialogue
    memories: tuple[str, ...]  # the memory note before the last player line; () for none
    group: int  # the dialogue it came from: copies of one dialogue stay on one side of the held-out split


def make_samples(dialogues: list[Dialogue], sheet: CharacterSheet, seed: int = 0,
                 writer_weight: int = 2) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for group, dialogue in enumerate(dialogues):
        if dialogue.source == "generated":
            samples.append(Sample(dialogue, dialogue.memories, group))
            continue
        player, npc = dialogue.turns[-1]
        for copy in range(writer_weight):
            memories = recall(sheet.facts, f"{player} {npc}", rng) if copy else ()
            samples.append(Sample(dialogue, memories, group))
    return samples


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 where the loss applies: the character's replies and their <|im_end|>
    prefix_length: int  # tokens of the persona (system prompt + shots), the same for every sample


def persona_ids(sheet: CharacterSheet, chat: ChatFormat) -> list[int]:
    """The persona exactly as `Npc` builds it from a bundle's manifest."""
    ids = chat.turn("system", system_prompt(sheet))
    for player, npc in example_shots(sheet):
        ids += chat.turn("user", player) + chat.turn("assistant", npc)
    return ids


def persona_digest(sheet: CharacterSheet) -> str:
    """A short hash of the persona text: an adapter records the one it was trained with."""
    persona = [system_prompt(sheet), [list(shot) for shot in example_shots(sheet)]]
    return hashlib.sha256(json.dumps(persona).encode()).hexdigest()[:16]


def render(sample: Sample, sheet: CharacterSheet, chat: ChatFormat,
           persona: list[int] | None = None) -> Rendered:
    ids = list(persona if persona is not None else persona_ids(sheet, chat))
    mask = [0] * len(ids)
    prefix = len(ids)

    def add(tokens: list[int], learn: bool) -> None:
        ids.extend(tokens)
        mask.extend([int(learn)] * len(tokens))

    last = len(sample.dialogue.turns) - 1
    for i, (player, npc) in enumerate(sample.dialogue.turns):
        if i == last and sample.memories:
            add(chat.turn("system", memory_note(sheet.name, list(sample.memories))), False)
        add(chat.turn("user", player) + chat.open_turn(), False)
        add(chat.encode_text(npc) + [chat.special.im_end], True)
        add(chat.close_turn(), False)
    return Rendered(ids, mask, prefix)


def split(samples: list[Sample], eval_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, held out), whole dialogues to one side; at least one dialogue is held out."""
    groups = sorted({s.group for s in samples})
    random.Random(seed).shuffle(groups)
    held = set(groups[: max(1, round(eval_fraction * len(groups)))])
    return [s for s in samples if s.group not in held], [s for s in samples if s.group in held]
