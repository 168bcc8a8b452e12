"""The Python functions behind the C ABI (bindings/lmpc.h), and the status codes they return.

`CApi` works on plain Python values (handles are ints, strings are bytes) so it can be tested and fuzzed
without C; `bind(ffi, lib)` wraps each of its methods as the `_lmpc_py_*` function liblmpc.so calls,
converting C arguments and out-pointers. Every wrapper catches every exception, maps it to a status
code and hands the message to the C side for `lmpc_errmsg()`: nothing raised in Python reaches C.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import (
    BundleError,
    BundleMissingError,
    ContextOverflowError,
    InvalidArgumentError,
    LmpcError,
    ModelError,
    SaveError,
    StateError,
)
from .npc import Npc
from .reply import (
    ACTION, DONE, EMOTION, ERROR, FINISH_CANCELLED, FINISH_END, FINISH_ERROR, FINISH_FALLBACK, FINISH_LENGTH, FINISH_REPEAT,
    FINISH_STOP, LOADED, LOADING, SENTENCE, STARTED, SUMMARY, TEXT, Event,
)
from .runtime import Runtime

OK, PENDING, DONE_STATUS = 0, 1, 2
E_ERROR, E_INVAL, E_NOTFOUND, E_BUNDLE, E_SAVE, E_TOOSMALL, E_STATE, E_MODEL, E_BOOT, E_NOMEM, E_INTERNAL = (
    -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11)
BOOT_OK = 1
MAX_MESSAGE = 2000

EVENT_CODES = {STARTED: 1, TEXT: 2, SENTENCE: 3, DONE: 4, ERROR: 5, SUMMARY: 6, LOADING: 7, LOADED: 8,
               ACTION: 9, EMOTION: 10}
FINISH_CODES = {FINISH_END: 1, FINISH_LENGTH: 2, FINISH_STOP: 3, FINISH_REPEAT: 4, FINISH_CANCELLED: 5,
                FINISH_FALLBACK: 6, FINISH_ERROR: 7}


class CallError(Exception):
    """A failure with its C status code decided where it is raised."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(exc: BaseException) -> int:
    """The C status code for an exception (the most specific class wins)."""
    if isinstance(exc, CallError):
        return exc.status
    if isinstance(exc, StateError):
        return E_STATE
    if isinstance(exc, (BundleMissingError, FileNotFoundError)):
        return E_NOTFOUND
    if isinstance(exc, BundleError):
        return E_BUNDLE
    if isinstance(exc, SaveError):
        return E_SAVE
    if isinstance(exc, (InvalidArgumentError, UnicodeDecodeError)):
        return E_INVAL
    if isinstance(exc, (ModelError, ContextOverflowError)):
        return E_MODEL
    if isinstance(exc, MemoryError):
        return E_NOMEM
    if isinstance(exc, LmpcError):
        return E_ERROR
    return E_INTERNAL


