"""Ask held-out questions to one or more NPC bundles and score the answers for staying in character.

    python benchmarks/persona_eval.py examples/eval/orlando_questions.txt build/a.lmpc build/b.lmpc \
        --seeds 1 2 --out eval.md

Each question starts a fresh conversation (persona only), sampled with the bundle's own settings and
the given seeds. An answer is scored on:
- facts: the share of the question's key facts it mentions (each key is a set of alternatives);
- problems: the hygiene checks of `lmpc_export.hygiene` (assistant speak, slop, refusals, invented
  names, repetition, malformed) and a reply the runtime cut for repeating itself.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from lmpc_export.evaluate import answer
from lmpc_export.hygiene import Hygiene
from lmpc_runtime import read_bundle


@dataclass(frozen=True)
class Question:
    text: str
    keys: tuple[tuple[str, ...], ...]  # each key: alternatives, any of which counts

    def hits(self, answer: str) -> int:
        low = answer.lower()
        return sum(any(alt.lower() in low for alt in key) for key in self.keys)


def read_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, _, keys = line.partition("||")
        questions.append(Question(text.strip(), tuple(
            tuple(a.strip() for a in key.split("/") if a.strip()) for key in keys.split(";") if key.strip())))
    return questions


def evaluate(bundle: Path, questions: list[Question], seeds: list[int], temperature: float | None = None) -> list[dict]:
    """Answers to every question with every seed; `temperature` overrides the bundle's own."""
    hygiene = Hygiene(read_bundle(bundle).character)
    rows = []
    for a in answer(bundle, [(i, 0, "", q.text) for i, q in enumerate(questions)], seeds, temperature=temperature):
        q = questions[a.conversation]
        problems = hygiene.reply_problems(a.text, q.text)
        if a.finish == "repetition":
            problems.append("loop")
        rows.append({"seed": a.seed, "question": q.text, "answer": a.text, "finish": a.finish,
                     "facts": q.hits(a.text), "keys": len(q.keys), "problems": sorted(set(problems))})
    return rows


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    return {
        "answers": n,
        "facts": sum(r["facts"] for r in rows) / max(sum(r["keys"] for r in rows), 1),
        "clean": sum(not r["problems"] for r in rows) / n,
        **{p: sum(p in r["problems"] for r in rows) for p in
           ("assistant_speak", "slop", "refusal", "unknown_name", "repetition", "loop", "malformed")},
    }


def markdown(results: dict[str, list[dict]]) -> str:
    lines = ["| bundle | answers | key facts mentioned | answers with no problem | assistant speak | slop "
             "| refusal | invented names | repetition or loop | malformed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in results.items():
        s = summary(rows)
        lines.append(f"| {name} | {s['answers']} | {s['facts']:.0%} | {s['clean']:.0%} | "
                     f"{s['assistant_speak']} | {s['slop']} | {s['refusal']} | {s['unknown_name']} | "
                     f"{s['repetition'] + s['loop']} | {s['malformed']} |")
    for name, rows in results.items():
        lines += ["", f"## {name}", ""]
        for r in rows:
            flags = f" — {', '.join(r['problems'])}" if r["problems"] else ""
            lines.append(f"- (seed {r['seed']}) **{r['question']}** → {r['answer']} "
                         f"[{r['facts']}/{r['keys']} facts{flags}]")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", type=Path)
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[None],
                        help="sample at each of these temperatures instead of the bundle's own")
    parser.add_argument("--out", type=Path, help="write the Markdown report here (default: stdout)")
    args = parser.parse_args(argv)
    questions = read_questions(args.questions)
    results = {b.name + ("" if t is None else f" (temperature {t:g})"): evaluate(b, questions, args.seeds, t)
               for b in args.bundles for t in args.temperatures}
    text = markdown(results)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
