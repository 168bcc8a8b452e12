"""Saving and loading the game: where the player stands and what happened in the yard (`game.json`),
plus one LMPC save per NPC (`<npc id>.sav`: history, facts, memories gained in play, sampler state).
The NPCs are saved and loaded through the Runtime, which does it between two model steps, so this works
the same when the model runs on the runtime's worker thread.

A save is a folder written whole beside the old one and swapped in by renames, so a crash while saving
leaves the previous save. A load checks `game.json` first, keeps each NPC's current state as bytes, and
puts every NPC back as it was if any of the saves fails to load: the game never ends up half loaded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpc_runtime import LmpcError, Npc, Runtime

GAME_FILE = "game.json"
FORMAT = "lmpc-pygame-save"
VERSION = 1
LETTER_STATES = ("lying", "carried", "delivered")
MAX_GAME_FILE_BYTES = 1 << 20


class GameSaveError(Exception):
    """The save folder is missing, unreadable, or not a save of this game."""


@dataclass
class YardState:
    """What the game itself keeps in a save (the NPCs keep theirs in their own files)."""

    player: tuple[float, float]
    letter: str  # one of LETTER_STATES
    journal: list[tuple[str, str]] = field(default_factory=list)  # (who remembers, what)
    topic: int = 0  # the next topic the regulars open


def save_game(rt: Runtime, folder: Path, state: YardState, npcs: list[Npc]) -> None:
    """Write the game and every NPC into `folder`, replacing a previous save only once all is written.
    Raises `LmpcError` (an NPC could not be saved) or `OSError`; the previous save is then untouched."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    try:
        for npc in npcs:
            rt.save_state(npc, fresh / f"{npc.id}.sav")
        payload = {"format": FORMAT, "version": VERSION, "player": list(state.player), "letter": state.letter,
                   "journal": [list(entry) for entry in state.journal], "topic": state.topic,
                   "npcs": sorted(npc.id for npc in npcs)}
        (fresh / GAME_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_game(rt: Runtime, folder: Path, npcs: list[Npc]) -> YardState:
    """Restore every NPC from `folder` and return the game's own state; replies in progress are dropped.
    On any error every NPC is as it was and the error is raised: `GameSaveError` for the game file, an
    `LmpcError` subclass for an NPC's save."""
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.is_dir():
        folder = old  # a save was cut off between its two renames: the previous one is whole
    state, saved_ids = _read_game_file(folder / GAME_FILE)
    missing = sorted({npc.id for npc in npcs} - set(saved_ids))
    if missing:
        raise GameSaveError(f"{folder}: the save has no state for {', '.join(missing)}")
    before = {npc.id: rt.save_state_bytes(npc) for npc in npcs}
    restored: list[Npc] = []
    try:
        for npc in npcs:
            rt.load_state(npc, folder / f"{npc.id}.sav")
            restored.append(npc)
    except LmpcError:
        for npc in restored:
            rt.load_state_bytes(npc, before[npc.id])
        raise
    return state


def _read_game_file(path: Path) -> tuple[YardState, list[str]]:
    try:
        if path.stat().st_size > MAX_GAME_FILE_BYTES:
            raise GameSaveError(f"{path}: too large to be a save of this game")
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GameSaveError(f"{path.parent}: no saved game here (F5 saves one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GameSaveError(f"{path}: cannot read the save: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GameSaveError(f"{path}: not a save of this game")
    if data.get("version") != VERSION:
        raise GameSaveError(f"{path}: save version {data.get('version')!r}, this game reads {VERSION}")
    try:
        x, y = (float(v) for v in data["player"])
        letter, topic = data["letter"], data["topic"]
        journal = [(str(who), str(what)) for who, what in data["journal"]]
        npc_ids = [str(npc_id) for npc_id in data["npcs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise GameSaveError(f"{path}: a field is missing or malformed ({exc})") from None
    if letter not in LETTER_STATES or not isinstance(topic, int) or topic < 0:
        raise GameSaveError(f"{path}: a field is malformed (letter {letter!r}, topic {topic!r})")
    return YardState((x, y), letter, journal, topic), npc_ids
