import json
import subprocess
import sys
from pathlib import Path

import pytest

LMPC = str(Path(sys.executable).with_name("lmpc"))


def run(*args, stdin=None):
    return subprocess.run([LMPC, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=300)


def test_ask_json(tiny_bundle):
    out = run("ask", tiny_bundle, "Who are you?", "--seed", "3", "--max-tokens", "10", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"text", "tokens", "ttft_ms", "decode_tok_s", "finish"} <= set(result)
    assert (result["graph"], result["spinning"]) == ("whole", False)
    assert result["text"] and 0 < result["tokens"] <= 10
    again = json.loads(run("ask", tiny_bundle, "Who are you?", "--seed", "3", "--max-tokens", "10", "--json").stdout)
    assert again["text"] == result["text"]
    spinning = json.loads(run("ask", tiny_bundle, "Who are you?", "--seed", "3", "--max-tokens", "10", "--json",
                              "--spinning").stdout)
    assert spinning["spinning"] is True and spinning["text"] == result["text"]


def test_ask_streams_plain_text(tiny_bundle):
    out = run("ask", tiny_bundle, "Hello", "--seed", "1", "--max-tokens", "6")
    assert out.returncode == 0 and out.stdout.strip()


def test_info_prints_the_manifest(tiny_bundle):
    out = run("info", tiny_bundle)
    manifest = json.loads(out.stdout)
    assert manifest["format"] == "lmpc-bundle" and manifest["model"]["layout"]


def test_chat_reads_lines_when_not_a_terminal(tiny_bundle):
    out = run("chat", tiny_bundle, "--seed", "2", "--max-tokens", "6", stdin="Hello\n\nWho are you?\n")
    assert out.returncode == 0
    assert out.stdout.count("you> ") == 3 and out.stdout.count("Orlando Marlo> ") == 2


def test_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('format = 1\nname = "X"\ntitel = "a typo"\n')
    out = run("check", bad)
    assert out.returncode == 2 and "titel: unknown key (did you mean 'title'?)" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("ask", tmp_path / "nope.lmpc", "hi")
    assert out.returncode == 2 and "no such bundle directory" in out.stderr


def test_new_writes_a_sheet_to_fill_in_that_check_walks_through(tmp_path):
    import tomllib

    from lmpc_runtime.errors import SheetError
    from lmpc_runtime.sheet import MIN_EXAMPLES, load_sheet, parse_sheet

    out = tmp_path / "ada.toml"
    done = run("new", "Ada \"Quill\" Varga", "-o", out)
    assert done.returncode == 0 and done.stdout.strip() == str(out)
    data = tomllib.loads(out.read_text())
    assert data["name"] == 'Ada "Quill" Varga' and len(data["examples"]) == MIN_EXAMPLES
    # Empty as written: a valid sheet of a name alone, and `lmpc check` advises what to write.
    check = run("check", out)
    assert check.returncode == 0, check.stderr
    advice = check.stdout.split("advice")[1]
    for place in ("facts", "examples: 0", "title and summary", "world.name", "objectives", "values"):
        assert place in advice, place
    assert load_sheet(out).facts == ()
    # Half an example is an error, with its place.
    half = out.read_text().replace('player = ""', 'player = "Who are you?"', 1)
    out.with_name("half.toml").write_text(half)
    with pytest.raises(SheetError, match=r"examples\[0\]\.npc: must not be empty"):
        load_sheet(out.with_name("half.toml"))
    # Filled in, the same layout is a valid sheet.
    for key in ("title", "summary", "alignment", "speech_style", "backstory"):
        data[key] = "Something."
    data.update(values=["Truth."], objectives=["Print the news."], facts=["Ada prints the Gazette."],
                opinions={"The mayor": "A liar."})
    for key in ("name", "description", "political_order", "powers", "marginalised_groups"):
        data["world"][key] = "Something."
    for person in data["world"]["important_people"] + data["world"]["marginalised_important_people"]:
        person.update(name="Someone", description="Someone she knows.")
    for example in data["examples"]:
        example.update(player="Who are you?", npc="Ada Varga, printer.")
    assert parse_sheet(data).name == 'Ada "Quill" Varga'
    # A second `new` never overwrites the first.
    again = run("new", "Ada", "-o", out)
    assert again.returncode != 0 and "already exists" in again.stderr
