"""A tiny random-weight LLaMA with SmolLM2's tokenizer, and a tiny random BERT with MiniLM's, for fast
tests of every stage.

Same architecture family as SmolLM2 (grouped-query attention, RMSNorm, SwiGLU, tied embeddings, rotary
positions), so the export, quantisation, engine and training code paths are the real ones; small
enough (about 2 MB as int8, almost all of it the 49152 × 32 embedding) to commit and run in
milliseconds. The head size is 16 because onnxruntime's fused attention applies rotary positions only
to heads of a multiple of 16. Weights are drawn with a large spread so the logits are peaked and greedy
decoding is stable under int8 rounding. The tiny BERT goes through the sentence embedder's real export
path; its embeddings mean nothing, so tests that judge retrieval use the real MiniLM.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import IM_END, IM_START, PAD

TINY_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=2048,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)


def make_tiny_checkpoint(out_dir: Path, tokenizer_json: Path, seed: int = 0, init_std: float = 0.3) -> Path:
    """Write a random tiny LLaMA checkpoint (float32 safetensors + tokenizer files) to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), eos_token=IM_END, pad_token=PAD,
                                        bos_token=IM_START, add_bos_token=False)
    tokenizer.chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


TINY_BERT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=128,
    type_vocab_size=2,
)


def make_tiny_bert(out_dir: Path, tokenizer_json: Path, seed: int = 0) -> Path:
    """Write a random tiny BERT sentence-encoder checkpoint (with MiniLM's tokenizer) to `out_dir`."""
    import json
    import shutil

    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(), **TINY_BERT_CONFIG)
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    (out_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return out_dir
