"""Kill -9 during writes: a save game, and a bundle build's output, must survive SIGKILL at any moment.

    nice -n 10 .venv/bin/python -m benchmarks.kill9 [--saves 1000] [--bundles 200] [--seed 0]

Step kills: a forked writer kills itself just before its k-th file-system call (fsync, rename, copy,
...), for k = 1, 2, ... until a write gets through, so every step of a write is hit. Random kills: a
writer process is forked (it inherits an NPC already loaded, so each round costs milliseconds) and
writes in a loop, telling the parent over a pipe after each write that returned; the parent SIGKILLs it
after a random delay, then checks the file on disk: it must load and verify, and be either the last
write the writer reported done or the one after it (old or new: never damaged, never missing, never
older). Saves carry a counter in the NPC's facts and a history of a few MB, so a write takes long
enough for kills to land inside it. Bundle build n names its character "<name> n"; it is assembled
from cache entries made out of the tiny test bundle, so no export runs.
tests/test_crash_safety.py runs the same rounds, fewer of them. Results go to
benchmarks/results/kill9.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
TINY_BUNDLE = REPO / "tests" / "assets" / "tiny.lmpc"
SHEET = REPO / "examples" / "characters" / "orlando_marlo.toml"


@dataclasses.dataclass
class Writer:
    write: Callable[[int], None]  # write number n
    check: Callable[[], int]  # the number of the write on disk; raises if it does not load and verify
    directory: Path
    temporaries: str  # the name prefix of a write's temporary files


@dataclasses.dataclass
class Kills:
    rounds: int = 0
    old: int = 0  # the file held the last write reported done
    new: int = 0  # the file held the write in progress when the kill came
    writes_done: int = 0
    leftovers: int = 0  # temporary files or directories left beside the target after the last kill...
    leftovers_after_next_write: int = 0  # ... and after one more write, which must clean them up


def kill_rounds(rounds: int, seed: int, write: Callable[[int], None], check: Callable[[], int],
                spread: float = 2.5) -> Kills:
    """Write once (write(0)), then fork a writer that calls write(1), write(2), ... and kill it after a
    random delay of up to `spread` times that first write's duration (growing while no write gets done,
    so kills land between writes too on a loaded machine); `check()` returns the number of
    the write the file holds (raising if none loads and verifies)."""
    rng = random.Random(seed)
    stats = Kills()
    start = time.perf_counter()
    write(0)
    max_delay_s = spread * (time.perf_counter() - start)
    last = check()
    for _ in range(rounds):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: never returns
            os.close(read_end)
            try:
                n = last
                while True:
                    n += 1
                    write(n)
                    os.write(write_end, b"%d\n" % n)
            finally:
                os._exit(1)
        os.close(write_end)
        time.sleep(rng.uniform(0, max_delay_s))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            done = [int(x) for x in pipe.read().split()]
        acknowledged = done[-1] if done else last
        found = check()
        if found not in (acknowledged, acknowledged + 1):
            raise AssertionError(f"after the kill the file holds write {found}; "
                                 f"{acknowledged} was done, so {acknowledged} or {acknowledged + 1} was expected")
        if not done:  # the writer finished no write before the kill (a busy machine): give it longer
            max_delay_s *= 1.25
        stats.rounds += 1
        stats.writes_done += len(done)
        stats.old += found == acknowledged
        stats.new += found == acknowledged + 1
        last = found
    return stats


# The calls a write makes to the file system: a step kill lands just before the k-th of them.
STEPS = [("os", "fsync"), ("os", "replace"), ("os", "rename"), ("os", "link"), ("os", "unlink"),
         ("shutil", "copyfile"), ("shutil", "rmtree"), ("tempfile", "mkstemp"), ("tempfile", "mkdtemp"),
         ("pathlib", "Path.write_bytes"), ("pathlib", "Path.rename"), ("lmpc_export.build", "_exchange")]


def _kill_at(k: int) -> None:
    """In a forked writer: SIGKILL this process just before its k-th file-system call of STEPS."""
    import importlib

    calls = [0]
    for module, attribute in STEPS:
        target = importlib.import_module(module)
        *owners, name = attribute.split(".")
        for owner in owners:
            target = getattr(target, owner)
        original = getattr(target, name)

        def step(*args, _original=original, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(*args, **kwargs)

        setattr(target, name, step)


def step_kills(write: Callable[[int], None], check: Callable[[], int], max_steps: int = 500) -> Kills:
    """Kill a writer before each of its file-system steps in turn (k = 1, 2, ...) until a write gets
    through unkilled; after each kill the file must hold the previous write or the new one."""
    stats = Kills()
    write(0)
    last = check()
    for k in range(1, max_steps + 1):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                _kill_at(k)
                write(last + 1)
                os.write(write_end, b"done")
            except BaseException as exc:  # a broken writer must fail the run, not loop to max_steps
                os.write(write_end, f"error: {exc!r}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read()
        if said.startswith(b"error"):
            raise AssertionError(f"the writer failed at step {k}: {said.decode()}")
        finished = said == b"done"
        found = check()
        if found not in (last, last + 1):
            raise AssertionError(f"killed at step {k}: the file holds write {found}, not {last} or {last + 1}")
        if finished:
            if found != last + 1:
                raise AssertionError(f"a write that finished left write {found} on disk, not {last + 1}")
            return stats
        stats.rounds += 1
        stats.old += found == last
        stats.new += found == last + 1
        last = found
    raise AssertionError(f"a write still had file-system steps after {max_steps} kills")


@contextlib.contextmanager
def save_writer(work: Path, history_kb: int = 2000) -> Iterator[Writer]:
    """An NPC of the tiny bundle saving to work/npc.sav (save n has n in its facts), and a reader."""
    from lmpc_runtime import Runtime

    path = work / "npc.sav"
    with Runtime(threads=1, seed=1) as rt:
        npc = rt.load_npc(TINY_BUNDLE)
        reader = rt.load_npc(TINY_BUNDLE)
        line = "The traveller asked about the road to Brightwater, and the knight answered at length. " * 10
        npc.history = [(f"{i}: {line}", line) for i in range(history_kb * 1024 // (2 * len(line)))]

        def write(n: int) -> None:
            npc.facts.set("save.counter", n)
            npc.save(path)

        def check() -> int:
            reader.load(path)  # raises a SaveError if the file is damaged or missing
            return int(reader.facts.get("save.counter"))

        yield Writer(write, check, work, ".npc.sav.")


def _count(directory: Path, prefix: str) -> int:
    return sum(1 for p in directory.iterdir() if p.name.startswith(prefix))


def tiny_cache(work: Path) -> tuple[Path, Path]:
    """Cache entries (as `lmpc build` keeps them) made out of the tiny bundle, for write_bundle."""
    import msgpack

    from lmpc_export.tiny import TINY_CONFIG

    manifest = msgpack.unpackb((TINY_BUNDLE / "manifest.msgpack").read_bytes(), raw=False)
    model, embedder = work / "cache" / "model", work / "cache" / "embedder"
    (model / "checkpoint").mkdir(parents=True, exist_ok=True)
    embedder.mkdir(parents=True, exist_ok=True)
    for name in (manifest["model"]["file"], manifest["model"].get("data_file")):
        if name:
            shutil.copyfile(TINY_BUNDLE / name, model / name)
    shutil.copyfile(TINY_BUNDLE / "tokenizer.json", model / "checkpoint" / "tokenizer.json")
    config = {**TINY_CONFIG, "vocab_size": manifest["model"]["vocab_size"]}
    (model / "export.json").write_text(json.dumps({**manifest["report"]["export"], "config": config,
                                                   "parity": manifest["report"]["parity"]}))
    shutil.copyfile(TINY_BUNDLE / manifest["embedder"]["file"], embedder / "embedder.int8.onnx")
    shutil.copyfile(TINY_BUNDLE / manifest["embedder"]["tokenizer"]["file"], embedder / "tokenizer.json")
    spec = manifest["embedder"]
    (embedder / "embedder.json").write_text(json.dumps({
        **manifest["report"]["embedder"], "name": spec["name"], "dim": spec["dim"],
        "max_tokens": spec["max_tokens"], "min_score": spec["min_score"]}))
    return model, embedder


@contextlib.contextmanager
def bundle_writer(work: Path) -> Iterator[Writer]:
    """Builds of a bundle at work/npc.lmpc (build n names its character "<name> n"), and a reader."""
    from lmpc_export.build import write_bundle
    from lmpc_runtime.bundle import read_bundle
    from lmpc_runtime.sheet import load_sheet

    model, embedder = tiny_cache(work)
    sheet = load_sheet(SHEET)
    out = work / "npc.lmpc"

    def write(n: int) -> None:
        write_bundle(dataclasses.replace(sheet, name=f"{sheet.name} {n}"), model, embedder, out,
                     context_length=1024)

    def check() -> int:
        name = read_bundle(out).character.name  # every file's sha256 is checked
        return int(name.rsplit(" ", 1)[1])

    yield Writer(write, check, work, ".npc.lmpc.")


def random_kills(writer: Writer, rounds: int, seed: int) -> Kills:
    """`kill_rounds`, then one more write, which must clean up what the kills left."""
    stats = kill_rounds(rounds, seed, writer.write, writer.check)
    stats.leftovers = _count(writer.directory, writer.temporaries)
    writer.write(writer.check() + 1)
    stats.leftovers_after_next_write = _count(writer.directory, writer.temporaries)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kill9.json")
    args = parser.parse_args()
    import tempfile

    results = {}
    for name, make, rounds in (("saves", save_writer, args.saves), ("bundles", bundle_writer, args.bundles)):
        for kind in ("steps", "random"):
            with tempfile.TemporaryDirectory(prefix="lmpc-kill9-") as work, make(Path(work)) as writer:
                start = time.perf_counter()
                stats = step_kills(writer.write, writer.check) if kind == "steps" else \
                    random_kills(writer, rounds, args.seed)
                results[f"{name}_{kind}"] = {**dataclasses.asdict(stats),
                                             "seconds": round(time.perf_counter() - start, 1)}
                print(name, kind, results[f"{name}_{kind}"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
