import json
import subprocess
import sys

from lmpc_runtime.nullhost import HostConfig, run


def test_null_host_runs_a_game_loop_with_chatter_and_a_player(tiny_bundle):
    # Ticks bounded by tokens, not by the clock: on a loaded machine a 4 ms budget buys a segment a frame,
    # and whether the ambient NPCs got a turn within 150 frames would depend on the load.
    config = HostConfig(str(tiny_bundle), npcs=3, frames=150, budget_ms=4, game_ms=2, player_every=50,
                        max_tokens=12, tick_tokens=4)
    result = run(config)
    summary = result.summary(config.budget_ms)
    assert summary["frames"] == 150 and len(result.tick_ms) == 150
    assert len(result.focus_first_token_ms) >= 2, "the player's lines were answered"
    assert set(result.tokens_by_npc) == {"npc0", "npc1", "npc2"}, "the ambient NPCs chatted too"
    assert summary["focus_tok_s"] > 0
    assert min(result.frame_ms) >= 2.0


def test_runtime_off_measures_only_the_game(tiny_bundle):
    result = run(HostConfig(str(tiny_bundle), npcs=0, frames=30, game_ms=3))
    assert result.tick_ms == [] and len(result.frame_ms) == 30 and result.replies == 0


def test_command_line(tiny_bundle, tmp_path):
    out = tmp_path / "host.json"
    proc = subprocess.run([sys.executable, "-m", "lmpc_runtime.nullhost", str(tiny_bundle), "--npcs", "2",
                           "--frames", "40", "--player-every", "20", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["frames"] == 40
