"""The per-frame scheduler on the real model, in the null host's 60 FPS loop (issue 5's targets).

    python -m benchmarks.scheduler [BUNDLE] [--frames 1800] [--budget-ms 4] [--game-ms 6] [--name scheduler]

Runs, in one process and one after another: the game alone (runtime off); the game with five NPCs (one
the player talks to, four chattering) on a per-frame budget, in tick mode (the model works inside
`tick()`, a segment at a time) and in worker mode (on the runtime's thread, at a duty cycle equal to
the budget's share of a frame); and an unscheduled loop that decodes the focused NPC's reply as fast as
it can on the whole graph (not cut into segments), which gives the fair comparison for tokens per
second at the same CPU share. Writes benchmarks/results/scheduler.json and scheduler.md (or NAME.*).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from lmpc_runtime import Runtime, SamplingConfig
from lmpc_runtime.nullhost import PLAYER_LINES, HostConfig, run
from lmpc_runtime.reply import DONE

from . import machine

RESULTS = Path(__file__).parent / "results"


def unscheduled_tok_s(bundle: str, max_tokens: int, threads: int = 2, rounds: int = 3) -> float:
    """Decode speed of the focused NPC's replies with nothing else running and no budget."""
    tokens, seconds = 0, 0.0
    with Runtime(threads=threads, seed=1) as rt:
        rt.options = replace(rt.options, segmented=False)  # the engine it loads runs each pass whole
        npc = rt.load_npc(bundle, sampling=SamplingConfig(max_tokens=max_tokens))
        for line in PLAYER_LINES[:rounds]:
            first = None
            for event in npc.ask(line):
                if first is None and event.kind != DONE:
                    first = time.perf_counter()
                if event.kind == DONE:
                    tokens += max(event.tokens - 1, 0)
                    seconds += time.perf_counter() - (first or time.perf_counter())
    return tokens / seconds if seconds else 0.0


def frame_simulation(bundle: str, threads: int = 2, frames: int = 1800, budget_ms: float = 4.0,
                     game_ms: float = 6.0, npcs: int = 5, keep_series: bool = False, player_every: int = 600) -> dict:
    """The game alone, then with `npcs` NPCs on the budget, then the focused NPC unscheduled.
    With `keep_series`, the per-frame times come back too (for plots). The player speaks every
    `player_every` frames, interrupting the reply in progress: 10 s leave room for a prompt of ~200 tokens
    to be read at a quarter of two busy cores."""
    base = HostConfig(bundle, npcs=npcs, frames=frames, budget_ms=budget_ms, game_ms=game_ms,
                      player_every=player_every, max_tokens=48)
    share = budget_ms / (1000 / base.fps)
    off = run(HostConfig(bundle, npcs=0, frames=frames, game_ms=game_ms))
    with Runtime(threads=threads, seed=base.seed) as rt:
        on = run(base, runtime=rt)
    with Runtime(threads=threads, seed=base.seed, worker=True, duty_cycle=share) as rt:
        worker = run(replace(base, worker=True), runtime=rt)
    full_speed = unscheduled_tok_s(bundle, base.max_tokens, threads)
    report = {
        "config": {**asdict(base), "threads": threads},
        "runtime_off": off.summary(0),
        "runtime_on": on.summary(budget_ms),
        "worker": worker.summary(budget_ms),
        "unscheduled_focus_tok_s": full_speed,
        "cpu_share_of_budget": share,
    }
    for mode in ("runtime_on", "worker"):
        focus = report[mode]["focus_tok_s"]
        report[mode]["focus_tok_s_vs_same_share"] = focus / (full_speed * share) if full_speed else 0.0
    if keep_series:
        report["series"] = {"tick_ms": on.tick_ms, "frame_ms": on.frame_ms, "frame_ms_off": off.frame_ms}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default="build/orlando_marlo.lmpc")
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--budget-ms", type=float, default=4.0)
    parser.add_argument("--game-ms", type=float, default=6.0)
    parser.add_argument("--npcs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="scheduler", help="results/NAME.json and NAME.md")
    args = parser.parse_args()

    report = {"machine": machine.describe(),
              **frame_simulation(args.bundle, args.threads, args.frames, args.budget_ms, args.game_ms, args.npcs)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    on, worker, off, budget = r["runtime_on"], r["worker"], r["runtime_off"], r["config"]["budget_ms"]

    def ms(d: dict) -> str:
        return f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f}"

    def first(m: dict) -> str:
        return ", ".join(f"{t:.0f}" for t in m["focus_first_token_ms"]) or "none"

    return "\n".join([
        f"# Scheduler benchmark ({r['config']['npcs']} NPCs, {budget} ms budget, 60 FPS, "
        f"{r['config']['game_ms']} ms of game work per frame, {r['config']['frames']} frames)",
        "",
        f"Worker mode runs at a duty cycle of {r['cpu_share_of_budget']:.0%}, the budget's share of a frame. "
        "The unscheduled loop runs the whole graph (no segments), nothing else running.",
        "",
        "| measure | tick mode | worker mode | target |",
        "|---|---|---|---|",
        f"| time in tick, p50 / p99 / max (ms) | {ms(on['tick_ms'])} | {ms(worker['tick_ms'])} "
        f"| p99 ≤ {budget + 0.5:.1f}, max ≤ budget + one segment |",
        f"| focused NPC, say → first token (ms) | {first(on)} | {first(worker)} | ≤ 150 |",
        f"| focused NPC tok/s | {on['focus_tok_s']:.1f} | {worker['focus_tok_s']:.1f} | |",
        f"| unscheduled tok/s (no budget, nothing else) | {r['unscheduled_focus_tok_s']:.1f} | | |",
        f"| focused tok/s ÷ unscheduled at the same CPU share ({r['cpu_share_of_budget']:.0%}) | "
        f"{on['focus_tok_s_vs_same_share']:.2f} | {worker['focus_tok_s_vs_same_share']:.2f} | ≥ 0.80 |",
        f"| game frame time, runtime off: p50 / p99 / max (ms) | {ms(off['frame_ms'])} | | |",
        f"| game frame time, runtime on: p50 / p99 / max (ms) | {ms(on['frame_ms'])} | {ms(worker['frame_ms'])} | |",
        f"| tokens by NPC | {on['tokens_by_npc']} | {worker['tokens_by_npc']} | |",
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
