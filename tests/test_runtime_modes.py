"""A reply is the same however the work is sliced: one synchronous call, many tiny ticks, or the worker
thread. Checked on the tiny model, and on the real one for tiny ticks."""

import time

import pytest

from lmpc_runtime import InvalidArgumentError, Runtime, SamplingConfig
from lmpc_runtime.capi import DONE_STATUS, EVENT_CODES, OK, PENDING, CApi
from lmpc_runtime.reply import DONE, STARTED


def ask_once(bundle, seed, line, sampling):
    with Runtime() as rt:
        npc = rt.load_npc(bundle, seed=seed, sampling=sampling)
        done = [e for e in npc.ask(line) if e.kind == DONE][0]
        return done.text, list(npc.history)


def ask_by_ticks(bundle, seed, line, sampling, **tick):
    with Runtime() as rt:
        npc = rt.load_npc(bundle, seed=seed, sampling=sampling)
        rt.say(npc, line)
        ticks, done = 0, None
        while done is None:
            rt.tick(**tick)
            ticks += 1
            done = next((e for e in rt.poll() if e.kind == DONE), None)
        return done.text, list(npc.history), ticks


def wait_until(condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout_s:g} s"
        time.sleep(0.002)


def test_tiny_ticks_give_the_same_reply_as_one_call(tiny_bundle):
    sampling = SamplingConfig(max_tokens=20)
    text, history = ask_once(tiny_bundle, 11, "Where is the capital?", sampling)
    sliced, sliced_history, ticks = ask_by_ticks(tiny_bundle, 11, "Where is the capital?", sampling,
                                                 budget_ms=1000, max_tokens=1)
    assert (sliced, sliced_history) == (text, history)
    assert ticks > 20


def test_worker_mode_gives_the_same_reply_and_tick_costs_nothing(tiny_bundle):
    sampling = SamplingConfig(max_tokens=20)
    expected, _ = ask_once(tiny_bundle, 5, "Hello, knight.", sampling)
    with Runtime(worker=True, duty_cycle=0.5) as rt:
        npc = rt.load_npc(tiny_bundle, seed=5, sampling=sampling)
        rt.say(npc, "Hello, knight.")
        deadline, done = time.monotonic() + 60, None
        while done is None and time.monotonic() < deadline:
            stats = rt.tick(budget_ms=4)
            assert stats.steps == 0
            done = next((e for e in rt.poll() if e.kind == DONE), None)
            time.sleep(0.005)
        assert done is not None and done.text == expected
        worker = rt._worker
    assert not worker._thread.is_alive()


def test_worker_mode_is_busy_from_the_moment_a_line_is_said(tiny_bundle):
    """A host that asks right after say() must not hear "idle" while the line waits for the thread, and
    once it hears "idle" the reply's events are all there to poll."""
    with Runtime(worker=True) as rt:
        npc = rt.load_npc(tiny_bundle, seed=2, sampling=SamplingConfig(max_tokens=6))
        wait_until(lambda: not rt.busy())  # the NPC's registration reaches the thread as a command, too
        for line in ("Hello there.", "Where is the capital?", "Farewell."):
            reply_id = rt.say(npc, line)
            assert rt.busy()
            wait_until(lambda: not rt.busy())
            assert [e.kind for e in rt.poll() if e.reply == reply_id][-1] == DONE


def test_the_c_tick_in_worker_mode_says_pending_until_the_reply_is_done(tiny_bundle):
    api = CApi()
    rt = api.open(threads=1, has_seed=True, seed=4, max_npcs=2, worker=True, duty_cycle=1.0)
    try:
        npc = api.npc_load(rt, str(tiny_bundle).encode(), None)
        wait_until(lambda: api.tick(rt, 4000) == DONE_STATUS)
        api.say(npc, b"Hello there.")
        assert api.tick(rt, 4000) == PENDING
        wait_until(lambda: api.tick(rt, 4000) == DONE_STATUS)
        kinds = []
        while (polled := api.poll(rt, 4096))[0] == OK:
            kinds.append(polled[1]["kind"])
        assert kinds[0] == EVENT_CODES[STARTED] and kinds[-1] == EVENT_CODES[DONE]
    finally:
        api.close(rt)


