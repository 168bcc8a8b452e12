"""The offline toolchain end to end on a fresh tiny random checkpoint: export, int8, parity, bundle."""

import json
import shutil

import pytest

from lmpc_runtime import Runtime, read_bundle
from lmpc_runtime.reply import DONE

from conftest import ORLANDO_SHEET, TINY_BUNDLE

pytest.importorskip("torch")
pytest.importorskip("optimum")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from lmpc_export.build import prepare_model
    from lmpc_export.tiny import make_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("export")
    shutil.copyfile(TINY_BUNDLE / "tokenizer.json", tmp / "tokenizer.json")
    checkpoint = make_tiny_checkpoint(tmp / "tiny-llama", tmp / "tokenizer.json", seed=7)
    log = []
    entry = prepare_model(checkpoint, tmp / "cache", log.append, context_length=1024)
    return checkpoint, entry, tmp, log


@pytest.fixture(scope="module")
def embedder_exported(exported):
    from lmpc_export.embedder import prepare_embedder
    from lmpc_export.tiny import make_tiny_bert

    _, _, tmp, _ = exported
    bert = make_tiny_bert(tmp / "tiny-bert", TINY_BUNDLE / "embedder_tokenizer.json", seed=7)
    log = []
    return bert, prepare_embedder(tmp / "cache", log.append, source=bert, name="tiny-bert"), log


def test_export_writes_a_parity_checked_fused_int8_model(exported):
    _, entry, _, log = exported
    report = json.loads((entry / "export.json").read_text())
    assert report["layout"] == "lmpc-gqa" and report["variant"] == "int8"
    variants = {p["variant"]: p for p in report["parity"]}
    assert set(variants) == {"fp32", "int8", "int8-b16", "int4"}
    assert variants["fp32"]["max_logit_diff"] < 1e-3 and variants["fp32"]["top1_agreement"] == 1.0
    assert variants["int8"]["top1_agreement"] >= 0.85
    # Only the shipped model stays: the other variants were measured, then removed.
    assert sorted(p.name for p in entry.iterdir()) == ["checkpoint", "export.json", "model.onnx", "model.onnx.data"]
    assert any("fused graph (int4 weights)" in line for line in log)


def test_the_reference_layout_still_exports_and_talks(exported, embedder_exported):
    from lmpc_export.build import prepare_model, write_bundle
    from lmpc_runtime.engine import ReferenceEngine
    from lmpc_runtime.sheet import load_sheet

    checkpoint, _, tmp, _ = exported
    log = []
    entry = prepare_model(checkpoint, tmp / "cache", log.append, context_length=1024, layout="optimum-kv-concat")
    report = json.loads((entry / "export.json").read_text())
    assert report["layout"] == "optimum-kv-concat" and {p["variant"] for p in report["parity"]} == {"fp32", "int8"}
    assert any("quantising" in line for line in log) and not (entry / "onnx-fp32").exists()
    out = write_bundle(load_sheet(ORLANDO_SHEET), entry, embedder_exported[1], tmp / "reference.lmpc",
                       context_length=1024)
    with Runtime() as rt:
        npc = rt.load_npc(out, seed=0)
        assert type(npc._engine) is ReferenceEngine
        assert [e for e in npc.ask("Hello") if e.kind == DONE][0].text


def test_a_second_export_of_the_same_weights_is_cached(exported):
    from lmpc_export.build import prepare_model

    checkpoint, entry, tmp, _ = exported
    log = []
    assert prepare_model(checkpoint, tmp / "cache", log.append) == entry
    assert log == [f"model: cached ({entry})"]


def test_the_normalised_tokenizer_ends_turns_with_im_end_and_pads_apart(exported):
    from transformers import AutoTokenizer

    _, entry, _, _ = exported
    tok = AutoTokenizer.from_pretrained(entry / "checkpoint")
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok("Hello").input_ids == tok("Hello", add_special_tokens=False).input_ids


