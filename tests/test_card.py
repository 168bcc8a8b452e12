"""Character Card import: a complete V2 JSON card, V3 and V2 PNG cards made here, V1, and broken cards."""

import base64
import dataclasses
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from lmpc_export.card import card_to_sheet, import_card, read_card
from lmpc_runtime.errors import SheetError
from lmpc_runtime.sheet import parse_sheet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A complete chara_card_v2, every field of the spec filled the way a SillyTavern user would fill it.
V2_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Wren Halloway",
        "description": ("{{char}} is the lighthouse keeper of Gull Rock, a widow of fifty who has kept the "
                        "lamp for thirty years.\nShe distrusts the harbour guild and feeds every stray cat "
                        "on the island."),
        "personality": "Gruff, dry-witted, fiercely loyal, superstitious about the sea.",
        "scenario": "A storm has driven {{user}}'s boat onto the rocks below {{char}}'s lighthouse.",
        "first_mes": "*The door bangs open.* Well, don't just drip on my floor. Inside, quick.",
        "mes_example": ("<START>\n{{user}}: Who are you?\n{{char}}: Wren. I keep the light. Who are you, "
                        "and why are you bleeding on my step?\n<START>\n{{user}}: Is the storm going to "
                        "pass?\n{{char}}: By dawn, if the gulls are right.\nThey usually are.\n"
                        "{{user}}: And if not?\n{{char}}: Then we drink my brother's rum and wait.\n"
                        "<START>\n{{char}}: You again."),
        "creator_notes": "Works best with slow-burn mystery scenarios.",
        "system_prompt": "{{original}} Write {{char}}'s replies in a terse, salty style.",
        "post_history_instructions": "Keep {{char}} in character; never break the fourth wall.",
        "alternate_greetings": ["Lamp's lit. You're late.", "Another wreck. Sit."],
        "character_book": {
            "name": "Gull Rock",
            "description": "Lore of the island",
            "scan_depth": 4,
            "token_budget": 512,
            "recursive_scanning": False,
            "extensions": {},
            "entries": [
                {"keys": ["guild", "harbour guild"],
                 "content": "The harbour guild owns every boat but Wren's.",
                 "extensions": {"depth": 4, "selectiveLogic": 3, "sticky": 2}, "enabled": True,
                 "insertion_order": 100, "case_sensitive": False,
                 "name": "guild", "priority": 10, "id": 1, "comment": "", "selective": False,
                 "secondary_keys": [], "constant": False, "position": "before_char"},
                {"keys": ["lamp"], "content": "The lamp burns whale oil; {{char}} hates the smell.",
                 "extensions": {}, "enabled": True, "insertion_order": 50, "constant": True, "id": 2,
                 "use_regex": False},
            ],
        },
        "tags": ["fantasy", "mystery", "female"],
        "creator": "someone@example",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "fav": False, "world": "Gull Rock",
                       "depth_prompt": {"prompt": "", "depth": 4, "role": "system"},
                       "some_frontend/custom": {"colour": "#ffcc00", "unused": None}},
    },
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(text_chunks: dict[str, dict], damage: bool = False) -> bytes:
    """A real 1x1 PNG with each card base64-encoded in a tEXt chunk, as SillyTavern writes them."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x80\x00")
    chunks = [_png_chunk(b"IHDR", ihdr)]
    for keyword, card in text_chunks.items():
        encoded = base64.b64encode(json.dumps(card).encode())
        chunks.append(_png_chunk(b"tEXt", keyword.encode() + b"\0" + encoded))
    chunks += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    png = b"\x89PNG\r\n\x1a\n" + b"".join(chunks)
    if damage:
        at = png.index(b"tEXt") + 20
        png = png[:at] + bytes([png[at] ^ 1]) + png[at + 1:]
    return png


def test_a_v2_json_card_maps_field_by_field(tmp_path):
    path = tmp_path / "wren.json"
    path.write_text(json.dumps(V2_CARD))
    result = card_to_sheet(read_card(path))
    sheet, data = result.sheet, V2_CARD["data"]
    assert result.spec == "chara_card_v2"
    assert sheet["name"] == "Wren Halloway"
    assert sheet["summary"] == data["personality"]
    assert sheet["backstory"] == data["description"].replace("{{char}}", "Wren Halloway")
    assert sheet["greeting"] == data["first_mes"]
    assert sheet["world"] == {"description": data["scenario"].replace("{{char}}", "Wren Halloway")}
    assert sheet["examples"] == [
        {"player": "Who are you?",
         "npc": "Wren. I keep the light. Who are you, and why are you bleeding on my step?"},
        {"player": "Is the storm going to pass?",
         "npc": "By dawn, if the gulls are right.\nThey usually are."},
        {"player": "And if not?", "npc": "Then we drink my brother's rum and wait."},
    ]
    kept = sheet["extensions"]["chara_card"]
    # Everything the sheet has no field for is kept, verbatim.
    for key in ("creator_notes", "system_prompt", "post_history_instructions", "alternate_greetings", "tags",
                "creator", "character_version", "mes_example"):
        assert kept[key] == data[key], key
    # The lorebook becomes the sheet's: the fields both know, SillyTavern's extensions read, the rest kept.
    lore, book = sheet["lorebook"], data["character_book"]
    assert "character_book" not in kept
    assert {k: lore[k] for k in ("name", "description", "scan_depth", "token_budget", "recursive_scanning")} == \
        {k: book[k] for k in ("name", "description", "scan_depth", "token_budget", "recursive_scanning")}
    guild, lamp = lore["entries"]
    assert guild["keys"] == ["guild", "harbour guild"] and guild["priority"] == 10 and guild["id"] == 1
    assert guild["selective_logic"] == "and_all" and guild["sticky"] == 2 and guild["position"] == "before_char"
    assert guild["extensions"] == {"depth": 4}
    assert lamp["constant"] is True and lamp["insertion_order"] == 50
    assert lamp["extensions"] == {"chara_card": {"use_regex": False}}
    assert kept["extensions"]["some_frontend/custom"] == {"colour": "#ffcc00"}  # the null could not be kept
    assert kept["spec"] == "chara_card_v2" and kept["spec_version"] == "2.0"
    # What the card lacks is listed, and the notes say what was done.
    assert result.problems == []  # it builds as it is
    assert result.advice[0].startswith("facts:") and any("examples: 3;" in a for a in result.advice)
    assert any(a.startswith("world.name") for a in result.advice)  # the card names no world
    assert any("with no player line" in n for n in result.notes)
    assert "{{user}}" in sheet["world"]["description"]  # resolved at run time, with the player's name
    assert any("some_frontend/custom.unused" in n for n in result.notes)


def test_the_written_sheet_is_toml_that_reads_back_builds_and_gives_advice(tmp_path):
    card = tmp_path / "wren.json"
    card.write_text(json.dumps(V2_CARD))
    out = tmp_path / "wren.toml"
    result = import_card(card, out)
    text = out.read_text()
    assert tomllib.loads(text) == result.sheet
    assert "# It builds as it is" in text and "#   facts: none" in text
    assert parse_sheet(tomllib.loads(text)).name == "Wren Halloway"


def test_completing_the_draft_gives_a_valid_sheet(tmp_path):
    card = tmp_path / "wren.json"
    card.write_text(json.dumps(V2_CARD))
    sheet = card_to_sheet(read_card(card)).sheet
    sheet.update(title="Keeper of the Gull Rock light", alignment="Neutral Good",
                 speech_style="Terse and salty.",
                 values=["Loyalty"], objectives=["Keep the light burning"], facts=["Wren keeps the lamp."],
                 opinions={"The guild": "Thieves."})
    sheet["world"].update(name="Gull Rock", political_order="A guild town.", powers="None.",
                          marginalised_groups="Wreckers.",
                          important_people=[{"name": "A", "description": "B"}],
                          marginalised_important_people=[{"name": "C", "description": "D"}])
    sheet["examples"] = sheet["examples"] * 4
    assert parse_sheet(sheet).name == "Wren Halloway"


def test_an_imported_lorebook_triggers_in_conversation():
    from lmpc_runtime.memory.lorebook import LoreScanner

    sheet = card_to_sheet(V2_CARD).sheet
    for key in ("title", "alignment", "speech_style"):
        sheet[key] = "-"
    sheet.update(values=["-"], objectives=["-"], facts=["-"], opinions={"-": "-"})
    sheet["world"].update(name="-", political_order="-", powers="-", marginalised_groups="-",
                          important_people=[{"name": "-", "description": "-"}],
                          marginalised_important_people=[{"name": "-", "description": "-"}])
    sheet["examples"] = sheet["examples"] * 4
    lore = LoreScanner(parse_sheet(sheet).lorebook, lambda text: len(text.split()))
    facts = {"player.name": "Mira"}
    # The constant entry always; the guild entry only when a line names the guild.
    assert lore.activate(["Nice weather."], facts, 1, "Wren Halloway") == [
        "The lamp burns whale oil; Wren Halloway hates the smell."]
    assert "The harbour guild owns every boat but Wren's." in lore.activate(
        ["Who runs the harbour guild?"], facts, 2, "Wren Halloway")


def test_a_cards_description_reaches_the_prompt_and_the_memories():
    """A card's description becomes the sheet's backstory; with no facts written, its sentences are who the
    character is: the first two in the system prompt, all of them indexed for recall."""
    from lmpc_export.memories import sheet_statements
    from lmpc_runtime.persona import system_prompt

    sheet = parse_sheet(card_to_sheet(V2_CARD).sheet)
    assert not sheet.facts
    prompt = system_prompt(sheet)
    assert "the lighthouse keeper of Gull Rock, a widow of fifty" in prompt
    assert "feeds every stray cat on the island." in prompt
    statements = sheet_statements(sheet, "")
    assert [(text[:27], source) for text, _, source in statements if source.startswith("backstory")] == [
        ("Wren Halloway is the lighth", "backstory[0]"), ("She distrusts the harbour g", "backstory[1]")]
    # A sheet with facts keeps its backstory out of both: the facts say it.
    with_facts = dataclasses.replace(sheet, facts=("Wren keeps the light of Gull Rock.",))
    assert "widow of fifty" not in system_prompt(with_facts)
    assert not any(source.startswith("backstory") for _, _, source in sheet_statements(with_facts, ""))


def test_a_png_card_prefers_the_v3_chunk(tmp_path):
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0",
          "data": {**V2_CARD["data"], "name": "Wren of the Rock", "nickname": "Wren",
                   "group_only_greetings": [],
                   "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]}}
    path = tmp_path / "wren.png"
    path.write_bytes(make_png({"chara": V2_CARD, "ccv3": v3}))
    result = card_to_sheet(read_card(path))
    assert result.spec == "chara_card_v3" and result.sheet["name"] == "Wren of the Rock"
    assert result.sheet["extensions"]["chara_card"]["assets"] == v3["data"]["assets"]
    assert result.sheet["extensions"]["chara_card"]["nickname"] == "Wren"


def test_a_v2_png_card(tmp_path):
    path = tmp_path / "wren.png"
    path.write_bytes(make_png({"chara": V2_CARD}))
    assert card_to_sheet(read_card(path)).sheet["name"] == "Wren Halloway"


def test_a_v1_card_is_its_own_data():
    v1 = {k: V2_CARD["data"][k] for k in ("name", "description", "personality", "scenario", "first_mes",
                                          "mes_example")}
    result = card_to_sheet(v1)
    assert result.spec == "chara_card_v1" and result.sheet["summary"] == v1["personality"]


@pytest.mark.parametrize("content, problem", [
    (b"not json at all", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"spec": "chara_card_v9", "data": {}}).encode(), "unknown card spec"),
    (json.dumps({"spec": "chara_card_v2", "data": {"name": ""}}).encode(), "the card has no name"),
    (json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "description": 3}}).encode(),
     "expected a string"),
    (json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "description": "x" * 200_000}}).encode(),
     "data.description: 200,000 characters"),
    (make_png({}), "holds no character card"),
    (make_png({})[:33] + _png_chunk(b"tEXt", b"chara\0not base64!!") + make_png({})[33:],  # after IHDR
     "not valid base64"),
    (make_png({"chara": V2_CARD}, damage=True), "CRC mismatch"),
    (make_png({"chara": V2_CARD})[:60], "truncated"),
])
def test_bad_cards_raise_a_sheet_error(tmp_path, content, problem):
    path = tmp_path / "card.bin"
    path.write_bytes(content)
    with pytest.raises(SheetError) as err:
        card_to_sheet(read_card(path), str(path))
    assert problem in str(err.value)


def test_a_compressed_chunk_is_never_inflated(tmp_path):
    """A zTXt chunk holding a zip bomb beside the card: the reader reads only tEXt, so it never inflates it."""
    bomb = _png_chunk(b"zTXt", b"chara\0\0" + zlib.compress(b"\0" * (64 << 20), 9))
    png = make_png({"chara": V2_CARD})
    path = tmp_path / "bomb.png"
    path.write_bytes(png[:33] + bomb + png[33:])  # after the IHDR chunk
    assert read_card(path)["data"]["name"] == "Wren Halloway"


def test_a_missing_card_file_is_a_sheet_error(tmp_path):
    with pytest.raises(SheetError, match="cannot read"):
        read_card(tmp_path / "nope.json")


def test_cli_import(tmp_path):
    card = tmp_path / "wren.png"
    card.write_bytes(make_png({"chara": V2_CARD}))
    out = tmp_path / "wren.toml"
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "import", str(card), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    assert "builds as it is" in run.stderr and "  - facts: none" in run.stderr
    assert tomllib.loads(out.read_text())["name"] == "Wren Halloway"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    run = subprocess.run([lmpc, "import", str(bad), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "not valid JSON" in run.stderr


def _without_card_keepings(sheet):
    """A parsed sheet's data without what an import keeps of the card it came from."""
    data = sheet.to_dict()
    data["extensions"] = {k: v for k, v in data["extensions"].items() if k != "chara_card"}
    return data


