"""Supervised fine-tuning on the character's dialogues: TRL's SFTTrainer, LoRA by default.

Samples arrive tokenized (`dataset.render`) with an `assistant_masks` column, so TRL trains on the
character's replies only. Every sample starts with the same persona (the prompt of its style: two
sentences, or the long system prompt and example shots) and its own dialogue. `ReplyLossTrainer`
therefore runs the persona once per step, without gradient, and trains the batch on the dialogue tokens
reading the persona's keys and values from that cache: the forward pass is exactly the full-sequence
one, and the gradient leaves out only the persona tokens' own dependence on the adapter
(`share_prefix=False` trains on whole sequences). The LM head (49,152 words × 576) runs only where the
loss is taken, the replies, and where the CPU has bfloat16 instructions the forward pass runs under
bfloat16 autocast (1.5× faster per step on an AVX-512 BF16 core in a one-off timing, docs/results/training.md;
the weights stay float32).

A step's activations take about 2.4 MB per token of its batch (measured on SmolLM2-135M, LoRA on every
layer, bfloat16 autocast: 7.2 GB for 8 samples of 400 tokens), far more than the model. So a step is cut
into micro-batches of the batch's samples, their gradients summed before one optimizer step (the same
step, up to rounding), as few as the memory limit allows by that estimate (`max_memory_gb`; default half
the memory available when training starts).

Every epoch is scored on the held-out dialogues and, when the sheet has a persona test, by answering
that test greedily (`PersonaTestCallback`); the epoch with the best persona test (else the lowest
held-out loss) is the one kept. Epochs are checkpointed: a run stopped midway resumes from its last
epoch. The LoRA adapter is saved in float16 (half the size; merging upcasts it again) together with
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
# Peak memory of a training step beyond the loaded model, per token of its batch: SmolLM2-135M (30 layers,
# width 576, MLP 1536), measured at 8 × 200 and 8 × 400 tokens (the larger of the two ratios). Other
# shapes scale it by layers × (width + MLP width).
STEP_BYTES_PER_TOKEN = 2.4e6
MEASURED_SHAPE = 30 * (576 + 1536)
# What a run holds besides the model and one step's activations, by its end: the allocator keeps freed
# blocks of the many batch shapes (Jory's epoch at micro-batches of 8 and of 4 both peaked about 2.5 GB
# above model + activations; docs/results/training.md).
RUN_OVERHEAD_BYTES = 2.5 * 2**30


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
    bf16: bool | None = None  # bfloat16 autocast; None: where the CPU (or GPU) supports it
    seed: int = 0
    threads: int | None = None
    # A step's peak memory, model included; None: half the memory available when training starts.
    max_memory_gb: float | None = None

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
    persona_test: list[dict] = field(default_factory=list)  # per epoch, greedy (PersonaTestCallback)
    started_from: str | None = None  # the adapter the LoRA began from (None: from zero)
    resumed_from: str | None = None  # the checkpoint a resumed run went on from; `seconds` counts this run only

    def to_dict(self) -> dict:
        out = asdict(self)
        out["output"] = str(self.output)
        return out


def bf16_supported() -> bool:
    """bfloat16 matmuls in hardware: a CUDA GPU that has them, or a CPU with AVX-512 BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def _trainer_class():
    import torch
    from trl import SFTTrainer

    class ReplyLossTrainer(SFTTrainer):
        """SFTTrainer that computes the shared persona prefix once per step and the LM head only at the
        positions the loss reads (see the module docstring)."""

        def __init__(self, *args, prefix: list[int], autocast: bool, **kwargs):
            super().__init__(*args, **kwargs)
            self.prefix = torch.tensor([prefix]) if prefix else None
            self.autocast = autocast

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, labels, mask = inputs["input_ids"], inputs["labels"], inputs.get("attention_mask")
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            backbone = getattr(inner, inner.base_model_prefix)
            device = "cuda" if ids.is_cuda else "cpu"
            with torch.autocast(device, dtype=torch.bfloat16, enabled=self.autocast):
                cache = None
                if self.prefix is not None:
                    n = self.prefix.shape[1]
                    with torch.no_grad():
                        cache = backbone(input_ids=self.prefix.to(ids.device), use_cache=True).past_key_values
                    cache.batch_repeat_interleave(ids.shape[0])
                    # The attention mask keeps its full length [batch, prefix + dialogue]: the cache
                    # fills the first part.
                    ids, labels = ids[:, n:], labels[:, n:]
                hidden = backbone(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                  use_cache=cache is not None).last_hidden_state  # [batch, tokens, 576]
                targets = labels[:, 1:]
                read = targets != -100  # position t predicts token t + 1
                logits = inner.lm_head(hidden[:, :-1][read])  # [replied tokens, vocab]
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[read], reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch else read.sum().clamp(min=1))
            return (loss, {"loss": loss}) if return_outputs else loss

    return ReplyLossTrainer


