"""The pygame example game with the real SmolLM2 bundles (Orlando and both regulars), in tick mode: a full
reply of Orlando's streams into the dialogue panel while the regulars chatter into speech bubbles; merged
bundles (three models), and the village (three adapters applied at run time on one engine).
Frame times are recorded against a baseline of the same game with nobody talking, in the same run, and
written to build/test-artefacts/pygame_frames_real.json; nothing here asserts a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pygame
import pytest
from pygame_harness import ARTEFACTS, play

pytestmark = pytest.mark.real_model

SCRIPT = """\
walk_to Orlando 900
press e
type Who are you, sir knight?
press enter
wait_reply 6000
screenshot build/pygame/dialogue.png
wait_chatter 1 6000
quit
"""


@pytest.fixture(scope="module")
def regular_bundles(real_bundle) -> list[Path]:
    """Marta's and Jory's bundles, built by `make regulars` next to the demo bundle."""
    paths = [real_bundle.parent / "marta_greyhand.lmpc", real_bundle.parent / "jory_tallow.lmpc"]
    if not all((p / "manifest.msgpack").is_file() for p in paths):
        if os.environ.get("LMPC_REAL_BUNDLE"):
            pytest.fail("make test builds the regulars' bundles first (make regulars); they are missing")
        pytest.skip("the regulars' bundles are not built (run `make regulars`)")
    return paths


def test_a_full_reply_streams_into_the_panel_while_the_regulars_chatter(real_bundle, regular_bundles,
                                                                         tmp_path):
    baseline = play(real_bundle, [], None, 240, tmp_path / "baseline")
    game = play(real_bundle, regular_bundles, SCRIPT, 20000, tmp_path / "save", screenshots=tmp_path)
    assert game.record.problems == []
    assert game.script.done

    [exchange] = game.record.exchanges
    assert exchange.finish in ("end_of_turn", "length", "repetition")
    assert len(exchange.reply.split()) >= 5
    assert exchange.text_events >= 5  # it came in pieces, shown word by word
    assert exchange.first_words_ms < exchange.done_ms
    assert game.dialogue.reply == exchange.reply  # the whole reply ended up in the panel
    assert game.orlando.history == [("Who are you, sir knight?", exchange.reply)]

    names = {npc.name for npc in game.npcs}
    assert names == {"Orlando Marlo", "Marta Greyhand", "Jory Tallow"}
    who, line, finish = game.chatter.lines[0]
    assert who in ("Marta Greyhand", "Jory Tallow") and line.strip()
    # The script quit the frame after that line ended: it is whole in its speaker's bubble, streamed there.
    bubble = next(s.bubble for s in game.chatter.speakers if s.npc.name == who)
    assert bubble.finished and bubble.text == line
    assert bubble.pieces >= 3

    # The memory of the letter, given at load time, stays hidden until the game says it was delivered.
    question = "What was in the letter I brought you?"
    assert not any("sealed letter" in m.text for m, _ in game.orlando.recall(question))
    game.orlando.facts.set("yard.letter_delivered", True)
    assert any("sealed letter" in m.text for m, _ in game.orlando.recall(question))

    shot = pygame.image.load(str(tmp_path / "dialogue.png"))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    pygame.image.save(shot, str(ARTEFACTS / "pygame_dialogue_real.png"))
    panel = pygame.surfarray.array3d(shot)[120:900, 380:520]
    assert (panel.max(axis=2) > 200).sum() > 500  # the reply's text is drawn in the panel

    def stats(frames: list[float]) -> dict:
        ms = np.asarray(frames[30:])
        p50, p99 = np.percentile(ms, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(ms.max())}

    quiet, busy = stats(baseline.record.frame_ms), stats(game.record.frame_ms)
    (ARTEFACTS / "pygame_frames_real.json").write_text(json.dumps({
        "baseline": quiet, "talking": busy, "ratio_p50": busy["p50"] / quiet["p50"],
        "ratio_p99": busy["p99"] / quiet["p99"], "first_words_ms": exchange.first_words_ms,
        "reply_ms": exchange.done_ms, "reply_tokens": exchange.tokens, "chatter": game.chatter.lines,
        "reply": exchange.reply}, indent=1))


@pytest.fixture(scope="module")
def village_bundles(real_bundle) -> list[Path]:
    """Orlando, Marta and Jory with run-time adapters on one shared base, built by `make village`."""
    paths = [real_bundle.parent / "village" / f"{name}.lmpc" for name in ("orlando_marlo", "marta_greyhand",
                                                                          "jory_tallow")]
    if not all((p / "manifest.msgpack").is_file() for p in paths):
        if os.environ.get("LMPC_REAL_BUNDLE"):
            pytest.fail("make test builds the village first (make village); it is missing")
        pytest.skip("the village is not built (run `make village`)")
    return paths


def test_the_village_plays_three_adapters_on_one_engine(village_bundles, tmp_path):
    game = play(village_bundles[0], village_bundles[1:], SCRIPT, 20000, tmp_path / "save", screenshots=tmp_path)
    assert game.record.problems == [] and game.script.done
    [exchange] = game.record.exchanges
    assert len(exchange.reply.split()) >= 5 and game.dialogue.reply == exchange.reply
    assert game.chatter.lines and game.chatter.lines[0][1].strip()
    assert {npc.name for npc in game.npcs} == {"Orlando Marlo", "Marta Greyhand", "Jory Tallow"}
    assert len({id(npc._engine) for npc in game.npcs}) == 1  # one model, one copy of the weights
    assert len({npc.adapter.fingerprint for npc in game.npcs}) == 3  # each speaks with its own adapter


# Two lines of the writer's own dialogues (examples/characters/orlando_marlo.dialogues.toml): the bundle's
# cues decide on them for sure, so this tests the way from his decision to the game's state with the real
# model, not how well he decides (the action test measures that, on scenes never trained on).
ACTING_SCRIPT = """\
walk_to Orlando 900
press e
type My lord, I dug half the wells on your father's land. In the autumn of 479 he paid me double to sink a dry shaft behind the old dovecote, and told me to forget I'd done it. I never forgot. If his last words speak of the dark, I think I know which dark he meant.
press enter
wait_reply 6000
wait 30
type One of these nights, councillor, you'll wake up with my steel under your chin. Sleep well.
press enter
wait_reply 6000
wait 30
quit
"""


def test_orlando_acts_in_the_village_and_the_game_follows(village_bundles, tmp_path):
    """Orlando hands over the letter, then ends the talk when threatened, and the game follows: the letter
    in the pack, the talk closed; an emotion of his sheet on every reply, and no tag in what he says."""
    game = play(village_bundles[0], [], ACTING_SCRIPT, 20000, tmp_path / "save")
    assert game.record.problems == [] and game.script.done
    emotions = set(game.orlando.bundle.character.emotions)
    assert emotions and len(game.record.exchanges) == 2
    for exchange in game.record.exchanges:
        assert exchange.emotion in emotions and "[" not in exchange.reply
    assert [e.actions for e in game.record.exchanges] == [["give_item item=father_letter"], ["end_conversation"]]
    assert game.orlando.facts.get("letter.given") is True and game.cold_until > 0
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "pygame_actions_real.json").write_text(json.dumps(
        [{"player": e.player, "reply": e.reply, "actions": e.actions, "emotion": e.emotion}
         for e in game.record.exchanges], indent=1))
