"""An NPC's memory at work: retrieval into the prompt, gating, summaries, text hooks, the shared embedder.

Retrieval quality is judged with the real MiniLM embedder of the demo bundle; the mechanics run on the
tiny bundle, whose random embedder is only asked for a memory by its own words (cosine 1).
"""

import numpy as np
import pytest

from lmpc_runtime import HookError, InvalidArgumentError, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.hooks import TextHooks
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.recall import RecallConfig
from lmpc_runtime.memory.store import OWN_FIRST_ID
from lmpc_runtime.memory.summary import SummaryConfig, clean_summary, exchanges_to_summarise
from lmpc_runtime.persona import memory_note
from lmpc_runtime.reply import DONE, ERROR, SENTENCE, SUMMARY, TEXT

GREEDY = SamplingConfig(temperature=0.0, max_tokens=12)
SECRET = "The password to the old vault under Brightwater Hall is marigold."


def finish(npc, reply):
    events = list(npc.run_reply(reply))
    npc.end_reply(reply)
    return events


# --- Retrieval with the real embedder ---------------------------------------------------------------

@pytest.fixture(scope="module")
def real_npc(real_bundle):
    with Runtime() as rt:
        yield rt.load_npc(real_bundle, seed=1)


@pytest.mark.real_model
def test_the_real_embedder_pools_batches_and_normalises(real_bundle):
    bundle = read_bundle(real_bundle)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder)
    texts = ["Who are you?", "", "word " * 1000, "The Lantern Edict forbids teaching the Unblessed to read."]
    batch = embedder.embed(texts)
    assert batch.shape == (4, 384) and np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)
    assert np.allclose(batch[0], embedder.embed_one(texts[0]), atol=1e-4)
    assert float(batch[0] @ batch[3]) < 0.5 < float(embedder.embed_one("Who is he?") @ batch[0])


@pytest.mark.real_model
@pytest.mark.parametrize("question, fact", [
    ("Who is your sister?", "Orlando's only sibling is his younger sister Isolde Marlo"),
    ("When did your father die?", "Lord Aldous Marlo, died at Brightwater Hall in the winter of 484"),
    ("Who leads the Order of Solar Truth?", "The head of the Order of Solar Truth is Archlector Ignatius Vell"),
    ("Can you heal wounds with the Light?", "he cannot heal"),
    ("What is the Lantern Edict?", "forbids teaching the Unblessed to read or write"),
])
def test_retrieval_finds_the_sheet_facts(real_npc, question, fact):
    found = [m.text for m, _ in real_npc.recall(question, k=3)]
    assert any(fact in text for text in found), found


@pytest.mark.real_model
def test_retrieval_finds_planted_memories_among_the_bundle_statements(real_npc):
    planted = {
        "What is the name of Wenna's cat?": "The blacksmith's daughter Wenna keeps a grey cat called Thistle.",
        "How much silver do you owe me?": "Mira lent Orlando three silver crowns at the Tipped Lantern.",
        "Can I cross the river at Millbrook?": "The bridge at Millbrook collapsed in the spring floods of 487.",
        "Did you read the letter I brought?": "The traveller gave Orlando a letter sealed with green wax.",
    }
    ids = {question: real_npc.remember(text, importance=0.5) for question, text in planted.items()}
    try:
        for question, text in planted.items():
            top = real_npc.recall(question, k=3)
            assert ids[question] in [m.id for m, _ in top], (question, [m.text for m, _ in top])
        # A gated memory stays unknown until the game says so.
        theft = real_npc.remember("The traveller stole the silver chalice from the Sunspire.",
                                  requires="player.stole_chalice")
        assert theft not in [m.id for m, _ in real_npc.recall("Who stole the chalice?", k=5)]
        real_npc.facts.set("player.stole_chalice", True)
        assert real_npc.recall("Who stole the chalice?", k=1)[0][0].id == theft
        # A cue lets a question find a memory its words do not resemble.
        oath = "Orlando swore on the Sunspire steps to see the grain ledgers burned."
        uncued = real_npc.remember(oath)
        assert uncued not in [m.id for m, _ in real_npc.recall("What did you vow to do?", k=1)]
        real_npc.forget(uncued)
        cued = real_npc.remember(oath, cues=["What did you promise?", "Did you give your word to anyone?"])
        assert real_npc.recall("What did you vow to do?", k=1)[0][0].id == cued
        with pytest.raises(InvalidArgumentError, match="cues"):
            real_npc.remember("Not kept.", cues="What?")
        assert "Not kept." not in [m.text for m in real_npc.memories]
    finally:
        for memory in [m for m in real_npc.memories if m.id >= OWN_FIRST_ID]:
            real_npc.forget(memory.id)
        real_npc.facts.unset("player.stole_chalice")


