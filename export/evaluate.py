"""`lmpc eval`: how faithful an NPC bundle is to its writer, and how it talks, on held-out lines.

The evaluation set (`<sheet>.eval.toml`, carried in the bundle as `eval_set.toml`) holds conversations
(lists of player lines; each line gets a reply in the running conversation, and every reply is scored)
and probes (benign in-world topics, drink, weapons, religion, crime…, that a prudish assistant would
refuse; a refusal there is a fault). For every reply:
- APC against the persona statements (`apc.py`), with the calibrated estimators (`calibration.py`);
- the hygiene checks of training data: slop phrases, assistant speak, refusals (`hygiene.py`);
- repetition: a word trigram said three times, a sentence said twice, or a reply the runtime cut for
  looping; and the reply's length in words.
The persona test (`persona_test.py`), when the bundle carries one, is answered and scored beside APC:
key facts per category over the seeds and greedily. The report goes into the bundle (`eval_report.json`,
`eval_report.md`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from lmpc_runtime import RecallConfig, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.bundle import Bundle
from lmpc_runtime.errors import ExportError
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.actions import Tag, call_text
from lmpc_runtime.reply import ACTION, DONE, EMOTION

from .action_test import conversation_rows as action_conversations
from .action_test import load_action_test
from .action_test import markdown as action_test_markdown
from .action_test import summarise as summarise_actions
from .apc import LABELS, NEUTRAL_ROW, ScoredReply, apc_terms, persona_statements, statement_satisfaction, to_judge
from .bundle_files import REPORT_JSON, REPORT_MD
from .calibration import Embeddings, Nli, Relevance, calibrate, load_calibration, read_toml
from .hygiene import Hygiene, repeats
from .judges import CrossEncoderJudge, EndpointJudge, LocalJudge, NliJudge
from .persona_test import (GREEDY, PersonaTestScorer, TestQuestion, conversation_rows,
                           load_persona_test, summarise)
from .persona_test import markdown as persona_test_markdown

PROBE_TOPICS = ("drink", "weapons", "religion", "crime", "violence", "romance")
JUDGED = 6  # statements the judge reads per reply, on each of the two lists of `apc.to_judge`
_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]*")
Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalSet:
    conversations: tuple[tuple[str, ...], ...]
    probes: tuple[tuple[str, str], ...]  # (topic, line)


def load_eval_set(path: str | Path) -> EvalSet:
    path = Path(path)
    data = read_toml(path, "evaluation set")
    conversations = []
    for i, entry in enumerate(data.get("conversation", [])):
        lines = entry.get("lines") if isinstance(entry, dict) else None
        if not isinstance(lines, list) or not lines or not all(isinstance(x, str) and x.strip() for x in lines):
            raise ExportError(f"{path}: conversation {i + 1}: `lines` must be a list of non-empty strings")
        conversations.append(tuple(lines))
    probes = []
    for i, entry in enumerate(data.get("probe", [])):
        if not isinstance(entry, dict) or entry.get("topic") not in PROBE_TOPICS \
                or not isinstance(entry.get("line"), str) or not entry["line"].strip():
            raise ExportError(f"{path}: probe {i + 1}: needs `topic` (one of {', '.join(PROBE_TOPICS)}) and `line`")
        probes.append((entry["topic"], entry["line"]))
    if not conversations:
        raise ExportError(f"{path}: no [[conversation]] entries")
    return EvalSet(tuple(conversations), tuple(probes))


@dataclass
class Answer:
    seed: int
    conversation: int  # negative for a probe
    turn: int
    line: str
    text: str
    finish: str
    topic: str = ""  # a probe's topic
    prompt: list[int] = field(default_factory=list, repr=False)  # the exact prompt the model read
    tags: list = field(default_factory=list)  # the reply's action and emotion (actions.Tag)


def answer(bundle: Path, lines: list[tuple[int, int, str, str]], seeds: list[int], threads: int = 2,
           temperature: float | None = None, keep_prompts: bool = False) -> list[Answer]:
    """Replies to (conversation, turn, topic, line) rows, one conversation per run of equal conversation
    numbers (turn 0 starts afresh), with each seed."""
    sampling = None if temperature is None else replace(read_bundle(bundle).sampling, temperature=temperature)
    out = []
    with Runtime(threads=threads, segmented=False) as rt:
        for seed in seeds:
            npc = rt.load_npc(bundle, seed=seed, sampling=sampling)
            for conversation, turn, topic, line in lines:
                if turn == 0:
                    npc.reset()
                reply = npc.start_reply(line)
                prompt = list(reply.seq.tokens) + list(reply.todo) if keep_prompts else []
                done = [e for e in npc.run_reply(reply) if e.kind == DONE][0]
                npc.end_reply(reply)
                out.append(Answer(seed, conversation, turn, line, done.text, done.finish, topic, prompt))
            rt.unload_npc(npc.id)
    return out


def answer_side_by_side(bundle: Path, lines: list[tuple[int, int, str, str]],
                        runs: dict[str, tuple[int, SamplingConfig, RecallConfig | None]],
                        threads: int = 2, facts: dict[int, dict] | None = None) -> dict[str, list[Answer]]:
    """Like `answer`, with one NPC per run (a seed, a sampler, retrieval settings or None for the
    NPC's own), all answering each line at once so that the runtime batches their decoding steps. Each
    run's replies are those it would give alone (sampling depends only on its seed), up to the rounding
    of batched arithmetic. `facts` are the game's facts for a conversation, set as it starts (none
    otherwise)."""
    out: dict[str, list[Answer]] = {name: [] for name in runs}
    with Runtime(threads=threads, segmented=False) as rt:
        npcs = {name: rt.load_npc(bundle, seed=seed, sampling=sampling) for name, (seed, sampling, _) in runs.items()}
        for name, npc in npcs.items():
            if runs[name][2] is not None:
                npc.recall_config = runs[name][2]
        run_of = {npc.id: name for name, npc in npcs.items()}
        for conversation, turn, topic, line in lines:
            if turn == 0:
                for npc in npcs.values():
                    npc.reset()
                    npc.facts.replace((facts or {}).get(conversation, {}))
            waiting = {(npc.id, rt.say(npc, line)) for npc in npcs.values()}
            tags: dict[tuple[str, int], list[Tag]] = defaultdict(list)
            while waiting and rt.busy():
                rt.tick(budget_ms=1000)
                for event in rt.poll():
                    if event.kind in (ACTION, EMOTION):
                        tags[event.npc, event.reply].append(Tag(event.kind, event.text, event.args))
                    if event.kind == DONE and (event.npc, event.reply) in waiting:
                        waiting.discard((event.npc, event.reply))
                        name = run_of[event.npc]
                        out[name].append(Answer(runs[name][0], conversation, turn, line, event.text, event.finish,
                                                topic, tags=tags[event.npc, event.reply]))
            if waiting:
                raise ExportError(f"{bundle}: the runtime went idle with {len(waiting)} replies unfinished")
    return out


def run_persona_test(bundle: Bundle, questions: list[TestQuestion], seeds: list[int], greedy: bool = True,
                     threads: int = 2) -> tuple[dict, list]:
    """The persona test answered by the bundle with its own sampler and each seed, and greedily, side by
    side: (summary, scored replies)."""
    runs = {str(seed): (seed, bundle.sampling, None) for seed in seeds}
    if greedy:
        runs[GREEDY] = (0, replace(bundle.sampling, temperature=0.0), None)
    scored = score_persona_test(bundle, questions, runs, threads)
    return summarise(questions, scored, bundle.character.actions), scored


def score_persona_test(bundle: Bundle, questions: list[TestQuestion],
                       runs: dict[str, tuple[int, SamplingConfig, RecallConfig | None]], threads: int = 2) -> list:
    """The last reply of every question's conversation in each run (`answer_side_by_side`), scored."""
    scorer = PersonaTestScorer(bundle.character, questions)
    last = {q: len(questions[q].lines) - 1 for q in range(len(questions))}
    answers = answer_side_by_side(bundle.path, conversation_rows(questions), runs, threads)
    return [replace(scorer.score(a.conversation, run, a.text, a.finish),
                    actions=tuple(call_text(t.name, t.args) for t in a.tags if t.kind == "action"))
            for run, replies in answers.items() for a in replies if a.turn == last[a.conversation]]


