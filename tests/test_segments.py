"""The model cut into segments (export/segments.py) and run a segment at a time (fused_engine.ForwardPass):
the same logits as the whole graph, one copy of the weights, held sequences while a pass is in flight,
and a cancelled pass leaving the cache as it was."""

import dataclasses

import msgpack
import numpy as np
import onnx
import pytest

from lmpc_runtime import BundleFormatError, BundleMissingError, SequenceBusyError, StateError, read_bundle
from lmpc_runtime.fused_engine import SEGMENTED, WHOLE, FusedEngine
from lmpc_runtime.session import EngineOptions


def prompt(n, start):
    return [(start + 37 * i) % 40000 + 100 for i in range(n)]


def engines(bundle_path):
    bundle = read_bundle(bundle_path)
    segmented = FusedEngine(str(bundle.model_path), bundle.model)
    whole = FusedEngine(str(bundle.model_path), bundle.model, EngineOptions(segmented=False))
    return segmented, whole


def paced_step(engine, seqs, tokens):
    """A step on the engine's paced graph (the segments, in tick mode), run to its end."""
    return engine.begin_step(seqs, tokens).finish()


def assert_same_logits(bundle_path):
    """Prefill chunks and batched decode steps give bit-identical logits segmented and whole: one engine,
    its paced passes on the segments and its synchronous ones on the whole graph."""
    bundle = read_bundle(bundle_path)
    engine = FusedEngine(str(bundle.model_path), bundle.model)
    assert engine.paced == SEGMENTED and engine.open_graphs == [SEGMENTED]  # the whole graph is not needed yet
    runs = []
    for graph in (SEGMENTED, WHOLE):
        seqs = [engine.new_sequence() for _ in range(3)]
        logits = [engine.begin_extend(seq, prompt(n, 7 * i), graph).finish()[0]
                  for i, (seq, n) in enumerate(zip(seqs, (5, 30, 12)))]
        logits.append(engine.begin_extend(seqs[1], prompt(9, 3), graph).finish()[0])  # onto a non-empty cache
        for step in range(4):
            logits.append(engine.begin_step(seqs, [100 + step, 200 + step, 300 + step], graph).finish())
        runs.append(logits)
    assert engine.open_graphs == [SEGMENTED, WHOLE]
    assert len(engine.graph(SEGMENTED)) > 2 and len(engine.graph(WHOLE)) == 1
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_segments_give_the_whole_graphs_logits_tiny(tiny_bundle):
    assert_same_logits(tiny_bundle)


def test_segments_give_the_whole_graphs_logits_real(real_bundle):
    assert_same_logits(real_bundle)


def assert_any_cut_gives_the_same_logits(bundle_path):
    """A prompt prefilled in one pass or cut in chunks of two tokens or more gives bit-identical logits,
    and the same cache (the decode steps after it agree too): the frame budget that cuts a prompt in tick
    mode does not change the reply (a one-token chunk would; Reply.take_prefill never makes one)."""
    bundle = read_bundle(bundle_path)
    engine = FusedEngine(str(bundle.model_path), bundle.model)
    tokens = prompt(150, 11)
    runs = []
    for cut in ([150], [4, 146], [4, 9, 17, 33, 5, 60, 22], [148, 2], [2, 50, 3, 95]):
        seq, start, logits = engine.new_sequence(), 0, []
        for n in cut:
            logits = [engine.begin_extend(seq, tokens[start:start + n]).finish()[0].copy()]
            start += n
        for step in range(3):
            logits.append(engine.begin_step([seq], [200 + step]).finish()[0].copy())
        runs.append(logits)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a, b)


def test_any_cut_of_a_prompt_gives_the_same_logits_tiny(tiny_bundle):
    assert_any_cut_gives_the_same_logits(tiny_bundle)


def test_any_cut_of_a_prompt_gives_the_same_logits_real(real_bundle):
    assert_any_cut_gives_the_same_logits(real_bundle)


