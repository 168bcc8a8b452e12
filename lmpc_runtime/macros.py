"""`{{char}}` and `{{user}}` (and their old spellings `<BOT>`, `<USER>`): the names a character card's
text leaves open, resolved when the text is used rather than when the card is imported, so the player's
name (the game's `player.name` fact) reaches the greeting, the persona, the examples and the lorebook."""

from __future__ import annotations

import re
from typing import Any, Mapping

CHAR_MACRO = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
USER_MACRO = re.compile(r"\{\{user\}\}|<USER>", re.IGNORECASE)
PLAYER_NAME_FACT = "player.name"
UNNAMED_PLAYER = "the traveller"  # what {{user}} becomes before the game names the player


def player_name(facts: Mapping[str, Any]) -> str:
    name = facts.get(PLAYER_NAME_FACT)
    return name.strip() if isinstance(name, str) and name.strip() else UNNAMED_PLAYER


def resolve(text: str, char: str, user: str) -> str:
    # A function as the replacement: a name is inserted as is, never read as a regex template.
    return USER_MACRO.sub(lambda _: user, CHAR_MACRO.sub(lambda _: char, text))
