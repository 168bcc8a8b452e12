"""The memory store and its two indexes: numpy exact search is the oracle for hnswlib."""

import numpy as np
import pytest

from lmpc_runtime import InvalidArgumentError
from lmpc_runtime.memory.exchanges import ExchangeBank
from lmpc_runtime.memory.gating import GameState
from lmpc_runtime.memory.store import CUE_DISCOUNT, ExactIndex, HnswIndex, MemoryStore, dequantize, quantize


def clustered(n, dim, seed, clusters=50):
    """Unit vectors around random centres: the shape real sentence embeddings have, unlike pure noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_is_exact():
    vectors = clustered(500, 32, seed=1)
    index = ExactIndex(32)
    index.add(np.arange(500, dtype=np.int64) * 3, vectors)
    for q in clustered(20, 32, seed=2):
        scores = vectors @ q
        expected = [int(i) * 3 for i in np.argsort(-scores, kind="stable")[:10]]
        hits = index.search(q, 10)
        assert [i for i, _ in hits] == expected
        assert np.allclose([s for _, s in hits], np.sort(scores)[::-1][:10], atol=1e-6)


def test_hnswlib_recall_against_the_exact_index():
    dim, n = 64, 4000
    vectors = clustered(n, dim, seed=3)
    ids = np.arange(n, dtype=np.int64)
    exact, hnsw = ExactIndex(dim), HnswIndex(dim, capacity=100)  # grows by resizing
    for chunk in np.array_split(ids, 7):
        exact.add(chunk, vectors[chunk])
        hnsw.add(chunk, vectors[chunk])
    for i in range(0, n, 9):  # forgotten items must never come back
        exact.remove(i)
        hnsw.remove(i)
    assert len(exact) == len(hnsw)
    recalls = []
    for q in clustered(100, dim, seed=4):
        truth = {i for i, _ in exact.search(q, 10)}
        found = [i for i, _ in hnsw.search(q, 10)]
        assert not any(i % 9 == 0 for i in found)
        recalls.append(len(truth & set(found)) / 10)
    assert np.mean(recalls) >= 0.95


def test_the_same_adds_build_the_same_hnsw_graph():
    vectors = clustered(800, 32, seed=5)
    results = []
    for _ in range(2):
        index = HnswIndex(32)
        index.add(np.arange(800, dtype=np.int64), vectors)
        results.append([index.search(q, 5) for q in clustered(30, 32, seed=6)])
    assert results[0] == results[1]


def test_int8_codes_keep_the_direction():
    vectors = clustered(100, 384, seed=7)
    codes, scales = quantize(vectors)
    assert codes.dtype == np.int8 and codes.nbytes == 100 * 384
    assert np.min(np.sum(dequantize(codes, scales) * vectors, axis=1)) > 0.9999


def test_store_moves_to_hnswlib_past_its_limit_and_still_finds_each_memory():
    vectors = clustered(300, 48, seed=8)
    store = MemoryStore(48, exact_limit=100)
    ids = [store.add(f"memory {i}", v, "event") for i, v in enumerate(vectors)]
    assert store.backend == "hnswlib" and ids == list(range(300))
    for i in range(0, 300, 17):
        (best, score), *_ = store.search(vectors[i], 3)
        assert best.id == i and best.text == f"memory {i}" and score > 0.999


def test_forget_and_gated_memories():
    vectors = clustered(20, 16, seed=9)
    store = MemoryStore(16)
    for i, v in enumerate(vectors):
        store.add(f"m{i}", v, "world", requires="quest.stage >= 2" if i == 3 else "")
    facts = GameState()
    assert 3 not in [m.id for m, _ in store.search(vectors[3], 5, facts)]
    facts.set("quest.stage", 2)
    assert store.search(vectors[3], 1, facts)[0][0].id == 3
    assert store.forget(3).text == "m3"
    assert 3 not in [m.id for m, _ in store.search(vectors[3], 20, facts)] and len(store) == 19
    with pytest.raises(InvalidArgumentError, match="no memory"):
        store.forget(3)


def test_importance_breaks_near_ties_only():
    store = MemoryStore(2)
    store.add("plain", [1.0, 0.0], "event", importance=0.0)
    store.add("important", [0.999, 0.045], "event", importance=1.0)
    store.add("unrelated but important", [0.0, 1.0], "event", importance=1.0)
    assert [m.text for m, _ in store.search(np.array([1.0, 0.0], np.float32), 3)] == [
        "important", "plain", "unrelated but important"]


@pytest.mark.parametrize("change, message", [
    (dict(text=""), "non-empty"),
    (dict(text="x" * 2001), "at most"),
    (dict(kind="gossip"), "kind"),
    (dict(importance=1.5), "importance"),
    (dict(game_time=float("inf")), "game_time"),
    (dict(requires="quest.stage >="), "condition"),
    (dict(vector=[1.0, 2.0]), "embedding"),
    (dict(vector=[0.0] * 8), "embedding"),
])
def test_bad_memories_are_refused(change, message):
    store = MemoryStore(8)
    args = dict(text="A fact.", vector=np.ones(8, np.float32), kind="world") | change
    with pytest.raises(InvalidArgumentError, match=message):
        store.add(**args)
    assert len(store) == 0


def test_state_round_trip_is_exact():
    vectors = clustered(50, 24, seed=10)
    store = MemoryStore(24)
    for i, v in enumerate(vectors):
        store.add(f"m{i}", v, "summary" if i % 2 else "event", source="test", game_time=i * 1.5,
                  importance=i / 50, requires="x > 1" if i == 7 else "")
    store.forget(10)
    copy = MemoryStore(24)
    copy.add_state(store.to_state())
    assert list(copy) == list(store) and copy.next_id == store.next_id
    for q in clustered(10, 24, seed=11):
        ours, theirs = copy.search(q, 5, GameState()), store.search(q, 5, GameState())
        # Same memories in the same order; scores agree to float32 rounding (the matrices differ in shape).
        assert [m for m, _ in ours] == [m for m, _ in theirs]
        assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-6)


def test_a_cue_recalls_its_memory_and_leaves_with_it():
    axis = np.eye(4, dtype=np.float32)
    asked = axis[2] + 0.1 * axis[1]  # the player's words: closer to the capital's text than the mother's
    asked /= np.linalg.norm(asked)
    uncued = MemoryStore(4)
    uncued.add("Lady Beatrix is his mother.", axis[0], "persona")
    uncued.add("The capital is Aurelis.", axis[1], "world")
    assert uncued.search(asked, 1)[0][0].text == "The capital is Aurelis."
    store = MemoryStore(4)
    mother = store.add("Lady Beatrix is his mother.", axis[0], "persona", cues=[("Who is your mother?", axis[2])])
    store.add("The capital is Aurelis.", axis[1], "world")
    (best, score), _ = store.search(asked, 2)
    assert best.id == mother and store.cues(mother) == ["Who is your mother?"]
    assert score == pytest.approx(asked[2] - CUE_DISCOUNT, abs=0.01)  # a cue counts less than the text
    with store.cues_left_out("Who is your mother?"):
        assert store.search(asked, 1)[0][0].text == "The capital is Aurelis."
    assert store.search(asked, 1)[0][0].id == mother  # the cue is back
    store.forget(mother)
    assert [m.text for m, _ in store.search(asked, 2)] == ["The capital is Aurelis."]


def test_cues_survive_a_state_round_trip_and_bad_ones_are_refused():
    vectors = clustered(6, 24, seed=13)
    store = MemoryStore(24)
    ids = [store.add(f"m{i}", v, "world", cues=[(f"question about m{i}?", cue)])
           for i, (v, cue) in enumerate(zip(vectors[:3], vectors[3:]))]
    copy = MemoryStore(24)
    copy.add_state(store.to_state())
    assert [copy.cues(i) for i in ids] == [store.cues(i) for i in ids]
    assert [m.id for m, _ in copy.search(vectors[4], 1)] == [ids[1]]
    assert "cue_texts" in store.to_state(ids[:1]) and store.to_state(ids[:1])["cue_memories"] == [ids[0]]
    with pytest.raises(InvalidArgumentError, match="cue"):
        store.add("m3", vectors[0], "world", cues=[(" ", vectors[1])])
    with pytest.raises(InvalidArgumentError, match="embedding"):
        store.add("m3", vectors[0], "world", cues=[("Who?", np.zeros(24, np.float32))])
    assert len(store) == 3  # a bad cue leaves the store as it was
    state = store.to_state(ids[:2])  # a cue naming a memory outside the file
    state["cue_memories"][0] = ids[2]
    with pytest.raises(InvalidArgumentError, match="names a memory"):
        MemoryStore(24).add_state(state)


@pytest.mark.parametrize("damage", [
    lambda s: s.update(dim=16),
    lambda s: s["texts"].pop(),
    lambda s: s.update(codes=s["codes"][:-1]),
    lambda s: s.update(scales=b"\x00" * len(s["scales"])),
    lambda s: s.update(ids=[0] * len(s["ids"])),
    lambda s: s["kinds"].__setitem__(0, "rumour"),
    lambda s: s["requires"].__setitem__(0, "("),
    lambda s: s.update(texts=None),
    lambda s: s.update(cue_codes=s["cue_codes"][:-1]),
    lambda s: s["cue_texts"].pop(),
    lambda s: s.update(cue_scales=b"\xff" * len(s["cue_scales"])),
])
def test_damaged_state_changes_nothing(damage):
    store = MemoryStore(24)
    for i, v in enumerate(clustered(5, 24, seed=12)):
        store.add(f"m{i}", v, "event", cues=[("What is m0?", np.ones(24, np.float32))] if i == 0 else [])
    state = store.to_state()
    damage(state)
    target = MemoryStore(24)
    target.add("kept", np.ones(24, np.float32), "world")
    with pytest.raises(InvalidArgumentError):
        target.add_state(state)
    assert [m.text for m in target] == ["kept"]


# --- The writer's exchanges ------------------------------------------------------------------------

def test_exchanges_are_found_by_their_question_above_the_floor_each_question_once():
    vectors = clustered(4, 24, seed=21)
    bank = ExchangeBank(24)
    bank.add([("What's your name?", "Orlando."), ("Where is home?", "Brightwater Hall."),
              ("What's your name?", "Orlando Marlo."), ("Who is the king?", "Theodoric II.")],
             np.stack([vectors[0], vectors[1], vectors[0], vectors[3]]))
    assert len(bank) == 4
    (question, answer, score), = bank.nearest(vectors[0], 1, 0.5)
    assert (question, answer) == ("What's your name?", "Orlando.") and score == pytest.approx(1.0, abs=0.01)
    near = bank.nearest(vectors[0], 3, -1.0)
    assert [q for q, _, _ in near].count("What's your name?") == 1 and len(near) == 3
    assert [s for _, _, s in near] == sorted((s for _, _, s in near), reverse=True)
    assert all(s >= 0.99 for _, _, s in bank.nearest(vectors[0], 3, 0.99))  # the floor holds
    assert bank.nearest(vectors[0], 0, -1.0) == [] and ExchangeBank(24).nearest(vectors[0], 2, -1.0) == []


def test_exchanges_round_trip_through_state_and_bad_ones_are_refused():
    vectors = clustered(3, 24, seed=22)
    bank = ExchangeBank(24)
    assert bank.to_state() == {}  # a bank holding nothing adds no columns
    bank.add([("Q1?", "A1."), ("Q2?", "A2."), ("Q3?", "A3.")], vectors)
    copy = ExchangeBank.from_state(bank.to_state(), 24)
    assert [copy.nearest(v, 1, 0.9)[0][:2] for v in vectors] == [("Q1?", "A1."), ("Q2?", "A2."), ("Q3?", "A3.")]
    assert len(ExchangeBank.from_state({}, 24)) == 0  # a memories file made before exchanges
    with pytest.raises(InvalidArgumentError, match="answer"):
        bank.add([("Q4?", " ")], vectors[:1])
    with pytest.raises(InvalidArgumentError, match="embedding"):
        bank.add([("Q4?", "A4.")], np.zeros((1, 24), np.float32))
    assert len(bank) == 3


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["exchange_answers"].pop(), "one length"),
    (lambda s: s.update(exchange_codes=s["exchange_codes"][:-1]), "codes"),
    (lambda s: s.update(exchange_scales=b"\x00" * len(s["exchange_scales"])), "scales"),
    (lambda s: s["exchange_questions"].__setitem__(0, 7), "question"),
    (lambda s: s.update(exchange_questions="Q1?"), "lists"),
])
def test_damaged_exchange_columns_are_refused(damage, message):
    bank = ExchangeBank(24)
    bank.add([("Q1?", "A1."), ("Q2?", "A2.")], clustered(2, 24, seed=23))
    state = bank.to_state()
    damage(state)
    with pytest.raises(InvalidArgumentError, match=message):
        ExchangeBank.from_state(state, 24)
