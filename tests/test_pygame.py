"""The pygame example game on the tiny bundle: a real window on SDL's dummy driver, scripted keys posted
into pygame's event queue, the runtime ticked every frame. The tiny model talks nonsense, so these tests
check the game's plumbing (streaming, chatter, facts, save and load); test_pygame_real.py checks words."""

from __future__ import annotations

import json

import pygame
import pytest
from pygame_harness import ARTEFACTS, VISIT, play

from examples.pygame import savegame
from examples.pygame import world
from examples.pygame.game import GIVEN_FACT, LETTER_FACT, Game, Options
from examples.pygame.script import ScriptError, parse
from lmpc_runtime import ACTION, DONE, EMOTION, Event, Runtime, SaveCorruptError

ACCOUNTS_QUESTION = "Did they find your father's accounts?"
ACCOUNTS_LORE = "crypt beneath the chapel of Brightwater Hall"


@pytest.fixture(scope="module")
def visit(tiny_bundle, tmp_path_factory):
    """The shipped visit script, played once with Orlando and both regulars on the tiny bundle."""
    tmp = tmp_path_factory.mktemp("visit")
    game = play(tiny_bundle, [tiny_bundle, tiny_bundle], VISIT.read_text(), 3000, tmp / "save",
                screenshots=tmp)
    return game, tmp


def test_the_visit_script_plays_to_its_end(visit):
    game, _ = visit
    assert game.record.problems == []
    assert game.script.done
    assert len(game.record.frame_ms) == game.frame == len(game.record.tick_ms)
    assert game.frame < 3000  # it quit, it did not run out of frames


def test_replies_stream_into_the_dialogue_panel(visit):
    game, _ = visit
    asked = [e.player for e in game.record.exchanges]
    assert asked == ["Good evening, sir knight. Who are you?", ACCOUNTS_QUESTION]
    for exchange in game.record.exchanges:
        assert exchange.finish in ("end_of_turn", "length", "repetition", "stop")
        assert exchange.tokens > 0
        assert exchange.text_events > 1  # streamed piece by piece, not dropped in at the end
        assert exchange.first_words_ms is not None and exchange.first_words_ms <= exchange.done_ms
    # The load put back the last exchange of the save: the second question and its reply.
    last = game.record.exchanges[-1]
    assert (game.dialogue.player_line, game.dialogue.reply) == (last.player, last.reply)
    assert game.orlando.history[-1] == (last.player, last.reply)


def test_the_regulars_chatter_into_speech_bubbles(visit):
    game, _ = visit
    assert len(game.chatter.lines) >= 2
    speakers = {who for who, _, _ in game.chatter.lines}
    assert speakers <= {npc.name for npc in game.npcs}
    # Each regular answered what the other said: their histories hold the other's lines as "heard".
    heard = [said for speaker in game.chatter.speakers for said, _ in speaker.npc.history]
    assert heard, "no regular ever answered"


def test_the_letter_tells_orlando_a_fact_and_a_memory(visit, tiny_bundle):
    game, _ = visit
    assert game.letter == "delivered"
    assert game.orlando.facts[LETTER_FACT] is True
    assert all(npc.facts["player.name"] == "Mira" for npc in game.npcs)
    assert all(npc.facts["yard.letter_delivered"] is True for npc in game.npcs)
    # Memories given at load time, hidden until the letter was delivered, are now recalled.
    letter = [m for m in game.orlando.memories if "sealed letter from Brightwater Hall" in m.text]
    assert [m.requires for m in letter] == ["yard.letter_delivered"]
    for speaker in game.chatter.speakers:
        assert any("handed Ser Orlando a sealed letter" in m.text for m in speaker.npc.memories)
    # The fact opens his lorebook entry: asked about the accounts, his prompt now carries it...
    assert ACCOUNTS_LORE in _prompt_text(game.orlando, ACCOUNTS_QUESTION)
    # ...and an Orlando who was never handed the letter is not told.
    with Runtime(threads=1, seed=1) as rt:
        assert ACCOUNTS_LORE not in _prompt_text(rt.load_npc(tiny_bundle), ACCOUNTS_QUESTION)


def _prompt_text(npc, line: str) -> str:
    reply = npc.start_reply(line)
    try:
        return npc.chat.decode(reply.seq.tokens + reply.todo)
    finally:
        reply.cancel()
        npc.end_reply(reply)


