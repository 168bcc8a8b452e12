"""Lorebook activation as the Character Card V2 spec describes it, plus gating and turn timers."""

import pytest

from lmpc_runtime import InvalidArgumentError, SheetError
from lmpc_runtime.memory.gating import GameState
from lmpc_runtime.memory.lorebook import LoreScanner
from lmpc_runtime.sheet import LoreEntry, Lorebook, load_sheet, parse_sheet, sheet_from_dict, tomllib

from conftest import ORLANDO_SHEET


def words(text):
    return len(text.split())


def scan(entries, messages, turn=1, facts=None, scanner=None, **book):
    scanner = scanner or LoreScanner(Lorebook(entries=tuple(entries), **book), words)
    return scanner.activate(messages, facts or GameState(), turn, "Orlando")


def entry(content, *keys, **fields):
    return LoreEntry(content=content, keys=keys, **fields)


def test_keys_trigger_only_within_the_scan_depth():
    lore = [entry("Aurelis is the capital.", "Aurelis")]
    assert scan(lore, ["Tell me of Aurelis.", "It is fair.", "And the river?"], scan_depth=2) == []
    assert scan(lore, ["Tell me of Aurelis.", "It is fair.", "And the river?"], scan_depth=3) == [
        "Aurelis is the capital."]
    assert scan(lore, ["Was that in aurelis?"]) == ["Aurelis is the capital."]  # case-insensitive by default


def test_case_sensitivity_and_whole_words():
    assert scan([entry("The prophet.", "Sol", case_sensitive=True)], ["sol is a word"]) == []
    assert scan([entry("The prophet.", "Sol")], ["Praise Solaris"]) == []
    assert scan([entry("The prophet.", "Sol", match_whole_words=False)], ["Praise Solaris"]) == ["The prophet."]
    assert scan([entry("The prophet.", "Sol")], ["Sol's first morning"]) == ["The prophet."]


@pytest.mark.parametrize("logic, message, expected", [
    ("and_any", "the grain and the silver", True),
    ("and_any", "the grain", False),
    ("and_all", "the grain, the silver", False),
    ("and_all", "the grain, the silver and the seal", True),
    ("not_any", "the grain", True),
    ("not_any", "the grain and the seal", False),
    ("not_all", "the grain and the seal", True),
    ("not_all", "the grain, the silver and the seal", False),
])
def test_selective_entries_combine_secondary_keys(logic, message, expected):
    lore = [entry("The grain was sold south.", "grain", selective=True, secondary_keys=("silver", "seal"),
                  selective_logic=logic)]
    assert (scan(lore, [message]) == ["The grain was sold south."]) is expected


def test_secondary_keys_are_ignored_unless_selective():
    assert scan([entry("x.", "grain", secondary_keys=("silver",))], ["grain"]) == ["x."]


def test_constant_disabled_and_insertion_order():
    lore = [
        entry("third.", "sister", insertion_order=30),
        entry("always.", constant=True, insertion_order=20),
        entry("never.", "sister", enabled=False),
        entry("first.", "sister", insertion_order=10),
    ]
    assert scan(lore, ["Who is your sister?"]) == ["first.", "always.", "third."]
    assert scan(lore, ["Nice weather."]) == ["always."]


def test_budget_discards_lowest_priority_first_and_keeps_constant_entries():
    lore = [
        entry("low priority entry here.", "king", priority=1, insertion_order=1),
        entry("high priority entry here.", "king", priority=9, insertion_order=3),
        entry("constant entry here.", constant=True, priority=0, insertion_order=2),
        entry("mid.", "king", priority=5, insertion_order=4),
    ]
    # 4 + 4 + 1 words fit in 9; the low-priority four-word entry does not.
    assert scan(lore, ["The king?"], token_budget=9) == ["constant entry here.", "high priority entry here.", "mid."]
    assert len(scan(lore, ["The king?"], token_budget=100)) == 4


def test_recursive_scanning_follows_keys_in_activated_content():
    lore = [entry("Isolde wants to join the Order.", "sister"), entry("The Order keeps the Testament.", "Order")]
    assert scan(lore, ["Your sister?"]) == ["Isolde wants to join the Order."]
    assert scan(lore, ["Your sister?"], recursive_scanning=True) == [
        "Isolde wants to join the Order.", "The Order keeps the Testament."]


def test_requires_gates_entries_on_the_game_facts():
    lore = [entry("The accounts are in the cellar.", "accounts", requires="quest.stage >= 3")]
    facts = GameState()
    assert scan(lore, ["Where are the accounts?"], facts=facts) == []
    facts.set("quest.stage", 3)
    assert scan(lore, ["Where are the accounts?"], facts=facts) == ["The accounts are in the cellar."]


