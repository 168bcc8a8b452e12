"""Per-NPC adapters applied at run time against merged models (issue 18): memory, load time, decode speed.

    .venv/bin/python -m benchmarks.adapters [--village build/village] [--merged build] [--reps 3]

The village is `make village`: Orlando, Marta and Jory built with `--runtime-adapter`, one base model
beside them; the merged bundles are `make bundle regulars`, the same adapters merged into three models.
A fourth adapter (Orlando's DPO adapter, examples/characters/orlando_marlo.dpo.lora) is built into the
village when missing, for batches of four different adapters.

Every number comes from a fresh process, and contenders take turns rep by rep (PERF.md):
- memory: peak RSS of one NPC loaded and talking (tick mode: the segments), of the three village NPCs
  talking (one engine), and of the three merged bundles talking (three engines);
- load: seconds of `load_npc` for each of the three village NPCs, in order (the first opens the base);
- decode: greedy steps on the engine (whole graph, 2 threads, no spinning: the runtime's defaults) after
  a 100-token prefill; one NPC with its adapter against the merged model, and a batch of 4 NPCs with 4
  different adapters against 4 sharing one.
Results: results/adapters.json and adapters.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .footprint import say_to_all
from .rss_child import peak_rss_mb
from .stats import ratios, save, spread

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAMES = ("orlando_marlo", "marta_greyhand", "jory_tallow")
FOURTH = "orlando_marlo_dpo"  # a fourth adapter for batches of four different ones
LINES = ("Who are you?", "Tell me of your father.")
PREFILL, STEPS = 100, 64


def child(what: str, bundles: list[str]) -> dict:
    """One measurement in this (fresh) process."""
    if what == "talk":
        return _talk(bundles)
    return {"tokens_per_s": _decode(bundles)}


def _talk(bundles: list[str]) -> dict:
    from lmpc_runtime import Runtime, SamplingConfig

    with Runtime(seed=1) as rt:
        sampling = SamplingConfig(max_tokens=48)
        loads, npcs = [], []
        for path in bundles:
            t = time.perf_counter()
            npcs.append(rt.load_npc(path, sampling=sampling))
            loads.append(time.perf_counter() - t)
        for line in LINES:
            say_to_all(rt, npcs, line)
        return {"peak_rss_mb": peak_rss_mb(), "load_s": loads, "engines": len(rt._engines)}


def _decode(bundles: list[str]) -> float:
    """Aggregate tokens/s of steps (fixed tokens: the same work for every contender) with one sequence per
    bundle, on the engine of the first bundle's model (the bundles of a batch share it)."""
    from lmpc_runtime import read_bundle
    from lmpc_runtime.adapters import read_adapter
    from lmpc_runtime.engine import EngineOptions, open_engine

    read = [read_bundle(path) for path in bundles]
    engine = open_engine(str(read[0].model_path), read[0].model, EngineOptions(segmented=False))
    seqs = []
    for bundle in read:
        if bundle.adapter is None:
            seqs.append(engine.new_sequence())
        else:
            adapter = engine.attach_adapter(read_adapter(bundle.adapter_path, bundle.adapter.sha256))
            seqs.append(engine.new_sequence(adapter=adapter))
    prompt = [(7 + 37 * i) % 40000 + 100 for i in range(PREFILL)]
    for seq in seqs:
        engine.extend(seq, prompt)
    engine.step(seqs, [100] * len(seqs))  # warm-up: the batch's bindings and tables
    t = time.perf_counter()
    for k in range(STEPS):
        engine.step(seqs, [101 + k] * len(seqs))
    return STEPS * len(seqs) / (time.perf_counter() - t)


def run_child(what: str, bundles: list[Path]) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.adapters", "--child", what, *map(str, bundles)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{what} {bundles}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def ensure_fourth(village: Path) -> Path:
    """The fourth village bundle (Orlando's sheet with his DPO adapter), built if missing."""
    out = village / f"{FOURTH}.lmpc"
    if not (out / "manifest.msgpack").is_file():
        subprocess.run([str(Path(sys.executable).with_name("lmpc")), "build", "examples/characters/orlando_marlo.toml",
                        "-o", str(out), "--adapter", "examples/characters/orlando_marlo.dpo.lora",
                        "--runtime-adapter"], check=True, cwd=REPO)
    return out


