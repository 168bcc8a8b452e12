"""The runtime a game opens once: it loads NPC bundles, queues what players say, and does the model work
inside `tick()` — the only call that does heavy work — within the frame budget the game gives it.
NPCs of the same model share one engine, and NPCs whose bundles carry the same sentence embedder share
one embedder session.

    rt = Runtime(threads=2)
    orlando = rt.load_npc("build/orlando_marlo.lmpc")      # at a loading screen: builds a session
    rt.say(orlando, "Who are you?", priority=FOCUS)        # queues, returns at once
    while running:                                          # every frame
        rt.tick(budget_ms=4)
        for event in rt.poll(): ...                         # started / text / sentence / done / error

With `worker=True` the model work runs on a background thread instead (see worker.py): `tick()` then
does no model work and `poll()` drains what the thread produced.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from tokenizers import Tokenizer

from .adapters import read_adapter
from .bundle import read_bundle, read_manifest
from .chat import ChatFormat
from .engine import Engine, EngineOptions, open_engine
from .errors import InvalidArgumentError, LmpcError, StateError
from .loader import Loader, LoadRequest
from .memory.embedder import Embedder
from .memory.store import Memory
from .npc import Npc, clean_player_text
from .reply import DONE, ERROR, FINISH_CANCELLED, FINISH_ERROR, LOADED, LOADING, Event
from .sampling import SamplingConfig
from .scheduler import AMBIENT, FOCUS, NORMAL, Scheduler, TickStats

__all__ = ["AMBIENT", "FOCUS", "NORMAL", "Runtime", "TickStats"]

# Upkeep the NPCs ask for (summaries of old exchanges) runs behind every reply; aging still moves it on.
BACKGROUND = AMBIENT - 10.0


@dataclass
class _Line:
    """A player line waiting for its NPC to be free."""

    reply_id: int
    text: str
    priority: float | None
    deadline_s: float | None
    sampling: SamplingConfig | None


T = TypeVar("T")


class Runtime:
    """Owns the loaded models and NPCs. `seed` makes every NPC's replies reproducible run to run.

    Thread rule: call a Runtime from one thread (the game's main thread). In worker mode the Runtime
    starts its own background thread, and the calls stay safe to make from that one game thread.
    """

    def __init__(self, threads: int = 2, spinning: bool = False, seed: int | None = None,
                 worker: bool = False, duty_cycle: float = 0.5, clock: Callable[[], float] = time.perf_counter,
                 segmented: bool | None = None):
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 256:
            raise InvalidArgumentError(f"threads must be an integer in 1..256, not {threads!r}")
        if segmented is not None and not isinstance(segmented, bool):
            raise InvalidArgumentError(f"segmented must be true, false or None, not {segmented!r}")
        # Tick mode runs the model a segment at a time, to stop when the frame's budget is spent; the worker
        # thread need not stop, and runs each pass whole (faster, and fewer hand-overs of Python's GIL).
        # A caller with no frame to keep (a tool, `npc.ask` in a script) passes segmented=False: whole
        # passes in tick mode too, a tick then overrunning its budget by up to one pass.
        self.options = EngineOptions(threads=threads, spinning=spinning,
                                     segmented=not worker if segmented is None else segmented)
        self.clock = clock
        self._scheduler = Scheduler(clock=clock)
        self._seeds = np.random.SeedSequence(seed)
        self._engines: dict[tuple[str, str, str], Engine] = {}  # by ModelSpec.weights_id
        self._embedders: dict[str, Embedder] = {}  # by the embedder file's sha256
        self._tokenizers: dict[str, Tokenizer] = {}  # by the tokenizer file's sha256
        # Looked up by the caller's thread; `_npcs`, `_lines` and `_priority` belong to whichever thread
        # does the model work (the caller's, or the worker's: changes reach it through `_call`).
        self._registry: dict[str, Npc] = {}
        self._npcs: dict[str, Npc] = {}
        self._ids = itertools.count(1)
        self._lines: dict[str, deque[_Line]] = {}
        self._priority: dict[str, float] = {}
        self._events: deque[Event] = deque()
        self._owner = threading.get_ident()
        self._loader = Loader(self._open_npc, self._report_loading)
        self._loading: dict[str, bool] = {}  # ids of NPCs loading in the background -> unloaded meanwhile
        self._model_lock = threading.Lock()  # tick mode: held by whoever drives the model
        self._worker = None
        if worker:
            from .worker import Worker

            self._worker = Worker(self, duty_cycle)
            self._worker.start()

    # -- NPCs ------------------------------------------------------------------------------------

    def load_npc(self, bundle_path: str | Path, npc_id: str | None = None, seed: int | None = None,
                 sampling: SamplingConfig | None = None, priority: float = NORMAL) -> Npc:
        """Load a bundle (validated and hash-checked) as a new NPC and return it. Heavy (about a second):
        call it at a loading screen, or use `start_loading`, which does not wait.

        The persona's KV cache is computed now (once per model and persona, shared by the NPCs that use
        it), so the first reply only reads the player's line. Raises a `BundleError` subclass for a bad bundle,
        `InvalidArgumentError` for a taken id.
        """
        self._check_thread()
        request = LoadRequest(self._new_npc_id(bundle_path, npc_id), bundle_path, self._npc_seed(seed), sampling,
                              _priority_value(priority))
        return self._admit(self._open_npc(request, lambda stage: None), request.priority)

    def start_loading(self, bundle_path: str | Path, npc_id: str | None = None, seed: int | None = None,
                      sampling: SamplingConfig | None = None, priority: float = NORMAL) -> str:
        """Load a bundle on a background thread (loader.py) and return the new NPC's id at once; the
        game's frames go on meanwhile. `poll()` then gives `loading` events (text: the stage, `tokens`:
        the percent done) and one `loaded` event: finish "" when the NPC is ready (`npc(id)` finds it
        from then on), `error` with the reason in its text, or `cancelled` if it was unloaded first.
        A missing bundle directory, an unreadable manifest or a taken id raise here, at once.
        """
        self._check_thread()
        request = LoadRequest(self._new_npc_id(bundle_path, npc_id), bundle_path, self._npc_seed(seed), sampling,
                              _priority_value(priority))
        self._loader.submit(request)
        self._loading[request.npc_id] = False
        return request.npc_id

    def _new_npc_id(self, bundle_path: str | Path, npc_id: str | None) -> str:
        if npc_id is not None and (not isinstance(npc_id, str) or not npc_id):
            raise InvalidArgumentError("npc_id must be a non-empty string")
        if npc_id is None:
            name = read_manifest(bundle_path).get("name")
            npc_id = f"{name if isinstance(name, str) and name else Path(bundle_path).name}#{next(self._ids)}"
        if npc_id in self._registry or npc_id in self._loading:
            raise InvalidArgumentError(f"an NPC with id {npc_id!r} is already loaded")
        return npc_id

    def _npc_seed(self, seed: int | None) -> int:
        return int(self._seeds.spawn(1)[0].generate_state(1)[0]) if seed is None else seed

    def _open_npc(self, request: LoadRequest, progress: Callable[[str], None]) -> tuple[Npc, tuple, Engine]:
        """Make the NPC a request asks for (on the game's thread or the loader's): what it shares with
        loaded NPCs is reused, and its persona is prefilled where the model runs."""
        progress("reading the bundle")
        bundle = read_bundle(request.bundle_path)
        progress("opening the model")
        key = bundle.model.weights_id
        engine = self._engines.get(key)
        if engine is None:
            engine = open_engine(str(bundle.model_path), bundle.model, self.options)
        adapter = read_adapter(bundle.adapter_path, bundle.adapter.sha256) if bundle.adapter is not None else None
        progress("opening the memory")
        embedder = self._embedders.get(bundle.embedder.sha256)
        if embedder is None:
            embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder,
                                self.options)
        tokenizer = self._tokenizers.get(bundle.tokenizer_sha256)
        if tokenizer is None:  # parsing the 3.5 MB tokenizer takes a while: NPCs of one bundle share it
            tokenizer = self._tokenizers[bundle.tokenizer_sha256] = Tokenizer.from_file(str(bundle.tokenizer_path))
        chat = ChatFormat(tokenizer, bundle.special)
        progress("reading the persona")
        # The NPC's cache is taken from the engine's prefix cache, so it is made where the engine is driven;
        # so is the adapter attached (the engine keeps one copy per adapter file).
        npc = self._on_model(lambda: Npc(request.npc_id, bundle, engine, chat, embedder, seed=request.seed,
                                         sampling=request.sampling,
                                         adapter=engine.attach_adapter(adapter) if adapter is not None else None))
        return npc, key, engine

    def _admit(self, opened: tuple[Npc, tuple, Engine], priority: float) -> Npc:
        npc, key, engine = opened
        self._registry[npc.id] = npc
        self._call(lambda: self._add_npc(npc, key, engine, priority))
        return npc

    def _add_npc(self, npc: Npc, key: tuple, engine: Engine, priority: float) -> None:
        self._engines.setdefault(key, engine)
        self._embedders.setdefault(npc.bundle.embedder.sha256, npc.embedder)
        self._npcs[npc.id] = npc
        self._lines[npc.id] = deque()
        self._priority[npc.id] = priority

    def _admit_loaded(self) -> None:
        """Let the NPCs loaded in the background join, and queue their `loaded` events."""
        for result in self._loader.finished():
            request = result.request
            unloaded = self._loading.pop(request.npc_id)
            if result.error is not None:
                finish, text = FINISH_ERROR, str(result.error)
            elif unloaded:
                finish, text = FINISH_CANCELLED, ""
            else:
                self._admit(result.loaded, request.priority)
                finish, text = "", ""
            self._events.append(Event(LOADED, request.npc_id, 0, text, finish, 100 if not finish else 0))

    def _report_loading(self, request: LoadRequest, stage: str, percent: int) -> None:
        self._events.append(Event(LOADING, request.npc_id, 0, stage, "", percent))  # deque appends are thread-safe

    def npc(self, npc: str | Npc) -> Npc:
        npc_id = npc.id if isinstance(npc, Npc) else npc
        try:
            return self._registry[npc_id]
        except (KeyError, TypeError):
            if isinstance(npc_id, str) and npc_id in self._loading:
                raise StateError(f"the NPC {npc_id!r} is still loading: wait for its 'loaded' event") from None
            raise InvalidArgumentError(f"no NPC with id {npc_id!r} is loaded") from None

    @property
    def npcs(self) -> list[Npc]:
        return list(self._registry.values())

    def unload_npc(self, npc: str | Npc) -> None:
        """Unload an NPC; a reply in progress ends with a `done` event whose finish is `cancelled`. An NPC
        still loading is dropped when its load ends (its `loaded` event then says `cancelled`)."""
        self._check_thread()
        if isinstance(npc, str) and npc in self._loading:
            self._loading[npc] = True
            return
        target = self.npc(npc)
        del self._registry[target.id]
        self._call(lambda: self._remove_npc(target))

    def _remove_npc(self, npc: Npc) -> None:
        if npc.id not in self._npcs:
            return
        self._cancel(npc)
        for job in [j for j in self._scheduler.jobs if j.reply.npc_id == npc.id]:
            self._scheduler.cancel(job.reply)  # its background jobs: a summary nobody will read
        del self._npcs[npc.id], self._lines[npc.id], self._priority[npc.id]
        # A model or tokenizer no NPC uses any more is released.
        in_use = {n.bundle.model.weights_id for n in self._npcs.values()}
        for key in [k for k in self._engines if k not in in_use]:
            del self._engines[key]
        embedders_in_use = {n.bundle.embedder.sha256 for n in self._npcs.values()}
        for key in [k for k in self._embedders if k not in embedders_in_use]:
            del self._embedders[key]
        tokenizers_in_use = {n.bundle.tokenizer_sha256 for n in self._npcs.values()}
        for key in [k for k in self._tokenizers if k not in tokenizers_in_use]:
            self._tokenizers.pop(key, None)

    # -- talking ---------------------------------------------------------------------------------

    def say(self, npc: str | Npc, text: str, priority: float | None = None, deadline_ms: float | None = None,
            sampling: SamplingConfig | None = None, interrupt: bool = False) -> int:
        """Queue a line said to `npc`; returns the id its reply's events will carry. Does no model work.

        Lines said while the NPC is answering wait their turn, unless `interrupt` cancels that answer.
        `priority` overrides the NPC's own for this reply; `deadline_ms` asks for the first token within
        that time (the scheduler raises the reply's urgency as the deadline nears).
        Raises `InvalidArgumentError` for an unknown NPC or an empty line.
        """
        self._check_thread()
        target = self.npc(npc)
        line = _Line(target.next_reply_id(), clean_player_text(text),
                     None if priority is None else _priority_value(priority),
                     None if deadline_ms is None else _positive_ms(deadline_ms, "deadline_ms") / 1000, sampling)

        def enqueue() -> None:
            if interrupt:
                self._cancel(target)
            if target.id in self._lines:
                self._lines[target.id].append(line)

        self._call(enqueue)
        return line.reply_id

    def cancel(self, npc: str | Npc) -> None:
        """Stop the NPC's reply in progress and drop its waiting lines (a `done`/`cancelled` event follows)."""
        self._check_thread()
        target = self.npc(npc)
        self._call(lambda: self._cancel(target))

    def _cancel(self, npc: Npc) -> None:
        self._lines.get(npc.id, deque()).clear()
        if npc.current is not None and not npc.current.done:
            self._events.extend(self._scheduler.cancel(npc.current))

    def set_priority(self, npc: str | Npc, priority: float) -> None:
        """The NPC's priority for this and later replies: FOCUS for the one the player talks to, AMBIENT
        for background chatter (any number works; higher runs first)."""
        self._check_thread()
        target, value = self.npc(npc), _priority_value(priority)

        def apply() -> None:
            self._priority[target.id] = value
            if target.current is not None:
                self._scheduler.set_priority(target.current, value)

        self._call(apply)

    # -- the frame -------------------------------------------------------------------------------

    def tick(self, budget_ms: float = 4.0, max_tokens: int | None = None) -> TickStats:
        """Do model work for at most `budget_ms` (and at most `max_tokens` tokens, prefill and decoded).

        A step of the model is started only if its predicted time fits what is left; if the budget is
        smaller than any single step, one step runs anyway so that replies progress (the tick then
        overruns by at most that step). A budget of 0 does no work. Events are drained with `poll()`.
        In worker mode this does no model work at all.
        """
        self._check_thread()
        budget = _budget_seconds(budget_ms)
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 0):
            raise InvalidArgumentError(f"max_tokens must be a non-negative integer or None, not {max_tokens!r}")
        if self._worker is not None:
            self._worker.raise_if_failed()
            return TickStats()
        return self._work(budget, max_tokens)

    def _work(self, budget_s: float, max_tokens: int | None = None) -> TickStats:
        """One slice of model work (what `tick` runs; the worker thread calls it in worker mode)."""
        if budget_s <= 0 or max_tokens == 0:
            return TickStats()
        if not self._model_lock.acquire(blocking=False):
            return TickStats()  # a background load is prefilling a persona: this frame skips model work
        try:
            start = self.clock()
            self._start_waiting_lines()
            self._start_background_jobs()
            events, stats = self._scheduler.tick(budget_s - (self.clock() - start), max_tokens)
            self._events.extend(events)
            stats.seconds = self.clock() - start
            return stats
        finally:
            self._model_lock.release()

    def _start_waiting_lines(self) -> None:
        for npc_id, lines in self._lines.items():
            npc = self._npcs[npc_id]
            if not lines or (npc.current is not None and not npc.current.done):
                continue
            line = lines.popleft()
            try:
                reply = npc.start_reply(line.text, line.sampling, reply_id=line.reply_id)
            except LmpcError as exc:
                self._events.append(Event(ERROR, npc_id, line.reply_id, str(exc)))
                self._events.append(Event(DONE, npc_id, line.reply_id, "", FINISH_ERROR))
                continue
            priority = line.priority if line.priority is not None else self._priority[npc_id]
            self._scheduler.submit(reply, npc._engine, priority, line.deadline_s, finished=npc.end_reply)

    def _start_background_jobs(self) -> None:
        queued = {id(job.reply) for job in self._scheduler.jobs}
        for npc in self._npcs.values():
            for reply in npc.background_jobs():
                if id(reply) not in queued:
                    self._scheduler.submit(reply, npc._engine, BACKGROUND)

    def poll(self) -> list[Event]:
        """Every event since the last poll, oldest first."""
        self._check_thread()
        self._admit_loaded()
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def busy(self) -> bool:
        """True while any reply is in progress, any line is waiting, or any NPC is loading."""
        if self._loading:
            return True
        if self._worker is not None and threading.get_ident() != self._worker.ident:
            return self._worker.busy
        return bool(self._scheduler.jobs) or any(self._lines.values())

    # -- game state and save games ---------------------------------------------------------------
    # The one safe way to change an NPC's state in both modes. Each call waits for the model work to be at
    # rest: in tick mode it runs at once; in worker mode it runs on the thread between two model steps, so
    # it waits for the step in flight (one forward pass) and then its own work (see worker.py).

    def set_fact(self, npc: str | Npc, name: str, value: bool | int | float | str | None) -> None:
        """Tell an NPC a fact or flag of the game (see Npc.facts); raises InvalidArgumentError on a bad one."""
        target = self.npc(npc)
        self._run(lambda: target.facts.set(name, value))

    def set_action_values(self, npc: str | Npc, action: str, argument: str, values: Sequence[str]) -> None:
        """The values an action's game-given argument may take now (Npc.set_action_values)."""
        target = self.npc(npc)
        self._run(lambda: target.set_action_values(action, argument, values))

    def remember(self, npc: str | Npc, text: str, kind: str = "event", importance: float = 0.5,
                 requires: str = "", cues: Sequence[str] = ()) -> int:
        """Give an NPC a memory of play (Npc.remember: embedded now, a few ms each for it and its cues);
        returns its id."""
        target = self.npc(npc)
        return self._run(lambda: target.remember(text, kind=kind, importance=importance, requires=requires,
                                                 cues=cues))

    def forget(self, npc: str | Npc, memory_id: int) -> Memory:
        """Remove one of an NPC's memories so it is never recalled again (Npc.forget)."""
        target = self.npc(npc)
        return self._run(lambda: target.forget(memory_id))

    def save_state(self, npc: str | Npc, path: str | Path, include_kv: bool = False) -> None:
        """Write an NPC's whole state to one file, atomically (Npc.save)."""
        target = self.npc(npc)
        self._run(lambda: target.save(path, include_kv))

    def save_state_bytes(self, npc: str | Npc, include_kv: bool = False) -> bytes:
        target = self.npc(npc)
        return self._run(lambda: target.to_bytes(include_kv))

    def load_state(self, npc: str | Npc, path: str | Path) -> None:
        """Restore a state written by save_state; the NPC's reply in progress and waiting lines are dropped."""
        target = self.npc(npc)
        self._run(lambda: self._load(target, lambda: target.load(path)))

    def load_state_bytes(self, npc: str | Npc, data: bytes) -> None:
        target = self.npc(npc)
        self._run(lambda: self._load(target, lambda: target.load_bytes(data)))

    def _load(self, npc: Npc, load: Callable[[], None]) -> None:
        self._cancel(npc)
        load()

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the loading and worker threads (if any) and unload every NPC. Safe to call twice."""
        self._loader.stop()
        self._loading.clear()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for npc in list(self._npcs.values()):
            self._remove_npc(npc)
        self._registry.clear()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, change: Callable[[], None]) -> None:
        """Apply a change to the runtime's state now, or hand it to the worker thread that owns it."""
        if self._worker is not None:
            self._worker.submit(change)
        else:
            change()

    def _run(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the runtime's state lives and return its result, waiting for the worker if any."""
        self._check_thread()
        return self._on_model(fn)

    def _on_model(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the model runs (from the game's thread or the loader's): on the worker thread, or
        in tick mode holding the model's lock, so a background load and a tick never drive it at once."""
        if self._worker is not None:
            self._worker.raise_if_failed()
            return self._worker.call(fn)
        with self._model_lock:
            return fn()

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise StateError("a Runtime must be called from the thread that created it")


def _priority_value(priority: float) -> float:
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
        raise InvalidArgumentError(f"priority must be a finite number, not {priority!r}")
    return float(priority)


def _positive_ms(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive number of milliseconds, not {value!r}")
    return float(value)


def _budget_seconds(budget_ms: float) -> float:
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or math.isnan(budget_ms):
        raise InvalidArgumentError(f"budget_ms must be a number, not {budget_ms!r}")
    return max(float(budget_ms), 0.0) / 1000
