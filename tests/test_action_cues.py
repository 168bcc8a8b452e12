"""The writer's cues of when the character acts: the vote, the k chosen left one out, the columns of a
bundle's memories file, the tail that writes the decided action, and an NPC acting on them."""

import msgpack
import numpy as np
import pytest

from lmpc_runtime import ACTION, EMOTION, InvalidArgumentError, Runtime, SamplingConfig, read_bundle
from lmpc_runtime.actions import TailWriter
from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest, sha256_file
from lmpc_runtime.errors import BundleFormatError
from lmpc_runtime.memory.action_cues import NO_ACTION, ActionCues, choose_vote, vote
from lmpc_runtime.memory.embedder import Embedder

from test_actions import END, chat, grammar, kinds, speak  # noqa: F401 (chat is a fixture)


def unit(*rows):
    vectors = np.array(rows, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_vote_sums_each_labels_cosines_and_a_tie_means_no_action():
    assert vote([("give_item", 0.9), (NO_ACTION, 0.5), (NO_ACTION, 0.5)]) == NO_ACTION
    assert vote([("give_item", 0.9), (NO_ACTION, 0.5), (NO_ACTION, 0.3)]) == "give_item"
    assert vote([("give_item", 0.5), (NO_ACTION, 0.5)]) == NO_ACTION
    assert vote([("wave", 0.5), ("bow", 0.5)]) == "bow"  # the same line always decides the same way
    assert vote([]) == NO_ACTION


def test_k_is_the_one_that_predicts_each_cue_best_from_the_others():
    # Two tight pairs of "give" among many "none" spread around them: the nearest neighbour is right for
    # every cue, a vote of 9 drowns the pairs.
    rng = np.random.default_rng(0)
    give = unit(*(np.r_[1.0, 0, 0, 0] + 0.01 * rng.standard_normal(4) for _ in range(2)),
                *(np.r_[0, 1.0, 0, 0] + 0.01 * rng.standard_normal(4) for _ in range(2)))
    none = unit(*(np.r_[0.6, 0.6, 1.0, 0] + 0.3 * rng.standard_normal(4) for _ in range(12)))
    labels = ["give_item"] * 4 + [NO_ACTION] * 12
    nothing = np.zeros((0, 4), np.float32)
    assert choose_vote(np.concatenate([give, none]), labels, nothing, ks=(1, 9)) == (1, 0.0, 1.0)
    # Noisy labels the majority corrects: a larger k wins.
    rng = np.random.default_rng(1)
    vectors = unit(*(np.r_[1.0, 0, 0] + 0.2 * rng.standard_normal(3) for _ in range(20)),
                   *(np.r_[0, 1.0, 0] + 0.2 * rng.standard_normal(3) for _ in range(20)))
    noisy = ["give_item"] * 20 + [NO_ACTION] * 20
    for i in (3, 8, 13):
        noisy[i], noisy[20 + i] = NO_ACTION, "give_item"
    assert choose_vote(vectors, noisy, np.zeros((0, 3), np.float32), ks=(1, 7)) == (7, 0.0, 34 / 40)


def test_drill_questions_keep_lines_like_them_from_acting_by_the_margin_that_decides_best():
    # Cues that act lie along x; drill questions (the character just answers) along y. A line between
    # acts only when it is at least as like the nearest acting cue as the nearest drill, plus the margin.
    cues = unit([1, 0.0, 0], [1, 0.1, 0], [1, 0.0, 0.1], [0, 0.3, 1])
    labels = ["give_item", "give_item", "give_item", NO_ACTION]
    drills = unit([0, 1, 0], [0.1, 1, 0], [0, 1, 0.1], [0.1, 1, 0.1])
    k, margin, share = choose_vote(cues, labels, drills, ks=(1,), margins=(-0.5, 0.0))
    assert (k, share) == (1, 1.0) and margin == 0.0  # -0.5 lets the drills act: they are like a cue that acts
    acting = ActionCues(3)
    acting.add(["a", "b", "c", "d"], labels, cues, k=1, margin=0.0)
    line = unit([1, 0.9, 0])[0]
    nearest_drill = float((drills @ line).max())
    assert acting.decide(line, {"give_item"}) == "give_item"  # no drills: the cues alone
    assert acting.decide(line, {"give_item"}, plain=nearest_drill) == "give_item"
    assert acting.decide(unit([0.5, 1, 0])[0], {"give_item"}, plain=float((drills @ unit([0.5, 1, 0])[0]).max())) == NO_ACTION


def test_cues_decide_an_open_action_or_none_and_survive_the_memories_file():
    cues = ActionCues(3)
    assert cues.decide(unit([1, 0, 0])[0], {"give_item"}) is None  # no cues: the model chooses
    cues.add(["Give me the letter.", "Hand it over, please.", "Nice weather.", "Get lost, knight."],
             ["give_item", "give_item", NO_ACTION, "end_conversation"],
             unit([1, 0.1, 0], [1, 0, 0.1], [0, 1, 0], [0, 0, 1]), k=1)
    asked = unit([1, 0.05, 0.05])[0]
    assert cues.decide(asked, {"give_item", "end_conversation"}) == "give_item"
    assert cues.decide(asked, {"end_conversation"}) == NO_ACTION  # closed: no action, not another one
    assert cues.decide(unit([0, 0.1, 1])[0], {"give_item", "end_conversation"}) == "end_conversation"
    again = ActionCues.from_state(msgpack.unpackb(msgpack.packb(cues.to_state())), 3)
    assert len(again) == 4 and again.k == 1 and again.decide(asked, {"give_item"}) == "give_item"
    assert again.margin == cues.margin == 0.0
    assert ActionCues(3).to_state() == {} and len(ActionCues.from_state({}, 3)) == 0


@pytest.mark.parametrize("damage, expected", [
    (lambda s: s.update(action_cue_k=0), "k must be a whole number"),
    (lambda s: s.update(action_cue_k=99), "k must be a whole number"),
    (lambda s: s.update(action_cue_labels=["give_item"]), "lists of one length"),
    (lambda s: s.update(action_cue_codes=b"\x00" * 5), "codes must be"),
    (lambda s: s.update(action_cue_lines=["", "b"]), "a line must be"),
    (lambda s: s.update(action_cue_labels=[3, NO_ACTION]), "each label"),
    (lambda s: s.update(action_cue_labels=[NO_ACTION, NO_ACTION]), "one at least"),
    (lambda s: s.update(action_cue_margin=2.0), "margin"),
])
def test_damaged_cue_columns_are_clear_errors(damage, expected):
    cues = ActionCues(3)
    cues.add(["a", "b"], ["give_item", NO_ACTION], unit([1, 0, 0], [0, 1, 0]), k=1)
    state = cues.to_state()
    damage(state)
    with pytest.raises(InvalidArgumentError, match=expected):
        ActionCues.from_state(state, 3)


# -- the tail writes what was decided -----------------------------------------------------------------

def test_a_decided_action_is_written_though_the_model_would_only_feel(chat):
    # The model's speech ends; it would pick "feel" at the tail, but the cues decided give_item: it picks
    # the argument among the valid ones, then its emotion.
    events, reply = speak(chat, TailWriter(grammar(chat), decided="give_item"),
                          chat.encode_text("Very well.") + [END] + chat.encode_text("feel:sad]"), prefer="coin")
    assert kinds(events, ACTION) == [("give_item", {"item": "coin"})]
    assert len(kinds(events, EMOTION)) == 1 and reply.final_text == "Very well."


def test_a_decided_action_is_written_for_a_character_without_emotions(chat):
    events, _ = speak(chat, TailWriter(grammar(chat, emotions=()), decided="end_conversation"),
                      chat.encode_text("Begone.") + [END])
    assert kinds(events, ACTION) == [("end_conversation", {})] and not kinds(events, EMOTION)


def test_no_action_decided_keeps_the_model_from_acting(chat):
    script = chat.encode_text("Take it.\n[act:give_item item=father_letter]")
    events, reply = speak(chat, TailWriter(grammar(chat), decided=NO_ACTION), script, prefer="calm")
    assert not kinds(events, ACTION) and len(kinds(events, EMOTION)) == 1  # the tag it opened is an emotion
    assert reply.final_text == "Take it."


# -- an NPC acting on its bundle's cues ----------------------------------------------------------------

@pytest.fixture
def cued_bundle(acting_bundle):
    """The acting tiny bundle with cues: asking for the letter gives it, an insult ends the talk."""
    bundle = read_bundle(acting_bundle)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder)
    lines = ["May I read your father's letter?", "Please hand me the letter.", "You are a coward and a liar.",
             "What is your name?", "Where do you live?"]
    labels = ["give_item", "give_item", "end_conversation", NO_ACTION, NO_ACTION]
    cues = ActionCues(bundle.embedder.dim)
    cues.add(lines, labels, embedder.embed(lines), k=1)
    memories = acting_bundle / bundle.memories.file
    state = msgpack.unpackb(memories.read_bytes())
    memories.write_bytes(msgpack.packb(state | cues.to_state(), use_bin_type=True))
    manifest = msgpack.unpackb((acting_bundle / MANIFEST_NAME).read_bytes())
    manifest["memories"]["sha256"] = sha256_file(memories)
    (acting_bundle / MANIFEST_NAME).write_bytes(pack_manifest(manifest))
    return acting_bundle


