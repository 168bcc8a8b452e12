"""The cost model alone: a segment's prediction is its share of the pass's, and passes can grow."""

import pytest

from lmpc_runtime.costmodel import DECODE, PREFILL, WARMUP_STEPS, CostModel


def test_a_segment_is_predicted_as_its_median_share_of_the_pass():
    cost = CostModel()
    for i, size in enumerate((1, 2, 3, 1, 2, 3)):
        seconds = 0.010 + 0.002 * size
        # The last of four segments takes half the pass; once, the OS stretched the first one.
        first = 0.6 * seconds if i == 3 else seconds / 6
        cost.observe(DECODE, size, 500, [first, seconds / 6, seconds / 6, seconds / 2])
    whole = cost.predict(DECODE, 2, 500)
    last = cost.predict(DECODE, 2, 500, segment=3, segments=4)
    assert last.seconds == pytest.approx(whole.seconds / 2, rel=0.05)
    assert cost.predict(DECODE, 2, 500, segment=0, segments=4).seconds == pytest.approx(whole.seconds / 6, rel=0.1)
    assert cost.largest_segment(DECODE, 2, 500, 4) == pytest.approx(whole.upper / 2, rel=0.05)


def test_prefill_chunks_can_grow_past_the_first_size_timed():
    """All passes timed at 4 tokens: a pass of 5 is still predicted below 5/4 of one of 4, since half of
    the first timing is read as fixed cost (reading it all per token would never let chunks grow)."""
    cost = CostModel()
    for _ in range(WARMUP_STEPS + 2):
        cost.observe(PREFILL, 4, 600, [0.040])
    four, five = cost.predict(PREFILL, 4, 600).seconds, cost.predict(PREFILL, 5, 600).seconds
    assert four == pytest.approx(0.040, rel=0.05)
    assert four < five < 1.2 * four
    assert cost.trusted_size(PREFILL) == 8
