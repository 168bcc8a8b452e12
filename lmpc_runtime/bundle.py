"""NPC bundles: a `<name>.lmpc/` directory with a versioned `manifest.msgpack` and the files it names:
the language model and its tokenizer, the sentence embedder and its tokenizer, and `memories.msgpack`,
the character's statements embedded at build time.

Reading a bundle trusts nothing: the manifest's size is capped before it is read, msgpack is unpacked
with explicit limits, every field is type-checked, and every file is checked against its sha256.
Each failure raises its own `BundleError` subclass with a message a game developer can act on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .chat import SpecialTokens
from .errors import BundleFormatError, BundleIntegrityError, BundleMissingError, BundleVersionError, LmpcError
from .sampling import SamplingConfig
from .sheet import CharacterSheet, sheet_from_dict

BUNDLE_FORMAT = "lmpc-bundle"
# 2: the sentence embedder and the embedded memories of the character.
BUNDLE_FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.msgpack"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_MEMORIES_BYTES = 256 * 1024 * 1024
# Graph layouts the engine knows how to drive (see engine.py).
KNOWN_LAYOUTS = ("optimum-kv-concat", "lmpc-gqa")


@dataclass(frozen=True)
class GraphSegment:
    """One piece of a model cut at layer boundaries: a graph running layers [first_layer, end_layer) (the
    first piece also embeds the tokens, the last one also computes the logits; see export/segments.py)."""

    file: str
    sha256: str
    first_layer: int
    end_layer: int


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about the ONNX graph to feed it."""

    file: str
    sha256: str
    layout: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    # The weights, when the graph keeps them in a file of their own (onnxruntime maps it into memory).
    data_file: str = ""
    data_sha256: str = ""
    # The same model as consecutive graphs that share the data file, so a forward pass can stop between
    # them (empty in bundles made before segments existed: the whole graph is then the only segment).
    segments: tuple[GraphSegment, ...] = ()
    # > 0: the graph takes per-NPC LoRA adapters of this rank at run time (see adapters.py).
    lora_rank: int = 0
    # Where the model's files are: "" in the bundle itself, else a directory beside the bundle holding a
    # base model that several bundles share (each carrying only its adapter).
    base_dir: str = ""

    @property
    def weights_id(self) -> tuple[str, str, str]:
        """What makes two models the same: the graph, the weights, the layout. Fused graphs of different
        weights are the same file (the weights are in the data file), so the graph's hash alone is not."""
        return self.sha256, self.data_sha256, self.layout


@dataclass(frozen=True)
class AdapterSpec:
    """The NPC's LoRA adapter, applied at run time on the shared base model (see adapters.py)."""

    file: str
    sha256: str
    rank: int


@dataclass(frozen=True)
class Persona:
    """The fixed start of every conversation: the system prompt and a few example exchanges."""

    system: str
    shots: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EmbedderSpec:
    """The sentence embedder's files and what the runtime needs to run it (see memory/embedder.py)."""

    file: str
    sha256: str
    tokenizer_file: str
    tokenizer_sha256: str
    dim: int
    max_tokens: int  # longer texts are cut (MiniLM was trained on at most 256 word pieces)
    # Cosine below which a memory is not worth recalling; it depends on the embedder (see export/embedder.py).
    min_score: float
    name: str = ""


@dataclass(frozen=True)
class MemoriesSpec:
    """The file of memories indexed at build time (see memory/store.py for its columns)."""

    file: str
    sha256: str
    count: int


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    model: ModelSpec
    tokenizer_file: str
    tokenizer_sha256: str
    special: SpecialTokens
    chat_format: str
    sampling: SamplingConfig
    character: CharacterSheet
    persona: Persona
    embedder: EmbedderSpec
    memories: MemoriesSpec
    report: dict[str, Any]
    manifest: dict[str, Any]
    adapter: AdapterSpec | None = None

    @property
    def model_dir(self) -> Path:
        return self.path.parent / self.model.base_dir if self.model.base_dir else self.path

    @property
    def model_path(self) -> Path:
        return self.model_dir / self.model.file

    @property
    def adapter_path(self) -> Path | None:
        return self.path / self.adapter.file if self.adapter is not None else None

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.tokenizer_file

    @property
    def embedder_path(self) -> Path:
        return self.path / self.embedder.file

    @property
    def embedder_tokenizer_path(self) -> Path:
        return self.path / self.embedder.tokenizer_file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Hashes of big files checked in this process, by identity (device, inode, size, change time): a base
