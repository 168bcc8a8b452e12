"""Peak RSS and load time of a fresh process with one model loaded and talking. `measure` starts this
module as the child; each side imports only what it needs, so none pays for another's libraries.

    python -m benchmarks.rss_child ours BUNDLE < job.json
    python -m benchmarks.rss_child llama GGUF < job.json
    python -m benchmarks.rss_child genai MODEL_DIR < job.json
    python -m benchmarks.rss_child transformers CHECKPOINT < job.json

job.json: {"threads": 2, "new_tokens": 100, "lines": [player line, ...], "prompts": [[token ids], ...]}.
Ours talks through the whole runtime as a game does (`Runtime.load_npc`, `say`, `tick`: the segments);
the peers evaluate the same prompts (persona + line, as token ids) and decode greedily. The child prints
one JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(side: str, path: Path, job: dict) -> dict:
    """Run one side in a fresh process; its numbers, or why it failed."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.rss_child", side, str(path)], input=json.dumps(job),
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return {"status": "failed", "reason": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return {"status": "ok", **json.loads(done.stdout)}


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not getrusage's ru_maxrss: on Linux a child inherits its parent's value
    across fork and exec, so a child of a big harness would report the harness's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def ours(bundle: str, job: dict) -> dict:
    from lmpc_runtime import DONE, Runtime, SamplingConfig

    with Runtime(threads=job["threads"], seed=1) as rt:
        start = time.perf_counter()
        npc = rt.load_npc(bundle, sampling=SamplingConfig(max_tokens=job["new_tokens"]))
        load_s, loaded_only = time.perf_counter() - start, peak_rss_mb()
        for line in job["lines"]:  # as a game talks: say, then tick until the reply is done
            rt.say(npc, line)
            while not any(event.kind == DONE for event in rt.poll()):
                rt.tick(budget_ms=50)
        return {"peak_rss_mb": peak_rss_mb(), "after_load_mb": loaded_only, "load_s": load_s,
                "context_tokens": npc.context_tokens}


def peer(side: str, path: str, job: dict) -> dict:
    from benchmarks.peers import GenAI, Llama, Transformers

    start = time.perf_counter()
    system = {"llama": lambda: Llama("llama.cpp", Path(path), job["threads"]),
              "genai": lambda: GenAI("onnxruntime-genai", Path(path), job["threads"]),
              "transformers": lambda: Transformers(Path(path), job["threads"])}[side]()
    load_s, loaded_only = time.perf_counter() - start, peak_rss_mb()
    for prompt in job["prompts"]:
        system.decode(prompt, job["new_tokens"])
    return {"peak_rss_mb": peak_rss_mb(), "after_load_mb": loaded_only, "load_s": load_s}


if __name__ == "__main__":
    side, path = sys.argv[1], sys.argv[2]
    job = json.load(sys.stdin)
    print(json.dumps(ours(path, job) if side == "ours" else peer(side, path, job)))
