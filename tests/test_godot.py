"""The Godot addon (examples/godot) without Godot: no Godot 4 binary can be installed here, so
tests/godot/harness.c plays the engine. It loads the extension built by examples/godot/build.sh, serves
recording implementations of the GDExtension interface, and drives nodes frame by frame; these tests run
its scenarios and read what it printed. Each scenario exits non-zero if any of its checks failed."""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).parents[1]
GODOT = REPO / "examples" / "godot"
HARNESS = Path(__file__).parent / "godot" / "harness.c"
FAKE_LIBLMPC = HARNESS.with_name("fake_liblmpc.c")
CC = shutil.which("cc") or shutil.which("gcc")
ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
SANITIZERS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]

pytestmark = pytest.mark.skipif(CC is None or sys.platform != "linux" or ARCH is None,
                                reason="the addon is built for Linux x86-64/arm64 with a C compiler")


class Build:
    """An extension built into `folder` (with liblmpc.so beside it or not), and a harness for it."""

    def __init__(self, folder: Path, liblmpc: Path | None, sanitize: bool = False):
        flags = SANITIZERS if sanitize else []
        env = {**os.environ, "CC": CC, "CFLAGS": " ".join(["-Werror", *flags]), "LIBLMPC": str(liblmpc or "none")}
        subprocess.run(["sh", str(GODOT / "build.sh"), str(folder)], env=env, check=True, capture_output=True)
        self.extension = folder / f"liblmpc_godot.linux.{ARCH}.so"
        self.harness = folder / "harness"
        subprocess.run([CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *flags,
                        f"-I{GODOT / 'addons' / 'lmpc' / 'src'}", str(HARNESS), "-ldl", "-lm", "-o",
                        str(self.harness)], check=True)
        self.sanitize = sanitize

    def run(self, scenario: str, *args, folder: Path, godot: str = "4.2",
            timeout: int = 900) -> subprocess.CompletedProcess:
        """Run a scenario with the harness playing `godot`: "4.2", or "4.7" built with deprecated=no."""
        (folder / "user").mkdir(exist_ok=True)
        env = {**os.environ, "HARNESS_RES_DIR": str(folder), "HARNESS_USER_DIR": str(folder / "user"),
               "HARNESS_GODOT": godot}
        if self.sanitize:
            env["ASAN_OPTIONS"] = "detect_leaks=0"  # the embedded Python keeps its memory to the end
        return subprocess.run([str(self.harness), str(self.extension), scenario, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> dict[str, Build]:
    from lmpc_bindings.build import build_capi

    root = tmp_path_factory.mktemp("godot")
    liblmpc = build_capi(root / "capi")
    # A liblmpc.so without a model whose replies the lines said script (tests/godot/fake_liblmpc.c).
    (root / "fakelib").mkdir()
    fake = root / "fakelib" / "liblmpc.so"
    subprocess.run([CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    f"-I{REPO / 'bindings'}", str(FAKE_LIBLMPC), "-o", str(fake)], check=True)
    return {"plain": Build(root / "plain", liblmpc), "nolib": Build(root / "nolib", None),
            "asan": Build(root / "asan", liblmpc, sanitize=True), "fake": Build(root / "fake", fake, sanitize=True)}


@pytest.fixture
def damaged_bundle(tiny_copy) -> Path:
    """The tiny bundle with one bit of its model flipped: it starts loading, then fails its hash check."""
    model = tiny_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    return tiny_copy


@pytest.fixture
def typed_bundle(tiny_copy) -> Path:
    """The tiny bundle with a sheet that declares emotions, which end every reply, and an action whose item
    the game gives. The manifest's character is not hashed, so it can be edited."""
    from lmpc_runtime.bundle import pack_manifest, read_manifest

    manifest = read_manifest(tiny_copy)
    manifest["character"]["emotions"] = ["calm", "sad"]
    manifest["character"]["actions"] = [{"name": "give_item", "description": "Hand the player an item.",
                                         "args": {"item": "game"}}]
    (tiny_copy / "manifest.msgpack").write_bytes(pack_manifest(manifest))
    return tiny_copy


def passed(out: subprocess.CompletedProcess) -> bool:
    return out.returncode == 0 and re.search(r"^passed: \d+ checks, 0 failed$", out.stdout, re.M) is not None


def test_only_the_entry_symbol_is_exported_and_the_gdextension_file_names_it(builds):
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(builds["plain"].extension)],
                             capture_output=True, text=True, check=True).stdout
    config = (GODOT / "addons" / "lmpc" / "lmpc.gdextension").read_text()
    entry = re.search(r'^entry_symbol = "(\w+)"$', config, re.M).group(1)
    assert re.findall(r" T (\w+)$", symbols, re.M) == [entry]
    assert re.search(r'^compatibility_minimum = "4\.2"$', config, re.M)
    assert re.search(r"^reloadable = false$", config, re.M)
    library = re.search(rf'^linux\.{ARCH} = "res://addons/lmpc/(bin/[\w.]+)"$', config, re.M).group(1)
    assert library == f"bin/{builds['plain'].extension.name}"
    assert re.search(rf'^linux\.{ARCH} = {{ "res://addons/lmpc/bin/liblmpc\.so": "" }}$', config, re.M)


