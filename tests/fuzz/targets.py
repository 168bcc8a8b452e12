"""Fuzz targets: every reader of untrusted input, each fed one input (bytes) at a time.

A target returns True when the input was accepted and False when it was refused with a typed
`LmpcError` (the smoke test checks that a run reaches both); anything else escaping it (a `KeyError`, a `RecursionError`, a `MemoryError` from an unbounded allocation) is a
finding. The C ABI target instead checks the status code its wrapper would return: `E_INTERNAL` means
an exception the API did not expect.

Raw-byte targets (`manifest`, `save`, `sheet_toml`) hit the first checks; the `*_tree` targets take a
valid document and let the input choose structural mutations (replace a value with one of another type,
drop or add a key, grow a list), then re-encode it validly (a save gets a correct header and checksum),
so the fuzzer reaches the field checks behind the format checks.
"""

from __future__ import annotations

import copy
import math
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import msgpack

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TINY_BUNDLE = ASSETS / "tiny.lmpc"
SHEET = Path(__file__).resolve().parents[2] / "examples" / "characters" / "orlando_marlo.toml"


class Bytes:
    """Reads decisions out of a fuzz input; past its end every read is 0 (so any input is complete)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def below(self, n: int) -> int:
        return (self.byte() << 8 | self.byte()) % n if n > 1 else 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk

    def text(self) -> str:
        return self.take(self.byte()).decode("utf-8", "replace")


INTS = [0, 1, -1, 2, 7, 255, 256, 1 << 20, (1 << 20) + 1, 1 << 31, 1 << 32, 1 << 62, 1 << 63, -(1 << 63),
        (1 << 64) - 1]
FLOATS = [0.0, -0.0, 0.5, -1.5, 1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324]
STRINGS = ["", " ", "\n", "\x00", "..", "/etc/passwd", "model.onnx", "../model.onnx", "PCG64", "chatml",
           "lmpc-bundle", "lmpc-save", "<|im_start|>", "x" * 5000, "é" * 300, "\ud800".encode("utf-8", "surrogatepass")
           .decode("utf-8", "replace"), "a.b", "quest.done"]


def random_value(src: Bytes, depth: int = 0) -> Any:
    kind = src.below(10)
    if kind == 0:
        return None
    if kind == 1:
        return bool(src.byte() & 1)
    if kind == 2:
        return INTS[src.below(len(INTS))]
    if kind == 3:
        return FLOATS[src.below(len(FLOATS))]
    if kind == 4:
        return STRINGS[src.below(len(STRINGS))]
    if kind == 5:
        return src.text()
    if kind == 6:
        return src.take(src.byte() * 4)
    if kind == 7 and depth < 4:
        return [random_value(src, depth + 1) for _ in range(src.below(6))]
    if kind == 8 and depth < 4:
        return {src.text() or "k": random_value(src, depth + 1) for _ in range(src.below(5))}
    if kind == 9:
        value: Any = src.byte()  # deep nesting: the parsers must not recurse without bound
        for _ in range(src.below(600 if depth else 3000)):
            value = [value]
        return value
    return src.byte() - 128


def mutate_tree(tree: Any, src: Bytes) -> Any:
    """A copy of `tree` (maps and lists) with 1-4 structural mutations chosen by `src`."""
    tree = copy.deepcopy(tree)
    holder: dict[str, Any] = {"root": tree}
    for _ in range(1 + src.below(4)):
        parent, key = holder, "root"
        while isinstance(parent[key], (dict, list)) and parent[key] and src.below(4) != 0:
            node = parent[key]
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, keys[src.below(len(keys))]
        action = src.below(5)
        if action == 0 and isinstance(parent, dict) and parent is not holder:
            del parent[key]
        elif action == 1 and isinstance(parent[key], dict):
            parent[key][src.text() or "extra"] = random_value(src)
        elif action == 2 and isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] * (1 + src.below(50))
        else:
            parent[key] = random_value(src)
    return holder["root"]


def _expected(exc: BaseException) -> bool:
    from lmpc_runtime.errors import LmpcError

    return isinstance(exc, LmpcError)


def _private_bundle() -> Path:
    """A copy of the tiny bundle (hard links) whose manifest a target may overwrite."""
    base = Path(tempfile.mkdtemp(prefix="lmpc-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    bundle = base / "tiny.lmpc"
    shutil.copytree(TINY_BUNDLE, bundle, copy_function=_link)
    (bundle / "manifest.msgpack").unlink()
    return bundle


def _link(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


class ManifestTarget:
    """`read_bundle` on a bundle whose manifest is the input (files are hashed only when it names them)."""

    def __init__(self, tree: bool):
        from lmpc_runtime.bundle import pack_manifest

        self.tree = tree
        self.valid = msgpack.unpackb((TINY_BUNDLE / "manifest.msgpack").read_bytes(), raw=False)
        self.bundle = _private_bundle()
        self.seeds = [b"", pack_manifest(self.valid)] if not tree else [b"", b"\x01" * 16, bytes(range(256))]

    def __call__(self, data: bytes) -> bool:
        from lmpc_runtime.bundle import pack_manifest, read_bundle

        if self.tree:
            data = _packed(pack_manifest, mutate_tree(self.valid, Bytes(data)))
        (self.bundle / "manifest.msgpack").write_bytes(data)
        try:
            read_bundle(self.bundle, verify=False)
        except Exception as exc:
            if not _expected(exc):
                raise
            return False
        return True


class SaveTarget:
    """`load_bytes` of a save into an NPC of the tiny bundle; a save that loads must save and prompt again."""

    def __init__(self, tree: bool):
        from lmpc_runtime import Runtime

        self.tree = tree
        self.runtime = Runtime(threads=1, seed=5)
        self.npc = self.runtime.load_npc(TINY_BUNDLE)
        self.npc.remember("The traveller paid for the cider.", importance=0.8)
        self.npc.facts.set("quest.started", True)
        self.npc.history.append(("Who are you?", "Ser Orlando Marlo, of House Marlo."))
        self.clean = self.npc.to_bytes()
        self.clean_kv = self.npc.to_bytes(include_kv=True)
        self.state = _payload(self.clean)
        self.seeds = [b"", b"\x00" * 64] if tree else [b"", self.clean, self.clean_kv]

    def __call__(self, data: bytes) -> bool:
        from lmpc_runtime.save import load_bytes

        if self.tree:
            data = _with_header(_packed(partial(msgpack.packb, use_bin_type=True), mutate_tree(self.state, Bytes(data))))
        try:
            load_bytes(self.npc, data)
        except Exception as exc:
            if not _expected(exc):
                raise
            return False
        # Loaded: the state must be usable, and the NPC goes back to the clean state for the next input.
        self.npc.prompt_tokens("Hello there.", 8)
        self.npc.to_bytes()
        load_bytes(self.npc, self.clean)
        return True


def _packed(pack: Callable[[Any], bytes], tree: Any) -> bytes:
    """The tree as msgpack, or an empty input where msgpack cannot write it (nested deeper than it packs)."""
    try:
        return pack(tree)
    except ValueError:
        return b""


def _payload(save: bytes) -> dict[str, Any]:
    from lmpc_runtime.save import _HEADER

    return msgpack.unpackb(save[_HEADER.size:], raw=False)


def _with_header(payload: bytes) -> bytes:
    from lmpc_runtime.save import _HEADER, SAVE_FORMAT_VERSION, SAVE_MAGIC, _digest

    return _HEADER.pack(SAVE_MAGIC, SAVE_FORMAT_VERSION, len(payload), _digest(SAVE_FORMAT_VERSION, payload)) + payload


class SheetTarget:
    """`load_sheet` on a TOML file (raw) or `parse_sheet`/`sheet_from_dict` on a mutated valid sheet (tree)."""

    def __init__(self, tree: bool):
        from lmpc_runtime.sheet import load_sheet

        self.tree = tree
        self.valid = tomllib.loads(SHEET.read_text())
        self.stored = load_sheet(SHEET).to_dict()  # the form a bundle manifest keeps
        self.path = _private_bundle().parent / "sheet.toml"
        self.seeds = [b"", SHEET.read_bytes()] if not tree else [b"", bytes(range(256))]

    def __call__(self, data: bytes) -> bool:
        from lmpc_runtime.sheet import load_sheet, parse_sheet, sheet_from_dict

        try:
            if not self.tree:
                self.path.write_bytes(data)
                load_sheet(self.path)
                return True
            src = Bytes(data)
            if src.byte() & 1:
                parse_sheet(mutate_tree(self.valid, src))
            else:
                sheet_from_dict(mutate_tree(self.stored, src))
        except Exception as exc:
            if not _expected(exc):
                raise
            return False
        return True


class CApiTarget:
    """A sequence of C ABI calls (through `CApi`, the layer behind every C function) chosen by the input:
    strings are arbitrary bytes (invalid UTF-8 included), numbers extreme, handles stale or made up."""

    def __init__(self):
        from lmpc_runtime.capi import CApi

        self.api = CApi()
        self.rt = self.api.open(1, True, 3, 4, False, 0.5)
        self.npc = self.api.npc_load(self.rt, str(TINY_BUNDLE).encode(), b"orlando")
        self.save = self.api.save_state_bytes(self.npc)
        self.dir = _private_bundle().parent
        self.seeds = [b"", b"\x02hello\x00\x04\x00\x10", bytes(range(64))]

    def __call__(self, data: bytes) -> bool:
        """True when every call of the sequence succeeded, False when one returned an error code."""
        from lmpc_runtime.capi import E_INTERNAL, status_of

        src = Bytes(data)
        accepted = True
        for _ in range(1 + src.below(8)):
            op = self._ops[src.below(len(self._ops))]
            try:  # what capi.guarded does, keeping the traceback of an unexpected exception
                op(self, src)
            except Exception as exc:
                if status_of(exc) == E_INTERNAL:
                    raise
                accepted = False
        # Back to a quiet NPC for the next input: no reply in progress, no line waiting, no event kept.
        self.api.cancel(self.npc)
        while self.api.tick(self.rt, 0) != 2:
            self.api.tick(self.rt, 1000)
        self.api.poll(self.rt, 1 << 20)
        self.api._runtimes[self.rt].waiting.clear()
        return accepted

    def _raw(self, src: Bytes) -> bytes | None:
        n = src.byte()
        return None if n == 255 else src.take(n)

    def _handle(self, src: Bytes) -> int:
        return [self.npc, self.rt, 0, -1, 1 << 40, src.byte()][src.below(6)]

    def say(self, src: Bytes) -> None:
        self.api.say(self._handle(src) if src.byte() < 16 else self.npc, self._raw(src))

    def tick(self, src: Bytes) -> None:
        budget = [0, -1, -(1 << 62), 1, 500, 2000, 1 << 62][src.below(7)]
        self.api.tick(self.rt if src.byte() else self._handle(src), budget)

    def poll(self, src: Bytes) -> None:
        self.api.poll(self.rt if src.byte() else self._handle(src), [0, 1, 2, 16, 4096, -1][src.below(6)])

    def set_fact(self, src: Bytes) -> None:
        self.api.set_fact(self.npc, self._raw(src), self._raw(src))

    def set_priority(self, src: Bytes) -> None:
        self.api.set_priority(self._handle(src), FLOATS[src.below(len(FLOATS))])

    def cancel(self, src: Bytes) -> None:
        self.api.cancel(self._handle(src))

    def load_state_bytes(self, src: Bytes) -> None:
        data = self.save if src.byte() < 32 else src.take(src.below(4096))
        self.api.load_state_bytes(self._handle(src), data)

    def save_and_load_file(self, src: Bytes) -> None:
        raw = self._raw(src)
        path = None if raw is None else str(self.dir).encode() + b"/" + raw
        self.api.save_state(self.npc, path)
        self.api.load_state(self.npc, path)

    def npc_load(self, src: Bytes) -> None:
        # Loading is slow (a model session): only a rare input loads a real bundle; most give a bad path.
        good = src.byte() == 7
        handle = self.api.npc_load(self.rt, str(TINY_BUNDLE).encode() if good else self._raw(src), self._raw(src))
        self.api.npc_unload(handle)

    def npc_unload(self, src: Bytes) -> None:
        handle = self._handle(src)
        if handle != self.npc:
            self.api.npc_unload(handle)

    def close(self, src: Bytes) -> None:
        handle = self._handle(src)
        if handle != self.rt:
            self.api.close(handle)

    _ops = [say, tick, poll, set_fact, set_priority, cancel, load_state_bytes, save_and_load_file, npc_load,
            npc_unload, close]


TARGETS: dict[str, Callable[[], Callable[[bytes], bool]]] = {
    "manifest": lambda: ManifestTarget(tree=False),
    "manifest_tree": lambda: ManifestTarget(tree=True),
    "save": lambda: SaveTarget(tree=False),
    "save_tree": lambda: SaveTarget(tree=True),
    "sheet_toml": lambda: SheetTarget(tree=False),
    "sheet_tree": lambda: SheetTarget(tree=True),
    "capi": CApiTarget,
}
