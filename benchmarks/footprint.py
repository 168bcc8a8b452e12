"""Where the memory of a game with LMPC goes: peak RSS of fresh processes, each loading one more part.

    .venv/bin/python -m benchmarks.footprint [--bundle build/orlando_marlo.lmpc]

Every row is a fresh process (its own peak, VmHWM), so the differences between rows are what each part
costs: Python with the runtime's libraries; the model's sessions (onnxruntime prepacks the weights); the
model's tokenizer; a whole NPC (adding the embedder, its tokenizer and the memories); that NPC talking
(three lines: the KV cache, activations); then three NPCs of the same bundle talking (one engine, one
copy of the weights). The NPCs talk the way a game drives them, `say` and `tick` (tick mode: the
segments), and, in separate rows, through `npc.ask` (the whole graph). Results: results/footprint.json
and footprint.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .rss_child import peak_rss_mb
from .stats import save

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LINES = ("Who are you?", "Tell me of your father.", "What do you think of the High Priestess and her new tithe?")

# (label, what the child loads and does, whether it adds to the row before: its difference is then shown)
ROWS = [
    ("Python, numpy, onnxruntime, tokenizers, hnswlib, the runtime", "imports", False),
    ("+ the model's sessions, whole graph", "engine", True),
    ("+ the model's tokenizer", "engine+tokenizer", True),
    ("one NPC loaded (adds the embedder, its tokenizer, the memories), tick mode", "npc", True),
    ("one NPC loaded and talking, tick mode (`say`/`tick`: the segments)", "talk", True),
    ("three NPCs of one bundle loaded and talking, tick mode", "talk3", True),
    ("one NPC loaded and talking through `npc.ask` (the whole graph; `segmented=False`)", "ask", False),
    ("three NPCs of one bundle talking through `npc.ask` (`segmented=False`)", "ask3", True),
]


def say_to_all(rt, npcs: list, line: str) -> None:
    """Each NPC answers `line`, the way a game drives them (`say`, then `tick` until every reply is done)."""
    from lmpc_runtime import DONE

    for npc in npcs:
        rt.say(npc, line)
    done = 0
    while done < len(npcs):
        rt.tick(budget_ms=50)
        done += sum(1 for e in rt.poll() if e.kind == DONE)


def child(bundle: str, what: str) -> dict:
    import hnswlib  # noqa: F401  (each row loads the same libraries)
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers

    from lmpc_runtime import Runtime, SamplingConfig, read_bundle
    from lmpc_runtime.engine import EngineOptions, open_engine

    kept = []
    if what.startswith("engine"):
        spec = read_bundle(bundle).model
        kept.append(open_engine(str(Path(bundle) / spec.file), spec, EngineOptions(segmented=False)))
        if what.endswith("tokenizer"):
            kept.append(tokenizers.Tokenizer.from_file(str(read_bundle(bundle).tokenizer_path)))
    elif what != "imports":
        npcs = 3 if what.endswith("3") else 1
        asking = what.startswith("ask")
        with Runtime(seed=1, segmented=False if asking else None) as rt:
            sampling = SamplingConfig(max_tokens=64)
            loaded = [rt.load_npc(bundle, sampling=sampling) for _ in range(npcs)]
            if what != "npc":
                for line in LINES:
                    if asking:
                        for npc in loaded:
                            for _ in npc.ask(line):
                                pass
                        continue
                    say_to_all(rt, loaded, line)
            return {"peak_rss_mb": peak_rss_mb(), "context_tokens": [npc.context_tokens for npc in loaded]}
    return {"peak_rss_mb": peak_rss_mb()}


def measure(bundle: Path) -> list[dict]:
    rows = []
    for label, what, adds in ROWS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.footprint", "--child", what, "--bundle", str(bundle)],
                              capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"{what}: {done.stderr.strip().splitlines()[-1:]}")
        rows.append({"label": label, "what": what, "adds": adds, **json.loads(done.stdout)})
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Footprint: peak RSS of fresh processes, one more part each ({report['bundle']})", "",
             "| process | peak RSS (MB) | more than the row before (MB) |", "|---|---|---|"]
    previous = None
    for row in report["rows"]:
        step = f"{row['peak_rss_mb'] - previous:+.0f}" if row["adds"] else ""
        lines.append(f"| {row['label']} | {row['peak_rss_mb']:.0f} | {step} |")
        previous = row["peak_rss_mb"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(str(args.bundle), args.child)))
        return 0
    report = {"bundle": str(args.bundle.relative_to(REPO) if args.bundle.is_relative_to(REPO) else args.bundle),
              "rows": measure(args.bundle)}
    save(args.out, "footprint", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
