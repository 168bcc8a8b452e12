"""Typed actions and emotions: the sheet's schema, the tail automaton (driven by logits each test
controls), the NPC's gates and game values, the C ABI's events, and the writer's dialogue files."""

import json

import numpy as np
import pytest

from lmpc_runtime import ACTION, DONE, EMOTION, TEXT, InvalidArgumentError, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.actions import MAX_TAGS, TailGrammar, TailWriter, parse_tag, split_tail, tail_room, write_tail
from lmpc_runtime.capi import CApi, CallError, E_INVAL, event_text, values_arg
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import KvSequence
from lmpc_runtime.errors import SheetError
from lmpc_runtime.reply import Event, Reply
from lmpc_runtime.sampling import Sampler
from lmpc_runtime.sheet import parse_sheet, sheet_from_dict

END = 2
VOCAB = 49152
from conftest import ACTIONS, EMOTIONS  # the acting tiny bundle's schema


@pytest.fixture(scope="module")
def chat(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    return ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special)


def grammar(chat, actions=("act:give_item item=father_letter", "act:give_item item=coin", "act:end_conversation"),
            emotions=EMOTIONS):
    return TailGrammar(chat.pieces, actions, emotions)


def speak(chat, tail, script, prefer="calm", max_tokens=60):
    """Drive a reply with logits that pick `script`'s tokens in order, then prefer the tokens of `prefer`
    and the end of the turn. Returns (events, reply)."""
    seq = KvSequence(2)
    config = SamplingConfig(temperature=0, repetition_penalty=1.0, max_tokens=max_tokens)
    reply = Reply(1, "npc", seq, [], Sampler(config, np.random.default_rng(0)), chat.text_stream(), END,
                  max_tokens, tail=tail)
    events, step = [], 0
    while not reply.done:
        logits = np.zeros(VOCAB, dtype=np.float32)
        if step < len(script):
            logits[script[step]] = 10.0
        else:
            logits[chat.encode_text(prefer)] = 8.0
            logits[END] = 5.0
        step += 1
        assert step < 200, "the tail did not end"
        events += reply.accept(logits)
        if reply.next_token is not None:
            seq.tokens.append(reply.next_token)
    return events, reply


def kinds(events, kind):
    return [(e.text, e.args) for e in events if e.kind == kind]


# -- the sheet --------------------------------------------------------------------------------------

def sheet(**extra):
    return parse_sheet({"format": 1, "name": "Orlando Marlo", **extra})


def test_a_sheet_declares_actions_and_emotions_and_keeps_them_through_a_bundle():
    s = sheet(actions=ACTIONS, emotions=EMOTIONS)
    assert [a.name for a in s.actions] == ["give_item", "end_conversation", "follow"]
    assert s.actions[0].args == {"item": ("father_letter", "coin")}
    assert s.actions[2].args == {"target": "game"}
    assert s.emotions == tuple(EMOTIONS)
    assert sheet_from_dict(s.to_dict()) == s


@pytest.mark.parametrize("actions, emotions, expected", [
    ([{"name": "Give Item"}], [], "actions[0].name: 'Give Item' must be lower-case"),
    ([{"name": "wave"}, {"name": "wave"}], [], "actions[1].name: 'wave' is declared twice"),
    ([{"name": "give", "args": {"item": []}}], [], "actions[0].args.item: expected a non-empty list"),
    ([{"name": "give", "args": {"item": ["a letter"]}}], [], "value 'a letter' must be letters"),
    ([{"name": "give", "args": {"item": "inventory"}}], [], 'or "game" for values'),
    ([{"name": "give", "args": {"a": [f"v{i}" for i in range(100)], "b": [f"w{i}" for i in range(100)]}}], [],
     f"10000 combinations of values; at most {MAX_TAGS} compile"),
    ([{"name": "give", "requires": "letter.given >"}], [], "actions[0].requires:"),
    ([{"name": "give", "colour": "red"}], [], "actions[0].colour: unknown key"),
    ([], ["calm", "Calm!"], "emotions: 'Calm!' must be lower-case"),
    ([], ["calm", "calm"], "emotions: a label is repeated"),
])
def test_a_bad_action_schema_is_a_sheet_error_saying_where(actions, emotions, expected):
    with pytest.raises(SheetError) as raised:
        sheet(actions=actions, emotions=emotions) if emotions else sheet(actions=actions)
    assert expected in str(raised.value)


# -- the tail, as text ------------------------------------------------------------------------------

def test_a_written_tail_splits_from_the_speech_and_parses():
    text = "Take it, friend." + write_tail(["act:give_item item=father_letter", "feel:sad"])
    assert text == "Take it, friend.\n[act:give_item item=father_letter]\n[feel:sad]"
    speech, tags = split_tail(text)
    assert speech == "Take it, friend."
    assert [(t.kind, t.name, t.args) for t in tags] == [("action", "give_item", {"item": "father_letter"}),
                                                        ("emotion", "sad", {})]
    assert split_tail("No tail [here].") == ("No tail [here].", [])
    assert parse_tag("act:end_conversation").args == {}


