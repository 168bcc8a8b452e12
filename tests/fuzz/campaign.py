"""A fuzzing campaign over every target: coverage-guided (atheris) for a while, then many more inputs
from the seeded random mutator, which runs several times faster without coverage instrumentation.

    nice -n 10 .venv/bin/python tests/fuzz/campaign.py [--seconds 150] [--random 120000] [TARGET ...]

Writes each target's executions, time and findings to benchmarks/results/fuzz.json (and crash inputs
to build/fuzz/). Without atheris installed, only the random phase runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from targets import TARGETS  # noqa: E402


def run(cmd: list[str], cwd: Path, pattern: str) -> tuple[int, float, int, str]:
    """Run one fuzzing process; returns (executions, seconds, exit status, last lines of its output)."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = out.stdout + out.stderr
    found = re.findall(pattern, log)
    return (int(found[-1]) if found else 0), seconds, out.returncode, "\n".join(log.splitlines()[-30:])


# atheris prints "Done N runs" when its time is up, only its final stats when it stops at a finding.
ATHERIS_EXECUTIONS = r"(?:Done |number_of_executed_units: *)(\d+)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--seconds", type=int, default=150, help="coverage-guided time per target")
    parser.add_argument("--random", type=int, default=120_000, help="random-mode inputs per target")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args()
    work = REPO / "build" / "fuzz"
    work.mkdir(parents=True, exist_ok=True)
    has_atheris = importlib.util.find_spec("atheris") is not None
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.targets:
        entry = {"atheris": None, "random": None}
        fuzz = [sys.executable, str(HERE / "fuzz.py"), name]
        if has_atheris and args.seconds:
            # -timeout: one input running longer is a hang; -rss_limit_mb: growing past it is a finding.
            runs, seconds, status, tail = run(
                fuzz + [f"-max_total_time={args.seconds}", "-timeout=10", "-rss_limit_mb=3072",
                        "-print_final_stats=1"], work, ATHERIS_EXECUTIONS)
            entry["atheris"] = {"executions": runs, "seconds": round(seconds), "finding": status != 0,
                                **({"log": tail} if status else {})}
        if args.random:
            runs, seconds, status, tail = run(fuzz + ["--random", str(args.random), "1"], work,
                                              r": (\d+) inputs in")
            entry["random"] = {"executions": runs if status == 0 else None, "seconds": round(seconds),
                               "finding": status != 0, **({"log": tail} if status else {})}
        results[name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps({k: v and {x: y for x, y in v.items() if x != "log"} for k, v in entry.items()}),
              flush=True)


if __name__ == "__main__":
    main()