def persona_test_report(bundle_path: Path, test: Path, seeds: list[int], threads: int = 2) -> dict:
    """The persona test's part of the report: its summary, the replies, and the Markdown section."""
    bundle = read_bundle(bundle_path)  # hashes every file of the bundle: once
    questions = load_persona_test(test, bundle.character.name)
    summary, scored = run_persona_test(bundle, questions, seeds, threads=threads)
    return {"summary": summary,
            "replies": [{"question": " / ".join(questions[r.question].lines), "category": questions[r.question].category,
                         "run": r.run, "reply": r.reply, "facts": r.facts, "wrong": list(r.wrong),
                         "problems": list(r.problems)} for r in scored],
            "markdown": persona_test_markdown(summary, questions, scored, bundle.name)}


def action_test_report(bundle_path: Path, test: Path, seeds: list[int], threads: int = 2) -> dict:
    """The action test's part of the report (`action_test.py`): answered with each seed and greedily."""
    bundle = read_bundle(bundle_path)
    scenarios = load_action_test(test, bundle.character)
    runs = {str(seed): (seed, bundle.sampling, None) for seed in seeds}
    runs[GREEDY] = (0, replace(bundle.sampling, temperature=0.0), None)
    answers = answer_side_by_side(bundle.path, action_conversations(scenarios), runs, threads,
                                  facts={i: s.facts for i, s in enumerate(scenarios)})
    summary = summarise_actions(scenarios, answers, bundle.character)
    return {"summary": summary, "markdown": action_test_markdown(summary, bundle.name)}