def test_classes_methods_properties_and_signals_are_registered_as_godot_expects(builds, tmp_path):
    # Built without liblmpc.so: in editor mode the harness checks nothing tries to load it.
    out = builds["nolib"].run("registration", folder=tmp_path)
    assert passed(out), out.stdout + out.stderr
    assert "budget_ms must be in [0, 1000], not -1" in out.stdout
    assert "LmpcNpc.set_bundle_path: argument 1 (bundle_path) must be a String, not null" in out.stdout
    assert "LmpcNpc.set_action_values: argument 3 (values) must be an Array of Strings, not an int" in out.stdout


def test_a_godot_without_deprecated_functions_loads_the_addon_through_their_new_names(builds, tmp_path, tiny_bundle):
    # A 4.7 build made with deprecated=no lacks get_godot_version, string_new_with_utf8_chars_and_len,
    # classdb_construct_object and classdb_register_extension_class2; Godot 4.2 has only those. The harness
    # plays each engine (checking every function it serves is fetched once, and POSTINITIALIZE is sent once).
    for godot in ("4.7", "4.2"):
        for scenario in (["registration"], ["bad", tiny_bundle]):
            out = builds["plain"].run(*scenario, folder=tmp_path, godot=godot)
            assert f"playing Godot {godot}" in out.stdout
            assert passed(out), out.stdout[-4000:] + out.stderr[-4000:]


def test_the_demo_uses_only_what_the_extension_registers(builds, tmp_path):
    out = builds["nolib"].run("registration", folder=tmp_path)
    npc = re.search(r"^class LmpcNpc: (.*)$", out.stdout, re.M).group(1).split()
    script = (GODOT / "demo" / "main.gd").read_text()
    used = set(re.findall(r"\borlando\.(\w+)", script))
    assert used and used <= {name.rstrip("()!") for name in npc}, used
    scene = (GODOT / "demo" / "main.tscn").read_text()
    assert 'type="LmpcNpc"' in scene and 'bundle_path = "res://npcs/orlando_marlo.lmpc"' in scene
    autoload = re.search(r'^Lmpc="\*res://(.+)"$', (GODOT / "demo" / "project.godot").read_text(), re.M).group(1)
    assert 'type="LmpcRuntime"' in (GODOT / "demo" / autoload).read_text()


