import pytest

from lmpc_runtime import InvalidArgumentError
from lmpc_runtime.memory.gating import GameState, parse_condition


@pytest.fixture
def facts():
    state = GameState()
    state.set("quest.stage", 3)
    state.set("player.name", "Mira")
    state.set("player.is_thief", False)
    state.set("gold", 12.5)
    return state


@pytest.mark.parametrize("condition, expected", [
    ("", True),
    ("quest.stage >= 3", True),
    ("quest.stage > 3", False),
    ("quest.stage == 3.0", True),
    ('player.name == "Mira" and not player.is_thief', True),
    ("player.name == 'mira'", False),
    ("player.is_thief == false", True),
    ("gold < 20 and gold >= 12.5", True),
    ("quest.stage == 3 and (player.is_thief or gold > 10)", True),
    ("not (quest.stage == 3)", False),
    ("a or b and c", False),
    # A fact never set: false alone, unequal to anything, never ordered.
    ("met_isolde", False),
    ("not met_isolde", True),
    ("met_isolde != 2", True),
    ("met_isolde < 2 or met_isolde >= 2", False),
    # Different kinds are never equal or ordered.
    ('quest.stage >= "3"', False),
    ("quest.stage == true", False),
    ("player.is_thief < true", False),
])
def test_conditions(facts, condition, expected):
    assert parse_condition(condition)(facts) is expected


@pytest.mark.parametrize("bad", [
    "quest.stage >=", "a b", "(a", "a ==== b", "1 +", '"unterminated', "and", "a == b == c",
    "__import__('os').system('echo pwned')", "quest.stage; rm", "x" * 1001, "(" * 40 + "a" + ")" * 40,
    "not " * 40 + "a",
])
def test_malformed_conditions_are_refused_with_the_place(bad):
    with pytest.raises(InvalidArgumentError, match="condition"):
        parse_condition(bad)


def test_condition_names():
    assert parse_condition("quest.stage > 2 or not player.name == 'x'").names() == {"quest.stage", "player.name"}


@pytest.mark.parametrize("name, value", [
    ("", 1), ("quest..stage", 1), ("1quest", 1), ("and", True), ("q" * 65, 1),
    ("quest.stage", None), ("quest.stage", [3]), ("quest.stage", float("nan")), ("quest.stage", 1 << 64),
    ("player.name", "x" * 257),
])
def test_facts_are_checked(name, value):
    with pytest.raises(InvalidArgumentError):
        GameState().set(name, value)


def test_replace_is_all_or_nothing(facts):
    before = dict(facts)
    with pytest.raises(InvalidArgumentError):
        facts.replace({"quest.stage": 4, "bad name": 1})
    assert dict(facts) == before
    facts.unset("gold")
    facts.unset("never.set")
    assert "gold" not in facts and facts["quest.stage"] == 3
