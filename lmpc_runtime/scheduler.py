"""The per-frame token budget: which NPC's model work runs in this frame, and how much of it.

A frame's work is split into steps of the model: a prefill chunk of one reply's prompt, or one decode
step for a batch of replies (one forward pass, one token each). Before each step the cost model predicts
its duration; a step is started only if it fits what is left of the budget (prediction plus its recent
error), so a tick overruns by at most one step's misprediction. Only if nothing at all has run in a tick
and even the smallest step cannot fit (a budget smaller than one step of the model) does the scheduler
run that one step anyway, so work always progresses; such a tick overruns by at most one step.

Order: each job's urgency is its priority, raised by the time it has waited without progress (so low
priority work is never starved) and, for a reply that has not started speaking, by how close its
deadline is. The most urgent job decides what runs next; decoding replies are batched together in
urgency order as far as the budget allows, since one more sequence in a batch costs little.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .costmodel import DECODE, PREFILL, CostModel
from .engine import Engine
from .errors import LmpcError
from .reply import Event, Reply

# Priorities: the NPC the player talks to, ordinary NPCs, ambient chatter.
FOCUS, NORMAL, AMBIENT = 10.0, 0.0, -10.0
# Urgency gained per second of waiting without progress (fairness: 20 points ≈ FOCUS over AMBIENT in 1 s).
AGING_PER_SECOND = 20.0
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
    """What one tick did: time spent inside it (s), steps run, tokens processed (prefill + decoded)."""

    seconds: float = 0.0
    steps: int = 0
    prefill_tokens: int = 0
    decoded_tokens: int = 0
    overran: bool = False  # ran one step although even the smallest did not fit the budget
    step_kinds: list[str] = field(default_factory=list)


class Scheduler:
    """Holds the jobs of all NPCs and runs the most urgent work that fits each tick's budget."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, cost: CostModel | None = None):
        self.clock = clock
        self.cost = cost or CostModel()
        self.jobs: list[Job] = []

    def submit(self, reply: Reply, engine: Engine, priority: float = NORMAL, deadline_s: float | None = None,
               finished: Callable[[Reply], None] | None = None) -> Job:
        now = self.clock()
        job = Job(reply, engine, priority, now, now + deadline_s if deadline_s else None, now, finished)
        self.jobs.append(job)
        return job

    def cancel(self, reply: Reply) -> list[Event]:
        """Stop a reply now; its job leaves the queue and its sequence is free for the next one."""
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
        while self.jobs:
            if max_tokens is not None and stats.prefill_tokens + stats.decoded_tokens >= max_tokens:
                break
            now = self.clock()
            remaining = budget_s - (now - start)
            token_room = None if max_tokens is None else max_tokens - stats.prefill_tokens - stats.decoded_tokens
            step = self._choose(now, remaining, token_room, allow_overrun=stats.steps == 0)
            if step is None:
                break
            if step.overrun:
                stats.overran = True
            events += self._run(step, stats)
        stats.seconds = self.clock() - start
        return events, stats

    # -- choosing --------------------------------------------------------------------------------

    def _choose(self, now: float, remaining: float, token_room: int | None, allow_overrun: bool) -> "_Step | None":
        ranked = sorted(self.jobs, key=lambda j: -j.urgency(now))
        for job in ranked:
            step = self._fitting_step(job, ranked, remaining, token_room)
            if step is not None:
                return step
        if allow_overrun:
            # Nothing fits a budget smaller than one step: run the smallest step of the most urgent job.
            job = ranked[0]
            if job.reply.todo:
                return _Step(PREFILL, [job], _smallest_chunk(job.reply, token_room), overrun=True)
            return _Step(DECODE, [job], 1, overrun=True)
        return None

    def _fitting_step(self, job: Job, ranked: list[Job], remaining: float, token_room: int | None) -> "_Step | None":
        reply = job.reply
        if reply.todo:
            limit = min(len(reply.todo), MAX_PREFILL_CHUNK, token_room if token_room is not None else 1 << 30)
            n = self._largest_chunk(len(reply.seq), limit, remaining)
            if n >= _smallest_chunk(reply, token_room):
                return _Step(PREFILL, [job], n)
            return None
        # A decode step: this job first, then the other decoding jobs of the same model by urgency.
        batch, context = [job], len(reply.seq)
        if self.cost.predict(DECODE, 1, context).upper > remaining:
            return None
        for other in ranked:
            if other is job or other.engine is not job.engine or other.reply.todo:
                continue
            if len(batch) >= self.cost.trusted_size(DECODE) or (token_room is not None and len(batch) >= token_room):
                break
            if self.cost.predict(DECODE, len(batch) + 1, context + len(other.reply.seq)).upper > remaining:
                break
            batch.append(other)
            context += len(other.reply.seq)
        return _Step(DECODE, batch, len(batch))

    def _largest_chunk(self, context: int, limit: int, remaining: float) -> int:
        """Most prompt tokens (≤ limit) whose predicted prefill time fits `remaining` (binary search)."""
        if limit <= 0:
            return 0
        lo, hi = 0, min(limit, self.cost.trusted_size(PREFILL))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.cost.predict(PREFILL, mid, context).upper <= remaining:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # -- running ---------------------------------------------------------------------------------

    def _run(self, step: "_Step", stats: TickStats) -> list[Event]:
        events: list[Event] = []
        t0 = self.clock()
        try:
            if step.kind == PREFILL:
                job = step.jobs[0]
                context = len(job.reply.seq)
                chunk = job.reply.take_prefill(step.size)
                logits = job.engine.extend(job.reply.seq, chunk)
                self.cost.observe(PREFILL, len(chunk), context, self.clock() - t0)
                stats.prefill_tokens += len(chunk)
                if not job.reply.todo:
                    events += job.reply.accept(logits)
            else:
                replies = [j.reply for j in step.jobs]
                context = sum(len(r.seq) for r in replies)
                logits = step.jobs[0].engine.step([r.seq for r in replies], [r.next_token for r in replies])
                self.cost.observe(DECODE, len(replies), context, self.clock() - t0)
                stats.decoded_tokens += len(replies)
                for reply, row in zip(replies, logits):
                    events += reply.accept(row)
        except LmpcError as exc:
            # One NPC's failure (context overflow, onnxruntime error) ends its reply, not the game's frame.
            for job in step.jobs:
                events += job.reply.fail(str(exc))
        stats.steps += 1
        stats.step_kinds.append(step.kind)
        now = self.clock()
        for job in step.jobs:
            job.last_progress = now
            if job.reply.done:
                self._retire(job)
        return events

    def _retire(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
            if job.finished is not None:
                job.finished(job.reply)


def _smallest_chunk(reply: Reply, token_room: int | None) -> int:
    """The smallest prefill chunk worth a step: a few tokens, or what is left, or what the token budget allows."""
    return min(MIN_PREFILL_CHUNK, len(reply.todo), token_room if token_room is not None else MIN_PREFILL_CHUNK)


@dataclass
class _Step:
    kind: str
    jobs: list[Job]
    size: int  # prefill: tokens; decode: sequences
    overrun: bool = False
