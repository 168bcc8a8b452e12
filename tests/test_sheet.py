import dataclasses
import tomllib

import pytest

from lmpc_runtime import SheetError, load_sheet
from lmpc_runtime.sheet import parse_sheet, sheet_from_dict

from conftest import ORLANDO_SHEET


def orlando_data() -> dict:
    return tomllib.loads(ORLANDO_SHEET.read_text(encoding="utf-8"))


def problems_of(data: dict) -> list[str]:
    with pytest.raises(SheetError) as caught:
        parse_sheet(data, "test.toml")
    return caught.value.problems


def test_demo_character_is_complete():
    sheet = load_sheet(ORLANDO_SHEET)
    assert sheet.name == "Orlando Marlo"
    assert len(sheet.examples) >= 40
    assert sheet.world.important_people and sheet.world.marginalised_important_people
    assert all(ex.player and ex.npc for ex in sheet.examples)
    assert sheet.fallback_lines


def test_round_trips_through_the_manifest_form():
    sheet = load_sheet(ORLANDO_SHEET)
    assert sheet_from_dict(sheet.to_dict()) == sheet


def test_every_problem_is_reported_at_once_with_its_place():
    data = orlando_data()
    del data["name"]
    data["values"] = "honesty"
    data["catchphrase"] = ["typo"]
    data["examples"][3]["npc"] = ""
    data["world"]["important_people"][0] = {"name": "Nobody"}
    problems = problems_of(data)
    assert "name: missing" in problems
    assert "values: expected a list of strings" in problems
    assert "catchphrase: unknown key (did you mean 'catchphrases'?)" in problems
    assert "examples[3].npc: must not be empty" in problems
    assert "world.important_people[0].description: missing" in problems


def test_a_name_alone_is_a_sheet_and_advice_lists_the_rest_most_useful_first():
    from lmpc_runtime.sheet import advice

    bare = parse_sheet({"format": 1, "name": "Wren"})
    assert bare.facts == () and bare.world.name == "" and bare.examples == ()
    gaps = advice(bare)
    assert gaps[0].startswith("facts:") and gaps[1].startswith("examples: 0;") and len(gaps) == 11
    # Nothing reads the alignment; the backstory counts only while no facts are written.
    assert not any(g.startswith("alignment") for g in gaps) and gaps[-1].startswith("backstory")
    assert not any(g.startswith("backstory") for g in advice(dataclasses.replace(bare, facts=("Wren sails.",))))
    # Fields written but left blank (as `lmpc new` writes them) are fields not written yet.
    blank = parse_sheet({"format": 1, "name": "Wren", "title": " ", "facts": [], "opinions": {},
                         "examples": [{"player": "", "npc": ""}]})
    assert blank == bare
    # A blank inside a list, or half an example, is still an error.
    data = orlando_data()
    data["facts"] = ["", "Orlando is a knight."]
    data["examples"][0]["npc"] = ""
    problems = problems_of(data)
    assert "facts[0]: must not be empty" in problems and "examples[0].npc: must not be empty" in problems
    assert advice(load_sheet(ORLANDO_SHEET)) == []


def test_newer_format_is_refused():
    data = orlando_data()
    data["format"] = 99
    assert any("newer than this LMPC reads" in p for p in problems_of(data))


@pytest.mark.parametrize("content, expected", [
    (b'name = "unterminated\n', "TOML syntax"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"format = 1\n", "name: missing"),
])
def test_unreadable_files(tmp_path, content, expected):
    path = tmp_path / "sheet.toml"
    path.write_bytes(content)
    with pytest.raises(SheetError) as caught:
        load_sheet(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(SheetError, match="cannot read"):
        load_sheet(tmp_path / "nope.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(SheetError, match="at most"):
        load_sheet(big)
