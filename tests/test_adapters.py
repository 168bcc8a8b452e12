"""Per-NPC LoRA adapters applied at run time (export/adapters.py, lmpc_runtime/adapters.py): on a tiny
model in float32, the base graph plus an adapter's tables gives the merged model's logits, a batch of
rows with different adapters gives each row what it gets alone, and bad adapters are refused clearly."""

import dataclasses
import json

import numpy as np
import pytest

from lmpc_runtime import AdapterError
from lmpc_runtime.adapters import read_adapter
from lmpc_runtime.bundle import GraphSegment
from lmpc_runtime.fused_engine import SEGMENTED, WHOLE, FusedEngine

RANK = 4


def prompt(n, start):
    return [(start + 37 * i) % 40000 + 100 for i in range(n)]


@dataclasses.dataclass
class Lora:
    base: FusedEngine  # the base weights, taking adapters
    merged: list  # per adapter: an engine on the weights with it merged in
    adapters: list  # per adapter: the runtime Adapter, attached to `base`
    files: list
    spec: object
    tmp: object


def _peft_adapter(checkpoint, out, seed, rank=RANK):
    """A random LoRA adapter on all seven projections (B not zero, unlike a fresh one, so it changes things)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(3.0)  # big enough to change the tiny model's greedy tokens
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_bundle):
    pytest.importorskip("peft")
    import shutil

    from lmpc_export import checkpoint as ckpt
    from lmpc_export import fused_graph, segments
    from lmpc_export.adapters import low_rank_tables, write_tables
    from lmpc_export.build import model_spec
    from lmpc_export.tiny import make_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("lora")
    shutil.copyfile(tiny_bundle / "tokenizer.json", tmp / "tokenizer.json")
    checkpoint = make_tiny_checkpoint(tmp / "checkpoint", tmp / "tokenizer.json", seed=3)
    config = json.loads((checkpoint / "config.json").read_text())
    fp32 = fused_graph.VARIANTS["fp32"]
    base_path = fused_graph.export_fused(checkpoint, tmp / "base" / "model.onnx", fp32, lora_rank=RANK)
    pieces = segments.write_segments(base_path, base_path.parent, config["num_hidden_layers"], 1, 2)
    spec = dataclasses.replace(model_spec(config, fused_graph.LAYOUT, base_path.name, "", 1024), lora_rank=RANK,
                               segments=tuple(GraphSegment(p.file, "", p.first_layer, p.end_layer) for p in pieces))
    base = FusedEngine(str(base_path), spec)
    merged, adapters, files = [], [], []
    for k, seed in enumerate((11, 12)):
        peft_dir = _peft_adapter(checkpoint, tmp / f"adapter{k}", seed)
        model, _ = ckpt.load_checkpoint(checkpoint)
        ckpt.merge_adapter(model, peft_dir).save_pretrained(tmp / f"merged{k}")
        (tmp / f"merged{k}" / "config.json").write_text((checkpoint / "config.json").read_text())
        path = fused_graph.export_fused(tmp / f"merged{k}", tmp / f"merged{k}" / "model.onnx", fp32)
        merged.append(FusedEngine(str(path), model_spec(config, fused_graph.LAYOUT, path.name, "", 1024)))
        files.append(write_tables(low_rank_tables(peft_dir, config, RANK), tmp / f"adapter{k}.lora"))
        adapters.append(base.attach_adapter(read_adapter(files[-1])))
    return Lora(base, merged, adapters, files, spec, tmp)


def _teacher_forced(engine, seq, tokens):
    """Logits after a prefill and after each of the following tokens, fed one at a time."""
    out = [engine.extend(seq, tokens[:20])]
    out += [engine.extend(seq, [token]) for token in tokens[20:]]
    return np.stack(out)


def test_the_base_graph_with_an_adapter_gives_the_merged_models_logits(lora):
    tokens = prompt(32, 1)
    for adapter, merged in zip(lora.adapters, lora.merged):
        theirs = _teacher_forced(merged, merged.new_sequence(), tokens)
        ours = _teacher_forced(lora.base, lora.base.new_sequence(adapter=adapter), tokens)
        np.testing.assert_allclose(ours, theirs, atol=5e-4)  # the same sums in another order
    plain = _teacher_forced(lora.base, lora.base.new_sequence(), tokens)
    assert np.abs(plain - ours).max() > 1.0, "the adapter must change the model for this test to mean anything"


@pytest.mark.parametrize("graph", [WHOLE, SEGMENTED])
def test_a_batch_of_different_adapters_gives_each_row_what_it_gets_alone(lora, graph):
    engine, (first, second) = lora.base, lora.adapters
    rows = [first, None, second, first]
    batch = [engine.new_sequence(adapter=a) for a in rows]
    alone = [engine.new_sequence(adapter=a) for a in rows]
    for i, (seq, solo) in enumerate(zip(batch, alone)):
        engine.begin_extend(seq, prompt(6 + 3 * i, i), graph).finish()
        engine.begin_extend(solo, prompt(6 + 3 * i, i), graph).finish()
    for step in range(5):
        tokens = [100 + step, 200 + step, 300 + step, 400 + step]
        together = engine.begin_step(batch, tokens, graph).finish()
        for row, (solo, token) in enumerate(zip(alone, tokens)):
            np.testing.assert_allclose(together[row], engine.begin_step([solo], [token], graph).finish()[0],
                                       atol=1e-4)
    # Then the same sequences batched again with one adapter for all: the single-adapter feed is bound.
    same = [engine.new_sequence(adapter=second) for _ in range(2)]
    logits = engine.begin_step(same, [5, 5], graph).finish()
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_a_persona_prefix_is_cached_per_adapter(lora):
    engine, adapter = lora.base, lora.adapters[0]
    persona = prompt(12, 9)
    with_adapter = engine.new_sequence(persona, adapter)
    without = engine.new_sequence(persona)
    assert engine.prefixes.holds(persona, adapter) and engine.prefixes.holds(persona)
    assert with_adapter.adapter is adapter and without.adapter is None
    a, b = engine.extend(with_adapter, [7]), engine.extend(without, [7])
    fresh = engine.new_sequence(adapter=adapter)
    np.testing.assert_allclose(a, engine.extend(fresh, persona + [7]), atol=1e-4)
    assert np.abs(a - b).max() > 1.0
    assert engine.new_sequence(persona, adapter).fork().adapter is adapter


def test_the_same_adapter_file_loaded_twice_is_one_adapter(lora):
    again = lora.base.attach_adapter(read_adapter(lora.files[0]))
    assert again is lora.adapters[0]


def test_an_adapter_file_is_read_table_by_table_never_mapped(lora):
    """A mapped file's pages count in the game's memory: attaching must not hold the file beside its copy."""
    from pathlib import Path

    read = read_adapter(lora.files[0])
    tables = [read.tables[name] for name in read.names()]
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tables)
    assert str(Path(lora.files[0]).resolve()) not in Path("/proc/self/maps").read_text()


def test_bad_adapters_are_refused_with_a_clear_error(lora, tmp_path):
    from lmpc_export.adapters import LowRankTables, write_tables

    tables = dict(read_adapter(lora.files[0]).tables)
    smaller = {name: table[: table.shape[0] // 2] for name, table in tables.items()}
    with pytest.raises(AdapterError, match="does not fit this model"):
        lora.base.attach_adapter(read_adapter(write_tables(LowRankTables(smaller, RANK // 2, {}), tmp_path / "r2.lora")))
    del tables[sorted(tables)[0]]
    with pytest.raises(AdapterError, match="missing"):
        lora.base.attach_adapter(read_adapter(write_tables(LowRankTables(tables, RANK, {}), tmp_path / "part.lora")))
    corrupt = tmp_path / "corrupt.lora"
    corrupt.write_bytes(lora.files[0].read_bytes()[:3000])
    with pytest.raises(AdapterError, match="truncated"):
        read_adapter(corrupt)
    (tmp_path / "foreign.lora").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(AdapterError, match="not an LMPC adapter file"):
        read_adapter(tmp_path / "foreign.lora")
    huge = tmp_path / "huge.lora"
    huge.write_bytes(b"LMPCLORA" + (1 << 31).to_bytes(4, "little"))
    with pytest.raises(AdapterError, match="header of"):
        read_adapter(huge)
    with pytest.raises(AdapterError, match="cannot read"):
        read_adapter(tmp_path / "absent.lora")
    with pytest.raises(AdapterError, match="sha256"):
        read_adapter(lora.files[0], expected_sha256="0" * 64)
    good = {name: np.array(table) for name, table in read_adapter(lora.files[0]).tables.items()}
    first = sorted(good)[0]
    with pytest.raises(AdapterError, match="not a LoRA table"):
        read_adapter(write_tables(LowRankTables({**good, "weights": good[first]}, RANK, {}), tmp_path / "odd.lora"))
    nan = write_tables(LowRankTables({**good, first: good[first] * np.nan}, RANK, {}), tmp_path / "nan.lora")
    with pytest.raises(AdapterError, match="NaN"):  # found while attaching, table by table
        lora.base.attach_adapter(read_adapter(nan))
    # The failed attachment left the live adapters as they were.
    assert lora.base.attach_adapter(read_adapter(lora.files[0])) is lora.adapters[0]
    plain = lora.merged[0]  # a model exported without LoRA inputs
    with pytest.raises(AdapterError, match="without LoRA inputs"):
        plain.attach_adapter(lora.adapters[0])


def test_an_adapter_of_higher_rank_is_cut_to_the_graphs_rank_and_says_what_it_kept(lora):
    from lmpc_export.adapters import low_rank_tables

    config = json.loads((lora.tmp / "checkpoint" / "config.json").read_text())
    cut = low_rank_tables(lora.tmp / "adapter0", config, RANK // 2)
    assert cut.tables["lora_a.0.qkv"].shape == (3 * RANK // 2, config["hidden_size"])
    assert all(0.3 < share < 1.0 for share in cut.kept.values()), cut.kept
    assert low_rank_tables(lora.tmp / "adapter0", config, RANK).kept == dict.fromkeys(cut.kept, 1.0)


@pytest.fixture(scope="module")
def village(lora, tmp_path_factory):
    """Two bundles built with run-time adapters on one tiny base (int8, as shipped), and the build's log."""
    from lmpc_export.build import prepare_adapter, prepare_model, write_bundle
    from lmpc_export.embedder import prepare_embedder
    from lmpc_export.tiny import make_tiny_bert
    from lmpc_runtime.sheet import load_sheet

    from conftest import ORLANDO_SHEET, TINY_BUNDLE

    tmp = tmp_path_factory.mktemp("village")
    log = []
    entry = prepare_model(lora.tmp / "checkpoint", tmp / "cache", log.append, context_length=1024, lora_rank=RANK)
    bert = make_tiny_bert(tmp / "tiny-bert", TINY_BUNDLE / "embedder_tokenizer.json", seed=7)
    embedder_entry = prepare_embedder(tmp / "cache", log.append, source=bert, name="tiny-bert")
    sheet = load_sheet(ORLANDO_SHEET)
    bundles = []
    for k in range(2):
        adapter_entry = prepare_adapter(lora.tmp / f"adapter{k}", entry, tmp / "cache", log.append)
        bundles.append(write_bundle(sheet, entry, embedder_entry, tmp / "npcs" / f"npc{k}.lmpc", context_length=1024,
                                    adapter_entry=adapter_entry))
    return bundles, entry, log


