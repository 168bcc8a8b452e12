import json

import numpy as np
import pytest

from lmpc_runtime import ContextOverflowError, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.engine import Engine
from lmpc_runtime.reply import drive

from conftest import ASSETS

GREEDY = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_tokens=24)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    return Engine(str(bundle.model_path), bundle.model)


def tokens(n, start=400):
    return list(range(start, start + n))


@pytest.mark.parametrize("case", json.loads((ASSETS / "tiny_golden.json").read_text()))
def test_greedy_reply_matches_golden_tokens(tiny_bundle, case):
    with Runtime(seed=0) as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY)
        reply = npc.start_reply(case["player"])
        list(drive(npc.engine, reply))
    assert reply.generated == case["tokens"]


def test_cached_steps_match_one_long_prefill(engine):
    ids = tokens(40)
    whole = engine.extend(engine.new_sequence(), ids)
    seq = engine.new_sequence()
    engine.extend(seq, ids[:25])
    for tok in ids[25:]:
        last = engine.extend(seq, [tok])
    assert len(seq) == 40
    np.testing.assert_allclose(last, whole, atol=2e-3, rtol=1e-3)


def test_rewind_gives_the_same_logits_as_a_fresh_prompt(engine):
    prefix, a, b = tokens(20), tokens(5, 900), tokens(7, 1200)
    fresh = engine.extend(engine.new_sequence(), prefix + b)
    seq = engine.new_sequence()
    engine.extend(seq, prefix + a)
    seq.rewind(len(prefix))
    assert seq.tokens == prefix and seq.kv[0].shape[2] == len(prefix)
    np.testing.assert_allclose(engine.extend(seq, b), fresh, atol=2e-3, rtol=1e-3)


def test_fork_is_independent(engine):
    seq = engine.new_sequence()
    engine.extend(seq, tokens(10))
    twin = seq.fork()
    engine.extend(twin, tokens(3, 700))
    assert len(seq) == 10 and len(twin) == 13


def test_step_advances_each_sequence_like_extend(engine):
    seqs = [engine.new_sequence() for _ in range(3)]
    for i, seq in enumerate(seqs):
        engine.extend(seq, tokens(5 + i, 300 * (i + 1)))
    singles = [s.fork() for s in seqs]
    batched = engine.step(seqs, [11, 12, 13])
    for row, seq, tok in zip(batched, singles, [11, 12, 13]):
        np.testing.assert_allclose(row, engine.extend(seq, [tok]), atol=1e-5)


def test_context_overflow_is_a_typed_error(engine):
    seq = engine.new_sequence()
    with pytest.raises(ContextOverflowError):
        engine.extend(seq, tokens(engine.spec.context_length + 1, 0))
    assert len(seq) == 0


def test_rewind_out_of_range(engine):
    seq = engine.new_sequence()
    engine.extend(seq, tokens(3))
    with pytest.raises(ValueError):
        seq.rewind(4)
