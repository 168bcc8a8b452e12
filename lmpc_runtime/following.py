"""Following the writer's answer: a bonus for the tokens that go on with the recalled exchange's answer.

The runtime shows the model the writer's exchange most like the player's line as an earlier turn
(`memory/exchanges.py`). A 135M model reads it, but often drifts off into facts of its own: on the demo's
persona test, greedy replies held the key facts of 87 % of the questions whose shown answer held them,
and invented the rest ("Who were you fighting at Kestrel Ford?" shown "against Kharran raiders" got
"Jory Tallow pulled me out of the river"). The follower gives the token that continues the answer, where
the reply's last tokens match a run of it, the sampler's `follow_bonus`: the reply stays close to the
writer's words without being forced to them, and may leave them when the player asked something else.

It only moves forward: once the reply has taken the answer's token at some position, only later positions
earn the bonus, so a reply that has said the whole answer is free to end, never led round it again.
"""

from __future__ import annotations

import numpy as np

# The longest run of the reply's last tokens matched against the answer; a longer match decides between
# the places a shorter one would continue from.
LONGEST_MATCH = 4


class AnswerFollower:
    """Which tokens continue `answer` (token ids) after what a reply has said so far."""

    def __init__(self, answer: list[int]):
        self.answer = list(answer)
        self._next = 0  # the first position of the answer the reply may still be led to
        self._offered: list[int] = []  # positions whose tokens the last `favoured` offered

    def favoured(self, said: list[int]) -> np.ndarray:
        """Ids [n] that go on with the answer after the reply's tokens `said`: its first token before the
        reply has begun, else the token after each place, from the first still open, where the longest
        possible run of `said`'s last tokens (up to LONGEST_MATCH) ends."""
        answer, offered = self.answer, []
        if not said:
            offered = [0] if self._next == 0 and answer else []
        else:
            for length in range(min(LONGEST_MATCH, len(said)), 0, -1):
                tail = said[-length:]
                offered = [j for j in range(max(length, self._next), len(answer)) if answer[j - length:j] == tail]
                if offered:
                    break
        self._offered = offered
        return np.asarray(sorted({answer[j] for j in offered}), dtype=np.int64)

    def took(self, token: int) -> None:
        """The reply's next token was `token`: if it went on with the answer, the answer is followed from
        there."""
        for j in self._offered:
            if self.answer[j] == token:
                self._next = j + 1
                return
