"""The engine contract, for both engines: the fast one on the committed tiny bundle (fused layout, int8)
and the reference one on a tiny optimum export built at test time (float32)."""

import json

import numpy as np
import pytest

from lmpc_runtime import ContextOverflowError, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.engine import ReferenceEngine, open_engine
from lmpc_runtime.fused_engine import FusedEngine

from conftest import ASSETS

GREEDY = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_tokens=24)


@pytest.fixture(scope="module", params=["fused", "reference"])
def engine(request, tiny_bundle):
    if request.param == "fused":
        bundle = read_bundle(tiny_bundle)
        engine = open_engine(str(bundle.model_path), bundle.model)
        assert isinstance(engine, FusedEngine)
        return engine
    graphs = request.getfixturevalue("tiny_graphs")
    return ReferenceEngine(str(graphs.reference), graphs.reference_spec)


def tokens(n, start=400):
    return list(range(start, start + n))


@pytest.mark.parametrize("case", json.loads((ASSETS / "tiny_golden.json").read_text()))
def test_greedy_reply_matches_golden_tokens(tiny_bundle, case):
    with Runtime(seed=0) as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY)
        reply = npc.start_reply(case["player"])
        list(npc.run_reply(reply))
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
    assert seq.tokens == prefix and len(seq) == len(prefix)
    np.testing.assert_allclose(engine.extend(seq, b), fresh, atol=2e-3, rtol=1e-3)


def test_a_sequence_from_a_cached_prefix_continues_like_a_fresh_prompt(engine):
    prefix, rest = tokens(30, 500), tokens(6, 2000)
    fresh = engine.extend(engine.new_sequence(), prefix + rest)
    first = engine.new_sequence(prefix)
    assert first.tokens == prefix and prefix in engine.prefixes
    np.testing.assert_allclose(engine.extend(first, rest), fresh, atol=2e-3, rtol=1e-3)
    # The cached copy is untouched by what its users append: a second user starts from the prefix alone.
    second = engine.new_sequence(prefix)
    assert len(second) == len(prefix)
    np.testing.assert_allclose(engine.extend(second, rest), fresh, atol=2e-3, rtol=1e-3)


def test_fork_is_independent(engine):
    seq = engine.new_sequence()
    engine.extend(seq, tokens(10))
    twin = seq.fork()
    after_twin = engine.extend(twin, tokens(3, 700))
    assert len(seq) == 10 and len(twin) == 13
    # Writing into the twin's cache left the original's alone.
    np.testing.assert_allclose(engine.extend(seq, tokens(3, 700)), after_twin, atol=2e-3, rtol=1e-3)


def test_step_advances_each_sequence_like_extend(engine):
    seqs = [engine.new_sequence() for _ in range(3)]
    for i, seq in enumerate(seqs):
        engine.extend(seq, tokens(5 + i, 300 * (i + 1)))
    singles = [s.fork() for s in seqs]
    batched = engine.step(seqs, [11, 12, 13])
    for row, seq, tok in zip(batched, singles, [11, 12, 13]):
        np.testing.assert_allclose(row, engine.extend(seq, [tok]), atol=1e-4, rtol=1e-4)
    assert [len(s) for s in seqs] == [6, 7, 8]


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