def text_arg(raw: bytes | None, what: str) -> str:
    if raw is None:
        raise CallError(E_INVAL, f"{what} is NULL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CallError(E_INVAL, f"{what} is not valid UTF-8 (byte {exc.start})") from None


def fact_value(raw: str) -> Any:
    """A fact's value as the game wrote it: a JSON number, true, false or null, or else plain text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, (bool, int, float)) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            return raw
        return value
    return raw


def event_text(event: Event) -> str:
    """An event's text as C reads it: an action as JSON (name and arguments), any other as it is."""
    if event.kind == ACTION:
        return json.dumps({"name": event.text, "args": event.args}, ensure_ascii=False)
    return event.text


def values_arg(raw: bytes | None) -> list[str]:
    """An action's values as the game wrote them: a JSON array of strings."""
    text = text_arg(raw, "values")
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CallError(E_INVAL, f"values must be a JSON array of strings, e.g. [\"coin\"], not {text[:80]!r}")
    return values


@dataclass
class _OpenRuntime:
    runtime: Runtime
    max_npcs: int
    npcs: dict[str, int] = field(default_factory=dict)  # npc id -> handle
    # Polled from the runtime, not yet taken by C, with the handle of their NPC (0 if it was unloaded).
    waiting: deque[tuple[Event, int]] = field(default_factory=deque)


class CApi:
    """The state behind the C handles: runtimes and NPCs by integer handle (never reused)."""

    def __init__(self) -> None:
        self._runtimes: dict[int, _OpenRuntime] = {}
        self._npcs: dict[int, tuple[int, Npc | None]] = {}  # None while the NPC loads in the background
        self._handles = itertools.count(1)

    # -- runtimes --------------------------------------------------------------------------------

    def open(self, threads: int, has_seed: bool, seed: int, max_npcs: int, worker: bool, duty_cycle: float) -> int:
        if max_npcs < 0:
            raise CallError(E_INVAL, f"max_npcs must be >= 0, not {max_npcs}")
        runtime = Runtime(threads=threads, seed=seed if has_seed else None, worker=bool(worker),
                          duty_cycle=duty_cycle)
        handle = next(self._handles)
        self._runtimes[handle] = _OpenRuntime(runtime, max_npcs)
        return handle

    def close(self, rt: int) -> None:
        entry = self._runtime(rt)
        entry.runtime.close()
        for npc_handle in entry.npcs.values():
            self._npcs.pop(npc_handle, None)
        del self._runtimes[rt]

    def tick(self, rt: int, budget_us: int) -> int:
        runtime = self._runtime(rt).runtime
        runtime.tick(budget_ms=budget_us / 1000)
        return PENDING if runtime.busy() else DONE_STATUS

    def poll(self, rt: int, text_cap: int) -> tuple[int, dict[str, Any] | None, bytes]:
        """(status, event fields, text bytes): OK with an event, DONE if none waits, TOOSMALL if its text
        needs more than `text_cap` bytes (the event then stays first in line)."""
        entry = self._runtime(rt)
        for event in entry.runtime.poll():
            entry.waiting.append((event, entry.npcs.get(event.npc, 0)))
            if event.kind == LOADED:
                self._loaded(rt, entry, event)
        if not entry.waiting:
            return DONE_STATUS, None, b""
        event, npc_handle = entry.waiting[0]
        text = event_text(event).encode("utf-8")
        fields = {
            "kind": EVENT_CODES[event.kind],
            "finish": FINISH_CODES.get(event.finish, 0),
            "reply_id": event.reply,
            "tokens": event.tokens,
            "npc": npc_handle,
            "text_len": len(text),
        }
        if len(text) + 1 > text_cap:
            return E_TOOSMALL, fields, b""
        entry.waiting.popleft()
        return OK, fields, text

    # -- NPCs ------------------------------------------------------------------------------------

    def npc_load(self, rt: int, path: bytes | None, npc_id: bytes | None) -> int:
        return self._load(rt, path, npc_id, wait=True)

    def npc_load_async(self, rt: int, path: bytes | None, npc_id: bytes | None) -> int:
        """A handle at once; the NPC loads in the background (Runtime.start_loading) and calls on it give
        E_STATE until its LOADED event, after which a failed load's handle is no longer valid."""
        return self._load(rt, path, npc_id, wait=False)

    def _load(self, rt: int, path: bytes | None, npc_id: bytes | None, wait: bool) -> int:
        entry = self._runtime(rt)
        bundle = text_arg(path, "bundle_path")
        name = None if npc_id is None else text_arg(npc_id, "npc_id")
        if entry.max_npcs and len(entry.npcs) >= entry.max_npcs:
            raise CallError(E_INVAL, f"this runtime already has its maximum of {entry.max_npcs} NPCs")
        if wait:
            npc: Npc | None = entry.runtime.load_npc(bundle, npc_id=name)
            loaded_id = npc.id
        else:
            npc, loaded_id = None, entry.runtime.start_loading(bundle, npc_id=name)
        handle = next(self._handles)
        self._npcs[handle] = (rt, npc)
        entry.npcs[loaded_id] = handle
        return handle

    def _loaded(self, rt: int, entry: _OpenRuntime, event: Event) -> None:
        handle = entry.npcs.get(event.npc)
        if handle is None:
            return
        if event.finish:  # failed or unloaded while loading: the handle ends here
            del entry.npcs[event.npc]
            self._npcs.pop(handle, None)
        else:
            self._npcs[handle] = (rt, entry.runtime.npc(event.npc))

    def npc_unload(self, npc_handle: int) -> None:
        found = self._npcs.get(npc_handle)
        if found is not None and found[1] is None:  # still loading: dropped when its load ends
            rt = found[0]
            entry = self._runtimes[rt]
            npc_id = next(i for i, h in entry.npcs.items() if h == npc_handle)
            entry.runtime.unload_npc(npc_id)
            del entry.npcs[npc_id], self._npcs[npc_handle]
            return
        rt, npc = self._npc(npc_handle)
        entry = self._runtimes[rt]
        entry.runtime.unload_npc(npc)
        del entry.npcs[npc.id], self._npcs[npc_handle]

    def say(self, npc_handle: int, text: bytes | None) -> int:
        rt, npc = self._npc(npc_handle)
        return self._runtimes[rt].runtime.say(npc, text_arg(text, "text"))

    def cancel(self, npc_handle: int) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.cancel(npc)

    def set_priority(self, npc_handle: int, priority: float) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.set_priority(npc, priority)

    def set_fact(self, npc_handle: int, key: bytes | None, value: bytes | None) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.set_fact(npc, text_arg(key, "key"), fact_value(text_arg(value, "value")))

    def set_action_values(self, npc_handle: int, action: bytes | None, argument: bytes | None,
                          values: bytes | None) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.set_action_values(npc, text_arg(action, "action"), text_arg(argument, "argument"),
                                                     values_arg(values))

    def save_state(self, npc_handle: int, path: bytes | None) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.save_state(npc, text_arg(path, "path"))

    def load_state(self, npc_handle: int, path: bytes | None) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.load_state(npc, text_arg(path, "path"))

    def save_state_bytes(self, npc_handle: int) -> bytes:
        rt, npc = self._npc(npc_handle)
        return self._runtimes[rt].runtime.save_state_bytes(npc)

    def load_state_bytes(self, npc_handle: int, data: bytes) -> None:
        rt, npc = self._npc(npc_handle)
        self._runtimes[rt].runtime.load_state_bytes(npc, data)

    # -- handles ---------------------------------------------------------------------------------

    def _runtime(self, handle: int) -> _OpenRuntime:
        entry = self._runtimes.get(handle)
        if entry is None:
            raise CallError(E_STATE, "invalid or closed runtime handle")
        return entry

    def _npc(self, handle: int) -> tuple[int, Npc]:
        found = self._npcs.get(handle)
        if found is None:
            raise CallError(E_NOTFOUND, "no such NPC: the handle is invalid, or the NPC was unloaded")
        rt, npc = found
        if npc is None:
            raise CallError(E_STATE, "the NPC is still loading: wait for its LMPC_EVENT_LOADED event")
        return rt, npc


def guarded(call: Callable[[], int | None], report: Callable[[str], None]) -> int:
    """Run one C entry point: its own status (or OK), or the status of whatever it raised."""
    try:
        status = call()
        return OK if status is None else status
    except BaseException as exc:  # nothing may cross into C, not even KeyboardInterrupt
        report(f"{type(exc).__name__}: {exc}" if status_of(exc) == E_INTERNAL else str(exc))
        return status_of(exc)


def bind(ffi, lib, api: CApi | None = None) -> CApi:
    """Define the `_lmpc_py_*` functions of liblmpc.so (called once from its start-up code)."""
    api = api or CApi()

    def report(message: str) -> None:
        lib.lmpc_set_error(message.encode("utf-8", "replace")[:MAX_MESSAGE])

    def string(p) -> bytes | None:
        return None if p == ffi.NULL else ffi.string(p)

    def entry(name: str):
        def register(fn):
            ffi.def_extern(name=name)(lambda *args: guarded(lambda: fn(*args), report))
            return fn
        return register

    @entry("_lmpc_py_boot")
    def _boot():
        return BOOT_OK

    @entry("_lmpc_py_open")
    def _open(threads, has_seed, seed, max_npcs, worker, duty_cycle, out):
        out[0] = api.open(threads, bool(has_seed), seed, max_npcs, worker, duty_cycle)

    @entry("_lmpc_py_close")
    def _close(rt):
        api.close(rt)

    @entry("_lmpc_py_npc_load")
    def _npc_load(rt, path, npc_id, out):
        out[0] = api.npc_load(rt, string(path), string(npc_id))

    @entry("_lmpc_py_npc_load_async")
    def _npc_load_async(rt, path, npc_id, out):
        out[0] = api.npc_load_async(rt, string(path), string(npc_id))

    @entry("_lmpc_py_npc_unload")
    def _npc_unload(npc):
        api.npc_unload(npc)

    @entry("_lmpc_py_say")
    def _say(npc, text, reply_id):
        reply_id[0] = api.say(npc, string(text))

    @entry("_lmpc_py_cancel")
    def _cancel(npc):
        api.cancel(npc)

    @entry("_lmpc_py_set_priority")
    def _set_priority(npc, priority):
        api.set_priority(npc, priority)

    @entry("_lmpc_py_set_fact")
    def _set_fact(npc, key, value):
        api.set_fact(npc, string(key), string(value))

    @entry("_lmpc_py_set_action_values")
    def _set_action_values(npc, action, argument, values):
        api.set_action_values(npc, string(action), string(argument), string(values))

    @entry("_lmpc_py_tick")
    def _tick(rt, budget_us):
        return api.tick(rt, budget_us)

    @entry("_lmpc_py_poll")
    def _poll(rt, event, text, text_cap):
        status, fields, data = api.poll(rt, text_cap)
        if fields is not None:
            for key, value in fields.items():
                setattr(event, key, ffi.cast("lmpc_npc *", value) if key == "npc" else value)
        if status == OK:
            ffi.memmove(text, data + b"\0", len(data) + 1)
        return status

    @entry("_lmpc_py_save_state")
    def _save_state(npc, path):
        api.save_state(npc, string(path))

    @entry("_lmpc_py_load_state")
    def _load_state(npc, path):
        api.load_state(npc, string(path))

    @entry("_lmpc_py_save_state_buffer")
    def _save_state_buffer(npc, buffer, capacity, length):
        data = api.save_state_bytes(npc)
        length[0] = len(data)
        if len(data) > capacity:
            report(f"the save needs {len(data)} bytes, the buffer holds {capacity}")
            return E_TOOSMALL
        ffi.memmove(buffer, data, len(data))

    @entry("_lmpc_py_load_state_buffer")
    def _load_state_buffer(npc, buffer, length):
        api.load_state_bytes(npc, ffi.buffer(buffer, length)[:])

    return api