def test_bundles_with_runtime_adapters_share_one_base_beside_them(village):
    from lmpc_runtime import read_bundle

    (first, second), entry, log = village
    a, b = read_bundle(first), read_bundle(second)
    assert a.model_dir == b.model_dir == first.parent / f"{entry.name}.lmpcbase"
    assert not (first / "model.onnx").exists() and (a.model_dir / "model.onnx.data").is_file()
    assert a.model.lora_rank == RANK and a.adapter.rank == RANK and a.adapter.sha256 != b.adapter.sha256
    parity = a.report["adapter"]["parity"]
    assert parity["top1_agreement"] >= 0.85 and a.report["adapter"]["kept"] == dict.fromkeys(
        ("qkv", "o", "gate_up", "down"), 1.0)
    assert any("+adapter: max |Δlogit|" in line for line in log)


def test_npcs_with_different_adapters_run_on_one_engine_and_differ(village):
    from lmpc_runtime import Runtime, SamplingConfig
    from lmpc_runtime.reply import DONE

    (first, second), _, _ = village
    greedy = SamplingConfig(temperature=0.0, max_tokens=12)
    with Runtime(seed=0) as rt:
        npcs = [rt.load_npc(path, sampling=greedy) for path in (first, second, first)]
        assert len(rt._engines) == 1
        assert npcs[0].adapter is npcs[2].adapter and npcs[0].adapter is not npcs[1].adapter
        replies = [[e for e in npc.ask("Who are you?") if e.kind == DONE][0].text for npc in npcs]
    assert replies[0] == replies[2] != replies[1]


