"""One round of APC-based DPO (`lmpc train --dpo`): the model's own replies, ranked by faithfulness.

1. Prompts: the player lines of the writer's dialogues and the sheet's examples (training material;
   the evaluation set stays held out), rendered exactly as the runtime prompts them.
2. The current NPC (a bundle built with the SFT adapter) answers each prompt `samples` times.
3. Each reply is scored with APC (`evaluate.ApcScorer`) and checked for hygiene problems (slop,
   assistant speak, refusal, invented names, repetition...). Clean replies rank above the others, then
   by APC: the chosen reply is the first, the rejected the last; a pair is kept when one is clean and the
   other not, or their APC differs by at least `margin`.
4. TRL's DPOTrainer trains the SFT adapter further on the pairs. The reference model is the SFT model
   itself: TRL keeps a frozen copy of the adapter for it. Samples arrive as token ids (the runtime's
   own prompt tokens), so TRL's tokenization step is skipped.
The adapter written is a drop-in replacement for the SFT one (`lmpc build --adapter`).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lmpc_runtime import read_bundle
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.errors import ExportError
from lmpc_runtime.sheet import CharacterSheet, load_sheet

from .checkpoint import ADAPTER_INFO
from .dialogues import Dialogue
from .evaluate import ApcScorer, answer, repetitive
from .hygiene import Hygiene
from .train import load_for_training, save_adapter

Log = Callable[[str], None]
DPO_REPORT = "dpo_report.json"


@dataclass(frozen=True)
class DpoConfig:
    samples: int = 4  # replies sampled per prompt
    temperature: float = 0.9  # above the bundle's own, for replies that differ
    margin: float = 0.5  # least APC difference between the chosen and the rejected reply
    max_prompts: int | None = None
    epochs: int = 2
    learning_rate: float = 5e-5
    beta: float = 0.1
    batch_size: int = 4
    seed: int = 0
    threads: int | None = None


def dpo_prompts(written: list[Dialogue], limit: int | None = None, seed: int = 0) -> list[str]:
    """The first player line of each hand-written dialogue, without repeats; at most `limit` of them,
    drawn evenly (seeded) from the sheet's examples and the dialogue file alike."""
    lines = list(dict.fromkeys(d.turns[0][0] for d in written))
    if limit is None or limit >= len(lines):
        return lines
    keep = set(random.Random(seed).sample(range(len(lines)), limit))
    return [line for i, line in enumerate(lines) if i in keep]


def preference_pairs(bundle_path: Path, prompts: list[str], scorer: ApcScorer, config: DpoConfig,
                     log: Log = lambda _: None) -> tuple[list[dict], dict]:
    """Sample, score and pair; returns the pairs (token ids and texts) and a summary."""
    bundle = read_bundle(bundle_path)
    chat = ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special)
    hygiene = Hygiene(bundle.character)
    rows = [(i, 0, "", line) for i, line in enumerate(prompts)]
    t = time.perf_counter()
    answers = answer(bundle_path, rows, list(range(config.seed, config.seed + config.samples)),
                     temperature=config.temperature, keep_prompts=True)
    log(f"dpo: {len(answers)} replies sampled in {time.perf_counter() - t:.0f} s; scoring them")
    scorer.relevance.adapt_prior(prompts, scorer.statements)
    by_prompt: dict[int, list] = {}
    for a in answers:
        clean = not hygiene.reply_problems(a.text, a.line) and not repetitive(a.text, a.finish)
        by_prompt.setdefault(a.conversation, []).append((scorer.score(a.line, a.text).score, clean, a))
    pairs, margins = [], []
    for scored in by_prompt.values():
        # Clean replies rank above any with a problem, then by APC.
        best = max(scored, key=lambda s: (s[1], s[0]))
        worst = min(scored, key=lambda s: (s[1], s[0]))
        if best is worst or (best[1] == worst[1] and best[0] - worst[0] < config.margin):
            continue
        margins.append(best[0] - worst[0])
        chosen, rejected = best[2], worst[2]
        pairs.append({"prompt_ids": chosen.prompt,
                      "chosen_ids": chat.encode_text(chosen.text) + [bundle.special.im_end],
                      "rejected_ids": chat.encode_text(rejected.text) + [bundle.special.im_end],
                      "line": chosen.line, "chosen": chosen.text, "rejected": rejected.text,
                      "chosen_apc": best[0], "rejected_apc": worst[0], "rejected_clean": worst[1]})
    summary = {"prompts": len(prompts), "replies": len(answers), "pairs": len(pairs),
               "mean_margin": sum(margins) / len(margins) if margins else 0.0,
               "rejected_for_hygiene": sum(not p["rejected_clean"] for p in pairs),
               "prompts_without_clean_reply": sum(1 for s in by_prompt.values() if not any(c for _, c, _ in s))}
    return pairs, summary


def _trainer_class():
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer for samples already tokenized as the runtime prompts (prompt/chosen/rejected ids)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return TokenizedDPOTrainer


