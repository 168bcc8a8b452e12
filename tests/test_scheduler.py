"""The per-frame scheduler on the tiny model with a fake clock: each model call advances the clock by a
fixed cost, so budgets, priorities and fairness are checked exactly, independent of machine load."""

import threading

import pytest

from lmpc_runtime import InvalidArgumentError, Runtime, SamplingConfig, StateError
from lmpc_runtime.reply import DONE, SENTENCE, STARTED, TEXT
from lmpc_runtime.scheduler import AMBIENT, FOCUS, NORMAL

PREFILL_FIXED, PREFILL_TOKEN = 0.0005, 0.0001
DECODE_FIXED, DECODE_SEQ = 0.0010, 0.0002


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class TimedEngine:
    """The real tiny engine, but every forward pass costs a fixed amount of fake time, shared evenly by its
    segments (each `advance` moves the clock by its share)."""

    def __init__(self, engine, clock):
        self.engine, self.clock, self.spec, self.segments = engine, clock, engine.spec, engine.segments
        self.calls = []

    def new_sequence(self):
        return self.engine.new_sequence()

    def begin_extend(self, seq, tokens):
        self.calls.append(("prefill", len(tokens)))
        return TimedPass(self.engine.begin_extend(seq, tokens), self.clock, PREFILL_FIXED + PREFILL_TOKEN * len(tokens))

    def begin_step(self, seqs, tokens):
        self.calls.append(("decode", len(seqs)))
        return TimedPass(self.engine.begin_step(seqs, tokens), self.clock, DECODE_FIXED + DECODE_SEQ * len(seqs))


class TimedPass:
    def __init__(self, forward, clock, cost):
        self.forward, self.clock, self.cost = forward, clock, cost
        self.segments = forward.segments

    @property
    def next_segment(self):
        return self.forward.next_segment

    def advance(self):
        self.clock.now += self.cost / self.segments
        return self.forward.advance()

    def cancel(self):
        self.forward.cancel()


@pytest.fixture
def world(tiny_bundle):
    clock = FakeClock()
    rt = Runtime(seed=7, clock=clock)
    npcs = [rt.load_npc(tiny_bundle, npc_id=name, sampling=SamplingConfig(max_tokens=16))
            for name in ("focus", "ambient", "third")]
    timed = TimedEngine(npcs[0]._engine, clock)
    for npc in npcs:
        npc._engine = timed
    yield rt, clock, timed, npcs
    rt.close()


def run_frames(rt, clock, frames, budget_ms=5.0, frame_s=1 / 60, **tick):
    log = []
    for _ in range(frames):
        start = clock.now
        stats = rt.tick(budget_ms=budget_ms, **tick)
        log.append((stats, rt.poll()))
        clock.now = start + max(frame_s, clock.now - start)
    return log


def test_budget_is_respected_once_the_costs_are_learnt(world):
    rt, clock, _, npcs = world
    for npc in npcs:
        rt.say(npc, "Tell me the news from the capital, please.")
    log = run_frames(rt, clock, 120)
    segments = npcs[0]._engine.segments
    assert segments > 1, "the tiny bundle is cut into segments"
    largest_segment = (PREFILL_FIXED + PREFILL_TOKEN * 256) / segments
    assert all(s.seconds <= 0.005 + largest_segment for s, _ in log)
    # Three prefills and one decode per sequence are enough to fit the cost model; the replies run ~10 frames.
    settled = [s for s, _ in log[3:] if s.steps]
    assert len(settled) >= 5 and all(s.seconds <= 0.005 + 1e-4 for s in settled)
    assert any(len(s.step_kinds) > 1 for s in settled), "a 5 ms budget fits several steps of this size"


def test_focus_speaks_first(world):
    rt, clock, _, (focus, ambient, _) = world
    rt.say(ambient, "Lovely weather.", priority=AMBIENT)
    rt.say(focus, "Who are you?", priority=FOCUS)
    events = [e for _, evs in run_frames(rt, clock, 300, budget_ms=2.0) for e in evs]
    started = [e.npc for e in events if e.kind == STARTED]
    assert started == ["focus", "ambient"]
    assert {e.npc for e in events if e.kind == DONE} == {"focus", "ambient"}


