"""Runs the pygame example game in this process on SDL's dummy drivers, for tests/test_pygame*.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# SDL reads these when pygame initialises its display: set before pygame is imported anywhere.
os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "disk"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # examples/ is not installed; appended, so the installed lmpc_runtime is still the one imported.
    sys.path.append(str(REPO))

import pygame  # noqa: E402

from examples.pygame import world  # noqa: E402
from examples.pygame.game import Game, Options  # noqa: E402
from examples.pygame.script import Script, parse  # noqa: E402

ARTEFACTS = REPO / "build" / "test-artefacts"
VISIT = REPO / "examples" / "pygame" / "scripts" / "visit.txt"


def play(orlando: Path, regulars: list[Path], script: str | None, frames: int, save_dir: Path,
         screenshots: Path | None = None, **options) -> Game:
    """Open the window, play `script` (or nothing) for at most `frames` frames, close it; returns the
    game, whose record and NPCs the test then reads. `screenshots` replaces build/pygame/ in the script."""
    pygame.display.init()
    pygame.font.init()
    try:
        screen = pygame.display.set_mode(world.SIZE)
        commands = None
        if script is not None:
            if screenshots is not None:
                script = script.replace("build/pygame/", f"{screenshots}/")
            commands = Script(parse(script))
        game = Game(Options(orlando, regulars, frames, commands, save_dir=save_dir, **options), screen)
        game.run()
        return game
    finally:
        pygame.quit()