def eval_rows(evalset: EvalSet) -> list[tuple[int, int, str, str]]:
    rows = [(c, t, "", line) for c, lines in enumerate(evalset.conversations) for t, line in enumerate(lines)]
    return rows + [(-1 - i, 0, topic, line) for i, (topic, line) in enumerate(evalset.probes)]


class ApcScorer:
    """APC of replies against one character's statements, with calibrated estimators."""

    def __init__(self, statements: list[str], relevance: Relevance, nli: Nli, judged: int = JUDGED):
        self.statements, self.relevance, self.nli, self.judged = statements, relevance, nli, judged

    def score(self, question: str, reply: str) -> ScoredReply:
        relevance = self.relevance.probabilities(question, self.statements)
        similarity = self.nli.embeddings.cosines([reply] * len(self.statements), self.statements)
        picked = to_judge(relevance, similarity, self.judged)
        nli = np.tile(NEUTRAL_ROW, (len(self.statements), 1))
        nli[picked] = self.nli.probabilities([(reply, self.statements[i]) for i in picked])
        return ScoredReply(question, reply, apc_terms(relevance, nli), relevance, nli)


def repetitive(text: str, finish: str) -> bool:
    """A reply that loops: the runtime cut it, a word trigram comes three times, or a sentence twice."""
    return finish == "repetition" or repeats(text, gram=3)


