"""Our engine against llama.cpp on the same SmolLM2 weights, in the same run.

    .venv/bin/python -m benchmarks.engine [--bundle build/orlando_marlo.lmpc] [--reps 5]

Both sides get the same token ids (an NPC prompt: the bundle's persona and a 15-token player line;
and a short 40-odd-token prompt), the same number of threads, greedy decoding of a fixed number of
tokens (no early stop), and are measured alternately, rep after rep, after a warm-up. llama.cpp runs
SmolLM2 as Q8_0 requantised from the shipped GGUF, the peer of our int8 weights.

Measured: decode tok/s; time to first token with the persona not cached (whole prompt prefilled)
and cached (only the player's line); aggregate decode tok/s of 1, 2, 4 and 8 NPCs stepped together
in one forward pass; peak RSS of a fresh process with one NPC loaded and talking; and, with
--variants, the decode speed of each fused weight variant and of the reference engine. Results go to
benchmarks/results/engine.json and engine.md. Timings on shared machines drift by ±20 % minutes
apart: read the same-run ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lmpc_runtime import Runtime, read_bundle
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import EngineOptions, open_engine

from .llama_peer import LlamaPeer, q8_0_gguf, require_llama_cpp

REPO = Path(__file__).resolve().parents[1]
# 15 tokens of text, as the issue's time-to-first-token target specifies.
PLAYER_LINE = "What do you think of the High Priestess and her new tithe?"
SHORT_SYSTEM = "You are Ser Orlando Marlo, a knight of House Marlo. Answer in two sentences."


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


class Ours:
    """Our engine, driven with token ids and greedy argmax (no sampler), like the peer."""

    name = "lmpc"

    def __init__(self, bundle_path: Path, threads: int, model: tuple[Path, str] | None = None):
        """`model`: (an ONNX file, its layout) to time instead of the bundle's own model."""
        spec = read_bundle(bundle_path).model
        path = spec.file
        if model is not None:
            path, layout = model
            spec = dataclasses.replace(spec, file=path.name, layout=layout)
        self.engine = open_engine(str(bundle_path / path), spec, EngineOptions(threads=threads))

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        seq = self.engine.new_sequence()
        token = int(np.argmax(self._prefill(seq, prompt)))
        out = [token]
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(self.engine.extend(seq, [token])))
            out.append(token)
        return new_tokens / (time.perf_counter() - start), out

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        start = time.perf_counter()
        seq = self.engine.new_sequence()
        np.argmax(self._prefill(seq, persona + line))
        return (time.perf_counter() - start) * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        seq = self.engine.new_sequence(persona)  # at NPC load, or after the previous reply
        start = time.perf_counter()
        np.argmax(self.engine.extend(seq, line))
        return (time.perf_counter() - start) * 1000

    def batched(self, persona: list[int], lines: list[list[int]], steps: int) -> float:
        """Aggregate tok/s of len(lines) NPCs, each from the cached persona, decoding together."""
        seqs = [self.engine.new_sequence(persona) for _ in lines]
        tokens = [int(np.argmax(self.engine.extend(seq, line))) for seq, line in zip(seqs, lines)]
        start = time.perf_counter()
        for _ in range(steps):
            tokens = [int(t) for t in np.argmax(self.engine.step(seqs, tokens), axis=1)]
        return len(lines) * steps / (time.perf_counter() - start)

    def _prefill(self, seq, prompt: list[int]) -> np.ndarray:
        for start in range(0, len(prompt), 512):
            logits = self.engine.extend(seq, prompt[start:start + 512])
        return logits


class Llama:
    name = "llama.cpp"

    def __init__(self, gguf: Path, threads: int):
        self.peer = LlamaPeer(gguf, threads)

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        self.peer.rewind(0)
        token = int(np.argmax(self.peer.extend(prompt)))
        out = [token]
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(self.peer.extend([token])))
            out.append(token)
        return new_tokens / (time.perf_counter() - start), out

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        self.peer.rewind(0)
        start = time.perf_counter()
        np.argmax(self.peer.extend(persona + line))
        return (time.perf_counter() - start) * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        if self.peer.llm.input_ids[: len(persona)].tolist() != persona or len(self.peer) < len(persona):
            self.peer.rewind(0)
            self.peer.extend(persona)
        self.peer.rewind(len(persona))  # llama.cpp keeps the persona's cache, as llama-server's prompt cache
        start = time.perf_counter()
        np.argmax(self.peer.extend(line))
        return (time.perf_counter() - start) * 1000


def prompts(bundle_path: Path) -> dict:
    """Token ids of the persona (as the runtime builds it), the player's turn and the short prompt."""
    with Runtime(threads=1) as rt:
        npc = rt.load_npc(bundle_path)
        persona, chat = npc.persona_tokens, npc.chat
    line = chat.turn("user", PLAYER_LINE) + chat.open_turn()
    others = ["Who are you?", "Where is the capital?", "Do you trust the church?", "Tell me of your father.",
              "What is the Unblessed's fate?", "Will you be Chancellor?", "What is Solaris?"]
    return {"persona": persona, "line": line, "short": chat.turn("system", SHORT_SYSTEM) + line,
            "line_text_tokens": len(chat.encode_text(PLAYER_LINE)),
            "npc_lines": [line] + [chat.turn("user", t) + chat.open_turn() for t in others]}