def test_the_demo_keeps_the_player_typing_after_enter_on_every_godot_4():
    # Godot 4.4+ LineEdit leaves edit mode on Enter unless keep_editing_on_text_submit is set; 4.2 and 4.3
    # lack that property and LineEdit.edit(), so the script may only reach them by name, behind a check.
    script = (GODOT / "demo" / "main.gd").read_text()
    assert re.search(r'if "keep_editing_on_text_submit" in input:\n\t+input\.set\("keep_editing_on_text_submit", true\)',
                     script)
    assert re.search(r'if input\.has_method\("edit"\):\n\t+input\.call\("edit"\)', script)
    assert not re.search(r"input\.(keep_editing_on_text_submit|edit\(\))", script)  # direct use fails to parse on 4.2
    submitted = re.search(r"^func _on_line_submitted\(.*?(?=^func )", script, re.M | re.S).group(0)
    assert "_keep_typing()" in submitted and "input.grab_focus()" in script


def test_without_liblmpc_every_use_reports_an_error_and_nothing_crashes(builds, tmp_path):
    out = builds["nolib"].run("nolib", folder=tmp_path)
    assert passed(out), out.stdout + out.stderr
    assert "LmpcRuntime: the LMPC runtime could not start: cannot load the LMPC library" in out.stdout
    assert "WARNING: LmpcRuntime: another LmpcRuntime is already active" in out.stdout


def test_a_wrong_python_home_is_reported_before_python_starts(builds, tmp_path, tiny_bundle):
    out = builds["plain"].run("nohome", tiny_bundle, folder=tmp_path)
    assert passed(out), out.stdout + out.stderr
    assert "lmpc_boot: /nonexistent/python is not a Python home" in out.stdout


def test_bad_input_gives_the_error_signal_and_an_error_print_under_sanitizers(builds, tmp_path, tiny_bundle,
                                                                             damaged_bundle):
    # Address and undefined-behaviour sanitizers watch the extension (not the embedded Python) throughout,
    # including signal handlers that free the NPC, or the runtime itself, while it dispatches events.
    for scenario in (["registration"], ["bad", tiny_bundle, damaged_bundle]):
        out = builds["asan"].run(*scenario, folder=tmp_path)
        assert "Sanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr[-4000:]
        assert passed(out), out.stdout[-4000:] + out.stderr[-4000:]
    for message in ["LmpcNpc.load_bundle: bundle_path is not set",
                    "LmpcNpc.say: no NPC is loaded",
                    "LmpcNpc.load_bundle: res://missing.lmpc: ",
                    f"LmpcNpc.load_bundle: {damaged_bundle}: {damaged_bundle}/model.onnx: sha256 does not match",
                    "LmpcNpc.say: the NPC is still loading",
                    "LmpcNpc.say: argument 1 (text) must be a String, not null",
                    "LmpcNpc.say: the player line is empty"]:
        assert message in out.stdout
    assert re.search(r"^tiny reply: \d+ updates over \d+ frames$", out.stdout, re.M)


def test_the_harness_frees_nodes_as_godot_does_and_the_addon_copes(builds, tmp_path, tiny_bundle, damaged_bundle):
    # Godot refuses free() on an object that is emitting a signal (it is locked), so the scenario's handlers
    # queue_free() the NPC they hear from (freed at the end of the frame) and free() only the runtime, which
    # is not emitting. A node freed in the tree leaves it (EXIT_TREE) before free_instance.
    out = builds["plain"].run("bad", tiny_bundle, damaged_bundle, folder=tmp_path)
    assert passed(out), out.stdout[-4000:] + out.stderr[-4000:]
    assert out.stdout.count("ERROR: Object is locked and can't be freed.") == 1  # the one deliberate attempt


def test_actions_and_emotions_reach_their_signals_under_sanitizers(builds, tmp_path):
    # A fake liblmpc.so replays the tails the lines ask for (a tiny random model never writes an action):
    # action_requested(name, args) with args a Dictionary of Strings (escapes decoded), emotion_changed(label),
    # both between the last reply_updated and reply_finished; an action the addon cannot read gives the error
    # signal. The values the game gives reach lmpc_set_action_values as a JSON array, by both calling conventions.
    for godot in ("4.2", "4.7"):
        out = builds["fake"].run("actions", folder=tmp_path, godot=godot)
        assert "Sanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr[-4000:]
        assert passed(out), out.stdout[-4000:] + out.stderr[-4000:]
    assert 'LmpcNpc.set_action_values: fake: no action "wave"' in out.stdout
    assert "LmpcNpc: the reply's action is not one this addon can read: {\"name\": \"give_item\"}" in out.stdout