def test_an_npc_acts_as_its_cues_decide_and_its_gates_allow(cued_bundle):
    with Runtime(seed=3) as rt:
        npc = rt.load_npc(cued_bundle, sampling=SamplingConfig(max_tokens=12))
        acted = lambda line: [e.text for e in npc.ask(line) if e.kind == ACTION]  # noqa: E731
        assert acted("Please hand me the letter.") == ["give_item"]
        assert acted("What is your name?") == []
        assert acted("You are a coward and a liar.") == ["end_conversation"]
        npc.facts.set("letter.given", True)
        assert acted("Please hand me the letter.") == []  # the gate is closed: no action, not another


def test_cues_that_do_not_parse_refuse_the_bundle(cued_bundle):
    memories = next(cued_bundle.glob("memories.msgpack"))
    state = msgpack.unpackb(memories.read_bytes())
    state["action_cue_k"] = -1
    memories.write_bytes(msgpack.packb(state, use_bin_type=True))
    manifest = msgpack.unpackb((cued_bundle / MANIFEST_NAME).read_bytes())
    manifest["memories"]["sha256"] = sha256_file(memories)
    (cued_bundle / MANIFEST_NAME).write_bytes(pack_manifest(manifest))
    with Runtime() as rt, pytest.raises(BundleFormatError, match="action cues"):
        rt.load_npc(cued_bundle)