def rss(side: str, path: Path, job: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.rss_child", side, str(path)], input=json.dumps(job),
                         capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout)


def run(args: argparse.Namespace) -> dict:
    require_llama_cpp()
    import llama_cpp

    from lmpc_export.checkpoint import base_gguf

    ids = prompts(args.bundle)
    persona, line = ids["persona"], ids["line"]
    gguf = q8_0_gguf(base_gguf(), args.model_cache / "bench" / "SmolLM2-135M-Instruct.Q8_0.gguf")
    ours, peer = Ours(args.bundle, args.threads), Llama(gguf, args.threads)
    measures = {
        "decode_short_tok_s": lambda side: side.decode(ids["short"], args.new_tokens)[0],
        "decode_npc_tok_s": lambda side: side.decode(persona + line, args.new_tokens)[0],
        "ttft_cold_ms": lambda side: side.ttft_cold(persona, line),
        "ttft_cached_ms": lambda side: side.ttft_cached(persona, line),
    }
    results = {name: {ours.name: [], peer.name: []} for name in measures}
    batch = {b: [] for b in args.batch_sizes}
    for rep in range(args.warmup + args.reps):
        sides = (ours, peer) if rep % 2 == 0 else (peer, ours)
        for name, measure in measures.items():
            for side in sides:
                value = measure(side)
                if rep >= args.warmup:
                    results[name][side.name].append(value)
        for b in args.batch_sizes:
            lines = [ids["npc_lines"][i % len(ids["npc_lines"])] for i in range(b)]
            value = ours.batched(persona, lines, args.batch_steps)
            if rep >= args.warmup:
                batch[b].append(value)
        print(f"rep {rep + 1}/{args.warmup + args.reps} done", file=sys.stderr, flush=True)

    _, our_tokens = ours.decode(persona + line, args.new_tokens)
    _, peer_tokens = peer.decode(persona + line, args.new_tokens)
    same = next((i for i, (a, b) in enumerate(zip(our_tokens, peer_tokens)) if a != b), len(our_tokens))
    summary = {name: {side: spread(v) for side, v in by_side.items()} for name, by_side in results.items()}
    for name, by_side in results.items():
        ratios = [a / b for a, b in zip(by_side[ours.name], by_side[peer.name])]
        summary[name]["ratio_lmpc_over_llama"] = spread(ratios)
    single = statistics.median(results["decode_npc_tok_s"][peer.name])
    summary["batched_aggregate_tok_s"] = {
        str(b): {**spread(v), "over_llama_single_stream": statistics.median(v) / single} for b, v in batch.items()}
    summary["greedy_tokens_identical_before_divergence"] = same
    del ours, peer

    job = {"threads": args.threads, "new_tokens": args.new_tokens, "lines": [PLAYER_LINE, "Who are you?",
                                                                             "Tell me of your father."],
           "prompts": [persona + line, persona + ids["npc_lines"][1], persona + ids["npc_lines"][4]]}
    summary["peak_rss_mb"] = {"lmpc": rss("ours", args.bundle, job), "llama.cpp": rss("llama", gguf, job)}
    if args.variants:
        summary["variants_decode_npc_tok_s"] = variants(args, persona + line)
    if args.quality:
        summary["agreement_with_checkpoint"] = quality(args, gguf)
    bundle = read_bundle(args.bundle, verify=False)
    return {
        "machine": {"cpu": cpu_name(), "threads": args.threads, "cores_visible": os.cpu_count(),
                    "onnxruntime": ort.__version__, "llama_cpp_python": llama_cpp.__version__,
                    "python": platform.python_version()},
        "setup": {"bundle": str(args.bundle), "layout": bundle.model.layout, "model_bytes": bundle.model_path.stat().st_size,
                  "llama_gguf": gguf.name, "llama_gguf_bytes": gguf.stat().st_size, "reps": args.reps,
                  "warmup": args.warmup, "new_tokens": args.new_tokens, "persona_tokens": len(persona),
                  "player_line": PLAYER_LINE, "player_line_text_tokens": ids["line_text_tokens"],
                  "player_turn_tokens": len(line), "short_prompt_tokens": len(ids["short"]),
                  "batch_steps": args.batch_steps},
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
        f"{s['player_turn_tokens']} tokens ({s['player_line_text_tokens']} of text); short prompt "
        f"{s['short_prompt_tokens']} tokens.",
        "",
        "| measure | lmpc | llama.cpp | lmpc / llama.cpp |",
        "|---|---|---|---|",
    ]
    labels = {"decode_short_tok_s": "decode tok/s, short prompt", "decode_npc_tok_s": "decode tok/s, NPC prompt",
              "ttft_cold_ms": "time to first token, persona not cached (ms)",
              "ttft_cached_ms": "time to first token, persona cached (ms)"}
    for key, label in labels.items():
        a, b, q = r[key]["lmpc"], r[key]["llama.cpp"], r[key]["ratio_lmpc_over_llama"]
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
                 f"{r['greedy_tokens_identical_before_divergence']} of {s['new_tokens'] + 1}."]
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
    p.add_argument("--model-cache", type=Path, default=REPO / "build" / "cache",
                   help="the export cache `make` uses (the Q8_0 GGUF and the variants go in its bench/)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "engine.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
