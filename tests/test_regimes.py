"""benchmarks.regimes: each system in a process of its own, started with only its regime's settings; the
game's frames attributed to the system that ran meanwhile; the report and the headline saying where we
lose. Nothing timed is asserted."""

from __future__ import annotations

from benchmarks import regimes, report


def test_each_regime_changes_one_setting():
    shipped = regimes.settings("a", llama_extra_buffers=True)
    assert shipped == {"lmpc": {"env": {}, "spinning": False},
                       "llama.cpp": {"env": {"LMPC_LLAMA_EXTRA_BUFFERS": "1"}, "spinning": False}}
    assert regimes.settings("b", True)["lmpc"]["spinning"] is True
    assert regimes.settings("b", True)["llama.cpp"] == shipped["llama.cpp"]
    assert regimes.settings("c", True)["llama.cpp"]["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert regimes.settings("c", True)["lmpc"] == shipped["lmpc"]
    assert regimes.settings("d", True) == shipped
    # Where the extra buffer types crash, they are off for llama.cpp in every regime.
    assert regimes.settings("a", False)["llama.cpp"]["env"]["LMPC_LLAMA_EXTRA_BUFFERS"] == "0"


def test_a_child_is_its_own_process_without_our_openmp_setting(monkeypatch, tiny_bundle):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    child = regimes.Child("lmpc", tiny_bundle, {}, {"threads": 1, "persona": [5, 6, 7], "line": [8, 9],
                                                     "new_tokens": 4, "spinning": False})
    try:
        assert child.omp_wait_policy is None and child.load_s > 0
        rep = child.rep()
        assert rep["tokens"] == 5 and rep["decode_tok_s"] > 0 and rep["ttft_cached_ms"] > 0
        assert rep["peak_rss_mb"] > 0
    finally:
        child.close()
    assert child.proc.returncode == 0


def test_game_frames_go_to_the_system_that_ran_meanwhile(tmp_path):
    log = tmp_path / "game.txt"
    log.write_text("10.0 10.006\n10.5 10.512\n11.0 11.006\n11.5 11.5")  # the last line cut short: skipped
    assert regimes.game_frames(log, [(10.4, 10.9)]) == [12.000000000000455]
    assert len(regimes.game_frames(log, [(9.0, 10.1), (10.9, 11.1)])) == 2


def _regime(ours: float, theirs: float) -> dict:
    spread = lambda v: {"median": v, "min": v, "max": v, "runs": [v]}  # noqa: E731
    return {"results": {"lmpc": {"decode_tok_s": spread(ours), "ttft_cached_ms": spread(40.0)},
                        "llama.cpp": {"decode_tok_s": spread(theirs), "ttft_cached_ms": spread(60.0)}},
            "ratios": {"decode_tok_s": spread(ours / theirs), "ttft_cached_ms": spread(1.5)},
            "peak_rss_mb": {"lmpc": 300.0, "llama.cpp": 250.0}}


def test_the_report_says_where_we_lose():
    made = {"date": "2026-12-03", "machine": {"cpu": "x", "cores_visible": 2, "threads": 2,
                                              "load_average_at_start": 0.1, "onnxruntime": "1",
                                              "llama_cpp_python": "0"},
            "setup": {"bundle": "b", "llama_gguf": "g", "new_tokens": 8, "reps": 1, "warmup": 0,
                      "persona_tokens": 3, "line_tokens": 2, "llama_extra_buffer_types": "on",
                      "game_ms": 6.0, "game_fps": 60.0},
            "regimes": {"a": _regime(77.0, 97.0), "c": _regime(66.0, 22.0)}}
    table = regimes.markdown(made)
    assert "| (a) as shipped (each system's defaults) | none |" in table
    assert "**0.79× [0.79–0.79]**" in table and "| 3.00× [3.00–3.00] |" in table  # bold where behind
    made["regimes"]["d"] = _regime(80.0, 81.0)
    lines = report.regimes_headline(made)
    assert "slower than llama.cpp" in lines[0] and "**0.79×" in lines[0]
    assert "faster than llama.cpp" in lines[1] and "level with llama.cpp" in lines[2]


def test_a_llama_child_that_dies_turns_the_extra_buffers_off(tmp_path):
    """The probe runs in a child, so a crash (here: a GGUF that is not there) costs the harness nothing."""
    works, why = regimes.extra_buffers_work(tmp_path / "missing.gguf", {"threads": 1, "persona": [5], "line": [6],
                                                                       "spinning": False})
    assert works is False and why.startswith("off on this machine: with them on, llama.cpp exited with 1")
