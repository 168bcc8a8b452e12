"""Running the decoder: an onnxruntime session and the KV cache of each sequence it serves.

The verbs mirror onnxruntime-genai's: `extend` appends tokens to a sequence (prefill, or one decode
step) and returns the logits of its last position; `step` advances several sequences by one token each;
`KvSequence.rewind` drops tokens from the end without recomputing what comes before.

This module drives graphs exported by optimum (`optimum-kv-concat` layout): past keys and values go in
as `past_key_values.{i}.key/value` [batch, kv_heads, past, head_dim] and come back one position longer
as `present.{i}.*`; the graph concatenates them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from .bundle import ModelSpec
from .errors import BundleFormatError, ContextOverflowError, ModelError


@dataclass(frozen=True)
class EngineOptions:
    """Session settings suited to a game: few threads, and no spinning that would steal the game's cores."""

    threads: int = 2
    spinning: bool = False


def make_session(path: str, options: EngineOptions) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors come back as exceptions; a library inside a game must not write to the console.
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
    try:
        return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise BundleFormatError(f"{path}: onnxruntime cannot load the model: {exc}") from exc


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


class Engine:
    """One loaded model, shared by every NPC that uses it."""

    def __init__(self, model_path: str, spec: ModelSpec, options: EngineOptions = EngineOptions()):
        self.spec = spec
        self.options = options
        self.session = make_session(model_path, options)
        self._check_graph(model_path)
        self._kv_inputs = [f"past_key_values.{i}.{kind}" for i in range(spec.num_layers) for kind in ("key", "value")]
        self._outputs = ["logits"] + [f"present.{i}.{kind}" for i in range(spec.num_layers) for kind in ("key", "value")]

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
        if problems:
            raise BundleFormatError(
                f"{model_path}: the model's inputs do not match the manifest ({', '.join(map(str, problems[:5]))})"
            )

    def new_sequence(self) -> KvSequence:
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
