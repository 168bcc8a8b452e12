"""The benchmark harness end to end on the tiny bundle (one rep, a few frames, no peers): it must produce the
raw JSON and the report with every workload, record the machine, and report the GPU profile's fallback.
Nothing timed is asserted; timings only have to be there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "benchmarks", "--bundle", str(REPO / "tests" / "assets" / "tiny.lmpc"),
               "--profiles", "low-end,gtx1060", "--peers", "none", "--reps", "1", "--warmup", "0",
               "--new-tokens", "4", "--batch-sizes", "1,3", "--batch-steps", "2", "--frames", "12",
               "--memories", "300", "--no-torch-embedder", "--model-cache", str(out / "cache"),
               "--out", str(out / "results"), "--report", str(out / "RESULTS.md")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_results_cover_every_workload(harness_run):
    out, _ = harness_run
    results = json.loads((out / "results" / "results.json").read_text())
    assert results["machine"]["cpu"] and results["machine"]["cores_visible"] >= 1
    assert results["machine"]["ram_gb"] > 0
    low_end, gpu = results["profiles"]
    assert low_end["profile"]["status"] == "run"
    run = low_end["runs"][0]
    assert run["threads"] == 1
    assert set(run["systems"]) == {"lmpc"} and run["systems"]["lmpc"]["status"] == "ok"
    assert 0 < run["systems"]["lmpc"]["load_s"] < 300
    ours = run["results"]["lmpc"]
    assert set(ours) == {"decode_npc_tok_s", "decode_short_tok_s", "ttft_cold_ms", "ttft_cached_ms"}
    assert all(v["median"] > 0 and len(v["runs"]) == 1 for v in ours.values())
    assert set(run["batched_aggregate_tok_s"]) == {"1", "3"}
    assert len(run["frames"]["series"]["tick_ms"]) == 12 and len(run["frames"]["series"]["frame_ms_off"]) == 12
    assert run["rss"]["lmpc"]["status"] == "ok" and run["rss"]["lmpc"]["peak_rss_mb"] > 0
    assert run["rss_ceiling"]["limit_mb"] == 2048 and run["rss_ceiling"]["within"] is True
    # No GPU build of the engine exists: the profile says so instead of pretending.
    assert gpu["profile"]["status"] == "fallback" and "CPU" in gpu["profile"]["reason"]
    assert results["memory"]["retrieval"]["memories"] == 300
    assert "torch_fp32_line_ms" not in results["memory"]["embedding"]


def test_report_shows_each_profile_and_no_made_up_ratios(harness_run):
    out, _ = harness_run
    text = (out / "RESULTS.md").read_text()
    assert "## Profile `low-end`" in text and "## Profile `gtx1060`" in text
    assert "No peer ran, so there are no ratios." in text
    assert "measured on the CPU instead" in text
    assert "## Memory: embedder, retrieval, save games" in text


def test_plots_are_drawn_when_matplotlib_is_there(harness_run):
    pytest.importorskip("matplotlib")
    out, _ = harness_run
    pngs = sorted(p.name for p in (out / "results").glob("*.png"))
    assert pngs == ["decode_tok_s.png", "frame_ms_over_time.png", "peak_rss.png", "tick_ms_histogram.png"]
    assert all((out / "results" / name).read_bytes()[:4] == b"\x89PNG" for name in pngs)


def test_a_missing_peer_is_skipped_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is not installed: it runs from the checkout
    from benchmarks.harness import open_systems
    from benchmarks.peers import Sources

    src = Sources(bundle=REPO / "tests" / "assets" / "tiny.lmpc", checkpoint=tmp_path / "none",
                  shipped_gguf=None, work=tmp_path)
    systems, status = open_systems(["llama.cpp Q8_0"], src, threads=1)
    assert [s.name for s in systems] == ["lmpc"]
    assert status["llama.cpp Q8_0"]["status"] == "skipped" and status["llama.cpp Q8_0"]["reason"]


def test_the_report_is_redrawn_from_the_raw_json_alone(harness_run, tmp_path):
    out, _ = harness_run
    command = [sys.executable, "-m", "benchmarks", "--from-json", str(out / "results" / "results.json"),
               "--out", str(tmp_path), "--report", str(tmp_path / "RESULTS.md")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    redrawn = (tmp_path / "RESULTS.md").read_text()
    assert redrawn.replace("results/", "") == (out / "RESULTS.md").read_text().replace("results/", "")
