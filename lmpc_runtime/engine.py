"""Running the decoder: an onnxruntime session and the KV cache of each sequence it serves.

The verbs mirror onnxruntime-genai's: `new_sequence(prefix)` starts a sequence (from a cached prefix,
such as an NPC's persona); `extend` appends tokens to a sequence (prefill, or one decode step) and
returns the logits of its last position; `step` advances several sequences by one token each;
`rewind` drops tokens from the end without recomputing what comes before; `fork` copies a sequence.

`Engine` is that interface (a Protocol); `open_engine` picks the engine for a bundle's graph layout:
- `lmpc-gqa` (`fused_engine.FusedEngine`): the fast engine, fused graph with an in-place KV cache.
- `optimum-kv-concat` (`ReferenceEngine`, below): graphs exported by optimum. Past keys and values go in as
  `past_key_values.{i}.key/value` [batch, kv_heads, past, head_dim] and come back one position longer
  as `present.{i}.*`; the graph concatenates them itself. Simple and slow, it is kept as the reference
  the fast engine is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from .bundle import ModelSpec
from .errors import BundleFormatError, ContextOverflowError, ModelError, StateError
from .fused_engine import FusedEngine
from .prefix_cache import PrefixCache
from .session import EngineOptions, make_session, refuse_mismatched_graph


class ForwardPass(Protocol):
    """A forward pass begun by an engine, run a segment at a time (the scheduler keeps a frame's budget
    between segments); `advance` returns the logits once the last segment has run, else None."""

    segments: int

    @property
    def done(self) -> bool: ...
    def advance(self) -> np.ndarray | None: ...
    def finish(self) -> np.ndarray: ...
    def cancel(self) -> None: ...


class Engine(Protocol):
    """What the runtime asks of an engine: one loaded model, shared by every NPC that uses it. A sequence
    is whatever object the engine hands out from `new_sequence` (it has `len()` and `tokens`), run with the
    adapter it was made with (see adapters.py; None: the model's own weights)."""

    spec: ModelSpec
    options: EngineOptions
    prefixes: PrefixCache

    def new_sequence(self, prefix: list[int] = (), adapter: Any = None) -> Any: ...
    def extend(self, seq: Any, tokens: list[int]) -> np.ndarray: ...
    def step(self, seqs: list[Any], tokens: list[int]) -> np.ndarray: ...
    def begin_extend(self, seq: Any, tokens: list[int]) -> ForwardPass: ...
    def begin_step(self, seqs: list[Any], tokens: list[int]) -> ForwardPass: ...
    def read_kv(self, seq: Any) -> np.ndarray: ...
    def load_kv(self, tokens: list[int], kv: np.ndarray, adapter: Any = None) -> Any: ...


@dataclass
class KvSequence:
    """One sequence's cache: `tokens[i]` is the token whose keys/values sit at position i."""

    num_layers: int
    tokens: list[int] = field(default_factory=list)
    # 2 * num_layers arrays, key then value per layer, each [1, kv_heads, len(tokens), head_dim].
    kv: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def rewind(self, length: int) -> None:
        """Keep only the first `length` tokens."""
        if not 0 <= length <= len(self.tokens):
            raise ValueError(f"cannot rewind a sequence of {len(self.tokens)} tokens to {length}")
        del self.tokens[length:]
        self.kv = [a[:, :, :length, :] for a in self.kv]

    def fork(self) -> "KvSequence":
        """An independent copy (arrays are shared: the engine never writes into them in place)."""
        return KvSequence(self.num_layers, list(self.tokens), list(self.kv))


class ReferenceEngine:
    """The `optimum-kv-concat` engine: simple and slow, the reference the fast engine is tested against."""

    def __init__(self, model_path: str, spec: ModelSpec, options: EngineOptions = EngineOptions()):
        self.spec = spec
        self.options = options
        self.session = make_session(model_path, options)
        self._check_graph(model_path)
        self._kv_inputs = [f"past_key_values.{i}.{kind}" for i in range(spec.num_layers) for kind in ("key", "value")]
        self._outputs = ["logits"] + [f"present.{i}.{kind}" for i in range(spec.num_layers) for kind in ("key", "value")]
        self.prefixes = PrefixCache(self)

    def _check_graph(self, model_path: str) -> None:
        spec = self.spec
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        expected = {"input_ids", "attention_mask", "position_ids"}
        expected |= {f"past_key_values.{i}.{k}" for i in range(spec.num_layers) for k in ("key", "value")}
        problems = sorted(expected - set(inputs)) + sorted(set(inputs) - expected)
        for i in range(spec.num_layers):
            shape = inputs.get(f"past_key_values.{i}.key")
            if shape is not None and (len(shape) != 4 or shape[1] != spec.num_kv_heads or shape[3] != spec.head_dim):
                problems.append(f"past_key_values.{i}.key has shape {shape}")
        if "logits" not in outputs:
            problems.append("no 'logits' output")
        refuse_mismatched_graph(model_path, problems)

    def new_sequence(self, prefix: list[int] = (), adapter: Any = None) -> KvSequence:
        """An empty sequence, or one holding `prefix` (its cache computed once, then shared)."""
        _refuse_adapter(adapter)
        if prefix:
            return self.prefixes.sequence(list(prefix))
        empty = np.zeros((1, self.spec.num_kv_heads, 0, self.spec.head_dim), dtype=np.float32)
        return KvSequence(self.spec.num_layers, [], [empty] * (2 * self.spec.num_layers))

    def extend(self, seq: KvSequence, tokens: list[int]) -> np.ndarray:
        """Append `tokens` to `seq`; return the logits [vocab] predicting the token after the last one."""
        if not tokens:
            raise ValueError("extend needs at least one token")
        past = len(seq)
        if past + len(tokens) > self.spec.context_length:
            raise ContextOverflowError(
                f"{past + len(tokens)} tokens exceed the model's context of {self.spec.context_length}"
            )
        n = len(tokens)
        feed = {
            "input_ids": np.asarray([tokens], dtype=np.int64),
            "attention_mask": np.ones((1, past + n), dtype=np.int64),
            "position_ids": np.arange(past, past + n, dtype=np.int64)[None, :],
            **dict(zip(self._kv_inputs, seq.kv)),
        }
        try:
            logits, *present = self.session.run(self._outputs, feed)
        except Exception as exc:  # onnxruntime's own error types (allocation failures, shape errors)
            raise ModelError(f"onnxruntime failed: {exc}") from exc
        seq.kv = present
        seq.tokens.extend(tokens)
        return logits[0, -1]

    def step(self, seqs: list[KvSequence], tokens: list[int]) -> np.ndarray:
        """Advance each sequence by its token; returns logits [len(seqs), vocab]."""
        return np.stack([self.extend(seq, [tok]) for seq, tok in zip(seqs, tokens, strict=True)])

    def begin_extend(self, seq: KvSequence, tokens: list[int]) -> "WholePass":
        """`extend` as a pass of one segment (the scheduler's interface; see fused_engine.ForwardPass)."""
        return WholePass(lambda: self.extend(seq, tokens)[None])

    def begin_step(self, seqs: list[KvSequence], tokens: list[int]) -> "WholePass":
        return WholePass(lambda: self.step(seqs, tokens))

    def read_kv(self, seq: KvSequence) -> np.ndarray:
        """A copy of the sequence's cache, [layers * 2 (key, value), kv_heads, len, head_dim] float32."""
        return np.concatenate(seq.kv, axis=0)

    def load_kv(self, tokens: list[int], kv: np.ndarray, adapter: Any = None) -> KvSequence:
        """A new sequence holding `tokens` with the cache `kv` (as `read_kv` returns it)."""
        _refuse_adapter(adapter)
        return KvSequence(self.spec.num_layers, list(tokens), [layer[None].copy() for layer in kv])


def _refuse_adapter(adapter: Any) -> None:
    if adapter is not None:
        raise StateError("the reference engine takes no adapters (they need the lmpc-gqa layout)")


class WholePass:
    """A forward pass of the reference engine: one segment, run when advanced."""

    segments = 1

    def __init__(self, run: Callable[[], np.ndarray]):
        self._run = run
        self.next_segment = 0

    @property
    def done(self) -> bool:
        return self.next_segment == 1

    def advance(self) -> np.ndarray:
        self.next_segment = 1
        return self._run()

    def finish(self) -> np.ndarray:
        return self.advance()

    def cancel(self) -> None:
        self.next_segment = 1


ENGINES: dict[str, Callable[..., Engine]] = {"optimum-kv-concat": ReferenceEngine, "lmpc-gqa": FusedEngine}


def open_engine(model_path: str, spec: ModelSpec, options: EngineOptions = EngineOptions()) -> Engine:
    """The engine that drives `spec.layout` (bundle.py admits only layouts listed here)."""
    try:
        engine_class = ENGINES[spec.layout]
    except KeyError:
        raise BundleFormatError(f"model layout '{spec.layout}' is not one this runtime can run") from None
    return engine_class(model_path, spec, options)
