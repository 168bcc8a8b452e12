"""Which of a sheet's fields matter most to an untuned NPC? Each field `lmpc check` advises, left out.

    python -m benchmarks.advice examples/characters/marta_greyhand.toml --out benchmarks/results/advice-marta

What a writer who imports a character card has: the base model, the long sheet prompt, the sheet's
statements as memories, no drills. For the whole sheet, and for the sheet with each group of fields of
`lmpc_runtime.sheet.advice` emptied, a bundle is built on the cached base model and answers the sheet's
persona test greedily and with each seed. Every variant is scored against the whole sheet (its people
are known names, its facts the keys). The drop in key facts when a group is left out is what writing
it is worth to an untuned NPC (docs/authoring.md says what was found). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from lmpc_export.build import default_cache_dir, prepare_model, write_bundle
from lmpc_export.embedder import prepare_embedder
from lmpc_export.evaluate import answer_side_by_side
from lmpc_export.persona_test import (
    GREEDY, PersonaTestScorer, conversation_rows, load_persona_test, persona_test_file_for, summarise,
)
from lmpc_export.checkpoint import base_gguf
from lmpc_runtime import SamplingConfig, load_sheet
from lmpc_runtime.sheet import CharacterSheet

# Each group of `advice()` (by the field its advice starts with) and how to leave it out.
GROUPS: dict[str, Callable[[CharacterSheet], CharacterSheet]] = {
    "facts": lambda s: dataclasses.replace(s, facts=()),
    "examples": lambda s: dataclasses.replace(s, examples=()),
    "title and summary": lambda s: dataclasses.replace(s, title="", summary=""),
    "world.name and world.description": lambda s: dataclasses.replace(
        s, world=dataclasses.replace(s.world, name="", description="")),
    "objectives": lambda s: dataclasses.replace(s, objectives=()),
    "values": lambda s: dataclasses.replace(s, values=()),
    "opinions": lambda s: dataclasses.replace(s, opinions={}),
    "speech_style": lambda s: dataclasses.replace(s, speech_style=""),
    "world.important_people": lambda s: dataclasses.replace(
        s, world=dataclasses.replace(s.world, important_people=(), marginalised_important_people=())),
    "world.political_order, world.powers, world.marginalised_groups": lambda s: dataclasses.replace(
        s, world=dataclasses.replace(s.world, political_order="", powers="", marginalised_groups="")),
    "backstory": lambda s: dataclasses.replace(s, backstory=""),
    "alignment": lambda s: dataclasses.replace(s, alignment=""),
}
WHOLE = "the whole sheet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sheet", type=Path)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="sampled runs besides the greedy one")
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), help="which groups to leave out (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args(argv)
    sheet = load_sheet(args.sheet)
    questions = load_persona_test(persona_test_file_for(args.sheet), sheet.name)
    scorer = PersonaTestScorer(sheet, questions)
    rows = conversation_rows(questions)
    last = {q: len(questions[q].lines) - 1 for q in range(len(questions))}
    cache = default_cache_dir()
    entry = prepare_model(base_gguf(), cache, log=lambda _: None)
    embedder = prepare_embedder(cache, log=lambda _: None)
    sampling = SamplingConfig()
    runs = {GREEDY: (0, dataclasses.replace(sampling, temperature=0.0), None),
            **{str(seed): (seed, sampling, None) for seed in args.seeds}}
    results = {}
    with tempfile.TemporaryDirectory(prefix="lmpc-advice-") as work:
        for name in [WHOLE, *args.groups]:
            variant = sheet if name == WHOLE else GROUPS[name](sheet)
            bundle = write_bundle(variant, entry, embedder, Path(work) / "variant.lmpc", sampling=sampling)
            answers = answer_side_by_side(bundle, rows, runs)
            scored = [scorer.score(a.conversation, run, a.text, a.finish)
                      for run, replies in answers.items() for a in replies if a.turn == last[a.conversation]]
            results[name] = summarise(questions, scored)
            shutil.rmtree(bundle)
            print(f"{name}: key facts {results[name]['key_facts']:.1%}", file=sys.stderr)
    whole = results[WHOLE]["key_facts"]
    ranking = sorted(args.groups, key=lambda g: results[g]["key_facts"] - whole)
    report = {"sheet": str(args.sheet), "seeds": args.seeds, "questions": len(questions), "results": results,
              "ranking": ranking}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    return 0


def markdown(report: dict) -> str:
    results, whole = report["results"], report["results"][WHOLE]
    runs = " and ".join(["greedy", *(f"seed {s}" for s in report["seeds"])])
    lines = [f"# What each field of {report['sheet']} is worth to an untuned NPC", "",
             f"The base model with the sheet prompt, {report['questions']} persona-test questions, {runs}; each "
             "row leaves one group of fields out (`python -m benchmarks.advice`).", "",
             "| left out | key facts | change | invented names | assistant speak |", "|---|---:|---:|---:|---:|",
             f"| nothing ({WHOLE}) | {whole['key_facts']:.1%} | | {whole['invented_name']:.1%} | "
             f"{whole['assistant_speak']:.1%} |"]
    for group in report["ranking"]:
        r = results[group]
        lines.append(f"| {group} | {r['key_facts']:.1%} | {100 * (r['key_facts'] - whole['key_facts']):+.1f} | "
                     f"{r['invented_name']:.1%} | {r['assistant_speak']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
