"""A reply is the same however the work is sliced: one synchronous call, many tiny ticks, or the worker
thread. Checked on the tiny model, and on the real one for tiny ticks."""

import time

import pytest

from lmpc_runtime import InvalidArgumentError, Runtime, SamplingConfig
from lmpc_runtime.reply import DONE


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
        assert rt.load_state_bytes(npc, rt.save_state_bytes(npc)) is None
        with pytest.raises(InvalidArgumentError):
            rt.set_fact(npc, "", 1)  # the worker's validation error reaches the caller
