"""Save games: exact round trips, and every kind of bad file refused with nothing changed."""

import hashlib
import os
import struct

import msgpack
import pytest

from lmpc_runtime import (
    InvalidArgumentError,
    Runtime,
    SamplingConfig,
    SaveCorruptError,
    SaveError,
    SaveFormatError,
    SaveMismatchError,
    SaveVersionError,
)
from lmpc_runtime.bundle import MANIFEST_NAME
from lmpc_runtime.reply import DONE
from lmpc_runtime.save import SAVE_FORMAT_VERSION

SHORT = SamplingConfig(max_tokens=10)
LINES = ["Good day, ser knight.", "Tell me of your sister Isolde.", "And your father?"]


def reply_text(npc, line):
    return [e for e in npc.ask(line) if e.kind == DONE][0].text


def played(rt, tiny_bundle, seed=11):
    """An NPC with a bit of everything a save holds: history, facts, memories, a forgotten statement,
    a sticky lorebook entry, a game time and a sampler that has drawn."""
    npc = rt.load_npc(tiny_bundle, seed=seed, sampling=SHORT)
    npc.facts.set("quest.isolde_joined_order", True)
    npc.facts.set("player.name", "Mira")
    npc.game_time = 12.5
    for line in LINES[:2]:
        reply_text(npc, line)
    npc.remember("Mira paid for the cider at the Tipped Lantern.", importance=0.8, requires="player.name",
                 cues=["Who paid for the drinks?"])
    npc.forget(next(m.id for m in npc.memories if "Vesper" in m.text))
    return npc


def state_of(npc):
    return (npc.history, dict(npc.facts), list(npc.memories), [npc.memories.cues(m.id) for m in npc.memories],
            npc._recall.lore.state(), npc.turn, npc.game_time,
            npc.rng.bit_generator.state)


def resign(data, change=None, version=SAVE_FORMAT_VERSION):
    """Edit a save's payload and rewrite a header with a valid checksum, as a forger would."""
    header = struct.Struct("<8sIQ32s")
    payload = data[header.size:]
    if change is not None:
        state = msgpack.unpackb(payload, raw=False)
        change(state)
        payload = msgpack.packb(state, use_bin_type=True)
    digest = hashlib.sha256(struct.pack("<IQ", version, len(payload)) + payload).digest()
    return header.pack(b"LMPCSAVE", version, len(payload), digest) + payload


@pytest.mark.parametrize("include_kv", [False, True])
def test_save_load_then_the_same_replies(tmp_path, tiny_bundle, include_kv):
    with Runtime() as rt:
        original = played(rt, tiny_bundle)
        assert original._recall.lore.state()  # the sticky entry's timer is part of what is saved
        original.save(tmp_path / "npc.sav", include_kv=include_kv)
        restored = rt.load_npc(tiny_bundle, seed=999, sampling=SHORT)
        restored.load(tmp_path / "npc.sav")
        assert state_of(restored) == state_of(original)
        # Without the cache in the save, the restored NPC keeps only its persona's (the same in any state).
        assert restored._seq.tokens == (original._seq.tokens if include_kv else original.persona_tokens)
        for line in LINES[2:] + ["Farewell."]:
            assert reply_text(restored, line) == reply_text(original, line)
        assert restored.history == original.history


def test_bytes_round_trip_and_a_save_is_deterministic(tiny_bundle):
    with Runtime() as rt:
        npc = played(rt, tiny_bundle)
        data = npc.to_bytes()
        assert npc.to_bytes() == data
        other = rt.load_npc(tiny_bundle, seed=3, sampling=SHORT)
        other.load_bytes(data)
        assert other.to_bytes() == data


