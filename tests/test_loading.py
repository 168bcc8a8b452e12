"""Loading an NPC in the background (`Runtime.start_loading`, `lmpc_npc_load_async` on the Python side of
the C ABI): the call returns before the NPC exists, the frames go on, progress and the end come as
events, and the NPC then answers exactly as one loaded synchronously."""

import threading
import time

import pytest

from lmpc_runtime import (
    DONE, FINISH_CANCELLED, FINISH_ERROR, LOADED, LOADING, BundleMissingError, InvalidArgumentError, Runtime,
    SamplingConfig, StateError,
)
from lmpc_runtime.capi import E_NOTFOUND, E_STATE, EVENT_CODES, FINISH_CODES, OK, CallError, CApi
from lmpc_runtime.loader import STAGES

SAMPLING = SamplingConfig(max_tokens=12)


def frames_until_loaded(rt, npc_id, timeout_s=120.0):
    """Tick and poll like a game until the NPC's load ends: (its events, frames run, other events)."""
    deadline = time.monotonic() + timeout_s
    mine, others, frames = [], [], 0
    while not any(e.kind == LOADED for e in mine):
        assert time.monotonic() < deadline, f"{npc_id} still loading after {timeout_s:g} s"
        rt.tick(budget_ms=4)
        frames += 1
        for event in rt.poll():
            (mine if event.npc == npc_id else others).append(event)
        time.sleep(0.001)
    return mine, frames, others


def reply_to(rt, npc, line):
    rt.say(npc, line)
    while True:
        rt.tick(budget_ms=50)
        done = [e for e in rt.poll() if e.kind == DONE]
        if done:
            return done[0].text
        time.sleep(0.001)


@pytest.mark.parametrize("worker", [False, True], ids=["tick", "worker"])
def test_a_background_load_reports_its_stages_and_then_answers_as_a_loaded_npc(tiny_bundle, worker):
    with Runtime(threads=1) as rt:
        expected = reply_to(rt, rt.load_npc(tiny_bundle, seed=3, sampling=SAMPLING), "Who are you?")
    with Runtime(threads=1, worker=worker) as rt:
        npc_id = rt.start_loading(tiny_bundle, npc_id="tiny", seed=3, sampling=SAMPLING)
        assert npc_id == "tiny" and rt.busy() and rt.npcs == []
        with pytest.raises(StateError, match="still loading"):
            rt.say(npc_id, "Too early?")
        events, frames, _ = frames_until_loaded(rt, npc_id)
        assert [(e.kind, e.text, e.tokens) for e in events] == [
            *((LOADING, stage, percent) for stage, percent in STAGES.items()), (LOADED, "", 100)]
        assert events[-1].finish == "" and frames >= 1
        assert reply_to(rt, rt.npc(npc_id), "Who are you?") == expected


def test_frames_go_on_and_another_npc_keeps_talking_while_one_loads(tiny_bundle):
    with Runtime(threads=1) as rt:
        talker = rt.load_npc(tiny_bundle, npc_id="talker", seed=1, sampling=SAMPLING)
        # The load waits at its start until the talker has answered a whole line, frame by frame.
        release, load = threading.Event(), rt._loader._load
        rt._loader._load = lambda request, progress: release.wait(60) and load(request, progress)
        npc_id = rt.start_loading(tiny_bundle, npc_id="newcomer")
        assert reply_to(rt, talker, "Tell me about the capital.")
        assert rt.busy()  # the load is still in progress
        release.set()
        events, _, _ = frames_until_loaded(rt, npc_id)
        assert events[-1].finish == ""


def test_default_ids_come_from_the_bundle_name_and_taken_ids_are_refused(tiny_bundle):
    with Runtime(threads=1) as rt:
        first = rt.start_loading(tiny_bundle)
        assert first.endswith("#1")
        with pytest.raises(InvalidArgumentError, match="already loaded"):
            rt.start_loading(tiny_bundle, npc_id=first)  # still loading counts as taken
        with pytest.raises(InvalidArgumentError, match="already loaded"):
            rt.load_npc(tiny_bundle, npc_id=first)
        frames_until_loaded(rt, first)
        assert rt.npc(first).bundle.name == first.split("#")[0]


def test_a_missing_bundle_fails_at_once_and_a_damaged_one_in_its_loaded_event(tiny_bundle, tiny_copy):
    model = tiny_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with Runtime(threads=1) as rt:
        with pytest.raises(BundleMissingError):
            rt.start_loading(tiny_copy.parent / "nowhere.lmpc")
        npc_id = rt.start_loading(tiny_copy, npc_id="damaged")
        events, _, _ = frames_until_loaded(rt, npc_id)
        assert events[-1].finish == FINISH_ERROR and "sha256 does not match" in events[-1].text
        assert not rt.busy()
        with pytest.raises(InvalidArgumentError, match="no NPC"):
            rt.npc(npc_id)
        # The id is free again, and a good bundle loads under it.
        rt.start_loading(tiny_bundle, npc_id="damaged")
        assert frames_until_loaded(rt, "damaged")[0][-1].finish == ""


def test_unloading_an_npc_still_loading_drops_it_when_its_load_ends(tiny_bundle):
    with Runtime(threads=1) as rt:
        npc_id = rt.start_loading(tiny_bundle)
        rt.unload_npc(npc_id)
        events, _, _ = frames_until_loaded(rt, npc_id)
        assert events[-1].finish == FINISH_CANCELLED and rt.npcs == [] and not rt.busy()


def test_closing_during_a_load_returns_and_stops_the_loading_thread(tiny_bundle):
    rt = Runtime(threads=1)
    rt.start_loading(tiny_bundle)
    loader = rt._loader
    rt.close()
    assert not loader._thread.is_alive()
    with pytest.raises(StateError, match="closed"):
        rt.start_loading(tiny_bundle)


def test_the_c_side_gives_a_handle_at_once_and_events_carry_it(tiny_bundle, tiny_copy):
    (tiny_copy / "model.onnx").write_bytes(b"not a model")
    api = CApi()
    rt = api.open(threads=1, has_seed=True, seed=2, max_npcs=0, worker=False, duty_cycle=0.5)
    good = api.npc_load_async(rt, str(tiny_bundle).encode(), b"good")
    bad = api.npc_load_async(rt, str(tiny_copy).encode(), b"bad")
    with pytest.raises(CallError) as early:
        api.say(good, b"Too early?")
    assert early.value.status == E_STATE
    ended = {}
    deadline = time.monotonic() + 120
    while len(ended) < 2:
        assert time.monotonic() < deadline
        api.tick(rt, 4000)
        status, fields, text = api.poll(rt, 4096)
        if status == OK and fields["kind"] == EVENT_CODES[LOADED]:
            ended[fields["npc"]] = (fields["finish"], text)
    assert ended[good] == (0, b"")
    assert ended[bad][0] == FINISH_CODES[FINISH_ERROR] and b"model.onnx" in ended[bad][1]
    with pytest.raises(CallError) as gone:
        api.say(bad, b"Hello?")
    assert gone.value.status == E_NOTFOUND
    assert api.say(good, b"Hello?") >= 1
    api.close(rt)
