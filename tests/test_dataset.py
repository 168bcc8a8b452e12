"""Training samples: the runtime's exact prompt ids, the loss mask, memory notes, weights and the split."""

from dataclasses import replace
from pathlib import Path

import pytest

from lmpc_export.dataset import Sample, make_samples, persona_digest, persona_ids, render, runtime_notes, split
from lmpc_export.dialogues import Dialogue, dialogue_file_for, load_dialogues, writer_dialogues
from lmpc_export.knowledge import knowledge_file_for, load_knowledge
from lmpc_runtime import Runtime, SheetError
from lmpc_runtime.memory.recall import Recalled
from lmpc_runtime.persona import memory_note, persona_text
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET

THREE_TURNS = Dialogue(turns=(("Who are you?", "Orlando Marlo, of Brightwater Hall."),
                              ("And your horse?", "Vesper, a grey mare my sister named."),
                              ("Where is she now?", "In the stable, eating more than her share.")),
                       source="writer", context="a stable boy")


@pytest.fixture(scope="module")
def npc(tiny_bundle):
    with Runtime() as rt:
        yield rt.load_npc(tiny_bundle, seed=0)


def test_memory_notes_are_the_runtime_prompts_notes(tiny_bundle):
    """The note a training sample gets for a line is the one the runtime puts in the prompt for it."""
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, seed=0)
        sheet = npc.bundle.character
        notes = runtime_notes(sheet, npc.embedder, npc.chat.count)
        # The tiny embedder finds a statement relevant only when asked in its own words.
        statement = next(m.text for m in npc.memories)
        for line in (statement, "Where is the nearest inn?"):
            recalled = notes([line])
            rendered = render(Sample(Dialogue(((line, "Hm."),), "writer"), tuple(recalled.note), 0,
                                     tuple(recalled.exchanges)), sheet, npc.chat)
            reply = npc.start_reply(line)
            prompt = npc._seq.tokens + reply.todo
            reply.cancel()
            npc.reset()
            assert rendered.input_ids[: len(prompt)] == prompt
        assert notes([statement]).note[0] == statement


def test_a_drill_is_shown_the_exchange_of_another_drill_never_its_own(tiny_bundle):
    with Runtime() as rt:
        npc = rt.load_npc(tiny_bundle, seed=0)
        sheet = npc.bundle.character
        topics = tuple(load_knowledge(knowledge_file_for(ORLANDO_SHEET), sheet))
        notes = runtime_notes(sheet, npc.embedder, npc.chat.count, knowledge=topics)
        asked = [t.questions[0] for t in topics[:20]]
        shown = [notes([question]).exchanges for question in asked]
        assert all(len(s) == 1 for s in shown)  # the tiny embedder finds every question alike
        assert all(s[0][0] != question for s, question in zip(shown, asked))


@pytest.mark.parametrize("note, exchanges", [((), ()), (("A fact.",), (("What's your house's motto?", "Steady as the dawn."),))])
def test_render_gives_exactly_the_runtime_prompt(npc, note, exchanges):
    sheet = npc.bundle.character
    rendered = render(Sample(THREE_TURNS, note, 0, exchanges), sheet, npc.chat)
    npc.history = list(THREE_TURNS.turns[:2])
    prompt = npc.prompt_tokens(THREE_TURNS.turns[2][0], 80, note, exchanges)
    npc.history = []
    assert rendered.input_ids[: len(prompt)] == prompt
    assert rendered.prefix_length == len(npc.persona_tokens)
    assert rendered.input_ids[: rendered.prefix_length] == npc.persona_tokens


