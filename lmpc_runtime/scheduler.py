"""The per-frame token budget: which NPC's model work runs in this frame, and how much of it.

A frame's work is a sequence of forward passes of the model: a prefill chunk of one reply's prompt, or
one decode step for a batch of replies (one token each). Each pass runs a segment at a time (a few
layers of the model, see fused_engine.py), so a tick can stop between two segments and the pass goes
on in the next tick. Before each segment the cost model predicts its duration; it runs only if it fits
what is left of the budget (prediction plus its recent error), so a tick overruns by at most one
segment's misprediction. Only if nothing at all has run in a tick and even the next segment cannot fit
(a budget smaller than one segment) does the scheduler run that one segment anyway, so work always
progresses; such a tick overruns by at most one segment.

One pass is in flight at a time, and it is finished before another starts: its sequences are held by
the engine until then. A new pass is sized so that each of its segments fits a whole budget.

Order: each job's urgency is its priority, raised by the time it has waited without progress (so low
priority work is never starved) and, for a reply that has not started speaking, by how close its
deadline is. The most urgent job decides what runs next; decoding replies are batched together in
urgency order as far as the budget allows, since one more sequence in a batch costs little.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .costmodel import DECODE, PREFILL, CostModel, Prediction
from .engine import Engine
from .errors import LmpcError
from .reply import Event, Reply

if TYPE_CHECKING:
    from .fused_engine import ForwardPass

# Priorities: the NPC the player talks to, ordinary NPCs, ambient chatter.
FOCUS, NORMAL, AMBIENT = 10.0, 0.0, -10.0
# Urgency gained per second of waiting without progress (fairness: 20 points, FOCUS over AMBIENT, in 4 s).
# A pass now spans several frames, during which every other job waits: at 20 points a second, ambient
# chatter drew level with the focused NPC after every pass or two and took two thirds of the passes.
AGING_PER_SECOND = 5.0
# Urgency added to a reply that has not started, in full once its deadline has passed.
DEADLINE_BOOST = 30.0
MIN_PREFILL_CHUNK = 4
MAX_PREFILL_CHUNK = 256


@dataclass
class Job:
    reply: Reply
    engine: Engine
    priority: float
    submitted: float
    deadline: float | None = None  # clock time by which the first token should be out
    last_progress: float = 0.0
    finished: Callable[[Reply], None] | None = None

    def urgency(self, now: float) -> float:
        waited = now - max(self.last_progress, self.submitted)
        value = self.priority + AGING_PER_SECOND * waited
        if self.deadline is not None and self.reply.times.first_token is None:
            span = max(self.deadline - self.submitted, 1e-3)
            value += DEADLINE_BOOST * min(1.0, (now - self.submitted) / span)
        return value


@dataclass
class TickStats:
    """What one tick did: time spent inside it (s), segments of the model run, tokens of the passes started
    (prefill + decoded)."""

    seconds: float = 0.0
    steps: int = 0  # segments run
    prefill_tokens: int = 0
    decoded_tokens: int = 0
    overran: bool = False  # ran one segment although it did not fit the budget
    step_kinds: list[str] = field(default_factory=list)  # the kind of each segment run


class Scheduler:
    """Holds the jobs of all NPCs and runs the most urgent work that fits each tick's budget."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, cost: CostModel | None = None):
        self.clock = clock
        self.cost = cost or CostModel()
        self.jobs: list[Job] = []
        self.flight: _Flight | None = None  # the pass started and not finished

    def submit(self, reply: Reply, engine: Engine, priority: float = NORMAL, deadline_s: float | None = None,
               finished: Callable[[Reply], None] | None = None) -> Job:
        now = self.clock()
        job = Job(reply, engine, priority, now, now + deadline_s if deadline_s else None, now, finished)
        self.jobs.append(job)
        return job

    def cancel(self, reply: Reply) -> list[Event]:
        """Stop a reply now; its job leaves the queue and its sequence is free for the next one. A pass in
        flight over it is dropped (its sequences keep their cache as before the pass; the other replies
        of the batch redo that step later)."""
        if self.flight is not None and any(job.reply is reply for job in self.flight.jobs):
            self.flight.forward.cancel()
            self.flight = None
        job = next((j for j in self.jobs if j.reply is reply), None)
        events = reply.cancel()
        if job is not None:
            self._retire(job)
        return events

    def set_priority(self, reply: Reply, priority: float) -> None:
        for job in self.jobs:
            if job.reply is reply:
                job.priority = priority

    def tick(self, budget_s: float, max_tokens: int | None = None) -> tuple[list[Event], TickStats]:
        start = self.clock()
        stats = TickStats()
        events: list[Event] = []
        while True:
            now = self.clock()
            remaining = budget_s - (now - start)
            if self.flight is None:
                token_room = None if max_tokens is None else max_tokens - stats.prefill_tokens - stats.decoded_tokens
                if not self.jobs or token_room == 0:
                    break
                step = self._choose(now, budget_s, token_room)
                if stats.steps and self._first_segment(step).upper > remaining:
                    break  # started now, it would only wait for the next tick, when others may be more urgent
                events += self._start(step, stats)
                continue
            flight = self.flight
            if flight.upper(self.cost) > remaining:
                if stats.steps:
                    break
                stats.overran = True  # a budget smaller than the next segment: run it anyway
            events += self._advance(flight, stats)
        stats.seconds = self.clock() - start
        return events, stats

    # -- choosing --------------------------------------------------------------------------------

    def _choose(self, now: float, budget: float, token_room: int | None) -> "_Step":
        """The pass of the most urgent job that fits: each of its segments within a whole budget; or, if
        none does, the smallest pass of the most urgent job."""
        ranked = sorted(self.jobs, key=lambda j: -j.urgency(now))
        for job in ranked:
            step = self._fitting_step(job, ranked, budget, token_room)
            if step is not None:
                return step
        job = ranked[0]
        if job.reply.todo:
            return _Step(PREFILL, [job], _smallest_chunk(job.reply, token_room))
        return _Step(DECODE, [job], 1)

    def _fitting_step(self, job: Job, ranked: list[Job], budget: float, token_room: int | None) -> "_Step | None":
        reply, segments = job.reply, _segments(job.engine)

        def fits(kind: str, size: int, context: int) -> bool:
            return self.cost.largest_segment(kind, size, context, segments) <= budget

        if reply.todo:
            limit = min(len(reply.todo), MAX_PREFILL_CHUNK, token_room if token_room is not None else 1 << 30,
                        self.cost.trusted_size(PREFILL))
            n = _largest(lambda size: fits(PREFILL, size, len(reply.seq)), limit)
            if n >= _smallest_chunk(reply, token_room):
                return _Step(PREFILL, [job], n)
            return None
        # A decode step: this job first, then the other decoding jobs of the same model by urgency.
        batch, context = [job], len(reply.seq)
        if not fits(DECODE, 1, context):
            return None
        for other in ranked:
            if other is job or other.engine is not job.engine or other.reply.todo:
                continue
            if len(batch) >= self.cost.trusted_size(DECODE) or (token_room is not None and len(batch) >= token_room):
                break
            if not fits(DECODE, len(batch) + 1, context + len(other.reply.seq)):
                break
            batch.append(other)
            context += len(other.reply.seq)
        return _Step(DECODE, batch, len(batch))

    def _first_segment(self, step: "_Step") -> Prediction:
        replies = [job.reply for job in step.jobs]
        context = len(replies[0].seq) if step.kind == PREFILL else sum(len(r.seq) for r in replies)
        return self.cost.predict(step.kind, step.size, context, 0, _segments(step.jobs[0].engine))

    # -- running ---------------------------------------------------------------------------------

    def _start(self, step: "_Step", stats: TickStats) -> list[Event]:
        """Begin the pass of `step` (no model work yet); a pass that cannot begin fails its replies."""
        replies = [job.reply for job in step.jobs]
        engine = step.jobs[0].engine
        try:
            if step.kind == PREFILL:
                context = len(replies[0].seq)
                chunk = replies[0].take_prefill(step.size)
                forward = engine.begin_extend(replies[0].seq, chunk)
                size = len(chunk)  # may be a token short of the plan (Reply.take_prefill)
                stats.prefill_tokens += size
            else:
                context = sum(len(r.seq) for r in replies)
                forward = engine.begin_step([r.seq for r in replies], [r.next_token for r in replies])
                size = len(replies)
                stats.decoded_tokens += size
        except LmpcError as exc:  # a context overflow: that reply ends, not the game's frame
            return self._failed(step.jobs, exc)
        self.flight = _Flight(step.kind, step.jobs, size, context, forward)
        return []

    def _advance(self, flight: "_Flight", stats: TickStats) -> list[Event]:
        """Run the next segment of the pass in flight; after the last, hand the logits to the replies."""
        t0 = self.clock()
        events: list[Event] = []
        try:
            logits = flight.forward.advance()
            flight.segment_seconds.append(self.clock() - t0)
            if logits is not None:
                self.cost.observe(flight.kind, flight.size, flight.context, flight.segment_seconds)
                self.flight = None
                events += self._deliver(flight, logits)
        except LmpcError as exc:  # onnxruntime failed (the pass is cancelled): those replies end, not the frame
            self.flight = None
            events += self._failed(flight.jobs, exc)
        stats.steps += 1
        stats.step_kinds.append(flight.kind)
        return events

    def _deliver(self, flight: "_Flight", logits: np.ndarray) -> list[Event]:
        events: list[Event] = []
        if flight.kind == DECODE:
            for job, row in zip(flight.jobs, logits):
                events += job.reply.accept(row)
        elif not flight.jobs[0].reply.todo:
            events += flight.jobs[0].reply.accept(logits[0])
        self._progressed(flight.jobs)
        return events

    def _failed(self, jobs: list[Job], exc: LmpcError) -> list[Event]:
        events = [event for job in jobs for event in job.reply.fail(str(exc))]
        self._progressed(jobs)
        return events

    def _progressed(self, jobs: list[Job]) -> None:
        now = self.clock()
        for job in jobs:
            job.last_progress = now
            if job.reply.done:
                self._retire(job)

    def _retire(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
            if job.finished is not None:
                job.finished(job.reply)


def _segments(engine: Engine) -> int:
    return getattr(engine, "segments", 1)  # an engine without segments runs each pass whole


def _largest(fits: Callable[[int], bool], limit: int) -> int:
    """The largest size in 0..limit that fits, assuming fitting sizes form a prefix (binary search)."""
    lo, hi = 0, max(limit, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _smallest_chunk(reply: Reply, token_room: int | None) -> int:
    """The smallest prefill chunk worth a pass: a few tokens, or what is left, or what the token budget allows."""
    return min(MIN_PREFILL_CHUNK, len(reply.todo), token_room if token_room is not None else MIN_PREFILL_CHUNK)


@dataclass
class _Step:
    kind: str
    jobs: list[Job]
    size: int  # prefill: tokens; decode: sequences


@dataclass
class _Flight:
    """A pass begun and not finished: what it is (for the cost model) and the engine's ForwardPass."""

    kind: str
    jobs: list[Job]
    size: int
    context: int
    forward: "ForwardPass"
    segment_seconds: list[float] = field(default_factory=list)  # how long each segment run so far took

    def upper(self, cost: CostModel) -> float:
        """The predicted cost of its next segment, margin included."""
        return cost.predict(self.kind, self.size, self.context, self.forward.next_segment,
                            self.forward.segments).upper
