import dataclasses

import pytest

from lmpc_runtime import ContextOverflowError, InvalidArgumentError, Runtime, SamplingConfig
from lmpc_runtime.npc import MAX_PLAYER_CHARS, clean_player_text
from lmpc_runtime.reply import DONE, TEXT

SHORT = SamplingConfig(max_tokens=12)


def reply_text(npc, line):
    return [e for e in npc.ask(line) if e.kind == DONE][0].text


def test_same_seed_same_reply_different_seed_differs(tiny_bundle):
    with Runtime() as rt:
        a = rt.load_npc(tiny_bundle, seed=42, sampling=SHORT)
        b = rt.load_npc(tiny_bundle, seed=42, sampling=SHORT)
        c = rt.load_npc(tiny_bundle, seed=43, sampling=SHORT)
        first = [reply_text(a, "Hello there"), reply_text(a, "And then?")]
        assert first == [reply_text(b, "Hello there"), reply_text(b, "And then?")]
        assert first != [reply_text(c, "Hello there"), reply_text(c, "And then?")]


def test_npcs_share_one_model(tiny_bundle):
    with Runtime() as rt:
        a, b = rt.load_npc(tiny_bundle), rt.load_npc(tiny_bundle)
        assert a._engine is b._engine and a.id != b.id
        rt.unload_npc(a.id)
        assert rt.npcs == [b]
        with pytest.raises(InvalidArgumentError):
            rt.npc(a.id)
        with pytest.raises(InvalidArgumentError, match="already loaded"):
            rt.load_npc(tiny_bundle, npc_id=b.id)


def test_a_second_turn_prefills_only_what_is_new(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT, seed=1)
        first = npc.start_reply("Good day.")
        assert npc._seq.tokens == npc.persona_tokens  # the persona came from the prefix cache
        assert len(first.todo) < len(npc.persona_tokens) // 2  # only the memory note and the line
        list(npc.run_reply(first))
        npc.end_reply(first)
        second = npc.start_reply("Tell me more.")
        # The persona stays cached: what is prefilled is the last exchange (whose memory note is gone),
        # the new note and the new line.
        assert len(npc._seq) >= len(npc.persona_tokens)
        assert len(second.todo) < len(npc.persona_tokens) // 2


def test_npcs_of_one_bundle_share_the_persona_cache_and_reply_as_from_a_fresh_prompt(tiny_bundle):
    greedy = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_tokens=12)
    with Runtime() as rt:
        a, b = rt.load_npc(tiny_bundle, sampling=greedy), rt.load_npc(tiny_bundle, sampling=greedy)
        assert len(a._engine.prefixes) == 1 and a._seq is not b._seq
        cached = reply_text(a, "Good day.")
        # The same reply with nothing cached: the whole prompt prefilled from an empty sequence.
        b._seq = b._engine.new_sequence()
        reply = b.start_reply("Good day.")
        assert len(reply.todo) > len(b.persona_tokens)
        list(b.run_reply(reply))
        assert reply.final_text == cached


def test_cancelled_reply_leaves_no_trace(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT)
        events = npc.ask("Hello")
        next(e for e in events if e.kind == TEXT)
        events.close()  # the caller walks away mid-reply
        assert npc.history == [] and npc.current is None


def test_long_conversation_stays_inside_the_context_with_the_persona_first(tiny_bundle):
    """Without summaries (no background job is run here) the oldest exchanges are left out of the prompt;
    test_memory.py runs 200 turns with summaries."""
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SamplingConfig(max_tokens=8), seed=3)
        limit = npc._engine.spec.context_length - 8
        for turn in range(40):
            reply = npc.start_reply(f"This is question number {turn}, about the weather and the harvest.")
            prompt = npc._seq.tokens + reply.todo
            assert len(prompt) <= limit
            assert prompt[: len(npc.persona_tokens)] == npc.persona_tokens
            list(npc.run_reply(reply))
            npc.end_reply(reply)
        assert len(npc.history) == 40
        whole = sum(len(npc.chat.turn("user", p) + npc.chat.turn("assistant", r)) for p, r in npc.history)
        assert len(npc.persona_tokens) + whole > limit  # the whole conversation would not have fit


