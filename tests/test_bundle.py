import msgpack
import pytest

from lmpc_runtime import (
    BundleFormatError,
    BundleIntegrityError,
    BundleMissingError,
    BundleVersionError,
    Runtime,
    read_bundle,
)
from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest, sha256_file


def edit_manifest(bundle, change):
    path = bundle / MANIFEST_NAME
    manifest = msgpack.unpackb(path.read_bytes())
    change(manifest)
    path.write_bytes(pack_manifest(manifest))


def test_tiny_bundle_reads(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    assert bundle.character.name == "Orlando Marlo"
    assert bundle.special.im_end == 2
    assert bundle.special.im_start not in (bundle.special.im_end,)
    assert bundle.special.im_start in bundle.special.banned
    assert bundle.model.layout == "lmpc-gqa" and bundle.report["export"]["variant"] == "int8"
    assert {p["variant"] for p in bundle.report["parity"]} == {"fp32", "int8", "int8-b16", "int4"}


def test_missing_directory_manifest_and_model(tmp_path, tiny_copy):
    with pytest.raises(BundleMissingError, match="no such bundle"):
        read_bundle(tmp_path / "absent.lmpc")
    (tiny_copy / "model.onnx").unlink()
    with pytest.raises(BundleMissingError, match="model.onnx, which is missing"):
        read_bundle(tiny_copy)
    (tiny_copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleMissingError, match="no manifest.msgpack"):
        read_bundle(tiny_copy)


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data"])
def test_swapped_or_damaged_model_fails_the_hash(tiny_copy, name):
    model = tiny_copy / name
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        read_bundle(tiny_copy)
    # The caller may skip hashing (trusted files), and then the damage goes unnoticed by the reader.
    read_bundle(tiny_copy, verify=False)


def test_newer_format_version(tiny_copy):
    edit_manifest(tiny_copy, lambda m: m.update(format_version=99))
    with pytest.raises(BundleVersionError, match="newer than this runtime"):
        read_bundle(tiny_copy)


def test_a_bundle_from_before_memory_asks_for_a_rebuild(tiny_copy):
    edit_manifest(tiny_copy, lambda m: m.update(format_version=1))
    with pytest.raises(BundleVersionError, match="older than this runtime reads.*rebuild it with `lmpc build`"):
        read_bundle(tiny_copy)


@pytest.mark.parametrize("name", ["embedder.onnx", "embedder_tokenizer.json", "memories.msgpack"])
def test_memory_files_are_hash_checked(tiny_copy, name):
    path = tiny_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=name):
        read_bundle(tiny_copy)


def test_memories_file_must_hold_what_the_manifest_promises(tiny_copy):
    edit_manifest(tiny_copy, lambda m: m["memories"].update(count=m["memories"]["count"] + 1))
    with Runtime() as rt, pytest.raises(BundleFormatError, match="memories the manifest promises"):
        rt.load_npc(tiny_copy)


@pytest.mark.parametrize("payload", [b"\xc1garbage", b"\x92\x01", b"\x81\xa1a\xc1", b""])
def test_malformed_msgpack(tiny_copy, payload):
    (tiny_copy / MANIFEST_NAME).write_bytes(payload)
    with pytest.raises(BundleFormatError):
        read_bundle(tiny_copy)


def test_oversized_manifest(tiny_copy):
    (tiny_copy / MANIFEST_NAME).write_bytes(b"\x00" * (17 * 1024 * 1024))
    with pytest.raises(BundleFormatError, match="at most"):
        read_bundle(tiny_copy)


def test_oversized_string_inside_a_small_file_is_not_allocated(tiny_copy):
    # A str32 header that claims 4 GB, followed by nothing.
    (tiny_copy / MANIFEST_NAME).write_bytes(b"\xdb\xff\xff\xff\xff")
    with pytest.raises(BundleFormatError):
        read_bundle(tiny_copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("model"), "missing field 'model'"),
    (lambda m: m["model"].update(num_layers="2"), "model.num_layers' has the wrong type"),
    (lambda m: m["model"].update(layout="mystery"), "layout 'mystery'"),
    (lambda m: m["model"].update(file="../../etc/passwd"), "plain name inside the bundle"),
    (lambda m: m["model"].update(data_file="/etc/passwd"), "plain name inside the bundle"),
    (lambda m: m["special_tokens"].update(im_end=10**9), "inside the vocabulary"),
    (lambda m: m["sampling"].update(temperature=-1), "bad sampling"),
    (lambda m: m.pop("embedder"), "missing field 'embedder'"),
    (lambda m: m["embedder"].update(dim=0), "out of range"),
    (lambda m: m["memories"].update(file="../memories.msgpack"), "plain name inside the bundle"),
    (lambda m: m["character"].pop("name"), "bad sampling or character"),
    (lambda m: m.update(format="something-else"), "not an LMPC bundle"),
])
def test_malformed_fields(tiny_copy, change, message):
    edit_manifest(tiny_copy, change)
    with pytest.raises(BundleFormatError, match=message):
        read_bundle(tiny_copy)


@pytest.mark.parametrize("piece", ["whole", 0, -1])
def test_model_without_the_promised_inputs(tiny_copy, piece):
    """A graph (the whole model, or one of its segments) that loads but has other inputs than the manifest
    promises is refused at load time."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["logits"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )
    model, edit = _model_piece(tiny_copy, piece)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    edit_manifest(tiny_copy, edit)
    with Runtime() as rt, pytest.raises(BundleFormatError, match="inputs do not match"):
        rt.load_npc(tiny_copy)


def _model_piece(bundle, piece):
    """The whole graph's file or a segment's, and the manifest edit that re-hashes it after it is replaced."""
    if piece == "whole":
        model = bundle / "model.onnx"
        return model, lambda m: m["model"].update(sha256=sha256_file(model), segments=[])
    model = bundle / read_bundle(bundle).model.segments[piece].file
    return model, lambda m: m["model"]["segments"][piece].update(sha256=sha256_file(model))


@pytest.mark.parametrize("piece", ["whole", 1])
def test_garbage_model_file(tiny_copy, piece):
    model, edit = _model_piece(tiny_copy, piece)
    model.write_bytes(b"not an onnx file at all")
    edit_manifest(tiny_copy, edit)
    with Runtime() as rt, pytest.raises(BundleFormatError, match="cannot load the model"):
        rt.load_npc(tiny_copy)


def test_an_embedder_that_is_not_a_sentence_encoder(tiny_copy):
    embedder = tiny_copy / "embedder.onnx"
    embedder.write_bytes((tiny_copy / "model.onnx").read_bytes())
    edit_manifest(tiny_copy, lambda m: m["embedder"].update(sha256=sha256_file(embedder)))
    with Runtime() as rt, pytest.raises(BundleFormatError, match="not a sentence encoder"):
        rt.load_npc(tiny_copy)
