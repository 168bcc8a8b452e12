"""Save games: an NPC's whole state in one file, written atomically and read back with every check.

File layout (little-endian):

    8 bytes   magic b"LMPCSAVE"
    4 bytes   format version (uint32)
    8 bytes   payload length (uint64)
    32 bytes  sha256 of the version, the length and the payload
    payload   msgpack map (below)

The payload holds the conversation (history, turn counters, summary progress), the game's facts, the
game time, the sampler's random generator state, the lorebook timers, the memories the NPC gained in
play (texts, metadata and int8 embedding codes), the texts of bundle memories it forgot, and, only if
asked, the KV cache. Without the cache, the next reply simply prefills the prompt again. The index is
rebuilt from the codes (see memory/store.py). A save belongs to one bundle name and one model (sha256),
and names the NPC's adapter (sha256) when it has one: a save from another character, model or adapter is
refused, but a rebuilt bundle of the same character on the same model (new lore, more memories) still
loads it.

Reading checks, in order: the magic (another kind of file), the version (a newer LMPC), the length (a
truncated file), the checksum (a damaged one), msgpack with explicit limits, then every field. The new
state is built aside and swapped in only when all of it is valid, so a failed load changes nothing.
Writing goes to a temporary file in the same directory, fsynced, renamed over the old save and the
directory fsynced: a crash at any point leaves either the old save or the new one, whole (and perhaps
a temporary file, which the next save at that path removes).
"""

from __future__ import annotations

import glob
import hashlib
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from .adapters import Adapter
from .bundle import read_memories, unpack_limited
from .errors import (
    InvalidArgumentError,
    SaveCorruptError,
    SaveError,
    SaveFormatError,
    SaveMismatchError,
    SaveVersionError,
)
from .memory.gating import GameState
from .memory.lorebook import LoreScanner
from .memory.store import OWN_FIRST_ID, bundle_store
from .npc import Npc, NpcState, common_prefix
from .sampling import rng_from_state, rng_state

SAVE_MAGIC = b"LMPCSAVE"
SAVE_FORMAT = "lmpc-save"
SAVE_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")
_CHECKED = struct.Struct("<IQ")  # the header fields the checksum covers besides the payload
MAX_SAVE_BYTES = 1 << 30
MAX_HISTORY = 100_000


def _digest(version: int, payload: bytes) -> bytes:
    return hashlib.sha256(_CHECKED.pack(version, len(payload)) + payload).digest()


def save_bytes(npc: Npc, include_kv: bool = False) -> bytes:
    """The NPC's state as the bytes of a save file. Refused while the NPC is answering."""
    if npc.current is not None and not npc.current.done:
        raise InvalidArgumentError(f"{npc.name} is answering; save after the reply ends, or cancel it")
    payload = msgpack.packb(_state(npc, include_kv), use_bin_type=True)
    return _HEADER.pack(SAVE_MAGIC, SAVE_FORMAT_VERSION, len(payload), _digest(SAVE_FORMAT_VERSION, payload)) + payload


def save_file(npc: Npc, path: Path, include_kv: bool = False) -> None:
    """Write a save atomically; an existing save at `path` is replaced only by a complete new one."""
    _check_path(path)
    data = save_bytes(npc, include_kv)
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SaveError(f"{path}: cannot write a save there: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SaveError(f"{path}: cannot write the save: {exc.strerror or exc}") from exc
        raise
    _fsync_directory(directory)
    _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete what writes of this save killed mid-way left behind (a process killed before its rename
    cannot clean up). One process writes a given save path at a time, so none of these is in use."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def load_bytes(npc: Npc, data: bytes) -> None:
    """Restore the NPC from save bytes; any error leaves it as it was."""
    if npc.current is not None and not npc.current.done:
        raise InvalidArgumentError(f"{npc.name} is answering; cancel the reply before loading a save")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"a save must be bytes, not {type(data).__name__}")
    state = _open(bytes(data), "save")
    try:
        restored = _restore(npc, state)
    except KeyError as exc:
        raise SaveFormatError(f"save: missing field {exc}") from exc
    except (InvalidArgumentError, TypeError, ValueError) as exc:
        raise SaveFormatError(f"save: {exc}") from exc
    npc.restore(restored)


