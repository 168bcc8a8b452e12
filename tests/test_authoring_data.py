"""The demo character's authoring data: hand-written dialogues that pass hygiene, and an evaluation set that
no training line copies."""

import sys
from pathlib import Path

from lmpc_export.dialogues import dialogue_file_for, writer_dialogues
from lmpc_export.hygiene import Hygiene, jaccard, trigrams
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from persona_eval import read_questions  # noqa: E402

EVAL = REPO / "examples" / "eval" / "orlando_questions.txt"


def _written():
    sheet = load_sheet(ORLANDO_SHEET)
    return sheet, writer_dialogues(sheet, dialogue_file_for(ORLANDO_SHEET))


def test_the_eval_set_has_fifteen_questions_with_key_facts():
    questions = read_questions(EVAL)
    assert len(questions) == 15 and all(q.keys for q in questions)
    assert questions[0].hits("I am Orlando Marlo of Brightwater Hall.") == 3


def test_no_training_line_copies_an_eval_question():
    _, dialogues = _written()
    players = [player for d in dialogues for player, _ in d.turns]
    for q in read_questions(EVAL):
        grams = trigrams(q.text)
        close = [p for p in players if p.lower() == q.text.lower() or jaccard(grams, trigrams(p)) >= 0.4]
        assert not close, f"{q.text!r} is too close to training lines {close}"


def test_every_hand_written_reply_passes_hygiene():
    sheet, dialogues = _written()
    _, report = Hygiene(sheet).clean(dialogues)
    assert report.warnings == []
    assert sum(len(d.turns) for d in dialogues) >= 200


def test_the_dialogue_file_sits_beside_the_sheet():
    assert dialogue_file_for(ORLANDO_SHEET) == Path(str(ORLANDO_SHEET).replace(".toml", ".dialogues.toml"))
    assert dialogue_file_for(ORLANDO_SHEET).is_file()
