"""Summaries of repeated timings, timing two or more contenders in turns (PERF.md: same run, alternating,
medians and spread after a warm-up), and writing a benchmark's results."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable


def spread(values: list[float]) -> dict:
    """Median with the range, and the runs themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def percentiles(samples: list[float], scale: float = 1.0) -> dict:
    """Median, p10 and p90 of many short timings (seconds scaled to the unit wanted)."""
    values = sorted(s * scale for s in samples)
    return {"median": statistics.median(values), "p10": values[len(values) // 10],
            "p90": values[(9 * len(values)) // 10]}


def alternate(ours: Callable[[], object], peer: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    """Time ours and the peer in turns (seconds per call), after one warm-up call each."""
    ours(), peer()
    a, b = [], []
    for _ in range(rounds):
        for fn, out in ((ours, a), (peer, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return a, b


def ratios(ours: list[float], peer: list[float]) -> dict:
    """Per-rep ratios ours / peer (reps pair up because they ran back to back)."""
    return spread([a / b for a, b in zip(ours, peer) if b])


def save(out: Path, name: str, raw: dict, table: str) -> None:
    """Write out/NAME.json (the raw numbers) and out/NAME.md (the table), and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(raw, indent=1) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)