def test_a_save_names_its_adapter_and_another_adapters_npc_refuses_it(village, tmp_path):
    from lmpc_runtime import Runtime, SaveMismatchError
    from lmpc_runtime.bundle import read_bundle

    (first, second), _, _ = village
    # The second bundle, renamed to the first's character name, so only the adapter differs.
    with Runtime(seed=0) as rt:
        npc = rt.load_npc(first)
        list(npc.ask("Hello"))
        npc.save(tmp_path / "a.sav", include_kv=True)
        rt.load_npc(first).load(tmp_path / "a.sav")  # the same adapter: fine
        other = rt.load_npc(second)
        assert read_bundle(second).name == read_bundle(first).name
        with pytest.raises(SaveMismatchError, match="adapter"):
            other.load(tmp_path / "a.sav")


def test_a_bundle_whose_base_is_missing_says_so(village, tmp_path):
    import shutil

    from lmpc_runtime import BundleMissingError, read_bundle

    (first, _), _, _ = village
    alone = tmp_path / "npc.lmpc"
    shutil.copytree(first, alone)
    with pytest.raises(BundleMissingError, match="base model .* is not beside it"):
        read_bundle(alone)


def _variant(lora, k, scale, fingerprint):
    """Adapter k's tables scaled, under another fingerprint: a new adapter for the pool."""
    from lmpc_runtime.adapters import AdapterTables

    read = read_adapter(lora.files[k])
    return AdapterTables(fingerprint, fingerprint, {n: t * scale for n, t in read.tables.items()})


