"""From dialogues to training samples: the exact token ids the runtime will show the model.

A sample is one dialogue rendered as the runtime renders a conversation: the persona (the system prompt
and example shots of `lmpc_runtime.persona`), the earlier exchanges as history, and before the last
player line, for some samples, the memory note (`persona.memory_note`) with what the runtime's retrieval
recalls for that line (lore and the bundle's indexed statements, `runtime_notes`).
Ids are built turn by turn with the runtime's own `ChatFormat`, so training sees exactly the tokens a
game will feed. The loss mask covers the character's replies and the `<|im_end|>` that closes each
(so the model learns to stop), never the persona, the shots, the player or the memory note.

The writer's dialogues are weighted: each appears `writer_weight` times, once without a memory note (the
model must know its core facts by heart, and a greeting recalls nothing) and otherwise with the note the
runtime would give it (it must use what retrieval hands it).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, replace
from typing import Callable

from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.macros import UNNAMED_PLAYER
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.lorebook import LoreScanner
from lmpc_runtime.memory.exchanges import ExchangeBank
from lmpc_runtime.memory.recall import Recall, Recalled
from lmpc_runtime.memory.store import MemoryStore
from lmpc_runtime.persona import memory_note, persona_text, persona_tokens
from lmpc_runtime.sheet import CharacterSheet

from .dialogues import Dialogue
from .knowledge import Topic
from .memories import drill_exchanges, memories_state, sheet_statements, statement_cues

# What the runtime recalls for the last of `messages` (the conversation so far, oldest first, ending with
# the player's new line): the memory note's lines and the writer's exchanges.
NoteFor = Callable[[list[str]], Recalled]
# Drilled exchanges given the memory note. At 15 % the demo NPC learnt to ignore its note, even when the
# note held the answer; at run time nearly every line brings one.
KNOWLEDGE_NOTE_SHARE = 0.7


def runtime_notes(sheet: CharacterSheet, embedder: Embedder, count_tokens: Callable[[str], int],
                  style: str = "sheet", knowledge: tuple[Topic, ...] = ()) -> NoteFor:
    """What an NPC built from `sheet` recalls at the start of a game (no game facts
    set): the lorebook entries the conversation activates, then the statements the bundle indexes
    (embedded and int8-coded as `lmpc build` does, with the cues of `knowledge`) that the embedder finds
    relevant, with the runtime's own `Recall` and its default settings; and the drill exchange most like
    the line. A line that is itself a cue or a drill is answered as if it were not one: in play, players
    ask in words of their own."""
    statements = sheet_statements(sheet, persona_text(sheet, style)[0])
    state = memories_state(statements, embedder, statement_cues(sheet, statements, knowledge),
                           drill_exchanges(knowledge))
    store = MemoryStore(embedder.dim)
    store.add_state(state)
    bank = ExchangeBank.from_state(state, embedder.dim)

    def note(messages: list[str]) -> Recalled:
        # A fresh lorebook scanner per conversation: its timers must not carry over between samples.
        recall = Recall(store, embedder, LoreScanner(sheet.lorebook, count_tokens), count_tokens, sheet.name,
                        exchanges=bank)
        with store.cues_left_out(messages[-1]), bank.left_out(messages[-1]):
            return recall.for_turn(messages[-1], messages, {}, turn=(len(messages) + 1) // 2)

    return note


@dataclass(frozen=True)
class Sample:
    dialogue: Dialogue
    memories: tuple[str, ...]  # the memory note before the last player line; () for none
    group: int  # the dialogue it came from: copies of one dialogue stay on one side of the held-out split
    exchanges: tuple[tuple[str, str], ...] = ()  # the writer's exchanges recalled with the note


def make_samples(dialogues: list[Dialogue], notes: NoteFor | None = None, writer_weight: int = 2,
                 knowledge_note_share: float = KNOWLEDGE_NOTE_SHARE, seed: int = 0,
                 exchanges: bool = True) -> list[Sample]:
    """Each writer's dialogue `writer_weight` times: once without a memory note, then with the note `notes`
    gives its last player line (when it gives one); a drilled dialogue once, with that note for
    `knowledge_note_share` of them (the model must answer from its weights, and still read a note well);
    a generated dialogue once, with the note it was answered with. A sample with a note also gets the
    exchanges recalled with it, as earlier turns, unless `exchanges` is False."""
    rng = random.Random(seed)
    samples = []
    for group, dialogue in enumerate(dialogues):
        if dialogue.source == "generated":
            samples.append(Sample(dialogue, dialogue.memories, group))
            continue
        plain = Sample(dialogue, (), group)
        if dialogue.source == "knowledge":
            with_note = rng.random() < knowledge_note_share
            samples.append(_recalled(plain, notes, exchanges) if with_note else plain)
            continue
        if writer_weight > 0:
            samples += [plain] + [_recalled(plain, notes, exchanges)] * (writer_weight - 1)
    return samples


def _recalled(sample: Sample, notes: NoteFor | None, exchanges: bool) -> Sample:
    """The sample with what the runtime recalls for its dialogue's last line: the note, and the exchanges
    when `exchanges`."""
    if notes is None:
        return sample
    turns = sample.dialogue.turns
    recalled = notes([line for exchange in turns[:-1] for line in exchange] + [turns[-1][0]])
    return replace(sample, memories=tuple(recalled.note), exchanges=tuple(recalled.exchanges) if exchanges else ())


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 where the loss applies: the character's replies and their <|im_end|>
    prefix_length: int  # tokens of the persona (system prompt + shots), the same for every sample


def persona_ids(sheet: CharacterSheet, chat: ChatFormat, style: str = "sheet") -> list[int]:
    """The persona exactly as `Npc` builds it from a bundle's manifest (`{{user}}` as the unnamed player)."""
    system, shots = persona_text(sheet, style)
    return persona_tokens(chat, system, shots, sheet.name, UNNAMED_PLAYER)


def persona_digest(sheet: CharacterSheet, style: str = "sheet") -> str:
    """A short hash of the persona text: an adapter records the one it was trained with."""
    system, shots = persona_text(sheet, style)
    return hashlib.sha256(json.dumps([system, [list(shot) for shot in shots]]).encode()).hexdigest()[:16]


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
        if i == last:
            for asked, answered in sample.exchanges:  # shown, not learnt: the writer's, not this sample's
                add(chat.turn("user", asked) + chat.turn("assistant", answered), False)
            if sample.memories:
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