@pytest.mark.real_model
def test_a_greeting_recalls_at_most_who_he_is(real_npc):
    # The writer's drills answer greetings with his name and house (their cues lead there); nothing else
    # is worth a greeting's tokens.
    assert [m.source for m, _ in real_npc.recall("Hello there!")] in ([], ["facts[0]"])


@pytest.mark.real_model
def test_a_line_like_a_drill_question_brings_the_writers_exchange_just_before_the_note(real_npc):
    """The persona test's "What's the motto of your house?" is no drill's words; the drill "What's your
    house's motto?" and its answer come in as the turn before the note. A line like no drill brings none."""
    def prompt_of(line, config=RecallConfig()):
        npc = real_npc
        npc.reset()
        npc.recall_config = config
        reply = npc.start_reply(line)
        try:
            return npc.chat.decode(list(reply.seq.tokens) + list(reply.todo))
        finally:
            reply.cancel()
            npc.end_reply(reply)
            npc.recall_config = RecallConfig()

    prompt = prompt_of("What's the motto of your house?")
    drill, answer, note = (prompt.index("user\nWhat's your house's motto?"), prompt.index("assistant\nSteady as the dawn"),
                           prompt.index("What Orlando Marlo recalls"))
    assert drill < answer < note < prompt.rindex("What's the motto of your house?")
    assert prompt_of("Seven purple geese.").count("\nuser\n") == 1  # like no drill: only the line itself
    assert "Steady as the dawn. It is" not in prompt_of("What's the motto of your house?", RecallConfig(exchanges=0))
    with pytest.raises(InvalidArgumentError, match="recall settings"):
        RecallConfig(exchanges=9)


# --- The note in the prompt, on the tiny bundle -----------------------------------------------------

def test_the_note_goes_right_before_the_players_turn_after_the_persona(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY, seed=1)
        npc.recall_config = RecallConfig(k=1, min_score=0.99)  # only a memory asked for by its own words
        memory_id = npc.remember(SECRET, importance=1.0)
        reply = npc.start_reply(SECRET)
        prompt = npc._seq.tokens + reply.todo
        tail = (npc.chat.turn("system", memory_note(npc.name, [SECRET])) + npc.chat.turn("user", SECRET)
                + npc.chat.open_turn())
        assert prompt[: len(npc.persona_tokens)] == npc.persona_tokens
        assert prompt[-len(tail):] == tail
        finish(npc, reply)

        npc.forget(memory_id)
        reply = npc.start_reply(SECRET)
        assert "recalls that may matter now" not in npc.chat.decode(npc._seq.tokens + reply.todo)
        reply.cancel()


def test_gated_memories_wait_for_the_facts(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY)
        npc.recall_config = RecallConfig(k=1, min_score=0.99)
        npc.remember(SECRET, requires="quest.stage >= 2 and player.name == 'Mira'")
        npc.facts.set("quest.stage", 2)
        assert npc.recall(SECRET) == []
        npc.facts.set("player.name", "Mira")
        assert [m.text for m, _ in npc.recall(SECRET)] == [SECRET]


def test_npcs_of_a_runtime_share_one_embedder_session(tiny_bundle):
    with Runtime() as rt:
        a, b = rt.load_npc(tiny_bundle), rt.load_npc(tiny_bundle)
        assert a.embedder is b.embedder
        rt.unload_npc(a.id)
        rt.unload_npc(b.id)
        assert rt._embedders == {}


# --- Long-term memory -------------------------------------------------------------------------------