@pytest.mark.parametrize("suffix", [".json", ".png"])
def test_a_sheet_round_trips_through_a_card(tmp_path, suffix):
    from conftest import ORLANDO_SHEET
    from lmpc_export.card import sheet_to_card, write_card

    original = tomllib.loads(ORLANDO_SHEET.read_text())
    card = tmp_path / f"orlando{suffix}"
    write_card(sheet_to_card(original), card)
    back = card_to_sheet(read_card(card), str(card))
    assert back.problems == [] and back.advice == []
    assert _without_card_keepings(parse_sheet(back.sheet)) == _without_card_keepings(parse_sheet(original))
    # What the card itself holds reads as a card should, for any front end.
    data = read_card(card)["data"]
    assert data["name"] == "Orlando Marlo" and data["first_mes"].startswith("Good day")
    assert data["mes_example"].startswith("<START>\n{{user}}: ") and data["character_book"]["entries"]


@pytest.mark.parametrize("card", [
    V2_CARD,
    {k: v for k, v in V2_CARD["data"].items() if k in ("name", "description", "personality", "scenario",
                                                       "first_mes", "mes_example")},  # V1
    {"spec": "chara_card_v3", "spec_version": "3.0",
     "data": {**V2_CARD["data"], "nickname": "Wren", "group_only_greetings": []}},
], ids=["v2", "v1", "v3"])
def test_a_card_round_trips_through_a_sheet(tmp_path, card):
    from lmpc_export.card import sheet_to_card, write_card

    first = card_to_sheet(card).sheet
    path = tmp_path / "again.png"
    write_card(sheet_to_card(first), path)
    again = read_card(path)
    # The sheet again, apart from the card's spec and raw example text that the first import kept.
    assert _without_card_keepings(parse_sheet(card_to_sheet(again).sheet)) == \
        _without_card_keepings(parse_sheet(first))
    data, original = again["data"], card.get("data", card)
    name = original["name"]
    for key in ("name", "description", "personality", "scenario", "first_mes"):
        assert data[key] == original[key].replace("{{char}}", name).strip(), key
    for key in ("creator_notes", "tags", "alternate_greetings", "nickname"):
        if key in original:
            assert data[key] == original[key], key
    if "character_book" in original:
        for mine, theirs in zip(data["character_book"]["entries"], original["character_book"]["entries"]):
            for key in ("keys", "content", "constant", "insertion_order", "priority", "use_regex"):
                if theirs.get(key) not in (None, ""):
                    assert mine[key] == theirs[key], key
            assert mine["extensions"].get("selectiveLogic") == theirs["extensions"].get("selectiveLogic")


