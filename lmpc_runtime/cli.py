"""The `lmpc` command: build, inspect and talk to NPC bundles from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .actions import call_text
from .bundle import read_bundle
from .errors import InvalidArgumentError, LmpcError
from .reply import ACTION, DONE, EMOTION, TEXT
from .runtime import Runtime
from .sheet import advice, load_sheet


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _export_module(name: str, command: str, extra: str = "export"):
    """A module of the offline toolchain (`lmpc_export`), with a clear error when its extra is missing."""
    import importlib
    import os

    # The toolchain works offline: transformers, peft and datasets must not try to reach the model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module(f"lmpc_export.{name}")
    except ImportError as exc:
        raise LmpcError(f"`lmpc {command}` needs the {extra} extra (pip install 'lmpc[{extra}]'): "
                        f"{exc}") from exc


def _build(args: argparse.Namespace) -> int:
    build = _export_module("build", "build")
    out = build.build(Path(args.sheet), Path(args.output), source=Path(args.base) if args.base else None,
                      cache_dir=Path(args.cache_dir) if args.cache_dir else None, context_length=args.context,
                      layout=args.layout, adapter=Path(args.adapter) if args.adapter else None,
                      exchanges=args.exchanges, runtime_adapter=args.runtime_adapter, log=_log)
    print(out)
    return 0


def _new(args: argparse.Namespace) -> int:
    from .scaffold import new_sheet

    if not args.name.strip():
        raise InvalidArgumentError("the character needs a name")
    out = Path(args.output or args.name.strip().lower().replace(" ", "_") + ".toml")
    try:
        with open(out, "x", encoding="utf-8") as f:  # never over a writer's work
            f.write(new_sheet(args.name.strip()))
    except FileExistsError:
        raise InvalidArgumentError(f"{out} already exists; choose another file with -o") from None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(out)
    return 0


def _export_card(args: argparse.Namespace) -> int:
    import tomllib

    card = _export_module("card", "export-card")
    load_sheet(args.sheet)  # the same errors as `lmpc check` for a bad sheet
    with open(args.sheet, "rb") as f:
        data = tomllib.load(f)  # the writer's text as written, not as the runtime normalises it
    card.write_card(card.sheet_to_card(data), args.output)
    print(args.output)
    return 0


def _import(args: argparse.Namespace) -> int:
    card = _export_module("card", "import")
    result = card.import_card(args.card, args.output)
    for note in result.notes:
        _log(f"note: {note}")
    if result.problems:
        _log(f"{args.output}: fix before `lmpc build`:")
        for problem in result.problems:
            _log(f"  - {problem}")
    if result.advice:
        _log(f"{args.output}: builds as it is; these would make a better NPC, most useful first:")
        for item in result.advice:
            _log(f"  - {item}")
    print(args.output)
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.dpo:
        return _train_dpo(args)
    pipeline = _export_module("pipeline", "train", "train")
    train = _export_module("train", "train", "train")
    config = train.TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                               full=args.full, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
                               lora_layers=args.lora_layers, bf16=args.bf16,
                               seed=args.seed, threads=args.threads, max_memory_gb=args.max_memory)
    options = pipeline.TrainOptions(
        dialogues=Path(args.dialogues) if args.dialogues else None,
        knowledge=Path(args.knowledge) if args.knowledge else None, prompt_style=args.prompt_style,
        resume=args.resume, start_adapter=Path(args.from_adapter) if args.from_adapter else None,
        generate=args.generate,
        generator_url=args.generator_url, generator_model=args.generator_model,
        writer_weight=args.writer_weight, note_share=args.note_share, exchanges=args.exchanges,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        base=Path(args.base) if args.base else None,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        adapter_out=Path(args.adapter_out) if args.adapter_out else None, prepare_only=args.prepare_only,
        progress=not args.no_progress, train=config)
    report = pipeline.train_npc(Path(args.sheet), Path(args.output), options, log=_log)
    if "training" in report:
        print(args.output)
    return 0


def _eval(args: argparse.Namespace) -> int:
    evaluate = _export_module("evaluate", "eval")
    files = _export_module("bundle_files", "eval")
    bundle = Path(args.bundle)
    report: dict = {}
    if not args.no_apc:
        evalset = evaluate.load_eval_set(evaluate.bundle_file(bundle, Path(args.set) if args.set else None,
                                                              files.EVAL_SET, "evaluation set"))
        calibration = evaluate.bundle_file(bundle, Path(args.calibration) if args.calibration else None,
                                           files.CALIBRATION_SET, "calibration set")
        judge = evaluate.make_judge(args.judge, Path(args.cache_dir) if args.cache_dir else None, args.threads)
        scorer, estimators = evaluate.prepare_scorer(bundle, calibration, judge, args.threads, _log)
        earlier = None
        if args.rescore:
            earlier = json.loads(evaluate.bundle_file(bundle, None, files.REPORT_JSON, "earlier report").read_text())
            args.seeds = earlier["seeds"]
        report = evaluate.evaluate(bundle, evalset, scorer, estimators, args.seeds, args.threads, _log,
                                   answers=evaluate.answers_from_report(earlier) if earlier else None)
        s = report["summary"]
        _log(f"eval: APC {s['apc']:.2f} of {s['statements']}, relevant entailed {s['relevant_entailed']:.0%}, "
             f"slop {s['slop_rate']:.0%}, assistant speak {s['assistant_speak_rate']:.0%}, "
             f"repetition {s['repetition_rate']:.0%}, refusal {s['refusal_rate'] or 0:.0%}, {s['mean_words']:.0f} words")
    test = Path(args.persona_test) if args.persona_test else bundle / files.PERSONA_TEST
    if args.persona_test or test.is_file():
        report["persona_test"] = evaluate.persona_test_report(bundle, test, args.seeds, args.threads)
        s = report["persona_test"]["summary"]
        _log(f"eval: persona test, {s['questions']} questions: key facts {s['key_facts']:.1%} "
             f"(sampled {s['key_facts_sampled'] or 0:.1%}, greedy {s['key_facts_greedy'] or 0:.1%}), "
             + ", ".join(f"{c} {v:.0%}" for c, v in s["by_category"].items())
             + f"; invented names {s['invented_name']:.0%}, assistant speak {s['assistant_speak']:.0%}, "
             f"loops {s['loop']:.0%}, replies that acted {s.get('acted', 0):.1%} ({s.get('actions_valid', 0)} of "
             f"{s.get('actions_emitted', 0)} actions type-check)")
    actions = bundle / files.ACTION_TEST
    if actions.is_file():
        report["action_test"] = evaluate.action_test_report(bundle, actions, args.seeds, args.threads)
        s = report["action_test"]["summary"]
        _log(f"eval: action test, {s['scenarios']} scenarios: right action {s['right']:.1%} ("
             + ", ".join(f"{k} {v:.0%}" for k, v in s["by_expected"].items())
             + f"); {s['actions_valid']} of {s['actions_emitted']} actions emitted type-check")
    if not report:
        raise InvalidArgumentError(f"{bundle}: nothing to evaluate: --no-apc and no persona test")
    report = {**evaluate.report_header(read_bundle(bundle)), **report}
    evaluate.write_report(report, bundle, Path(args.out) if args.out else None)
    print(bundle / files.REPORT_MD)
    return 0


def _train_dpo(args: argparse.Namespace) -> int:
    dpo = _export_module("dpo", "train --dpo", "train")
    out = Path(args.output)
    sheet = Path(args.sheet)
    sft = Path(args.from_adapter) if args.from_adapter else sheet.with_suffix(".lora")
    adapter_out = Path(args.adapter_out) if args.adapter_out else out.with_name(out.name.removesuffix(".lmpc") + ".dpo.lora")
    config = dpo.DpoConfig(samples=args.samples, margin=args.margin, max_prompts=args.dpo_prompts,
                           epochs=args.epochs, learning_rate=args.lr or dpo.DpoConfig.learning_rate,
                           batch_size=args.batch_size, seed=args.seed, threads=args.threads)
    report = dpo.dpo_npc(sheet, out, sft, adapter_out, config, args.judge,
                         cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                         base=Path(args.base) if args.base else None, log=_log)
    before, after = report["apc_before"], report["apc_after"]
    _log(f"dpo: held-out APC {before['apc']:.2f} -> {after['apc']:.2f}; relevant entailed "
         f"{before['relevant_entailed']:.0%} -> {after['relevant_entailed']:.0%}")
    print(out)
    return 0


def _build_capi(args: argparse.Namespace) -> int:
    try:
        from lmpc_bindings.build import build_capi
    except ImportError as exc:
        raise LmpcError(f"the C bindings are not installed with this copy of LMPC: {exc}") from exc
    print(build_capi(Path(args.output)))
    return 0


def _check(args: argparse.Namespace) -> int:
    sheet = load_sheet(args.sheet)
    print(f"{args.sheet}: OK: {sheet.name}, {len(sheet.facts)} facts, {len(sheet.examples)} example exchanges, "
          f"{len(sheet.lorebook.entries)} lorebook entries")
    gaps = advice(sheet)
    if gaps:
        print("advice (it builds as it is; these would make a better NPC, most useful first):")
        print("\n".join(f"  - {gap}" for gap in gaps))
    return 0


def _info(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle, verify=not args.no_verify)
    print(json.dumps(bundle.manifest, indent=2, ensure_ascii=False))
    return 0


def _open(args: argparse.Namespace):
    # No frame to keep: whole passes, and the threads may spin if asked (nothing else needs the cores).
    rt = Runtime(threads=args.threads, spinning=args.spinning, seed=args.seed, segmented=False)
    npc = rt.load_npc(args.bundle, seed=args.seed)
    if args.max_tokens:
        npc.sampling = npc.sampling.with_(max_tokens=args.max_tokens)
    return rt, npc


def _stream_reply(npc, line: str, out) -> None:
    for event in npc.ask(line):
        if event.kind == TEXT:
            out.write(event.text)
            out.flush()
        elif event.kind == DONE and event.finish == "fallback":
            out.write(event.text)
        elif event.kind in (ACTION, EMOTION):
            out.write(f"  ({tail_note(event)})")
    out.write("\n")


def tail_note(event) -> str:
    """An action or emotion as a chat transcript shows it: "does give_item item=father_letter", "feels sad"."""
    if event.kind == EMOTION:
        return f"feels {event.text}"
    return f"does {call_text(event.text, event.args)}"


def _ask(args: argparse.Namespace) -> int:
    rt, npc = _open(args)
    with rt:
        if not args.json:
            _stream_reply(npc, args.text, sys.stdout)
            return 0
        reply = npc.start_reply(args.text)
        events = list(npc.run_reply(reply))
        npc.end_reply(reply)
        actions = [{"name": e.text, "args": e.args} for e in events if e.kind == ACTION]
        emotion = next((e.text for e in events if e.kind == EMOTION), None)
        print(json.dumps({"npc": npc.name, "text": reply.final_text, "finish": reply.finish, "actions": actions,
                          "emotion": emotion, **reply.metrics(),
                          "graph": "whole", "threads": args.threads, "spinning": args.spinning},
                         ensure_ascii=False))
    return 0


def _chat(args: argparse.Namespace) -> int:
    rt, npc = _open(args)
    scripted = args.script is not None or not sys.stdin.isatty()
    lines = open(args.script, encoding="utf-8") if args.script else sys.stdin
    with rt:
        greeting = npc.greeting
        print(f"[{npc.name}] {greeting}" if greeting else f"[talking to {npc.name}; Ctrl-D to leave]")
        while True:
            if not scripted:
                try:
                    line = input("you> ")
                except EOFError:
                    print()
                    return 0
            else:
                line = lines.readline()
                if not line:
                    return 0
                line = line.rstrip("\n")
                print(f"you> {line}")
            if not line.strip():
                continue
            print(f"{npc.name}> ", end="", flush=True)
            _stream_reply(npc, line, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmpc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build an NPC bundle from a character sheet")
    p.add_argument("sheet")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write, e.g. build/orlando.lmpc")
    p.add_argument("--base", help="a .gguf file or checkpoint directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--cache-dir", help="where exported models are cached (default: $LMPC_CACHE or ~/.cache/lmpc)")
    p.add_argument("--context", type=int, default=2048, help="context window in tokens")
    p.add_argument("--adapter", help="a LoRA adapter directory (from `lmpc train`) to merge into the model")
    p.add_argument("--runtime-adapter", action="store_true",
                   help="carry the adapter in the bundle and apply it at run time, on a base model shared with "
                   "every bundle built so beside it (a village of NPCs in one copy of the weights; about 0.75x "
                   "the decode speed of a merged model, see benchmarks/results/adapters.md)"),
    p.add_argument("--exchanges", action=argparse.BooleanOptionalAction, default=True,
                   help="ship the writer's drills as exchanges the runtime recalls (default: yes; measure "
                   "with `lmpc eval` whether your character gains from them)")
    p.add_argument("--layout", default="lmpc-gqa", choices=("lmpc-gqa", "optimum-kv-concat"),
                   help="model graph: the fast fused one (default), or optimum's export (the slow reference)")
    p.set_defaults(run=_build)

    p = sub.add_parser("new", help="start a character sheet: every field, empty, with what it is for")
    p.add_argument("name", help="the character's full name")
    p.add_argument("-o", "--output", help="the TOML file to write (default: NAME in lower case, .toml)")
    p.set_defaults(run=_new)

    p = sub.add_parser("import", help="turn a Character Card V2/V3 (JSON or PNG) into a character sheet")
    p.add_argument("card")
    p.add_argument("-o", "--output", required=True, help="the TOML character sheet to write")
    p.set_defaults(run=_import)

    p = sub.add_parser("export-card", help="write a sheet as a Character Card V2 (JSON, or PNG by the name); "
                       "`lmpc import` reads it back to the same sheet")
    p.add_argument("sheet")
    p.add_argument("-o", "--output", required=True, help="the card to write: NAME.json or NAME.png")
    p.set_defaults(run=_export_card)

    p = sub.add_parser("train", help="fine-tune a model on a character and build its bundle")
    p.add_argument("sheet")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--dialogues", help="hand-written dialogues (default: SHEET's name with .dialogues.toml)")
    p.add_argument("--knowledge", help="the writer's drills (default: SHEET's name with .knowledge.toml)")
    p.add_argument("--prompt-style", choices=("identity", "sheet"), default="identity",
                   help="the prompt trained with and used at run time: two sentences (identity, default) or "
                   "the long system prompt with example shots (sheet)")
    p.add_argument("--generate", type=int, default=200, help="synthetic dialogues to generate (0: none)")
    p.add_argument("--generator-url", help="an OpenAI-compatible endpoint, e.g. http://gpu-box:8000/v1 "
                   "(default: the local runtime on the base model); key from $OPENAI_API_KEY")
    p.add_argument("--generator-model", default="default", help="model name to ask the endpoint for")
    p.add_argument("--writer-weight", type=int, default=2, help="copies of each hand-written dialogue")
    p.add_argument("--note-share", type=float, default=0.7,
                   help="share of drilled exchanges trained with the memory note (default 0.7)")
    p.add_argument("--exchanges", action=argparse.BooleanOptionalAction, default=False,
                   help="show samples that have a note the writer's exchange the runtime would recall with it "
                   "(default: no. The demo NPC trained so from zero: 78.6 %% against 77.8 %% without; one more "
                   "epoch so on an adapter trained without: 4.5 points lost; docs/results/training.md)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of dialogues held out")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, help="learning rate (default 2e-4 for LoRA, 5e-5 full)")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="SFT: a training step's peak memory; larger batches run in micro-batches (summed into the same "
                   "step) to fit (default: half the memory available at the start)")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-layers", type=int, help="adapt only the last N layers (cheaper steps; default: all)")
    p.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: where the CPU or GPU has bfloat16 instructions)")
    p.add_argument("--resume", action="store_true", help="go on from the last finished epoch of a stopped run")
    p.add_argument("--adapter-out", help="where the adapter and report go (default: BUNDLE with .lora)")
    p.add_argument("--prepare-only", action="store_true", help="stop after the dataset and hygiene report")
    p.add_argument("--dpo", action="store_true", help="instead of SFT: one round of APC-ranked DPO on top of the "
                   "SFT adapter (--from-adapter), evaluated before and after on the held-out set")
    p.add_argument("--from-adapter", help="an earlier adapter to go on training (SFT: more epochs on a new "
                   "schedule; same base, prompt style and LoRA shape) or that DPO starts from (default for DPO: "
                   "SHEET's name with .lora)")
    p.add_argument("--samples", type=int, default=4, help="DPO: replies sampled per prompt")
    p.add_argument("--margin", type=float, default=0.5, help="DPO: least APC gap between chosen and rejected")
    p.add_argument("--dpo-prompts", type=int, help="DPO: at most this many prompts (default: all)")
    p.add_argument("--judge", default="local", help="DPO: the NLI judge (as for `lmpc eval`)")
    p.add_argument("--base", help="a .gguf file or checkpoint directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--cache-dir", help="where exported models are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads for training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", help="score a bundle's faithfulness (APC) and manners on held-out lines")
    p.add_argument("bundle")
    p.add_argument("--set", help="evaluation set TOML (default: the bundle's eval_set.toml, from the sheet's .eval.toml)")
    p.add_argument("--calibration", help="hand-labelled pairs for the estimators (default: the bundle's "
                   "apc_calibration.toml)")
    p.add_argument("--judge", default="local", help="NLI judge: local (the base model), local:BUNDLE, an "
                   "OpenAI-compatible http(s) URL (URL#MODEL), or onnx:MODEL.onnx:TOKENIZER.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one pass over the set per seed")
    p.add_argument("--persona-test", help="persona test TOML (default: the bundle's persona_test.toml, from the "
                   "sheet's .persona_test.toml); answered with each seed and greedily")
    p.add_argument("--no-apc", action="store_true", help="only the persona test (APC takes minutes to calibrate)")
    p.add_argument("--out", help="also write the Markdown report here")
    p.add_argument("--rescore", action="store_true", help="score the replies of the bundle's earlier report "
                   "again (e.g. with another judge) instead of sampling new ones")
    p.add_argument("--cache-dir", help="where exported models are cached (for the local judge)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=_eval)

    p = sub.add_parser("build-capi", help="compile the C library liblmpc.so (with lmpc.h) for engines")
    p.add_argument("-o", "--output", required=True, help="directory to write liblmpc.so and lmpc.h into")
    p.set_defaults(run=_build_capi)

    p = sub.add_parser("check", help="validate a character sheet")
    p.add_argument("sheet")
    p.set_defaults(run=_check)

    p = sub.add_parser("info", help="print a bundle's manifest as JSON")
    p.add_argument("bundle")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle's files")
    p.set_defaults(run=_info)

    for name, run, helptext in (("ask", _ask, "one reply to one line"), ("chat", _chat, "talk in the terminal")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("bundle")
        if name == "ask":
            p.add_argument("text")
            p.add_argument("--json", action="store_true", help="print one JSON object with text and timings")
        else:
            p.add_argument("--script", help="read the player's lines from this file instead of the keyboard")
        p.add_argument("--seed", type=int, help="seed for reproducible replies")
        p.add_argument("--max-tokens", type=int, help="longest reply in tokens")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--spinning", action="store_true",
                       help="let the threads spin between steps: faster when no game shares the cores")
        p.set_defaults(run=run)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LmpcError as exc:
        print(f"lmpc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
