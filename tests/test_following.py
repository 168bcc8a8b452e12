"""The follower of the writer's answer (`lmpc_runtime/following.py`): which tokens it favours, and the
sampler's bonus for them."""

import numpy as np
import pytest

from lmpc_runtime.errors import InvalidArgumentError
from lmpc_runtime.following import AnswerFollower
from lmpc_runtime.sampling import Sampler, SamplingConfig

# An answer as token ids; 7 comes twice, so what follows it depends on what came before.
ANSWER = [5, 7, 9, 3, 7, 4]


def _ids(follower: AnswerFollower, said: list[int]) -> list[int]:
    return follower.favoured(said).tolist()


def test_the_answer_is_offered_from_its_first_token_and_then_token_by_token_as_it_is_taken():
    follower, said = AnswerFollower(ANSWER), []
    for token in ANSWER:
        assert _ids(follower, said) == [token]
        follower.took(token)
        said.append(token)
    assert _ids(follower, said) == []  # all said: the reply is free to end, never led round again


def test_a_longer_match_decides_where_the_answer_goes_on():
    follower = AnswerFollower(ANSWER)
    assert _ids(follower, [1, 7]) == [4, 9]  # after 7 alone: either place
    assert _ids(follower, [5, 7]) == [9]
    assert _ids(follower, [9, 3, 7]) == [4]


def test_a_reply_that_leaves_the_answer_is_offered_it_again_only_where_it_picks_it_up_forward():
    follower, said = AnswerFollower(ANSWER), []
    for token in (5, 7, 9):
        follower.favoured(said)
        follower.took(token)
        said.append(token)
    assert _ids(follower, [5, 7, 9, 8]) == []  # 8 is in no place of the answer
    assert _ids(follower, [5, 7, 9, 8, 7]) == [4]  # 7 again: only the later place is still open
    assert _ids(follower, [5, 7, 9, 8, 5]) == []  # the answer's start lies behind


def test_a_token_not_offered_moves_nothing():
    follower = AnswerFollower(ANSWER)
    follower.favoured([])
    follower.took(2)
    assert _ids(follower, []) == [5]
    assert AnswerFollower([]).favoured([]).size == 0


def test_the_sampler_adds_the_bonus_to_favoured_tokens_only():
    logits = np.array([0.0, 3.0, 2.0, 1.0], dtype=np.float32)
    greedy = SamplingConfig(temperature=0, repetition_penalty=1.0, follow_bonus=1.5)
    rng = np.random.default_rng(0)
    assert Sampler(greedy, rng).pick(logits, favoured=np.array([2])) == 2
    assert Sampler(greedy, rng).pick(logits, favoured=np.array([3])) == 1
    assert Sampler(greedy.with_(follow_bonus=0.0), rng).pick(logits, favoured=np.array([2])) == 1
    with pytest.raises(InvalidArgumentError, match="follow_bonus"):
        SamplingConfig(follow_bonus=-1)
    with pytest.raises(InvalidArgumentError, match="follow_bonus"):
        SamplingConfig(follow_bonus=float("inf"))