def test_macros():
    facts = GameState()
    lore = [entry("{{char}} owes {{user}} a favour.", "favour")]
    assert scan(lore, ["a favour"], facts=facts) == ["Orlando owes the traveller a favour."]
    facts.set("player.name", "Mira")
    assert scan(lore, ["a favour"], facts=facts) == ["Orlando owes Mira a favour."]


def test_sticky_cooldown_and_delay_count_player_turns():
    scanner = LoreScanner(Lorebook(entries=(
        entry("sticky.", "bell", sticky=2),
        entry("cool.", "horn", cooldown=2),
        entry("late.", "drum", delay=3),
    )), words)

    def turn(n, message):
        return scanner.activate([message], GameState(), n, "Orlando")

    assert turn(1, "bell horn drum") == ["sticky.", "cool."]
    assert turn(2, "nothing") == ["sticky."]  # sticky for 2 more turns
    assert turn(3, "horn") == ["sticky."]  # horn cools down during turns 2-3
    assert turn(4, "horn drum") == ["cool.", "late."]  # delay 3: from turn 4 on
    assert turn(5, "nothing") == []
    state = scanner.state()
    again = LoreScanner(scanner.book, words)
    again.restore(state)
    assert again.activate(["horn"], GameState(), 6, "Orlando") == scanner.activate(["horn"], GameState(), 6, "Orlando")
    with pytest.raises(InvalidArgumentError):
        again.restore({"#0": [1, "x"]})


LORE_TOML = '''
[lorebook]
scan_depth = 3
token_budget = 120
recursive_scanning = true

[[lorebook.entries]]
keys = ["cellar", "accounts"]
content = "The grain accounts are hidden in the old cellar of Brightwater Hall."
requires = "quest.stage >= 3"
priority = 5
id = 7

[[lorebook.entries]]
constant = true
content = "It is the week of the harvest fair."
'''


def orlando_with(lore_toml):
    """The demo sheet with its lorebook replaced by `lore_toml`."""
    data = tomllib.loads(ORLANDO_SHEET.read_text())
    data["lorebook"] = tomllib.loads(lore_toml)["lorebook"]
    return parse_sheet(data, "orlando+lore")


def test_sheet_lorebook_is_read_and_survives_the_bundle_round_trip():
    sheet = orlando_with(LORE_TOML)
    book = sheet.lorebook
    assert (book.scan_depth, book.token_budget, book.recursive_scanning) == (3, 120, True)
    assert book.entries[0].keys == ("cellar", "accounts") and book.entries[0].id == 7
    assert book.entries[1].constant and book.entries[1].insertion_order == 100
    assert sheet_from_dict(sheet.to_dict()) == sheet
    demo = load_sheet(ORLANDO_SHEET)
    assert demo.lorebook.entries and all(e.requires for e in demo.lorebook.entries)
    assert sheet_from_dict(demo.to_dict()) == demo
    without = tomllib.loads(ORLANDO_SHEET.read_text())
    del without["lorebook"]
    assert parse_sheet(without).lorebook == Lorebook()


@pytest.mark.parametrize("entry_toml, problem", [
    ('content = "x"', "needs at least one key"),
    ('keys = ["a"]\ncontent = "x"\nselective_logic = "maybe"', "selective_logic: must be one of"),
    ('keys = ["a"]\ncontent = "x"\nposition = "middle"', "position: must be one of"),
    ('keys = ["a"]\ncontent = "x"\nrequires = "stage >="', "requires: condition"),
    ('keys = ["a"]\ncontent = "x"\nsticky = -1', "sticky: must be between"),
    ('keys = ["a"]\ncontent = "x"\nconstnt = true', "did you mean 'constant'"),
    ('keys = ["a"]\ncontent = "x"\nenabled = "yes"', "expected true or false"),
    ('keys = ["a"]\ncontent = "x"\nid = 7\n[[lorebook.entries]]\nkeys = ["b"]\ncontent = "y"\nid = 7',
     "used by an earlier entry"),
    ('keys = [""]\ncontent = "x"', "must not be empty"),
])
def test_sheet_lorebook_problems_are_listed_with_their_place(entry_toml, problem):
    with pytest.raises(SheetError) as caught:
        orlando_with(f"\n[lorebook]\n[[lorebook.entries]]\n{entry_toml}\n")
    assert any(problem in p and p.startswith("lorebook.entries[") for p in caught.value.problems), \
        caught.value.problems