def test_cli_export_card(tmp_path):
    from conftest import ORLANDO_SHEET

    out = tmp_path / "orlando.png"
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    run = subprocess.run([lmpc, "export-card", str(ORLANDO_SHEET), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert read_card(out)["data"]["name"] == "Orlando Marlo"


@pytest.mark.real_model
def test_a_v3_png_card_imports_builds_and_answers_in_one_command_each(real_bundle, tmp_path):
    """On the real base model (exported once for the demo bundle, cached): no field beyond the card's."""
    card = tmp_path / "wren.png"
    card.write_bytes(make_png({"ccv3": {**V2_CARD, "spec": "chara_card_v3", "spec_version": "3.0"}}))
    lmpc = str(Path(sys.executable).with_name("lmpc"))

    def step(*args):
        done = subprocess.run([lmpc, *map(str, args)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        return done.stdout

    step("import", card, "-o", tmp_path / "wren.toml")
    step("build", tmp_path / "wren.toml", "-o", tmp_path / "wren.lmpc")
    reply = json.loads(step("ask", tmp_path / "wren.lmpc", "Who are you, and what is this place?", "--seed", "1",
                            "--json"))["text"]
    assert reply.strip() and not re.search(r"\b(as an ai|language model|assistant)\b", reply, re.I), reply