def test_a_build_keeps_the_writers_dialogues_as_cues_with_the_k_that_predicts_them_best(tiny_bundle):
    from collections import Counter

    from lmpc_export.dialogues import dialogue_file_for, load_dialogues
    from lmpc_export.memories import action_cues, memories_state
    from lmpc_runtime.memory.action_cues import CANDIDATE_KS, CANDIDATE_MARGINS
    from lmpc_runtime.sheet import load_sheet

    from conftest import ORLANDO_SHEET

    sheet = load_sheet(ORLANDO_SHEET)
    cues = action_cues(load_dialogues(dialogue_file_for(ORLANDO_SHEET), sheet))
    assert Counter(label for _, label in cues) == {NO_ACTION: 159, "give_item": 48, "end_conversation": 41}
    bundle = read_bundle(tiny_bundle)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder)
    said = []
    state = memories_state([], embedder, acting=cues, log=said.append)
    kept = ActionCues.from_state(state, bundle.embedder.dim)
    assert said == [f"actions: 248 cues from the writer's dialogues (89 act) decide when the character acts: k {kept.k}, "
                    f"margin +0.000 against 0 drill questions; each left out, {said[0].split(', ')[-1]}"]
    assert len(kept) == 248 and kept.k in CANDIDATE_KS and kept.margin == 0.0  # no drills: no margin
    drills = [("What is your name?", "Orlando Marlo."), ("Who is your sister?", "Celia.")] * 3
    with_drills = ActionCues.from_state(memories_state([], embedder, exchanges=drills, acting=cues), bundle.embedder.dim)
    assert with_drills.margin in CANDIDATE_MARGINS
    # No cue acts: nothing is kept, and the model chooses.
    assert "action_cue_lines" not in memories_state([], embedder, acting=[(line, NO_ACTION) for line, _ in cues[:5]])