def test_ambient_progresses_while_focus_never_stops_talking(world):
    rt, clock, _, (focus, ambient, _) = world
    rt.say(ambient, "Lovely weather.", priority=AMBIENT)
    rt.say(focus, "Question 0?", priority=FOCUS)
    focus_replies, ambient_done = 0, False
    for frame in range(2000):
        (_, events), = run_frames(rt, clock, 1, budget_ms=1.5)
        for event in events:
            if event.kind == DONE and event.npc == "focus":
                focus_replies += 1
                rt.say(focus, f"Question {focus_replies}?", priority=FOCUS)  # the player never stops
            ambient_done |= event.kind == DONE and event.npc == "ambient"
        if ambient_done:
            break
    assert ambient_done, "low-priority work must not starve"
    assert focus_replies >= 1


def test_decoding_npcs_share_one_forward_pass(world):
    rt, clock, timed, npcs = world
    for npc in npcs:
        rt.say(npc, "Hello")
    run_frames(rt, clock, 200)
    assert max(n for kind, n in timed.calls if kind == "decode") == 3


def test_long_prompts_are_prefilled_in_chunks_over_frames(world):
    rt, clock, timed, (focus, _, _) = world
    rt.say(focus, "word " * 300)
    log = run_frames(rt, clock, 60, budget_ms=3.0)
    chunks = [n for kind, n in timed.calls if kind == "prefill"]
    assert len(chunks) > 5 and sum(chunks) > 300
    frames_with_prefill = sum(1 for s, _ in log if s.prefill_tokens)
    assert frames_with_prefill > 3


def test_no_prefill_chunk_is_a_single_token(world):
    """However a frame's budget cuts a prompt, no one-token pass lands on a cache (Reply.take_prefill),
    so the cut never changes the reply."""
    rt, clock, timed, npcs = world
    for npc, budget_ms, prompt in zip(npcs, (0.3, 0.2, 3.0), ("word " * 60, "word " * 41, "word " * 300)):
        timed.calls.clear()
        rt.say(npc, prompt)
        run_frames(rt, clock, 80, budget_ms=budget_ms)
        chunks = [n for kind, n in timed.calls if kind == "prefill"]
        assert len(chunks) > 1 and 1 not in chunks, (budget_ms, chunks)


def test_cancel_frees_the_npc_and_leaves_no_history(world):
    rt, clock, _, (focus, _, _) = world
    first = rt.say(focus, "Tell me everything.")
    queued = rt.say(focus, "And then?")
    while not any(e.kind == TEXT for e in run_frames(rt, clock, 1)[0][1]):
        pass
    assert focus.current is not None and not focus.current.done
    rt.cancel(focus)
    events = rt.poll()
    assert [(e.kind, e.reply, e.finish) for e in events] == [(DONE, first, "cancelled")]
    assert not rt.busy() and focus.history == [] and not rt._scheduler.jobs
    later = rt.say(focus, "A new question.")
    log = run_frames(rt, clock, 200)
    ids = {e.reply for _, evs in log for e in evs}
    assert ids == {later} and queued not in ids
    assert len(focus.history) == 1


def test_event_order_per_reply(world):
    rt, clock, _, npcs = world
    said = {npc.id: rt.say(npc, "Good day to you.") for npc in npcs}
    events = [e for _, evs in run_frames(rt, clock, 300) for e in evs]
    for npc_id, reply_id in said.items():
        mine = [e for e in events if e.npc == npc_id]
        assert {e.reply for e in mine} == {reply_id}
        kinds = [e.kind for e in mine]
        assert kinds[0] == STARTED and kinds[-1] == DONE and kinds.count(DONE) == 1
        assert set(kinds) <= {STARTED, TEXT, SENTENCE, DONE}
        streamed = "".join(e.text for e in mine if e.kind == TEXT).strip()
        assert streamed == mine[-1].text


