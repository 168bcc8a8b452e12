"""LMPC's offline toolchain (installed as `lmpc_export`; needs the `export` extra: torch, transformers,
optimum). Character sheet + checkpoint → ONNX → int8 → parity-checked NPC bundle."""

from .build import build, prepare_model, write_bundle
from .embedder import prepare_embedder

__all__ = ["build", "prepare_embedder", "prepare_model", "write_bundle"]