# -- the automaton ----------------------------------------------------------------------------------

def test_the_model_writes_an_action_then_the_runtime_has_it_write_an_emotion(chat):
    script = chat.encode_text("Take it, friend.\n[act:give_item item=father_letter]")
    events, reply = speak(chat, TailWriter(grammar(chat)), script, prefer="sad")
    assert kinds(events, ACTION) == [("give_item", {"item": "father_letter"})]
    assert kinds(events, EMOTION) == [("sad", {})]
    assert [e.kind for e in events][-3:] == [ACTION, EMOTION, DONE]
    shown = "".join(t for t, _ in kinds(events, TEXT))
    assert shown == "Take it, friend." == reply.final_text  # the tail is never shown, nor the line break
    assert reply.finish == "end_of_turn"


def test_a_reply_that_ends_without_an_emotion_gets_one_chosen_by_the_model(chat):
    events, reply = speak(chat, TailWriter(grammar(chat)), chat.encode_text("Good day to you.") + [END],
                          prefer="angry")
    assert kinds(events, EMOTION) == [("angry", {})] and not kinds(events, ACTION)
    assert reply.final_text == "Good day to you."


def test_free_text_never_holds_a_bracket(chat):
    script = chat.encode_text("Go") + [chat.pieces.by_text[" ["][0]] + chat.encode_text(" now.") + [END]
    events, reply = speak(chat, TailWriter(grammar(chat)), script)
    assert "[" not in reply.final_text and "]" not in reply.final_text


def test_an_action_the_game_does_not_allow_is_dropped_for_the_emotion_not_turned_into_another(chat):
    # Only end_conversation is open; the model means to give the letter.
    tail = TailWriter(grammar(chat, actions=["act:end_conversation"]))
    speech = chat.encode_text("Here.\n")
    script = speech + chat.encode_text("[act:give")  # the model's wish ends there: "give" is not allowed
    events, reply = speak(chat, tail, script, prefer="calm")
    assert not kinds(events, ACTION)
    assert kinds(events, EMOTION) == [("calm", {})]
    assert reply.final_text == "Here."
    # The sequence went back to before the tail's line break, then the emotion's tail was fed.
    fed = reply.seq.tokens
    assert chat.decode(fed) == "Here.\n[feel:calm"


def test_without_emotions_a_disallowed_action_just_ends_the_reply(chat):
    tail = TailWriter(grammar(chat, actions=["act:end_conversation"], emotions=()))
    script = chat.encode_text("Here.\n[act:give_item item=coin]")
    events, reply = speak(chat, tail, script)
    assert not kinds(events, ACTION) and not kinds(events, EMOTION)
    assert reply.final_text == "Here." and reply.finish == "end_of_turn"


def test_any_logits_give_a_tail_that_parses_and_type_checks_and_ends(chat):
    """Random models, biased towards opening the tail: every reply ends within the token limit plus the
    longest tail, and every action is one of the grammar's."""
    g = grammar(chat)
    valid = {t[len("act:"):] for t in g.actions}
    rng = np.random.default_rng(0)
    newline, bracket = chat.pieces.newline, chat.pieces.open
    actions = emotions = 0
    for trial in range(100):
        base = rng.normal(0, 3, VOCAB).astype(np.float32)
        seq = KvSequence(2)
        config = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, max_tokens=30)
        reply = Reply(1, "npc", seq, [], Sampler(config, np.random.default_rng(trial)), chat.text_stream(), END,
                      30, tail=TailWriter(g))
        events = []
        for step in range(400):
            logits = base.copy()
            logits[rng.integers(VOCAB, size=64)] += rng.uniform(0, 12, 64)
            logits[[newline, bracket, END]] += rng.uniform(0, 14, 3)  # often open the tail, or end the turn
            logits[g.pieces.brackets] += rng.uniform(0, 8)
            if trial % 2:  # a model that means an action: it opens the tail, then writes one
                if not reply.tail.writing:
                    logits[[newline, bracket]] += 22
                elif reply.tail.open is not None:
                    logits[g.allowed(reply.tail.open, None)] += 20
            events += reply.accept(logits)
            if reply.done:
                break
            seq.tokens.append(reply.next_token)
        assert reply.done and reply.finish != "cancelled"
        for e in events:
            if e.kind == ACTION:
                actions += 1
                assert " ".join([e.text] + [f"{k}={v}" for k, v in e.args.items()]) in valid
            elif e.kind == EMOTION:
                emotions += 1
                assert e.text in EMOTIONS
        assert "[" not in reply.final_text
    # Every reply got its emotion, whatever ended its speech (the limit, the end of the turn, a loop).
    assert emotions == 100 and actions >= 1