def test_when_a_summary_falls_due():
    config = SummaryConfig(at_fraction=0.75, keep_turns=2)
    assert exchanges_to_summarise([30] * 3, room=200, turns_since=3, limit=500, config=config) == 0
    assert exchanges_to_summarise([30] * 6, room=200, turns_since=6, limit=500, config=config) == 3
    assert exchanges_to_summarise([100, 10, 10, 10], room=100, turns_since=4, limit=500, config=config) == 1
    assert exchanges_to_summarise([60] * 6, room=100, turns_since=6, limit=130, config=config) == 2
    assert exchanges_to_summarise([60] * 3, room=100, turns_since=3, limit=500, config=config) == 1
    every = SummaryConfig(every_turns=4, keep_turns=1)
    assert exchanges_to_summarise([10] * 4, room=1000, turns_since=3, limit=500, config=every) == 0
    assert exchanges_to_summarise([10] * 4, room=1000, turns_since=4, limit=500, config=every) == 3


def test_an_empty_summary_falls_back_to_what_was_said():
    exchanges = [("Where is the bridge? It matters.", "Downstream. Mind the ford."), ("Thanks.", "Go well.")]
    assert clean_summary("  The traveller  asked about the bridge. ", "Orlando", "Mira", exchanges) == \
        "The traveller asked about the bridge."
    assert clean_summary("", "Orlando", "Mira", exchanges) == \
        "Mira said: Where is the bridge?; Thanks. Orlando answered: Downstream.; Go well."


def test_summary_job_stores_a_memory_and_drops_the_exchanges(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SamplingConfig(max_tokens=4), seed=2)
        npc.recall_config = RecallConfig(k=2, note_tokens=64)
        npc.summary_config = SummaryConfig(every_turns=3, keep_turns=1, max_tokens=12)
        npc.game_time = 36.5
        for turn in range(2):
            finish(npc, npc.start_reply(f"Line {turn}: the miller wants his grain back."))
        assert npc.background_jobs() == []
        finish(npc, npc.start_reply("Line 2: and the mayor too."))
        (job,) = npc.background_jobs()
        assert job.kind == "summary" and job.seq is not npc._seq
        assert "journal of Orlando Marlo" in npc.chat.decode(job.todo)
        assert npc.background_jobs() == [job]  # one job at a time, not a new one per call
        events = list(npc.run_reply(job))
        (summary,) = [e for e in events if e.kind == SUMMARY]
        assert summary.text and summary.reply == job.id and events[-1] is summary
        memory = [m for m in npc.memories if m.kind == "summary"][0]
        assert (memory.text, memory.game_time, memory.source) == (summary.text, 36.5,
                                                                   "conversation, exchanges 1-2")
        assert [p for p, _ in npc.history] == ["Line 2: and the mayor too."] and npc.summarised_turns == 2
        assert npc.background_jobs() == []


def test_the_runtime_schedules_summaries_behind_the_replies(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SamplingConfig(max_tokens=3), seed=2)
        npc.summary_config = SummaryConfig(every_turns=2, keep_turns=0, max_tokens=8)
        events = []
        for line in ("Hello there.", "Where is the ford?"):
            rt.say(npc, line)
            for _ in range(300):
                rt.tick(budget_ms=20)
                events += rt.poll()
                if any(e.kind == SUMMARY for e in events) or not rt.busy() and len(npc.history) == 1:
                    break
        kinds = [e.kind for e in events]
        assert kinds.count(DONE) == 3 and kinds[-1] == SUMMARY  # two replies, then the summary job
        assert npc.history == [] and [m.kind for m in npc.memories][-1] == "summary"
        rt.unload_npc(npc)
        assert rt._scheduler.jobs == []


def test_a_reset_makes_a_running_summary_stale(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=SamplingConfig(max_tokens=4), seed=2)
        npc.summary_config = SummaryConfig(every_turns=1, keep_turns=0, max_tokens=8)
        finish(npc, npc.start_reply("Hello there."))
        (job,) = npc.background_jobs()
        npc.reset()
        assert job.done and job.finish == "cancelled"
        assert [m for m in npc.memories if m.kind == "summary"] == [] and npc.history == []


