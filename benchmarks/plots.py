"""PNG plots of a harness run (matplotlib, from the `bench` extra): decode speed by system, the time spent
in `tick()` per frame, the game's frame time over the run, and peak RSS. Without matplotlib no plot is
drawn and the report says so."""

from __future__ import annotations

from pathlib import Path

FRAME_BUDGET_MS = 1000 / 60


def _runs(results: dict):
    """(label, run) for every profile and thread count measured (a fallback that reuses a run is not drawn twice)."""
    for entry in results["profiles"]:
        for run in entry["runs"]:
            if run["profile"] == entry["profile"]["name"]:
                yield f"{entry['profile']['name']}, {run['threads']} thr", run


def draw(results: dict, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for name, painter in (("decode_tok_s.png", _decode), ("tick_ms_histogram.png", _ticks),
                          ("frame_ms_over_time.png", _frames), ("peak_rss.png", _rss)):
        fig = painter(plt, results)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(out / name)
    return made


def _grouped_bars(plt, results: dict, table: str, key: str, ylabel: str, title: str):
    """One bar per system (the systems that ran) and run, from `run[table][system][key]`: a spread (median
    with min-max whiskers) or a plain number."""
    runs = list(_runs(results))
    ran = "systems" if table == "results" else table
    systems = list(dict.fromkeys(name for _, run in runs for name, v in run[ran].items() if v["status"] == "ok"))
    if not systems:
        return None, None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(runs)
    for i, (label, run) in enumerate(runs):
        values = [run[table].get(s, {}).get(key) for s in systems]
        medians = [v["median"] if isinstance(v, dict) else v or 0 for v in values]
        errors = [[v["median"] - v["min"] if isinstance(v, dict) else 0 for v in values],
                  [v["max"] - v["median"] if isinstance(v, dict) else 0 for v in values]]
        ax.bar([j + i * width for j in range(len(systems))], medians, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(systems))], systems, rotation=20, ha="right")
    _label(ax, None, ylabel, title)
    return fig, ax


def _label(ax, xlabel: str | None, ylabel: str, title: str) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def _decode(plt, results: dict):
    fig, ax = _grouped_bars(plt, results, "results", "decode_npc_tok_s", "decode tok/s (median, min-max)",
                            "Single-NPC decode speed, same run, same weights")
    return fig


def _ticks(plt, results: dict):
    runs = [(label, run) for label, run in _runs(results) if run["frames"]["series"]["tick_ms"]]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    top = max(max(run["frames"]["series"]["tick_ms"]) for _, run in runs)
    for label, run in runs:
        ax.hist(run["frames"]["series"]["tick_ms"], bins=60, range=(0, top), histtype="step", label=label)
    budget = runs[0][1]["frames"]["config"]["budget_ms"]
    ax.axvline(budget, color="k", linestyle="--", label=f"budget {budget} ms")
    ax.set_yscale("log")
    _label(ax, "time inside tick() per frame (ms)", "frames", "Runtime work per frame, 5 NPCs, 60 FPS null host")
    return fig


def _frames(plt, results: dict):
    runs = list(_runs(results))
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(runs[0][1]["frames"]["series"]["frame_ms_off"], linewidth=0.7, label="runtime off (game only)")
    for label, run in runs:
        ax.plot(run["frames"]["series"]["frame_ms"], linewidth=0.7, label=f"runtime on, {label}")
    ax.axhline(FRAME_BUDGET_MS, color="k", linestyle="--", label="16.7 ms (60 FPS)")
    _label(ax, "frame", "frame time (ms)", "Game frame time over the run")
    return fig


def _rss(plt, results: dict):
    fig, ax = _grouped_bars(plt, results, "rss", "peak_rss_mb", "peak RSS (MB), fresh process, talking",
                            "Memory of one model loaded and talking")
    if ax is None:
        return None
    for ceiling in {run["rss_ceiling"]["limit_mb"] for _, run in _runs(results) if run["rss_ceiling"]["limit_mb"]}:
        ax.axhline(ceiling, color="k", linestyle="--", label=f"ceiling {ceiling:.0f} MB")
    ax.legend(fontsize=8)  # again, to list the ceiling
    return fig
