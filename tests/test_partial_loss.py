"""`objective.partial_segments` (rl/mirror_descent/segments.py): which response tokens of a
multi-segment trajectory enter the k1.5 loss, checked through the learner's own packing
(`rl.learner.pack_groups`), per-sequence sums and the §2.3.2 loss on a hand-worked example."""

from __future__ import annotations

import math

import pytest
import torch

from rl.learner import Episode, pack_groups
from rl.mirror_descent import (
    MirrorDescentLossInputs,
    first_trained_token,
    mirror_descent_loss,
    segment_loss_mask,
    sequence_logprob_sums,
    trained_token_share,
)
from rl.packing import IGNORE


def test_first_trained_token_and_mask():
    # Two segments: response tokens 0-2 from an earlier iteration, 3-4 from this one.
    assert first_trained_token([3, 5], "exclude") == 3
    assert first_trained_token([3, 5], "include") == 0
    assert segment_loss_mask([3, 5], "exclude") == [False, False, False, True, True]
    assert segment_loss_mask([3, 5], "include") == [True] * 5
    # One segment: both options train the whole response, as without partial rollouts.
    assert segment_loss_mask([4], "exclude") == segment_loss_mask([4], "include") == [True] * 4
    # An empty middle segment (the engine returned no token): the last segment is tokens 2-4.
    assert segment_loss_mask([2, 2, 5], "exclude") == [False, False, True, True, True]
    assert segment_loss_mask([], "exclude") == [] and first_trained_token([], "exclude") == 0


def test_bad_masks_are_errors():
    with pytest.raises(ValueError, match="one of"):
        first_trained_token([3, 5], "last")
    with pytest.raises(ValueError, match="non-decreasing"):
        segment_loss_mask([5, 3], "exclude")


def test_trained_token_share():
    # Responses of 5 tokens (segments 3 + 2) and 2 tokens (one segment): exclude trains 2 + 2 of 7.
    assert trained_token_share([[3, 5], [2]], "exclude") == 4 / 7
    assert trained_token_share([[3, 5], [2]], "include") == 1.0
    assert trained_token_share([], "exclude") == 1.0


# The worked example: one prompt (tokens 1, 2), k = 2 responses, tau = 0.5, rewards A = 1, B = 0.
#   A: 2 segments, response tokens 10 11 12 | 13 14 (segment_ends [3, 5])
#      log pi_theta   = -0.5  -1.0  -0.25 | -2.0  -0.125
#      log pi_theta_i = -1.5  -1.0  -0.5  | -1.5  -0.125
#   B: 1 segment, response tokens 20 21 (segment_ends [2])
#      log pi_theta   = -1.0  -0.5
#      log pi_theta_i = -1.0  -0.25
# Token ids are unique, so a packed target's log-prob can be looked up by its id.
PROMPT = [1, 2]
RESPONSES = {"A": ([10, 11, 12, 13, 14], [3, 5], 1.0), "B": ([20, 21], [2], 0.0)}
LOGP = {10: -0.5, 11: -1.0, 12: -0.25, 13: -2.0, 14: -0.125, 20: -1.0, 21: -0.5}
REF = {10: -1.5, 11: -1.0, 12: -0.5, 13: -1.5, 14: -0.125, 20: -1.0, 21: -0.25}


def packed_sums(mode: str) -> tuple[list[float], list[float], list[int]]:
    """log pi_theta and log pi_theta_i sums of A and B, and their trained-token counts, computed as
    the learner does: Episode.trained_from -> pack_groups -> per-position log-probs ->
    sequence_logprob_sums over the targets."""
    episodes = [Episode(0, PROMPT, ids, reward, 0.0, trained_from=first_trained_token(ends, mode))
                for ids, ends, reward in RESPONSES.values()]
    (mb,) = pack_groups(episodes, max_tokens=64, row_tokens=16)

    def sums(table: dict[int, float]) -> list[float]:
        # NaN wherever nothing is trained (prompt, earlier segments, padding): it must not leak in.
        logp_T = torch.tensor([table[x] if x != IGNORE else math.nan for x in mb.targets.tolist()], dtype=torch.float64)
        per_slot = sequence_logprob_sums(logp_T, mb.seq, len(mb.indices), response_mask_T=mb.seq >= 0)
        out = [0.0] * len(episodes)
        for slot, idx in enumerate(mb.indices):
            out[idx] = float(per_slot[slot])
        return out

    counts = [int((mb.seq == mb.indices.index(i)).sum()) for i in range(len(episodes))]
    return sums(LOGP), sums(REF), counts


def test_exclude_sums_only_the_last_segment():
    logp, ref, counts = packed_sums("exclude")
    # A: tokens 13, 14 only: -2.0 - 0.125 = -2.125 (theta), -1.5 - 0.125 = -1.625 (ref)
    # B: one segment, whole: -1.0 - 0.5 = -1.5 (theta), -1.0 - 0.25 = -1.25 (ref)
    assert logp == [-2.125, -1.5] and ref == [-1.625, -1.25] and counts == [2, 2]


def test_include_sums_the_whole_response():
    logp, ref, counts = packed_sums("include")
    # A: -0.5 - 1.0 - 0.25 - 2.0 - 0.125 = -3.875 (theta); -1.5 - 1.0 - 0.5 - 1.5 - 0.125 = -4.625 (ref)
    assert logp == [-3.875, -1.5] and ref == [-4.625, -1.25] and counts == [5, 2]


@pytest.mark.parametrize("mode, expected", [
    # b = mean(1, 0) = 0.5, advantages A = +0.5, B = -0.5; tau = 0.5.
    # exclude: delta A = -2.125 + 1.625 = -0.5, delta B = -1.5 + 1.25 = -0.25
    #          residuals A = 0.5 - 0.5 * (-0.5) = 0.75, B = -0.5 - 0.5 * (-0.25) = -0.375
    #          L = (0.5625 + 0.140625) / 2 = 0.3515625
    ("exclude", 0.3515625),
    # include: delta A = -3.875 + 4.625 = 0.75 (the earlier segment's ratio counts), delta B = -0.25
    #          residuals A = 0.5 - 0.5 * 0.75 = 0.125, B = -0.375
    #          L = (0.015625 + 0.140625) / 2 = 0.078125
    ("include", 0.078125),
])
def test_loss_on_a_two_segment_trajectory(mode, expected):
    logp, ref, _ = packed_sums(mode)
    out = mirror_descent_loss(
        MirrorDescentLossInputs(torch.tensor(logp, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                                torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0, 0])),
        tau=0.5, num_groups_total=1)
    assert out.loss.item() == expected


def test_whole_response_is_trained_by_default():
    # Episodes without partial rollouts (trained_from 0) keep every response token as a target.
    (mb,) = pack_groups([Episode(0, PROMPT, [10, 11, 12], 1.0, 0.0)], max_tokens=64, row_tokens=16)
    assert sorted(x for x in mb.targets.tolist() if x != IGNORE) == [10, 11, 12]