def test_save_and_load_restore_the_yard_and_every_npc(visit):
    game, tmp = visit
    assert (game.saves, game.loads) == (1, 1)
    saved = json.loads((tmp / "save" / savegame.GAME_FILE).read_text())
    assert saved["npcs"] == sorted(npc.id for npc in game.npcs)
    assert saved["letter"] == "delivered"
    # The script walked left after saving; the load put the player back where the save was made.
    assert game.player.pos == pygame.Vector2(saved["player"])
    for npc in game.npcs:
        assert (tmp / "save" / f"{npc.id}.sav").is_file()
    assert not (tmp / "save.new").exists() and not (tmp / "save.old").exists()


def test_the_visit_plays_the_same_with_the_model_on_the_worker_thread(tiny_bundle, tmp_path):
    game = play(tiny_bundle, [tiny_bundle, tiny_bundle], VISIT.read_text(), 3000, tmp_path / "save",
                screenshots=tmp_path, worker=True)
    assert game.record.problems == [] and game.script.done
    assert (game.saves, game.loads) == (1, 1)
    assert [e.finish != "" for e in game.record.exchanges] == [True, True]
    assert game.orlando.facts[LETTER_FACT] is True


def test_screenshot_of_the_dialogue_panel_is_not_blank(visit):
    game, tmp = visit
    shot = pygame.image.load(str(tmp / "dialogue.png"))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    pygame.image.save(shot, str(ARTEFACTS / "pygame_dialogue_tiny.png"))
    assert shot.get_size() == (960, 540)
    pixels = pygame.surfarray.array3d(shot).reshape(-1, 3)
    assert len({tuple(p) for p in pixels[::97]}) > 200  # a painted scene, not a cleared screen
    panel = pygame.surfarray.array3d(shot)[120:900, 380:520]  # the dialogue panel's text area
    assert (panel.max(axis=2) > 200).sum() > 500  # light text drawn on the dark panel


def test_a_failed_load_leaves_the_game_as_it_was(tiny_bundle, tmp_path):
    save = tmp_path / "save"
    first = "press f5\nwait_saved 600\nquit\n"
    play(tiny_bundle, [], first, 900, save)
    damaged = save / "orlando.sav"
    damaged.write_bytes(damaged.read_bytes()[:-5] + b"xxxxx")
    second = ("walk_to Orlando 900\npress e\ntype Hello there.\npress enter\nwait_reply 3000\n"
              "press escape\npress f9\nwait 5\nquit\n")
    game = play(tiny_bundle, [], second, 4000, save)
    assert game.loads == 0
    assert len(game.record.problems) == 1 and game.record.problems[0].startswith("Could not load")
    assert "checksum" in game.record.problems[0] or "damaged" in game.record.problems[0]
    assert [said for said, _ in game.orlando.history] == ["Hello there."]  # not the empty history saved


def test_load_game_puts_back_every_npc_when_one_save_is_bad(tiny_bundle, tmp_path):
    with Runtime(threads=1, seed=3) as rt:
        npcs = [rt.load_npc(tiny_bundle, npc_id="a"), rt.load_npc(tiny_bundle, npc_id="b")]
        savegame.save_game(rt, tmp_path / "save", savegame.YardState((1.0, 2.0), "lying"), npcs)
        for npc in npcs:
            list(npc.ask("Something new."))
            npc.facts.set("after_save", 1)
        (tmp_path / "save" / "b.sav").write_bytes(b"LMPCSAVE" + b"\0" * 4)
        with pytest.raises(SaveCorruptError):
            savegame.load_game(rt, tmp_path / "save", npcs)
        for npc in npcs:  # "a" loaded fine, then was put back when "b" failed
            assert [said for said, _ in npc.history] == ["Something new."]
            assert npc.facts["after_save"] == 1


def test_load_game_refuses_a_folder_that_is_not_a_save(tiny_bundle, tmp_path):
    with Runtime(threads=1) as rt:
        npcs = [rt.load_npc(tiny_bundle, npc_id="a")]
        with pytest.raises(savegame.GameSaveError, match="no saved game"):
            savegame.load_game(rt, tmp_path / "nothing", npcs)
        (tmp_path / "bad").mkdir()
        for text, message in [("{", "cannot read"), ('{"format": "other"}', "not a save"),
                              ('{"format": "lmpc-pygame-save", "version": 1, "player": [1]}', "malformed")]:
            (tmp_path / "bad" / savegame.GAME_FILE).write_text(text)
            with pytest.raises(savegame.GameSaveError, match=message):
                savegame.load_game(rt, tmp_path / "bad", npcs)
        savegame.save_game(rt, tmp_path / "other", savegame.YardState((0.0, 0.0), "carried"),
                           [rt.load_npc(tiny_bundle, npc_id="z")])
        with pytest.raises(savegame.GameSaveError, match="no state for a"):
            savegame.load_game(rt, tmp_path / "other", npcs)