def test_embedder_export_is_parity_checked_int8_and_cached(exported, embedder_exported):
    from lmpc_export.embedder import prepare_embedder

    bert, entry, log = embedder_exported
    report = json.loads((entry / "embedder.json").read_text())
    assert report["dim"] == 32 and report["max_tokens"] == 128 and report["name"] == "tiny-bert"
    assert report["parity"]["int8"]["min_cosine"] >= 0.99 and report["parity"]["int8"]["texts"] >= 10
    assert any("quantising" in line for line in log)
    # int8 weights: the file is about a quarter of the float32 word-embedding table alone.
    assert (entry / "embedder.int8.onnx").stat().st_size < 30522 * 32 * 4 / 2
    again = []
    assert prepare_embedder(exported[2] / "cache", again.append, source=bert) == entry
    assert again == [f"embedder: cached ({entry})"]


def test_bundle_from_the_export_loads_and_talks(exported, embedder_exported):
    from lmpc_export.build import write_bundle
    from lmpc_runtime.sheet import load_sheet

    _, entry, tmp, _ = exported
    _, embedder_entry, _ = embedder_exported
    out = write_bundle(load_sheet(ORLANDO_SHEET), entry, embedder_entry, tmp / "orlando.lmpc", context_length=1024)
    bundle = read_bundle(out)
    assert bundle.model.context_length == 1024 and bundle.persona.shots
    assert bundle.embedder.dim == 32 and bundle.memories.count > 50
    with Runtime() as rt:
        npc = rt.load_npc(out, seed=0)
        assert len(npc.memories) == bundle.memories.count
        assert [e for e in npc.ask("Hello") if e.kind == DONE][0].text
    # Writing again replaces the bundle in place.
    write_bundle(load_sheet(ORLANDO_SHEET), entry, embedder_entry, out, context_length=1024)
    assert read_bundle(out).model.sha256 == bundle.model.sha256
    assert not list(tmp.glob(".orlando.lmpc*"))


def test_the_writers_drills_are_cues_that_recall_their_statements_and_exchanges_the_prompt_shows(exported, embedder_exported):
    from lmpc_export.build import write_bundle
    from lmpc_export.knowledge import knowledge_file_for, load_knowledge
    from lmpc_export.memories import drill_exchanges, statement_ref
    from lmpc_runtime.sheet import load_sheet

    _, entry, tmp, _ = exported
    _, embedder_entry, _ = embedder_exported
    sheet = load_sheet(ORLANDO_SHEET)
    topics = load_knowledge(knowledge_file_for(ORLANDO_SHEET), sheet)
    out = write_bundle(sheet, entry, embedder_entry, tmp / "cued.lmpc", context_length=1024, knowledge=tuple(topics))
    with Runtime() as rt:
        npc = rt.load_npc(out, seed=0)
        # The tiny embedder knows no meaning and finds most texts alike (cosines near 0.9): without the
        # discount, a question still finds itself exactly among the cues.
        npc.memories.cue_discount = 0.0
        indexed = {statement_ref(m.source, sheet): m for m in npc.memories}
        covered: dict[str, set] = {}  # a question may be asked in several topics
        for topic in topics:
            for question in topic.questions:
                covered.setdefault(question, set()).update(topic.covers)
        asked = [(t, q) for t in topics if any(ref in indexed for ref in t.covers) for q in t.questions[:1]]
        assert len(asked) > 100
        for topic, question in asked:
            assert question in npc.memories.cues(indexed[next(r for r in topic.covers if r in indexed)].id)
            (memory, score), *_ = npc.recall(question)
            assert statement_ref(memory.source, sheet) in covered[question] and score > 0.99, question
        # The drills also ship whole: a drill's own question brings its exchange in as the turn before.
        question, answer = drill_exchanges(topics)[0]
        reply = npc.start_reply(question)
        assert f"user\n{question}\nassistant\n{answer}\n" in npc.chat.decode(list(reply.seq.tokens) + reply.todo)
        reply.cancel()
        npc.end_reply(reply)
    # A bundle built without them (`lmpc build --no-exchanges`) recalls none.
    bare = write_bundle(sheet, entry, embedder_entry, tmp / "bare.lmpc", context_length=1024, knowledge=tuple(topics),
                        exchanges=False)
    with Runtime() as rt:
        npc = rt.load_npc(bare, seed=0)
        reply = npc.start_reply(question)
        assert answer not in npc.chat.decode(list(reply.seq.tokens) + reply.todo)
        reply.cancel()


