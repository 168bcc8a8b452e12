"""benchmarks/RESULTS.md from a harness run's raw results: per profile and thread count, every system's
numbers, LMPC's ratio against each peer, batched NPCs, the 60 FPS loop, memory; then the plots."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from . import machine, memory, regimes

LABELS = {
    "decode_npc_tok_s": "decode tok/s, NPC prompt",
    "decode_short_tok_s": "decode tok/s, short prompt",
    "ttft_cold_ms": "first token, persona not cached (ms)",
    "ttft_cached_ms": "first token, persona cached (ms)",
}


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n != 1 else "")


def _fmt(v: dict | None, digits: int = 1) -> str:
    if not v:
        return "–"
    return f"{v['median']:.{digits}f} [{v['min']:.{digits}f}–{v['max']:.{digits}f}]"


def _ahead(v: dict) -> str:
    """A 'times as fast' ratio, bold where LMPC is behind (below 1)."""
    text = f"{v['median']:.2f}× [{v['min']:.2f}–{v['max']:.2f}]"
    return f"**{text}**" if v["median"] < 1 else text


def _systems_table(run: dict) -> list[str]:
    rows = ["| system | " + " | ".join(LABELS.values()) + " | load (s) |",
            "|---" * (len(LABELS) + 2) + "|"]
    for name, status in run["systems"].items():
        if status["status"] != "ok":
            rows.append(f"| {name} | skipped: {status['reason']} |" + " |" * len(LABELS))
            continue
        values = run["results"][name]
        rows.append(f"| {name} | " + " | ".join(_fmt(values[key]) for key in LABELS) + f" | {status['load_s']:.2f} |")
    return rows


def _ratio_table(run: dict) -> list[str]:
    if not run["ratios"]:
        return ["No peer ran, so there are no ratios."]
    rows = ["LMPC's speed against each peer, per rep (the two ran back to back), median [range]: "
            "decode as tok/s ÷ tok/s, first token as the peer's ms ÷ ours. Above 1: LMPC ahead; "
            "**bold**: LMPC behind.", "",
            "| LMPC vs | " + " | ".join(LABELS.values()) + " | greedy tokens equal |", "|---" * (len(LABELS) + 2) + "|"]
    for peer, by_measure in run["ratios"].items():
        agree = run["greedy_agreement"].get(peer)
        rows.append(f"| {peer} | " + " | ".join(_ahead(by_measure[key]) for key in LABELS) +
                    f" | {agree} of {run['greedy_tokens']} |")
    return rows


def _batched_table(run: dict) -> list[str]:
    best = max((v["decode_npc_tok_s"]["median"] for name, v in run["results"].items() if name != "lmpc"),
               default=None)
    rows = ["| NPCs decoding together | aggregate tok/s | × best peer's single stream |", "|---|---|---|"]
    for n, v in run["batched_aggregate_tok_s"].items():
        rows.append(f"| {n} | {_fmt(v)} | {v['median'] / best:.2f}× |" if best else f"| {n} | {_fmt(v)} | – |")
    return rows


def _frames_table(frames: dict) -> list[str]:
    on, off, c = frames["runtime_on"], frames["runtime_off"], frames["config"]
    ttft = ", ".join(f"{t:.0f}" for t in on["focus_first_token_ms"]) or "none"
    trio = "{p50:.2f} / {p99:.2f} / {max:.2f}"
    return [
        f"{c['npcs']} NPCs (one the player talks to, the rest chatting), {c['budget_ms']} ms budget per frame, "
        f"{c['game_ms']} ms of game work per frame, {c['frames']} frames.", "",
        "| measure | value |", "|---|---|",
        f"| time in tick(), p50 / p99 / max (ms) | {trio.format(**on['tick_ms'])} |",
        f"| tick overrun past the budget, p99 / max (ms) | {on['tick_over_budget_ms']['p99']:.2f} / "
        f"{on['tick_over_budget_ms']['max']:.2f} |",
        f"| game frame time, runtime off: p50 / p99 / max (ms) | {trio.format(**off['frame_ms'])} |",
        f"| game frame time, runtime on: p50 / p99 / max (ms) | {trio.format(**on['frame_ms'])} |",
        f"| focused NPC, say → first token (ms) | {ttft} |",
        f"| focused NPC tok/s on the budget | {on['focus_tok_s']:.1f} |",
        f"| tokens by NPC | {', '.join(f'{k}: {v}' for k, v in sorted(on['tokens_by_npc'].items()))} |",
    ]


def _rss_table(run: dict) -> list[str]:
    rows = ["| system (fresh process, loaded and talking) | peak RSS (MB) | after load (MB) | load (s) |",
            "|---|---|---|---|"]
    for name, v in run["rss"].items():
        if v["status"] != "ok":
            rows.append(f"| {name} | failed: {v['reason']} | | |")
        else:
            rows.append(f"| {name} | {v['peak_rss_mb']:.0f} | {v['after_load_mb']:.0f} | {v['load_s']:.2f} |")
    ceiling = run["rss_ceiling"]
    if ceiling["limit_mb"] and ceiling["lmpc_peak_mb"] is not None:
        verdict = "within" if ceiling["within"] else "**over**"
        rows += ["", f"RAM ceiling {ceiling['limit_mb']:.0f} MB: LMPC peaks at {ceiling['lmpc_peak_mb']:.0f} MB, "
                     f"{verdict} it."]
    return rows


def headline(results: dict) -> list[str]:
    """The first run's key ratios in a few lines, for the top of the report (and the README)."""
    if not results["profiles"]:
        return []
    entry = results["profiles"][0]
    run = entry["runs"][0]
    ours = run["results"]["lmpc"]
    lines = [f"- {entry['profile']['name']}, {_threads(run['threads'])}: LMPC decodes "
             f"{ours['decode_npc_tok_s']['median']:.0f} tok/s on the NPC prompt, first token "
             f"{ours['ttft_cached_ms']['median']:.0f} ms with the persona cached "
             f"({ours['ttft_cold_ms']['median']:.0f} ms cold)."]
    for peer, by in run["ratios"].items():
        lines.append(f"- vs {peer}: decode {_ahead(by['decode_npc_tok_s'])}, first token cached "
                     f"{_ahead(by['ttft_cached_ms'])}, cold {_ahead(by['ttft_cold_ms'])}.")
    eight = run["batched_aggregate_tok_s"].get("8") or run["batched_aggregate_tok_s"].get(8)
    if eight:
        lines.append(f"- 8 NPCs decoding together: {eight['median']:.0f} tok/s in aggregate.")
    return lines


