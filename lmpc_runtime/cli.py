"""The `lmpc` command: build, inspect and talk to NPC bundles from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bundle import read_bundle
from .errors import LmpcError
from .reply import DONE, TEXT
from .runtime import Runtime
from .sheet import load_sheet


def _build(args: argparse.Namespace) -> int:
    try:
        from lmpc_export import build
    except ImportError as exc:
        raise LmpcError(f"`lmpc build` needs the export extra (pip install 'lmpc[export]'): {exc}") from exc
    out = build(Path(args.sheet), Path(args.output), source=Path(args.base) if args.base else None,
                cache_dir=Path(args.cache_dir) if args.cache_dir else None, context_length=args.context,
                layout=args.layout, log=lambda line: print(line, file=sys.stderr, flush=True))
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
    return 0


def _info(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle, verify=not args.no_verify)
    print(json.dumps(bundle.manifest, indent=2, ensure_ascii=False))
    return 0


def _open(args: argparse.Namespace):
    rt = Runtime(threads=args.threads, seed=args.seed)
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
    out.write("\n")


def _ask(args: argparse.Namespace) -> int:
    rt, npc = _open(args)
    with rt:
        if not args.json:
            _stream_reply(npc, args.text, sys.stdout)
            return 0
        reply = npc.start_reply(args.text)
        from .reply import drive

        for _ in drive(npc.engine, reply):
            pass
        npc.end_reply(reply)
        print(json.dumps({"npc": npc.name, "text": reply.final_text, "finish": reply.finish,
                          **reply.metrics()}, ensure_ascii=False))
    return 0


def _chat(args: argparse.Namespace) -> int:
    rt, npc = _open(args)
    scripted = args.script is not None or not sys.stdin.isatty()
    lines = open(args.script, encoding="utf-8") if args.script else sys.stdin
    with rt:
        greeting = npc.bundle.character.greeting
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
    p.add_argument("--layout", default="lmpc-gqa", choices=("lmpc-gqa", "optimum-kv-concat"),
                   help="model graph: the fast fused one (default), or optimum's export (the slow reference)")
    p.set_defaults(run=_build)

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
