"""The null host: a game loop with no window, for tests and benchmarks (like Dear ImGui's null backend).

Each frame it burns `game_ms` of CPU as the game's own work, gives the runtime what is left of its budget,
drains events, and sleeps to the next frame. One NPC is the one the player talks to (scripted lines at
set frames, FOCUS priority); the others chat among themselves at AMBIENT priority, each answering the
last thing another said. It records, per frame, the time inside `tick()` and the whole frame's time, and
for the player's lines the time from `say()` to the first token and the tokens delivered.

    python -m lmpc_runtime.nullhost build/orlando_marlo.lmpc --npcs 5 --frames 600 --budget-ms 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .reply import DONE, STARTED
from .runtime import Runtime
from .sampling import SamplingConfig
from .scheduler import AMBIENT, FOCUS

PLAYER_LINES = (
    "Good day, sir knight. Who are you?",
    "What do you think of the Order of Solar Truth?",
    "What happened to your father?",
    "Where are you headed next?",
)
UNBOUNDED_MS = 60_000.0  # a tick bounded by tokens, not time
CHATTER_OPENERS = ("Fine weather for the harvest, is it not?", "Did you hear the news from the capital?")


@dataclass
class HostConfig:
    bundle: str
    npcs: int = 5
    frames: int = 600
    fps: float = 60.0
    budget_ms: float = 4.0
    game_ms: float = 6.0
    player_every: int = 180  # frames between the player's lines
    max_tokens: int = 48
    worker: bool = False
    seed: int = 1
    # When set, every tick may run whole passes up to this many tokens, whatever the clock says: the same
    # work each frame on any machine, however loaded (tests). None: the frame's time budget, as a game does.
    tick_tokens: int | None = None


@dataclass
class HostResult:
    tick_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)
    focus_first_token_ms: list[float] = field(default_factory=list)
    focus_tokens: int = 0
    focus_busy_s: float = 0.0  # time from the first token to the end of each focus reply, summed
    tokens_by_npc: dict[str, int] = field(default_factory=dict)
    replies: int = 0

    def summary(self, budget_ms: float) -> dict:
        tick, frame = np.array(self.tick_ms or [0.0]), np.array(self.frame_ms or [0.0])
        return {
            "frames": len(self.frame_ms),
            "tick_ms": {"p50": _q(tick, 50), "p99": _q(tick, 99), "max": float(tick.max())},
            "tick_over_budget_ms": {"p99": max(_q(tick, 99) - budget_ms, 0.0), "max": max(float(tick.max()) - budget_ms, 0.0)},
            "frame_ms": {"p50": _q(frame, 50), "p99": _q(frame, 99), "max": float(frame.max())},
            "focus_first_token_ms": self.focus_first_token_ms,
            "focus_tok_s": self.focus_tokens / self.focus_busy_s if self.focus_busy_s else 0.0,
            "tokens_by_npc": self.tokens_by_npc,
            "replies": self.replies,
        }


def _q(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def burn(seconds: float) -> None:
    """Busy CPU work standing in for the game's own update and draw."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def run(config: HostConfig, runtime: Runtime | None = None) -> HostResult:
    """Run the loop; with `npcs == 0` the runtime is off and only the game's frames are measured."""
    own = runtime is None
    rt = runtime or Runtime(threads=2, seed=config.seed, worker=config.worker)
    result = HostResult()
    frame_s = 1.0 / config.fps
    try:
        sampling = SamplingConfig(max_tokens=config.max_tokens)
        npcs = [rt.load_npc(config.bundle, npc_id=f"npc{i}", sampling=sampling,
                            priority=FOCUS if i == 0 else AMBIENT) for i in range(config.npcs)]
        ambient = npcs[1:]
        for i, npc in enumerate(ambient[:len(CHATTER_OPENERS)]):
            rt.say(npc, CHATTER_OPENERS[i])
        said_at: dict[int, float] = {}
        started_at: dict[int, float] = {}
        next_line = 0
        for frame in range(config.frames):
            start = time.perf_counter()
            if npcs and frame % config.player_every == 0:
                reply_id = rt.say(npcs[0], PLAYER_LINES[next_line % len(PLAYER_LINES)], interrupt=True)
                said_at[reply_id] = start
                next_line += 1
            burn(config.game_ms / 1000)
            if npcs:
                left_ms = (frame_s - (time.perf_counter() - start)) * 1000
                t0 = time.perf_counter()
                if config.tick_tokens is None:
                    rt.tick(budget_ms=max(0.0, min(config.budget_ms, left_ms)))
                else:
                    rt.tick(budget_ms=UNBOUNDED_MS, max_tokens=config.tick_tokens)
                result.tick_ms.append((time.perf_counter() - t0) * 1000)
                _handle(rt.poll(), rt, npcs, ambient, said_at, started_at, result)
            result.frame_ms.append((time.perf_counter() - start) * 1000)
            time.sleep(max(0.0, frame_s - (time.perf_counter() - start)))
    finally:
        if own:
            rt.close()
    return result


def _handle(events, rt, npcs, ambient, said_at, started_at, result: HostResult) -> None:
    now = time.perf_counter()
    for event in events:
        focus = bool(npcs) and event.npc == npcs[0].id
        if event.kind == STARTED and focus and event.reply in said_at:
            started_at[event.reply] = now
            result.focus_first_token_ms.append((now - said_at[event.reply]) * 1000)
        elif event.kind == DONE:
            result.replies += 1
            result.tokens_by_npc[event.npc] = result.tokens_by_npc.get(event.npc, 0) + event.tokens
            if focus and event.reply in started_at:
                result.focus_tokens += event.tokens
                result.focus_busy_s += now - started_at.pop(event.reply)
            speaker = next((i for i, n in enumerate(ambient) if n.id == event.npc), None)
            if speaker is not None and event.text:
                # Ambient NPCs answer each other, round and round.
                rt.say(ambient[(speaker + 1) % len(ambient)], event.text[:300])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmpc_runtime.nullhost", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    for name, default in (("npcs", 5), ("frames", 600), ("player-every", 180), ("max-tokens", 48), ("seed", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("fps", 60.0), ("budget-ms", 4.0), ("game-ms", 6.0)):
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--worker", action="store_true", help="run the model work on the runtime's worker thread")
    parser.add_argument("--json", help="write the summary here as well")
    args = parser.parse_args(argv)
    config = HostConfig(args.bundle, args.npcs, args.frames, args.fps, args.budget_ms, args.game_ms,
                        args.player_every, args.max_tokens, args.worker, args.seed)
    summary = {"config": asdict(config), **run(config).summary(config.budget_ms)}
    text = json.dumps(summary, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
