"""Ours and llama.cpp in the four regimes a game may run them in, each system in a process of its own.

    .venv/bin/python -m benchmarks.regimes [--bundle build/orlando_marlo.lmpc] [--reps 3]

- (a) as shipped: each system with its own defaults. Ours does not spin; llama.cpp's OpenMP threads wait
  the way its build makes them (spinning between steps), and its extra buffer types (repacked kernels,
  AMX) are on, unless a child process shows they crash on this CPU: then they are off, and the report
  says so for this machine.
- (b) like for like, spinning: ours with `spinning=True`, llama.cpp as shipped.
- (c) like for like, no spinning (what a game wants beside its own threads): ours as shipped, llama.cpp
  with `OMP_WAIT_POLICY=PASSIVE`.
- (d) a game beside them: as shipped, while a simulated game runs on the same cores in its own process
  (the null host's frame: a fixed amount of work, ~6 ms on an idle core, every 1/60 s). The game's own
  frames are timed too: how long its fixed work took while each system decoded.

In every regime both children load a SmolLM2-135M at 8 bits (our bundle; llama.cpp the Q8_0 requantised
from the base model's GGUF), receive the same token ids, and are asked in turns, rep after rep, the
order rotating: decode tok/s after the NPC prompt (persona + player line, greedy, no early stop), time to
the first token with the persona cached, and finally each child's peak RSS. Ratios pair reps that ran
back to back. Results: results/regimes.json and regimes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .rss_child import peak_rss_mb
from .stats import ratios, save, spread

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GAME_FPS = 60.0
GAME_MS = 6.0  # the null host's default game work per frame

REGIMES = {
    "a": "as shipped (each system's defaults)",
    "b": "like for like, threads spinning",
    "c": "like for like, no spinning",
    "d": "as shipped, beside a running game",
}


def settings(regime: str, llama_extra_buffers: bool) -> dict:
    """Per system: the environment its process starts with, and whether our threads spin."""
    llama_env = {"LMPC_LLAMA_EXTRA_BUFFERS": "1" if llama_extra_buffers else "0"}
    if regime == "c":
        llama_env["OMP_WAIT_POLICY"] = "PASSIVE"
    return {"lmpc": {"env": {}, "spinning": regime == "b"}, "llama.cpp": {"env": llama_env, "spinning": False}}


# -- the child: one system, driven over stdin/stdout, one JSON object a line --------------------------------

def child(side: str, path: str) -> None:
    from .peers import Llama, Ours

    job = json.loads(sys.stdin.readline())
    system = (Ours(Path(path), job["threads"], spinning=job["spinning"]) if side == "lmpc"
              else Llama("llama.cpp", Path(path), job["threads"]))
    print(json.dumps({"load_s": system.load_s, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)
    for line in sys.stdin:
        if json.loads(line)["op"] == "quit":
            break
        tok_s, tokens = system.decode(job["persona"] + job["line"], job["new_tokens"])
        ttft = system.ttft_cached(job["persona"], job["line"])
        print(json.dumps({"decode_tok_s": tok_s, "ttft_cached_ms": ttft, "tokens": len(tokens),
                          "peak_rss_mb": peak_rss_mb()}), flush=True)


class Child:
    """A system in its own process (see `child`)."""

    def __init__(self, side: str, path: Path, env: dict, job: dict):
        self.side = side
        # The child starts from no OpenMP setting of ours: only what its regime sets.
        inherited = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.regimes", "child", side, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                     env={**inherited, **env})
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        started = self._answer()
        self.load_s, self.omp_wait_policy = started["load_s"], started["omp_wait_policy"]

    def rep(self) -> dict:
        self.proc.stdin.write(json.dumps({"op": "rep"}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"{self.side} exited with {code} ({_signal_name(code)})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else "no signal"


# -- the game beside them (regime d) -----------------------------------------------------------------------

def game(out: str, work: int) -> None:
    """Each frame: `work` loop iterations (about GAME_MS on an idle core), then sleep to the next frame.
    Writes one line per frame, "start end" in time.monotonic() seconds, until terminated."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    frame = 1.0 / GAME_FPS
    with open(out, "w") as f:
        while not stop:
            start = time.monotonic()
            _work(work)
            end = time.monotonic()
            f.write(f"{start:.6f} {end:.6f}\n")
            time.sleep(max(0.0, frame - (time.monotonic() - start)))


def _work(iterations: int) -> int:
    x = 0
    for i in range(iterations):
        x += i * i % 7
    return x


def calibrate_work(ms: float) -> int:
    """Loop iterations that take `ms` on this core when it is idle (median of a few tries)."""
    n = 20_000
    times = []
    for _ in range(5):
        t = time.perf_counter()
        _work(n)
        times.append(time.perf_counter() - t)
    return int(n * (ms / 1000) / float(np.median(times)))


