"""From a character sheet to the fixed start of every conversation: a system prompt and example turns.

A 135M model follows a short, concrete prompt far better than a long one (with the whole sheet, 800
tokens, it wandered off into other worlds), so the system prompt keeps to who the character is, what
they want and how they speak; the full list of facts is left to retrieval.
The same text is used when training on the character, so the fine-tuned model sees at run time exactly
the prompt it learnt with.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from .macros import resolve
from .sheet import CharacterSheet

if TYPE_CHECKING:
    from .chat import ChatFormat

DEFAULT_SHOTS = 3
# Prompt styles. "sheet": the system prompt below plus example shots, for a base model that must be told
# who it is. "identity": two sentences and no shots, for a model fine-tuned on the character, which knows
# the rest by heart; it trains in a fraction of the time (every sample carries the prompt) and leaves the
# context to the conversation.
PROMPT_STYLES = ("sheet", "identity")


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def first_sentence(text: str) -> str:
    match = re.search(r"[.!?](\s|$)", text)
    return text[: match.start() + 1] if match else text


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


def core_facts(sheet: CharacterSheet) -> tuple[str, ...]:
    """The statements of who the character is: the sheet's facts or, for a sheet without any (an imported
    card, whose description becomes the backstory), the sentences of its backstory."""
    return sheet.facts or tuple(sentences(sheet.backstory))


def _place(sheet: CharacterSheet) -> str:
    name = sheet.world.name
    return name[0].lower() + name[1:] if name.startswith("The ") else name


def _who(sheet: CharacterSheet) -> str:
    return f"{sheet.name}, {sheet.title}" if sheet.title else sheet.name


def system_prompt(sheet: CharacterSheet, facts: int = 4, objectives: int = 3) -> str:
    """About 200 tokens: identity, setting, aims, voice, a few core facts, and the rule to stay in role.
    A field the sheet leaves out leaves its line out (a card gives only some of them)."""
    world = sheet.world
    aims = [o.rstrip(". ") for o in sheet.objectives[:objectives] if o.rstrip(". ")]
    lines = [f"You are {_who(sheet)}. {sheet.summary}".rstrip()]
    if world.name or world.description:
        lines.append(" ".join(filter(None, [f"You live in {_place(sheet)}." if world.name else "",
                                            first_sentence(world.description)])))
    if aims:
        lines.append("You want " + "; ".join(a[0].lower() + a[1:] for a in aims) + ".")
    if sheet.speech_style:
        lines.append(f"How you speak: {first_sentence(sheet.speech_style)}")
    # A card's backstory holds who they are (trade, age, home): its first sentences stand in for facts.
    core = core_facts(sheet)[:facts if sheet.facts else 2] if facts else ()
    if core:
        lines.append(" ".join(core))
    lines.append(
        f"Answer as {sheet.name}, in the first person, in two or three sentences. "
        "You are a person of this world, never an assistant or an AI."
    )
    return "\n".join(lines)


def identity_prompt(sheet: CharacterSheet) -> str:
    """The short prompt of a fine-tuned character: who, where and when, and the rule to stay in role."""
    world = sheet.world
    when = re.search(r"\byear is ([^.;]+)", world.description + " " + " ".join(sheet.facts))
    return (f"You are {_who(sheet)}" + (f", in {_place(sheet)}" if world.name else "")
            + (f", in the year {when.group(1)}" if when else "") + ". "
            f"Speak as {sheet.name.split()[0]}, in the first person, in two or three sentences; "
            "you are a person of this world, never an assistant or an AI.")


def persona_text(sheet: CharacterSheet, style: str = "sheet") -> tuple[str, tuple[tuple[str, str], ...]]:
    """(system prompt, example shots) of a prompt style."""
    if style == "sheet":
        return system_prompt(sheet), example_shots(sheet)
    if style == "identity":
        return identity_prompt(sheet), ()
    raise ValueError(f"unknown prompt style {style!r} (known: {', '.join(PROMPT_STYLES)})")


def persona_tokens(chat: "ChatFormat", system: str, shots: Sequence[Sequence[str]], char: str,
                   user: str) -> list[int]:
    """The persona as the model reads it: the system turn, then each shot as a player and a character
    turn, with `{{char}}` and `{{user}}` resolved. Training and the runtime both build it here."""
    tokens = chat.turn("system", resolve(system, char, user))
    for player, npc in shots:
        tokens += chat.turn("user", resolve(player, char, user)) + chat.turn("assistant", resolve(npc, char, user))
    return tokens


def example_shots(sheet: CharacterSheet, count: int = DEFAULT_SHOTS) -> tuple[tuple[str, str], ...]:
    """The first `count` example exchanges of the sheet, shown to the model as earlier turns."""
    return tuple((ex.player, ex.npc) for ex in sheet.examples[:count])


def memory_note(name: str, memories: list[str]) -> str:
    """The system turn placed just before the player's line with what the character recalls for it.

    It goes after the history, never inside the persona, so the persona's cache stays valid; training
    data uses the same wording so a fine-tuned model learns to draw on it.
    """
    return f"What {name} recalls that may matter now:\n" + "\n".join(f"- {m}" for m in memories)
