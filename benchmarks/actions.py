"""Typed actions and emotions (issue 20): decode speed with the tail automaton against the same NPC without.

    .venv/bin/python -m benchmarks.actions [BUNDLE] [--reps 3]

BUNDLE (default build/orlando_marlo.lmpc) must declare actions or emotions. Its peer is the same bundle
with them taken out of the sheet in its manifest (the weights are hard links): the same model, prompt
and sampler, and no automaton. Each contender answers the same lines with the bundle's sampler and one
seed, in a fresh process (`Runtime(segmented=False)`, 2 threads, no spinning: what `lmpc ask` runs),
taking turns rep by rep (PERF.md). Reported: decoding tokens per second over all replies (a reply's steps
after its first token, over the time they took; the tail's steps count as tokens), tokens and seconds
per reply (the emotion costs a few steps a reply), and the actions and emotions the replies carried.
Results: results/actions.json and actions.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .stats import ratios, save, spread

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LINES = ("Good evening. Who might you be?", "What do you think of the Order of Solar Truth?",
         "I served at Kestrel Ford too. I want to help you find your father's accounts.",
         "Then trust me with his letter; I know the cellars of the Ashward.",
         "You are a fool and a coward, Marlo.", "Tell me about your sister.")
SEED = 1


def child(bundle: str) -> dict:
    """Answer LINES in this (fresh) process; timings from each reply's own clock."""
    from lmpc_runtime import ACTION, EMOTION, Runtime

    with Runtime(seed=SEED, segmented=False) as rt:
        npc = rt.load_npc(bundle, seed=SEED)
        steps = decode_s = reply_s = 0.0
        tokens, tags = [], []
        for line in LINES:
            reply = npc.start_reply(line)
            events = list(npc.run_reply(reply))
            npc.end_reply(reply)
            t = reply.times
            steps += len(reply.generated) - 1
            decode_s += t.finished - t.first_token
            reply_s += t.finished - t.created
            tokens.append(len(reply.generated))
            tags += [f"{e.kind} {e.text}" for e in events if e.kind in (ACTION, EMOTION)]
    return {"tokens_per_s": steps / decode_s, "seconds_per_reply": reply_s / len(LINES),
            "tokens_per_reply": sum(tokens) / len(tokens), "tags": tags}


def without_tail(bundle: Path, where: Path) -> Path:
    """A copy of `bundle` whose sheet declares no actions or emotions (files hard-linked, manifest rewritten)."""
    import msgpack

    from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest

    out = where / bundle.name
    shutil.copytree(bundle, out, copy_function=os.link)
    manifest = msgpack.unpackb((bundle / MANIFEST_NAME).read_bytes())
    manifest["character"]["actions"], manifest["character"]["emotions"] = [], []
    (out / MANIFEST_NAME).unlink()  # a link to the original's: replaced, not written through
    (out / MANIFEST_NAME).write_bytes(pack_manifest(manifest))
    return out


def run_child(bundle: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.actions", "--child", str(bundle)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{bundle}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def measure(bundle: Path, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {"with actions and emotions": bundle, "without (peer)": without_tail(bundle, Path(tmp))}
        runs: dict[str, list[dict]] = {label: [] for label in contenders}
        for _ in range(reps):
            for label, path in contenders.items():
                runs[label].append(run_child(path))
    return runs


def summarise(runs: dict[str, list[dict]]) -> dict:
    ours, peer = runs["with actions and emotions"], runs["without (peer)"]

    def values(rows: list[dict], key: str) -> list[float]:
        return [row[key] for row in rows]

    return {
        label: {key: spread(values(rows, key)) for key in ("tokens_per_s", "seconds_per_reply", "tokens_per_reply")}
        for label, rows in runs.items()
    } | {
        "decode_speed_ratio": ratios(values(ours, "tokens_per_s"), values(peer, "tokens_per_s")),
        "reply_time_ratio": ratios(values(ours, "seconds_per_reply"), values(peer, "seconds_per_reply")),
        "tags": ours[0]["tags"],
    }


def markdown(report: dict) -> str:
    s = report["summary"]

    def cell(d: dict, fmt: str) -> str:
        return f"{d['median']:{fmt}} [{d['min']:{fmt}}–{d['max']:{fmt}}]"

    lines = [f"# Actions and emotions: decoding with the tail automaton ({report['date']})", "",
             f"{report['machine']}. Bundle: {report['bundle']}; its peer is the same bundle with no actions or "
             f"emotions in its sheet. {report['reps']} reps, each contender a fresh process, in turns; median "
             f"[min–max]. Settings: the runtime's defaults (2 threads, no spinning, whole graph as `lmpc ask`), "
             f"the bundle's sampler, seed {SEED}, {len(LINES)} lines.", "",
             "| contender | decode tokens/s | tokens per reply | seconds per reply |", "|---|---|---|---|"]
    for label in ("with actions and emotions", "without (peer)"):
        row = s[label]
        lines.append(f"| {label} | {cell(row['tokens_per_s'], '.1f')} | {cell(row['tokens_per_reply'], '.1f')} | "
                     f"{cell(row['seconds_per_reply'], '.2f')} |")
    lines += ["", f"- Decode speed with the automaton against without: **{cell(s['decode_speed_ratio'], '.3f')}×** "
              "(target ≥ 0.95×).",
              f"- Time per reply: {cell(s['reply_time_ratio'], '.2f')}× (the emotion's few steps a reply).",
              "- What the replies carried (first rep): " + "; ".join(s["tags"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.actions", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", nargs="?", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    from .machine import describe, summary_line

    runs = measure(args.bundle, args.reps)
    machine = describe()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": summary_line(machine), "machine_details": machine,
              "reps": args.reps, "bundle": str(args.bundle), "runs": runs, "summary": summarise(runs)}
    save(args.out, "actions", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