def game_frames(path: Path, windows: list[tuple[float, float]]) -> list[float]:
    """Work times (ms) of the game's frames that started inside any of `windows`."""
    frames = [tuple(map(float, line.split())) for line in path.read_text().splitlines() if line.count(" ") == 1]
    return [(end - start) * 1000 for start, end in frames if any(a <= start < b for a, b in windows)]


def _frame_summary(ms: list[float]) -> dict:
    if not ms:
        return {"frames": 0}
    return {"frames": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": max(ms)}


# -- the parent ---------------------------------------------------------------------------------------------

def extra_buffers_work(gguf: Path, job: dict) -> tuple[bool, str]:
    """Whether llama.cpp runs with its extra buffer types on this CPU: a child tries one short rep."""
    try:
        peer = Child("llama.cpp", gguf, {"LMPC_LLAMA_EXTRA_BUFFERS": "1"}, {**job, "new_tokens": 8})
        peer.rep()
        peer.close()
        return True, "on (llama.cpp's default)"
    except RuntimeError as exc:
        return False, f"off on this machine: with them on, {exc} in a test child"


def run_regime(regime: str, paths: dict, job: dict, reps: int, warmup: int, extra_buffers: bool,
               game_work: int, scratch: Path) -> dict:
    config = settings(regime, extra_buffers)
    children = {side: Child(side, paths[side], config[side]["env"], {**job, "spinning": config[side]["spinning"]})
                for side in paths}
    game_proc, game_log = None, scratch / f"game-{regime}.txt"
    if regime == "d":
        game_proc = subprocess.Popen([sys.executable, "-m", "benchmarks.regimes", "game", str(game_log),
                                      str(game_work)], cwd=REPO)
        time.sleep(1.0)
    runs = {side: [] for side in children}
    windows: dict[str, list[tuple[float, float]]] = {side: [] for side in children}
    try:
        sides = list(children)
        for rep in range(warmup + reps):
            for side in sides[rep % 2:] + sides[: rep % 2]:
                start = time.monotonic()
                result = children[side].rep()
                if rep >= warmup:
                    runs[side].append(result)
                    windows[side].append((start, time.monotonic()))
        if game_proc is not None:
            idle_start = time.monotonic()
            time.sleep(3.0)  # the game alone, for its baseline
            windows["game alone"] = [(idle_start, time.monotonic())]
    finally:
        for c in children.values():
            c.close()
        if game_proc is not None:
            game_proc.terminate()
            game_proc.wait(timeout=30)
    ours, peer = runs["lmpc"], runs["llama.cpp"]
    out = {
        "settings": config,
        "load_s": {side: c.load_s for side, c in children.items()},
        "omp_wait_policy": {side: c.omp_wait_policy for side, c in children.items()},  # as each child saw it
        "results": {side: {key: spread([r[key] for r in rs]) for key in ("decode_tok_s", "ttft_cached_ms")}
                    for side, rs in runs.items()},
        "peak_rss_mb": {side: rs[-1]["peak_rss_mb"] for side, rs in runs.items()},
        "ratios": {"decode_tok_s": ratios([r["decode_tok_s"] for r in ours], [r["decode_tok_s"] for r in peer]),
                   "ttft_cached_ms": ratios([r["ttft_cached_ms"] for r in peer], [r["ttft_cached_ms"] for r in ours])},
    }
    if game_proc is not None:
        out["game_frames"] = {name: _frame_summary(game_frames(game_log, w)) for name, w in windows.items()}
    return out


def run(args: argparse.Namespace) -> dict:
    from lmpc_export.checkpoint import base_gguf

    from . import machine
    from .engine import prompts
    from .llama_peer import q8_0_gguf, require_llama_cpp

    llama_cpp = require_llama_cpp()
    ids = prompts(args.bundle)
    gguf = q8_0_gguf(base_gguf(), args.model_cache / "bench" / "SmolLM2-135M-Instruct.Q8_0.gguf")
    job = {"threads": args.threads, "persona": ids["persona"], "line": ids["line"], "new_tokens": args.new_tokens}
    extra, extra_note = extra_buffers_work(gguf, {**job, "spinning": False})
    game_work = calibrate_work(GAME_MS)
    scratch = args.out / "regimes-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    results = {}
    for regime in args.regimes:
        print(f"regime {regime}: {REGIMES[regime]}", file=sys.stderr)
        results[regime] = run_regime(regime, {"lmpc": args.bundle, "llama.cpp": gguf}, job, args.reps, args.warmup,
                                     extra, game_work, scratch)
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    info = machine.describe()
    return {"date": time.strftime("%Y-%m-%d"),
            "machine": {"cpu": info["cpu"], "cores_visible": info["cores_visible"], "threads": args.threads,
                        "load_average_at_start": os.getloadavg()[0],
                        "onnxruntime": info["libraries"].get("onnxruntime"),
                        "llama_cpp_python": llama_cpp.__version__},
            "setup": {"bundle": str(args.bundle.relative_to(REPO) if args.bundle.is_relative_to(REPO) else args.bundle),
                      "llama_gguf": gguf.name, "new_tokens": args.new_tokens, "reps": args.reps,
                      "warmup": args.warmup, "persona_tokens": len(ids["persona"]), "line_tokens": len(ids["line"]),
                      "llama_extra_buffer_types": extra_note, "game_ms": GAME_MS, "game_fps": GAME_FPS},
            "regimes": results}


def markdown(report: dict) -> str:
    m, s, r = report["machine"], report["setup"], report["regimes"]
    rows = [
        f"# Four regimes: lmpc and llama.cpp, each in its own process ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads ({m['cores_visible']} cores visible; load average "
        f"{m['load_average_at_start']:.2f} at the start); onnxruntime {m['onnxruntime']}, llama-cpp-python "
        f"{m['llama_cpp_python']}. Ours: `{s['bundle']}` (int8); llama.cpp: {s['llama_gguf']}. NPC prompt: persona "
        f"{s['persona_tokens']} + player turn {s['line_tokens']} tokens, then {s['new_tokens']} greedy tokens; "
        f"{s['reps']} reps after {s['warmup']} warm-up, the systems taking turns. llama.cpp's extra buffer "
        f"types: {s['llama_extra_buffer_types']}. Median [min–max]; ratios: times as fast as llama.cpp, per rep.",
        "",
        "| regime | settings changed | decode tok/s lmpc | llama.cpp | lmpc vs llama.cpp | first token, persona "
        "cached (ms) lmpc | llama.cpp | lmpc vs llama.cpp | peak RSS (MB) lmpc | llama.cpp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, v in r.items():
        res, q = v["results"], v["ratios"]
        rows.append(
            f"| ({key}) {REGIMES[key]} | {_changed(key)} | {_fmt(res['lmpc']['decode_tok_s'])} | "
            f"{_fmt(res['llama.cpp']['decode_tok_s'])} | {_ratio(q['decode_tok_s'])} | "
            f"{_fmt(res['lmpc']['ttft_cached_ms'])} | {_fmt(res['llama.cpp']['ttft_cached_ms'])} | "
            f"{_ratio(q['ttft_cached_ms'])} | {v['peak_rss_mb']['lmpc']:.0f} | {v['peak_rss_mb']['llama.cpp']:.0f} |")
    if "d" in r and "game_frames" in r["d"]:
        rows += ["", f"The game's frames in (d) (a fixed {s['game_ms']:.0f} ms of work on an idle core, "
                     f"{s['game_fps']:.0f} per second): how long that work took",
                 "", "| while | frames | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
        for name, g in r["d"]["game_frames"].items():
            if g["frames"]:
                rows.append(f"| {name} {'decodes' if name != 'game alone' else ''} | {g['frames']} | "
                            f"{g['p50_ms']:.1f} | {g['p99_ms']:.1f} | {g['max_ms']:.1f} |")
    rows += ["", "Both decode the same number of tokens with no early stop. The bundle carries Orlando's tuned "
             "weights and the GGUF the base model's: the same architecture and size, so the same work per token."]
    return "\n".join(rows) + "\n"


def _changed(regime: str) -> str:
    return {"a": "none", "b": "lmpc: spinning on", "c": "llama.cpp: OMP_WAIT_POLICY=PASSIVE",
            "d": "none; a game process beside them"}[regime]


def _fmt(v: dict) -> str:
    return f"{v['median']:.1f} [{v['min']:.1f}–{v['max']:.1f}]"


def _ratio(q: dict) -> str:
    """Times as fast as llama.cpp; bold where we are behind."""
    text = f"{q['median']:.2f}× [{q['min']:.2f}–{q['max']:.2f}]"
    return f"**{text}**" if q["median"] < 1 else text


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("child", "game"):
        if sys.argv[1] == "child":
            child(sys.argv[2], sys.argv[3])
        else:
            game(sys.argv[2], int(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.regimes", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--regimes", type=lambda s: list(s), default=list(REGIMES), help="e.g. abcd")
    p.add_argument("--model-cache", type=Path, default=REPO / "build" / "cache")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    report = run(args)
    save(args.out, "regimes", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