# -- the NPC: gates, the game's values --------------------------------------------------------------

def test_the_npc_opens_actions_by_the_games_facts_and_values(acting_bundle):
    with Runtime(threads=1, seed=1) as rt:
        npc = rt.load_npc(acting_bundle)
        tags = npc._tail().grammar.actions
        assert tags == ("act:end_conversation", "act:give_item item=coin", "act:give_item item=father_letter")
        rt.set_fact(npc, "letter.given", True)
        assert npc._tail().grammar.actions == ("act:end_conversation",)
        rt.set_action_values(npc, "follow", "target", ["player", "jory"])
        assert npc._tail().grammar.actions == ("act:end_conversation", "act:follow target=jory",
                                               "act:follow target=player")
        rt.set_action_values(npc, "follow", "target", [])
        assert npc._tail().grammar.actions == ("act:end_conversation",)
        for bad, message in [(("wave", "x", ["a"]), "no action 'wave'"),
                             (("give_item", "item", ["a"]), "not an argument whose values the game gives"),
                             (("follow", "target", ["two words"]), "must be letters"),
                             (("follow", "target", "player"), "not one string"),
                             (("follow", "target", [f"v{i}" for i in range(MAX_TAGS + 1)]), "combinations")]:
            with pytest.raises(InvalidArgumentError, match=message):
                rt.set_action_values(npc, *bad)


def test_the_context_keeps_room_for_the_longest_tail():
    s = sheet(actions=ACTIONS, emotions=EMOTIONS)
    # "\n[act:follow target=<64 characters>]" then "\n[feel:angry]": a token writes at least a character.
    assert tail_room(s.actions, s.emotions) == len("\n[act:follow target=]") + 64 + len("\n[feel:angry]")
    assert tail_room((), ()) == 0


def test_every_reply_of_an_npc_with_emotions_ends_with_one(acting_bundle):
    with Runtime(threads=1, seed=3) as rt:
        npc = rt.load_npc(acting_bundle, sampling=SamplingConfig(max_tokens=12))
        for line in ("Hello there.", "What do you carry?", "Give me the letter."):
            events = list(npc.ask(line))
            assert len(kinds(events, EMOTION)) == 1 and kinds(events, EMOTION)[0][0] in EMOTIONS, events[-3:]
            for name, args in kinds(events, ACTION):
                assert name in ("give_item", "end_conversation")  # follow has no values: never
        assert all("[" not in said for _, said in npc.history)


def test_the_c_abi_gives_an_action_as_json_and_takes_values_as_json(acting_bundle):
    assert json.loads(event_text(Event(ACTION, "npc", 1, "give_item", args={"item": "coin"}))) == \
        {"name": "give_item", "args": {"item": "coin"}}
    assert event_text(Event(EMOTION, "npc", 1, "sad")) == "sad"
    assert values_arg(b'["a", "b"]') == ["a", "b"]
    for bad in (b'"a"', b"[1]", b"not json", None):
        with pytest.raises(CallError) as raised:
            values_arg(bad)
        assert raised.value.status == E_INVAL
    api = CApi()
    rt = api.open(1, True, 1, 0, False, 0.5)
    try:
        npc = api.npc_load(rt, str(acting_bundle).encode(), b"orlando")
        api.set_action_values(npc, b"follow", b"target", b'["player"]')
        api.say(npc, b"Come with me.")
        polled = []
        while True:
            api.tick(rt, 10_000_000)
            status, fields, text = api.poll(rt, 4096)
            while fields is not None:
                polled.append((fields["kind"], text.decode()))
                status, fields, text = api.poll(rt, 4096)
            if polled and polled[-1][0] == 4:
                break
        assert [k for k, _ in polled][-2:] == [10, 4]  # EMOTION, then DONE
        assert polled[-2][1] in EMOTIONS
    finally:
        api.close(rt)


# -- the writer's dialogues -------------------------------------------------------------------------