def test_worker_mode_argument_checks():
    with pytest.raises(InvalidArgumentError):
        Runtime(worker=True, duty_cycle=0)


@pytest.mark.real_model
def test_real_reply_over_many_small_ticks_equals_one_call(real_bundle):
    sampling = SamplingConfig(max_tokens=40)
    text, history = ask_once(real_bundle, 21, "What do you want most?", sampling)
    sliced, sliced_history, ticks = ask_by_ticks(real_bundle, 21, "What do you want most?", sampling,
                                                 budget_ms=2.0)
    assert (sliced, sliced_history) == (text, history) and text
    assert ticks > 20


def test_worker_mode_saves_and_restores_an_npc_between_steps(tiny_bundle, tmp_path):
    sampling = SamplingConfig(max_tokens=12)
    with Runtime(worker=True) as rt:
        npc = rt.load_npc(tiny_bundle, seed=3, sampling=sampling)
        rt.set_fact(npc, "quest.stage", 2)
        rt.say(npc, "Where is the capital?")
        deadline = time.monotonic() + 60
        while not any(e.kind == DONE for e in rt.poll()):
            assert time.monotonic() < deadline, "no reply from the worker"
            time.sleep(0.01)
        rt.save_state(npc, tmp_path / "npc.sav")
        saved_history = list(npc.history)
        rt.set_fact(npc, "quest.stage", 3)
        rt.say(npc, "And the harbour?")  # in flight, or waiting, when the load drops it
        rt.load_state(npc, tmp_path / "npc.sav")
        assert npc.facts["quest.stage"] == 2 and npc.history == saved_history
        data = rt.save_state_bytes(npc)
        rt.set_fact(npc, "quest.stage", 5)
        rt.load_state_bytes(npc, data)
        assert npc.facts["quest.stage"] == 2 and npc.history == saved_history
        with pytest.raises(InvalidArgumentError):
            rt.set_fact(npc, "", 1)  # the worker's validation error reaches the caller
        memory = rt.remember(npc, "The harbour master owes me a favour.", importance=0.9)
        assert memory >= 2**32 and npc.memories.get(memory).text == "The harbour master owes me a favour."
        assert rt.forget(npc, memory).text == "The harbour master owes me a favour."
        with pytest.raises(InvalidArgumentError):
            rt.remember(npc, 42)


def test_each_caller_gets_the_graph_it_needs(tiny_bundle):
    """Ticks run the segments (a frame's budget is kept a segment at a time); `npc.ask`, which has no frame
    to keep, runs the whole graph, opened when first needed; a tool's Runtime(segmented=False) opens only it."""
    sampling = SamplingConfig(max_tokens=12)
    with Runtime(segmented=False) as rt:
        npc = rt.load_npc(tiny_bundle, seed=9, sampling=sampling)
        assert npc._engine.open_graphs == ["whole"]
        whole = [e for e in npc.ask("Where is the capital?") if e.kind == DONE][0].text
    with Runtime() as rt:
        ticking, asking = (rt.load_npc(tiny_bundle, seed=9, sampling=sampling) for _ in range(2))
        rt.say(ticking, "Where is the capital?")
        ticked = []
        while not ticked:
            rt.tick(budget_ms=50)
            ticked = [e.text for e in rt.poll() if e.kind == DONE]
        assert ticking._engine is asking._engine and asking._engine.open_graphs == ["segmented"]
        assert ticked == [whole]
        assert [e for e in asking.ask("Where is the capital?") if e.kind == DONE][0].text == whole
        assert asking._engine.open_graphs == ["segmented", "whole"]
    with pytest.raises(InvalidArgumentError):
        Runtime(segmented="yes")