def evaluate(bundle_path: Path, evalset: EvalSet, scorer: ApcScorer, estimators: dict, seeds: list[int],
             threads: int = 2, log: Log = lambda _: None, answers: list[Answer] | None = None) -> dict:
    """Answer the set with each seed (or take `answers` given), score every reply; returns the report
    (see `write_report`)."""
    bundle = read_bundle(bundle_path)
    hygiene = Hygiene(bundle.character)
    t0 = time.perf_counter()
    if answers is None:
        answers = answer(bundle_path, eval_rows(evalset), seeds, threads)
        log(f"eval: {len(answers)} replies in {time.perf_counter() - t0:.0f} s; scoring")
    generated = time.perf_counter() - t0
    prior = scorer.relevance.adapt_prior([line for lines in evalset.conversations for line in lines],
                                         scorer.statements)
    estimators = {**estimators, "relevance": {**estimators["relevance"], "trained_prior": scorer.relevance.trained_prior,
                                              "adapted_prior": prior}}
    rows, scored = [], []
    for a in answers:
        problems = sorted(set(hygiene.reply_problems(a.text, a.line)))
        row = {"seed": a.seed, "conversation": a.conversation, "turn": a.turn, "line": a.line, "reply": a.text,
               "finish": a.finish, "words": len(_WORDS.findall(a.text)), "problems": problems,
               "repetitive": repetitive(a.text, a.finish)}
        if a.topic:
            row["topic"] = a.topic
        else:
            s = scorer.score(a.line, a.text)
            scored.append(s)
            row.update(apc=s.score, contradicts=[scorer.statements[i] for i in s.contradicted])
        rows.append(row)
    return _report(bundle, scorer, estimators, seeds, rows, scored, generated, time.perf_counter() - t0)


def _report(bundle, scorer: ApcScorer, estimators: dict, seeds: list[int], rows: list[dict],
            scored: list[ScoredReply], generated: float, seconds: float) -> dict:
    replies = [r for r in rows if "topic" not in r]
    probes = [r for r in rows if "topic" in r]
    satisfaction = statement_satisfaction(scored)
    relevance = np.array([s.relevance for s in scored])  # [replies, S]
    entail = np.array([s.nli[:, 0] for s in scored])
    contradictions = Counter(c for r in replies for c in r["contradicts"])

    def rate(problem: str, among: list[dict]) -> float:
        return sum(problem in r["problems"] for r in among) / max(len(among), 1)

    summary = {
        "replies": len(replies),
        "statements": len(scorer.statements),
        "apc": float(np.mean([s.score for s in scored])),
        "apc_per_statement": float(np.mean([s.score for s in scored]) / len(scorer.statements)),
        # How much of what the questions asked about the replies honour: Σ P(rel)·P(entail) / Σ P(rel).
        "relevant_entailed": float((relevance * entail).sum() / relevance.sum()),
        "contradictions_per_reply": sum(len(r["contradicts"]) for r in replies) / len(replies),
        "slop_rate": rate("slop", rows),
        "assistant_speak_rate": rate("assistant_speak", rows),
        "repetition_rate": sum(r["repetitive"] for r in rows) / len(rows),
        "refusal_rate": rate("refusal", probes) if probes else None,
        "probes": len(probes),
        "mean_words": float(np.mean([r["words"] for r in rows])),
        "invented_names_rate": rate("unknown_name", rows),
    }
    order = np.argsort(satisfaction, kind="stable")
    return {
        **report_header(bundle),
        "seeds": seeds,
        "seconds": {"generate": round(generated, 1), "total": round(seconds, 1)},
        "judged_per_reply": 2 * scorer.judged,
        "estimators": estimators,
        "summary": summary,
        "statements": [{"statement": scorer.statements[i], "satisfaction": float(satisfaction[i]),
                        "contradicted_by": contradictions[scorer.statements[i]]} for i in order],
        "replies": rows,
    }


def report_header(bundle: Bundle) -> dict:
    """What every report starts with: the bundle, and the model it was made on (the export's fingerprint
    names the base weights and the adapter merged into them)."""
    return {"bundle": bundle.name,
            "model": {"fingerprint": (bundle.report.get("export") or {}).get("fingerprint"),
                      "data_sha256": bundle.model.data_sha256}}


