"""The held-out persona test: its file's checks, how a reply is scored, the summary per category and run,
and `lmpc eval --no-apc` answering it through the runtime."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmpc_export.persona_test import (CATEGORIES, GREEDY, PersonaTestScorer, ScoredReply, load_persona_test,
                                      summarise)
from lmpc_export.toml_writer import dumps
from lmpc_runtime.errors import ExportError
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, TINY_BUNDLE

QUESTIONS = [
    {"category": "identity", "lines": ["Who are you, then?"], "must": [r"\borlando\b", "marlo"],
     "must_not": [r"\bi(.m| am) an? (ai|assistant)\b"]},
    {"category": "family", "lines": ["Any family?", "And how old is she?"], "must": ["seventeen|17"],
     "must_not": [r"\bhusband\b"]},
]


def _file(tmp_path, questions=QUESTIONS, character="Orlando Marlo"):
    path = tmp_path / "test.toml"
    path.write_text(dumps({"format": 1, "character": character, "question": questions}))
    return path


def test_questions_load_with_compiled_case_blind_patterns(tmp_path):
    questions = load_persona_test(_file(tmp_path), "Orlando Marlo")
    assert [q.category for q in questions] == ["identity", "family"]
    assert questions[1].lines == ("Any family?", "And how old is she?")
    assert questions[0].must[0].search("ORLANDO speaking")


@pytest.mark.parametrize("change, message", [
    ({"category": "gossip"}, "category"),
    ({"must": []}, "`must`"),
    ({"lines": "Who are you?"}, "`lines`"),
    ({"must": ["(unclosed"]}, "bad regex"),
])
def test_a_bad_question_is_a_typed_error_naming_it(tmp_path, change, message):
    with pytest.raises(ExportError, match=message):
        load_persona_test(_file(tmp_path, [QUESTIONS[0], {**QUESTIONS[1], **change}]))


def test_a_test_of_another_character_is_refused(tmp_path):
    with pytest.raises(ExportError, match="is not 'Orlando Marlo'"):
        load_persona_test(_file(tmp_path, character="Marta Greyhand"), "Orlando Marlo")


def test_a_reply_scores_the_share_of_key_facts_and_nothing_when_it_says_what_it_must_not(tmp_path):
    scorer = PersonaTestScorer(load_sheet(ORLANDO_SHEET), load_persona_test(_file(tmp_path)))
    full = scorer.score(0, "1", "Orlando Marlo, of Brightwater Hall, at your service.")
    half = scorer.score(0, "1", "I am Orlando, a knight of this kingdom.")
    wrong = scorer.score(1, "1", "She is seventeen, and her husband is a baker.")
    assert (full.facts, half.facts, wrong.facts) == (1.0, 0.5, 0.0)
    assert wrong.wrong == (r"\bhusband\b",) and full.problems == ()


def test_invented_names_assistant_speak_and_loops_are_flagged(tmp_path):
    scorer = PersonaTestScorer(load_sheet(ORLANDO_SHEET), load_persona_test(_file(tmp_path)))
    assert scorer.score(0, "1", "I am Orlando Marlo, cousin of King Alcibiathos.").problems == ("invented_name",)
    assert "assistant_speak" in scorer.score(0, "1", "As an AI language model, I am here to help you.").problems
    loop = "I am Orlando Marlo. I am Orlando Marlo. I am Orlando Marlo."
    assert scorer.score(0, "1", loop).problems == ("loop",)
    assert scorer.score(0, "1", "Orlando Marlo.", finish="repetition").problems == ("loop",)


def test_the_summary_gives_key_facts_per_category_per_run_and_problem_rates(tmp_path):
    questions = load_persona_test(_file(tmp_path))
    scored = [ScoredReply(0, "1", "", 1.0, (), ()), ScoredReply(1, "1", "", 0.0, ("x",), ()),
              ScoredReply(0, GREEDY, "", 0.5, (), ("invented_name",)), ScoredReply(1, GREEDY, "", 1.0, (), ())]
    s = summarise(questions, scored)
    assert s["key_facts"] == pytest.approx(0.625) and s["key_facts_sampled"] == pytest.approx(0.5)
    assert s["key_facts_greedy"] == pytest.approx(0.75) and s["by_run"] == {"1": 0.5, GREEDY: 0.75}
    assert s["by_category"] == {"identity": 0.75, "family": 0.5}
    assert s["wrong"] == 0.25 and s["invented_name"] == 0.25 and s["loop"] == 0



def test_the_summary_type_checks_the_actions_replies_ended_with(tmp_path):
    from lmpc_runtime.sheet import Action

    questions = load_persona_test(_file(tmp_path))
    give = Action("give_item", args={"item": ["father_letter"]})
    scored = [ScoredReply(0, "1", "", 1.0, (), (), ("give_item item=father_letter",)),
              ScoredReply(1, "1", "", 1.0, (), (), ("give_item item=coin",)), ScoredReply(0, GREEDY, "", 1.0, (), ())]
    s = summarise(questions, scored, [give])
    assert s["acted"] == pytest.approx(2 / 3) and (s["actions_emitted"], s["actions_valid"]) == (2, 1)


def test_lmpc_eval_answers_the_persona_test_with_each_seed_and_greedily(tmp_path):
    out, bundle = tmp_path / "report.md", tmp_path / "tiny.lmpc"
    shutil.copytree(TINY_BUNDLE, bundle)
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "eval", str(bundle), "--no-apc", "--persona-test", str(_file(tmp_path)),
                          "--seeds", "1", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "persona test, 2 questions" in run.stderr
    report = json.loads((bundle / "eval_report.json").read_text())["persona_test"]
    assert report["summary"]["by_run"].keys() == {"1", "2", GREEDY}
    assert len(report["replies"]) == 2 * 3  # the last reply of each question, per run
    assert "## Persona test" in out.read_text()


def test_the_demo_persona_test_covers_every_category_with_at_least_120_questions():
    questions = load_persona_test(ORLANDO_SHEET.with_name("orlando_marlo.persona_test.toml"), "Orlando Marlo")
    assert len(questions) >= 120 and {q.category for q in questions} == set(CATEGORIES)
    for name in ("marta_greyhand", "jory_tallow"):
        regular = load_persona_test(ORLANDO_SHEET.with_name(f"{name}.persona_test.toml"))
        assert len(regular) >= 40 and {q.category for q in regular} == set(CATEGORIES)
