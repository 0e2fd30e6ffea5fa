"""Kimi k1.5 online policy mirror descent surrogate loss (arXiv 2501.12599, §2.3.2).

Notation (one prompt x, k responses (y_j, z_j) sampled from pi_theta_i):

    r_j      reward of response j (the length penalty, §2.3.3, is already added by the caller)
    delta_j  log pi_theta(y_j, z_j | x) - log pi_theta_i(y_j, z_j | x), sums over response tokens
    b        estimate of tau * log Z(x):
               "mean"      b = (1/k) sum_j r_j                       (the paper's practical choice)
               "logsumexp" b = tau * log( (1/k) sum_j exp(r_j / tau) ) (the paper's sample
                           estimate of tau log Z; computed stably, see below)

    L(x) = (1/k) sum_j ( r_j - b - tau * delta_j )^2     (the §2.3.2 surrogate loss, per prompt)

There is no value network: the baseline is computed from the group's own rewards.

Gradient identity. b does not depend on theta (it is a function of rewards only), and
log pi_theta_i is a detached constant, so

    dL/d log pi_theta(y_j) = -(2 tau / k) (r_j - b - tau delta_j)
    grad L = -(2 tau / k) sum_j grad log pi_theta(y_j) (r_j - b - tau delta_j).

Eq. 3 of the paper is  (1/k) sum_j [ grad log pi_theta(y_j) (r_j - rbar) - (tau/2) grad delta_j^2 ]
                      = (1/k) sum_j grad log pi_theta(y_j) (r_j - rbar - tau delta_j),
so with b = rbar the gradient of L is exactly -2 tau x Eq. 3 (per prompt; the batch loss is the
mean over prompts, so the batch gradient is -2 tau / num_prompts x the sum of per-prompt Eq. 3).

With the logsumexp baseline the gradient is -2 tau x Eq. 3 with rbar replaced by b, i.e.
-2 tau x Eq. 3 + (2 tau / k)(b - rbar) sum_j grad log pi_theta(y_j). By Jensen b >= rbar, with
equality iff all rewards of the group are equal (in particular k = 1): every response's
advantage r_j - b is shifted by the same non-positive constant, and the extra term vanishes
exactly only for such groups. Nothing more than this sample-wise identity is claimed.

Normalisation across micro-batches and data-parallel ranks. Groups are never split across
micro-batches, so b (a per-group quantity) is the same whatever the split. The learner counts the
prompt groups of the whole optimizer step over all ranks and micro-batches (`num_groups_total`)
and each call returns sum_{groups in this micro-batch} L(x) / num_groups_total. Summing the
returned losses (and their gradients) over micro-batches and ranks gives exactly the mean of L(x)
over all prompts of the step, independent of the data-parallel size and the micro-batch split.
(With DDP/ZeRO averaging gradients over ranks, the learner multiplies by world size, or uses
a sum all-reduce, to turn that average back into this sum.) Groups whose rewards are all equal
still count in `num_groups_total`: they carry no advantage but do carry the tau delta^2 term.

Non-finite inputs are not masked. Any NaN or +-inf in logp/ref_logp/rewards of a group makes
that group's loss, and therefore `loss`, non-finite (NaN or inf), and the corresponding
metrics non-finite, so `torch.isfinite(out.loss)` is the one check the learner needs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from rl.mirror_descent.groups import GroupIndex, group_index, segment_amax, segment_amin, segment_mean

Baseline = Literal["mean", "logsumexp"]
BASELINES: tuple[str, ...] = ("mean", "logsumexp")


@dataclass
class MirrorDescentLossInputs:
    """One micro-batch of whole prompt groups; N = number of responses in the micro-batch.

    logp_N       (N,) float, log pi_theta(y_j, z_j | x): sum of the response-token log-probs under
                 the policy being trained (requires grad). See `sequence_logprob_sums`.
    ref_logp_N   (N,) float, the same sums under pi_theta_i, the policy at the start of the
                 iteration. Must not require grad (compute it under torch.no_grad()).
    rewards_N    (N,) float, r_j including the weighted length penalty. Must not require grad.
    group_ids_N  (N,) int, prompt-group label of each response (any integers; groups may have
                 different sizes; every group present must be complete in this micro-batch),
                 or their `GroupIndex` already built (`GroupIndex.from_labels`: no host sync).

    All on one device, any device (`meta` too, with a `GroupIndex`): the loss makes every
    tensor on that device and returns its outputs there.
    """

    logp_N: Tensor
    ref_logp_N: Tensor
    rewards_N: Tensor
    group_ids_N: Tensor | GroupIndex


@dataclass
class MirrorDescentLossOutputs:
    """Result for one micro-batch.

    loss          () differentiable: sum over this micro-batch's groups of L(x) / num_groups_total
    advantages_N  (N,) detached r_j - b(x)
    log_ratio_N   (N,) detached delta_j = log pi_theta - log pi_theta_i
    metrics       detached 0-dim tensors, means over this micro-batch (weight by num_sequences
                  or num_groups, as named, when combining micro-batches):
        reward_mean         mean_j r_j over sequences
        baseline_mean       mean over groups of b(x)
        advantage_mean      mean_j (r_j - b); 0 for "mean", <= 0 for "logsumexp"
        advantage_abs_mean  mean_j |r_j - b|
        log_ratio_mean      mean_j delta_j
        kl_k1               mean_j (-delta_j): k1 estimate of KL(pi_theta_i || pi_theta), samples
                            drawn from pi_theta_i; unbiased but can be negative
        kl_k3               mean_j (exp(delta_j) - 1 - delta_j): k3 estimate of the same KL
                            (Schulman's approximation), unbiased and >= 0; overflows to inf in
                            float32 if some delta_j > ~88 (a policy that has moved that far)
        residual_rms        sqrt(mean_j (r_j - b - tau delta_j)^2) over sequences
        zero_signal_frac    fraction of groups whose rewards are all equal (no advantage signal)
    num_sequences N, num_groups G of this micro-batch (Python ints).
    """

    loss: Tensor
    advantages_N: Tensor
    log_ratio_N: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    num_sequences: int = 0
    num_groups: int = 0


def _check_inputs(inputs: MirrorDescentLossInputs, tau: float, num_groups_total: int, baseline: str) -> None:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (0 < tau < math.inf):
        raise ValueError(f"tau must be a finite positive number, got {tau!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if isinstance(num_groups_total, bool) or not isinstance(num_groups_total, int) or num_groups_total < 1:
        raise ValueError(f"num_groups_total must be a positive int, got {num_groups_total!r}")
    groups = inputs.group_ids_N
    named = {
        "logp_N": inputs.logp_N,
        "ref_logp_N": inputs.ref_logp_N,
        "rewards_N": inputs.rewards_N,
        "group_ids_N": groups.index_N if isinstance(groups, GroupIndex) else groups,
    }
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or GroupIndex, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D (one entry per response), got shape {tuple(t.shape)}")
    n = inputs.logp_N.numel()
    if n == 0:
        raise ValueError("empty micro-batch: the mirror descent loss needs at least one response")
    for name, t in named.items():
        if t.numel() != n:
            raise ValueError(f"{name} has {t.numel()} entries but logp_N has {n}")
        # One device for all: a CPU tensor meeting a CUDA one would fail deep inside (issue 17).
        if t.device != inputs.logp_N.device:
            raise ValueError(f"{name} is on {t.device} but logp_N on {inputs.logp_N.device}")
    for name in ("logp_N", "ref_logp_N", "rewards_N"):
        if not named[name].dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating tensor, got {named[name].dtype}")
    # A reference or reward that carries a graph means the learner forgot torch.no_grad(): the
    # gradient would flow into pi_theta_i and no longer be Eq. 3. Refuse rather than detach quietly.
    for name in ("ref_logp_N", "rewards_N"):
        if named[name].requires_grad:
            raise ValueError(f"{name} must not require grad (compute it under torch.no_grad())")


def mirror_descent_loss(
    inputs: MirrorDescentLossInputs,
    *,
    tau: float,
    num_groups_total: int,
    baseline: Baseline = "mean",
) -> MirrorDescentLossOutputs:
    """k1.5 §2.3.2 surrogate: sum over this micro-batch's groups of L(x), divided by num_groups_total.

    tau               KL-regularisation strength of the mirror descent step (> 0).
    num_groups_total  number of prompt groups in the whole optimizer step, over all micro-batches
                      and data-parallel ranks (>= the groups present here).
    baseline          "mean" (paper's practical choice, gradient = -2 tau x Eq. 3 exactly) or
                      "logsumexp" (b = tau log mean exp(r/tau); see the module docstring).

    Computation is in float32, or float64 if logp_N is float64 (bf16 log-prob sums would round
    away the small ratios the tau delta term is made of), on the inputs' device. Raises
    ValueError for an empty batch, mismatched shapes or devices, a non-positive tau, a
    reference/reward that requires grad, or num_groups_total smaller than the groups present.
    """
    _check_inputs(inputs, tau, num_groups_total, baseline)
    dtype = torch.promote_types(inputs.logp_N.dtype, torch.float32)
    logp_N = inputs.logp_N.to(dtype)
    ref_logp_N = inputs.ref_logp_N.to(dtype)
    rewards_N = inputs.rewards_N.to(dtype)

    groups = group_index(inputs.group_ids_N)
    if groups.num_groups > num_groups_total:
        raise ValueError(
            f"num_groups_total={num_groups_total} is smaller than the {groups.num_groups} groups in "
            "this micro-batch: it must count every group of the optimizer step on every rank"
        )
    k_N = groups.counts_G.to(dtype)[groups.index_N]

    # Both baselines are written relative to a group extreme, so that a group whose rewards are
    # all equal gets b == r exactly (advantage exactly 0, not 1e-17 rounding noise: 0.1+0.1+0.1
    # over 3 is not 0.1 in floating point), and so that no exp can overflow.
    r_min_G = segment_amin(rewards_N, groups)
    r_max_G = segment_amax(rewards_N, groups)
    if baseline == "mean":
        # rbar = r_min + mean_j (r_j - r_min)
        baseline_G = r_min_G + segment_mean(rewards_N - r_min_G[groups.index_N], groups)
    else:
        # tau log((1/k) sum_j exp(r_j/tau)) = r_max + tau log(1 + (1/k) sum_j expm1(s_j)),
        # s_j = (r_j - r_max)/tau <= 0. No exp can overflow (r/tau = 1000 for tau = 1e-3 overflows
        # exp even in float64), and log1p/expm1 keep the small correction accurate for large tau:
        # log(sum exp) - log(k) would cancel two numbers near log k and lose ~1e-5 in float32 at
        # tau = 100. The argument of log1p lies in [1/k - 1, 0], so the log is finite.
        scaled_N = (rewards_N - r_max_G[groups.index_N]) / tau
        log_mean_G = torch.log1p(segment_mean(torch.expm1(scaled_N), groups))
        baseline_G = r_max_G + tau * log_mean_G
    advantages_N = rewards_N - baseline_G[groups.index_N]

    log_ratio_N = logp_N - ref_logp_N
    residual_N = advantages_N - tau * log_ratio_N
    # Each response carries weight 1/(k_g * num_groups_total): the 1/k_g makes L(x) a mean over the
    # group, the 1/num_groups_total the mean over all prompts of the step.
    loss = (residual_N.square() / k_N).sum() / num_groups_total

    with torch.no_grad():
        log_ratio_d = log_ratio_N.detach()
        adv_d = advantages_N.detach()
        metrics = {
            "reward_mean": rewards_N.mean(),
            "baseline_mean": baseline_G.mean(),
            "advantage_mean": adv_d.mean(),
            "advantage_abs_mean": adv_d.abs().mean(),
            "log_ratio_mean": log_ratio_d.mean(),
            "kl_k1": (-log_ratio_d).mean(),
            "kl_k3": (torch.expm1(log_ratio_d) - log_ratio_d).mean(),
            "residual_rms": residual_N.detach().square().mean().sqrt(),
            "zero_signal_frac": (r_max_G == r_min_G).to(dtype).mean(),
        }
    return MirrorDescentLossOutputs(
        loss=loss,
        advantages_N=adv_d,
        log_ratio_N=log_ratio_d,
        metrics=metrics,
        num_sequences=int(logp_N.numel()),
        num_groups=groups.num_groups,
    )
