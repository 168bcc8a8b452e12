"""`lmpc new NAME`: a character sheet to fill in, each field explained where it stands.

The fields the format requires are left empty, so `lmpc check` lists what is still to write; the
comments say what each is for and what makes a small model play it well (docs/character-sheet.md has
the full reference).
"""

from __future__ import annotations

import json

from .sheet import MIN_EXAMPLES, SHEET_FORMAT

_EXAMPLE = '''
[[examples]]
# context = ""  (optional: who speaks to them, where, in what mood: "a tired farmer at the city gate")
player = ""   # what someone says
npc = ""      # what {first} answers, in their own voice: two or three sentences
'''


def new_sheet(name: str) -> str:
    """The TOML text of an empty sheet for a character called `name`."""
    first = name.split()[0]
    quoted = json.dumps(name, ensure_ascii=False)  # a TOML basic string is a JSON string
    examples = "".join(_EXAMPLE.format(first=first) for _ in range(MIN_EXAMPLES))
    return f'''# The character sheet of {name}. Fill in every empty field, then:
#   lmpc check THIS_FILE       lists what is still missing, with where it is
#   lmpc build THIS_FILE -o {first.lower()}.lmpc
# Write facts and opinions as plain statements: a 135M model repeats what it is given, it does not infer.

format = {SHEET_FORMAT}
name = {quoted}
title = ""          # a short epithet: rank, office or trade ("Knight of Luminara", "the ferryman")
summary = ""        # two or three sentences: who they are now, what drives them
alignment = ""      # e.g. "Lawful Good", "Chaotic Neutral"
speech_style = ""   # register, rhythm, habits, words they use, what they never say
# greeting = ""     (optional: the line they open with when a player walks up; {{{{user}}}} is the player)
backstory = """
"""                 # their history, in prose: where they come from, what happened to them

# What they hold dear, one value a line ("Honesty, even when it costs").
values = []
# What they are trying to achieve, concrete enough to talk about ("Find who burned the mill").
objectives = []
# Short statements true of them or their world, in the third person, one fact each. These are what the
# NPC recalls at run time and what its faithfulness is scored on: put here everything it must know.
facts = []
# Optional: catchphrases = [...] (turns of phrase they come back to), fallback_lines = [...] (in-character
# lines used when the model fails: "Forgive me, I lost my thread."), avoid_phrases = [...] (never said).
# Optional: emotions = ["calm", "angry", ...] (one ends every reply, for the game's animation).

[world]
name = ""                 # the world or realm, as they would name it
description = ""          # a few sentences: the place, the time, what everyone knows
political_order = ""      # who rules, and how
powers = ""               # magic, faith, technology: what is possible there
marginalised_groups = ""  # who is kept down, and how

[[world.important_people]]  # repeat this table for each person they know of
name = ""
description = ""  # who this is, and what {first} thinks of them

[[world.marginalised_important_people]]
name = ""
description = ""

[opinions]
# One key per topic, the value their opinion in a sentence or two:
# "The harbour guild" = "Thieves with a charter."

# At least {MIN_EXAMPLES} exchanges that show the voice (40 or more give a fine-tune enough of it).
# Vary who speaks to them and about what; keep the answers as long as the NPC's replies should be.
{examples}
# Optional: [lorebook] with [[lorebook.entries]] for knowledge that enters the prompt only when the talk
# touches it (see docs/character-sheet.md).
# Optional: [[actions]] the game understands (name, description, args, requires), which a reply may end
# with; teach when with `act` in the dialogues file (see docs/character-sheet.md, "Actions and emotions").
'''