def test_deadline_raises_urgency(world):
    rt, clock, _, (a, b, _) = world
    rt.say(a, "No hurry at all.", priority=NORMAL)
    rt.say(b, "Quickly!", priority=NORMAL, deadline_ms=20)
    events = [e for _, evs in run_frames(rt, clock, 200, budget_ms=2.0) for e in evs]
    starts = [e.npc for e in events if e.kind == STARTED]
    assert starts[0] == "ambient"  # npc b, asked second, with a deadline


def test_token_budget_per_tick(world):
    rt, clock, _, npcs = world
    for npc in npcs:
        rt.say(npc, "Hello there")
    log = run_frames(rt, clock, 100, budget_ms=50.0, max_tokens=3)
    assert all(s.prefill_tokens + s.decoded_tokens <= 3 for s, _ in log)


def test_zero_negative_and_bad_budgets(world):
    rt, clock, timed, (focus, _, _) = world
    rt.say(focus, "Hello")
    assert rt.tick(budget_ms=0).steps == 0 and rt.tick(budget_ms=-5).steps == 0
    assert timed.calls == []
    for bad in (float("nan"), "4", None, True):
        with pytest.raises(InvalidArgumentError):
            rt.tick(budget_ms=bad)
    with pytest.raises(InvalidArgumentError):
        rt.tick(max_tokens=-1)


def test_bad_calls_are_typed_errors(world):
    rt, _, _, (focus, _, _) = world
    with pytest.raises(InvalidArgumentError):
        rt.say("nobody", "hi")
    with pytest.raises(InvalidArgumentError):
        rt.say(focus, "   ")
    with pytest.raises(InvalidArgumentError):
        rt.set_priority(focus, float("inf"))
    with pytest.raises(InvalidArgumentError):
        rt.say(focus, "hi", deadline_ms=0)


def test_calls_from_another_thread_are_refused(world):
    rt, _, _, (focus, _, _) = world
    caught = []
    thread = threading.Thread(target=lambda: caught.append(pytest.raises(StateError, rt.say, focus, "hi")))
    thread.start()
    thread.join()
    assert caught


def test_a_pass_longer_than_the_budget_runs_over_several_ticks(world):
    """A decode pass costs more than the budget, each of its segments less: every tick stops between two
    segments within budget + one segment, and the pass goes on in the next tick."""
    rt, clock, timed, (focus, _, _) = world
    segment = (DECODE_FIXED + DECODE_SEQ) / timed.segments
    budget_s = 0.6 * (DECODE_FIXED + DECODE_SEQ)
    rt.say(focus, "Hello")
    log = run_frames(rt, clock, 400, budget_ms=1000 * budget_s)
    assert any(e.kind == DONE for _, evs in log for e in evs)
    worked = [s for s, _ in log if s.steps]
    assert all(s.seconds <= budget_s + segment + 1e-9 for s in worked)
    # Once the costs are learnt, a tick runs as many segments as fit: more than one, fewer than a pass.
    settled = [s.steps for s in worked[20:] if set(s.step_kinds) == {"decode"}]
    assert settled and 1 < max(settled) < timed.segments


def test_cancel_in_the_middle_of_a_pass_frees_the_sequence(world):
    rt, clock, _, (focus, _, _) = world
    rt.say(focus, "Tell me a long story about the sea.")
    for _ in range(200):
        run_frames(rt, clock, 1, budget_ms=0.3)
        flight = rt._scheduler.flight
        if flight is not None and flight.kind == "decode" and 0 < flight.forward.next_segment:
            break
    else:
        pytest.fail("no decode pass was ever left half done")
    seq = focus.current.seq
    length = len(seq)
    assert seq.busy
    rt.cancel(focus)
    assert rt._scheduler.flight is None and not seq.busy and len(seq) == length
    assert [e.finish for e in rt.poll()] == ["cancelled"]
    later = rt.say(focus, "And now?")
    events = [e for _, evs in run_frames(rt, clock, 300) for e in evs]
    assert [e.reply for e in events if e.kind == DONE] == [later]