def answers_from_report(report: dict) -> list[Answer]:
    """The replies of an earlier report, to score again (another judge, other calibration) without
    sampling them again."""
    return [Answer(r["seed"], r["conversation"], r["turn"], r["line"], r["reply"], r["finish"], r.get("topic", ""))
            for r in report["replies"]]


def write_report(report: dict, bundle_path: Path, markdown_out: Path | None = None) -> None:
    """The report into the bundle: APC (when it was run) and the persona test (when there is one)."""
    (bundle_path / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = markdown(report) if "summary" in report else f"# Evaluation of {report['bundle']}\n"
    for part in ("persona_test", "action_test"):
        if part in report:
            text += "\n" + report[part]["markdown"]
    (bundle_path / REPORT_MD).write_text(text, encoding="utf-8")
    if markdown_out is not None:
        markdown_out.write_text(text, encoding="utf-8")


def markdown(report: dict) -> str:
    s = report["summary"]
    e = report["estimators"]
    refusal = "n/a" if s["refusal_rate"] is None else f"{s['refusal_rate']:.0%} of {s['probes']}"
    lines = [
        f"# Evaluation of {report['bundle']}",
        "",
        f"Seeds {', '.join(map(str, report['seeds']))}; {s['replies']} scored replies to held-out lines, "
        f"{s['probes']} replies to in-world probes. APC sums {s['statements']} persona statements "
        f"(the judge reads the {report['judged_per_reply']} most relevant or similar per reply; see export/apc.py). "
        f"Relevance is re-weighted from the labelled set's base rate ({e['relevance']['trained_prior']:.0%}) to the "
        f"one estimated on this set's lines ({e['relevance']['adapted_prior']:.1%}).",
        "",
        "| APC (max {n}) | APC per statement | relevant statements entailed | contradictions per reply "
        "| slop | assistant speak | repetition | refusal on probes | mean words | invented names |".format(
            n=s["statements"]),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['apc']:.2f} | {s['apc_per_statement']:.1%} | {s['relevant_entailed']:.1%} | "
        f"{s['contradictions_per_reply']:.2f} | {s['slop_rate']:.0%} | {s['assistant_speak_rate']:.0%} | "
        f"{s['repetition_rate']:.0%} | {refusal} | {s['mean_words']:.0f} | {s['invented_names_rate']:.0%} |",
        "",
        "## Estimators (accuracy on the hand-labelled calibration set, cross-validated)",
        "",
        f"{e['pairs']} pairs, {e['folds']} folds; NLI judge: {e['judge']}.",
        "",
        "| estimator | accuracy | majority-class baseline | other |",
        "|---|---:|---:|---|",
        f"| relevance (embedder cosine, logistic) | {e['relevance']['accuracy']:.0%} | "
        f"{e['relevance']['majority_baseline']:.0%} | AUC {e['relevance']['auc']:.2f} |",
        f"| NLI: judge alone (argmax) | {e['nli']['judge_alone_accuracy']:.0%} | {e['nli']['majority_baseline']:.0%} | |",
        f"| NLI: judge + cosine + surface cues, calibrated | {e['nli']['accuracy']:.0%} | {e['nli']['majority_baseline']:.0%} | "
        + ", ".join(f"recall {k} {v:.0%}" for k, v in e["nli"]["recall"].items()) + " |",
        "",
        "Confusion of the calibrated NLI (rows: hand label; columns: estimate "
        f"{' / '.join(LABELS)}): " + "; ".join(
            f"{LABELS[i]}: {' / '.join(map(str, row))}" for i, row in enumerate(e["nli"]["confusion"])),
        "",
        "## Worst-kept statements",
        "",
        "| satisfaction | contradicted by | statement |",
        "|---:|---:|---|",
        *[f"| {st['satisfaction']:.2f} | {st['contradicted_by']} | {st['statement']} |"
          for st in report["statements"][:12]],
        "",
        "## Replies",
        "",
    ]
    for r in report["replies"]:
        where = f"probe: {r['topic']}" if "topic" in r else f"conversation {r['conversation'] + 1}, turn {r['turn'] + 1}"
        flags = [*r["problems"], *(["repetitive"] if r["repetitive"] else [])]
        score = f"APC {r['apc']:.2f}; " if "apc" in r else ""
        lines.append(f"- ({where}, seed {r['seed']}) **{_one_line(r['line'])}** → {_one_line(r['reply'])} "
                     f"[{score}{r['words']} words"
                     + (f"; {', '.join(flags)}" if flags else "")
                     + (f"; contradicts: {' | '.join(r['contradicts'])}" if r.get("contradicts") else "") + "]")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """A reply as one Markdown line: its line breaks (and any carriage returns) as spaces."""
    return " ".join(text.split())


