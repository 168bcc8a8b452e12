"""What cutting the model into segments costs: the same passes run whole and segment by segment.

    nice -n 5 .venv/bin/python -m benchmarks.segments [BUNDLE] [--reps 40]

Two engines on the same bundle in one process: the whole graph (EngineOptions(segmented=False)) and its
segments run back to back. For each kind of pass (decode steps of 1 and 4 sequences, prefill chunks of
16 and 64 tokens, all on a context of ~300 tokens) the two take turns, and each rep's ratio segmented /
whole is reported (PERF.md: same run, alternating). Also the time of each segment of a decode step of 4,
which is what one `tick()` must be able to fit. Writes results/segments.json and segments.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmpc_runtime import read_bundle
from lmpc_runtime.fused_engine import FusedEngine
from lmpc_runtime.session import EngineOptions

from . import machine
from .stats import alternate, ratios, spread

RESULTS = Path(__file__).parent / "results"
CONTEXT = 300


def _context(engine: FusedEngine, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n):
        seq = engine.new_sequence()
        engine.extend(seq, [int(t) for t in rng.integers(100, 40000, CONTEXT)])
        seqs.append(seq)
    return seqs


def _decode(engine: FusedEngine, seqs: list):
    def run() -> None:
        engine.begin_step(seqs, [1000 + i for i in range(len(seqs))]).finish()
        for seq in seqs:
            seq.rewind(CONTEXT)
    return run


def _prefill(engine: FusedEngine, seq, n: int):
    chunk = list(range(2000, 2000 + n))

    def run() -> None:
        engine.begin_extend(seq, chunk).finish()
        seq.rewind(CONTEXT)
    return run


def segment_times(engine: FusedEngine, seqs: list, reps: int) -> list[float]:
    """Median milliseconds of each segment of a decode step of `seqs`."""
    import time

    segments = len(engine.graph(engine.paced))
    times = np.zeros((reps, segments))
    for rep in range(reps):
        forward = engine.begin_step(seqs, [1000 + i for i in range(len(seqs))])
        for k in range(segments):
            t = time.perf_counter()
            forward.advance()
            times[rep, k] = time.perf_counter() - t
        for seq in seqs:
            seq.rewind(CONTEXT)
    return [float(x) for x in 1000 * np.median(times, axis=0)]


def measure(bundle_path: str, reps: int, threads: int = 2) -> dict:
    bundle = read_bundle(bundle_path)
    segmented = FusedEngine(str(bundle.model_path), bundle.model, EngineOptions(threads=threads))
    whole = FusedEngine(str(bundle.model_path), bundle.model, EngineOptions(threads=threads, segmented=False))
    passes = {}
    for name, make in (("decode x1", lambda e: _decode(e, _context(e, 1, 1))),
                       ("decode x4", lambda e: _decode(e, _context(e, 4, 2))),
                       ("prefill 16", lambda e: _prefill(e, _context(e, 1, 3)[0], 16)),
                       ("prefill 64", lambda e: _prefill(e, _context(e, 1, 4)[0], 64))):
        ours, peer = alternate(make(segmented), make(whole), reps)
        passes[name] = {"segmented_ms": spread([1000 * t for t in ours]),
                        "whole_ms": spread([1000 * t for t in peer]),
                        "ratio": ratios(ours, peer)}
    return {"machine": machine.describe(), "bundle": bundle_path, "threads": threads, "reps": reps,
            "segments": [(s.first_layer, s.end_layer) for s in bundle.model.segments],
            "passes": passes, "decode_x4_segment_ms": segment_times(segmented, _context(segmented, 4, 5), reps)}


def markdown(r: dict) -> str:
    lines = [f"# Segments: the same passes whole and segment by segment ({len(r['segments'])} segments, "
             f"{r['threads']} threads, {r['reps']} alternating reps, context {CONTEXT})", "",
             "| pass | whole, median ms | segmented, median ms | ratio segmented / whole, median (min-max) |",
             "|---|---|---|---|"]
    for name, p in r["passes"].items():
        q = p["ratio"]
        lines.append(f"| {name} | {p['whole_ms']['median']:.2f} | {p['segmented_ms']['median']:.2f} | "
                     f"{q['median']:.3f} ({q['min']:.2f}-{q['max']:.2f}) |")
    lines += ["", "Each segment of a decode step of 4 sequences, median ms (by its layers; `head`: a vocabulary "
              "slice of the LM head):", "",
              "| " + " | ".join(f"{a}-{b}" if a < b else "head" for a, b in r["segments"]) + " |",
              "|" + "---|" * len(r["segments"]),
              "| " + " | ".join(f"{ms:.2f}" for ms in r["decode_x4_segment_ms"]) + " |", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default="build/orlando_marlo.lmpc")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report = measure(args.bundle, args.reps, args.threads)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "segments.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "segments.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
