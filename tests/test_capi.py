"""The C ABI from real C: liblmpc.so is built with cffi in embedding mode, C programs are compiled with
the system compiler against lmpc.h and run as separate processes (a host that knows nothing of Python)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lmpc_runtime.capi import CApi, E_INVAL, E_NOTFOUND, E_STATE, OK, fact_value, guarded

C_DIR = Path(__file__).parent / "c"
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")


@pytest.fixture(scope="session")
def capi_dir(tmp_path_factory) -> Path:
    from lmpc_bindings.build import build_capi

    out = tmp_path_factory.mktemp("capi")
    build_capi(out)
    return out


def compile_c(capi_dir: Path, name: str, *flags: str) -> Path:
    exe = capi_dir / (name + ("-" + "-".join(f.strip("-").replace("=", "_") for f in flags) if flags else ""))
    subprocess.run([CC, "-O1", "-g", "-Wall", "-Werror", *flags, f"-I{capi_dir}", str(C_DIR / f"{name}.c"),
                    f"-L{capi_dir}", "-llmpc", f"-Wl,-rpath,{capi_dir}", "-o", str(exe)], check=True)
    return exe


def run(exe: Path, *args, env=None, timeout=900):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_header_and_library_agree(capi_dir):
    header = (capi_dir / "lmpc.h").read_text()
    exported = subprocess.run(["nm", "-D", "--defined-only", str(capi_dir / "liblmpc.so")],
                              capture_output=True, text=True, check=True).stdout
    declared = set(re.findall(r"^(?:int|const char \*)\s*(lmpc_\w+)\(", header, re.M))
    assert len(declared) == 19
    assert declared == set(re.findall(r" T (lmpc_\w+)", exported))


@pytest.mark.real_model
def test_c_host_talks_saves_and_reloads_the_real_npc(capi_dir, real_bundle, tmp_path):
    out = run(compile_c(capi_dir, "host"), real_bundle, tmp_path / "orlando.save")
    assert out.returncode == 0, out.stderr
    replies = re.findall(r"^final: (.+)$", out.stdout, re.M)
    assert len(replies) == 2 and all(r.strip() for r in replies)
    streamed = re.findall(r"^reply: (.*)$", out.stdout, re.M)
    assert streamed[0].strip() and replies[0].startswith(streamed[0].strip()[:20])
    assert re.search(r"^saved \d+$", out.stdout, re.M) and out.stdout.rstrip().endswith("ok")
    # The second NPC loaded in the background: each stage reported in order, then the end, after frames
    # that went on meanwhile.
    stages = re.findall(r"^loading (\d+) (.+)$", out.stdout, re.M)
    assert stages == [("0", "reading the bundle"), ("35", "opening the model"), ("65", "opening the memory"),
                      ("85", "reading the persona")]
    assert int(re.search(r"^loaded after (\d+) frames$", out.stdout, re.M).group(1)) > 1
    assert (tmp_path / "orlando.save").stat().st_size > 0


def test_bad_input_from_c_gets_codes_and_messages(capi_dir, tiny_bundle):
    out = run(compile_c(capi_dir, "bad_input"), tiny_bundle)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all good" in out.stdout
    assert "not valid UTF-8" in out.stdout and "closed runtime handle" in out.stdout


def test_bad_input_under_address_sanitizer(capi_dir, tiny_bundle):
    exe = compile_c(capi_dir, "bad_input", "-fsanitize=address")
    env = {"ASAN_OPTIONS": "detect_leaks=0", "PATH": "/usr/bin:/bin"}
    out = run(exe, tiny_bundle, env=env)
    assert "AddressSanitizer" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0 and "all good" in out.stdout, out.stdout + out.stderr[-3000:]


def test_repeated_open_close_does_not_leak(capi_dir, tiny_bundle):
    out = run(compile_c(capi_dir, "cycles"), tiny_bundle, 100)
    assert out.returncode == 0, out.stderr
    rss = [int(kb) for kb in re.findall(r"rss_kb (\d+)", out.stdout)]
    assert len(rss) == 10
    # After warming up, 80 more cycles (160 runtimes) may not grow the process by more than 20 MB.
    assert rss[-1] - rss[1] < 20_000, rss


def test_python_side_maps_every_failure_to_a_code():
    api = CApi()
    messages = []
    assert guarded(lambda: api.close(99), messages.append) == E_STATE
    assert guarded(lambda: api.say(7, b"hi"), messages.append) == E_NOTFOUND
    handle = api.open(2, False, 0, 0, False, 0.5)
    assert guarded(lambda: api.npc_load(handle, b"\xff\xfe", None), messages.append) == E_INVAL
    assert guarded(lambda: api.npc_load(handle, None, None), messages.append) == E_INVAL
    assert guarded(lambda: api.close(handle), messages.append) == OK
    assert messages and all(messages)


def test_fact_values_are_read_as_json_scalars_or_text():
    assert fact_value("3") == 3 and fact_value("2.5") == 2.5 and fact_value("true") is True
    assert fact_value("Mira") == "Mira" and fact_value("[1, 2]") == "[1, 2]" and fact_value("NaN") == "NaN"


def test_the_readme_c_example_compiles_and_talks(capi_dir, tiny_bundle, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"```c\n(.*?)```", readme, re.S).group(1)
    source = tmp_path / "readme_example.c"
    source.write_text(example)
    exe = tmp_path / "readme_example"
    subprocess.run([CC, "-Wall", "-Werror", f"-I{capi_dir}", str(source), f"-L{capi_dir}", "-llmpc",
                    f"-Wl,-rpath,{capi_dir}", "-o", str(exe)], check=True)
    out = run(exe, tiny_bundle)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip(), "the NPC's reply is streamed to stdout"
