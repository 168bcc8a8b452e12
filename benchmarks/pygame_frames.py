"""Frame times of the pygame example game with the real model, against the same game with nobody talking.

    make bundle regulars
    .venv/bin/python -m benchmarks.pygame_frames            # ~4 min on 2 cores; --rounds N for more

Each round plays, one after another in the same run: the baseline (the yard with Orlando loaded and
idle, no regulars, no script: the game's own drawing and the clock, `tick()` with nothing to do), then
the visit script (examples/pygame/scripts/visit.txt: letter, two questions to Orlando, save, load) with
both regulars chattering, in tick mode (the runtime works inside `tick(budget_ms=time left)`), then the
baseline again, then the visit in worker mode (model work on the runtime's thread). Every run is a fresh
`python -m examples.pygame` process on SDL's dummy video driver. Reported: frame time p50/p99/max and the
ratios to the baseline of the same round, Orlando's Enter → first words on screen, and reply lengths.
Results: results/pygame_frames.json (every run) and results/pygame_frames.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
VISIT = REPO / "examples" / "pygame" / "scripts" / "visit.txt"
BASELINE_FRAMES = 600


def play(args: list[str], tmp: Path, name: str) -> dict:
    report = tmp / f"{name}.json"
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="disk")
    command = [sys.executable, "-m", "examples.pygame", "--headless", "--report", str(report),
               "--save-dir", str(tmp / f"{name}-save"), *args]
    subprocess.run(command, cwd=REPO, env=env, check=True)
    return json.loads(report.read_text())


def frame_stats(report: dict) -> dict:
    frames = np.asarray(report["frame_ms"][30:])  # past the first half-second (fonts, first blits)
    return {"frames": len(frames), "p50": float(np.percentile(frames, 50)),
            "p99": float(np.percentile(frames, 99)), "max": float(frames.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for round_ in range(args.rounds):
            for mode in ("tick", "worker"):
                baseline = play(["--no-regulars", "--frames", str(BASELINE_FRAMES)], tmp, "baseline")
                visit_args = ["--script", str(VISIT), "--frames", "30000"]
                visit_args += ["--worker"] if mode == "worker" else []
                visit = play(visit_args, tmp, f"visit-{mode}")
                base, loaded = frame_stats(baseline), frame_stats(visit)
                run = {"round": round_, "mode": mode, "baseline": base, "visit": loaded,
                       "ratio_p50": loaded["p50"] / base["p50"], "ratio_p99": loaded["p99"] / base["p99"],
                       "first_words_ms": [e["first_words_ms"] for e in visit["exchanges"]],
                       "reply_ms": [e["done_ms"] for e in visit["exchanges"]],
                       "reply_tokens": [e["tokens"] for e in visit["exchanges"]],
                       "chatter_lines": len(visit["chatter"]), "problems": visit["problems"]}
                runs.append(run)
                print(json.dumps(run), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pygame_frames.json").write_text(json.dumps(runs, indent=1))
    lines = ["# pygame example: frame times with the real model (visit script, two regulars chattering)", "",
             "| round | mode | baseline p50 / p99 (ms) | visit p50 / p99 / max (ms) | ratio p50 / p99 "
             "| Enter → first words (ms) | reply (ms) | tokens | chatter lines |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        b, v = r["baseline"], r["visit"]
        lines.append(f"| {r['round']} | {r['mode']} | {b['p50']:.1f} / {b['p99']:.1f} | {v['p50']:.1f} / "
                     f"{v['p99']:.1f} / {v['max']:.0f} | {r['ratio_p50']:.2f} / {r['ratio_p99']:.2f} | "
                     f"{', '.join(f'{ms:.0f}' for ms in r['first_words_ms'])} | "
                     f"{', '.join(f'{ms:.0f}' for ms in r['reply_ms'])} | "
                     f"{', '.join(str(t) for t in r['reply_tokens'])} | {r['chatter_lines']} |")
    (RESULTS / "pygame_frames.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
