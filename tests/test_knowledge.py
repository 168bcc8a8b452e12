"""The writer's drills: the knowledge file's checks, how topics become exchanges, and statement coverage."""

from collections import Counter

import pytest

from lmpc_export.dialogues import Dialogue
from lmpc_export.hygiene import Hygiene
from lmpc_export.knowledge import Topic, coverage, drill_dialogues, load_knowledge, statement_refs
from lmpc_export.toml_writer import dumps
from lmpc_runtime.errors import SheetError
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET

SISTER = {"covers": ["fact:15", "opinion:His own family"],
          "questions": ["Have you brothers or sisters?", "Any siblings, my lord?", "Who is Isolde to you?"],
          "answers": ["One sister, Isolde, who is seventeen and sharper than I am.",
                      "Only my sister Isolde; she is seventeen and means to join the Order."]}
HORSE = {"covers": ["fact:50"], "questions": ["What is your horse called?", "Whose is the grey mare?"],
         "answers": ["Vesper, a grey mare; my sister named her.", "She is Vesper, and she is mine.",
                     "That is Vesper. Isolde chose the name."]}


def _topics(*tables):
    return [Topic(tuple(t["covers"]), tuple(t["questions"]), tuple(t["answers"])) for t in tables]


def _write(tmp_path, topics, character="Orlando Marlo"):
    path = tmp_path / "k.toml"
    path.write_text(dumps({"format": 1, "character": character, "topic": topics}))
    return path


def test_topics_load_with_their_statement_references(tmp_path):
    sheet = load_sheet(ORLANDO_SHEET)
    topics = load_knowledge(_write(tmp_path, [SISTER, HORSE]), sheet)
    assert [t.covers for t in topics] == [("fact:15", "opinion:His own family"), ("fact:50",)]
    refs = statement_refs(sheet)
    assert refs["fact:15"] == sheet.facts[14] and refs["opinion:His own family"].startswith("On His own family: ")
    assert len(refs) == len(sheet.facts) + len(sheet.values) + len(sheet.objectives) + len(sheet.opinions) + 8


def test_every_problem_of_a_knowledge_file_is_reported_at_once(tmp_path):
    bad = [{**SISTER, "covers": ["fact:99", "opinion:Cats"]}, {**HORSE, "answers": []},
           {**HORSE, "mood": "grim"}]
    with pytest.raises(SheetError) as err:
        load_knowledge(_write(tmp_path, bad, character="Someone Else"), load_sheet(ORLANDO_SHEET))
    text = str(err.value)
    for expected in ("character: 'Someone Else'", "fact:99, opinion:Cats", "topic[1].answers", "topic[2].mood"):
        assert expected in text


def test_each_question_is_asked_once_with_every_answer_said():
    topics = _topics(SISTER, HORSE)
    dialogues = drill_dialogues(topics, seed=3)
    # max(questions, answers) exchanges per topic: 3 for the sister, 3 for the horse
    assert len(dialogues) == 6 and all(d.source == "knowledge" for d in dialogues)
    for topic in topics:
        mine = [d for d in dialogues if d.covers == topic.covers]
        # questions in turn: the horse's first question comes twice, to say all three answers
        assert Counter(d.turns[-1][0] for d in mine) == Counter(topic.questions[i % len(topic.questions)]
                                                                for i in range(len(mine)))
        assert {d.turns[-1][1] for d in mine} == set(topic.answers)
    with_history = [d for d in dialogues if len(d.turns) > 1]
    for d in with_history:  # earlier turns come from the other topic
        last = next(t for t in topics if t.covers == d.covers)
        assert all(q not in last.questions for q, _ in d.turns[:-1])
    assert drill_dialogues(topics, seed=3) == dialogues


def test_coverage_counts_the_kept_exchanges_that_state_each_statement():
    sheet = load_sheet(ORLANDO_SHEET)
    dialogues = drill_dialogues(_topics(SISTER, HORSE), seed=0)
    counts = coverage(sheet, dialogues)
    assert counts["fact:15"] == 3 and counts["opinion:His own family"] == 3 and counts["fact:50"] == 3
    assert counts["fact:1"] == 0 and set(counts) == set(statement_refs(sheet))


def test_hygiene_cuts_a_drilled_dialogue_at_a_bad_reply_and_it_no_longer_covers_its_statement():
    sheet = load_sheet(ORLANDO_SHEET)
    good = ("Any siblings?", "One sister, Isolde, who is seventeen.")
    invented = ("And your horse?", "Her name is Brunhilda, and Count Zarkov gave her to me.")
    kept, report = Hygiene(sheet).clean([Dialogue((good, invented), "knowledge", covers=("fact:50",)),
                                         Dialogue((("Name?", "Orlando Marlo, of Brightwater Hall."),),
                                                  "knowledge", covers=("fact:1",))])
    assert [d.turns for d in kept] == [(good,), (("Name?", "Orlando Marlo, of Brightwater Hall."),)]
    # A writer's short question is not a generator's malformed line; the cut dialogue lost its covers.
    assert [d.covers for d in kept] == [(), ("fact:1",)] and report.truncated == 1