def load_file(npc: Npc, path: Path) -> None:
    _check_path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SAVE_BYTES + _HEADER.size:
            raise SaveFormatError(f"{path}: {size} bytes, larger than any save")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SaveError(f"{path}: no such save file") from exc
    except OSError as exc:
        raise SaveError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        load_bytes(npc, data)
    except SaveError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def _check_path(path: Path) -> None:
    # The OS cannot name such a file; Python would raise a bare ValueError deep in os.open.
    if "\0" in str(path):
        raise InvalidArgumentError(f"a save path must not contain a NUL character: {str(path)!r}")


def _open(data: bytes, what: str) -> dict[str, Any]:
    """Check the header, length and checksum; return the unpacked payload map."""
    if len(data) < _HEADER.size:
        if data and SAVE_MAGIC.startswith(data[: len(SAVE_MAGIC)]):
            raise SaveCorruptError(f"{what} is truncated ({len(data)} bytes, shorter than its header)")
        raise SaveFormatError(f"{what} is not an LMPC save file")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != SAVE_MAGIC:
        raise SaveFormatError(f"{what} is not an LMPC save file")
    if version > SAVE_FORMAT_VERSION:
        raise SaveVersionError(
            f"{what} has save format {version}, newer than this runtime reads ({SAVE_FORMAT_VERSION}); update LMPC")
    if version < 1:
        raise SaveFormatError(f"{what}: invalid save format version {version}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise SaveCorruptError(f"{what} is truncated or padded: {len(payload)} payload bytes, {length} expected")
    if _digest(version, payload) != digest:
        raise SaveCorruptError(f"{what} is damaged: its checksum does not match")
    state = unpack_limited(payload, what, MAX_SAVE_BYTES, error=SaveFormatError)
    if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
        raise SaveFormatError(f"{what} is not an LMPC NPC save")
    return state


def _state(npc: Npc, include_kv: bool) -> dict[str, Any]:
    bundle = npc.bundle
    now = npc.snapshot()
    store = now.memories
    built = read_memories(bundle)
    forgotten = [text for i, text in zip(built["ids"], built["texts"]) if i not in store]
    own = [m.id for m in store if m.id >= OWN_FIRST_ID]
    state: dict[str, Any] = {
        "format": SAVE_FORMAT,
        "bundle": {"name": bundle.name, "model_sha256": bundle.model.sha256,
                   "model_data_sha256": bundle.model.data_sha256,
                   "adapter_sha256": npc.adapter.fingerprint if npc.adapter is not None else ""},
        "history": [list(exchange) for exchange in now.history],
        "turn": now.turn,
        "summarised_turns": now.summarised_turns,
        "turns_since_summary": now.turns_since_summary,
        "facts": dict(now.facts),
        "game_time": now.game_time,
        "rng": _pack_rng(rng_state(now.rng)),
        "lore_timers": now.lore.state(),
        "memories": store.to_state(own),
        "next_memory_id": store.next_id,
        "forgotten": forgotten,
        "kv": None,
    }
    if include_kv:
        state["kv"] = {"tokens": list(now.seq.tokens),
                       "data": now.engine.read_kv(now.seq).astype("<f4", copy=False).tobytes()}
    return state


def _restore(npc: Npc, state: dict[str, Any]) -> NpcState:
    """Check and build everything a save holds, without touching `npc`; `Npc.restore` swaps it in."""
    bundle = state.get("bundle")
    if not isinstance(bundle, dict):
        raise InvalidArgumentError("missing bundle identity")
    if bundle.get("name") != npc.bundle.name:
        raise SaveMismatchError(f"this save belongs to the character {bundle.get('name')!r}, "
                                f"not {npc.bundle.name!r}")
    # Saves made before the weights' hash was recorded have no model_data_sha256: the graph's decides.
    if bundle.get("model_sha256") != npc.bundle.model.sha256 or \
            bundle.get("model_data_sha256", npc.bundle.model.data_sha256) != npc.bundle.model.data_sha256:
        raise SaveMismatchError("this save was made with another model than this NPC's bundle runs "
                                "(model sha256 differs)")
    adapter = npc.adapter.fingerprint if npc.adapter is not None else ""
    if bundle.get("adapter_sha256", "") != adapter:
        raise SaveMismatchError("this save was made with another adapter than this NPC's bundle carries "
                                "(adapter sha256 differs)")

    history = state["history"]
    if not isinstance(history, list) or len(history) > MAX_HISTORY or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in history):
        raise InvalidArgumentError("history must be a list of [player line, reply] pairs")
    counters = {key: state[key] for key in ("turn", "summarised_turns", "turns_since_summary", "next_memory_id")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62 for v in counters.values()):
        raise InvalidArgumentError("turn counters must be non-negative integers")
    game_time = state["game_time"]
    if game_time is not None and (isinstance(game_time, bool) or not isinstance(game_time, (int, float))):
        raise InvalidArgumentError("game_time must be a number or nil")

    facts = GameState()
    facts.replace(_mapping(state["facts"], "facts"))
    rng = _unpack_rng(state["rng"])
    store = bundle_store(npc.bundle)
    forgotten = state["forgotten"]
    if not isinstance(forgotten, list) or not all(isinstance(t, str) for t in forgotten):
        raise InvalidArgumentError("forgotten must be a list of texts")
    forgotten_texts = set(forgotten)
    for memory in [m for m in store if m.text in forgotten_texts]:
        store.forget(memory.id)
    memories = _mapping(state["memories"], "memories")
    if any(not isinstance(i, int) or i < OWN_FIRST_ID for i in memories.get("ids", [])):
        raise InvalidArgumentError("memories gained in play must have ids from OWN_FIRST_ID up")
    store.add_state(memories)
    store.next_id = max(store.next_id, counters["next_memory_id"])
    now = npc.snapshot()
    lore = LoreScanner(now.lore.book, now.lore.count_tokens)
    lore.restore(state["lore_timers"])
    return NpcState([(p, n) for p, n in history], counters["turn"], counters["summarised_turns"],
                    counters["turns_since_summary"], facts, game_time, rng, store, lore,
                    _restore_kv(now, npc.persona_tokens, state["kv"], npc.adapter), now.engine)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a map")
    return value


