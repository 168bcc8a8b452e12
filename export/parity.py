"""Parity of an exported ONNX model with the checkpoint it came from.

For each prompt the checkpoint (torch, float32) generates a greedy continuation. The ONNX model then
reads the same tokens through the runtime's own engine, one KV-cached step at a time, and at every
step its logits are compared with the checkpoint's: the largest and mean absolute logit difference, how
often both pick the same top-1 token, and how much of the continuation a free-running greedy decode
with the ONNX model would reproduce before its first different pick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmpc_runtime.adapters import read_adapter
from lmpc_runtime.bundle import ModelSpec
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import EngineOptions, open_engine
from lmpc_runtime.errors import ExportError

PROMPTS = [
    ("You are a blacksmith in a mountain village.", "What are you forging today?"),
    ("You are a ship's captain, gruff but fair.", "Will we reach the harbour before the storm?"),
    ("You are a court scholar who loves old maps.", "Tell me about the lost city in the north."),
    ("You are an innkeeper who hears every rumour.", "Any news from the capital?"),
    ("You are a young squire, eager and nervous.", "Why do you want to become a knight?"),
    ("You are a healer in a besieged town.", "How many wounded came in last night?"),
]


@dataclass(frozen=True)
class Parity:
    variant: str
    prompts: int
    positions: int
    max_logit_diff: float
    mean_logit_diff: float
    top1_agreement: float
    greedy_match: float  # mean share of the continuation decoded identically before the first divergence

    def to_dict(self) -> dict:
        return asdict(self)


# Bounds a variant must meet for the build to go on: quantisation moves logits, but must not change
# what the model says most of the time.
BOUNDS = {
    "fp32": {"max_logit_diff": 0.05, "top1_agreement": 0.99},
    "quantized": {"max_logit_diff": 8.0, "top1_agreement": 0.85},
}


def reference_continuations(model, chat: ChatFormat, new_tokens: int, im_end: int) -> list[tuple[list[int], list[int], np.ndarray]]:
    """(prompt ids, greedy continuation ids, checkpoint logits at each predicted position [n+1, vocab])."""
    import torch

    out = []
    with torch.no_grad():
        for system, user in PROMPTS:
            prompt = chat.turn("system", system) + chat.turn("user", user) + chat.open_turn()
            ids = list(prompt)
            for _ in range(new_tokens):
                logits = model(torch.tensor([ids])).logits[0, -1]
                nxt = int(torch.argmax(logits))
                ids.append(nxt)
                if nxt == im_end:
                    break
            full = model(torch.tensor([ids])).logits[0].numpy()
            # Logits that predict each continuation token, plus the one after the last.
            out.append((prompt, ids[len(prompt):], full[len(prompt) - 1:]))
    return out


def check_parity(variant: str, onnx_path: Path, spec: ModelSpec, chat: ChatFormat, references,
                 adapter: Path | None = None) -> Parity:
    """Run the model (with the adapter file `adapter` applied at run time) through the runtime's engine
    along each reference continuation and compare."""
    engine = open_engine(str(onnx_path), spec, EngineOptions(threads=2))
    applied = engine.attach_adapter(read_adapter(adapter)) if adapter is not None else None
    logits = []
    for prompt, continuation, _ in references:
        seq = engine.new_sequence(adapter=applied)
        logits.append(np.stack([engine.extend(seq, prompt)] + [engine.extend(seq, [tok]) for tok in continuation]))
    return compare(variant, logits, references)


def compare(variant: str, logits: list[np.ndarray], references) -> Parity:
    """Score `logits[i]` [n+1, vocab], a model's logits along reference i's continuation, against it."""
    diffs, agree, matches = [], [], []
    for ours, (_, continuation, ref_logits) in zip(logits, references, strict=True):
        diffs.append(np.abs(ours - ref_logits).max(axis=1))
        picks = ours.argmax(axis=1)
        agree.append(picks == ref_logits.argmax(axis=1))
        # Greedy decoding with the model alone follows the same states up to its first different pick.
        differ = np.flatnonzero(picks[: len(continuation)] != np.asarray(continuation, dtype=picks.dtype))
        matches.append((differ[0] if differ.size else len(continuation)) / max(len(continuation), 1))
    all_diffs = np.concatenate(diffs)
    return Parity(
        variant=variant,
        prompts=len(references),
        positions=int(all_diffs.size),
        max_logit_diff=float(all_diffs.max()),
        mean_logit_diff=float(np.mean([d.mean() for d in diffs])),
        top1_agreement=float(np.concatenate(agree).mean()),
        greedy_match=float(np.mean(matches)),
    )


def enforce_bounds(parity: Parity) -> None:
    bounds = BOUNDS["fp32" if parity.variant == "fp32" else "quantized"]
    if parity.max_logit_diff > bounds["max_logit_diff"] or parity.top1_agreement < bounds["top1_agreement"]:
        raise ExportError(
            f"parity check failed for {parity.variant}: max logit difference {parity.max_logit_diff:.3f} "
            f"(bound {bounds['max_logit_diff']}), top-1 agreement {parity.top1_agreement:.3f} "
            f"(bound {bounds['top1_agreement']})"
        )