def test_a_persona_larger_than_the_context_is_a_clear_error(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT)
        npc._engine.spec = dataclasses.replace(npc._engine.spec, context_length=len(npc.persona_tokens) + 20)
        with pytest.raises(ContextOverflowError, match="no room"):
            npc.start_reply("Hello")


def test_huge_player_line_is_cut_not_fatal(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT)
        text = reply_text(npc, "word " * 200_000)
        assert text and npc.history[0][0] == clean_player_text("word " * 200_000)
        assert len(npc.history[0][0]) <= MAX_PLAYER_CHARS


def test_player_line_cleaning():
    assert clean_player_text("  hi\x00 there\x1b[31m \u0007 ") == "hi  there [31m"
    assert clean_player_text("cafe\u0301") == "café"
    for bad in ("", "   \n\t ", "\x00\x01"):
        with pytest.raises(InvalidArgumentError, match="empty"):
            clean_player_text(bad)
    with pytest.raises(InvalidArgumentError, match="string"):
        clean_player_text(b"bytes")


def test_one_reply_at_a_time(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT)
        npc.start_reply("Hello")
        with pytest.raises(InvalidArgumentError, match="still answering"):
            npc.start_reply("Hello again")


def test_runtime_argument_checks():
    with pytest.raises(InvalidArgumentError):
        Runtime(threads=0)
    with Runtime() as rt, pytest.raises(InvalidArgumentError):
        rt.npc("nobody")


def test_a_sheet_without_fallback_lines_still_never_gives_an_empty_bubble(tiny_copy):
    import msgpack

    from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest
    from lmpc_runtime.npc import SILENT_FALLBACK

    path = tiny_copy / MANIFEST_NAME
    manifest = msgpack.unpackb(path.read_bytes())
    manifest["character"]["fallback_lines"] = []
    path.write_bytes(pack_manifest(manifest))
    with Runtime(threads=1, seed=1) as rt:
        npc = rt.load_npc(tiny_copy)
        reply = npc.start_reply("Hello.")
        assert reply.fallback == SILENT_FALLBACK
        reply.cancel()


def test_user_and_char_in_a_persona_and_greeting_take_the_players_name(tiny_copy):
    """A card's `{{user}}` is resolved at run time: the unnamed player at first, then the name the game
    sets; the persona re-reads only from the name on."""
    import msgpack

    from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest

    path = tiny_copy / MANIFEST_NAME
    manifest = msgpack.unpackb(path.read_bytes())
    manifest["persona"]["system"] += " You are talking to {{user}}."
    manifest["character"]["greeting"] = "Well met, {{user}}. I am {{char}}."
    path.write_bytes(pack_manifest(manifest))
    with Runtime(threads=1, seed=1) as rt:
        npc = rt.load_npc(tiny_copy, sampling=SHORT)
        assert npc.greeting == "Well met, the traveller. I am Orlando Marlo."
        unnamed = list(npc.persona_tokens)
        assert "You are talking to the traveller." in npc.chat.decode(unnamed)
        reply_text(npc, "Hello.")
        rt.set_fact(npc, "player.name", "Mira")
        assert npc.greeting == "Well met, Mira. I am Orlando Marlo."
        named = npc.persona_tokens
        assert "You are talking to Mira." in npc.chat.decode(named)
        shared = next(i for i, (a, b) in enumerate(zip(unnamed, named)) if a != b)
        assert npc.chat.decode(named[:shared]).endswith("You are talking to")  # the same up to the name
        reply_text(npc, "Do you know my name?")
        assert npc._seq.tokens[: len(named)] == named  # the prompt now starts with the named persona
