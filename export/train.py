"""Supervised fine-tuning on the character's dialogues: TRL's SFTTrainer, LoRA by default.

Samples arrive tokenized (`dataset.render`) with an `assistant_masks` column, so TRL trains on the
character's replies only. Every sample starts with the same persona (system prompt and example shots,
about 600 tokens for Orlando) and its own 80-150 tokens of dialogue. `PersonaPrefixTrainer` therefore
runs the persona once per step, without gradient, and trains the batch on the dialogue tokens reading
the persona's keys and values from that cache: the forward pass is exactly the full-sequence one, the
gradient leaves out only the persona tokens' own dependence on the adapter, and a step costs about a
fifth of the full-sequence step on a CPU. `share_prefix=False` trains on whole sequences.

One epoch at a time is scored on the held-out dialogues; the epoch with the lowest held-out loss is the
one kept. The LoRA adapter is saved in float16 (half the size; merging upcasts it again) together with
`lmpc_adapter.json`, which names the base model it was trained on and the persona it was trained with.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lmpc_runtime.errors import ExportError

from .checkpoint import ADAPTER_INFO
from .dataset import Rendered

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    learning_rate: float | None = None  # default: 2e-4 for LoRA, 5e-5 for a full fine-tune
    batch_size: int = 6
    full: bool = False  # full fine-tune instead of LoRA
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Adapt only the last N decoder layers (None: all). The backward pass then stops at the lowest adapted
    # layer, which on a CPU makes a step markedly cheaper.
    lora_layers: int | None = None
    warmup_ratio: float = 0.05
    max_length: int = 1024  # longer samples are left out (never cut: a cut reply teaches a cut reply)
    share_prefix: bool = True
    seed: int = 0
    threads: int | None = None

    @property
    def lr(self) -> float:
        return self.learning_rate or (5e-5 if self.full else 2e-4)


@dataclass
class EpochLoss:
    epoch: int
    train_loss: float | None  # mean over the epoch's steps (None before training)
    eval_loss: float


@dataclass
class TrainResult:
    output: Path  # the adapter directory, or the full checkpoint directory
    kind: str  # "lora" or "full"
    epochs: list[EpochLoss]
    best_epoch: int
    steps: int
    train_samples: int
    eval_samples: int
    seconds: float
    device: str
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["output"] = str(self.output)
        return out


def _trainer_class(share_prefix: bool):
    import torch
    from trl import SFTTrainer

    if not share_prefix:
        return SFTTrainer

    class PersonaPrefixTrainer(SFTTrainer):
        """SFTTrainer that computes the shared persona prefix once per step (see the module docstring)."""

        def __init__(self, *args, prefix: list[int], **kwargs):
            super().__init__(*args, **kwargs)
            self.prefix = torch.tensor([prefix])

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = self.prefix.shape[1]
            ids = inputs["input_ids"]
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            backbone = getattr(inner, inner.base_model_prefix)
            with torch.no_grad():
                cache = backbone(input_ids=self.prefix.to(ids.device), use_cache=True).past_key_values
            cache.batch_repeat_interleave(ids.shape[0])
            # The attention mask keeps its full length [batch, prefix + dialogue]: the cache fills the
            # first part.
            suffix = {**inputs, "input_ids": ids[:, n:], "labels": inputs["labels"][:, n:],
                      "past_key_values": cache}
            return super().compute_loss(model, suffix, return_outputs, num_items_in_batch)

    return PersonaPrefixTrainer


def _dataset(rows: list[Rendered]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows],
                              "assistant_masks": [r.assistant_masks for r in rows]})


def load_for_training(checkpoint: Path, threads: int | None, seed: int):
    """The tokenizer and float32 model of a checkpoint, with torch's threads and seed set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .onnx_export import quiet

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    with quiet():
        return (AutoTokenizer.from_pretrained(checkpoint),
                AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32))


