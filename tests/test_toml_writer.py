"""The TOML writer: whatever it writes, a TOML reader gives back unchanged."""

import sys

import pytest

from lmpc_export.toml_writer import drop_empty, dumps, strip_nulls
from lmpc_runtime.sheet import load_sheet, parse_sheet

from conftest import ORLANDO_SHEET

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_awkward_values_survive_a_round_trip():
    data = {
        "plain": "text",
        "quotes": 'she said "no" and left \\ twice',
        "multi": 'line one\nline "two"\n\ttabbed\r\nend with a quote"',
        "control": "bell\x07 and escape\x1b",
        "unicode": "Ælfric — naïve café ☀",
        "number": 42,
        "ratio": 0.25,
        "flag": False,
        "list": ["a", "b\nc", "long item " * 12],
        "empty_list": [],
        "mixed": [{"inline": 1, "deep": {"x": [1, 2]}}, {"inline": 2}],
        "needs quoting": {"key.with.dots": "v", "spaced key": ["x"], "": "empty key"},
        "table": {"inner": {"leaf": "value"}, "people": [{"name": "A"}, {"name": "B", "tags": ["t"]}]},
        "empty_table": {},
    }
    assert tomllib.loads(dumps(data)) == data


def test_the_demo_sheet_round_trips_through_the_writer():
    sheet = load_sheet(ORLANDO_SHEET)
    text = dumps(drop_empty(sheet.to_dict()))
    assert '"""' in text  # the backstory reads as a block of prose, not one escaped line
    assert "[[lorebook.entries]]" in text
    assert parse_sheet(tomllib.loads(text)) == sheet


def test_drop_empty_removes_what_a_sheet_reads_as_unset():
    assert drop_empty({"a": None, "b": "", "c": [], "d": {"e": ""}, "f": [{"g": None, "h": 0}], "i": False}) \
        == {"f": [{"h": 0}], "i": False}


def test_strip_nulls_reports_where():
    cleaned, dropped = strip_nulls({"a": None, "b": [1, None, {"c": None, "d": 2}], "e": {"f": None}})
    assert cleaned == {"b": [1, {"d": 2}], "e": {}}
    assert dropped == ["a", "b[1]", "b[2].c", "e.f"]


def test_values_toml_cannot_hold_are_refused():
    with pytest.raises(TypeError):
        dumps({"when": object()})
