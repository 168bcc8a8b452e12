"""Worker-thread mode: the model work runs on a background thread instead of inside `tick()`.

Trade-off (see README): in tick mode the game decides exactly when and how long the model runs, so a
frame's cost is bounded by its budget and timings are repeatable; but a reply advances only as fast as
the budgets add up. In worker mode replies advance whenever the thread gets CPU, up to `duty_cycle` of
the time, and `tick()` costs nothing; but the thread competes with the game's own threads for cores (and
for Python's GIL between model steps), so frame times get less predictable on a machine with few cores.
The thread runs each forward pass whole, not segment by segment as `tick()` must: it has no frame to
return to, and each segment would cost a little more time and one more hand-over of the GIL. The
replies themselves are the same in both modes: sampling depends only on the seed (and the logits of a
pass are the same whole or in segments).

The thread owns the runtime's scheduling state. The game's calls (`say`, `cancel`, `set_priority`, loading
and unloading NPCs) reach it as commands through a queue and never wait for a model step to finish;
events come back through the runtime's event deque.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Callable, TypeVar

from .errors import InvalidArgumentError, LmpcError, StateError

if TYPE_CHECKING:
    from .runtime import Runtime

SLICE_S = 0.008  # model work per wake-up before the thread pauses to honour its duty cycle
IDLE_WAIT_S = 0.05
CALL_TIMEOUT_S = 30.0  # a synchronous call waits for at most the model step in flight; this only guards a stuck thread

T = TypeVar("T")


class Worker:
    def __init__(self, runtime: "Runtime", duty_cycle: float):
        if isinstance(duty_cycle, bool) or not isinstance(duty_cycle, (int, float)) or not 0 < duty_cycle <= 1:
            raise InvalidArgumentError(f"duty_cycle must be in (0, 1], not {duty_cycle!r}")
        self.runtime = runtime
        self.duty_cycle = float(duty_cycle)
        self.busy = False
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="lmpc-worker", daemon=True)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self) -> None:
        self._thread.start()

    def submit(self, change: Callable[[], None]) -> None:
        self._commands.put(change)
        self._wake.set()

    def call(self, fn: Callable[[], T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        """Run `fn` on the worker thread between two model steps and return its result or raise its error
        (saving and loading an NPC must see its state at rest, and their errors belong to the caller)."""
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:  # delivered to the caller, not fatal to the thread
                result.set_exception(exc)

        self.submit(run)
        try:
            return result.result(timeout_s)
        except FutureTimeout:
            self.raise_if_failed()
            raise StateError(f"the LMPC worker thread did not answer within {timeout_s:g} s") from None

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise LmpcError(f"the LMPC worker thread stopped: {self._failure!r}") from self._failure

    def _loop(self) -> None:
        clock = self.runtime.clock
        try:
            while not self._stop.is_set():
                self._apply_commands()
                self.busy = self.runtime.busy()
                if not self.busy:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                started = clock()
                self.runtime.work(SLICE_S)
                spent = clock() - started
                # Rest long enough that work takes at most duty_cycle of the wall time.
                self._stop.wait(spent * (1 - self.duty_cycle) / self.duty_cycle)
        except BaseException as exc:  # a bug must surface in the game's next tick(), not vanish
            self._failure = exc
            self.busy = False

    def _apply_commands(self) -> None:
        while True:
            try:
                change = self._commands.get_nowait()
            except queue.Empty:
                return
            change()
