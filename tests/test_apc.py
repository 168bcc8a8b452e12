"""APC: the formula on hand-computed cases, the estimators behind one interface (the local judge on the
tiny model, an OpenAI-compatible endpoint over real HTTP, an ONNX cross-encoder), the calibration, and
`lmpc eval` writing its report into a bundle."""

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from lmpc_runtime import read_bundle
from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import EngineOptions, open_engine
from lmpc_runtime.errors import ExportError
from lmpc_runtime.sheet import load_sheet

from lmpc_export.apc import apc, apc_terms, persona_statements, to_judge
from lmpc_export.calibration import Embeddings, Logistic, calibrate, load_calibration
from lmpc_export.evaluate import load_eval_set, make_judge, markdown, repetitive
from lmpc_export.judges import CrossEncoderJudge, EndpointJudge, LocalJudge, surface_cues

from conftest import ORLANDO_SHEET, TINY_BUNDLE
from test_generator import _Server

CALIBRATION = ORLANDO_SHEET.with_name("orlando_marlo.apc_calibration.toml")
EVAL_SET = ORLANDO_SHEET.with_name("orlando_marlo.eval.toml")


# The formula ------------------------------------------------------------------------------------------

def test_apc_matches_the_formula_on_hand_computed_cases():
    # Statement 1 relevant (0.9), reply entails it (0.8) and contradicts it a little (0.1):
    #   0.9*0.8 + 0.1*(1-0.1) = 0.72 + 0.09 = 0.81
    # Statement 2 irrelevant (0.2), reply contradicts it (0.7): 0.2*0.0 + 0.8*(1-0.7) = 0.24
    # Statement 3 irrelevant (0.0), reply says nothing: 0 + 1*(1-0) = 1
    relevance = np.array([0.9, 0.2, 0.0])
    nli = np.array([[0.8, 0.1, 0.1], [0.0, 0.3, 0.7], [0.0, 1.0, 0.0]])
    assert apc_terms(relevance, nli) == pytest.approx([0.81, 0.24, 1.0])
    assert apc(relevance, nli) == pytest.approx(2.05)
    # The best possible reply: entails every relevant statement, contradicts nothing.
    assert apc(np.array([1.0, 0.0]), np.array([[1, 0, 0], [0, 1, 0]])) == 2.0
    with pytest.raises(ValueError):
        apc_terms(relevance, nli[:2])


def test_the_judge_reads_the_most_relevant_then_the_most_similar_statements():
    relevance = np.array([0.1, 0.9, 0.5, 0.0, 0.2])
    similarity = np.array([0.3, 0.8, 0.1, 0.9, 0.0])
    # two most relevant: 1, 2; then the two most similar not yet picked: 3, 0
    assert to_judge(relevance, similarity, 2).tolist() == [1, 2, 3, 0]


def test_persona_statements_are_the_sheets_facts_values_aims_and_opinions():
    sheet = load_sheet(ORLANDO_SHEET)
    statements = persona_statements(sheet)
    assert len(statements) == len(sheet.facts) + len(sheet.values) + len(sheet.objectives) + len(sheet.opinions)
    assert statements[0] == sheet.facts[0]
    assert f"Orlando values: {sheet.values[0]}" in statements


def test_repetition_is_a_trigram_said_three_times_or_a_sentence_twice():
    assert repetitive("I ride at dawn, I ride at dawn, I ride at dawn.", "end")
    assert repetitive("The light is good. The light is good.", "end")
    assert repetitive("Anything at all.", "repetition")  # the runtime cut it for looping
    assert not repetitive("I ride at dawn and return at dusk, as my father did.", "end")


# Calibration ----------------------------------------------------------------------------------------------

