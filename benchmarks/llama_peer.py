"""llama.cpp (through llama-cpp-python) driven the way the benchmark drives our engine: token ids in,
the last position's logits out.

llama-cpp-python is an optional benchmark extra (`pip install llama-cpp-python`, which compiles
llama.cpp, ~8 minutes on 2 cores), never a runtime dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

import numpy as np


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise SystemExit("the llama.cpp peer needs llama-cpp-python: .venv/bin/pip install llama-cpp-python") from exc
    return llama_cpp


def q8_0_gguf(source: Path, out: Path) -> Path:
    """Requantise the shipped GGUF (Q4_1 layers, Q8_0 embedding) to Q8_0: llama.cpp's 8-bit, our int8's peer."""
    if out.is_file():
        return out
    llama_cpp = require_llama_cpp()
    out.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = 2
    partial = out.with_suffix(".partial")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantise {source}")
    partial.rename(out)
    return out


# llama.cpp's "extra buffer types" hold weights for special CPU kernels: the AMX one (on CPUs with AMX) and
# the repacked (interleaved) Q4/Q8 layouts. They are on by default, as llama.cpp ships; its AMX matmul
# crashed (SIGSEGV in ggml_backend_amx_mul_mat) on some Sapphire Rapids VMs, where LMPC_LLAMA_EXTRA_BUFFERS=0
# turns them off (benchmarks.regimes finds out in a child process and says so in its report).
EXTRA_BUFFER_TYPES = os.environ.get("LMPC_LLAMA_EXTRA_BUFFERS", "1") != "0"


@contextlib.contextmanager
def _extra_buffer_types(llama_cpp, enabled: bool):
    """Model parameters with `use_extra_bufts` set, for the Llama constructor (which does not expose it)."""
    module = llama_cpp.llama_cpp
    defaults = module.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = enabled
        return p

    module.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_model_default_params = defaults


class LlamaPeer:
    """One llama.cpp context: a single sequence whose cache can be truncated and extended."""

    def __init__(self, gguf: Path, threads: int, context: int = 2048, batch: int = 512):
        llama_cpp = require_llama_cpp()
        self._llama_cpp = llama_cpp
        with _extra_buffer_types(llama_cpp, EXTRA_BUFFER_TYPES):
            self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=context, n_batch=batch, n_ubatch=batch,
                                       n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
        self.vocab = self.llm.n_vocab()

    def __len__(self) -> int:
        return self.llm.n_tokens

    def rewind(self, length: int) -> None:
        """Keep the first `length` tokens; llama-cpp-python drops the rest of the cache on the next eval."""
        self.llm.n_tokens = length

    def extend(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens`; return the logits [vocab] after the last (a view, valid until the next call)."""
        self.llm.eval(tokens)
        logits = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.vocab,))

    def close(self) -> None:
        self.llm.close()