def test_segments_read_the_one_data_file(real_bundle):
    """No weight is copied: every large initializer of every segment points into the whole graph's data file."""
    bundle = read_bundle(real_bundle)
    spec = bundle.model
    assert [(s.first_layer, s.end_layer) for s in spec.segments][:2] == [(0, 1), (1, 2)]
    head_parts = sum(1 for s in spec.segments if s.first_layer == s.end_layer == spec.num_layers)
    ranges = []
    for segment in spec.segments:
        graph = onnx.load(str(real_bundle / segment.file), load_external_data=False).graph
        assert (real_bundle / segment.file).stat().st_size < 64 * 1024
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in tensor.external_data}
                assert info["location"] == spec.data_file
                ranges.append((tensor.name, int(info["offset"]), int(info["length"])))
            else:
                assert len(tensor.raw_data) < 1024, tensor.name
    # Tensors read by several segments (rotary tables) are one range; the head's vocabulary slices are views
    # into the embedding table that the first segment gathers from. Nothing else is named twice.
    whole = sorted({(offset, offset + length) for name, offset, length in ranges if ".part" not in name})
    assert all(b[0] >= a[1] for a, b in zip(whole, whole[1:])), "two weights share bytes"
    parts = [(offset, offset + length) for name, offset, length in ranges if ".part" in name]
    assert head_parts > 1 and len(parts) == 2 * head_parts  # data and scales of each slice of the head
    (table,) = {(offset, offset + length) for name, offset, length in ranges if name == "embed.q"}
    assert all(table[0] <= start and end <= table[1] for name, start, end in
               ((n, o, o + length) for n, o, length in ranges if n.startswith("embed.q.part")))
    assert whole[-1][1] <= (real_bundle / spec.data_file).stat().st_size


def test_a_pass_runs_a_segment_at_a_time_and_holds_its_sequences(tiny_bundle):
    segmented, whole = engines(tiny_bundle)
    seq, other = segmented.new_sequence(), segmented.new_sequence()
    segmented.extend(seq, prompt(10, 1))
    before = segmented.read_kv(seq)
    forward = segmented.begin_extend(seq, prompt(6, 50))
    assert forward.advance() is None and forward.next_segment == 1
    for call in (lambda: segmented.extend(seq, [5]), lambda: segmented.step([seq, other], [5, 6]),
                 lambda: seq.rewind(3), lambda: segmented.begin_step([seq], [1])):
        with pytest.raises(SequenceBusyError):
            call()
    # Reading and copying the cache stay allowed: the pass writes only past the sequence's tokens.
    np.testing.assert_array_equal(segmented.read_kv(seq), before)
    twin = seq.fork()
    assert twin.tokens == seq.tokens and len(seq) == 10
    # Other sequences run meanwhile, even batched steps that must gather slots around the held one.
    third = segmented.new_sequence()
    segmented.extend(other, prompt(4, 9))
    segmented.extend(third, prompt(3, 2))
    assert [s.slot for s in (seq, other, twin, third)] == [0, 1, 2, 3]
    gathered = paced_step(segmented, [other, third], [1, 2])
    assert seq.slot == 0 and abs(other.slot - third.slot) == 1
    refs = [whole.new_sequence() for _ in range(2)]
    whole.extend(refs[0], prompt(4, 9))
    whole.extend(refs[1], prompt(3, 2))
    np.testing.assert_array_equal(gathered, whole.step(refs, [1, 2]))
    logits = forward.finish()
    reference = whole.new_sequence()
    whole.extend(reference, prompt(10, 1))
    np.testing.assert_array_equal(logits[0], whole.extend(reference, prompt(6, 50)))
    assert len(seq) == 16 and not seq.busy
    with pytest.raises(StateError):
        forward.advance()


