"""Predicting how long the next step of the model will take, from steps already timed on this machine.

Two kinds of step are timed, each with its own linear model refitted after every step on the most
recent ones (newer steps weigh more, so the model follows a CPU that speeds up or slows down):

    prefill of n tokens onto a context of c tokens      ≈ a + b·n + d·n·c / 1000
    decode of one token for each of k sequences (Σc)    ≈ a + b·k + d·Σc / 1000

Early on, the data cannot separate a step's fixed cost from its per-token cost (every step so far had
the same size), so the fit is pulled toward "cost proportional to size", the pessimistic reading when
steps grow; and `trusted_size` lets steps grow only to twice the largest one timed. Each prediction
carries a margin, the recent absolute error, so the scheduler can refuse a step that would overrun its
budget by more than one step's error; the first few predictions of a kind are doubled, which makes the
frames right after a load conservative.
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
    """Online step-cost predictions, in seconds. The priors are the guesses before anything is timed."""

    def __init__(self, prior_decode: float = 0.030, prior_prefill_token: float = 0.004):
        self._models = {PREFILL: _StepModel(prior_prefill_token), DECODE: _StepModel(prior_decode)}

    @staticmethod
    def _features(kind: str, size: int, context: int) -> np.ndarray:
        if kind == PREFILL:
            return np.array([1.0, size, size * context / 1000.0])
        return np.array([1.0, size, context / 1000.0])

    def predict(self, kind: str, size: int, context: int) -> Prediction:
        """size: tokens to prefill, or sequences to decode; context: tokens already cached (sum for decode)."""
        model = self._models[kind]
        seconds = model.predict(self._features(kind, size, context))
        if model.count < WARMUP_STEPS:
            seconds *= WARMUP_FACTOR
        return Prediction(seconds, model.abs_error)

    def observe(self, kind: str, size: int, context: int, seconds: float) -> None:
        model = self._models[kind]
        model.update(self._features(kind, size, context), seconds)
        model.largest = max(model.largest, size)

    def measured(self, kind: str) -> int:
        return self._models[kind].count

    def trusted_size(self, kind: str) -> int:
        """The largest step worth predicting: twice the largest timed so far (steps grow 4, 8, 16…)."""
        return max(2 * self._models[kind].largest, TRUST_FLOOR[kind])