def test_a_sheet_with_emotions_ends_every_reply_with_emotion_changed(builds, tmp_path, typed_bundle):
    # The real library and runtime: the tiny model picks calm or sad at the end of each reply, and the
    # runtime checks the values the game gives against the sheet.
    out = builds["asan"].run("typed", typed_bundle, folder=tmp_path)
    assert "Sanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr[-4000:]
    assert passed(out), out.stdout[-4000:] + out.stderr[-4000:]
    assert len(re.findall(r"^reply \d: emotion (?:calm|sad), action ", out.stdout, re.M)) == 2
    assert re.search(r"^unknown action: LmpcNpc\.set_action_values: .*has no action 'wave'$", out.stdout, re.M)
    assert re.search(r"^bad value: LmpcNpc\.set_action_values: .*'a coin' must be letters", out.stdout, re.M)


# The addon's types by ABI class, in the vocabulary of tests/godot/gdextension_declarations.json.
OUR_ABI = {"void": "void", "gdx_bool": "uint8", "gdx_int": "int64", "int32_t": "int32", "uint32_t": "uint32",
           "uint64_t": "uint64", "gdx_object": "pointer", "gdx_library": "pointer", "gdx_variant_from_type": "pointer",
           "gdx_type_from_variant": "pointer", "gdx_destructor": "pointer", "gdx_method_call": "pointer",
           "gdx_method_ptrcall": "pointer", "gdx_variant_type": "enum (int32)", "gdx_call_error_type": "enum (int32)",
           "gdx_init_level": "enum (int32)", "gdx_argument_metadata": "enum (int32)"}
# Which official structure each of the addon's mirrors, and the prefixes of its enum constants.
OUR_STRUCTS = {"gdx_property_info": "GDExtensionPropertyInfo", "gdx_method_info": "GDExtensionClassMethodInfo",
               "gdx_class_info2": "GDExtensionClassCreationInfo2", "gdx_class_info4": "GDExtensionClassCreationInfo4",
               "gdx_initialization": "GDExtensionInitialization", "gdx_godot_version": "GDExtensionGodotVersion",
               "gdx_godot_version2": "GDExtensionGodotVersion2", "gdx_call_error": "GDExtensionCallError"}
OUR_ENUMS = {"GDX_TYPE_": "GDEXTENSION_VARIANT_TYPE_", "GDX_CALL_": "GDEXTENSION_CALL_",
             "GDX_INIT_": "GDEXTENSION_INITIALIZATION_"}


def abi_of(declaration: str) -> str:
    """The ABI class of a C declaration of the addon (a parameter, a field, a return type)."""
    if "*" in declaration:
        return "pointer"
    words = declaration.replace("const ", "").split()
    return OUR_ABI[words[0]]


def addon_declarations() -> tuple[dict, dict, dict]:
    """Functions (name: [return class, parameter classes...]), structures (name: [(field, class)...]) and enum
    constants that examples/godot/addons/lmpc/src/gdextension.h declares."""
    header = (GODOT / "addons" / "lmpc" / "src" / "gdextension.h").read_text()
    header = re.sub(r"/\*.*?\*/", " ", header, flags=re.S).replace("\\\n", " ")
    functions = {}
    for name, ret, params in re.findall(r"\bX\((\w+), ([\w ]+), \(([^()]*)\)\)", header):
        functions[name] = [abi_of(ret)] + [abi_of(p) for p in params.split(",")]
    structs = {}
    for body, name in re.findall(r"typedef struct \{([^{}]*)\} (\w+);", header):
        if name not in OUR_STRUCTS:
            continue  # opaque storage (String, Variant)
        fields = []
        for member in filter(None, (m.strip() for m in body.split(";"))):
            pointer = re.match(r".*\(\*(\w+)\)\(.*\)$", member, re.S)
            if pointer:
                fields.append((pointer.group(1), "pointer"))
                continue
            base, *names = re.match(r"((?:const )?\w+)\s+(.*)$", member, re.S).groups()
            for declarator in names[0].split(","):
                declarator = declarator.strip()
                fields.append((declarator.lstrip("*"), abi_of(base + (" *" if declarator.startswith("*") else ""))))
        structs[name] = fields
    enums = {name: int(value) for name, value in re.findall(r"\b(GDX_(?:TYPE|CALL|INIT)_\w+) = (\d+)", header)}
    return functions, structs, enums


