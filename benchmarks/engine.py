"""Our engine against llama.cpp on the same SmolLM2 weights, in the same run.

    .venv/bin/python -m benchmarks.engine [--bundle build/orlando_marlo.lmpc] [--reps 5]

Both sides get the same token ids (an NPC prompt: the bundle's persona and a 15-token player line;
and a short 40-odd-token prompt), the same number of threads, greedy decoding of a fixed number of
tokens (no early stop), and are measured alternately, rep after rep, after a warm-up. llama.cpp runs
SmolLM2 as Q8_0 requantised from the shipped GGUF, the peer of our int8 weights.

In this process the two alternate, llama.cpp with its defaults; then (unless --no-regimes) the four
regimes of benchmarks.regimes run each system in a process of its own: as shipped, both spinning,
neither spinning, and beside a running game.

Measured: decode tok/s; time to first token with the persona not cached (whole prompt prefilled)
and cached (only the player's line); aggregate decode tok/s of 1, 2, 4 and 8 NPCs stepped together
in one forward pass; peak RSS of a fresh process with one NPC loaded and talking; and, with
--variants, the decode speed of each fused weight variant and of the reference engine. Results go to
benchmarks/results/engine.json and engine.md. Timings on shared machines drift by ±20 % minutes
apart: read the same-run ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from lmpc_runtime import Runtime, read_bundle
from lmpc_runtime.chat import ChatFormat

from . import machine, regimes, rss_child
from .llama_peer import LlamaPeer, q8_0_gguf, require_llama_cpp
from .peers import Llama, Ours
from .stats import ratios, save, spread

REPO = Path(__file__).resolve().parents[1]
# 15 tokens of text, as the issue's time-to-first-token target specifies.
PLAYER_LINE = "What do you think of the High Priestess and her new tithe?"
SHORT_SYSTEM = "You are Ser Orlando Marlo, a knight of House Marlo. Answer in two sentences."
# The lines a fresh process answers when its peak RSS is measured.
RSS_LINES = (PLAYER_LINE, "Who are you?", "Tell me of your father.")
OTHER_LINES = ("Who are you?", "Where is the capital?", "Do you trust the church?", "Tell me of your father.",
               "What is the Unblessed's fate?", "Will you be Chancellor?", "What is Solaris?")

# What is timed, each system in turn: decode speed (higher is better) and time to first token (lower).
MEASURES: dict[str, Callable] = {
    "decode_short_tok_s": lambda side, ids, n: side.decode(ids["short"], n)[0],
    "decode_npc_tok_s": lambda side, ids, n: side.decode(ids["persona"] + ids["line"], n)[0],
    "ttft_cold_ms": lambda side, ids, n: side.ttft_cold(ids["persona"], ids["line"]),
    "ttft_cached_ms": lambda side, ids, n: side.ttft_cached(ids["persona"], ids["line"]),
}


def prompts(bundle_path: Path) -> dict:
    """Token ids of the persona (as the runtime builds it), the player's turn and the short prompt."""
    with Runtime(threads=1) as rt:
        npc = rt.load_npc(bundle_path)
        persona, chat = npc.persona_tokens, npc.chat
    line = chat.turn("user", PLAYER_LINE) + chat.open_turn()
    return {"persona": persona, "line": line, "short": chat.turn("system", SHORT_SYSTEM) + line,
            "line_text_tokens": len(chat.encode_text(PLAYER_LINE)),
            "npc_lines": [line] + [chat.turn("user", t) + chat.open_turn() for t in OTHER_LINES]}


def prompt_sizes(ids: dict) -> dict:
    return {"persona_tokens": len(ids["persona"]), "line_tokens": len(ids["line"]),
            "line_text_tokens": ids["line_text_tokens"], "short_tokens": len(ids["short"])}


