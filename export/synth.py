"""Synthetic dialogues: a generator model plays a sampled interlocutor and the character, turn by turn.

For each dialogue a `Scene` is drawn; the generator first writes what the interlocutor says (shown a few
of the sheet's example contexts and lines as a pattern, the same few for the whole run), then answers
as the character with the runtime's own prompt — persona system prompt, example shots, the
conversation so far, the memory note the runtime would recall for the line — plus one system line saying
who is speaking, which the training sample leaves out (the game does not tell the NPC who the player
is pretending to be). Some dialogues go on for a second or third exchange. Everything produced is raw:
`hygiene` decides what is kept.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from lmpc_runtime.errors import ContextOverflowError
from lmpc_runtime.persona import example_shots, memory_note, system_prompt
from lmpc_runtime.sheet import CharacterSheet

from .dataset import NoteFor
from .dialogues import Dialogue
from .generator import Generator, Message
from .scenes import Scene, SceneSampler

PATTERN_SHOTS = 4
MAX_TURNS = 3
_QUOTED = re.compile(r'^\s*["“](.*)["”]\s*$', re.DOTALL)


def clean_line(text: str, speaker_names: tuple[str, ...] = ()) -> str:
    """The first paragraph of a generated line, without wrapping quotes or a leading 'Name:'."""
    text = text.strip().split("\n\n")[0].strip()
    for name in speaker_names:
        if text.lower().startswith(name.lower() + ":"):
            text = text[len(name) + 1:].strip()
    match = _QUOTED.match(text)
    return (match.group(1) if match and '"' not in match.group(1) else text).strip()


def pattern_shots(sheet: CharacterSheet, rng: random.Random) -> list[Message]:
    """A few of the sheet's (context, player line) pairs, shown to the generator as the pattern to follow;
    chosen once per run, so every question prompt starts the same (and its cache is reused)."""
    patterns = [ex for ex in sheet.examples if ex.context]
    messages: list[Message] = []
    for ex in rng.sample(patterns, min(PATTERN_SHOTS, len(patterns))):
        messages += [("user", ex.context), ("assistant", ex.player)]
    return messages


def question_messages(sheet: CharacterSheet, scene: Scene, history: list[tuple[str, str]],
                      shots: list[Message]) -> list[Message]:
    name = sheet.name
    messages: list[Message] = [("system", (
        f"You write one line of dialogue: what a person says to {name} in a story set in {sheet.world.name}. "
        "Write only the words spoken, one or two sentences, with no narration.")), *shots]
    ask = scene.describe(name)
    if history:
        said = "\n".join(f"Speaker: {q}\n{name}: {a}" for q, a in history)
        ask += f". The conversation so far:\n{said}\nWhat does the speaker say next?"
    messages.append(("user", ask))
    return messages


def answer_messages(sheet: CharacterSheet, scene: Scene, history: list[tuple[str, str]], question: str,
                    memories: tuple[str, ...]) -> list[Message]:
    messages: list[Message] = [("system", system_prompt(sheet))]
    for player, npc in example_shots(sheet):
        messages += [("user", player), ("assistant", npc)]
    for player, npc in history:
        messages += [("user", player), ("assistant", npc)]
    messages.append(("system", f"Speaking to you now: {scene.describe(sheet.name)}."))
    if memories:
        messages.append(("system", memory_note(sheet.name, list(memories))))
    messages.append(("user", question))
    return messages


def synthesise(sheet: CharacterSheet, generator: Generator, count: int, notes: NoteFor, seed: int = 0,
               progress: Callable[[int], None] = lambda _: None) -> list[Dialogue]:
    """`count` raw generated dialogues of one to MAX_TURNS exchanges, each answer given the memory note
    `notes` makes for its question. `progress(1)` after each."""
    sampler = SceneSampler(sheet, seed)
    rng = random.Random(seed + 1)
    shots = pattern_shots(sheet, rng)
    first_name = sheet.name.split()[0]
    dialogues = []
    for _ in range(count):
        scene = sampler.draw()
        turns: list[tuple[str, str]] = []
        memories: tuple[str, ...] = ()
        for _turn in range(rng.choice((1, 1, 2, 3))):
            try:
                asked = generator.chat(question_messages(sheet, scene, turns, shots), max_tokens=60)
                question = clean_line(asked, ("Speaker",))
                if not question:
                    break
                recalled = tuple(notes([line for exchange in turns for line in exchange] + [question]).note)
                answer = clean_line(generator.chat(answer_messages(sheet, scene, turns, question, recalled)),
                                    (sheet.name, first_name))
            except ContextOverflowError:
                break  # the conversation outgrew the generator's context: keep what there is
            memories = recalled
            turns.append((question, answer))
        if turns:
            dialogues.append(Dialogue(turns=tuple(turns), source="generated",
                                      context=scene.describe(sheet.name), memories=memories))
        progress(1)
    return dialogues