def test_a_character_card_builds_and_talks_as_it_is_and_its_lorebook_triggers(exported, embedder_exported):
    """A card gives a name, a few texts, examples and a lorebook, and none of the sheet's deeper fields."""
    from lmpc_export.build import write_bundle
    from lmpc_export.card import card_to_sheet
    from lmpc_runtime.sheet import parse_sheet

    from test_card import V2_CARD

    _, entry, tmp, _ = exported
    _, embedder_entry, _ = embedder_exported
    imported = card_to_sheet(V2_CARD)
    assert imported.problems == [] and imported.advice
    out = write_bundle(parse_sheet(imported.sheet), entry, embedder_entry, tmp / "wren.lmpc", context_length=1024)
    with Runtime() as rt:
        wren = rt.load_npc(out, seed=0)
        rt.set_fact(wren, "player.name", "Mira")
        assert "Mira" in wren.chat.decode(wren.persona_tokens)  # the scenario's {{user}}, resolved
        assert [e for e in wren.ask("Hello there.") if e.kind == DONE][0].text
        reply = wren.start_reply("Who runs the harbour guild?")
        prompt = wren.chat.decode(list(wren._seq.tokens) + list(reply.todo))  # the cached part, then the rest
        assert "The harbour guild owns every boat but Wren's." in prompt  # a keyed entry, triggered
        assert "The lamp burns whale oil; Wren Halloway hates the smell." in prompt  # the constant one
        reply.cancel()
        wren.end_reply(reply)


def test_bundles_of_different_weights_get_engines_of_their_own(exported, embedder_exported):
    """Fused graphs of two checkpoints of one architecture are the same file (the weights are in the data
    file): the runtime must not share one engine between them, or the second NPC would speak with the first
    one's weights. Here the second checkpoint differs only in its embedding (whose int8 scales, unlike a tiny
    model's other small tensors, go to the data file), as SmolLM2 fine-tunes differ in every weight."""
    from safetensors.numpy import load_file, save_file

    from lmpc_export.build import prepare_model, write_bundle
    from lmpc_runtime import SamplingConfig
    from lmpc_runtime.sheet import load_sheet

    checkpoint, entry, tmp, _ = exported
    shifted = tmp / "tiny-llama-shifted"
    shutil.copytree(checkpoint, shifted)
    weights = load_file(str(checkpoint / "model.safetensors"))
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"][::-1].copy()
    save_file(weights, str(shifted / "model.safetensors"))
    other = prepare_model(shifted, tmp / "cache", lambda _: None, context_length=1024)
    _, embedder_entry, _ = embedder_exported
    sheet = load_sheet(ORLANDO_SHEET)
    paths = [write_bundle(sheet, e, embedder_entry, tmp / f"weights{k}.lmpc", context_length=1024)
             for k, e in enumerate((entry, other))]
    first, second = (read_bundle(p).model for p in paths)
    assert first.sha256 == second.sha256 and first.data_sha256 != second.data_sha256
    greedy = SamplingConfig(temperature=0.0, max_tokens=8)
    with Runtime() as rt:
        npcs = [rt.load_npc(p, sampling=greedy) for p in paths]
        assert len(rt._engines) == 2 and npcs[0]._engine is not npcs[1]._engine
        replies = [[e for e in npc.ask("Hello") if e.kind == DONE][0] for npc in npcs]
    assert replies[0].text != replies[1].text