def test_script_errors_are_reported_with_their_line():
    pygame.display.init()
    try:
        with pytest.raises(ScriptError, match="<script>:2: .*unknown key"):
            parse("wait 3\npress nokey\n")
        with pytest.raises(ScriptError, match="<script>:1: .*negative"):
            parse("wait -1\n")
        assert [c.verb for c in parse("# only a comment\ntype # typed as is\nquit")] == ["type", "quit"]
    finally:
        pygame.quit()


def test_a_wait_that_runs_out_is_a_problem_not_a_hang(tiny_bundle, tmp_path):
    game = play(tiny_bundle, [], "walk_to Orlando 3\nquit\n", 100, tmp_path / "save")
    assert game.record.problems == ["script: line 1: did not reach Orlando within 3 frames"]
    assert game.frame == 3


def test_loading_while_orlando_answers_cuts_him_short_and_restores_the_save(tiny_bundle, tmp_path):
    save = tmp_path / "save"
    play(tiny_bundle, [], "press f5\nwait_saved 600\nquit\n", 900, save)
    script = ("walk_to Orlando 900\npress e\ntype Tell me a long story.\npress enter\nwait_words 600\n"
              "press f9\nwait_reply 600\nwait 5\nquit\n")
    game = play(tiny_bundle, [], script, 3000, save)
    assert game.record.problems == [] and game.loads == 1
    [exchange] = game.record.exchanges
    # He had begun to speak when the load came, and was cut off there.
    assert exchange.finish == "cancelled" and exchange.tokens > 0 and exchange.reply.strip()
    assert game.orlando.history == []  # the save was made before anything was said
    assert game.player.pos == pygame.Vector2(json.loads((save / savegame.GAME_FILE).read_text())["player"])


def test_orlando_hands_over_his_letter_and_ends_a_talk_by_his_actions(acting_bundle, tmp_path):
    """The game's side of a reply's actions: the events a model would send, into a real game and runtime."""
    pygame.display.init()
    pygame.font.init()
    try:
        game = Game(Options(acting_bundle, [], save_dir=tmp_path), pygame.display.set_mode(world.SIZE))
        try:
            game.dialogue.open = True
            game._say("Will you trust me with your father's letter?")
            reply = game.current.reply_id
            for event in (Event(ACTION, "orlando", reply, "give_item", args={"item": "father_letter"}),
                          Event(EMOTION, "orlando", reply, "sad"), Event(DONE, "orlando", reply, "Take it.")):
                game._on_runtime_event(event, game.now)
            assert game.orlando.facts[GIVEN_FACT] is True  # his sheet's gate: he cannot give it again
            assert game.orlando._tail().grammar.actions == ("act:end_conversation",)
            assert game.dialogue.speaker.endswith("(sad)") and game.dialogue.open
            assert game.record.exchanges[-1].actions == ["give_item item=father_letter"]
            game.draw()  # the pack shows the letter

            game._say("Your sister is a fool and your father a thief.")
            reply = game.current.reply_id
            for event in (Event(ACTION, "orlando", reply, "end_conversation"), Event(EMOTION, "orlando", reply, "angry"),
                          Event(DONE, "orlando", reply, "We are done here.")):
                game._on_runtime_event(event, game.now)
            assert not game.dialogue.open and game.cold_until > game.now
            game.player.pos.update(game.orlando_actor.pos.x - 40, game.orlando_actor.pos.y)
            game._key(pygame.K_e)
            assert not game.dialogue.open  # he keeps his back turned
        finally:
            game.rt.close()
    finally:
        pygame.quit()


def test_every_orlando_reply_in_the_game_carries_his_emotion(acting_bundle, tmp_path):
    script = "walk_to Orlando 900\npress e\ntype Good evening.\npress enter\nwait_reply 900\nquit\n"
    game = play(acting_bundle, [], script, 2000, tmp_path / "save")
    assert game.record.problems == []
    [exchange] = game.record.exchanges
    assert exchange.emotion in ("calm", "sad", "angry")
    assert game.dialogue.speaker.endswith(f"({exchange.emotion})")