def test_the_pool_may_grow_while_a_pass_is_in_flight(tiny_bundle):
    segmented, whole = engines(tiny_bundle)
    seqs = [segmented.new_sequence() for _ in range(2)]
    for i, seq in enumerate(seqs):
        segmented.extend(seq, prompt(8 + i, i))
    forward = segmented.begin_step(seqs, [11, 12])
    forward.advance()
    generation = segmented.pool.generation
    extra = [segmented.new_sequence() for _ in range(3)]  # the storage is reallocated under the pass
    assert segmented.pool.generation > generation
    logits = forward.finish()
    refs = [whole.new_sequence() for _ in range(2)]
    for i, ref in enumerate(refs):
        whole.extend(ref, prompt(8 + i, i))
    np.testing.assert_array_equal(logits, whole.step(refs, [11, 12]))
    # And the cache the pass wrote survived the move: the next step still agrees.
    np.testing.assert_array_equal(paced_step(segmented, seqs, [13, 14]), whole.step(refs, [13, 14]))
    assert all(len(seq) == 0 for seq in extra)


def test_a_cancelled_pass_leaves_the_cache_as_it_was(tiny_bundle):
    segmented, whole = engines(tiny_bundle)
    seq, ref = segmented.new_sequence(), whole.new_sequence()
    segmented.extend(seq, prompt(12, 4))
    whole.extend(ref, prompt(12, 4))
    forward = segmented.begin_extend(seq, prompt(7, 99))
    forward.advance()
    forward.advance()
    forward.cancel()
    assert len(seq) == 12 and not seq.busy and forward.done
    np.testing.assert_array_equal(paced_step(segmented, [seq], [42]), whole.step([ref], [42]))


def test_bundles_without_segments_run_whole(tiny_copy):
    manifest_path = tiny_copy / "manifest.msgpack"
    manifest = msgpack.unpackb(manifest_path.read_bytes())
    del manifest["model"]["segments"]
    manifest_path.write_bytes(msgpack.packb(manifest))
    bundle = read_bundle(tiny_copy)
    engine = FusedEngine(str(bundle.model_path), bundle.model)
    assert engine.paced == WHOLE and engine.open_graphs == [WHOLE]
    assert engine.extend(engine.new_sequence(), prompt(5, 1)).shape == (bundle.model.vocab_size,)


@pytest.mark.parametrize("damage", ["gap", "past_the_layers", "missing_file"])
def test_bad_segment_lists_are_refused(tiny_copy, damage):
    manifest_path = tiny_copy / "manifest.msgpack"
    manifest = msgpack.unpackb(manifest_path.read_bytes())
    segments = manifest["model"]["segments"]
    if damage == "gap":
        segments[1]["first_layer"] += 1
    elif damage == "past_the_layers":
        segments[-1]["end_layer"] = manifest["model"]["num_layers"] + 1
    else:
        (tiny_copy / segments[0]["file"]).unlink()
    manifest_path.write_bytes(msgpack.packb(manifest))
    with pytest.raises(BundleMissingError if damage == "missing_file" else BundleFormatError):
        read_bundle(tiny_copy)


def test_a_segment_that_does_not_follow_the_one_before_is_refused(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    first, *rest = bundle.model.segments
    swapped = dataclasses.replace(bundle.model, segments=(rest[0], first, *rest[1:]))
    with pytest.raises(BundleFormatError):
        FusedEngine(str(bundle.model_path), swapped)


def test_tick_mode_runs_segments_and_the_worker_runs_whole_passes(tiny_bundle):
    from lmpc_runtime import Runtime

    with Runtime() as ticked, Runtime(worker=True) as threaded:
        assert ticked.load_npc(tiny_bundle)._engine.open_graphs == [SEGMENTED]
        assert threaded.load_npc(tiny_bundle)._engine.open_graphs == [WHOLE]


def test_the_scheduler_sizes_passes_by_the_paced_graphs_segments(tiny_bundle):
    """A pass is sized so that each of its segments, not the whole pass, fits a frame's budget."""
    from lmpc_runtime import Runtime
    from lmpc_runtime.scheduler import _segments

    with Runtime() as ticked, Runtime(segmented=False) as whole:
        engine = ticked.load_npc(tiny_bundle)._engine
        assert _segments(engine) == len(engine.graph(SEGMENTED)) > 2
        assert _segments(whole.load_npc(tiny_bundle)._engine) == 1