def _wait_policy(policy: str | None) -> str:
    if policy is None:
        return ("OpenMP threads (llama.cpp, torch) wait their default way: spinning a while between steps; ours "
                "do not spin (a game's default).")
    return f"OpenMP threads (llama.cpp, torch) run with OMP_WAIT_POLICY={policy}; ours do not spin."


def regimes_headline(report: dict | None) -> list[str]:
    """Decode speed against llama.cpp in each regime, where we lose said first."""
    if not report:
        return []
    lines = []
    for key, v in report["regimes"].items():
        q = v["ratios"]["decode_tok_s"]
        verdict = "slower than" if q["median"] < 0.95 else "faster than" if q["median"] > 1.05 else "level with"
        lines.append(f"- ({key}) {regimes.REGIMES[key]}: LMPC decodes **{verdict} llama.cpp Q8_0**, "
                     f"{_ahead(q)} ({v['results']['lmpc']['decode_tok_s']['median']:.0f} vs "
                     f"{v['results']['llama.cpp']['decode_tok_s']['median']:.0f} tok/s); first token with the "
                     f"persona cached {_ahead(v['ratios']['ttft_cached_ms'])}; peak RSS "
                     f"{v['peak_rss_mb']['lmpc']:.0f} vs {v['peak_rss_mb']['llama.cpp']:.0f} MB.")
    return lines


def markdown(results: dict, plots: list[Path], relative_to: Path) -> str:
    m, c, p = results["machine"], results["config"], results["prompt"]
    out = [
        "# LMPC benchmark results",
        "",
        f"Generated by `python -m benchmarks` ({datetime.date.today().isoformat()}); raw numbers in "
        "`benchmarks/results/results.json`. Regenerate with `make bench` (see benchmarks/README.md).",
        "",
        f"**Machine:** {machine.summary_line(m)}. Libraries: "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + ".",
        "",
        f"**Method:** the same token ids for every system (persona {p['persona_tokens']} tokens + player turn "
        f"{p['line_tokens']}; short prompt {p['short_tokens']}), greedy, {c['new_tokens']} new tokens with no "
        f"early stop; {c['reps']} reps after {c['warmup']} warm-up, systems taking turns in a rotating order. "
        "Median [min–max]. The machine is shared with other jobs, so absolute numbers drift; the same-run "
        "ratios are what to read.",
        "",
        f"**Peers' settings (the per-profile tables):** {_wait_policy(results.get('omp_wait_policy'))} llama.cpp "
        "runs with its extra buffer types " + ("on." if results.get("llama_extra_buffers") else "off (its AMX "
        "matmul crashes on some VMs), which also turns off its repacked Q4/Q8 kernels: llama.cpp may be faster "
        "elsewhere.") + " onnxruntime-genai keeps its own session defaults (its threads spin). Which regime "
        "a system runs in decides who is faster: the four-regime table below runs each system in its own process.",
        "",
        "## Headline",
        "",
        *regimes_headline(results.get("regimes")),
        *headline(results),
    ]
    if results.get("regimes"):
        out += ["", "## " + regimes.markdown(results["regimes"]).lstrip("# ").rstrip()]
    for entry in results["profiles"]:
        prof = entry["profile"]
        out += ["", f"## Profile `{prof['name']}`: {prof['summary']}"]
        if prof["status"] != "run":
            out += ["", f"Not measured as specified ({prof['provider']}, {prof['device_memory_mb']:.0f} MB device "
                        f"memory): {prof['reason']}."]
        for run in entry["runs"]:
            heading = f"### {_threads(run['threads'])}"
            if run["threads"] > (m["cores_visible"] or 0):
                heading += f" (more than the {m['cores_visible']} cores visible: oversubscribed)"
            if run["profile"] != prof["name"]:
                out += ["", heading, "", f"The CPU fallback: the `{run['profile']}` run at {_threads(run['threads'])} above."]
                continue
            out += ["", heading, "", *_systems_table(run), "", *_ratio_table(run), "", *_batched_table(run),
                    "", "#### 60 FPS game loop (null host)", "", *_frames_table(run["frames"]),
                    "", "#### Memory footprint and load time", "", *_rss_table(run)]
    if "memory" in results:
        out += ["", "## Memory: embedder, retrieval, save games", "", memory.markdown(results["memory"]).rstrip()]
    out += ["", "## Plots", ""]
    if plots:
        out += [f"![{path.stem.replace('_', ' ')}]({os.path.relpath(path, relative_to)})" for path in plots]
    else:
        out.append("Not drawn: matplotlib is not installed (`pip install '.[bench]'`).")
    return "\n".join(out) + "\n"