def test_the_pool_grows_and_reuses_freed_slots_without_disturbing_live_adapters(lora):
    import gc

    engine, first = lora.base, lora.adapters[0]
    seq = engine.new_sequence(adapter=first)
    before = engine.extend(seq, prompt(10, 4))
    slots = engine.lora.slots
    extras = []
    while engine.lora.slots == slots:  # fill any free slot, then one more: the pool's arrays move
        extras.append(engine.attach_adapter(_variant(lora, 1, 0.5, f"extra{len(extras)}")))
    assert engine.lora.slots == 2 * slots and extras[-1].slot == slots
    np.testing.assert_allclose(engine.extend(seq, [9]), engine.extend(engine.new_sequence(adapter=first),
                                                                       prompt(10, 4) + [9]), atol=1e-4)
    freed = extras.pop().slot
    gc.collect()
    again = engine.attach_adapter(_variant(lora, 0, 0.25, "again"))
    assert again.slot == freed and engine.lora.slots == 2 * slots  # the freed slot, no growth
    assert np.abs(engine.extend(engine.new_sequence(adapter=again), prompt(10, 4)) - before).max() > 0.1
    # A batch over slots far apart (first .. again) still gives each row its own adapter.
    rows = [engine.new_sequence(adapter=a) for a in (first, None, again)]
    alone = [engine.extend(engine.new_sequence(adapter=a), prompt(8, 2)) for a in (first, None, again)]
    for seq_ in rows:
        engine.extend(seq_, prompt(7, 2))
    together = engine.step(rows, [prompt(8, 2)[-1]] * 3)
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-4)


