"""Predicting how long the next segment of a forward pass will take, from segments already timed here.

A forward pass (a prefill chunk, or a decode step of a batch) runs as consecutive segments of the model
(see fused_engine.py); each segment of each kind of pass is timed, and has its own linear model refitted
after every run on the most recent ones (newer runs weigh more, so the model follows a CPU that speeds
up or slows down):

    segment of a prefill of n tokens onto a context of c tokens      ≈ a + b·n + d·n·c / 1000
    segment of a decode of one token for each of k sequences (Σc)    ≈ a + b·k + d·Σc / 1000

Segments differ (the first embeds, the last ones compute logits), hence one model each. Early on, the
data cannot separate a segment's fixed cost from its per-token cost (every pass so far had the same size),
so the fit is pulled toward "cost proportional to size", the pessimistic reading when passes grow; and
`trusted_size` lets passes grow only to twice the largest one timed. Each prediction carries a margin,
the recent absolute error, so the scheduler can refuse a segment that would overrun its budget by more
than one segment's error; the first few predictions of a segment are doubled, which makes the frames
right after a load conservative.
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

    def predict(self, x: np.ndarray) -> float:
        return max(float(self.w @ x), 0.0)

    def prediction(self, x: np.ndarray) -> Prediction:
        seconds = self.predict(x)
        if self.count < WARMUP_STEPS:
            seconds *= WARMUP_FACTOR
        return Prediction(seconds, self.abs_error)

    def update(self, x: np.ndarray, y: float) -> None:
        if self.count == 0:
            # Anchor the pessimistic "proportional to size" reading on the first real timing.
            self.prior = np.array([0.0, y / x[1], 0.0])
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


class CostModel:
    """Online segment-cost predictions, in seconds. The priors are the guesses for a whole pass before
    anything is timed (each of a pass's segments starts from its share)."""

    def __init__(self, prior_decode: float = 0.030, prior_prefill_token: float = 0.004):
        self._priors = {PREFILL: prior_prefill_token, DECODE: prior_decode}
        # (kind, segments of the pass) → one model per segment
        self._models: dict[tuple[str, int], list[_StepModel]] = {}
        self._largest = {PREFILL: 0, DECODE: 0}

    @staticmethod
    def _features(kind: str, size: int, context: int) -> np.ndarray:
        if kind == PREFILL:
            return np.array([1.0, size, size * context / 1000.0])
        return np.array([1.0, size, context / 1000.0])

    def _segment_models(self, kind: str, segments: int) -> list[_StepModel]:
        models = self._models.get((kind, segments))
        if models is None:
            models = self._models[(kind, segments)] = [_StepModel(self._priors[kind] / segments)
                                                      for _ in range(segments)]
        return models

    def predict(self, kind: str, size: int, context: int, segment: int = 0, segments: int = 1) -> Prediction:
        """The cost of segment `segment` of a pass cut in `segments`. size: tokens to prefill, or sequences
        to decode; context: tokens already cached (their sum for a decode)."""
        model = self._segment_models(kind, segments)[segment]
        return model.prediction(self._features(kind, size, context))

    def largest_segment(self, kind: str, size: int, context: int, segments: int) -> float:
        """The highest predicted cost, margin included, among the segments of such a pass."""
        x = self._features(kind, size, context)
        return max(model.prediction(x).upper for model in self._segment_models(kind, segments))

    def observe(self, kind: str, size: int, context: int, seconds: float, segment: int = 0,
                segments: int = 1) -> None:
        self._segment_models(kind, segments)[segment].update(self._features(kind, size, context), seconds)
        self._largest[kind] = max(self._largest[kind], size)

    def trusted_size(self, kind: str) -> int:
        """The largest pass worth predicting: twice the largest timed so far (passes grow 4, 8, 16…)."""
        return max(2 * self._largest[kind], TRUST_FLOOR[kind])
