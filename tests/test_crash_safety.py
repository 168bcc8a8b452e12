"""SIGKILL during a save and during a bundle build: afterwards the old or the new file is there, whole.

The harness is benchmarks/kill9.py (`python -m benchmarks.kill9` runs many more rounds); these tests run
it with fewer. Step kills hit every file-system call of a write; random kills land anywhere, inside the
serialisation and the hashing too.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

KILL9 = Path(__file__).parents[1] / "benchmarks" / "kill9.py"


@pytest.fixture(scope="module")
def kill9():
    # Loaded from its file: the repository root is not on sys.path (the tests import the installed LMPC).
    spec = importlib.util.spec_from_file_location("lmpc_kill9", KILL9)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_save_killed_at_every_step_leaves_the_old_or_the_new_save(kill9, tmp_path):
    with kill9.save_writer(tmp_path, history_kb=200) as writer:
        stats = kill9.step_kills(writer.write, writer.check)
    # mkstemp, fsync of the file, the rename, fsync of the directory: each was hit, before and after it.
    assert stats.rounds >= 4 and stats.old >= 1 and stats.new >= 1


def test_a_hundred_random_kills_during_saves(kill9, tmp_path):
    with kill9.save_writer(tmp_path, history_kb=1000) as writer:
        stats = kill9.random_kills(writer, rounds=100, seed=1)
    assert stats.rounds == 100
    assert stats.writes_done > 0  # the writer got through saves, so kills landed between and inside them
    assert stats.leftovers_after_next_write == 0


def test_a_bundle_build_killed_at_every_step_leaves_the_old_or_the_new_bundle(kill9, tmp_path):
    with kill9.bundle_writer(tmp_path) as writer:
        stats = kill9.step_kills(writer.write, writer.check)
    assert stats.rounds >= 10 and stats.old >= 1 and stats.new >= 1
    assert not list(tmp_path.glob(".npc.lmpc.*"))  # the build that got through removed what the kills left


def test_random_kills_during_bundle_builds(kill9, tmp_path):
    with kill9.bundle_writer(tmp_path) as writer:
        stats = kill9.random_kills(writer, rounds=3, seed=2)
    assert stats.rounds == 3 and stats.leftovers_after_next_write == 0


def test_the_two_rename_fallback_is_repaired_by_the_next_build(kill9, tmp_path, monkeypatch):
    """Where the OS cannot swap directories, a kill between moving the old bundle aside and moving the
    new one in leaves no bundle at the path until the next build puts the old one back."""
    build = importlib.import_module("lmpc_export.build")  # the module (the package's `build` is a function)
    monkeypatch.setattr(build, "_exchange", lambda a, b: False)
    with kill9.bundle_writer(tmp_path) as writer:
        out = tmp_path / "npc.lmpc"
        writer.write(0)
        writer.write(1)  # replaces through the fallback
        assert writer.check() == 1
        out.rename(tmp_path / ".npc.lmpc.old")  # as if killed between the two renames
        build._recover_dir(out)
        assert writer.check() == 1 and not (tmp_path / ".npc.lmpc.old").exists()
