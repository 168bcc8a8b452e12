"""From a character sheet to the fixed start of every conversation: a system prompt and example turns.

A 135M model follows a short, concrete prompt far better than a long one (with the whole sheet, 800
tokens, it wandered off into other worlds), so the system prompt keeps to who the character is, what
they want and how they speak; the full list of facts is left to retrieval.
The same text is used when training on the character, so the fine-tuned model sees at run time exactly
the prompt it learnt with.
"""

from __future__ import annotations

import re

from .sheet import CharacterSheet

DEFAULT_SHOTS = 3
# Prompt styles. "sheet": the system prompt below plus example shots, for a base model that must be told
# who it is. "identity": two sentences and no shots, for a model fine-tuned on the character, which knows
# the rest by heart; it trains in a fraction of the time (every sample carries the prompt) and leaves the
# context to the conversation.
PROMPT_STYLES = ("sheet", "identity")


def first_sentence(text: str) -> str:
    match = re.search(r"[.!?](\s|$)", text)
    return text[: match.start() + 1] if match else text


def system_prompt(sheet: CharacterSheet, facts: int = 4, objectives: int = 3) -> str:
    """About 200 tokens: identity, setting, aims, voice, a few core facts, and the rule to stay in role."""
    world = sheet.world
    place = world.name[0].lower() + world.name[1:] if world.name.startswith("The ") else world.name
    lines = [
        f"You are {sheet.name}, {sheet.title}. {sheet.summary}",
        f"You live in {place}. {first_sentence(world.description)}",
        "You want " + "; ".join(o.rstrip(". ")[0].lower() + o.rstrip(". ")[1:] for o in sheet.objectives[:objectives]) + ".",
        f"How you speak: {first_sentence(sheet.speech_style)}",
    ]
    if facts:
        lines.append(" ".join(sheet.facts[:facts]))
    lines.append(
        f"Answer as {sheet.name}, in the first person, in two or three sentences. "
        "You are a person of this world, never an assistant or an AI."
    )
    return "\n".join(lines)


def identity_prompt(sheet: CharacterSheet) -> str:
    """The short prompt of a fine-tuned character: who, where and when, and the rule to stay in role."""
    world = sheet.world
    when = re.search(r"\byear is ([^.;]+)", world.description + " " + " ".join(sheet.facts))
    place = world.name[0].lower() + world.name[1:] if world.name.startswith("The ") else world.name
    return (f"You are {sheet.name}, {sheet.title}, in {place}"
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


def example_shots(sheet: CharacterSheet, count: int = DEFAULT_SHOTS) -> tuple[tuple[str, str], ...]:
    """The first `count` example exchanges of the sheet, shown to the model as earlier turns."""
    return tuple((ex.player, ex.npc) for ex in sheet.examples[:count])


def memory_note(name: str, memories: list[str]) -> str:
    """The system turn placed just before the player's line with what the character recalls for it.

    It goes after the history, never inside the persona, so the persona's cache stays valid; training
    data uses the same wording so a fine-tuned model learns to draw on it.
    """
    return f"What {name} recalls that may matter now:\n" + "\n".join(f"- {m}" for m in memories)