def test_the_shipped_calibration_set_loads_and_bad_entries_are_typed_errors(tmp_path):
    pairs = load_calibration(CALIBRATION)
    assert len(pairs) >= 150 and {p.label for p in pairs} == {"entail", "neutral", "contradict"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pair]]\nstatement = "s"\nquestion = "q"\nreply = "r"\nrelevant = true\nlabel = "maybe"\n')
    with pytest.raises(ExportError, match="label"):
        load_calibration(bad)
    bad.write_text("[[pair]\n")
    with pytest.raises(ExportError, match="cannot read"):
        load_calibration(bad)


def test_logistic_calibration_learns_a_separable_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = Logistic(2).fit(x, y)
    assert ((model.probabilities(x)[:, 1] > 0.5) == y).mean() > 0.95
    again = Logistic.from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.allclose(again.probabilities(x), model.probabilities(x))


class ScriptedJudge:
    """A judge whose scores follow the hand label by a fixed rule: its high score goes to `says[label]`.
    With `says` the identity its argmax is right; otherwise calibration must learn the rule."""
    name = "scripted"

    def __init__(self, labels: dict[tuple[str, str], str], says: dict[str, str] | None = None):
        self.labels, self.says = labels, says or {}

    def scores(self, pairs):
        return np.array([[2.0 * (self.says.get(self.labels[p], self.labels[p]) == lab)
                          for lab in ("entail", "neutral", "contradict")] for p in pairs])


class ConstantJudge:
    """A judge that knows nothing: the same scores for every pair."""
    name = "constant"

    def scores(self, pairs):
        return np.ones((len(pairs), 3))


def word_embeddings(texts):
    """A stand-in embedder: bags of words, normalised."""
    rows = []
    for text in texts:
        vec = np.zeros(512)
        for word in text.lower().split():
            vec[zlib.crc32(word.encode()) % 512] += 1
        rows.append(vec / max(np.linalg.norm(vec), 1e-9))
    return np.array(rows)


def test_calibration_reports_cross_validated_accuracy_of_each_estimator():
    pairs = load_calibration(CALIBRATION)[:60]
    judge = ScriptedJudge({(p.reply, p.statement): p.label for p in pairs})
    relevance, nli, report = calibrate(pairs, judge, Embeddings(word_embeddings))
    assert report["pairs"] == 60 and report["judge"] == "scripted"
    assert report["nli"]["accuracy"] > 0.9  # the calibrated estimate keeps what the judge knows
    assert sum(map(sum, report["nli"]["confusion"])) == 60
    probs = nli.probabilities([(pairs[0].reply, pairs[0].statement)])
    assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.0)
    assert 0 < relevance.probabilities(pairs[0].question, [pairs[0].statement])[0] < 1


def test_calibration_learns_what_a_judge_means_and_cannot_invent_what_it_does_not_know():
    pairs = load_calibration(CALIBRATION)[:60]
    labels = {(p.reply, p.statement): p.label for p in pairs}
    # A judge that says "contradict" for entailment and the reverse: wrong by its argmax, right once read.
    _, _, swapped = calibrate(pairs, ScriptedJudge(labels, {"entail": "contradict", "contradict": "entail"}),
                              Embeddings(word_embeddings))
    assert swapped["nli"]["judge_alone_accuracy"] < 0.5 and swapped["nli"]["accuracy"] > 0.9
    # A judge with no information leaves only the surface features: far below what a knowing judge gives.
    _, _, blind = calibrate(pairs, ConstantJudge(), Embeddings(word_embeddings))
    assert blind["nli"]["accuracy"] < 0.8