def micro_batch_size(batch_size: int, tokens: int, bytes_per_token: float, budget: float) -> int:
    """The largest divisor of `batch_size` whose micro-batch, at `tokens` tokens a sample, keeps a step's
    activations within `budget` bytes; 1 when none does."""
    fits = [d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * tokens * bytes_per_token <= budget]
    return max(fits, default=1)


def _proc_kilobytes(path: str, field: str) -> int | None:
    """A `field:  N kB` line of a /proc file, in bytes; None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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
                 work: Path, progress: bool = True, callbacks: list | None = None, start: Path | None = None):
    """An SFTTrainer (LoRA-wrapped model, datasets, arguments) ready to `.train()`; with `start`, the LoRA
    begins from that adapter's weights instead of zero (see `check_start_adapter`)."""
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
    if config.max_memory_gb is not None and not config.max_memory_gb > 0:
        raise ExportError(f"the memory limit must be a positive number of GB, not {config.max_memory_gb}")
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
        if start is not None:
            _load_adapter_weights(model, start)
    gpu = torch.cuda.is_available()
    autocast = bf16_supported() if config.bf16 is None else config.bf16
    micro = config.batch_size if gpu else _micro_batch(model.config, train_rows, len(prefix), config)
    select_by_test = any(isinstance(c, PersonaTestCallback) for c in callbacks or [])
    args = SFTConfig(
        output_dir=str(work / "epochs"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=config.batch_size // micro,
        per_device_eval_batch_size=config.batch_size,  # no activations kept for a backward pass
        group_by_length=True,  # batches of similar lengths: little padding (samples run from 60 to 400 tokens)
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_ratio=config.warmup_ratio,
        weight_decay=0.0,
        gradient_checkpointing=False,  # TRL turns it on; a 135M model fits, and recomputing costs more
        max_length=None,  # samples are never cut; the pipeline leaves out the over-long ones
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        # The persona test picks the epoch when there is one (PersonaTestCallback keeps it).
        load_best_model_at_end=not select_by_test,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=1 if select_by_test else 2,  # the last epoch, to resume from
        prediction_loss_only=True,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not gpu,
        bf16=False,  # the trainer's own autocast: ReplyLossTrainer applies it to the forward pass only
        # Liger's Triton kernels exist only for GPUs.
        use_liger_kernel=gpu and importlib.util.find_spec("liger_kernel") is not None,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    with quiet():
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=_dataset(train_rows), eval_dataset=_dataset(eval_rows),
            processing_class=tokenizer, callbacks=callbacks, prefix=prefix if config.share_prefix else [],
            autocast=autocast)
    # Without progress bars the Trainer prints every log line to stdout; the report has them all.
    trainer.remove_callback(PrinterCallback)
    return trainer


def step_bytes_per_token(model_config) -> float:
    """A training step's activations per token of its batch, scaled from the measured shape."""
    shape = model_config.num_hidden_layers * (model_config.hidden_size + model_config.intermediate_size)
    return STEP_BYTES_PER_TOKEN * shape / MEASURED_SHAPE


def _micro_batch(model_config, rows: list[Rendered], prefix: int, config: TrainConfig) -> int:
    """The micro-batch for this run's longest training sample (its shared persona prefix is cached, not
    trained; held-out batches stay whole, as they keep nothing for a backward pass)."""
    available = _proc_kilobytes("/proc/meminfo", "MemAvailable")
    limit = config.max_memory_gb * 2**30 if config.max_memory_gb else (available or math.inf) / 2
    longest = max(len(r.input_ids) for r in rows) - (prefix if config.share_prefix else 0)
    return micro_batch_size(config.batch_size, longest, step_bytes_per_token(model_config),
                            limit - (_proc_kilobytes("/proc/self/status", "VmRSS") or 0) - RUN_OVERHEAD_BYTES)


def check_start_adapter(start: Path, config: TrainConfig, info: dict) -> None:
    """An adapter training may go on from: made by `lmpc train` for the same base model and prompt style,
    with this run's LoRA shape (rank and adapted layers); anything else would be a silent mismatch."""
    if config.full:
        raise ExportError("a full fine-tune cannot start from a LoRA adapter")
    try:
        made = json.loads((start / ADAPTER_INFO).read_text())
        shape = json.loads((start / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{start}: not an adapter made by lmpc train ({exc})") from exc
    for key in ("base_fingerprint", "prompt_style"):
        if made.get(key) != info.get(key):
            raise ExportError(f"{start}: trained with {key} {made.get(key)!r}, this run uses {info.get(key)!r}")
    layers = len(shape["layers_to_transform"]) if shape.get("layers_to_transform") else None
    if shape.get("r") != config.lora_rank or layers != config.lora_layers:
        raise ExportError(f"{start}: LoRA rank {shape.get('r')} on {layers or 'all'} layers, this run asks "
                          f"rank {config.lora_rank} on {config.lora_layers or 'all'}")


def _load_adapter_weights(model, start: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    missing = set_peft_model_state_dict(model, load_file(start / "adapter_model.safetensors")).missing_keys
    if any("lora_" in key for key in missing):
        raise ExportError(f"{start}: the adapter lacks weights this model needs ({len(missing)} missing)")


class PersonaTestCallback:
    """Answers the persona test greedily after every epoch, with the model being trained, and keeps the
    adapter of the best epoch in `work/best` (persisted, so a resumed run keeps its best so far).

    `prompt(history, line)` gives the token ids the runtime would feed for `line` after `history` (earlier
    (line, reply) pairs of the conversation), `decode` turns reply ids into text, `score(question, reply)`
    gives a `persona_test.ScoredReply` and `summarise(questions, scored)` their summary."""

    def __init__(self, questions, prompt: Callable, decode: Callable, score: Callable, summarise: Callable,
                 work: Path, im_end: int, pad: int, log: Log = lambda _: None, max_new_tokens: int = 64,
                 batch: int = 48):
        from transformers import TrainerCallback

        self.questions, self.prompt, self.decode = questions, prompt, decode
        self.score, self.summarise = score, summarise
        self.best_dir, self.history_file = work / "best", work / "persona_test.json"
        self.im_end, self.pad, self.log = im_end, pad, log
        self.max_new_tokens, self.batch = max_new_tokens, batch
        self.epochs: list[dict] = (json.loads(self.history_file.read_text())
                                   if self.history_file.is_file() else [])
        outer = self

        class Hook(TrainerCallback):  # transformers calls this; the state lives in the outer object
            def on_epoch_end(self, args, state, control, model=None, **kwargs):
                outer.on_epoch_end(round(state.epoch), model)

        self.hook = Hook()

    @property
    def best(self) -> dict | None:
        return max(self.epochs, key=lambda e: (e["key_facts"], -e["epoch"])) if self.epochs else None

    def answers(self, model) -> list[str]:
        """The last reply of every question's conversation, greedy, batched (left-padded)."""
        import torch

        replies: list[list[tuple[str, str]]] = [[] for _ in self.questions]
        model.eval()
        model.merge_adapter()  # generating through the unmerged LoRA costs two extra matmuls per projection
        for turn in range(max(len(q.lines) for q in self.questions)):
            todo = [i for i, q in enumerate(self.questions) if len(q.lines) > turn]
            for start in range(0, len(todo), self.batch):
                chunk = todo[start:start + self.batch]
                prompts = [self.prompt(replies[i], self.questions[i].lines[turn]) for i in chunk]
                width = max(map(len, prompts))
                ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=model.device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
                with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16,
                                                     enabled=bf16_supported()):
                    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                         do_sample=False, repetition_penalty=1.15, eos_token_id=self.im_end,
                                         pad_token_id=self.pad)
                for i, row in zip(chunk, out[:, width:].tolist()):
                    row = row[: row.index(self.im_end)] if self.im_end in row else row
                    replies[i].append((self.questions[i].lines[turn], self.decode(row)))
        model.unmerge_adapter()
        model.train()
        return [r[-1][1] for r in replies]

    def on_epoch_end(self, epoch: int, model) -> None:
        t = time.perf_counter()
        scored = [self.score(i, reply) for i, reply in enumerate(self.answers(model))]
        summary = self.summarise(self.questions, scored)
        row = {"epoch": epoch, "key_facts": summary["key_facts"], "by_category": summary["by_category"],
               **{k: summary[k] for k in ("wrong", "invented_name", "assistant_speak", "loop")},
               "seconds": round(time.perf_counter() - t, 1)}
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [row]
        if self.best is row:
            model.save_pretrained(self.best_dir)
        self.history_file.write_text(json.dumps(self.epochs, indent=1))
        self.log(f"train: epoch {epoch}: persona test (greedy) key facts {row['key_facts']:.1%}, invented names "
                 f"{row['invented_name']:.0%}, assistant speak {row['assistant_speak']:.0%}, loops {row['loop']:.0%}"
                 f" ({row['seconds']:.0f} s)")

    def restore_best(self, model) -> int:
        """Load the best epoch's adapter weights into `model`; returns that epoch."""
        _load_adapter_weights(model, self.best_dir)
        return self.best["epoch"]


def train(checkpoint: Path, train_rows: list[Rendered], eval_rows: list[Rendered], config: TrainConfig,
          out: Path, adapter_info: dict, progress: bool = True, log: Log = lambda _: None,
          persona_test: Callable[[Path, Log], PersonaTestCallback] | None = None,
          resume: bool = False, start: Path | None = None) -> TrainResult:
    """Fine-tune the checkpoint; write the best epoch's adapter (or full checkpoint) to `out`.

    `adapter_info` ({"base_fingerprint", "persona_sha256", "prompt_style"}) is saved beside a LoRA
    adapter. `persona_test(work, log)` makes the callback that picks the epoch (LoRA only). With
    `resume`, a run stopped midway goes on from its last finished epoch. With `start`, the LoRA begins
    from an earlier run's adapter (more epochs, a new learning-rate schedule) instead of from zero."""
    import torch

    t0 = time.perf_counter()
    if start is not None:
        check_start_adapter(start, config, adapter_info)
    work = out.with_name(f".{out.name}.work")
    checkpoints = sorted((work / "epochs").glob("checkpoint-*")) if resume else []
    if not checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    selector = persona_test(work, log) if persona_test is not None and not config.full else None
    trainer = make_trainer(checkpoint, train_rows, eval_rows, config, work, progress,
                           callbacks=[selector.hook] if selector else None, start=start)
    log(f"train: {len(train_rows)} samples, {len(eval_rows)} held out, "
        f"{'full fine-tune' if config.full else f'LoRA r={config.lora_rank}'}"
        f"{f' on the last {config.lora_layers} layers' if config.lora_layers and not config.full else ''}, "
        f"lr {config.lr}, "
        f"{config.epochs} epochs of {math.ceil(len(train_rows) / config.batch_size)} steps"
        + (f" (each in micro-batches of {trainer.args.per_device_train_batch_size}, to fit the memory limit)"
           if trainer.args.gradient_accumulation_steps > 1 else "")
        + (f", starting from {start}" if start is not None else "")
        + (f", resuming from {checkpoints[-1].name}" if checkpoints else ""))
    before = trainer.evaluate()["eval_loss"]
    log(f"train: held-out loss before training {before:.4f}")
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    epochs = [EpochLoss(0, None, before)] + _epoch_losses(trainer.state.log_history)
    best = min(epochs[1:], key=lambda e: e.eval_loss).epoch
    model = trainer.model
    if selector is not None and selector.best is not None:
        best = selector.restore_best(model)
    for e in epochs[1:]:
        log(f"train: epoch {e.epoch}: train loss {e.train_loss:.4f}, held-out loss {e.eval_loss:.4f}"
            + ("  <- kept" if e.epoch == best else ""))

    out.mkdir(parents=True, exist_ok=True)
    if config.full:
        model.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    else:
        save_adapter(model, out, adapter_info)
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(
        output=out, kind="full" if config.full else "lora", epochs=epochs, best_epoch=best,
        steps=trainer.state.global_step, train_samples=len(train_rows), eval_samples=len(eval_rows),
        seconds=time.perf_counter() - t0, device="cuda" if torch.cuda.is_available() else "cpu",
        config={**asdict(config), "learning_rate": config.lr},
        persona_test=selector.epochs if selector is not None else [],
        started_from=str(start) if start is not None else None, resumed_from=checkpoints[-1].name if checkpoints else None)


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