# model shared by several bundles is hashed once, not at every NPC's load (150 MB take 0.3 s). Small
# files are always hashed: it costs nothing, and an edit within the clock's tick would go unseen.
_checked_hashes: dict[tuple[int, int, int, int], str] = {}
_REMEMBERED_BYTES = 16 << 20


def sha256_checked(path: Path) -> str:
    """sha256 of a file, remembered for big files by their identity (see _checked_hashes)."""
    st = path.stat()
    if st.st_size < _REMEMBERED_BYTES:
        return sha256_file(path)
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)
    digest = _checked_hashes.get(identity)
    if digest is None:
        digest = _checked_hashes[identity] = sha256_file(path)
    return digest


def pack_manifest(manifest: dict[str, Any]) -> bytes:
    return msgpack.packb(manifest, use_bin_type=True)


def unpack_limited(data: bytes, what: str, max_bytes: int,
                   error: type[LmpcError] = BundleFormatError) -> Any:
    """Unpack msgpack with every size limit set, so hostile input cannot allocate without bound.
    Raises `error` (BundleFormatError unless told otherwise) for oversized or malformed input."""
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=1_000_000,
            max_map_len=100_000,
            max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise error(f"{what} is not valid msgpack: {exc}") from exc


class _Fields:
    """Typed access to a decoded msgpack map; a wrong or missing field raises BundleFormatError."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise BundleFormatError(f"manifest: {where or 'top level'} must be a map")
        self.data, self.where = data, where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        path = f"{self.where}.{key}" if self.where else key
        if key not in self.data:
            if default is ...:
                raise BundleFormatError(f"manifest: missing field '{path}'")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleFormatError(f"manifest: field '{path}' has the wrong type ({type(value).__name__})")
        return value

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.get(key, dict), f"{self.where}.{key}" if self.where else key)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and unpack `manifest.msgpack` of a bundle directory (format checks only, no file hashes)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleMissingError(f"{path}: no such bundle directory")
    manifest_path = path / MANIFEST_NAME
    try:
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleFormatError(f"{manifest_path}: {size} bytes; a manifest may be at most {MAX_MANIFEST_BYTES}")
        data = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleMissingError(f"{path}: the bundle has no {MANIFEST_NAME}") from exc
    except OSError as exc:
        raise BundleMissingError(f"{manifest_path}: cannot read: {exc.strerror or exc}") from exc
    manifest = unpack_limited(data, str(manifest_path), MAX_MANIFEST_BYTES)
    top = _Fields(manifest, "")
    if top.get("format", str) != BUNDLE_FORMAT:
        raise BundleFormatError(f"{manifest_path}: not an LMPC bundle manifest")
    version = top.get("format_version", int)
    if version > BUNDLE_FORMAT_VERSION:
        raise BundleVersionError(
            f"{path}: bundle format {version} is newer than this runtime reads ({BUNDLE_FORMAT_VERSION}); "
            "update LMPC or rebuild the bundle"
        )
    if version < 1:
        raise BundleFormatError(f"{path}: invalid bundle format version {version}")
    if version < BUNDLE_FORMAT_VERSION:
        raise BundleVersionError(
            f"{path}: bundle format {version} is older than this runtime reads ({BUNDLE_FORMAT_VERSION}): "
            "it has no memory; rebuild it with `lmpc build`"
        )
    return manifest


MAX_FILE_NAME = 255  # bytes: what common file systems allow


def _check_plain_name(name: str, what: str, where: str) -> None:
    if os.sep in name or "/" in name or name in ("", ".", "..") or not name.isprintable() \
            or len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME:
        raise BundleFormatError(f"manifest: {what} {name[:80]!r} must be a plain name {where}")


def _checked_file(bundle_dir: Path, name: str, expected_sha256: str, verify: bool) -> None:
    _check_plain_name(name, "file name", "inside the bundle")
    path = bundle_dir / name
    try:
        present = path.is_file()
    except OSError as exc:  # e.g. a name the file system refuses
        raise BundleFormatError(f"{bundle_dir}: the manifest names {name!r}, which cannot be a file: {exc}") from exc
    if not present:
        raise BundleMissingError(f"{bundle_dir}: the manifest names {name}, which is missing")
    if verify and sha256_checked(path) != expected_sha256:
        raise BundleIntegrityError(
            f"{path}: sha256 does not match the manifest (the file was changed, swapped or damaged)"
        )


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and validate a bundle. `verify=False` skips the file hashes (never do so for untrusted files)."""
    path = Path(path)
    manifest = read_manifest(path)
    top = _Fields(manifest, "")
    m = top.sub("model")
    layout = m.get("layout", str)
    if layout not in KNOWN_LAYOUTS:
        raise BundleFormatError(f"{path}: model layout '{layout}' is not one this runtime can run")
    model = ModelSpec(
        file=m.get("file", str),
        sha256=m.get("sha256", str),
        layout=layout,
        num_layers=m.get("num_layers", int),
        num_kv_heads=m.get("num_kv_heads", int),
        head_dim=m.get("head_dim", int),
        vocab_size=m.get("vocab_size", int),
        context_length=m.get("context_length", int),
        data_file=m.get("data_file", str, ""),
        data_sha256=m.get("data_sha256", str, ""),
        segments=_segments(m),
        lora_rank=m.get("lora_rank", int, 0),
        base_dir=m.get("base_dir", str, ""),
    )
    if model.base_dir:
        _check_plain_name(model.base_dir, "model.base_dir", "of a directory beside the bundle")
    if model.lora_rank < 0 or (model.lora_rank and layout != "lmpc-gqa"):
        raise BundleFormatError(f"{path}: model.lora_rank {model.lora_rank} (only lmpc-gqa models take adapters)")
    for name, value in (("num_layers", model.num_layers), ("num_kv_heads", model.num_kv_heads),
                        ("head_dim", model.head_dim), ("vocab_size", model.vocab_size),
                        ("context_length", model.context_length)):
        if not 0 < value <= 1 << 20:
            raise BundleFormatError(f"manifest: model.{name} = {value} is out of range")
    t = top.sub("tokenizer")
    s = top.sub("special_tokens")
    special = SpecialTokens(
        im_start=s.get("im_start", int),
        im_end=s.get("im_end", int),
        banned=tuple(s.get("banned", list, [])),
    )
    if not all(isinstance(i, int) and 0 <= i < model.vocab_size for i in (special.im_start, special.im_end,
                                                                          *special.banned)):
        raise BundleFormatError("manifest: special token ids must be integers inside the vocabulary")
    p = top.sub("persona")
    shots = p.get("shots", list)
    if not all(isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in shots):
        raise BundleFormatError("manifest: persona.shots must be [player, npc] string pairs")
    e, et, mem = top.sub("embedder"), top.sub("embedder").sub("tokenizer"), top.sub("memories")
    embedder = EmbedderSpec(
        file=e.get("file", str),
        sha256=e.get("sha256", str),
        tokenizer_file=et.get("file", str),
        tokenizer_sha256=et.get("sha256", str),
        dim=e.get("dim", int),
        max_tokens=e.get("max_tokens", int),
        min_score=e.get("min_score", float),
        name=e.get("name", str, ""),
    )
    memories = MemoriesSpec(file=mem.get("file", str), sha256=mem.get("sha256", str), count=mem.get("count", int))
    if not 0 < embedder.dim <= 4096 or not 0 < embedder.max_tokens <= 8192 or not -1 <= embedder.min_score <= 1 \
            or not 0 <= memories.count <= 1_000_000:
        raise BundleFormatError("manifest: an embedder or memories field is out of range")
    try:
        sampling = SamplingConfig.from_dict(top.get("sampling", dict))
        character = sheet_from_dict(top.get("character", dict))
    except (LmpcError, TypeError, KeyError, AttributeError, ValueError) as exc:
        raise BundleFormatError(f"manifest: bad sampling or character section: {exc}") from exc
    bundle = Bundle(
        path=path,
        name=top.get("name", str),
        model=model,
        tokenizer_file=t.get("file", str),
        tokenizer_sha256=t.get("sha256", str),
        special=special,
        chat_format=top.get("chat_format", str),
        sampling=sampling,
        character=character,
        persona=Persona(system=p.get("system", str), shots=tuple((a, b) for a, b in shots)),
        embedder=embedder,
        memories=memories,
        report=top.get("report", dict, {}),
        manifest=manifest,
        adapter=_adapter(top, model),
    )
    if bundle.chat_format != "chatml":
        raise BundleFormatError(f"{path}: chat format '{bundle.chat_format}' is not supported (only chatml)")
    if model.base_dir and not bundle.model_dir.is_dir():
        raise BundleMissingError(f"{path}: its base model {model.base_dir} is not beside it in {path.parent}")
    _checked_file(bundle.model_dir, model.file, model.sha256, verify)
    if model.data_file:
        _checked_file(bundle.model_dir, model.data_file, model.data_sha256, verify)
    for segment in model.segments:
        _checked_file(bundle.model_dir, segment.file, segment.sha256, verify)
    if bundle.adapter is not None:
        _checked_file(path, bundle.adapter.file, bundle.adapter.sha256, verify)
    _checked_file(path, bundle.tokenizer_file, bundle.tokenizer_sha256, verify)
    _checked_file(path, embedder.file, embedder.sha256, verify)
    _checked_file(path, embedder.tokenizer_file, embedder.tokenizer_sha256, verify)
    _checked_file(path, memories.file, memories.sha256, verify)
    return bundle


