"""How relevant must a memory be to earn its place in the note? Measured on the writer's drills.

    python -m benchmarks.recall_threshold build/orlando_marlo.lmpc examples/characters/orlando_marlo.toml

The knowledge file labels every question with the sheet statements its answers state (`covers`), which
makes ~1,000 labelled questions: for each, retrieval is right to recall those statements and wrong to
recall any other (questions that cover only behaviour, "are you a bot?", should recall nothing). With
the bundle's own embedder and its indexed statements, this reports, for each similarity floor and
number of memories, the precision and recall of what retrieval puts in the note, and the F1 and
F0.5 (precision counted double: a 135M model is led astray by an irrelevant note more than it is helped
by a relevant one) of each setting. The best F0.5 is the floor a bundle should use.
Writes benchmarks/results/recall_threshold.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lmpc_export.knowledge import knowledge_file_for, load_knowledge
from lmpc_export.memories import sheet_statements
from lmpc_runtime import read_bundle
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.session import EngineOptions
from lmpc_runtime.sheet import load_sheet

RESULTS = Path(__file__).parent / "results"
FLOORS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
KS = (1, 2, 3, 5)


def ref_of(source: str, sheet) -> str | None:
    """The knowledge file's reference for an indexed statement's source ("facts[3]" -> "fact:4")."""
    kind, _, rest = source.partition("[")
    if source.startswith("opinions."):
        return "opinion:" + source.removeprefix("opinions.")
    if kind in ("facts", "values", "objectives"):
        return f"{kind[:-1]}:{int(rest.rstrip(']')) + 1}"
    if kind.startswith("world.") and "important_people" in kind:
        people = getattr(sheet.world, kind.removeprefix("world."))
        return "person:" + people[int(rest.rstrip("]"))].name
    return None


def measure(bundle_path: Path, sheet_path: Path) -> dict:
    bundle = read_bundle(bundle_path)
    sheet = load_sheet(sheet_path)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder,
                        EngineOptions(threads=2))
    statements = sheet_statements(sheet, "")
    refs = [ref_of(source, sheet) for _, _, source in statements]
    questions = [(q, set(t.covers)) for t in load_knowledge(knowledge_file_for(sheet_path), sheet) for q in t.questions]
    memory = np.asarray(embedder.embed([text for text, _, _ in statements]))  # [S, dim], unit length
    asked = np.asarray(embedder.embed([q for q, _ in questions]))  # [Q, dim]
    cosines = asked @ memory.T  # [Q, S]
    relevant = np.array([[ref in covers for ref in refs] for _, covers in questions])  # [Q, S]
    rows = []
    for k in KS:
        top = np.argsort(-cosines, axis=1)[:, :k]  # [Q, k]
        for floor in FLOORS:
            picked = np.zeros_like(relevant)
            np.put_along_axis(picked, top, np.take_along_axis(cosines, top, axis=1) >= floor, axis=1)
            hits = (picked & relevant).sum()
            precision = hits / max(picked.sum(), 1)
            recall = hits / max(relevant.sum(), 1)
            f = lambda beta: (1 + beta ** 2) * precision * recall / max(beta ** 2 * precision + recall, 1e-9)  # noqa: E731
            rows.append({"k": k, "floor": floor, "precision": precision, "recall": recall, "f1": f(1.0),
                         "f05": f(0.5), "mean_recalled": picked.sum() / len(questions),
                         "empty_note": float((picked.sum(axis=1) == 0).mean())})
    best = max(rows, key=lambda r: r["f05"])
    return {"bundle": bundle.name, "questions": len(questions), "statements": len(statements),
            "rows": rows, "best_f05": best}


def markdown(result: dict) -> str:
    best = result["best_f05"]
    lines = [f"# Recall floor for {result['bundle']}", "",
             f"{result['questions']} drill questions labelled with the statements they ask about, "
             f"{result['statements']} indexed statements. Best F0.5: k = {best['k']}, floor {best['floor']}.", "",
             "| k | floor | precision | recall | F1 | F0.5 | memories per note | empty notes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['k']} | {r['floor']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | "
              f"{r['f05']:.2f} | {r['mean_recalled']:.1f} | {r['empty_note']:.0%} |" for r in result["rows"]]
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