def test_a_200_turn_conversation_stays_inside_the_context_with_summaries(tiny_bundle):
    with Runtime() as rt:
        # Short replies, and summaries of about five exchanges at a time, keep this test quick.
        npc = rt.load_npc(tiny_bundle, sampling=SamplingConfig(max_tokens=2), seed=3)
        npc.recall_config = RecallConfig(k=1, note_tokens=32)
        npc.summary_config = SummaryConfig(at_fraction=1.0, max_tokens=8)
        limit = npc._engine.spec.context_length - 2
        summaries = []
        for turn in range(200):
            reply = npc.start_reply(f"This is question number {turn}, about the weather and the harvest.")
            prompt = npc._seq.tokens + reply.todo
            assert len(prompt) <= limit
            assert prompt[: len(npc.persona_tokens)] == npc.persona_tokens
            finish(npc, reply)
            for job in npc.background_jobs():
                summaries += [e for e in npc.run_reply(job) if e.kind == SUMMARY]
        stored = [m for m in npc.memories if m.kind == "summary"]
        assert len(summaries) == len(stored) >= 20
        # Every exchange either went into a summary or is still in the history, and that stays short.
        assert npc.summarised_turns + len(npc.history) == 200 and len(npc.history) <= 12


# --- Text hooks -------------------------------------------------------------------------------------

def test_the_input_hook_rewrites_the_players_line(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY)
        npc.hooks = TextHooks(before_model=lambda text: "Bonjour, " + text.upper())
        finish(npc, npc.start_reply("who are you?"))
        assert npc.history[0][0] == "Bonjour, WHO ARE YOU?"


@pytest.mark.parametrize("hook, error, message", [
    (lambda text: 1 / 0, HookError, "raised ZeroDivisionError"),
    (lambda text: None, HookError, "returned NoneType"),
    (lambda text: " \x00 ", InvalidArgumentError, "empty"),
])
def test_a_failing_input_hook_is_a_clear_error(tiny_bundle, hook, error, message):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, sampling=GREEDY)
        npc.hooks = TextHooks(before_model=hook)
        with pytest.raises(error, match=message):
            npc.start_reply("hello")
        assert npc.current is None and npc.history == []


def test_the_output_hook_sees_whole_sentences_and_the_history_keeps_the_models_words(tiny_bundle):
    with Runtime() as rt:
        plain = rt.load_npc(tiny_bundle, sampling=GREEDY, seed=4)
        hooked = rt.load_npc(tiny_bundle, sampling=GREEDY, seed=4)
        hooked.hooks = TextHooks(after_model=lambda sentence: f"<{sentence}>")
        reference = list(plain.ask("Tell me about the Order of Solar Truth."))
        events = list(hooked.ask("Tell me about the Order of Solar Truth."))
        sentences = [e.text for e in reference if e.kind == SENTENCE]
        assert sentences and [e.text for e in events if e.kind == SENTENCE] == [f"<{s}>" for s in sentences]
        assert "".join(e.text for e in events if e.kind == TEXT) == " ".join(f"<{s}>" for s in sentences)
        assert events[-1].kind == DONE and events[-1].text == " ".join(f"<{s}>" for s in sentences)
        assert hooked.history == plain.history  # the model reads its own words back

        hooked.hooks = TextHooks(after_model=lambda sentence: 1 / 0)
        events = list(hooked.ask("And then?"))
        assert any(e.kind == ERROR and "ZeroDivisionError" in e.text for e in events)
        shown = [e.text for e in events if e.kind == SENTENCE]
        assert shown and events[-1].kind == DONE and events[-1].text == " ".join(shown)


def test_hooks_must_be_callable():
    with pytest.raises(HookError):
        TextHooks(before_model="translate")


def test_a_recalled_exchange_that_does_not_fit_is_left_out_and_the_conversation_kept(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, seed=0)
        npc.history = [("Where is Vesper?", "In the stable.")]
        short, huge = ("What's your horse called?", "Vesper."), ("What's your horse called?", "word " * 5000)
        shown = npc.chat.decode(npc.prompt_tokens("And her colour?", 16, (), [short]))
        assert shown.index("In the stable.") < shown.index("Vesper.\n") < shown.index("And her colour?")
        left_out = npc.chat.decode(npc.prompt_tokens("And her colour?", 16, (), [huge]))
        assert "word word" not in left_out and "In the stable." in left_out
