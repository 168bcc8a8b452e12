"""python -m examples.pygame — the yard of the Tipped Lantern, with Ser Orlando Marlo and two regulars.

    python -m examples.pygame                                   # play (needs a display)
    python -m examples.pygame --frames 900 --script examples/pygame/scripts/visit.txt --report out.json

With `--script` (or `--headless`, or no display on Linux) the game runs with SDL's dummy video driver:
no window, the same frames, scripted keys; with no display and no script it plays the visit script and
prints what was said. `--report` writes frame times, the exchanges with Orlando
(with the time from Enter to his first words on screen) and the chatter as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `make village`: the three NPCs with their adapters applied at run time, one engine for all.
DEFAULT_ORLANDO = Path("build/village/orlando_marlo.lmpc")
DEFAULT_REGULARS = [Path("build/village/marta_greyhand.lmpc"), Path("build/village/jory_tallow.lmpc")]
VISIT = Path(__file__).parent / "scripts" / "visit.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.pygame", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orlando", type=Path, default=DEFAULT_ORLANDO, help="Orlando's bundle")
    parser.add_argument("--regulars", type=Path, nargs=2, metavar="BUNDLE",
                        help="the two regulars who chatter at the next table (default: Marta and Jory)")
    parser.add_argument("--no-regulars", action="store_true", help="a quiet yard: only Orlando")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--script", type=Path, help="play scripted input from this file (runs headless)")
    parser.add_argument("--report", type=Path, help="write a JSON report here at the end")
    parser.add_argument("--headless", action="store_true", help="no window (SDL's dummy video driver)")
    parser.add_argument("--worker", action="store_true", help="run the model on the runtime's worker thread")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--seed", type=int, default=487)
    parser.add_argument("--name", default="Mira", help="the player's name, told to every NPC (default Mira)")
    parser.add_argument("--save-dir", type=Path, default=Path("saves/yard"),
                        help="where F5 saves and F9 loads")
    args = parser.parse_args(argv)

    no_display = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if no_display and not args.headless and not args.script:
        print(f"No display: playing {VISIT} headless instead.", file=sys.stderr)
        args.script = VISIT
    if args.headless or args.script or no_display:
        # Must be set before pygame is imported.
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ["SDL_AUDIODRIVER"] = "disk"
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

    import pygame
    from lmpc_runtime import LmpcError

    from . import world
    from .game import Game, Options
    from .script import Script, ScriptError, load

    regulars = [] if args.no_regulars else args.regulars or DEFAULT_REGULARS
    if not args.regulars and regulars and not all((p / "manifest.msgpack").is_file() for p in regulars):
        print("The regulars' bundles are not built (`make bundle` builds them): the yard will be quiet.",
              file=sys.stderr)
        regulars = []
    # Only the modules the game uses: no audio device is opened.
    pygame.display.init()
    pygame.font.init()
    try:
        script = Script(load(args.script)) if args.script else None
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    screen = pygame.display.set_mode(world.SIZE)
    pygame.display.set_caption("LMPC — the yard of the Tipped Lantern")
    options = Options(args.orlando, regulars, args.frames, script, args.report, args.threads, args.worker,
                      args.seed, args.name, args.save_dir)
    try:
        game = Game(options, screen)
    except LmpcError as exc:
        print(f"error: cannot load the NPCs: {exc}", file=sys.stderr)
        return 2
    record = game.run()
    pygame.quit()
    if args.script is VISIT:
        for exchange in record.exchanges:
            waited = exchange.first_words_ms or 0
            print(f"You: {exchange.player}\nOrlando ({waited:.0f} ms to his first words): {exchange.reply}\n")
    for problem in record.problems:
        print(problem, file=sys.stderr)
    return 1 if any(p.startswith("script:") for p in record.problems) else 0


if __name__ == "__main__":
    sys.exit(main())