def test_the_loss_covers_only_the_replies_and_their_end_of_turn(npc):
    chat, im_end = npc.chat, npc.bundle.special.im_end
    rendered = render(Sample(THREE_TURNS, ("A fact.", "Another fact."), 0), npc.bundle.character, chat)
    ids, mask = rendered.input_ids, rendered.assistant_masks
    assert len(ids) == len(mask) and not any(mask[: rendered.prefix_length])
    spans, start = [], None
    for i, m in enumerate(mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append(ids[start:i])
            start = None
    assert [chat.decode(s[:-1]) for s in spans] == [npc for _, npc in THREE_TURNS.turns]
    assert all(s[-1] == im_end for s in spans)


def test_the_memory_note_sits_just_before_the_last_player_line(npc):
    sheet, chat = npc.bundle.character, npc.chat
    memories = ("Orlando's horse is a grey mare named Vesper.",)
    with_note = render(Sample(THREE_TURNS, memories, 0), sheet, chat).input_ids
    plain = render(Sample(THREE_TURNS, (), 0), sheet, chat).input_ids
    note = chat.turn("system", memory_note(sheet.name, list(memories)))
    last_player = chat.turn("user", THREE_TURNS.turns[2][0])
    at = max(i for i in range(len(plain)) if plain[i:i + len(last_player)] == last_player)
    assert with_note[:at] == plain[:at]
    assert with_note[at: at + len(note)] == note and with_note[at + len(note):] == plain[at:]


def test_writer_dialogues_are_weighted_and_generated_ones_keep_their_memories():
    generated = Dialogue(turns=(("Hi?", "Good day."),), source="generated", memories=("A fact.",))
    asked = []
    def notes(messages):
        asked.append(messages)
        return Recalled([f"recalled for {messages[-1]}"], [("Where's Vesper?", "In the stable.")])

    samples = make_samples([THREE_TURNS, generated], notes, writer_weight=3)
    assert [s.group for s in samples] == [0, 0, 0, 1]
    assert asked == [["Who are you?", "Orlando Marlo, of Brightwater Hall.", "And your horse?",
                      "Vesper, a grey mare my sister named.", "Where is she now?"]]
    assert samples[0].memories == () and all(s.memories == ("recalled for Where is she now?",) for s in samples[1:3])
    assert samples[0].exchanges == () and all(s.exchanges == (("Where's Vesper?", "In the stable."),) for s in samples[1:3])
    assert samples[3].memories == ("A fact.",) and samples[3].exchanges == ()
    assert all(s.exchanges == () for s in make_samples([THREE_TURNS], notes, writer_weight=3, exchanges=False))


def test_split_keeps_each_dialogue_on_one_side():
    dialogues = [replace(THREE_TURNS, context=str(i)) for i in range(20)]
    samples = make_samples(dialogues, writer_weight=2)
    train, held = split(samples, 0.1, seed=3)
    assert len(held) == 4 and not {s.group for s in train} & {s.group for s in held}
    assert split(samples, 0.1, seed=3) == (train, held)


def test_the_persona_digest_follows_the_prompt():
    sheet = load_sheet(ORLANDO_SHEET)
    assert persona_digest(sheet) == persona_digest(load_sheet(ORLANDO_SHEET))
    assert persona_digest(replace(sheet, summary="Someone else entirely.")) != persona_digest(sheet)


def test_persona_ids_match_the_bundle_persona(npc):
    assert persona_ids(npc.bundle.character, npc.chat) == npc.persona_tokens


def test_the_demo_dialogue_file_loads():
    sheet = load_sheet(ORLANDO_SHEET)
    path = dialogue_file_for(ORLANDO_SHEET)
    dialogues = writer_dialogues(sheet, path)
    assert len(dialogues) > len(sheet.examples) + 50
    assert any(len(d.turns) >= 3 for d in dialogues)


def test_a_bad_dialogue_file_lists_every_problem(tmp_path):
    path = tmp_path / "bad.dialogues.toml"
    path.write_text('format = 2\ncharacter = "Someone"\nextra = 1\n[[dialogues]]\ncontext = 3\n'
                    '[[dialogues.turns]]\nplayer = "Hi"\n[[dialogues]]\nturns = []\n')
    with pytest.raises(SheetError) as err:
        load_dialogues(path, load_sheet(ORLANDO_SHEET))
    problems = err.value.problems
    assert any(p.startswith("format") for p in problems) and any(p.startswith("character") for p in problems)
    assert "extra: unknown key" in problems
    assert any(p.startswith("dialogues[0].context") for p in problems)
    assert any(p.startswith("dialogues[0].turns[0]") for p in problems)
    assert any(p.startswith("dialogues[1].turns") for p in problems)
    with pytest.raises(SheetError, match="cannot read"):
        load_dialogues(Path(tmp_path / "missing.toml"), load_sheet(ORLANDO_SHEET))


def test_the_identity_prompt_is_two_sentences_with_the_year_and_no_shots():
    sheet = load_sheet(ORLANDO_SHEET)
    system, shots = persona_text(sheet, "identity")
    assert shots == () and system.startswith("You are Orlando Marlo, Knight of Luminara")
    assert "in the year 487 of the Dawning" in system and system.count(". ") == 1
    assert persona_digest(sheet, "identity") != persona_digest(sheet)
    with pytest.raises(ValueError, match="unknown prompt style"):
        persona_text(sheet, "long")


@pytest.mark.parametrize("share", [0.0, 0.7, 1.0])
def test_the_note_share_decides_how_many_drills_read_a_note(share):
    drills = [Dialogue(((f"Question {i}?", "Answer."),), "knowledge", covers=("fact:1",)) for i in range(400)]
    samples = make_samples(drills, lambda messages: Recalled(["A note."], []), knowledge_note_share=share)
    with_note = sum(bool(s.memories) for s in samples) / len(samples)
    assert len(samples) == 400 and with_note == pytest.approx(share, abs=0.06)