def _pack_rng(state: dict[str, Any]) -> dict[str, Any]:
    """PCG64's state and increment are 128-bit integers: msgpack carries them as 16 bytes each."""
    inner = state["state"]
    return {"bit_generator": state["bit_generator"],
            "state": inner["state"].to_bytes(16, "big"), "inc": inner["inc"].to_bytes(16, "big"),
            "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}


def _unpack_rng(packed: Any) -> np.random.Generator:
    packed = _mapping(packed, "rng")
    if packed.get("bit_generator") != "PCG64" or not all(
            isinstance(packed.get(k), bytes) and len(packed[k]) == 16 for k in ("state", "inc")) or not all(
            isinstance(packed.get(k), int) and not isinstance(packed[k], bool) and 0 <= packed[k] < 1 << 32
            for k in ("has_uint32", "uinteger")):
        raise InvalidArgumentError("rng must be a PCG64 state")
    return rng_from_state({
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(packed["state"], "big"), "inc": int.from_bytes(packed["inc"], "big")},
        "has_uint32": packed["has_uint32"], "uinteger": packed["uinteger"],
    })


def _restore_kv(now: NpcState, persona_tokens: list[int], kv: Any, adapter: Adapter | None):
    """The KV sequence a save holds, checked against the model. When it holds none, the NPC's cache of
    its persona is kept (it is the same in every state) and the rest is prefilled by the next reply."""
    if kv is None:
        seq = now.seq.fork()
        seq.rewind(common_prefix(seq.tokens, persona_tokens))
        return seq
    kv = _mapping(kv, "kv")
    tokens, data = kv.get("tokens"), kv.get("data")
    spec = now.engine.spec
    if not isinstance(tokens, list) or len(tokens) > spec.context_length or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < spec.vocab_size for t in tokens):
        raise InvalidArgumentError("kv.tokens must be token ids, at most the context length")
    shape = (2 * spec.num_layers, spec.num_kv_heads, len(tokens), spec.head_dim)
    if not isinstance(data, bytes) or len(data) != int(np.prod(shape)) * 4:
        raise InvalidArgumentError("kv.data does not match the model's cache shape")
    # load_kv copies the cache into the engine's own memory: the bytes are read in place, not copied first.
    return now.engine.load_kv(tokens, np.frombuffer(data, dtype="<f4").reshape(shape), adapter)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a directory and needs no such step)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

