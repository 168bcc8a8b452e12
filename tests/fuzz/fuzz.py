"""Run one fuzz target: coverage-guided with atheris (libFuzzer), or a seeded random mutator without it.

    .venv/bin/python tests/fuzz/fuzz.py TARGET [libFuzzer flags, e.g. -runs=200000 -max_total_time=600]
    .venv/bin/python tests/fuzz/fuzz.py TARGET --random RUNS [SEED]    # no atheris needed
    make fuzz                      # every target, FUZZ_RUNS executions each (see the Makefile)

Targets are in targets.py. With atheris, the runtime's modules are instrumented for coverage, the
target's seeds start the corpus, and a crash leaves `crash-<sha1>` in the working directory (libFuzzer's
usual behaviour); turn it into a file under tests/fuzz/regressions/<target>/ so test_fuzz replays it
forever. The random mode mutates the seeds (bit flips, byte runs, cuts, splices) with a fixed seed, so
a finding reproduces exactly; it prints the failing input's path and stops.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """One to four byte-level mutations of `data` (libFuzzer's most common ones, without coverage)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2 and buf:
            del buf[at:at + rng.randint(1, 16)]
        elif choice == 3:
            del buf[at:]
        elif choice == 4 and buf:
            buf[min(at, len(buf) - 1)] = rng.choice([0, 0x7F, 0x80, 0xFF, 0xC0, 0xDC, 0xDD, 0xDE, 0xDF])
        elif choice == 5:
            other = rng.choice(seeds) if seeds else b""
            start = rng.randrange(len(other) + 1)
            buf[at:at] = other[start:start + rng.randint(1, 64)]
        else:
            buf[at:at] = bytes([rng.randrange(256)]) * rng.randint(1, 300)
    return bytes(buf)


HANG_SECONDS = 10.0


def random_fuzz(target, runs: int, seed: int = 0, report=print) -> Counter:
    """Run `target` on `runs` mutated inputs; returns how many were accepted and how many refused. Raises
    on the first finding (an unexpected exception, or an input taking over HANG_SECONDS), after writing it
    to crash-<sha1>."""
    rng = random.Random(seed)
    corpus = list(target.seeds) or [b""]
    outcomes: Counter = Counter()
    for i in range(runs):
        data = mutate(rng.choice(corpus), rng, corpus)
        start = time.perf_counter()
        try:
            outcomes["accepted" if target(data) else "refused"] += 1
            if time.perf_counter() - start > HANG_SECONDS:
                raise TimeoutError(f"one input took {time.perf_counter() - start:.1f} s")
        except BaseException:
            name = Path(f"crash-{hashlib.sha1(data).hexdigest()}")
            name.write_bytes(data)
            report(f"finding after {i + 1} inputs, written to {name}")
            raise
        if rng.random() < 0.01 and len(corpus) < 256:
            corpus.append(data)  # keep a few survivors to mutate further
    return outcomes


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name, args = sys.argv[1], sys.argv[2:]
    if args and args[0] == "--random":
        from targets import TARGETS

        target = TARGETS[name]()
        runs, seed = int(args[1]), int(args[2]) if len(args) > 2 else 0
        start = time.perf_counter()
        try:
            outcomes = random_fuzz(target, runs, seed)
        except BaseException:
            traceback.print_exc()
            sys.exit(1)
        print(f"{name}: {runs} inputs in {time.perf_counter() - start:.1f} s, no finding "
              f"({outcomes['accepted']} accepted, {outcomes['refused']} refused)")
        return

    import atheris

    with atheris.instrument_imports(include=["lmpc_runtime", "targets"]):
        from targets import TARGETS

        import lmpc_runtime.bundle, lmpc_runtime.capi, lmpc_runtime.save, lmpc_runtime.sheet  # noqa: F401,E401
    target = TARGETS[name]()
    corpus = Path(__file__).resolve().parent / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds:
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    # libFuzzer grows the corpus directory given first; the committed seeds are rewritten above.
    atheris.Setup([sys.argv[0], *args, str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
