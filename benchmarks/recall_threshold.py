"""How relevant must a memory be to earn its place in the note? Measured on the writer's drills and on
the held-out persona test.

    python -m benchmarks.recall_threshold build/orlando_marlo.lmpc examples/characters/orlando_marlo.toml

The knowledge file labels every question with the sheet statements its answers state (`covers`), which
makes ~1,000 labelled questions: for each, retrieval is right to recall those statements and wrong to
recall any other (questions that cover only behaviour, "are you a bot?", should recall nothing). The
drill questions are also the statements' cues, so each is asked with its own cue left out
(`MemoryStore.cues_left_out`): a player's words are never exactly the writer's. This reports, for each
similarity floor and number of memories, the precision and recall of what retrieval puts in the note,
and the F1 and F0.5 (precision counted double: a 135M model is led astray by an irrelevant note more
than it is helped by a relevant one), with the bundle's own memories searched by the runtime's own store,
once with their cues and once without.

The persona test's questions are no drill's words at all. For each, "answer in note" is the share of
the facts its reply must state (`must`) that the system prompt and the recalled statements contain:
what the model could read rather than recall. Lorebook entries are left out of both measures.
Writes benchmarks/results/recall_threshold.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lmpc_export.knowledge import knowledge_file_for, load_knowledge
from lmpc_export.memories import statement_ref
from lmpc_export.persona_test import load_persona_test, persona_test_file_for
from lmpc_runtime import read_bundle
from lmpc_runtime.bundle import read_memories
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.store import MemoryStore
from lmpc_runtime.session import EngineOptions
from lmpc_runtime.sheet import load_sheet

RESULTS = Path(__file__).parent / "results"
FLOORS = (0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
KS = (1, 2, 3, 5)
DISCOUNTS = (0.0, 0.1, 0.15, 0.2)  # MemoryStore.cue_discount


def measure(bundle_path: Path, sheet_path: Path) -> dict:
    bundle = read_bundle(bundle_path)
    sheet = load_sheet(sheet_path)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder,
                        EngineOptions(threads=2))
    state = read_memories(bundle)
    drills = [(q, set(t.covers)) for t in load_knowledge(knowledge_file_for(sheet_path), sheet) for q in t.questions]
    tests = load_persona_test(persona_test_file_for(sheet_path), sheet.name)
    asked = embedder.embed([q for q, _ in drills])
    probed = embedder.embed([t.lines[-1] for t in tests])
    system = bundle.persona.system
    variants = {}
    plain = {k: v for k, v in state.items() if not k.startswith("cue_")}
    for name, columns, discount in [(f"with cues, discount {d}", state, d) for d in DISCOUNTS] + [
            ("without cues", plain, 0.0)]:
        store = MemoryStore(embedder.dim, cue_discount=discount)
        store.add_state(columns)
        drill_hits = []
        for (question, _), vector in zip(drills, asked):
            with store.cues_left_out(question):
                drill_hits.append(store.search(vector, max(KS), {}, min(FLOORS)))
        test_hits = [store.search(vector, max(KS), {}, min(FLOORS)) for vector in probed]
        rows = []
        for k in KS:
            for floor in FLOORS:
                def note(hits):
                    return [memory for memory, score in hits[:k] if score >= floor]
                picked = [[statement_ref(m.source, sheet) for m in note(hits)] for hits in drill_hits]
                hits = sum(ref in covers for refs, (_, covers) in zip(picked, drills) for ref in refs)
                relevant = sum(len(covers & {statement_ref(s, sheet) for s in state["sources"]}) for _, covers in drills)
                precision = hits / max(sum(map(len, picked)), 1)
                recall = hits / max(relevant, 1)
                f = lambda beta: (1 + beta ** 2) * precision * recall / max(beta ** 2 * precision + recall, 1e-9)  # noqa: E731
                readable = [" ".join([system] + [m.text for m in note(h)]) for h in test_hits]
                in_note = [np.mean([bool(p.search(text)) for p in t.must]) for t, text in zip(tests, readable)]
                rows.append({"k": k, "floor": floor, "precision": precision, "recall": recall, "f1": f(1.0),
                             "f05": f(0.5), "mean_recalled": sum(map(len, picked)) / len(drills),
                             "empty_note": float(np.mean([not p for p in picked])),
                             "answer_in_note": float(np.mean(in_note))})
        variants[name] = {"rows": rows, "best_f05": max(rows, key=lambda r: r["f05"])}
    prompt_only = np.mean([np.mean([bool(p.search(system)) for p in t.must]) for t in tests])
    return {"bundle": bundle.name, "questions": len(drills), "persona_test": len(tests),
            "statements": len(state["ids"]), "cues": len(state.get("cue_texts", [])),
            "answer_in_prompt_only": float(prompt_only), "variants": variants}


def markdown(result: dict) -> str:
    lines = [f"# Recall floor for {result['bundle']}", "",
             f"{result['questions']} drill questions labelled with the statements they ask about (each asked "
             f"with its own cue left out), {result['statements']} indexed statements, {result['cues']} cues; "
             f"{result['persona_test']} held-out persona-test questions, whose facts the system prompt "
             f"alone holds {result['answer_in_prompt_only']:.0%} of."]
    for name, variant in result["variants"].items():
        best = variant["best_f05"]
        lines += ["", f"## {name}", "", f"Best F0.5: k = {best['k']}, floor {best['floor']}.", "",
                  "| k | floor | precision | recall | F1 | F0.5 | memories per note | empty notes | answer in note |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['k']} | {r['floor']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | "
                  f"{r['f05']:.2f} | {r['mean_recalled']:.1f} | {r['empty_note']:.0%} | {r['answer_in_note']:.0%} |"
                  for r in variant["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("sheet", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.bundle, args.sheet)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recall_threshold.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "recall_threshold.md").write_text(markdown(result))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