def compare(systems: list, ids: dict, new_tokens: int, reps: int, warmup: int,
            on_rep: Callable[[int], None] | None = None) -> dict:
    """Time every measure on every system, rep after rep; the systems take turns in an order that rotates
    each rep, so none always runs first (or right after the same neighbour). `systems[0]` is ours: the
    ratios are ours against each of the others, pairing reps that ran back to back."""
    runs = {side.name: {name: [] for name in MEASURES} for side in systems}
    for rep in range(warmup + reps):
        order = systems[rep % len(systems):] + systems[: rep % len(systems)]
        for name, measure in MEASURES.items():
            for side in order:
                value = measure(side, ids, new_tokens)
                if rep >= warmup:
                    runs[side.name][name].append(value)
        if on_rep is not None:
            on_rep(rep)
    ours, peers = systems[0], systems[1:]
    prompt = ids["persona"] + ids["line"]
    our_tokens = ours.decode(prompt, new_tokens)[1]
    agreement = {}
    for peer in peers:
        peer_tokens = peer.decode(prompt, new_tokens)[1]
        agreement[peer.name] = next((i for i, (a, b) in enumerate(zip(our_tokens, peer_tokens)) if a != b),
                                    min(len(our_tokens), len(peer_tokens)))
    return {
        "results": {side: {name: spread(v) for name, v in by_measure.items()} for side, by_measure in runs.items()},
        # Both read as "times as fast": tok/s ours over theirs, first-token time theirs over ours.
        "ratios": {peer.name: {name: ratios(runs[ours.name][name], runs[peer.name][name]) if name.endswith("tok_s")
                               else ratios(runs[peer.name][name], runs[ours.name][name]) for name in MEASURES}
                   for peer in peers},
        "greedy_agreement": agreement,
        "greedy_tokens": new_tokens + 1,
    }


def batched(ours: Ours, ids: dict, sizes: list[int], steps: int, reps: int) -> dict:
    """Aggregate decode tok/s of 1..N NPCs stepped together in one forward pass (ours only: the peers
    as run here serve one sequence at a time)."""
    runs = {b: [] for b in sizes}
    for _ in range(reps):
        for b in sizes:
            lines = [ids["npc_lines"][i % len(ids["npc_lines"])] for i in range(b)]
            runs[b].append(ours.batched(ids["persona"], lines, steps))
    return {str(b): spread(v) for b, v in runs.items()}


def run(args: argparse.Namespace) -> dict:
    llama_cpp = require_llama_cpp()
    from lmpc_export.checkpoint import base_gguf

    ids = prompts(args.bundle)
    gguf = q8_0_gguf(base_gguf(), args.model_cache / "bench" / "SmolLM2-135M-Instruct.Q8_0.gguf")
    ours, peer = Ours(args.bundle, args.threads), Llama("llama.cpp", gguf, args.threads)
    summary = compare([ours, peer], ids, args.new_tokens, args.reps, args.warmup,
                      on_rep=lambda rep: print(f"rep {rep + 1}/{args.warmup + args.reps} done", file=sys.stderr))
    single = statistics.median(summary["results"][peer.name]["decode_npc_tok_s"]["runs"])
    summary["batched_aggregate_tok_s"] = {
        b: {**v, "over_llama_single_stream": v["median"] / single}
        for b, v in batched(ours, ids, args.batch_sizes, args.batch_steps, args.reps).items()}
    del ours, peer

    job = {"threads": args.threads, "new_tokens": args.new_tokens, "lines": list(RSS_LINES),
           "prompts": [ids["persona"] + line for line in ids["npc_lines"][: len(RSS_LINES)]]}
    summary["peak_rss_mb"] = {"lmpc": rss_child.measure("ours", args.bundle, job),
                              "llama.cpp": rss_child.measure("llama", gguf, job)}
    if args.variants:
        summary["variants_decode_npc_tok_s"] = variants(args, ids["persona"] + ids["line"])
    if args.quality:
        summary["agreement_with_checkpoint"] = quality(args, gguf)
    if args.regimes:
        summary["regimes"] = regimes.run(argparse.Namespace(
            bundle=args.bundle, threads=args.threads, reps=args.reps, warmup=args.warmup, new_tokens=args.new_tokens,
            regimes=list(regimes.REGIMES), model_cache=args.model_cache, out=args.out))
    bundle = read_bundle(args.bundle, verify=False)
    info = machine.describe()
    return {
        "machine": {"cpu": info["cpu"], "threads": args.threads, "cores_visible": info["cores_visible"],
                    "onnxruntime": info["libraries"].get("onnxruntime"), "llama_cpp_python": llama_cpp.__version__,
                    "python": info["python"]},
        "setup": {"bundle": str(args.bundle), "layout": bundle.model.layout, "model_bytes": bundle.model_path.stat().st_size,
                  "llama_gguf": gguf.name, "llama_gguf_bytes": gguf.stat().st_size, "reps": args.reps,
                  "warmup": args.warmup, "new_tokens": args.new_tokens, **prompt_sizes(ids),
                  "player_line": PLAYER_LINE, "batch_steps": args.batch_steps},
        "parity": bundle.report.get("parity", []),
        "results": summary,
    }


