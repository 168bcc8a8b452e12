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

The thread owns the runtime's scheduling state and the NPCs. The game's calls reach it as commands
through a queue; events come back through the runtime's event deque. Which calls wait:
- never: `say`, `cancel`, `set_priority`, `unload_npc`, `start_loading`, `tick`, `poll`, `busy`;
- for the model step in flight (one forward pass: a decoding step or a prompt chunk, tens of ms on two
  cores) and then their own work: `load_npc` (which also reads the bundle, seconds, on the caller's thread
  first), `set_fact`, `remember`, `forget`, `save_state*` and `load_state*`. `CALL_TIMEOUT_S` only
  guards against a stuck thread.
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

# Model work per wake-up before the thread pauses to honour its duty cycle. The scheduler sizes passes to
# fit it, and a pass pays a fixed cost (~13 ms on 2 cores) however few tokens it reads: at 8 ms a prompt
# was read a few tokens a pass. Orlando's first words in the pygame example, worker mode, one run each:
# 2.7-4.0 s at 8 ms, 1.9-4.9 s at 25 ms, 1.6-1.9 s at 50 ms (frame p99 1.04-1.12x the idle game's).
SLICE_S = 0.05
IDLE_WAIT_S = 0.05
CALL_TIMEOUT_S = 30.0  # a synchronous call waits for at most the model step in flight; this only guards a stuck thread

T = TypeVar("T")


class Worker:
    def __init__(self, runtime: "Runtime", duty_cycle: float):
        if isinstance(duty_cycle, bool) or not isinstance(duty_cycle, (int, float)) or not 0 < duty_cycle <= 1:
            raise InvalidArgumentError(f"duty_cycle must be in (0, 1], not {duty_cycle!r}")
        self.runtime = runtime
        self.duty_cycle = float(duty_cycle)
        self._busy = False  # the runtime had work when the thread last looked
        # Commands submitted and not yet applied: a line said a moment ago is work the thread has not seen.
        self._pending = 0
        self._pending_lock = threading.Lock()
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

    @property
    def busy(self) -> bool:
        """True from the moment a command is submitted until the thread has applied it and found no work.
        The thread updates its own flag before it counts a command as applied, so reading the count
        first never shows a gap between the two."""
        with self._pending_lock:
            if self._pending:
                return True
        return self._busy

    def submit(self, change: Callable[[], None]) -> None:
        with self._pending_lock:
            self._pending += 1
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
                applied = self._apply_commands()
                self._busy = self.runtime.busy()
                with self._pending_lock:
                    self._pending -= applied
                if not self._busy:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                started = clock()
                self.runtime._work(SLICE_S)
                spent = clock() - started
                # Rest long enough that work takes at most duty_cycle of the wall time.
                self._stop.wait(spent * (1 - self.duty_cycle) / self.duty_cycle)
        except BaseException as exc:  # a bug must surface in the game's next tick(), not vanish
            self._failure = exc
            self._busy = False

    def _apply_commands(self) -> int:
        applied = 0
        while True:
            try:
                change = self._commands.get_nowait()
            except queue.Empty:
                return applied
            change()
            applied += 1
