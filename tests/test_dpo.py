"""A round of APC-based DPO on the tiny model, end to end through `lmpc train --dpo`: an SFT adapter,
sampled replies ranked by APC, preference pairs, TRL's DPO, the new adapter's bundle, and the report of
APC before and after."""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lmpc_runtime import read_bundle
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, TINY_BUNDLE

pytest.importorskip("torch")
pytest.importorskip("trl")
safetensors = pytest.importorskip("safetensors.numpy")

from lmpc_export import checkpoint as ckpt  # noqa: E402
from lmpc_export.dataset import persona_digest  # noqa: E402
from lmpc_export.dpo import dpo_prompts  # noqa: E402
from lmpc_export.dialogues import writer_dialogues  # noqa: E402
from lmpc_export.toml_writer import drop_empty, dumps  # noqa: E402
from lmpc_export.train import train  # noqa: E402

from test_train import FAST, tiny  # noqa: E402,F401  (the tiny checkpoint and its rendered samples)


def _first_entries(path: Path, table: str, count: int) -> str:
    text = path.read_text()
    starts = [m.start() for m in re.finditer(rf"^\[\[{table}\]\]", text, re.MULTILINE)]
    return text[: starts[count]] if count < len(starts) else text


def test_dpo_prompts_are_the_first_lines_of_the_writers_dialogues():
    sheet = load_sheet(ORLANDO_SHEET)
    lines = [ex.player for ex in sheet.examples]
    assert dpo_prompts(writer_dialogues(sheet, None)) == lines
    some = dpo_prompts(writer_dialogues(sheet, None), limit=5, seed=3)
    assert len(some) == 5 and set(some) <= set(lines) and some == [x for x in lines if x in some]
    assert some == dpo_prompts(writer_dialogues(sheet, None), limit=5, seed=3)


def test_lmpc_train_dpo_on_the_tiny_model_changes_it_and_reports_apc_before_and_after(tiny):
    tmp, checkpoint, train_rows, eval_rows = tiny
    sheet = load_sheet(ORLANDO_SHEET)
    short = sheet.to_dict()
    short["examples"] = short["examples"][:10]
    sheet_path = tmp / "dpo" / "short.toml"
    sheet_path.parent.mkdir()
    sheet_path.write_text(dumps(drop_empty(short)))
    examples = ORLANDO_SHEET.parent
    (sheet_path.with_name("short.eval.toml")).write_text(
        '[[conversation]]\nlines = ["Who are you?"]\n[[probe]]\ntopic = "drink"\nline = "Ale or cider?"\n')
    (sheet_path.with_name("short.apc_calibration.toml")).write_text(
        _first_entries(examples / "orlando_marlo.apc_calibration.toml", "pair", 40))
    sft = tmp / "dpo" / "short.lora"
    info = {"base_fingerprint": ckpt.source_fingerprint(checkpoint), "persona_sha256": persona_digest(sheet)}
    train(checkpoint, train_rows, eval_rows, replace(FAST, epochs=1), sft, info, progress=False)

    out = tmp / "dpo" / "short.lmpc"
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "train", str(sheet_path), "-o", str(out), "--dpo", "--from-adapter", str(sft),
                          "--base", str(checkpoint), "--cache-dir", str(tmp / "cache"),
                          "--judge", f"local:{TINY_BUNDLE}", "--samples", "3", "--margin", "0",
                          "--dpo-prompts", "6", "--epochs", "1", "--batch-size", "2", "--lr", "5e-3", "--threads", "2"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(out)
    adapter = tmp / "dpo" / "short.dpo.lora"
    report = json.loads((adapter / "dpo_report.json").read_text())
    assert report["sampling"]["prompts"] == 6 and report["sampling"]["replies"] == 18
    assert report["sampling"]["pairs"] >= 1 and report["training"]["steps"] >= 1
    for side in ("apc_before", "apc_after"):
        assert 0 <= report[side]["apc"] <= report[side]["statements"]
    pairs = [json.loads(line) for line in (adapter / "dpo_pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == report["sampling"]["pairs"]
    assert all(p["chosen"] != p["rejected"] for p in pairs)

    # The adapter changed, and only its weights: same tensors, same shapes, other values.
    before = safetensors.load_file(str(sft / "adapter_model.safetensors"))
    after = safetensors.load_file(str(adapter / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert json.loads((adapter / ckpt.ADAPTER_INFO).read_text())["persona_sha256"] == info["persona_sha256"]

    # Both bundles carry their evaluation; the DPO bundle runs another model than the SFT one.
    sft_bundle = out.with_name("short.sft.lmpc")
    assert json.loads((out / "eval_report.json").read_text())["summary"] == report["apc_after"]
    assert json.loads((sft_bundle / "eval_report.json").read_text())["summary"] == report["apc_before"]
    weights = lambda b: (b.model.sha256, b.model.data_sha256)  # noqa: E731
    assert weights(read_bundle(out)) != weights(read_bundle(sft_bundle))
    assert read_bundle(out).report["export"]["fingerprint"] != read_bundle(sft_bundle).report["export"]["fingerprint"]
    shutil.rmtree(tmp / "dpo")