def quality(args: argparse.Namespace, gguf: Path) -> dict:
    """Agreement with the float32 checkpoint of our shipped model and of llama.cpp's Q8_0, scored the way
    the export scores every variant (teacher-forced along the checkpoint's greedy continuations)."""
    from lmpc_export import parity
    from lmpc_export.checkpoint import load_checkpoint

    bundle = read_bundle(args.bundle, verify=False)
    chat = ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special)
    model, _ = load_checkpoint(args.model_cache / bundle.report["export"]["fingerprint"] / "checkpoint")
    references = parity.reference_continuations(model, chat, new_tokens=24, im_end=bundle.special.im_end)
    del model
    ours = parity.check_parity(bundle.report["export"]["variant"], bundle.model_path, bundle.model, chat, references)
    peer = LlamaPeer(gguf, args.threads)
    logits = []
    for prompt, continuation, _ in references:
        peer.rewind(0)
        logits.append(np.stack([peer.extend(prompt).copy()] + [peer.extend([tok]).copy() for tok in continuation]))
    peer.close()
    return {"lmpc": ours.to_dict(), "llama.cpp": parity.compare("Q8_0", logits, references).to_dict()}


def variants(args: argparse.Namespace, prompt: list[int]) -> dict:
    """Decode speed of every fused weight variant and of the reference engine, alternating."""
    from lmpc_export import fused_graph

    entry = args.model_cache / read_bundle(args.bundle, verify=False).report["export"]["fingerprint"]
    weights = fused_graph.load_weights(entry / "checkpoint")
    models = {}
    for name, variant in fused_graph.VARIANTS.items():
        path = args.model_cache / "bench" / f"fused.{name}.onnx"
        if not path.is_file():
            fused_graph.export_fused(entry / "checkpoint", path, variant, weights)
        models[f"fused {name}"] = (path, fused_graph.LAYOUT)
    if args.reference_model:
        models["reference engine, optimum int8"] = (args.reference_model.resolve(), "optimum-kv-concat")
    engines = {name: Ours(args.bundle, args.threads, model) for name, model in models.items()}
    runs = {name: [] for name in engines}
    for rep in range(args.warmup + args.reps):
        for name in list(engines)[:: 1 if rep % 2 == 0 else -1]:
            value = engines[name].decode(prompt, args.new_tokens)[0]
            if rep >= args.warmup:
                runs[name].append(value)
    return {name: spread(v) for name, v in runs.items()}