def test_relevance_is_re_weighted_to_the_base_rate_of_the_lines_scored():
    from lmpc_export.calibration import Relevance

    # Fitted where half the pairs were relevant; scored where one statement in ten bears on the line.
    embeddings = Embeddings(word_embeddings)
    statements = [f"fact number {i} about the {w}" for i, w in enumerate("horse sword mother cider river".split())]
    statements += [f"an unrelated word {w}" for w in "apple pear plum fig kiwi lime date nut yam oat".split()]
    x = np.linspace(-1, 1, 200)[:, None]
    model = Logistic(2).fit(x, (x[:, 0] > 0.3).astype(int))
    relevance = Relevance(embeddings, model, trained_prior=0.5)
    before = relevance.probabilities("tell me about the horse", statements)
    prior = relevance.adapt_prior(["tell me about the horse", "and the river?"], statements)
    after = relevance.probabilities("tell me about the horse", statements)
    assert prior < 0.5 and np.all(after < before)
    assert np.argmax(after) == np.argmax(before)  # the order of statements is kept
    assert relevance.adapt_prior(["tell me about the horse", "and the river?"], statements) == pytest.approx(prior)


def test_surface_cues_see_other_numbers_names_and_negations():
    statement = "Orlando's horse is a grey mare named Vesper, named by his sister Isolde."
    same, other_name = surface_cues("My grey mare Vesper, a gift of my sister Isolde.", statement), \
        surface_cues("My horse is a black stallion called Thunder.", statement)
    assert same[0] > other_name[0] and other_name[2] >= 1 and same[2] == 0
    age = "Orlando was born in the spring of 458 of the Dawning and is twenty-nine years old."
    assert surface_cues("I am forty years old.", age)[1] == 1.0
    assert surface_cues("I am twenty-nine.", age)[1] == 0.0
    assert surface_cues("I have never married.", "Orlando has a wife.")[3] > 0


# Judges ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_judge():
    bundle = read_bundle(TINY_BUNDLE)
    engine = open_engine(str(bundle.model_path), bundle.model, EngineOptions(threads=1))
    return LocalJudge(engine, ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special), "tiny")


def test_the_local_judge_reads_next_token_log_probabilities(tiny_judge):
    pairs = [("I am twenty-nine.", "Orlando is twenty-nine."), ("I am twenty-nine.", "Orlando is unmarried."),
             ("My horse is Vesper.", "Orlando is twenty-nine.")]
    scores = tiny_judge.scores(pairs)
    assert scores.shape == (3, 3) and np.all(scores <= 0) and np.all(np.isfinite(scores))
    # Pairs about the same reply share its prompt: the scores equal those judged one at a time.
    alone = np.vstack([tiny_judge.scores([p]) for p in pairs])
    assert np.allclose(scores, alone, atol=1e-4)
    assert not np.allclose(scores[0], scores[1])  # the statement matters


def test_an_openai_compatible_judge_is_read_from_logprobs_or_from_its_text():
    top = [{"token": "contra", "logprob": -0.1}, {"token": " agree", "logprob": -2.5}]
    answers = [
        (200, {"choices": [{"message": {"content": "contra"}, "logprobs": {"content": [{"top_logprobs": top}]}}]}),
        (200, {"choices": [{"message": {"content": "Neither."}}]}),
        (400, {"error": "bad"}),
    ]
    with _Server(answers) as server:
        judge = make_judge(server.url + "#judge-model")
        assert isinstance(judge, EndpointJudge)
        scores = judge.scores([("I am forty.", "Orlando is twenty-nine."), ("Cider?", "Orlando is twenty-nine.")])
        assert scores[0].tolist() == [-2.5, -10.0, -0.1]  # entail, neutral, contradict
        assert scores[1].tolist() == [-10.0, 0.0, -10.0]
        path, _, sent = server.requests[0]
        assert path == "/v1/chat/completions"
        assert sent["model"] == "judge-model" and sent["max_tokens"] == 1 and sent["logprobs"] is True
        assert "Orlando is twenty-nine." in sent["messages"][1]["content"]
        with pytest.raises(ExportError, match="HTTP 400"):
            judge.scores([("x", "y")])


def test_an_unreachable_judge_or_unknown_spec_is_a_typed_error():
    with pytest.raises(ExportError, match="cannot reach"):
        EndpointJudge("http://127.0.0.1:9/v1", timeout=2, retries=0).scores([("a", "b")])
    with pytest.raises(ExportError, match="unknown judge"):
        make_judge("gpt-4")