def test_a_dialogue_file_carries_actions_and_emotions_on_its_last_turn(tmp_path):
    from lmpc_export.dialogues import load_dialogues
    from lmpc_export.hygiene import Hygiene

    s = sheet(actions=ACTIONS, emotions=EMOTIONS, examples=[])
    good = tmp_path / "good.toml"
    good.write_text('format = 1\ncharacter = "Orlando Marlo"\n[[dialogues]]\n[[dialogues.turns]]\n'
                    'player = "Will you trust me with it?"\nnpc = "Then take it, and read it by daylight."\n'
                    'act = "give_item item=father_letter"\nfeel = "sad"\n')
    [dialogue] = load_dialogues(good, s)
    assert dialogue.turns[0][1] == "Then take it, and read it by daylight.\n[act:give_item item=father_letter]\n[feel:sad]"
    assert Hygiene(s).reply_problems(dialogue.turns[0][1], dialogue.turns[0][0]) == []
    bad = tmp_path / "bad.toml"
    bad.write_text('format = 1\ncharacter = "Orlando Marlo"\n[[dialogues]]\n'
                   '[[dialogues.turns]]\nplayer = "Hello there."\nnpc = "Good day."\nfeel = "calm"\n'
                   '[[dialogues.turns]]\nplayer = "Give."\nnpc = "No."\nact = "give_item item=sword"\nfeel = "glum"\n'
                   '[[dialogues]]\n[[dialogues.turns]]\nplayer = "Dance."\nnpc = "No."\nact = "dance"\n')
    with pytest.raises(SheetError) as raised:
        load_dialogues(bad, s)
    message = str(raised.value)
    for expected in ("dialogues[0].turns[0].act/feel: only the last turn",
                     "dialogues[0].turns[1].act: 'give_item item=sword' is not a valid call",
                     "dialogues[0].turns[1].feel: 'glum' is not one of the sheet's emotions",
                     "dialogues[1].turns[0].act: the sheet declares no action 'dance'"):
        assert expected in message


# -- the tools: lmpc ask --json, the action test ---------------------------------------------------

def test_lmpc_ask_json_reports_the_replys_actions_and_emotion(acting_bundle, tiny_bundle):
    import subprocess
    import sys
    from pathlib import Path

    def ask(bundle):
        done = subprocess.run([str(Path(sys.executable).with_name("lmpc")), "ask", str(bundle), "Who are you?",
                               "--seed", "3", "--max-tokens", "10", "--json"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    acting = ask(acting_bundle)
    assert acting["emotion"] in EMOTIONS and acting["actions"] == []  # the tiny model never acts by itself
    plain = ask(tiny_bundle)
    assert plain["emotion"] is None and plain["actions"] == []
    # The emotion's steps come after the speech, which they leave as it was.
    assert acting["text"] == plain["text"] and acting["tokens"] > plain["tokens"]


def test_the_action_test_scores_each_scenario_with_its_facts(acting_bundle, tmp_path):
    from lmpc_export.action_test import load_action_test
    from lmpc_export.evaluate import action_test_report
    from lmpc_runtime.errors import ExportError

    test = tmp_path / "action_test.toml"
    test.write_text('format = 1\ncharacter = "Orlando Marlo"\n'
                    '[[scenario]]\nlines = ["Hello there.", "Give me a coin."]\nexpect = "give_item item=coin"\n'
                    '[[scenario]]\nlines = ["Nice weather."]\nexpect = "none"\nfacts = { "letter.given" = true }\n')
    report = action_test_report(acting_bundle, test, seeds=[1], threads=1)
    s = report["summary"]
    assert (s["scenarios"], s["replies"]) == (2, 4)  # seed 1 and greedy, the last line of each
    assert s["by_expected"] == {"give_item item=coin": 0.0, "none": 1.0} and s["right"] == 0.5
    assert s["actions_emitted"] == s["actions_valid"] == 0
    assert sum(s["emotions"].values()) == 4 and "(none)" not in s["emotions"]
    assert "Action test" in report["markdown"]
    bad = tmp_path / "bad.toml"
    bad.write_text('format = 1\ncharacter = "Orlando Marlo"\n[[scenario]]\nlines = ["Hi."]\nexpect = "give_item item=sword"\n'
                   '[[scenario]]\nlines = ["Hi."]\nexpect = "none"\nfacts = { "bad name!" = 1 }\n')
    with pytest.raises(ExportError, match=r"scenario\[0\]\.expect.*scenario\[1\]\.facts"):
        load_action_test(bad, read_bundle(acting_bundle).character)


def test_the_actions_benchmark_compares_a_bundle_with_itself_without_the_tail(acting_bundle, tmp_path):
    """benchmarks/actions.py's children on the tiny acting bundle and its peer (in this process)."""
    import sys

    from conftest import REPO

    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # benchmarks/ is not installed
    from benchmarks import actions as bench

    (tmp_path / "peer").mkdir()
    peer = bench.without_tail(acting_bundle, tmp_path / "peer")
    assert not read_bundle(peer).character.emotions and read_bundle(acting_bundle).character.emotions
    runs = {"with actions and emotions": [bench.child(str(acting_bundle))], "without (peer)": [bench.child(str(peer))]}
    assert len(runs["with actions and emotions"][0]["tags"]) == len(bench.LINES)  # an emotion a reply
    assert runs["without (peer)"][0]["tags"] == []
    table = bench.markdown({"date": "today", "machine": "here", "bundle": "b", "reps": 1,
                            "summary": bench.summarise(runs)})
    assert "Decode speed with the automaton against without" in table
