"""Training on the tiny model: collated batches, the shared persona prefix, LoRA lowering the loss, merging
the adapter at export, and `lmpc train` end to end."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lmpc_runtime import Runtime, read_bundle
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.errors import ExportError
from lmpc_runtime.reply import DONE
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, TINY_BUNDLE

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from lmpc_export import checkpoint as ckpt  # noqa: E402
from lmpc_export.build import build, prepare_model, special_tokens  # noqa: E402
from lmpc_export.dataset import make_samples, persona_ids, render, split  # noqa: E402
from lmpc_runtime.memory.recall import Recalled  # noqa: E402
from lmpc_export.dialogues import writer_dialogues  # noqa: E402
from lmpc_export.tiny import make_tiny_checkpoint  # noqa: E402
from lmpc_export.toml_writer import drop_empty, dumps  # noqa: E402
from lmpc_export.train import TrainConfig, make_trainer, micro_batch_size, train  # noqa: E402

FAST = TrainConfig(epochs=3, batch_size=4, learning_rate=3e-2, lora_rank=8, lora_alpha=16, lora_dropout=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random checkpoint and rendered samples: 10 to train on, 2 held out."""
    tmp = tmp_path_factory.mktemp("train")
    shutil.copyfile(TINY_BUNDLE / "tokenizer.json", tmp / "tokenizer.json")
    checkpoint = make_tiny_checkpoint(tmp / "tiny", tmp / "tokenizer.json", seed=2)
    sheet = load_sheet(ORLANDO_SHEET)
    tokenizer = checkpoint / "tokenizer.json"
    chat = ChatFormat.from_file(str(tokenizer), special_tokens(tokenizer))
    # A stand-in for retrieval (the real one is tested in test_dataset.py): two facts per note.
    notes = lambda messages: Recalled(sheet.facts[len(messages[-1]) % 8:][:2], [])  # noqa: E731
    samples = make_samples(writer_dialogues(sheet, None)[:6], notes, writer_weight=2)
    train_samples, held_out = split(samples, 0.2, seed=1)
    persona = persona_ids(sheet, chat)
    rows = lambda chosen: [render(s, sheet, chat, persona) for s in chosen]  # noqa: E731
    return tmp, checkpoint, rows(train_samples), rows(held_out)


def test_collated_batches_pad_apart_from_eos_and_learn_only_the_replies(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    trainer = make_trainer(checkpoint, train_rows, eval_rows, FAST, tmp / "collate", progress=False)
    pad, eos = trainer.processing_class.pad_token_id, trainer.processing_class.eos_token_id
    assert pad != eos and eos == 2
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) > 1, "the batch should need padding"
    for i, length in enumerate(lengths):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        assert (ids[length:] == pad).all() and (labels[length:] == -100).all() and not mask[length:].any()
        source = next(r for r in train_rows if r.input_ids == rows[i]["input_ids"])
        learn = torch.tensor(source.assistant_masks, dtype=torch.bool)
        assert torch.equal(labels[:length][learn], ids[:length][learn])
        assert (labels[:length][~learn] == -100).all()
        assert (ids[:length][learn] == eos).sum() >= 1  # each reply ends with <|im_end|>, and learns it
    assert trainer.args.use_liger_kernel is False  # Liger only on a GPU
    assert trainer.args.gradient_checkpointing is False


