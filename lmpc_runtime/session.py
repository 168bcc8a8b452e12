"""onnxruntime session settings for a library that runs inside a game."""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

from .errors import BundleFormatError


@dataclass(frozen=True)
class EngineOptions:
    """Session settings suited to a game: few threads, and no spinning that would steal the game's cores."""

    threads: int = 2
    spinning: bool = False
    # Run a model cut into segments (see fused_engine.py) segment by segment; False runs the whole graph.
    segmented: bool = True


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


def refuse_mismatched_graph(model_path: str, problems: list[str]) -> None:
    """Raise BundleFormatError if checking a graph against its manifest found problems (the first few named)."""
    if problems:
        raise BundleFormatError(
            f"{model_path}: the model's inputs do not match the manifest ({', '.join(map(str, problems[:5]))})"
        )