def markdown(report: dict) -> str:
    r, m, s = report["results"], report["machine"], report["setup"]
    rows = [
        "# Engine benchmark: lmpc vs llama.cpp, same weights, same run",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads ({m['cores_visible']} cores visible, shared); onnxruntime "
        f"{m['onnxruntime']}, llama-cpp-python {m['llama_cpp_python']}. Ours: `{s['layout']}` "
        f"({s['model_bytes'] / 1e6:.0f} MB); llama.cpp: {s['llama_gguf']} ({s['llama_gguf_bytes'] / 1e6:.0f} MB).",
        f"Greedy, {s['new_tokens']} new tokens, {s['reps']} alternating reps after {s['warmup']} warm-up; "
        f"medians with [min–max]. NPC prompt: persona {s['persona_tokens']} tokens + player turn "
        f"{s['line_tokens']} tokens ({s['line_text_tokens']} of text); short prompt "
        f"{s['short_tokens']} tokens. Ratios: times as fast as llama.cpp (tok/s ours ÷ theirs; "
        "first token their ms ÷ ours), per rep.",
        "",
        "| measure | lmpc | llama.cpp | lmpc vs llama.cpp |",
        "|---|---|---|---|",
    ]
    labels = {"decode_short_tok_s": "decode tok/s, short prompt", "decode_npc_tok_s": "decode tok/s, NPC prompt",
              "ttft_cold_ms": "time to first token, persona not cached (ms)",
              "ttft_cached_ms": "time to first token, persona cached (ms)"}
    for key, label in labels.items():
        a, b = r["results"]["lmpc"][key], r["results"]["llama.cpp"][key]
        q = r["ratios"]["llama.cpp"][key]
        rows.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {q['median']:.2f} [{q['min']:.2f}–{q['max']:.2f}] |")
    rows += ["", "| NPCs decoding together (one forward pass) | aggregate tok/s | over llama.cpp single stream |",
             "|---|---|---|"]
    for b, v in r["batched_aggregate_tok_s"].items():
        rows.append(f"| {b} | {_fmt(v)} | {v['over_llama_single_stream']:.2f}× |")
    rss = r["peak_rss_mb"]
    rows += ["", "| peak RSS, one NPC loaded and talking (fresh process) | MB | after load |", "|---|---|---|"]
    for side, v in rss.items():
        rows.append(f"| {side} | {v['peak_rss_mb']:.0f} | {v['after_load_mb']:.0f} |")
    if "variants_decode_npc_tok_s" in r:
        rows += ["", "| our weight variants, NPC prompt | decode tok/s |", "|---|---|"]
        for name, v in r["variants_decode_npc_tok_s"].items():
            rows.append(f"| {name} | {_fmt(v)} |")
    rows += ["", "| agreement with the float32 checkpoint | top-1 | max \\|Δlogit\\| | mean \\|Δlogit\\| | greedy match |",
             "|---|---|---|---|---|"]
    scored = [(f"ours, {p['variant']} (bundle report)", p) for p in report["parity"]]
    scored += [(f"{side}, this run", p) for side, p in r.get("agreement_with_checkpoint", {}).items()]
    for name, p in scored:
        rows.append(f"| {name} | {p['top1_agreement']:.3f} | {p['max_logit_diff']:.2f} | {p['mean_logit_diff']:.2f} | "
                    f"{p['greedy_match']:.3f} |")
    rows += ["", f"Greedy tokens identical (ours vs llama.cpp) before the first divergence: "
                 f"{r['greedy_agreement']['llama.cpp']} of {r['greedy_tokens']}."]
    if "regimes" in r:
        rows += ["", "#" + regimes.markdown(r["regimes"]).rstrip()]
    return "\n".join(rows) + "\n"


def _fmt(v: dict) -> str:
    return f"{v['median']:.1f} [{v['min']:.1f}–{v['max']:.1f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=100)
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--batch-steps", type=int, default=48)
    p.add_argument("--variants", action="store_true", help="also time each fused weight variant")
    p.add_argument("--reference-model", type=Path, help="an optimum-kv-concat model to time with --variants")
    p.add_argument("--quality", action="store_true",
                   help="also score ours and llama.cpp against the float32 checkpoint (needs the export extra)")
    p.add_argument("--no-regimes", dest="regimes", action="store_false",
                   help="skip the four regimes (each system in its own process: benchmarks.regimes)")
    p.add_argument("--model-cache", type=Path, default=REPO / "build" / "cache",
                   help="the export cache `make` uses (the Q8_0 GGUF and the variants go in its bench/)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    report = run(args)
    save(args.out, "engine", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
