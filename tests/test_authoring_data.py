"""The demo characters' authoring data: hand-written dialogues and drills that pass hygiene and cover every
statement of their sheets, held-out tests and evaluation sets that no training line copies, and the
hand-labelled APC calibration pairs."""

import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from lmpc_export.dialogues import dialogue_file_for, writer_dialogues
from lmpc_export.hygiene import Hygiene, jaccard, trigrams
from lmpc_export.knowledge import coverage, drill_dialogues, knowledge_file_for, load_knowledge
from lmpc_export.action_test import NONE, action_test_file_for, load_action_test
from lmpc_export.persona_test import load_persona_test, persona_test_file_for
from lmpc_runtime.actions import split_tail
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from persona_eval import read_questions  # noqa: E402

EVAL = REPO / "examples" / "eval" / "orlando_questions.txt"
EVAL_SET = REPO / "examples" / "characters" / "orlando_marlo.eval.toml"
CALIBRATION = REPO / "examples" / "characters" / "orlando_marlo.apc_calibration.toml"
PROBE_TOPICS = {"drink", "weapons", "religion", "crime", "violence", "romance"}
CHARACTERS = [ORLANDO_SHEET.with_name(f"{name}.toml") for name in ("orlando_marlo", "marta_greyhand", "jory_tallow")]
# Least drilled exchanges, after hygiene, for the demo NPC and for each regular.
LEAST_EXCHANGES = {"Orlando Marlo": 800, "Marta Greyhand": 200, "Jory Tallow": 200}


def _written(sheet_path=ORLANDO_SHEET):
    """The sheet and every hand-written training dialogue: examples, the dialogue file, the drills."""
    sheet = load_sheet(sheet_path)
    dialogue_file = dialogue_file_for(sheet_path)
    dialogues = writer_dialogues(sheet, dialogue_file if dialogue_file.is_file() else None)
    return sheet, dialogues + drill_dialogues(load_knowledge(knowledge_file_for(sheet_path), sheet))


def test_the_eval_set_has_fifteen_questions_with_key_facts():
    questions = read_questions(EVAL)
    assert len(questions) == 15 and all(q.keys for q in questions)
    assert questions[0].hits("I am Orlando Marlo of Brightwater Hall.") == 3


def _assert_no_training_line_copies(lines, sheet_path=ORLANDO_SHEET):
    sheet, dialogues = _written(sheet_path)
    players = {player for d in dialogues for player, _ in d.turns}
    players |= {q for t in load_knowledge(knowledge_file_for(sheet_path), sheet) for q in t.questions}
    for line in lines:
        grams = trigrams(line)
        close = [p for p in players if p.lower() == line.lower() or jaccard(grams, trigrams(p)) >= 0.4]
        assert not close, f"{line!r} is too close to training lines {close}"


def test_no_training_line_copies_an_eval_question():
    _assert_no_training_line_copies(q.text for q in read_questions(EVAL))


def _eval_set():
    with open(EVAL_SET, "rb") as f:
        return tomllib.load(f)


def test_the_eval_set_holds_the_old_questions_plus_multi_turn_talks_and_probes():
    held_out = _eval_set()
    conversations, probes = held_out["conversation"], held_out["probe"]
    single = [c["lines"][0] for c in conversations if len(c["lines"]) == 1]
    assert len(single) == 20 and single[:15] == [q.text for q in read_questions(EVAL)]
    assert sorted(len(c["lines"]) for c in conversations if len(c["lines"]) > 1) == [3] * 6
    assert Counter(p["topic"] for p in probes) == {topic: 2 for topic in PROBE_TOPICS}


def test_no_training_line_copies_a_line_of_the_eval_set():
    held_out = _eval_set()
    lines = [line for c in held_out["conversation"] for line in c["lines"]] + [p["line"] for p in held_out["probe"]]
    _assert_no_training_line_copies(lines)