def measure(village: Path, merged: Path, reps: int) -> dict:
    ours = [village / f"{name}.lmpc" for name in NAMES]
    theirs = [merged / f"{name}.lmpc" for name in NAMES]
    four = ours + [ensure_fourth(village)]
    contenders = {
        "talk, one NPC, adapter": ("talk", ours[:1]),
        "talk, three NPCs, three adapters, one engine": ("talk", ours),
        "talk, one NPC, merged": ("talk", theirs[:1]),
        "talk, three NPCs, merged, three engines": ("talk", theirs),
        "decode, one NPC, adapter": ("decode", ours[:1]),
        "decode, one NPC, merged": ("decode", theirs[:1]),
        "decode, 4 NPCs, 4 different adapters": ("decode", four),
        "decode, 4 NPCs, one adapter": ("decode", ours[:1] * 4),
    }
    runs: dict[str, list[dict]] = {label: [] for label in contenders}
    for _ in range(reps):
        for label, (what, bundles) in contenders.items():
            runs[label].append(run_child(what, bundles))
    return runs


def summarise(runs: dict[str, list[dict]]) -> dict:
    def values(label: str, key: str) -> list[float]:
        return [run[key] for run in runs[label]]

    rss = {label: spread(values(label, "peak_rss_mb")) for label in runs if label.startswith("talk")}
    loads = [run["load_s"] for run in runs["talk, three NPCs, three adapters, one engine"]]
    speed = {label: spread(values(label, "tokens_per_s")) for label in runs if label.startswith("decode")}
    single = values("decode, one NPC, adapter", "tokens_per_s")
    merged = values("decode, one NPC, merged", "tokens_per_s")
    mixed = values("decode, 4 NPCs, 4 different adapters", "tokens_per_s")
    shared = values("decode, 4 NPCs, one adapter", "tokens_per_s")
    village = values("talk, three NPCs, three adapters, one engine", "peak_rss_mb")
    one = values("talk, one NPC, adapter", "peak_rss_mb")
    return {
        "peak_rss_mb": rss,
        "village_rss_vs_one_npc": ratios(village, one),
        "village_rss_vs_merged_three": ratios(village, values("talk, three NPCs, merged, three engines",
                                                                "peak_rss_mb")),
        "load_s": {f"npc {k + 1}": spread([run[k] for run in loads]) for k in range(len(NAMES))},
        "engines": {label: runs[label][0]["engines"] for label in rss},
        "tokens_per_s": speed,
        "single_adapter_vs_merged": ratios(single, merged),
        "mixed_vs_shared_adapter": ratios(mixed, shared),
    }


def markdown(report: dict) -> str:
    s = report["summary"]

    def cell(d: dict, fmt: str = ".0f") -> str:
        return f"{d['median']:{fmt}} [{d['min']:{fmt}}–{d['max']:{fmt}}]"

    lines = [f"# Adapters at run time against merged models ({report['date']})", "",
             f"{report['machine']}. Village: {report['village']}; merged: {report['merged']}. "
             f"{report['reps']} reps, every number a fresh process, contenders in turns; median [min–max]. "
             "Settings: the runtime's defaults (2 threads, no spinning); decode on the engine's whole graph, "
             f"{PREFILL}-token prefill then {STEPS} steps.", "",
             "| process | peak RSS (MB) | engines |", "|---|---|---|"]
    lines += [f"| {label} | {cell(d)} | {s['engines'][label]} |" for label, d in s["peak_rss_mb"].items()]
    lines += ["", f"- Three NPCs with three adapters against one NPC with its adapter: "
              f"**{cell(s['village_rss_vs_one_npc'], '.2f')}×** peak RSS (target ≤ 1.15×); against the three "
              f"merged bundles: {cell(s['village_rss_vs_merged_three'], '.2f')}×.",
              "- Load time of each village NPC, in order (s): "
              + ", ".join(f"{k} {cell(d, '.2f')}" for k, d in s["load_s"].items()) + " (target ≤ 0.2 s for the "
              "second and third).", "",
              "| decode | tokens/s |", "|---|---|"]
    lines += [f"| {label} | {cell(d, '.1f')} |" for label, d in s["tokens_per_s"].items()]
    lines += ["", f"- One NPC with its adapter against the merged model: **{cell(s['single_adapter_vs_merged'], '.2f')}×** "
              "(target ≥ 0.9×).",
              f"- 4 NPCs with 4 different adapters against 4 sharing one: **{cell(s['mixed_vs_shared_adapter'], '.2f')}×** "
              "(target ≥ 0.85×)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adapters", description=__doc__.split("\n\n")[0])
    p.add_argument("--village", type=Path, default=REPO / "build" / "village")
    p.add_argument("--merged", type=Path, default=REPO / "build")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return 0
    from .machine import describe, summary_line

    runs = measure(args.village, args.merged, args.reps)
    machine = describe()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": summary_line(machine), "machine_details": machine,
              "reps": args.reps,
              "village": str(args.village.relative_to(REPO) if args.village.is_relative_to(REPO) else args.village),
              "merged": str(args.merged.relative_to(REPO) if args.merged.is_relative_to(REPO) else args.merged),
              "runs": runs, "summary": summarise(runs)}
    save(args.out, "adapters", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
