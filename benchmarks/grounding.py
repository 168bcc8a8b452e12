"""Does run-time grounding help a 135M character or distract it? The persona test, with each variant.

    python -m benchmarks.grounding build/orlando_marlo.lmpc --seeds 1 --out benchmarks/results/grounding

Variants of the same bundle, each answering the bundle's persona test greedily and with the seeds, all
side by side in one runtime (their steps batched): the bundle as it ships (`RecallConfig()`: 5 memories above
cosine 0.2, the writer's nearest exchange above 0.45 as an earlier turn, and the invented-name guard at
3, the follower of the writer's answer at 3), and each change from it alone: no exchange, a looser or
stricter exchange floor, two exchanges, the note off, a shorter and more precise note (3 above 0.3,
`benchmarks.recall_threshold`), the guard off, the follower off or stronger.
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from lmpc_export.bundle_files import PERSONA_TEST
from lmpc_export.evaluate import score_persona_test
from lmpc_export.persona_test import GREEDY, load_persona_test, summarise
from lmpc_runtime import RecallConfig, read_bundle

SHIPPED = {"name_penalty": 3.0, "follow_bonus": 3.0}
VARIANTS = {
    "as shipped: note of 5 above 0.2, nearest exchange above 0.45, name guard 3, follower 3": (SHIPPED, RecallConfig()),
    "no exchange": (SHIPPED, RecallConfig(exchanges=0)),
    "exchange above 0.3": (SHIPPED, RecallConfig(exchange_min_score=0.3)),
    "exchange above 0.6": (SHIPPED, RecallConfig(exchange_min_score=0.6)),
    "2 exchanges above 0.45": (SHIPPED, RecallConfig(exchanges=2)),
    "note off": (SHIPPED, RecallConfig(k=0)),
    "note and exchange off": (SHIPPED, RecallConfig(k=0, exchanges=0)),
    "note of 3 above 0.3": (SHIPPED, RecallConfig(k=3, min_score=0.3)),
    "name guard off": ({**SHIPPED, "name_penalty": 0.0}, RecallConfig()),
    "follower off": ({**SHIPPED, "follow_bonus": 0.0}, RecallConfig()),
    "follower at 5": ({**SHIPPED, "follow_bonus": 5.0}, RecallConfig()),
}
COLUMNS = ("key_facts", "key_facts_greedy", "key_facts_sampled", "wrong", "invented_name", "assistant_speak", "loop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="sampled runs besides the greedy one")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="which variants (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args(argv)
    bundle = read_bundle(args.bundle)
    questions = load_persona_test(args.bundle / PERSONA_TEST, bundle.character.name)
    runs = {}
    for name in args.variants:
        sampling, recall = VARIANTS[name]
        config = bundle.sampling.with_(**sampling)
        runs[f"{name}|{GREEDY}"] = (0, config.with_(temperature=0.0), recall)
        runs.update({f"{name}|{seed}": (seed, config, recall) for seed in args.seeds})
    scored = score_persona_test(bundle, questions, runs)
    results = {}
    for name in args.variants:
        mine = [replace(r, run=r.run.split("|")[1]) for r in scored if r.run.split("|")[0] == name]
        sampling, recall = VARIANTS[name]
        results[name] = {"sampling": sampling, "recall": asdict(recall), "summary": summarise(questions, mine)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"bundle": bundle.name, "seeds": args.seeds,
                                                         "results": results}, indent=1) + "\n")
    lines = [f"# Grounding variants: {bundle.name}", "",
             f"{len(questions)} persona-test questions, answered greedily"
             + (f" and with seeds {', '.join(map(str, args.seeds))}" if args.seeds else "") + ".", "",
             "| variant | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, r in results.items():
        s = r["summary"]
        lines.append(f"| {name} | " + " | ".join("–" if s[c] is None else f"{s[c]:.1%}" for c in COLUMNS) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