def test_the_shared_persona_prefix_gives_the_full_sequence_loss(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    losses = []
    for share in (True, False):
        config = replace(FAST, share_prefix=share, bf16=False)  # float32, to compare exactly
        trainer = make_trainer(checkpoint, train_rows, eval_rows, config, tmp / f"share{share}", progress=False)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            losses.append(float(trainer.compute_loss(trainer.model, dict(batch))))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # ... and both equal the model's own loss over the whole vocabulary at every position (the LM head
    # run only where the labels are is the same loss, not an approximation).
    with torch.no_grad():
        own = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"]).loss
    assert losses[1] == pytest.approx(float(own), rel=1e-5)


def test_lora_lowers_the_loss_and_keeps_the_best_epoch(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    out = tmp / "adapter"
    info = {"base_fingerprint": "fp", "persona_sha256": "p"}
    result = train(checkpoint, train_rows, eval_rows, FAST, out, info, progress=False)
    losses = [e.eval_loss for e in result.epochs]
    assert len(losses) == 4 and losses[0] > losses[1] > losses[2] > losses[3]
    assert losses[3] < losses[0] - 0.3
    assert result.best_epoch == min(result.epochs[1:], key=lambda e: e.eval_loss).epoch
    assert all(e.train_loss is not None for e in result.epochs[1:])
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "lmpc_adapter.json"]
    assert json.loads((out / "lmpc_adapter.json").read_text())["base_fingerprint"] == "fp"
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {torch.float16}
    assert not (tmp / ".adapter.work").exists()


def test_micro_batches_are_the_largest_that_fit():
    assert micro_batch_size(8, 400, 2.4e6, 8 * 400 * 2.4e6) == 8
    assert micro_batch_size(8, 400, 2.4e6, 8 * 400 * 2.4e6 - 1) == 4
    assert micro_batch_size(6, 400, 2.4e6, 4 * 400 * 2.4e6) == 3  # a divisor of the batch, not 4
    assert micro_batch_size(8, 400, 2.4e6, -1.0) == 1  # nothing fits: one sample at a time


def test_micro_batches_take_the_same_steps_as_whole_batches(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    info = {"base_fingerprint": "fp", "persona_sha256": "p"}
    config = replace(FAST, epochs=2, bf16=False)
    whole = train(checkpoint, train_rows, eval_rows, config, tmp / "whole", info, progress=False)
    # A limit below what the test process already holds leaves room for one sample a micro-batch.
    tight = replace(config, max_memory_gb=0.01)
    assert make_trainer(checkpoint, train_rows, eval_rows, tight, tmp / "m", progress=False).args \
        .gradient_accumulation_steps == 4
    with pytest.raises(ExportError, match="memory limit"):
        make_trainer(checkpoint, train_rows, eval_rows, replace(config, max_memory_gb=0), tmp / "z", progress=False)
    micro = train(checkpoint, train_rows, eval_rows, tight, tmp / "micro", info, progress=False)
    assert micro.steps == whole.steps
    for a, b in zip(whole.epochs, micro.epochs):
        assert b.eval_loss == pytest.approx(a.eval_loss, rel=1e-4)


def test_the_training_memory_benchmark_runs_each_limit_in_its_own_process(tiny, tmp_path):
    from benchmarks import train_memory

    _, checkpoint, _, _ = tiny
    job = {"checkpoint": str(checkpoint), "batch": 4, "tokens": 100, "steps": 1, "threads": 1}
    rows = [train_memory.run_row({**job, "limit_gb": limit}) for limit in (0, 0.01)]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert [r["micro_batch"] for r in rows] == [4, 1]  # no limit: whole batches; a tiny one: one sample
    assert all(r["peak_rss_mb"] >= r["after_load_mb"] > 0 and r["step_s"] > 0 for r in rows)
    assert rows[1]["step_gb"] == pytest.approx(rows[0]["step_gb"] / 4)
    report = train_memory.markdown({"cpu": "test", "threads": 1, "steps": 1, "rows": rows})
    assert "| 4 × 100 | none | 4 |" in report and "| 4 × 100 | 0.01 GB | 1 |" in report


def test_training_goes_on_from_an_earlier_adapter(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    info = {"base_fingerprint": "fp", "persona_sha256": "p", "prompt_style": "identity"}
    one = replace(FAST, epochs=1)
    first = train(checkpoint, train_rows, eval_rows, one, tmp / "first", info, progress=False)
    again = train(checkpoint, train_rows, eval_rows, one, tmp / "again", info, progress=False, start=tmp / "first")
    # The second run begins where the first ended (its adapter stored in float16), not from zero.
    assert again.epochs[0].eval_loss == pytest.approx(first.epochs[1].eval_loss, rel=2e-2)
    assert again.epochs[0].eval_loss < first.epochs[0].eval_loss - 0.1
    assert again.started_from == str(tmp / "first") and first.started_from is None
    with pytest.raises(ExportError, match="LoRA rank 8 on all layers, this run asks rank 4 on all"):
        train(checkpoint, train_rows, eval_rows, replace(one, lora_rank=4), tmp / "x", info, start=tmp / "first")
    with pytest.raises(ExportError, match="trained with prompt_style 'identity', this run uses 'sheet'"):
        train(checkpoint, train_rows, eval_rows, one, tmp / "x", {**info, "prompt_style": "sheet"},
              start=tmp / "first")
    with pytest.raises(ExportError, match="not an adapter made by lmpc train"):
        train(checkpoint, train_rows, eval_rows, one, tmp / "x", info, start=tmp)


def test_lora_on_the_last_layers_only(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    trainer = make_trainer(checkpoint, train_rows, eval_rows, replace(FAST, lora_layers=1), tmp / "top",
                           progress=False)
    layers = trainer.model.config.num_hidden_layers
    adapted = {int(name.split(".layers.")[1].split(".")[0])
               for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert layers > 1 and adapted == {layers - 1}
    with pytest.raises(ExportError, match="lora_layers must be between 1 and"):
        make_trainer(checkpoint, train_rows, eval_rows, replace(FAST, lora_layers=layers + 1), tmp / "top",
                     progress=False)


def test_a_full_fine_tune_writes_a_plain_checkpoint(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp, checkpoint, train_rows, eval_rows = tiny
    out = tmp / "full"
    result = train(checkpoint, train_rows, eval_rows, replace(FAST, full=True, epochs=1, learning_rate=1e-2),
                   out, {}, progress=False)
    assert result.kind == "full" and result.epochs[1].eval_loss < result.epochs[0].eval_loss
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_a_merged_adapter_exports_with_the_merged_logits(tiny):
    """Base + adapter → merged checkpoint in the cache entry → ONNX: the checkpoint the export made gives the
    same logits as merging with peft directly, and differs from the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tmp, checkpoint, train_rows, eval_rows = tiny
    adapter = tmp / "merge-adapter"
    info = {"base_fingerprint": ckpt.source_fingerprint(checkpoint), "persona_sha256": "p"}
    train(checkpoint, train_rows, eval_rows, replace(FAST, epochs=1), adapter, info, progress=False)

    entry = prepare_model(checkpoint, tmp / "cache", lambda _: None, context_length=1024, adapter=adapter)
    assert ckpt.adapter_fingerprint(adapter) in entry.name
    ids = torch.tensor([train_rows[0].input_ids[:200]])
    base = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
        expected = merged(ids).logits
        exported = AutoModelForCausalLM.from_pretrained(entry / "checkpoint").eval()(ids).logits
    assert torch.equal(exported, expected)
    assert (exported - base_logits).abs().max() > 1e-2, "the adapter must change the model"
    report = json.loads((entry / "export.json").read_text())
    fp32 = next(p for p in report["parity"] if p["variant"] == "fp32")
    assert fp32["max_logit_diff"] < 1e-3 and fp32["top1_agreement"] == 1.0

    # The same adapter is cached; a sheet whose persona changed since training is built with a warning.
    log = []
    out = build(ORLANDO_SHEET, tmp / "merged.lmpc", source=checkpoint, cache_dir=tmp / "cache",
                context_length=1024, adapter=adapter, log=log.append)
    assert log[0].startswith("warning:") and "another persona" in log[0]
    assert log[1] == f"model: cached ({entry})"
    assert read_bundle(out).report["export"]["adapter"] == str(adapter)
    # An adapter trained on another base is refused.
    (adapter / "lmpc_adapter.json").write_text(json.dumps({"base_fingerprint": "someotherbase"}))
    with pytest.raises(ExportError, match="trained on base model someotherbase"):
        prepare_model(checkpoint, tmp / "cache", log.append, 1024, adapter=adapter)
    with pytest.raises(ExportError, match="not a LoRA adapter"):
        prepare_model(checkpoint, tmp / "cache", log.append, 1024, adapter=tmp)


def test_lmpc_train_end_to_end(tiny):
    """The CLI on a short sheet, with the tiny model as base and as local generator: data, hygiene, LoRA,
    merge, export, a bundle that talks, and the training report."""
    tmp, checkpoint, _, _ = tiny
    sheet = load_sheet(ORLANDO_SHEET).to_dict()
    sheet["examples"] = sheet["examples"][:10]
    sheet_path = tmp / "short.toml"
    sheet_path.write_text(dumps(drop_empty(sheet)))
    miller = [{"player": "Good flour this year?", "npc": "The best in the Vale, goodman."},
              {"player": "And the price?", "npc": "Fair, or I will hear of it."}]
    (tmp / "short.dialogues.toml").write_text(dumps({"format": 1, "character": "Orlando Marlo", "dialogues": [
        {"context": "a miller", "turns": miller},
        {"turns": [{"player": "Who are you?", "npc": "Orlando Marlo, of Brightwater Hall."}]}]}))
    (tmp / "short.knowledge.toml").write_text(dumps({"format": 1, "character": "Orlando Marlo", "topic": [
        {"covers": ["fact:50"], "questions": ["Your mare's name?", "What do you call the grey?"],
         "answers": ["Vesper, my grey mare.", "She is Vesper; my sister named her."]}]}))
    (tmp / "short.persona_test.toml").write_text(dumps({"format": 1, "character": "Orlando Marlo", "question": [
        {"category": "identity", "lines": ["Who are you?"], "must": ["orlando"]},
        {"category": "family", "lines": ["Any sisters?", "Her name?"], "must": ["isolde"]}]}))
    out = tmp / "short.lmpc"
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "train", str(sheet_path), "-o", str(out), "--base", str(checkpoint),
                          "--cache-dir", str(tmp / "cache"), "--generate", "2", "--epochs", "2",
                          "--lora-rank", "4", "--eval-fraction", "0.2", "--no-progress"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(out)
    adapter = tmp / "short.lora"
    report = json.loads((adapter / "training_report.json").read_text())
    assert report["data"]["dialogues"]["sheet"] == 10 and report["data"]["dialogues"]["writer"] == 2
    assert report["data"]["dialogues"]["generated"] >= 1
    assert report["data"]["kept_dialogues"]["sheet"] == 10 and report["training"]["kind"] == "lora"
    assert report["data"]["kept_dialogues"]["knowledge"] == 2 and report["coverage"]["fact:50"] == 2
    assert len(report["training"]["epochs"]) == 3 and "train" in report["seconds"]
    # The persona test picked the epoch: it was answered after each one.
    tested = report["training"]["persona_test"]
    assert [e["epoch"] for e in tested] == [1, 2] and report["training"]["best_epoch"] in (1, 2)
    assert set(tested[0]["by_category"]) == {"identity", "family"}
    assert report["prompt_style"] == "identity"
    assert json.loads((adapter / "lmpc_adapter.json").read_text())["prompt_style"] == "identity"
    markdown = (adapter / "training_report.md").read_text()
    assert "| epoch | training loss | held-out loss |" in markdown and "Orlando Marlo" in markdown
    kept = [json.loads(line) for line in (adapter / "training_data.jsonl").read_text().splitlines()]
    assert len(kept) == sum(report["data"]["kept_dialogues"].values())

    bundle = read_bundle(out)
    assert bundle.report["training"]["persona_sha256"] == report["persona_sha256"]
    # The bundle prompts the tuned model as it was trained: two sentences, no example shots.
    assert bundle.persona.shots == () and bundle.persona.system.startswith("You are Orlando Marlo")
    assert bundle.manifest["persona"]["style"] == "identity" and (out / "persona_test.toml").is_file()
    # A tuned bundle samples cooler, with the invented-name guard and the answer's follower on.
    assert bundle.sampling.temperature == 0.3 and bundle.sampling.name_penalty == 3.0
    assert bundle.sampling.follow_bonus == 3.0
    assert bundle.report["export"]["adapter"] == str(adapter)
    with Runtime() as rt:
        npc = rt.load_npc(out, seed=0)
        assert [e for e in npc.ask("Hello") if e.kind == DONE][0].text