def _tiny_cross_encoder(path: Path, vocab: int) -> None:
    """An ONNX cross-encoder stand-in: mean of token embeddings → 3 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
         helper.make_node("ReduceMean", ["emb", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "head"], ["logits"])],
        "tiny_nli",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])],
        [numpy_helper.from_array(rng.normal(size=(vocab, 8)).astype(np.float32), "table"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
         numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what the onnxruntime of the runtime reads
    onnx.save(model, str(path))


def test_a_user_supplied_onnx_cross_encoder_is_a_judge(tmp_path):
    tokenizer = TINY_BUNDLE / "embedder_tokenizer.json"
    vocab = json.loads(tokenizer.read_text())["model"]["vocab"]
    _tiny_cross_encoder(tmp_path / "nli.onnx", len(vocab))
    judge = make_judge(f"onnx:{tmp_path / 'nli.onnx'}:{tokenizer}")
    assert isinstance(judge, CrossEncoderJudge)
    pairs = [("I am forty.", "Orlando is twenty-nine."), ("My mare is Vesper.", "Orlando rides Vesper.")] * 10
    scores = judge.scores(pairs, batch_size=4)
    assert scores.shape == (20, 3) and np.allclose(scores[0], scores[2]) and not np.allclose(scores[0], scores[1])
    # The label order maps the model's outputs onto (entail, neutral, contradict).
    other = CrossEncoderJudge(tmp_path / "nli.onnx", tokenizer, labels=("entail", "neutral", "contradict"))
    # Default order (contradict, entail, neutral): scores = raw[[1, 2, 0]].
    raw = other.scores(pairs, batch_size=4)[0]
    assert np.allclose(raw[[1, 2, 0]], scores[0])
    with pytest.raises(ExportError, match="labels"):
        CrossEncoderJudge(tmp_path / "nli.onnx", tokenizer, labels=("yes", "no", "maybe"))
    with pytest.raises(ExportError, match="cannot load"):
        CrossEncoderJudge(tmp_path / "missing.onnx", tokenizer)


# lmpc eval --------------------------------------------------------------------------------------------------

def test_the_eval_set_loads_and_bad_ones_are_typed_errors(tmp_path):
    evalset = load_eval_set(EVAL_SET)
    assert len(evalset.conversations) >= 20 and any(len(c) > 1 for c in evalset.conversations)
    assert {topic for topic, _ in evalset.probes} >= {"drink", "weapons", "religion", "crime"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[probe]]\ntopic = "cooking"\nline = "Stew?"\n[[conversation]]\nlines = ["Hi"]\n')
    with pytest.raises(ExportError, match="topic"):
        load_eval_set(bad)


def test_lmpc_eval_writes_its_report_into_the_bundle(tiny_copy, tmp_path):
    """The CLI on the tiny bundle (its own model as judge), with a short set and a third of the labels."""
    (tmp_path / "set.toml").write_text(
        '[[conversation]]\nlines = ["What is your name?"]\n'
        '[[conversation]]\nlines = ["Who is your father?", "And your mother?"]\n'
        '[[probe]]\ntopic = "drink"\nline = "Pour me your strongest ale."\n')
    text = CALIBRATION.read_text()
    cut = [m.start() for m in re.finditer(r"^\[\[pair\]\]", text, re.MULTILINE)][60]
    (tmp_path / "cal.toml").write_text(text[:cut])
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "eval", str(tiny_copy), "--set", str(tmp_path / "set.toml"),
                          "--calibration", str(tmp_path / "cal.toml"), "--judge", f"local:{TINY_BUNDLE}",
                          "--seeds", "1", "2", "--out", str(tmp_path / "report.md"), "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tiny_copy / "eval_report.json").read_text())
    s = report["summary"]
    statements = len(persona_statements(read_bundle(tiny_copy).character))
    assert s["replies"] == 6 and s["probes"] == 2 and s["statements"] == statements
    assert 0 <= s["apc"] <= statements and 0 <= s["relevant_entailed"] <= 1
    for rate in ("slop_rate", "assistant_speak_rate", "repetition_rate", "refusal_rate"):
        assert 0 <= s[rate] <= 1
    assert report["estimators"]["pairs"] == 60 and report["estimators"]["judge"] == "local runtime, model of orlando_marlo"
    assert len(report["statements"]) == statements
    sat = [st["satisfaction"] for st in report["statements"]]
    assert sat == sorted(sat)  # worst first
    scored = [r for r in report["replies"] if "apc" in r]
    assert s["apc"] == pytest.approx(np.mean([r["apc"] for r in scored]))
    md = (tmp_path / "report.md").read_text()
    assert md == (tiny_copy / "eval_report.md").read_text() and "## Worst-kept statements" in md
    assert md == markdown(report)
    assert report["estimators"]["relevance"]["adapted_prior"] < report["estimators"]["relevance"]["trained_prior"]

    # Scored again from the report's own replies: the same replies, the same scores.
    run = subprocess.run([lmpc, "eval", str(tiny_copy), "--set", str(tmp_path / "set.toml"), "--rescore",
                          "--calibration", str(tmp_path / "cal.toml"), "--judge", f"local:{TINY_BUNDLE}",
                          "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    again = json.loads((tiny_copy / "eval_report.json").read_text())
    assert again["seeds"] == [1, 2] and again["replies"] == report["replies"]
    assert again["summary"] == report["summary"]


def test_eval_without_a_set_is_a_clear_error(tiny_copy):
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "eval", str(tiny_copy)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "eval_set.toml" in run.stderr and "Traceback" not in run.stderr


# The real model --------------------------------------------------------------------------------------------

def test_apc_with_the_real_models_ranks_a_faithful_reply_above_a_false_one(real_bundle):
    from lmpc_export.evaluate import prepare_scorer

    # The base model judges, as `lmpc eval` does by default. The demo NPC's own tuned model is a weaker
    # judge: with the adapter trained from zero it labelled 66.5 % of the calibration pairs right against
    # the base model's 69.6 %, and scored these two replies 70.62 and 70.75, the false one higher.
    judge = make_judge("local")
    scorer, estimators = prepare_scorer(real_bundle, CALIBRATION, judge)
    assert estimators["nli"]["accuracy"] > estimators["nli"]["majority_baseline"] + 0.15
    assert estimators["relevance"]["auc"] > 0.75
    question = "Who are you, and how old are you?"
    true = scorer.score(question, "Orlando Marlo, head of House Marlo, and I am twenty-nine this spring.")
    false = scorer.score(question, "My name is Alessia of Rome, and I am forty years old.")
    assert true.score > false.score
    age = scorer.statements.index(next(s for s in scorer.statements if "twenty-nine" in s))
    assert false.nli[age, 2] > true.nli[age, 2]  # the false reply contradicts his age more


def test_the_demo_bundle_carries_its_evaluation(real_bundle):
    report = json.loads((real_bundle / "eval_report.json").read_text())
    # Made on this very model: the base weights and the adapter merged into them.
    assert report["model"]["fingerprint"] == read_bundle(real_bundle).report["export"]["fingerprint"]
    tested = report["persona_test"]["summary"]
    assert tested["questions"] >= 120 and len(tested["by_run"]) >= 4 and 0 < tested["key_facts"] <= 1
    if "summary" in report:  # APC, when the report was made with it
        s = report["summary"]
        assert s["replies"] >= 38 and s["probes"] >= 12 and 0 < s["apc"] <= s["statements"]
        assert report["estimators"]["pairs"] >= 150
    assert (real_bundle / "eval_report.md").read_text().startswith("# Evaluation of orlando_marlo")
    assert load_eval_set(real_bundle / "eval_set.toml").conversations
    assert len(load_calibration(real_bundle / "apc_calibration.toml")) >= 150