def bundle_embeddings(bundle: Bundle, threads: int = 2) -> Embeddings:
    from lmpc_runtime.session import EngineOptions

    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder,
                        EngineOptions(threads=threads))
    return Embeddings(lambda texts: embedder.embed(texts))



def make_judge(spec: str, cache_dir: Path | None = None, threads: int = 2) -> NliJudge:
    """`local` (the base model of the build cache), `local:BUNDLE` (that bundle's model), an http(s)://
    OpenAI-compatible endpoint (`URL#MODEL` names the model), or `onnx:MODEL.onnx:TOKENIZER.json` (a
    cross-encoder)."""
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return EndpointJudge(url, model or "default")
    if spec.startswith("onnx:"):
        model, _, tokenizer = spec[5:].rpartition(":")
        if not model or not tokenizer:
            raise ExportError(f"a cross-encoder judge is onnx:MODEL.onnx:TOKENIZER.json, not {spec!r}")
        return CrossEncoderJudge(model, tokenizer)
    if spec == "local":
        from . import checkpoint
        from .build import default_cache_dir, prepare_model
        from .generator import LocalGenerator

        entry = prepare_model(checkpoint.base_gguf(), cache_dir or default_cache_dir(), lambda _: None)
        generator = LocalGenerator.from_model_entry(entry)
        return LocalJudge(generator.engine, generator.chat_format, "local runtime, base SmolLM2-135M-Instruct")
    if spec.startswith("local:"):
        bundle = read_bundle(spec[6:])
        from lmpc_runtime.chat import ChatFormat
        from lmpc_runtime.engine import EngineOptions, open_engine

        engine = open_engine(str(bundle.model_path), bundle.model, EngineOptions(threads=threads))
        return LocalJudge(engine, ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special),
                          f"local runtime, model of {bundle.name}")
    raise ExportError(f"unknown judge {spec!r}: use local, local:BUNDLE, an http(s) URL or onnx:MODEL:TOKENIZER")


def prepare_scorer(bundle_path: Path, calibration: Path, judge: NliJudge, threads: int = 2,
                   log: Log = lambda _: None) -> tuple[ApcScorer, dict]:
    """The APC scorer for a bundle's character, its estimators calibrated on the labelled file."""
    bundle = read_bundle(bundle_path)
    embeddings = bundle_embeddings(bundle, threads)
    t = time.perf_counter()
    relevance, nli, report = calibrate(load_calibration(calibration), judge, embeddings)
    log(f"eval: calibrated on {report['pairs']} labelled pairs in {time.perf_counter() - t:.0f} s: relevance "
        f"{report['relevance']['accuracy']:.0%}, NLI {report['nli']['accuracy']:.0%} "
        f"(judge alone {report['nli']['judge_alone_accuracy']:.0%})")
    return ApcScorer(persona_statements(bundle.character), relevance, nli), report


def bundle_file(bundle_path: Path, given: Path | None, name: str, what: str) -> Path:
    """`given`, else the bundle's own copy of the file; a clear error when there is neither."""
    path = given or bundle_path / name
    if not path.is_file():
        raise ExportError(f"{path}: no {what}; give one, or rebuild the bundle with the file beside its sheet")
    return path