def test_the_adapters_benchmark_measures_a_village(village):
    """benchmarks/adapters.py's children on the tiny village (in this process), summarised and tabled."""
    from benchmarks import adapters as bench

    (first, second), _, _ = village
    talk = bench.child("talk", [str(first), str(second), str(first)])
    assert talk["engines"] == 1 and len(talk["load_s"]) == 3 and talk["peak_rss_mb"] > 0
    runs = {label: [talk] for label in ("talk, one NPC, adapter", "talk, three NPCs, three adapters, one engine",
                                        "talk, one NPC, merged", "talk, three NPCs, merged, three engines")}
    for label, bundles in (("decode, one NPC, adapter", [first]), ("decode, one NPC, merged", [first]),
                           ("decode, 4 NPCs, 4 different adapters", [first, second, first, second]),
                           ("decode, 4 NPCs, one adapter", [first] * 4)):
        runs[label] = [bench.child("decode", [str(b) for b in bundles])]
        assert runs[label][0]["tokens_per_s"] > 0
    table = bench.markdown({"date": "today", "machine": "here", "village": "v", "merged": "m", "reps": 1,
                            "summary": bench.summarise(runs)})
    assert "One NPC with its adapter against the merged model" in table and "1.00 [1.00–1.00]×" in table


def test_the_reference_engine_refuses_an_adapter(tiny_graphs, lora):
    from lmpc_runtime import StateError
    from lmpc_runtime.engine import ReferenceEngine

    engine = ReferenceEngine(str(tiny_graphs.reference), tiny_graphs.reference_spec)
    with pytest.raises(StateError, match="takes no adapters"):
        engine.new_sequence(prompt(3, 1), lora.adapters[0])
    with pytest.raises(StateError, match="takes no adapters"):
        engine.load_kv([], np.zeros((2 * tiny_graphs.reference_spec.num_layers, 1, 0, 16), np.float32),
                       lora.adapters[0])


def test_the_int8_tables_benchmark_rewrites_the_base_and_times_each_graph(village, tmp_path):
    """benchmarks/lora_int8.py on the tiny village: each rewrite loads with int8 tables in place of the float
    ones (and a scale per row where it dequantises), and every contender's child gives a speed (in this
    process), tables of rank 1 included, as does the one-product timing of the int8 kernel."""
    import onnxruntime as ort

    from benchmarks import lora_int8 as bench
    from lmpc_runtime import read_bundle

    bundle = read_bundle(village[0][0])
    folder = bundle.model_path.parent
    rewritten = [bench.rewrite_for_int8(bundle.model_path, RANK, folder / "int8-test.onnx"),
                 bench.rewrite_for_conversion(bundle.model_path, folder / "cast-test.onnx", "Cast", "Cast"),
                 bench.rewrite_for_conversion(bundle.model_path, folder / "dq-test.onnx", "Cast", "DequantizeLinear")]
    try:
        dqmm, cast, dequantized = ({i.name: i.type for i in ort.InferenceSession(str(path)).get_inputs()}
                                   for path in rewritten)
        assert not any(n.startswith("lora_") for n in dqmm)
        assert dqmm["int8_lora_a.0.qkv"] == "tensor(int8)" and dqmm["int8_scale.0.qkv"] == "tensor(float)"
        assert cast["lora_a.0.qkv"] == cast["lora_b.0.qkv"] == "tensor(int8)" and cast["lora_mask.3"] == "tensor(float)"
        assert not any(n.startswith("dq_scale.") for n in cast)
        assert dequantized["lora_b.0.qkv"] == "tensor(int8)" and dequantized["dq_scale.lora_b.0.qkv"] == "tensor(float)"
        assert "dq_scale.lora_a.0.qkv" not in dequantized
        for model in (bundle.model_path, *rewritten):
            for batch, adapters in ((1, 1), (4, 4), (4, 1)):
                assert bench.child(str(model), RANK, batch, adapters)["tokens_per_s"] > 0
        assert bench.child(str(bundle.model_path), 1, 1, 1)["tokens_per_s"] > 0
        assert bench.int8_product_us(True, k=64, n=32, runs=3) > 0 and bench.int8_product_us(False, k=64, n=32, runs=3) > 0
    finally:
        for path in rewritten:
            path.unlink()
