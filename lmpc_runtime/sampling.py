"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, min-p.

The sampler draws from an explicit `numpy.random.Generator` it is given, never from global state, so a
reply is reproducible from a seed and a save game can store the generator's state and resume it exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class SamplingConfig:
    """How replies are sampled. `temperature == 0` means greedy (top-1) decoding."""

    temperature: float = 0.5
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.05
    repetition_penalty: float = 1.15
    # Only the last `repetition_window` tokens of the conversation are penalised.
    repetition_window: int = 96
    max_tokens: int = 80
    stop: tuple[str, ...] = field(default_factory=tuple)
    # Subtracted from the score of a token that would start a name the character never heard of, mid-
    # sentence (`names.NameGuard`); 0 turns the guard off.
    name_penalty: float = 0.0
    # Added to the score of a token that goes on with the writer's answer shown as the turn before
    # (`following.AnswerFollower`); 0 turns the follower off.
    follow_bonus: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty >= 1, "repetition_penalty must be >= 1"),
            (self.repetition_window >= 0, "repetition_window must be >= 0"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (0 <= self.name_penalty < float("inf"), "name_penalty must be >= 0 and finite"),
            (0 <= self.follow_bonus < float("inf"), "follow_bonus must be >= 0 and finite"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidArgumentError(f"sampling: {message}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidArgumentError(f"sampling: unknown settings {sorted(unknown)}")
        return cls(**{**data, "stop": tuple(data.get("stop", ()))})

    def with_(self, **changes: Any) -> "SamplingConfig":
        return replace(self, **changes)


class Sampler:
    """Picks tokens for one reply stream; `banned` ids are never picked."""

    def __init__(self, config: SamplingConfig, rng: np.random.Generator, banned: Iterable[int] = ()):
        self.config = config
        self.rng = rng
        self.banned = np.asarray(sorted(set(banned)), dtype=np.int64)

    def pick(self, logits: np.ndarray, recent: Iterable[int] = (), discouraged: np.ndarray | None = None,
             banned: np.ndarray | None = None, favoured: np.ndarray | None = None) -> int:
        """logits: [vocab] float32 scores of the next token; recent: the conversation's token ids;
        discouraged: ids [n] whose scores lose `name_penalty` (names the character never heard of);
        banned: ids [m] not allowed at this step only; favoured: ids [f] whose scores gain `follow_bonus`
        (they go on with the writer's answer)."""
        cfg = self.config
        scores = np.array(logits, dtype=np.float32, copy=True)
        if discouraged is not None and discouraged.size and cfg.name_penalty:
            scores[discouraged] -= cfg.name_penalty
        if favoured is not None and favoured.size and cfg.follow_bonus:
            scores[favoured] += cfg.follow_bonus
        if self.banned.size:
            scores[self.banned] = -np.inf
        if banned is not None:
            scores[banned] = -np.inf
        if cfg.repetition_penalty > 1 and cfg.repetition_window:
            window = np.unique(np.fromiter(recent, dtype=np.int64)[-cfg.repetition_window:])
            if window.size:
                seen = scores[window]
                # CTRL-style: push a seen token's score toward "less likely" whatever its sign.
                scores[window] = np.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
        if cfg.temperature == 0:
            return int(np.argmax(scores))

        candidates = np.flatnonzero(np.isfinite(scores))
        if cfg.top_k and cfg.top_k < candidates.size:
            top = np.argpartition(scores[candidates], -cfg.top_k)[-cfg.top_k:]
            candidates = candidates[top]
        # Highest score first; ties broken by token id so the order never depends on argpartition.
        candidates = candidates[np.lexsort((candidates, -scores[candidates]))]
        z = scores[candidates] / cfg.temperature
        probs = np.exp(z - z[0])
        probs /= probs.sum()
        keep = probs.size
        if cfg.top_p < 1:
            # Smallest prefix whose mass reaches top_p (the token crossing the line is kept).
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), cfg.top_p)) + 1)
        if cfg.min_p > 0:
            keep = min(keep, max(1, int(np.count_nonzero(probs >= cfg.min_p * probs[0]))))
        probs = probs[:keep] / probs[:keep].sum()
        return int(candidates[self._draw(probs)])

    def _draw(self, probs: np.ndarray) -> int:
        u = self.rng.random()
        return min(int(np.searchsorted(np.cumsum(probs), u, side="right")), probs.size - 1)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's exact state as plain data (for save games)."""
    return rng.bit_generator.state


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