def make_trainer(checkpoint: Path, train_rows: list[Rendered], eval_rows: list[Rendered], config: TrainConfig,
                 work: Path, progress: bool = True):
    """An SFTTrainer (LoRA-wrapped model, datasets, arguments) ready to `.train()`."""
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
        from trl import SFTConfig
    except ImportError as exc:
        raise ExportError(f"training needs the train extra (pip install 'lmpc[train]'): {exc}") from exc
    from .onnx_export import quiet

    if not train_rows or not eval_rows:
        raise ExportError(f"training needs samples on both sides of the split ({len(train_rows)} train, "
                          f"{len(eval_rows)} held out)")
    prefix = train_rows[0].input_ids[: train_rows[0].prefix_length]
    if config.share_prefix and any(r.input_ids[: len(prefix)] != prefix for r in train_rows + eval_rows):
        raise ExportError("samples do not share one persona prefix; train with share_prefix=False")
    tokenizer, model = load_for_training(checkpoint, config.threads, config.seed)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ExportError(f"{checkpoint}: the pad token must differ from eos, or the model never learns "
                          "to stop")
    if not config.full:
        layers = model.config.num_hidden_layers
        if config.lora_layers is not None and not 1 <= config.lora_layers <= layers:
            raise ExportError(f"lora_layers must be between 1 and {layers}, not {config.lora_layers}")
        top = None if config.lora_layers is None else list(range(layers - config.lora_layers, layers))
        model = get_peft_model(model, LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(LORA_TARGETS), layers_to_transform=top, task_type="CAUSAL_LM"))
    gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(work / "epochs"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_ratio=config.warmup_ratio,
        weight_decay=0.0,
        gradient_checkpointing=False,  # TRL turns it on; a 135M model fits, and recomputing costs more
        max_length=None,  # samples are never cut; the pipeline leaves out the over-long ones
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_only_model=True,
        save_total_limit=2,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not gpu,
        bf16=gpu and torch.cuda.is_bf16_supported(),
        # Liger's Triton kernels exist only for GPUs.
        use_liger_kernel=gpu and importlib.util.find_spec("liger_kernel") is not None,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    kwargs = {"prefix": prefix} if config.share_prefix else {}
    with quiet():
        trainer = _trainer_class(config.share_prefix)(
            model=model, args=args, train_dataset=_dataset(train_rows), eval_dataset=_dataset(eval_rows),
            processing_class=tokenizer, **kwargs)
    # Without progress bars the Trainer prints every log line to stdout; the report has them all.
    trainer.remove_callback(PrinterCallback)
    return trainer


def train(checkpoint: Path, train_rows: list[Rendered], eval_rows: list[Rendered], config: TrainConfig,
          out: Path, adapter_info: dict, progress: bool = True, log: Log = lambda _: None) -> TrainResult:
    """Fine-tune the checkpoint; write the best epoch's adapter (or full checkpoint) to `out`.

    `adapter_info` ({"base_fingerprint", "persona_sha256"}) is saved beside a LoRA adapter."""
    import torch

    t0 = time.perf_counter()
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    trainer = make_trainer(checkpoint, train_rows, eval_rows, config, work, progress)
    log(f"train: {len(train_rows)} samples, {len(eval_rows)} held out, "
        f"{'full fine-tune' if config.full else f'LoRA r={config.lora_rank}'}"
        f"{f' on the last {config.lora_layers} layers' if config.lora_layers and not config.full else ''}, "
        f"lr {config.lr}, "
        f"{config.epochs} epochs of {math.ceil(len(train_rows) / config.batch_size)} steps")
    before = trainer.evaluate()["eval_loss"]
    log(f"train: held-out loss before training {before:.4f}")
    trainer.train()
    epochs = [EpochLoss(0, None, before)] + _epoch_losses(trainer.state.log_history)
    best = min(epochs[1:], key=lambda e: e.eval_loss)
    for e in epochs[1:]:
        log(f"train: epoch {e.epoch}: train loss {e.train_loss:.4f}, held-out loss {e.eval_loss:.4f}"
            + ("  <- kept" if e is best else ""))

    model = trainer.model
    out.mkdir(parents=True, exist_ok=True)
    if config.full:
        model.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    else:
        save_adapter(model, out, adapter_info)
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(
        output=out, kind="full" if config.full else "lora", epochs=epochs, best_epoch=best.epoch,
        steps=trainer.state.global_step, train_samples=len(train_rows), eval_samples=len(eval_rows),
        seconds=time.perf_counter() - t0, device="cuda" if torch.cuda.is_available() else "cpu",
        config={**asdict(config), "learning_rate": config.lr})


def _epoch_losses(history: list[dict]) -> list[EpochLoss]:
    train = {round(h["epoch"]): h["loss"] for h in history if "loss" in h}
    return [EpochLoss(round(h["epoch"]), train.get(round(h["epoch"])), h["eval_loss"])
            for h in history if "eval_loss" in h]


def save_adapter(model, out: Path, info: dict) -> None:
    import torch

    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.float16)
    # Not the local path it was loaded from, which means nothing on another machine.
    model.peft_config["default"].base_model_name_or_path = info.get("base_fingerprint")
    model.save_pretrained(out, save_embedding_layers=False)  # the vocabulary is unchanged; no hub lookup
    (out / "README.md").unlink(missing_ok=True)  # peft's blank model card
    (out / ADAPTER_INFO).write_text(json.dumps({"format": 1, **info}, indent=2) + "\n")
