"""Hygiene filters on crafted lines: each reason catches what it should and lets good lines through."""

import pytest

from lmpc_export.dialogues import Dialogue
from lmpc_export.hygiene import REASONS, Hygiene, default_slop
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET

GOOD = [
    "No, goodman, I do not believe it is. I am working to end the Shade Tithe, though it is slow.",
    "Isolde is seventeen and sharper than I am. She wants to enter the Order, and I am proud and afraid.",
    "A computer? I have never heard the word, friend. Is it a Tessalian thing?",
    "I am Orlando Marlo, of Brightwater Hall. Sit, and tell me what brings you here.",
    "It is a sacred text, and I cannot help feeling that the Order keeps it from the faithful.",
]


@pytest.fixture(scope="module")
def hygiene():
    return Hygiene(load_sheet(ORLANDO_SHEET))


@pytest.mark.parametrize("line", GOOD)
def test_good_replies_pass(hygiene, line):
    assert hygiene.reply_problems(line) == []


@pytest.mark.parametrize("line, reason", [
    ("Certainly! The Council meets at dawn, and I will be there.", "slop"),
    ("It is a testament to the resilience of the people that they endure.", "slop"),
    ("Great question. The tithe is unjust, and I will end it.", "slop"),  # the sheet's own avoid_phrases
    ("I'm sorry, but I can't help with that request.", "refusal"),
    ("I cannot help you with that, but the Council may.", "refusal"),
    ("It's important to remember that everyone deserves respect.", "refusal"),
    ("Please note that duels are dangerous and should be avoided.", "refusal"),
    ("I am here to help you with anything you need about the kingdom.", "assistant_speak"),
    ("My purpose is to answer your questions about Luminara.", "assistant_speak"),
    ("As an AI, I do not have personal opinions about the king.", "assistant_speak"),
    ("Orlando Marlo smiles warmly and raises his cup to the room.", "assistant_speak"),
    ("Ser Orlando believes the tithe is unjust and wants it gone.", "assistant_speak"),
    ("Lady Isabella of Westmarch told me the king is dying.", "unknown_name"),
    ("I fought beside Sir Gareth at the Battle of Redwater.", "unknown_name"),
    ("Yes.", "malformed"),
    ("The Council meets at dawn and I intend to", "malformed"),
    ("*laughs* Of course I will come to the feast tonight.", "malformed"),
    ("Sure.\nUser: and then what?", "malformed"),
    ("The light, the light, the light, the light, the light, the light falls on all.", "repetition"),
    ("I will go to the Council. I will speak there. I will go to the Council.", "repetition"),
])
def test_bad_replies_are_caught_for_the_right_reason(hygiene, line, reason):
    assert reason in hygiene.reply_problems(line)
    assert reason in REASONS


def test_sentence_starts_and_sheet_names_are_not_unknown(hygiene):
    assert hygiene.unknown_names("Well. Jory Tallow and Marta Greyhand live in the Ashward. Truly!") == []
    found = hygiene.unknown_names("I rode with Sir Reginald to Westmarch's border, past Tessaly.")
    assert found == ["Reginald", "Westmarch"]


def test_player_lines_that_narrate_are_caught(hygiene):
    narration = "Orlando Marlo's gaze locks on the stranger as he speaks."
    assert "assistant_speak" in hygiene.player_problems(narration)
    assert hygiene.player_problems("What do you make of the Lantern Edict, my lord?") == []


def test_the_default_blacklist_loads():
    slop = default_slop()
    assert "as an ai" in slop and all(p == p.lower() and not p.startswith("#") for p in slop)


def _gen(*turns, context="scene"):
    return Dialogue(turns=tuple(turns), source="generated", context=context)


def test_clean_cuts_generated_dialogues_and_reports_why(hygiene):
    bad_first = _gen(("Who are you?", "As an AI, I cannot say."))
    cut = _gen(("Who are you?", GOOD[3]), ("And the king?", "Lady Isabella says he is dying."))
    bad_player = _gen(("Orlando Marlo nods slowly at the crowd.", GOOD[0]))
    writer = Dialogue(turns=(("Hello?", "Certainly! Good day to you, friend."),), source="writer")
    kept, report = hygiene.clean([bad_first, cut, bad_player, writer])
    assert kept == [Dialogue(cut.turns[:1], "generated", "scene"), writer]
    assert report.truncated == 1
    assert report.dropped == {"slop": 1, "assistant_speak": 1}  # a dialogue counts under its first reason
    assert report.considered == {"generated": 3, "writer": 1} and report.kept == {"generated": 1, "writer": 1}
    assert report.warnings == ["slop: Certainly! Good day to you, friend."]  # the writer's line stays
    assert report.examples["slop"] == ["As an AI, I cannot say."]


def test_near_duplicates_of_kept_replies_are_dropped(hygiene):
    writer = Dialogue(turns=(("Is that just?", GOOD[0]),), source="sheet")
    echo = _gen(("Is it fair?", GOOD[0].replace("goodman", "friend")))
    other = _gen(("Your sister?", GOOD[1]))
    kept, report = hygiene.clean([echo, other, writer])
    assert kept == [other, writer] and report.dropped == {"near_duplicate": 1}


def test_frequent_openings_are_downsampled(hygiene):
    topics = ["the harvest", "my sister", "the tithe", "the king", "the Sunspire", "cider", "the Ashward",
              "duels", "my mare", "the river", "the Council", "honey cake"]
    same = [_gen((f"And {t}?", f"Ah, my friend, {t} is a long story, and {t} deserves a better teller."))
            for t in topics]
    varied = [_gen(("Tell me.", line)) for line in GOOD]
    kept, report = hygiene.clean(same + varied)
    openings = [k.replies[0].split(",")[0] for k in kept]
    assert openings.count("Ah") == 3  # the floor: at most three replies may share an opening here
    assert report.dropped == {"frequent_opening": 9}
    assert all(v in kept for v in varied)


def test_a_name_the_player_said_first_is_not_an_invention(hygiene):
    reply = "I have never heard of France, friend. Is it past the Tessalian coast?"
    assert hygiene.reply_problems(reply, "What's the capital of France?") == []
    assert hygiene.reply_problems(reply) == ["unknown_name"]