def train_dpo(checkpoint: Path, sft_adapter: Path, pairs: list[dict], config: DpoConfig, out: Path,
              log: Log = lambda _: None) -> dict:
    """Train the SFT adapter further by DPO on `pairs`; write the new adapter to `out`."""
    try:
        import torch
        from datasets import Dataset
        from peft import PeftModel
        from transformers import PrinterCallback
        from trl import DPOConfig
    except ImportError as exc:
        raise ExportError(f"DPO needs the train extra (pip install 'lmpc[train]'): {exc}") from exc
    from .onnx_export import quiet

    if not pairs:
        raise ExportError("no preference pairs: every prompt's replies scored within the margin of each other")
    t0 = time.perf_counter()
    tokenizer, base = load_for_training(checkpoint, config.threads, config.seed)
    with quiet():
        model = PeftModel.from_pretrained(base, sft_adapter, is_trainable=True)
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    gpu = torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(work), num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, beta=config.beta, lr_scheduler_type="cosine", warmup_ratio=0.1,
        max_length=None, logging_steps=1, save_strategy="no", report_to="none", seed=config.seed,
        use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(), dataloader_num_workers=0,
        disable_tqdm=True, gradient_checkpointing=False)
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    dataset = Dataset.from_dict({c: [p[c] for p in pairs] for c in columns})
    with quiet():
        trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    log(f"dpo: {len(pairs)} pairs, {config.epochs} epochs, beta {config.beta}, lr {config.learning_rate}")
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    model = trainer.model
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    info = json.loads((sft_adapter / ADAPTER_INFO).read_text())
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(model, out, {k: v for k, v in info.items() if k != "format"})
    shutil.rmtree(work, ignore_errors=True)
    return {"config": asdict(config), "steps": trainer.state.global_step, "seconds": round(time.perf_counter() - t0, 1),
            "device": "cuda" if gpu else "cpu", "from_adapter": sft_adapter.name,
            "loss_first": history[0]["loss"] if history else None,
            "loss_last": history[-1]["loss"] if history else None,
            "reward_accuracy_last": history[-1].get("rewards/accuracies") if history else None}


def sheet_dialogues(sheet: CharacterSheet, sheet_path: Path) -> list[Dialogue]:
    from .dialogues import dialogue_file_for, writer_dialogues

    dialogue_file = dialogue_file_for(sheet_path)
    return writer_dialogues(sheet, dialogue_file if dialogue_file.is_file() else None)


def dpo_npc(sheet_path: Path, out: Path, sft_adapter: Path, adapter_out: Path, config: DpoConfig,
            judge_spec: str = "local", seeds: tuple[int, ...] = (1, 2), cache_dir: Path | None = None,
            base: Path | None = None, log: Log = lambda _: None) -> dict:
    """SFT bundle → scored samples → DPO adapter → its bundle at `out`, each bundle evaluated on the
    held-out set; the report (`dpo_report.json` beside the adapter) shows APC before and after."""
    from . import checkpoint as ckpt
    from .build import build, default_cache_dir, prepare_model
    from .bundle_files import CALIBRATION_SET, EVAL_SET
    from .evaluate import evaluate, load_eval_set, make_judge, prepare_scorer, write_report
    sheet = load_sheet(sheet_path)
    cache = cache_dir or default_cache_dir()
    before = out.with_name(out.name.removesuffix(".lmpc") + ".sft.lmpc")
    base = base or ckpt.base_gguf()
    build(sheet_path, before, source=base, cache_dir=cache, adapter=sft_adapter, log=log)
    for name in (EVAL_SET, CALIBRATION_SET):
        if not (before / name).is_file():
            raise ExportError(f"DPO needs the sheet's {name.split('_')[0]} file beside {sheet_path} "
                              f"({before / name} is missing)")
    judge = make_judge(judge_spec, cache, config.threads or 2)
    scorer, estimators = prepare_scorer(before, before / CALIBRATION_SET, judge, log=log)
    evalset = load_eval_set(before / EVAL_SET)
    report_before = evaluate(before, evalset, scorer, estimators, list(seeds), log=log)
    write_report(report_before, before)

    prompts = dpo_prompts(sheet_dialogues(sheet, sheet_path), config.max_prompts, config.seed)
    pairs, sampled = preference_pairs(before, prompts, scorer, config, log)
    log(f"dpo: {sampled['pairs']} pairs from {sampled['prompts']} prompts (mean APC margin "
        f"{sampled['mean_margin']:.2f})")
    adapter_out.mkdir(parents=True, exist_ok=True)
    with open(adapter_out / "dpo_pairs.jsonl", "w", encoding="utf-8") as f:  # written first: training is long
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    entry = prepare_model(base, cache, log)
    training = train_dpo(entry / "checkpoint", sft_adapter, pairs, config, adapter_out, log)
    build(sheet_path, out, source=base, cache_dir=cache, adapter=adapter_out, log=log)
    report_after = evaluate(out, evalset, scorer, estimators, list(seeds), log=log)
    write_report(report_after, out)
    write_report(report_after, adapter_out)  # so bundles built from this adapter carry it
    report = {"sampling": sampled, "training": training,
              "apc_before": report_before["summary"], "apc_after": report_after["summary"]}
    (adapter_out / DPO_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
