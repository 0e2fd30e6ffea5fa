"""Length penalty of Kimi k1.5 (arXiv 2501.12599, §2.3.3), per prompt group.

For the k responses of one prompt, with len_j their lengths in tokens and
min_len / max_len the shortest / longest of the group:

    lambda_j = 0.5 - (len_j - min_len) / (max_len - min_len)       (0 for all j if max_len == min_len)
    len_reward_j = lambda_j             if response j is correct
                 = min(0, lambda_j)     otherwise

so among correct answers the shortest earns +0.5 and the longest -0.5, while a wrong answer
is never rewarded for being short, only penalised for being long. The caller adds
`weight * len_reward_j` to r_j, with `weight = length_penalty_weight(iteration, ...)`: the paper
turns the penalty on only after a warm-up, because from the start it slows training down.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rl.mirror_descent.groups import GroupIndex, group_index, has_values, segment_amax, segment_amin
from rl.rewards.scores import CORRECT_ATOL, is_correct_tensor  # noqa: F401  (CORRECT_ATOL re-exported)

# "r_j = 1" in the paper: one definition of correct for every module, in rl.rewards.scores
# (score >= 1 - CORRECT_ATOL, so float32 rounding of 1 is correct and partial credit is not).
# NaN scores compare False, i.e. count as wrong (the reward itself stays NaN and is the
# learner's to catch).
is_correct = is_correct_tensor


def length_penalty(
    lengths_N: Tensor,
    correct_N: Tensor,
    group_ids_N: Tensor | GroupIndex,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(N,) len_reward_j of §2.3.3 (unweighted), in [-0.5, 0.5].

    lengths_N    (N,) response lengths in tokens (int or float, finite, >= 0)
    correct_N    (N,) bool, or float scores (correct per `rl.rewards.scores.is_correct`)
    group_ids_N  (N,) int prompt-group labels, or their `GroupIndex`; groups may have different
                 sizes, and the min/max lengths are taken over each group's own responses only.

    All three on one device (any); computed in float64 there and returned as `dtype`. A group of
    size 1, or whose responses all have the same length, gets 0. Raises ValueError for empty input, shape mismatches, or
    non-finite/negative lengths (a length is a token count: a NaN here is a pipeline bug, and it
    would otherwise spread to every response of its group through min/max).
    """
    ids_N = group_ids_N.index_N if isinstance(group_ids_N, GroupIndex) else group_ids_N
    for name, t in (("lengths_N", lengths_N), ("correct_N", correct_N), ("group_ids_N", ids_N)):
        if not isinstance(t, Tensor) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor, got {getattr(t, 'shape', type(t))}")
        if t.device != lengths_N.device:
            raise ValueError(f"{name} is on {t.device} but lengths_N on {lengths_N.device}")
    n = lengths_N.numel()
    if n == 0:
        raise ValueError("empty batch: length_penalty needs at least one response")
    if correct_N.numel() != n or ids_N.numel() != n:
        raise ValueError(
            f"shape mismatch: lengths_N {n}, correct_N {correct_N.numel()}, group_ids_N {ids_N.numel()}"
        )
    lengths = lengths_N.to(torch.float64)
    if has_values(lengths) and (not bool(torch.isfinite(lengths).all()) or bool((lengths < 0).any())):
        raise ValueError("lengths_N must be finite and >= 0 (token counts)")

    groups = group_index(group_ids_N)
    min_N = segment_amin(lengths, groups)[groups.index_N]
    max_N = segment_amax(lengths, groups)[groups.index_N]
    span_N = max_N - min_N
    # Where the span is 0 every response has the same length: lambda = 0. Dividing by a
    # placeholder 1 there keeps the unused branch finite (no 0/0 NaN inside torch.where).
    lam_N = torch.where(span_N > 0, 0.5 - (lengths - min_N) / torch.where(span_N > 0, span_N, 1.0), 0.0)
    reward_N = torch.where(is_correct(correct_N), lam_N, lam_N.clamp(max=0.0))
    return reward_N.to(dtype)


def length_penalty_weight(iteration: int, weight: float, warmup_iterations: int) -> float:
    """Weight of the length penalty at a 0-based RL iteration: 0 for the first warmup_iterations
    iterations (0 .. warmup_iterations - 1), then the constant `weight`.
    """
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0 (0-based), got {iteration}")
    if warmup_iterations < 0:
        raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
    if not (weight >= 0 and weight < float("inf")):
        raise ValueError(f"weight must be finite and >= 0, got {weight!r}")
    return 0.0 if iteration < warmup_iterations else float(weight)
