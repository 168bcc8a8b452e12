"""Loading NPC bundles without stopping the game: one background thread reads bundles, opens their
models and reads their personas, in the order the game asked, while the game's frames go on.

What runs where:
- on the loading thread: reading and hash-checking the bundle, opening an onnxruntime session, the
  sentence embedder and the tokenizer. onnxruntime and file reads release Python's GIL, so the game's
  thread keeps running; parsing a tokenizer does not (about 0.15 s, once per tokenizer file: the one
  hitch a load can still cause);
- where the model runs (the worker thread, or in tick mode the game's thread's lock on the model; a
  frame whose model work finds the lock taken skips it): the persona's prefill into the KV cache, a
  fraction of a second, or nothing when an NPC of the same persona is already loaded;
- on the game's thread, in `Runtime.poll()`: the loaded NPC joins the runtime, and its `loaded` event
  is queued after its `loading` events.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .errors import StateError

# The stages of a load and the percent done when each starts (measured shares of a load of the demo NPC
# on 2 cores: bundle 35 %, model 30 %, memory 20 %, persona 15 %).
STAGES = {"reading the bundle": 0, "opening the model": 35, "opening the memory": 65, "reading the persona": 85}
STOP_TIMEOUT_S = 30.0  # close() waits at most this for the stage in progress (each takes well under a second)


@dataclass
class LoadRequest:
    npc_id: str
    bundle_path: Any
    seed: int
    sampling: Any
    priority: float


@dataclass
class LoadResult:
    request: LoadRequest
    loaded: Any = None  # what the load function returned, when it succeeded
    error: BaseException | None = None


class Loader:
    """A lazily started thread that runs `load(request, progress)` for each request, one at a time.
    `progress(stage)` reports a stage of STAGES, and raises `StateError` once the loader is stopping."""

    def __init__(self, load: Callable[[LoadRequest, Callable[[str], None]], Any],
                 report: Callable[[LoadRequest, str, int], None]):
        self._load = load
        self._report = report
        self._requests: queue.SimpleQueue[LoadRequest | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[LoadResult] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, request: LoadRequest) -> None:
        if self._stopping.is_set():
            raise StateError("the runtime is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lmpc-loader", daemon=True)
            self._thread.start()
        self._requests.put(request)

    def finished(self) -> list[LoadResult]:
        """The loads that ended since the last call, in the order they ended."""
        results = []
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                return results

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Abandon waiting loads, end the one in progress at its next stage, and wait for the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while (request := self._requests.get()) is not None and not self._stopping.is_set():
            def progress(stage: str, request: LoadRequest = request) -> None:
                if self._stopping.is_set():
                    raise StateError("the runtime was closed while the NPC was loading")
                self._report(request, stage, STAGES[stage])

            try:
                self._results.put(LoadResult(request, loaded=self._load(request, progress)))
            except Exception as exc:  # the game hears of it in the NPC's `loaded` event
                self._results.put(LoadResult(request, error=exc))