def _sheet_statements(sheet):
    """Every persona statement in the exact forms the calibration pairs quote them."""
    return (set(sheet.facts)
            | {f"Orlando values: {v}" for v in sheet.values}
            | {f"Orlando's aim: {o}" for o in sheet.objectives}
            | {f"Orlando's opinion of {topic}: {opinion}" for topic, opinion in sheet.opinions.items()})


def test_the_calibration_pairs_quote_the_sheet_and_carry_valid_labels():
    with open(CALIBRATION, "rb") as f:
        pairs = tomllib.load(f)["pair"]
    statements = _sheet_statements(load_sheet(ORLANDO_SHEET))
    assert len(pairs) >= 150
    for pair in pairs:
        assert pair["statement"] in statements, f"not a sheet statement: {pair['statement']!r}"
        assert pair["label"] in ("entail", "contradict", "neutral")
        assert isinstance(pair["relevant"], bool)
        assert pair["question"].strip() and pair["reply"].strip()
    labels = Counter(pair["label"] for pair in pairs)
    assert min(labels[label] for label in ("entail", "contradict", "neutral")) >= 40, labels


def test_every_hand_written_reply_passes_hygiene():
    sheet = load_sheet(ORLANDO_SHEET)
    dialogues = writer_dialogues(sheet, dialogue_file_for(ORLANDO_SHEET))
    _, report = Hygiene(sheet).clean(dialogues)
    assert report.warnings == []
    assert sum(len(d.turns) for d in dialogues) >= 200


@pytest.mark.parametrize("sheet_path", CHARACTERS, ids=lambda p: p.stem)
def test_no_training_line_copies_a_line_of_the_persona_test(sheet_path):
    questions = load_persona_test(persona_test_file_for(sheet_path), load_sheet(sheet_path).name)
    _assert_no_training_line_copies([line for q in questions for line in q.lines], sheet_path)


def test_the_action_test_is_held_out_and_asks_for_every_action_and_for_none():
    sheet = load_sheet(ORLANDO_SHEET)
    scenarios = load_action_test(action_test_file_for(ORLANDO_SHEET), sheet)
    expected = Counter(s.expect.split()[0] for s in scenarios)
    assert len(scenarios) >= 40 and set(expected) == {a.name for a in sheet.actions} | {NONE}, expected
    assert min(expected.values()) >= 10
    _assert_no_training_line_copies([line for s in scenarios for line in s.lines], ORLANDO_SHEET)


def test_the_writers_dialogues_teach_when_to_act_and_when_not():
    sheet = load_sheet(ORLANDO_SHEET)
    tails = Counter()
    for dialogue in writer_dialogues(sheet, dialogue_file_for(ORLANDO_SHEET)):
        _, tags = split_tail(dialogue.turns[-1][1])
        actions = [t.name for t in tags if t.kind == "action"]
        if any(t.kind == "emotion" for t in tags):
            tails[actions[0] if actions else NONE] += 1
    assert min(tails[name] for name in ("give_item", "end_conversation", NONE)) >= 30, tails


@pytest.mark.parametrize("sheet_path", CHARACTERS, ids=lambda p: p.stem)
def test_the_drills_cover_every_statement_of_the_sheet_several_times(sheet_path):
    """Every fact, value, objective, opinion and person is stated by at least three kept drilled
    exchanges, and the drills give enough exchanges in all."""
    sheet, dialogues = _written(sheet_path)
    kept, report = Hygiene(sheet).clean(dialogues)
    counts = coverage(sheet, kept)
    thin = {ref: n for ref, n in counts.items() if n < 3}
    assert not thin, f"statements with fewer than 3 exchanges: {thin}"
    drilled = [d for d in kept if d.source == "knowledge"]
    assert len(drilled) >= LEAST_EXCHANGES[sheet.name]
    assert len(drilled) >= 0.97 * sum(d.source == "knowledge" for d in dialogues), report.dropped


def test_the_dialogue_file_sits_beside_the_sheet():
    assert dialogue_file_for(ORLANDO_SHEET) == Path(str(ORLANDO_SHEET).replace(".toml", ".dialogues.toml"))
    assert dialogue_file_for(ORLANDO_SHEET).is_file()
