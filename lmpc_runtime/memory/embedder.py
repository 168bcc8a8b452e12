"""Sentence embeddings for memory retrieval: a small BERT sentence encoder (all-MiniLM-L6-v2) as ONNX.

A text becomes one unit vector: the encoder's last hidden states [batch, tokens, dim] are averaged over
the real (unpadded) tokens and L2-normalised, exactly as the sentence-transformers checkpoint does, so a
dot product of two embeddings is their cosine similarity. One `Embedder` (one onnxruntime session) is
shared by every NPC of a Runtime whose bundle carries the same embedder file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from ..bundle import EmbedderSpec
from ..engine import EngineOptions, make_session
from ..errors import BundleFormatError, ModelError

REQUIRED_INPUTS = {"input_ids", "attention_mask"}
OPTIONAL_INPUTS = {"token_type_ids"}


class Embedder:
    """Embeds texts in batches; `embed(texts)` returns float32 unit rows [len(texts), dim]."""

    def __init__(self, model_path: str, tokenizer_path: str, spec: EmbedderSpec,
                 options: EngineOptions = EngineOptions()):
        self.spec = spec
        self.session = make_session(model_path, options)
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        hidden = outputs.get("last_hidden_state")
        if not REQUIRED_INPUTS <= inputs or inputs - REQUIRED_INPUTS - OPTIONAL_INPUTS or hidden is None \
                or hidden[-1] != spec.dim:
            raise BundleFormatError(
                f"{model_path}: not a sentence encoder with {spec.dim}-dimensional last_hidden_state "
                f"(inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        self._token_types = "token_type_ids" in inputs
        try:
            self.tokenizer = Tokenizer.from_file(tokenizer_path)
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise BundleFormatError(f"{tokenizer_path}: cannot load the embedder's tokenizer: {exc}") from exc
        # The padding and truncation saved in tokenizer.json are not trusted: batches are padded here.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(spec.max_tokens)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._embed_encoded([encodings[i].ids for i in rows])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """[dim] unit vector of one text."""
        return self.embed([text])[0]

    def _embed_encoded(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        try:
            (hidden,) = self.session.run(["last_hidden_state"], feed)  # [batch, width, dim]
        except Exception as exc:  # onnxruntime's own error types
            raise ModelError(f"the embedder failed: {exc}") from exc
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)  # [batch, dim]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)
