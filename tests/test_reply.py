"""The reply state machine, fed one-hot logits so that each test controls exactly what the 'model' says."""

import numpy as np
import pytest

from lmpc_runtime import SamplingConfig, read_bundle
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import KvSequence
from lmpc_runtime.reply import DONE, SENTENCE, STARTED, TEXT, Reply
from lmpc_runtime.sampling import Sampler

END = 2


@pytest.fixture(scope="module")
def chat(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    return ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special)


def make_reply(chat, max_tokens=200, stop=(), fallback="Forgive me, I lost my thought."):
    config = SamplingConfig(temperature=0, repetition_penalty=1.0, max_tokens=max_tokens, stop=stop)
    return Reply(1, "npc", KvSequence(2), [], Sampler(config, np.random.default_rng(0)), chat.text_stream(),
                 END, max_tokens, stop, fallback)


def say(reply, ids):
    """Feed the reply logits that make it pick `ids` in order, until it finishes; return its events."""
    events = []
    for token in ids:
        if reply.done:
            break
        logits = np.zeros(49152, dtype=np.float32)
        logits[token] = 10.0
        events += reply.accept(logits)
    return events


def texts(events, kind):
    return [e.text for e in events if e.kind == kind]


def test_prefill_chunks_never_leave_a_single_token_behind(chat):
    """A lone last token would be prefilled by the decode kernel, which rounds differently (see
    test_segments): a chunk that can spare a token leaves two."""
    reply = make_reply(chat)
    reply.todo = list(range(10))
    assert [len(reply.take_prefill(4)) for _ in range(3)] == [4, 4, 2]
    reply.todo = list(range(513))
    assert [len(reply.take_prefill(512)) for _ in range(2)] == [511, 2]
    reply.todo = list(range(3))
    assert [len(reply.take_prefill(2)) for _ in range(2)] == [2, 1]  # a chunk of two cannot spare one
    reply.todo = [7]
    assert reply.take_prefill(4) == [7] and reply.todo == []


def test_streams_text_and_sentences_then_ends_at_end_of_turn(chat):
    reply = make_reply(chat)
    events = say(reply, chat.encode_text("Good morrow. I am Orlando Marlo!") + [END])
    assert events[0].kind == STARTED
    assert "".join(texts(events, TEXT)) == "Good morrow. I am Orlando Marlo!"
    assert texts(events, SENTENCE) == ["Good morrow.", "I am Orlando Marlo!"]
    assert events[-1].kind == DONE and events[-1].finish == "end_of_turn"
    assert reply.final_text == "Good morrow. I am Orlando Marlo!"


def test_stop_string_is_never_shown(chat):
    reply = make_reply(chat, stop=("Player:",))
    events = say(reply, chat.encode_text("Hello there. Player: and more") + [END])
    shown = "".join(texts(events, TEXT))
    assert "Player" not in shown and "Pl" not in shown.split("there.")[1]
    assert reply.finish == "stop_string" and reply.final_text == "Hello there."


def test_token_limit_ends_at_a_sentence_boundary(chat):
    ids = chat.encode_text("One thing is true. Another thing is also true. And a third thing that")
    reply = make_reply(chat, max_tokens=len(ids))
    events = say(reply, ids + [END])
    assert reply.finish == "length"
    assert reply.final_text == "One thing is true. Another thing is also true."
    assert events[-1].text == reply.final_text
    # What was streamed is exactly what the reply ended with: nothing shown had to be taken back.
    assert "".join(texts(events, TEXT)).strip() == reply.final_text


def test_a_repeated_sentence_ends_the_reply(chat):
    reply = make_reply(chat)
    say(reply, chat.encode_text("I serve the light. I serve the light. I serve") + [END])
    assert reply.finish == "repetition"
    assert reply.final_text == "I serve the light."


def test_a_token_loop_ends_the_reply(chat):
    reply = make_reply(chat)
    say(reply, chat.encode_text("Yes, it is so" + " so" * 12) + [END])
    assert reply.finish == "repetition"
    assert len(reply.generated) < 12


def test_empty_output_becomes_the_fallback_line(chat):
    reply = make_reply(chat)
    events = say(reply, [END])
    assert reply.finish == "fallback"
    assert reply.final_text == "Forgive me, I lost my thought."
    assert texts(events, TEXT) == ["Forgive me, I lost my thought."]


def test_cancel(chat):
    reply = make_reply(chat)
    say(reply, chat.encode_text("I was saying"))
    events = reply.cancel()
    assert reply.finish == "cancelled" and [e.kind for e in events] == [DONE]
    assert reply.cancel() == []


def test_metrics(chat):
    reply = make_reply(chat)
    say(reply, chat.encode_text("Well met, friend.") + [END])
    m = reply.metrics()
    assert m["tokens"] == len(reply.generated) and m["ttft_ms"] >= 0 and m["decode_tok_s"] > 0


def test_token_limit_in_the_first_sentence_trails_off(chat):
    ids = chat.encode_text("Ah, the roads of the north were long and the winters")
    reply = make_reply(chat, max_tokens=len(ids))
    events = say(reply, ids + [END])
    assert reply.finish == "length"
    assert reply.final_text == "Ah, the roads of the north were long and the winters…"
    assert "".join(texts(events, TEXT)) == reply.final_text  # the ellipsis arrives as the last text
    assert texts(events, SENTENCE) == [reply.final_text]


@pytest.mark.parametrize("degenerate", ["... !!!", " — ", "?!?!", "*** ---"])
def test_output_without_a_word_becomes_the_fallback_and_is_never_shown(chat, degenerate):
    reply = make_reply(chat)
    events = say(reply, chat.encode_text(degenerate) + [END])
    assert reply.finish == "fallback" and reply.final_text == "Forgive me, I lost my thought."
    assert texts(events, TEXT) == ["Forgive me, I lost my thought."]


def test_a_reply_may_open_with_punctuation_once_words_follow(chat):
    reply = make_reply(chat)
    events = say(reply, chat.encode_text("... Well, perhaps.") + [END])
    assert reply.finish == "end_of_turn" and reply.final_text == "... Well, perhaps."
    assert "".join(texts(events, TEXT)) == "... Well, perhaps."
