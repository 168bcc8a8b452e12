"""The fast engine against the reference one, and what only it does: batched steps over a slot pool,
an in-place KV cache, prefix and rewind giving the tokens of a fresh prompt."""

import gc

import numpy as np
import pytest

from lmpc_runtime import read_bundle
from lmpc_runtime.engine import ReferenceEngine
from lmpc_runtime.fused_engine import FusedEngine


def prompt(n, start):
    return [(start + 37 * i) % 40000 + 100 for i in range(n)]


def greedy(engine, seq, logits, n):
    """n greedy tokens continuing `seq`, whose last logits are `logits`."""
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = engine.extend(seq, [out[-1]])
    return out


@pytest.fixture(scope="module")
def fused(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    return FusedEngine(str(bundle.model_path), bundle.model)


def test_the_fused_graph_decodes_like_the_optimum_export(tiny_graphs):
    """Same float32 weights, two independent exports and engines: the same logits at every step."""
    fast = FusedEngine(str(tiny_graphs.fused), tiny_graphs.fused_spec)
    slow = ReferenceEngine(str(tiny_graphs.reference), tiny_graphs.reference_spec)
    ids = prompt(40, 1)
    fast_seq, slow_seq = fast.new_sequence(), slow.new_sequence()
    fast_logits, slow_logits = fast.extend(fast_seq, ids[:25]), slow.extend(slow_seq, ids[:25])
    np.testing.assert_allclose(fast_logits, slow_logits, atol=1e-4)
    # A second prefill chunk on a non-empty cache, then greedy steps.
    fast_logits, slow_logits = fast.extend(fast_seq, ids[25:]), slow.extend(slow_seq, ids[25:])
    np.testing.assert_allclose(fast_logits, slow_logits, atol=1e-4)
    tokens = []
    for _ in range(24):
        assert int(np.argmax(fast_logits)) == int(np.argmax(slow_logits))
        tokens.append(int(np.argmax(fast_logits)))
        fast_logits, slow_logits = fast.extend(fast_seq, tokens[-1:]), slow.extend(slow_seq, tokens[-1:])
        np.testing.assert_allclose(fast_logits, slow_logits, atol=1e-4)
    assert len(set(tokens)) > 3, "a degenerate continuation would not test much"


def test_batched_steps_match_the_reference_engine_step_by_step(tiny_graphs):
    fast = FusedEngine(str(tiny_graphs.fused), tiny_graphs.fused_spec)
    slow = ReferenceEngine(str(tiny_graphs.reference), tiny_graphs.reference_spec)
    fast_seqs, slow_seqs = [], []
    for i, n in enumerate((3, 17, 9)):
        fast_seqs.append(fast.new_sequence())
        slow_seqs.append(slow.new_sequence())
        fast.extend(fast_seqs[-1], prompt(n, 100 * i))
        slow.extend(slow_seqs[-1], prompt(n, 100 * i))
    for step in range(6):
        ids = [700 + 10 * step + i for i in range(3)]
        np.testing.assert_allclose(fast.step(fast_seqs, ids), slow.step(slow_seqs, ids), atol=1e-4)


def test_batched_decode_gives_each_sequence_the_tokens_it_gets_alone(fused):
    starts = [prompt(n, 50 * n) for n in (5, 23, 11, 40)]
    solo = []
    for ids in starts:
        seq = fused.new_sequence()
        solo.append(greedy(fused, seq, fused.extend(seq, ids), 16))
    seqs = [fused.new_sequence() for _ in starts]
    logits = np.stack([fused.extend(seq, ids) for seq, ids in zip(seqs, starts)])
    batched = [[] for _ in seqs]
    for _ in range(16):
        picks = [int(np.argmax(row)) for row in logits]
        for out, tok in zip(batched, picks):
            out.append(tok)
        logits = fused.step(seqs, picks)
    assert batched == solo


def test_a_step_over_scattered_slots_gathers_them_first(fused):
    seqs = [fused.new_sequence() for _ in range(5)]
    for i, seq in enumerate(seqs):
        fused.extend(seq, prompt(4 + 3 * i, 900 + i))
    chosen = [seqs[4], seqs[0], seqs[2]]
    alone = [seq.fork() for seq in chosen]
    batched = fused.step(chosen, [31, 32, 33])
    slots = sorted(seq.slot for seq in chosen)
    assert slots == list(range(slots[0], slots[0] + 3))
    for row, twin, tok in zip(batched, alone, [31, 32, 33]):
        np.testing.assert_allclose(row, fused.extend(twin, [tok]), atol=1e-4, rtol=1e-4)
    # The sequences moved out of the way still hold their caches.
    for seq in (seqs[1], seqs[3]):
        twin = fused.new_sequence()
        np.testing.assert_allclose(fused.extend(seq, [5]), fused.extend(twin, seq.tokens[:-1] + [5]),
                                   atol=2e-3, rtol=1e-3)


def test_the_cache_is_written_in_place_and_slots_are_reused(fused):
    seq = fused.new_sequence()
    generation, slots = fused.pool.generation, fused.pool.slots
    fused.extend(seq, prompt(12, 3))
    for tok in range(20):
        fused.extend(seq, [tok + 300])
    keys = fused.pool.storage[0, 0, seq.slot]  # [kv_heads, capacity, head_dim]
    assert keys[:, :32].any(axis=-1).all() and not keys[:, 32:].any()
    assert fused.pool.generation == generation, "decoding must not reallocate the cache"
    slot = seq.slot
    del seq
    gc.collect()
    assert fused.new_sequence().slot == slot and fused.pool.slots == slots


def test_rewind_and_the_prefix_cache_decode_what_a_fresh_prompt_does(fused):
    persona, line, other = prompt(30, 7), prompt(6, 4000), prompt(9, 8000)
    seq = fused.new_sequence()
    fresh = greedy(fused, seq, fused.extend(seq, persona + line), 12)
    # From the cached persona.
    seq = fused.new_sequence(persona)
    assert greedy(fused, seq, fused.extend(seq, line), 12) == fresh
    # After another exchange was rewound away.
    fused.extend(seq, other)
    seq.rewind(len(persona))
    assert greedy(fused, seq, fused.extend(seq, line), 12) == fresh


def test_step_refuses_a_sequence_twice_mismatched_tokens_and_foreign_sequences(fused, tiny_bundle):
    seq = fused.new_sequence()
    fused.extend(seq, [5, 6])
    with pytest.raises(ValueError, match="once per step"):
        fused.step([seq, seq], [1, 2])
    with pytest.raises(ValueError, match="tokens"):
        fused.step([seq], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        fused.step([], [])
    bundle = read_bundle(tiny_bundle)
    other = FusedEngine(str(bundle.model_path), bundle.model)
    with pytest.raises(ValueError, match="engine that created it"):
        other.extend(seq, [7])
    assert len(seq) == 2
