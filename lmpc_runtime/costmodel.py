"""Predicting how long the next segment of a forward pass will take, from passes already timed here.

A forward pass (a prefill chunk, or a decode step of a batch) runs as consecutive segments of the model
(see fused_engine.py). Each kind of pass has a linear model of its whole cost, refitted after every
pass on the most recent ones (newer passes weigh more, so the model follows a CPU that speeds up or
slows down):

    prefill of n tokens onto a context of c tokens      ≈ a + b·n + d·n·c / 1000
    decode of one token for each of k sequences (Σc)    ≈ a + b·k + d·Σc / 1000

and each segment's cost is that times the segment's share of a pass: the median of the fractions timed
in the last passes (the first segment also embeds, the last ones compute logits, the rest are alike; a
median, because a segment the OS preempted once must not look slow for long).
One fit per kind rather than per segment: a segment's own timings are few and noisy, and the largest of
a dozen noisy predictions would refuse every pass on a busy machine.

Early on, the data cannot separate a pass's fixed cost from its per-token cost (every pass so far had
the same size), so the fit is pulled toward a prior that splits the first timing evenly between the
two. Reading it all as per-token cost would be safest, but when even the smallest pass nearly fills the
budget no larger one would ever be tried, and prefill would stay at a few tokens a pass although most of
a segment's cost is fixed (reading the weights); `trusted_size` lets passes grow only to twice the
largest one timed, which bounds what a wrong guess costs. Each prediction carries a margin, the recent
absolute error, so the scheduler can refuse a segment that would overrun its budget by more than that
error; the first few predictions of a kind are doubled, which makes the frames right after a load
conservative.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

PREFILL, DECODE = "prefill", "decode"
WARMUP_STEPS = 4
WARMUP_FACTOR = 2.0
WINDOW = 64
DECAY = 0.95  # weight of a step relative to the next one timed
RIDGE = 1e-3
TRUST_FLOOR = {PREFILL: 4, DECODE: 2}


@dataclass(frozen=True)
class Prediction:
    seconds: float
    margin: float

    @property
    def upper(self) -> float:
        return self.seconds + self.margin


class _StepModel:
    def __init__(self, prior_per_unit: float):
        self.prior = np.array([0.0, prior_per_unit, 0.0])
        self.w = self.prior.copy()
        self.samples: deque[tuple[np.ndarray, float]] = deque(maxlen=WINDOW)
        self.abs_error = 0.0
        self.count = 0
        self.largest = 0

    def predict(self, x: np.ndarray) -> float:
        return max(float(self.w @ x), 0.0)

    def update(self, x: np.ndarray, y: float) -> None:
        if self.count == 0:
            # Anchor the prior on the first real timing: half of it fixed, half per unit of size.
            self.prior = np.array([0.5 * y, 0.5 * y / x[1], 0.0])
            self.abs_error = 0.5 * y
        else:
            self.abs_error = 0.8 * self.abs_error + 0.2 * abs(y - self.predict(x))
        self.samples.append((x, y))
        self.count += 1
        self._refit()

    def _refit(self) -> None:
        X = np.array([s[0] for s in self.samples])
        y = np.array([s[1] for s in self.samples])
        weights = DECAY ** np.arange(len(y))[::-1]
        # Weighted ridge regression pulled toward the prior: (XᵀWX + αI) w = XᵀWy + α·prior.
        scale = float(np.mean(weights[:, None] * X * X)) or 1.0
        alpha = RIDGE * scale
        A = X.T @ (weights[:, None] * X) + alpha * np.eye(3)
        b = X.T @ (weights * y) + alpha * self.prior
        # No cost term can be negative (more tokens never take less time): coefficients that come out
        # negative are held at zero and the rest refitted.
        free = np.ones(3, dtype=bool)
        while True:
            w = np.zeros(3)
            w[free] = np.linalg.solve(A[np.ix_(free, free)], b[free])
            if (w >= 0).all():
                break
            free &= w > 0
        self.w = w


SHARE_WINDOW = 9  # passes whose segment fractions give each segment's share (their median)


class CostModel:
    """Online cost predictions, in seconds. The priors are the guesses for a whole pass before anything
    is timed."""

    def __init__(self, prior_decode: float = 0.030, prior_prefill_token: float = 0.004):
        self._models = {PREFILL: _StepModel(prior_prefill_token), DECODE: _StepModel(prior_decode)}
        # (kind, segments) → each segment's share of a pass, and the fractions it is the median of
        self._shares: dict[tuple[str, int], np.ndarray] = {}
        self._fractions: dict[tuple[str, int], deque[np.ndarray]] = {}

    @staticmethod
    def _features(kind: str, size: int, context: int) -> np.ndarray:
        if kind == PREFILL:
            return np.array([1.0, size, size * context / 1000.0])
        return np.array([1.0, size, context / 1000.0])

    def _segment_shares(self, kind: str, segments: int) -> np.ndarray:
        shares = self._shares.get((kind, segments))
        if shares is None:
            shares = self._shares[(kind, segments)] = np.full(segments, 1.0 / segments)
        return shares

    def predict(self, kind: str, size: int, context: int, segment: int = 0, segments: int = 1) -> Prediction:
        """The cost of segment `segment` of a pass cut in `segments` (of the whole pass by default).
        size: tokens to prefill, or sequences to decode; context: tokens already cached (their sum for a
        decode)."""
        model = self._models[kind]
        seconds = model.predict(self._features(kind, size, context))
        if model.count < WARMUP_STEPS:
            seconds *= WARMUP_FACTOR
        share = self._segment_shares(kind, segments)[segment]
        return Prediction(seconds * share, model.abs_error * share)

    def largest_segment(self, kind: str, size: int, context: int, segments: int) -> float:
        """The highest predicted cost, margin included, among the segments of such a pass."""
        whole = self.predict(kind, size, context)
        return whole.upper * float(self._segment_shares(kind, segments).max())

    def observe(self, kind: str, size: int, context: int, segment_seconds: list[float]) -> None:
        """A pass that ran to its end, and the time each of its segments took."""
        total = sum(segment_seconds)
        model = self._models[kind]
        model.update(self._features(kind, size, context), total)
        model.largest = max(model.largest, size)
        if total > 0:
            key = (kind, len(segment_seconds))
            fractions = self._fractions.setdefault(key, deque(maxlen=SHARE_WINDOW))
            fractions.append(np.asarray(segment_seconds) / total)
            shares = np.median(np.array(fractions), axis=0)
            self._shares[key] = shares / shares.sum()

    def trusted_size(self, kind: str) -> int:
        """The largest pass worth predicting: twice the largest timed so far (passes grow 4, 8, 16…)."""
        return max(2 * self._models[kind].largest, TRUST_FLOOR[kind])