def _adapter(top: _Fields, model: ModelSpec) -> AdapterSpec | None:
    if "adapter" not in top.data:
        return None
    a = top.sub("adapter")
    adapter = AdapterSpec(file=a.get("file", str), sha256=a.get("sha256", str), rank=a.get("rank", int))
    if adapter.rank != model.lora_rank:
        raise BundleFormatError(f"manifest: adapter.rank {adapter.rank} does not match the model's "
                                f"lora_rank {model.lora_rank}")
    return adapter


def _segments(model: _Fields) -> tuple[GraphSegment, ...]:
    """The model's segments, checked to cover its layers in order, each once."""
    entries = model.get("segments", list, [])
    segments = []
    for i, entry in enumerate(entries):
        f = _Fields(entry, f"model.segments[{i}]")
        segments.append(GraphSegment(f.get("file", str), f.get("sha256", str), f.get("first_layer", int),
                                     f.get("end_layer", int)))
    if segments:
        ends = [0] + [s.end_layer for s in segments]
        layers = model.get("num_layers", int)
        if any(s.first_layer != end or not s.first_layer <= s.end_layer <= layers
               for s, end in zip(segments, ends)) or ends[-1] != layers:
            raise BundleFormatError(f"manifest: model.segments do not cover layers 0..{layers} in order")
        if model.get("layout", str) != "lmpc-gqa":
            raise BundleFormatError("manifest: only the lmpc-gqa layout can be cut into segments")
    return tuple(segments)


def read_memories(bundle: Bundle) -> dict[str, Any]:
    """The columns of the bundle's memories file (checked further by MemoryStore.add_state)."""
    path = bundle.path / bundle.memories.file
    try:
        if path.stat().st_size > MAX_MEMORIES_BYTES:
            raise BundleFormatError(f"{path}: larger than {MAX_MEMORIES_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise BundleMissingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    state = unpack_limited(data, str(path), MAX_MEMORIES_BYTES)
    if not isinstance(state, dict) or len(state.get("ids", ())) != bundle.memories.count:
        raise BundleFormatError(f"{path}: not the {bundle.memories.count} memories the manifest promises")
    return state
