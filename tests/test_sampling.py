import numpy as np
import pytest

from lmpc_runtime import InvalidArgumentError, SamplingConfig
from lmpc_runtime.sampling import Sampler, rng_from_state, rng_state

VOCAB = 50


def logits_with(peaks: dict[int, float]) -> np.ndarray:
    logits = np.full(VOCAB, -5.0, dtype=np.float32)
    for token, value in peaks.items():
        logits[token] = value
    return logits


def draws(config: SamplingConfig, logits, n=4000, seed=0, recent=()) -> np.ndarray:
    sampler = Sampler(config, np.random.default_rng(seed))
    return np.array([sampler.pick(logits, recent) for _ in range(n)])


def plain(**kw) -> SamplingConfig:
    base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
    return SamplingConfig(**{**base, **kw})


def test_greedy_is_argmax():
    logits = np.random.default_rng(1).normal(size=VOCAB).astype(np.float32)
    assert Sampler(plain(temperature=0), np.random.default_rng()).pick(logits) == int(np.argmax(logits))


def test_frequencies_follow_the_softmax():
    logits = logits_with({3: 2.0, 7: 1.0, 9: 0.0})
    picked = draws(plain(), logits, n=20000)
    expected = np.exp(logits) / np.exp(logits).sum()
    for token in (3, 7, 9):
        assert abs((picked == token).mean() - expected[token]) < 0.015


def test_temperature_sharpens():
    logits = logits_with({3: 2.0, 7: 1.0})
    cold = (draws(plain(temperature=0.3), logits) == 3).mean()
    warm = (draws(plain(temperature=1.0), logits) == 3).mean()
    assert cold > 0.95 > warm


def test_top_k_top_p_min_p_cut_the_tail():
    logits = logits_with({1: 3.0, 2: 2.9, 3: 2.8, 4: 0.0})
    assert set(draws(plain(top_k=2), logits)) == {1, 2}
    # Mass of tokens 1..3 is about 0.97 of everything: top_p 0.5 keeps the first two only.
    assert set(draws(plain(top_p=0.5), logits)) == {1, 2}
    assert set(draws(plain(min_p=0.5), logits)) == {1, 2, 3}


def test_repetition_penalty_discourages_recent_tokens():
    logits = logits_with({3: 2.0, 7: 1.9})
    picked = draws(plain(temperature=0, repetition_penalty=1.5), logits, n=1, recent=[3, 3])
    assert picked[0] == 7
    # Outside the window the token is not penalised.
    picked = draws(plain(temperature=0, repetition_penalty=1.5, repetition_window=1), logits, n=1, recent=[3, 5])
    assert picked[0] == 3


def test_banned_tokens_are_never_picked():
    logits = logits_with({3: 9.0, 7: 1.0})
    sampler = Sampler(plain(), np.random.default_rng(0), banned=[3])
    assert 3 not in {sampler.pick(logits) for _ in range(500)}
    assert Sampler(plain(temperature=0), np.random.default_rng(0), banned=[3]).pick(logits) == 7


def test_same_seed_same_draws_and_state_resumes_exactly():
    logits = logits_with({i: float(i % 5) for i in range(VOCAB)})
    assert (draws(plain(), logits, 300, seed=5) == draws(plain(), logits, 300, seed=5)).all()
    rng = np.random.default_rng(9)
    sampler = Sampler(plain(), rng)
    [sampler.pick(logits) for _ in range(10)]
    resumed = Sampler(plain(), rng_from_state(rng_state(rng)))
    assert [sampler.pick(logits) for _ in range(50)] == [resumed.pick(logits) for _ in range(50)]


@pytest.mark.parametrize("bad", [
    dict(temperature=-0.1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=1.0),
    dict(repetition_penalty=0.9), dict(max_tokens=0),
])
def test_invalid_settings(bad):
    with pytest.raises(InvalidArgumentError):
        SamplingConfig(**bad)


def test_config_round_trip_and_unknown_keys():
    config = SamplingConfig(stop=("\nPlayer:",))
    assert SamplingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidArgumentError, match="unknown"):
        SamplingConfig.from_dict({"temprature": 1})
