"""The decoding-time guard against invented names, on the real SmolLM2 vocabulary (the tiny bundle's)."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from lmpc_runtime import Runtime
from lmpc_runtime.errors import InvalidArgumentError
from lmpc_runtime.names import NameGuard, mid_sentence, sheet_words
from lmpc_runtime.reply import DONE
from lmpc_runtime.sampling import Sampler, SamplingConfig
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, TINY_BUNDLE


@pytest.fixture(scope="module")
def guard():
    tokenizer = Tokenizer.from_file(str(TINY_BUNDLE / "tokenizer.json"))
    names = NameGuard(tokenizer.get_vocab(), sheet_words(load_sheet(ORLANDO_SHEET).to_dict()))
    return tokenizer, names.for_prompt("Well met, my lord. I am Bob, a miller.")


def _discouraged(guard, text, token):
    tokenizer, reply = guard
    ids = reply.discouraged(text)
    return None if ids is None else tokenizer.token_to_id(token) in set(ids.tolist())


def test_a_name_nobody_mentioned_is_discouraged_mid_sentence_and_known_ones_are_not(guard):
    assert _discouraged(guard, "I met", "ĠGoogle") is True
    for known in ("ĠOrlando", "ĠBob", "ĠAl", "ĠThe"):  # the sheet, the prompt, a prefix of Aldous, a word
        assert _discouraged(guard, "I met", known) is False


def test_a_known_start_cannot_be_carried_on_into_an_invented_name(guard):
    # " Alcibiathos" is ĠAl + c + ibi…, " Solanathia" is ĠSol + an + …
    assert _discouraged(guard, "My name is Al", "c") is True
    assert _discouraged(guard, "My name is Al", "d") is False  # Aldous
    assert _discouraged(guard, "the god Sol", "an") is True
    assert _discouraged(guard, "the god Sol", "aris") is False  # Solaris


def test_the_guard_is_off_where_a_sentence_starts(guard):
    assert _discouraged(guard, "", "ĠGoogle") is None
    assert _discouraged(guard, "I am well.", "ĠGoogle") is None
    assert mid_sentence("Well, my") and not mid_sentence('He said: "') and not mid_sentence("Done! ")


def test_the_sampler_takes_the_penalty_off_discouraged_tokens_only():
    logits = np.array([0.0, 3.0, 2.0, 1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    greedy = SamplingConfig(temperature=0, repetition_penalty=1.0, name_penalty=1.5)
    assert Sampler(greedy, rng).pick(logits, (), np.array([1])) == 2
    assert Sampler(greedy, rng).pick(logits, (), None) == 1
    assert Sampler(greedy.with_(name_penalty=0.5), rng).pick(logits, (), np.array([1])) == 1
    with pytest.raises(InvalidArgumentError, match="name_penalty"):
        SamplingConfig(name_penalty=-1)


def test_an_npc_with_the_guard_on_replies_and_its_replies_carry_the_guard():
    with Runtime() as rt:
        npc = rt.load_npc(TINY_BUNDLE, seed=1, sampling=SamplingConfig(name_penalty=4.0, max_tokens=12))
        reply = npc.start_reply("Have you met my cousin Zebedee?")
        assert reply.names is not None and "Zebedee" in reply.names.known
        assert [e for e in npc.run_reply(reply) if e.kind == DONE]
        npc.end_reply(reply)
        assert npc.start_reply("And you?", sampling=SamplingConfig()).names is None  # off by default


def test_after_a_name_the_next_word_is_free(guard):
    """A capitalised word in progress constrains only the letters that carry it on, never the next word."""
    for nxt in ("Ġis", "Ġof", "ĠMarlo", ",", "."):
        assert _discouraged(guard, "I am Orlando", nxt) is False, nxt
    assert _discouraged(guard, "I am Orlando", "ious") is True  # "Orlandoious" begins no known word
