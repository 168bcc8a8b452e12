"""onnxruntime session settings for a library that runs inside a game."""

from __future__ import annotations

import threading
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


_arena_lock = threading.Lock()
_arena_registered = False


def _share_one_arena() -> None:
    """Register one CPU memory arena with onnxruntime's process-wide environment, for every session to use.

    Each session otherwise keeps an arena of its own that grows to that session's peak and never shrinks:
    a model cut into 34 segments held 34 of them (1.6 GB after a few prefills, against 0.7 GB shared), and
    the memory, touched by fewer sessions, is also faster. If the host registered a CPU allocator of its
    own, our sessions share that one instead."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        try:
            ort.create_and_register_allocator(info, None)
        except Exception:  # onnxruntime's own error type: an allocator is registered already
            pass
        _arena_registered = True


def make_session(path: str, options: EngineOptions) -> ort.InferenceSession:
    _share_one_arena()
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors come back as exceptions; a library inside a game must not write to the console.
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
    so.add_session_config_entry("session.use_env_allocators", "1")
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
