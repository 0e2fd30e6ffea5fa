"""Tests of the k1.5 §2.3.3 length penalty (rl/mirror_descent/length_penalty.py)."""

from __future__ import annotations

import pytest
import torch

from rl.mirror_descent import is_correct, length_penalty, length_penalty_weight


def test_worked_example_with_variable_group_sizes():
    # Three groups, interleaved, of sizes 4, 2 and 1.
    #   group 7: lengths [100, 200, 300, 500], correct [T, T, F, F]; min 100, max 500, span 400
    #            lambda = 0.5 - [0, 100, 200, 400]/400 = [0.5, 0.25, 0.0, -0.5]
    #            correct -> lambda: 0.5, 0.25;  wrong -> min(0, lambda): 0.0, -0.5
    #   group 3: lengths [10, 30], correct [F, T]; lambda = [0.5, -0.5]
    #            wrong short answer -> min(0, 0.5) = 0 (never rewarded); correct long one -> -0.5
    #   group 9: one response of 1000 tokens: max == min -> 0
    # Note the global min/max (10, 1000) must not be used: group 7 alone gives 0.25 for 200 tokens.
    lengths = torch.tensor([100, 10, 200, 1000, 300, 30, 500])
    correct = torch.tensor([True, False, True, True, False, True, False])
    groups = torch.tensor([7, 3, 7, 9, 7, 3, 7])
    out = length_penalty(lengths, correct, groups)
    expected = torch.tensor([0.5, 0.0, 0.25, 0.0, 0.0, -0.5, -0.5])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.dtype == torch.float32


def test_equal_lengths_give_zero():
    out = length_penalty(torch.tensor([42, 42, 42]), torch.tensor([True, False, True]), torch.tensor([0, 0, 0]))
    assert torch.equal(out, torch.zeros(3))


def test_wrong_answers_are_never_positive_and_range():
    g = torch.Generator().manual_seed(0)
    n = 200
    lengths = torch.randint(1, 4000, (n,), generator=g)
    correct = torch.rand(n, generator=g) < 0.5
    groups = torch.randint(0, 20, (n,), generator=g)
    out = length_penalty(lengths, correct, groups, dtype=torch.float64)
    assert (out[~correct] <= 0).all()
    assert (out >= -0.5).all() and (out <= 0.5).all()
    # against a per-group loop of the formula
    for gid in groups.unique():
        sel = groups == gid
        lo, hi = lengths[sel].min().item(), lengths[sel].max().item()
        for j in sel.nonzero().flatten().tolist():
            lam = 0.0 if hi == lo else 0.5 - (lengths[j].item() - lo) / (hi - lo)
            want = lam if correct[j] else min(0.0, lam)
            assert out[j].item() == pytest.approx(want, abs=1e-12)


def test_float_scores_use_the_correctness_threshold():
    # 1.0 and 0.9999995 (>= 1 - 1e-6) are correct; 0.999 (partial credit) and 0.5 are not.
    scores = torch.tensor([1.0, 0.9999995, 0.999, 0.5], dtype=torch.float64)
    assert is_correct(scores).tolist() == [True, True, False, False]
    # lengths 10, 20, 30, 40 in one group: lambda = 0.5 - [0, 1/3, 2/3, 1] = [0.5, 1/6, -1/6, -0.5]
    out = length_penalty(torch.tensor([10, 20, 30, 40]), scores, torch.tensor([0, 0, 0, 0]), dtype=torch.float64)
    torch.testing.assert_close(out, torch.tensor([0.5, 1 / 6, -1 / 6, -0.5], dtype=torch.float64))
    # the wrong short answer is capped at 0 if it is shortest
    out = length_penalty(torch.tensor([10, 40]), torch.tensor([0.999, 1.0]), torch.tensor([0, 0]))
    assert out.tolist() == [0.0, -0.5]


def test_warmup_schedule():
    # off for the first 3 iterations (0, 1, 2), then the constant weight
    assert [length_penalty_weight(i, 0.1, 3) for i in range(6)] == [0.0, 0.0, 0.0, 0.1, 0.1, 0.1]
    assert length_penalty_weight(0, 0.1, 0) == 0.1  # no warm-up: on from the start
    assert length_penalty_weight(10_000, 0.25, 3) == 0.25
    for bad in [(-1, 0.1, 3), (0, 0.1, -1), (0, -0.1, 3), (0, float("nan"), 3)]:
        with pytest.raises(ValueError):
            length_penalty_weight(*bad)


def test_invalid_inputs():
    ok = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="empty"):
        length_penalty(torch.tensor([]), torch.tensor([], dtype=torch.bool), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="mismatch"):
        length_penalty(ok, torch.tensor([True]), ok)
    with pytest.raises(ValueError, match="finite"):
        length_penalty(torch.tensor([1.0, float("nan")]), torch.tensor([True, True]), ok)
    with pytest.raises(ValueError, match="integer"):
        length_penalty(ok, torch.tensor([True, True]), torch.tensor([0.0, 0.0]))