def bad_saves(good):
    flip = lambda at: good[:at] + bytes([good[at] ^ 0x10]) + good[at + 1:]  # noqa: E731
    return {
        "empty": (b"", SaveFormatError, "not an LMPC save"),
        "foreign png": (b"\x89PNG\r\n\x1a\n" + bytes(100), SaveFormatError, "not an LMPC save"),
        "foreign text": (b"format = 1\nname = 'x'\n" * 10, SaveFormatError, "not an LMPC save"),
        "truncated header": (good[:20], SaveCorruptError, "truncated"),
        "truncated payload": (good[: len(good) // 2], SaveCorruptError, "truncated"),
        "padded": (good + b"\x00", SaveCorruptError, "truncated or padded"),
        "bit flip in the payload": (flip(len(good) // 2), SaveCorruptError, "checksum"),
        "bit flip in the last byte": (flip(len(good) - 1), SaveCorruptError, "checksum"),
        "bit flip in the checksum": (flip(30), SaveCorruptError, "checksum"),
        "bit flip in the length": (flip(13), SaveCorruptError, "truncated or padded"),
        "newer format": (resign(good, version=SAVE_FORMAT_VERSION + 1), SaveVersionError, "newer than this runtime"),
        "other model": (resign(good, lambda s: s["bundle"].update(model_sha256="0" * 64)), SaveMismatchError,
                        "another model"),
        "other character": (resign(good, lambda s: s["bundle"].update(name="isolde_marlo")), SaveMismatchError,
                            "'isolde_marlo'"),
        "not an npc save": (resign(good, lambda s: s.update(format="other")), SaveFormatError, "not an LMPC NPC"),
        "missing field": (resign(good, lambda s: s.pop("history")), SaveFormatError, "missing field 'history'"),
        "bad history": (resign(good, lambda s: s.update(history=[["only one side"]])), SaveFormatError, "history"),
        "bad fact": (resign(good, lambda s: s["facts"].update({"bad name": 1})), SaveFormatError, "fact name"),
        "bad memory": (resign(good, lambda s: s["memories"]["kinds"].__setitem__(0, "rumour")), SaveFormatError,
                       "kind"),
        "bad rng": (resign(good, lambda s: s["rng"].update(state=b"short")), SaveFormatError, "PCG64"),
        "bad lore timers": (resign(good, lambda s: s.update(lore_timers={"#1": "soon"})), SaveFormatError,
                            "lorebook timers"),
        "bad kv": (resign(good, lambda s: s.update(kv={"tokens": [1, 2, 3], "data": b"\x00" * 12})),
                   SaveFormatError, "kv.data"),
        "hostile msgpack": (resign(good[:52] + b"\xdb\xff\xff\xff\xff"), SaveFormatError, "msgpack"),
    }


BAD_CASES = ["empty", "foreign png", "foreign text", "truncated header", "truncated payload", "padded",
             "bit flip in the payload", "bit flip in the last byte", "bit flip in the checksum",
             "bit flip in the length", "newer format", "other model", "other character", "not an npc save",
             "missing field", "bad history", "bad fact", "bad memory", "bad rng", "bad lore timers", "bad kv",
             "hostile msgpack"]


@pytest.fixture(scope="module")
def runtime():
    with Runtime() as rt:
        yield rt


@pytest.fixture(scope="module")
def saved(runtime, tiny_bundle, tmp_path_factory):
    """A played NPC and its save file."""
    npc = played(runtime, tiny_bundle)
    path = tmp_path_factory.mktemp("saves") / "npc.sav"
    npc.save(path)
    return npc, path


@pytest.fixture(scope="module")
def target(runtime, tiny_bundle):
    """The NPC every bad save is loaded into: a failed load must leave it exactly as it was."""
    npc = played(runtime, tiny_bundle, seed=5)
    reply_text(npc, "One more thing.")
    return npc


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_bad_save_is_refused_and_changes_nothing(tmp_path, saved, target, case):
    npc, path = saved
    good = path.read_bytes()
    data, error, message = bad_saves(good)[case]
    before = state_of(target)
    with pytest.raises(error, match=message):
        target.load_bytes(data)
    bad = tmp_path / "bad.sav"
    bad.write_bytes(data)
    with pytest.raises(error, match="bad.sav"):
        target.load(bad)
    assert state_of(target) == before
    assert path.read_bytes() == good == npc.to_bytes()  # the good save is still there, whole


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_previous_save(tmp_path, saved, monkeypatch, failing):
    npc, _ = saved
    path = tmp_path / "npc.sav"
    npc.save(path)
    previous = path.read_bytes()
    npc.game_time = 99.0  # something new to save

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _BrokenFile(fd))
    else:
        monkeypatch.setattr(os, failing, broken)
    try:
        with pytest.raises(SaveError, match="No space left"):
            npc.save(path)
    finally:
        monkeypatch.undo()
        npc.game_time = 12.5
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npc.sav"]  # no temporary file left behind


class _BrokenFile:
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        raise OSError(28, "No space left on device")


def test_saving_or_loading_mid_reply_is_refused(tiny_bundle, tmp_path):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SHORT)
        data = npc.to_bytes()
        reply = npc.start_reply("Hello")
        with pytest.raises(InvalidArgumentError, match="answering"):
            npc.to_bytes()
        with pytest.raises(InvalidArgumentError, match="answering"):
            npc.load_bytes(data)
        reply.cancel()
        npc.end_reply(reply)
        npc.load_bytes(data)


def test_missing_or_unwritable_paths(tiny_bundle, tmp_path):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle)
        with pytest.raises(SaveError, match="no such save"):
            npc.load(tmp_path / "absent.sav")
        with pytest.raises(SaveError, match="cannot write"):
            npc.save(tmp_path / "no" / "such" / "dir" / "npc.sav")
        with pytest.raises(SaveFormatError):
            npc.load(tiny_bundle / MANIFEST_NAME)  # a foreign msgpack file