def test_interface_declarations_match_the_list_derived_from_godots_headers():
    # The harness shares the addon's declarations, so only Godot's own declarations can check them: this list
    # was derived from Godot 4.2's and 4.7's (names and types, no header text), so the check needs no network.
    listed = json.loads(HARNESS.with_name("gdextension_declarations.json").read_text())
    abi, versions = listed["abi"], listed["versions"]
    functions, structs, enums = addon_declarations()
    assert len(functions) == 31 and set(OUR_STRUCTS) <= set(structs) and len(enums) == 19
    for name, ours in functions.items():
        found = [v for v in versions.values() if name in v["functions"]]
        assert found, f"{name} is in no Godot version listed"
        for version in found:
            theirs = version["functions"][name]
            assert ours == [abi[theirs["returns"]]] + [abi[t] for t in theirs["params"]], (name, version["source"])
    for name in re.findall(r"\bX\((\w+),", (GODOT / "addons" / "lmpc" / "src" / "gdextension.h").read_text()
                           .split("GDX_INTERFACE_RENAMED")[0]):
        # The functions the addon asks for by one name only exist, undeprecated, in every version listed.
        assert all(name in v["functions"] and "deprecated_since" not in v["functions"][name]
                   for v in versions.values()), name
    for ours, official in OUR_STRUCTS.items():
        found = [v for v in versions.values() if official in v["structs"]]
        assert found, official
        for version in found:
            assert structs[ours] == [(field, abi[t]) for field, t in version["structs"][official]], (ours, version["source"])
    for ours, value in enums.items():
        prefix = next(p for p in OUR_ENUMS if ours.startswith(p))
        official = OUR_ENUMS[prefix] + ours.removeprefix(prefix)
        for version in versions.values():
            values = {k: v for enum in version["enums"].values() for k, v in enum.items()}
            assert values[official] == value, (ours, version["source"])


@pytest.mark.real_model
def test_orlando_streams_into_signals_frame_by_frame(builds, tmp_path, real_bundle):
    out = builds["plain"].run("talk", real_bundle, folder=tmp_path)
    assert passed(out), out.stdout + out.stderr
    # The bundle loaded in the background: the ready notification returned at once, the frames went on,
    # and each stage of the load was signalled in order.
    load = re.search(r"^loaded in [\d.]+ s over (\d+) frames \(the ready notification took ([\d.]+) s, the "
                     r"longest frame's _process \d+ ms\); stages: (.*)$",
                     out.stdout, re.M)
    assert int(load.group(1)) > 1
    assert load.group(3) == "reading the bundle; opening the model; opening the memory; reading the persona;"
    updates, frames = map(int, re.search(r"^streamed: (\d+) updates over (\d+) frames", out.stdout, re.M).groups())
    assert updates >= 3 and frames >= 3
    last_update = re.search(r"^last update: (.*)$", out.stdout, re.M).group(1)
    reply = re.search(r"^reply: (.*)$", out.stdout, re.M).group(1)
    assert reply.strip() and reply.strip()[:20] == last_update.strip()[:20]
    assert re.search(r"^cancelled after \d+ updates: ", out.stdout, re.M)
    # Facts and saves go through the C ABI to the runtime.
    assert "set_fact: ok" in out.stdout and "save_state: ok" in out.stdout
