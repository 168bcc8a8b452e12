"""`lmpc build`: character sheet + model (+ LoRA adapter) → NPC bundle.

The model stages (checkpoint, ONNX export, int8, parity) depend only on the model, not on the
character, so their results are cached under the source's fingerprint (and the adapter's, when one is
merged in) and shared by every character built on the same weights; a second build of any character on
the base model takes seconds.

An adapter is merged at export by default: the bundle holds one plain model, the fastest for a game with
one character. With `runtime_adapter` the bundle carries only the adapter's tables (export/adapters.py)
and names a base model, exported once with LoRA inputs into a directory beside the bundles
(`<cache entry>.lmpcbase`): every NPC built so shares one engine and one copy of the weights.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import msgpack

from lmpc_runtime import __version__
from lmpc_runtime.adapters import FORMAT_VERSION as ADAPTER_FORMAT
from lmpc_runtime.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    MANIFEST_NAME,
    EmbedderSpec,
    GraphSegment,
    ModelSpec,
    pack_manifest,
    sha256_file,
)
from lmpc_runtime.chat import ChatFormat, SpecialTokens
from lmpc_runtime.errors import ExportError
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.persona import persona_text
from lmpc_runtime.sampling import SamplingConfig
from lmpc_runtime.sheet import CharacterSheet, load_sheet

from . import adapters
from . import checkpoint as ckpt
from . import fused_graph, onnx_export, parity, segments
from .dataset import persona_digest
from .embedder import prepare_embedder
from .bundle_files import ACTION_TEST, CALIBRATION_SET, EVAL_SET, PERSONA_TEST, REPORT_JSON, REPORT_MD
from .knowledge import Topic, knowledge_file_for, load_knowledge
from .dialogues import dialogue_file_for, load_dialogues
from .memories import action_cues, drill_exchanges, memories_state, sheet_statements, statement_cues

DEFAULT_CONTEXT = 2048
# Part of the model cache key: bump it whenever a change here alters the exported model.
EXPORT_VERSION = 2
LAYOUTS = (fused_graph.LAYOUT, "optimum-kv-concat")
DEFAULT_LAYOUT = fused_graph.LAYOUT
# The fused variant a bundle ships, chosen by measurement (benchmarks/results/engine.md): int8 weights
# with int8 activations keep top-1 agreement with the checkpoint where int4 loses some, at close speed.
SHIPPED_VARIANT = "int8"
EMBEDDER_FILE = "embedder.onnx"
EMBEDDER_TOKENIZER_FILE = "embedder_tokenizer.json"
MEMORIES_FILE = "memories.msgpack"
ADAPTER_FILE = "adapter.lora"
BASE_SUFFIX = ".lmpcbase"
# Fused models are also cut into segments (export/segments.py) so that a frame can stop between them:
# this many layers each, and the LM head in this many parts (each about a layer's work). Chosen by
# measurement on the busy 2-core machine (benchmarks/results/segments.md, scheduler.md): a one-layer
# segment of a decode step of four NPCs costs 1-1.5 ms, so a 4 ms budget fits two or three, and prefill
# chunks whose every segment fits the budget grow to 10-25 tokens (two-layer segments kept them at 4-8,
# where a pass is mostly fixed cost). Each segment adds its own ~0.1 ms, which is what more, smaller
# ones would multiply.
LAYERS_PER_SEGMENT = 1
HEAD_PARTS = 4
Log = Callable[[str], None]


# How a fine-tuned character samples: cooler than an untuned one (at 0.5 the demo NPC drifted off its
# facts in one reply of three; benchmarks/grounding.py), with the invented-name guard on (names.py) and
# the follower of the writer's recalled answer (following.py; 3 and 5 scored alike on the demo's persona
# test, and 3 leaves the model more of its own words).
TUNED_SAMPLING = SamplingConfig(temperature=0.3, name_penalty=3.0, follow_bonus=3.0)


def default_cache_dir() -> Path:
    if os.environ.get("LMPC_CACHE"):
        return Path(os.environ["LMPC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmpc"


def special_tokens(tokenizer_json: Path) -> SpecialTokens:
    """ChatML control ids, and every other special token, which the sampler must never emit."""
    state = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    specials = {t["content"]: t["id"] for t in state["added_tokens"] if t.get("special")}
    try:
        im_start, im_end = specials[ckpt.IM_START], specials[ckpt.IM_END]
    except KeyError as exc:
        raise ExportError(f"{tokenizer_json}: no {exc} token; the model does not speak ChatML") from exc
    return SpecialTokens(im_start=im_start, im_end=im_end, banned=tuple(sorted(set(specials.values()) - {im_end})))


def model_spec(config: dict, layout: str, file: str, sha256: str, context_length: int,
               lora_rank: int = 0) -> ModelSpec:
    heads = config["num_attention_heads"]
    return ModelSpec(
        file=file,
        sha256=sha256,
        layout=layout,
        num_layers=config["num_hidden_layers"],
        num_kv_heads=config.get("num_key_value_heads", heads),
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab_size=config["vocab_size"],
        context_length=min(context_length, config.get("max_position_embeddings", context_length)),
        lora_rank=lora_rank,
    )


# Each variant is a directory holding MODEL_FILE and, for the fused layout, its weights in DATA_FILE.
MODEL_FILE = "model.onnx"
DATA_FILE = fused_graph.data_path(Path(MODEL_FILE)).name


def _export_fused(checkpoint: Path, work: Path, log: Log, lora_rank: int = 0) -> dict[str, Path]:
    """Every fused variant (float32 as the graph's own parity baseline, int8, int4)."""
    weights = fused_graph.load_weights(checkpoint)
    models = {}
    for name, variant in fused_graph.VARIANTS.items():
        log(f"model: writing the fused graph ({name} weights)")
        models[name] = fused_graph.export_fused(checkpoint, work / name / MODEL_FILE, variant, weights, lora_rank)
    return models


def _export_optimum(checkpoint: Path, work: Path, log: Log) -> dict[str, Path]:
    """The reference layout: optimum's export, then its layer weights as MatMulNBits int8."""
    log("model: exporting to ONNX with KV cache (optimum, text-generation-with-past)")
    fp32 = onnx_export.export_fp32(checkpoint, work / "fp32")
    log("model: quantising weights to int8")
    (work / "int8").mkdir()
    return {"fp32": fp32, "int8": onnx_export.quantize_int8(fp32, work / "int8" / MODEL_FILE)}


def _adapter_json(adapter: Path, name: str) -> dict | None:
    path = adapter / name
    if not path.is_file():
        return None  # an adapter from elsewhere: nothing to check it against
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ExportError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def check_adapter_base(adapter: Path, base_fingerprint: str) -> None:
    """An adapter trained by `lmpc train` records its base model; merging it into another is refused."""
    trained_on = (_adapter_json(adapter, ckpt.ADAPTER_INFO) or {}).get("base_fingerprint", base_fingerprint)
    if trained_on != base_fingerprint:
        raise ExportError(f"{adapter} was trained on base model {trained_on}, "
                          f"not on this one ({base_fingerprint})")


def prepare_model(source: Path, cache_dir: Path, log: Log, context_length: int = DEFAULT_CONTEXT,
                  layout: str = DEFAULT_LAYOUT, adapter: Path | None = None, lora_rank: int = 0) -> Path:
    """Checkpoint (+ adapter merged in) → ONNX variants → parity report → the shipped model, cached; with
    `lora_rank`, a graph that takes adapters of that rank at run time. Returns the cache entry."""
    if layout not in LAYOUTS:
        raise ExportError(f"unknown model layout '{layout}' (known: {', '.join(LAYOUTS)})")
    if lora_rank and (layout != fused_graph.LAYOUT or adapter is not None or lora_rank < 0):
        raise ExportError("only a base model in the lmpc-gqa layout can take adapters at run time")
    shipped = SHIPPED_VARIANT if layout == fused_graph.LAYOUT else "int8"
    key = f"{source.stem}-{ckpt.source_fingerprint(source)}"
    if adapter is not None:
        check_adapter_base(adapter, ckpt.source_fingerprint(source))
        key += f"-lora-{ckpt.adapter_fingerprint(adapter)}"
    if lora_rank:
        key += f"-adapters-r{lora_rank}"
    entry = cache_dir / f"{key}-{layout}-{shipped}-v{EXPORT_VERSION}"
    done = entry / "export.json"
    if done.is_file():
        log(f"model: cached ({entry})")
        return entry
    seconds: dict[str, float] = {}
    work = entry.with_name(entry.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    t = time.perf_counter()
    log(f"model: loading {source.name} into a float32 checkpoint"
        + (f", merging the adapter {adapter}" if adapter is not None else ""))
    checkpoint = work / "checkpoint"
    model = ckpt.materialise(source, checkpoint, adapter)
    config = json.loads((checkpoint / "config.json").read_text())
    special = special_tokens(checkpoint / "tokenizer.json")
    chat = ChatFormat.from_file(str(checkpoint / "tokenizer.json"), special)
    references = parity.reference_continuations(model, chat, new_tokens=24, im_end=special.im_end)
    del model
    seconds["checkpoint"] = time.perf_counter() - t

    t = time.perf_counter()
    if layout == fused_graph.LAYOUT:
        models = _export_fused(checkpoint, work, log, lora_rank)
    else:
        models = _export_optimum(checkpoint, work, log)
    seconds["onnx_export"] = time.perf_counter() - t

    t = time.perf_counter()
    log("model: checking parity of the ONNX models with the checkpoint")
    results = []
    for variant, path in models.items():
        spec = model_spec(config, layout, path.name, "", context_length, lora_rank)
        result = parity.check_parity(variant, path, spec, chat, references)
        log(f"  {variant}: max |Δlogit| {result.max_logit_diff:.4f}, top-1 agreement {result.top1_agreement:.3f}, "
            f"greedy match {result.greedy_match:.3f}")
        if variant in ("fp32", shipped):
            parity.enforce_bounds(result)
        results.append(result.to_dict())
    seconds["parity"] = time.perf_counter() - t

    for name in (MODEL_FILE, DATA_FILE):
        if (models[shipped].parent / name).is_file():
            (models[shipped].parent / name).rename(work / name)
    for path in models.values():  # the other variants were only measured: hundreds of MB nothing reads again
        shutil.rmtree(path.parent)
    (work / "export.json").write_text(json.dumps({
        "source": str(source),
        "adapter": str(adapter) if adapter is not None else None,
        "fingerprint": entry.name,
        "layout": layout,
        "variant": shipped,
        "lora_rank": lora_rank,
        "config": config,
        "seconds": seconds,
        "model_bytes": sum((work / name).stat().st_size for name in (MODEL_FILE, DATA_FILE)
                           if (work / name).is_file()),
        "parity": results,
    }, indent=2))
    shutil.rmtree(entry, ignore_errors=True)
    work.rename(entry)
    return entry


def adapter_rank(adapter: Path) -> int:
    """The rank of a peft LoRA adapter (what the base model must take to apply it exactly)."""
    ckpt.adapter_fingerprint(adapter)
    try:
        return int(json.loads((adapter / ckpt.ADAPTER_CONFIG).read_text())["r"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{adapter}: {ckpt.ADAPTER_CONFIG} has no rank r: {exc}") from exc


def prepare_adapter(adapter: Path, entry: Path, cache_dir: Path, log: Log) -> Path:
    """The adapter as run-time tables for the base model of cache entry `entry` (exported with a LoRA
    rank), with the parity of base + tables against the float32 checkpoint with the adapter merged in:
    the same check, on the same prompts, as a merged export's. Cached; returns the cache entry."""
    export = json.loads((entry / "export.json").read_text())
    rank = export.get("lora_rank", 0)
    if not rank:
        raise ExportError(f"{entry.name} was exported without LoRA inputs; it cannot take an adapter")
    fingerprint = ckpt.adapter_fingerprint(adapter)
    out = cache_dir / f"adapter-{fingerprint}-f{ADAPTER_FORMAT}-on-{entry.name}"
    if (out / "adapter.json").is_file():
        log(f"adapter: cached ({out})")
        return out
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    tables = adapters.low_rank_tables(adapter, export["config"], rank)
    adapters.write_tables(tables, work / ADAPTER_FILE)
    log(f"adapter: {adapter} as rank-{rank} tables "
        + ", ".join(f"{group} keeps {share:.1%}" for group, share in tables.kept.items()))
    model, _ = ckpt.load_checkpoint(entry / "checkpoint")
    model = ckpt.merge_adapter(model, adapter)
    special = special_tokens(entry / "checkpoint" / "tokenizer.json")
    chat = ChatFormat.from_file(str(entry / "checkpoint" / "tokenizer.json"), special)
    references = parity.reference_continuations(model, chat, new_tokens=24, im_end=special.im_end)
    del model
    spec = model_spec(export["config"], export["layout"], MODEL_FILE, "", DEFAULT_CONTEXT, rank)
    result = parity.check_parity(f"{export['variant']}+adapter", entry / MODEL_FILE, spec, chat, references,
                                 adapter=work / ADAPTER_FILE)
    log(f"  {result.variant}: max |Δlogit| {result.max_logit_diff:.4f}, top-1 agreement "
        f"{result.top1_agreement:.3f}, greedy match {result.greedy_match:.3f}")
    parity.enforce_bounds(result)
    (work / "adapter.json").write_text(json.dumps({
        "adapter": str(adapter), "fingerprint": fingerprint, "base": entry.name, "rank": rank,
        "kept": tables.kept, "parity": result.to_dict(), "seconds": time.perf_counter() - t,
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out


def _model_files(entry: Path, export: dict, folder: Path, context_length: int) -> ModelSpec:
    """Put the cache entry's model into `folder` (linked where possible), cut into segments; returns its spec."""
    files = [name for name in (MODEL_FILE, DATA_FILE) if (entry / name).is_file()]
    for name in files:
        _link_or_copy(entry / name, folder / name)
    spec = model_spec(export["config"], export["layout"], MODEL_FILE, sha256_file(folder / MODEL_FILE),
                      context_length, export.get("lora_rank", 0))
    if DATA_FILE in files:
        spec = dataclasses.replace(spec, data_file=DATA_FILE, data_sha256=sha256_file(folder / DATA_FILE))
    if spec.layout == fused_graph.LAYOUT:
        pieces = segments.write_segments(folder / MODEL_FILE, folder, spec.num_layers, LAYERS_PER_SEGMENT,
                                         HEAD_PARTS)
        spec = dataclasses.replace(spec, segments=tuple(
            GraphSegment(p.file, sha256_file(folder / p.file), p.first_layer, p.end_layer) for p in pieces))
    return spec


def _shared_base(entry: Path, export: dict, beside: Path, context_length: int) -> ModelSpec:
    """The base model of `entry` in its directory beside the bundles (written once, then reused by every
    bundle built on it; rewritten if its files differ from the entry's)."""
    base = beside / f"{entry.name}{BASE_SUFFIX}"
    _recover_dir(base)
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}.", dir=beside))
    try:
        tmp.chmod(0o755)
        spec = _model_files(entry, export, tmp, context_length)
        present = base / MODEL_FILE
        same = present.is_file() and sha256_file(present) == spec.sha256 and all(
            (base / name).is_file() and sha256_file(base / name) == sha256
            for name, sha256 in [(spec.data_file, spec.data_sha256)] + [(s.file, s.sha256) for s in spec.segments]
            if name)
        if same:
            shutil.rmtree(tmp)
        else:
            _replace_dir(tmp, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(spec, base_dir=base.name)


def write_bundle(sheet: CharacterSheet, entry: Path, embedder_entry: Path, out: Path,
                 context_length: int = DEFAULT_CONTEXT, sampling: SamplingConfig = SamplingConfig(),
                 training: dict | None = None, attachments: dict[str, Path] | None = None,
                 prompt_style: str = "sheet", knowledge: tuple[Topic, ...] = (), exchanges: bool = True,
                 adapter_entry: Path | None = None, acting: tuple[tuple[str, str], ...] = (),
                 log: Log = lambda _: None) -> Path:
    """Assemble the bundle in a temporary directory beside `out`, then move it into place.

    `entry` and `embedder_entry` are the cache entries of the language model and the sentence embedder; a
    model exported with a LoRA rank goes into its shared base directory beside `out` instead of the bundle,
    and the bundle carries the adapter of `adapter_entry` (if any) for the runtime to apply;
    `training` is the adapter's training report, kept in the bundle's report. `attachments` (name in
    the bundle → file) are copied in beside the model: evaluation sets and reports, which the runtime
    never reads. `prompt_style` (`persona.PROMPT_STYLES`) is the persona the model is prompted with.
    `knowledge` (the writer's drills) gives the indexed statements their cues and, with `exchanges`, the
    bundle its exchanges (`lmpc_runtime/memory/exchanges.py`). `acting` (`memories.action_cues` of the
    writer's dialogues) decides when the character acts (`lmpc_runtime/memory/action_cues.py`); what the
    build chose for it is said through `log`.
    """
    export = json.loads((entry / "export.json").read_text())
    embedder_report = json.loads((embedder_entry / "embedder.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        if export.get("lora_rank"):
            spec = _shared_base(entry, export, out.parent, context_length)
        else:
            spec = _model_files(entry, export, tmp, context_length)
        shutil.copyfile(entry / "checkpoint" / "tokenizer.json", tmp / "tokenizer.json")
        special = special_tokens(tmp / "tokenizer.json")
        adapter_section, adapter_report = {}, {}
        if adapter_entry is not None:
            adapter_report = json.loads((adapter_entry / "adapter.json").read_text())
            _link_or_copy(adapter_entry / ADAPTER_FILE, tmp / ADAPTER_FILE)
            adapter_section = {"adapter": {"file": ADAPTER_FILE, "sha256": sha256_file(tmp / ADAPTER_FILE),
                                           "rank": adapter_report["rank"]}}
        persona_system, shots = persona_text(sheet, prompt_style)
        embedder = _write_embedder(embedder_entry, embedder_report, tmp)
        statements = sheet_statements(sheet, persona_system)
        memories = memories_state(statements,
                                  Embedder(str(tmp / embedder.file), str(tmp / embedder.tokenizer_file), embedder),
                                  statement_cues(sheet, statements, knowledge),
                                  drill_exchanges(knowledge) if exchanges else [], list(acting), log)
        (tmp / MEMORIES_FILE).write_bytes(msgpack.packb(memories, use_bin_type=True))
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": _slug(sheet.name),
            "created_by": f"lmpc {__version__}",
            "model": dataclasses.asdict(spec),
            "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(tmp / "tokenizer.json")},
            "special_tokens": {"im_start": special.im_start, "im_end": special.im_end, "banned": list(special.banned)},
            "chat_format": "chatml",
            "sampling": sampling.to_dict(),
            "character": sheet.to_dict(),
            "persona": {"system": persona_system, "shots": [list(s) for s in shots], "style": prompt_style},
            "embedder": {"file": embedder.file, "sha256": embedder.sha256, "name": embedder.name,
                         "tokenizer": {"file": embedder.tokenizer_file, "sha256": embedder.tokenizer_sha256},
                         "dim": embedder.dim, "max_tokens": embedder.max_tokens, "min_score": embedder.min_score},
            "memories": {"file": MEMORIES_FILE, "sha256": sha256_file(tmp / MEMORIES_FILE),
                         "count": len(memories["ids"])},
            **adapter_section,
            "report": {"export": {k: export.get(k) for k in ("source", "adapter", "fingerprint", "layout",
                                                              "variant", "seconds", "model_bytes")},
                       "parity": export["parity"],
                       "embedder": {k: embedder_report[k] for k in ("source", "fingerprint", "seconds",
                                                                     "model_bytes", "parity")},
                       **({"training": training} if training else {}),
                       **({"adapter": adapter_report} if adapter_report else {})},
        }
        (tmp / MANIFEST_NAME).write_bytes(pack_manifest(manifest))
        for name, source in (attachments or {}).items():
            shutil.copyfile(source, tmp / name)
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build(sheet_path: Path, out: Path, source: Path | None = None, cache_dir: Path | None = None,
          context_length: int = DEFAULT_CONTEXT, layout: str = DEFAULT_LAYOUT, adapter: Path | None = None,
          exchanges: bool = True, runtime_adapter: bool = False, log: Log = lambda _: None) -> Path:
    """Build the bundle `out` of the sheet at `sheet_path` (see the module's docstring)."""
    sheet = load_sheet(sheet_path)  # fail on a bad sheet before minutes of model work
    knowledge_file = knowledge_file_for(sheet_path)
    training = None
    prompt_style = "sheet"
    if adapter is not None:
        info = _adapter_json(adapter, ckpt.ADAPTER_INFO) or {}
        # A tuned model is prompted at run time exactly as it was trained.
        prompt_style = info.get("prompt_style", "sheet")
        if info and info.get("persona_sha256") != persona_digest(sheet, prompt_style):
            log(f"warning: {adapter} was trained with another persona prompt than this sheet now gives; "
                "retrain it (`lmpc train`) for the best results")
        training = _adapter_json(adapter, ckpt.TRAINING_REPORT)
    cache_dir = cache_dir or default_cache_dir()
    source = source or ckpt.base_gguf()
    adapter_entry = None
    if runtime_adapter:
        if adapter is None:
            raise ExportError("a run-time adapter needs --adapter")
        check_adapter_base(adapter, ckpt.source_fingerprint(source))
        entry = prepare_model(source, cache_dir, log, context_length, layout, lora_rank=adapter_rank(adapter))
        adapter_entry = prepare_adapter(adapter, entry, cache_dir, log)
    else:
        entry = prepare_model(source, cache_dir, log, context_length, layout, adapter)
    embedder_entry = prepare_embedder(cache_dir, log)
    log(f"bundle: writing {out}")
    return write_bundle(sheet, entry, embedder_entry, out, context_length,
                        sampling=TUNED_SAMPLING if adapter is not None else SamplingConfig(), training=training,
                        attachments=attachments(sheet_path, adapter), prompt_style=prompt_style,
                        knowledge=tuple(load_knowledge(knowledge_file, sheet)) if knowledge_file.is_file() else (),
                        exchanges=exchanges, adapter_entry=adapter_entry, acting=acting_cues(sheet, sheet_path), log=log)


def acting_cues(sheet: CharacterSheet, sheet_path: Path) -> tuple[tuple[str, str], ...]:
    """The writer's dialogues as cues of when the character acts, for a sheet with actions and a dialogue
    file (`<sheet>.dialogues.toml`)."""
    dialogue_file = dialogue_file_for(sheet_path)
    if not sheet.actions or not dialogue_file.is_file():
        return ()
    return tuple(action_cues(load_dialogues(dialogue_file, sheet)))


def attachments(sheet_path: Path, adapter: Path | None) -> dict[str, Path]:
    """What a bundle carries for `lmpc eval`: the sheet's evaluation set, persona test and calibration set
    (`<sheet>.eval.toml`, `<sheet>.persona_test.toml`, `<sheet>.action_test.toml`, `<sheet>.apc_calibration.toml`), and the adapter's evaluation report, made on
    a bundle of the same model."""
    stem = sheet_path.with_suffix("")
    found = {EVAL_SET: stem.with_name(stem.name + ".eval.toml"),
             PERSONA_TEST: stem.with_name(stem.name + ".persona_test.toml"),
             ACTION_TEST: stem.with_name(stem.name + ".action_test.toml"),
             CALIBRATION_SET: stem.with_name(stem.name + ".apc_calibration.toml")}
    if adapter is not None:
        found |= {REPORT_JSON: adapter / REPORT_JSON, REPORT_MD: adapter / REPORT_MD}
    return {name: path for name, path in found.items() if path.is_file()}


def _write_embedder(embedder_entry: Path, report: dict, bundle_dir: Path) -> EmbedderSpec:
    """Put the embedder and its tokenizer into the bundle; returns their spec for the manifest."""
    _link_or_copy(embedder_entry / "embedder.int8.onnx", bundle_dir / EMBEDDER_FILE)
    shutil.copyfile(embedder_entry / "tokenizer.json", bundle_dir / EMBEDDER_TOKENIZER_FILE)
    return EmbedderSpec(file=EMBEDDER_FILE, sha256=sha256_file(bundle_dir / EMBEDDER_FILE),
                        tokenizer_file=EMBEDDER_TOKENIZER_FILE,
                        tokenizer_sha256=sha256_file(bundle_dir / EMBEDDER_TOKENIZER_FILE),
                        dim=report["dim"], max_tokens=report["max_tokens"], min_score=report["min_score"],
                        name=report["name"])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "npc"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target` so that a crash at any moment leaves the old bundle or the new one there.

    On Linux the two directories trade places in one atomic rename (renameat2 RENAME_EXCHANGE) and the
    old one is then removed. Elsewhere the old bundle is moved aside first: a crash between the two
    renames leaves it at `.<name>.old`, which the next build puts back (see `_recover_dir`).
    """
    if not target.exists():
        new.rename(target)
    elif _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old bundle
    else:
        old = _aside(target)
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _recover_dir(target: Path) -> None:
    """Clean up after a build that was killed: put back a bundle it left aside (the fallback of
    `_replace_dir`) and remove its half-written directories. One build writes a given path at a time."""
    if not target.exists() and _aside(target).is_dir():
        _aside(target).rename(target)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):
        shutil.rmtree(stale, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the OS or its C library cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel, or a filesystem without it
        return False
    raise OSError(error, os.strerror(error), str(b))
