"""Tests of the k1.5 §2.3.2 mirror descent loss (rl/mirror_descent/loss.py).

Expected values are worked by hand in the comments; a reader can check them with a pencil
(or, for the logsumexp baseline, a pocket calculator).
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import pytest
import torch

from rl.mirror_descent import MirrorDescentLossInputs, mirror_descent_loss

F64 = torch.float64


def t(values, dtype=F64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# The worked example used throughout: 2 prompts x 3 samples, tau = 0.5.
#   prompt A (group id 10): r = [1, 0, 0], log pi_theta = [-1, -2, -3], log pi_theta_i = [-1, -2.5, -2]
#                           => delta = [0, 0.5, -1]
#   prompt B (group id 20): r = [1, 1, 1], log pi_theta = [-1, -3, -2], log pi_theta_i = [-2, -2, -2]
#                           => delta = [1, -1, 0]
def worked_inputs(dtype=F64) -> MirrorDescentLossInputs:
    return MirrorDescentLossInputs(
        logp_N=t([-1.0, -2.0, -3.0, -1.0, -3.0, -2.0], dtype, requires_grad=True),
        ref_logp_N=t([-1.0, -2.5, -2.0, -2.0, -2.0, -2.0], dtype),
        rewards_N=t([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype),
        group_ids_N=torch.tensor([10, 10, 10, 20, 20, 20]),
    )


def test_mean_baseline_worked_example():
    # A: rbar = 1/3; residual r - rbar - tau*delta = [2/3 - 0, -1/3 - 0.25, -1/3 + 0.5] = [2/3, -7/12, 1/6]
    #    squares 64/144 + 49/144 + 4/144 = 117/144; mean over k = 3: 39/144 = 13/48
    # B: rbar = 1; residual = [0 - 0.5, 0 + 0.5, 0] ; squares 1/4 + 1/4 + 0; mean: 1/6 = 8/48
    # loss = (13/48 + 8/48) / 2 prompts = 21/96 = 7/32
    out = mirror_descent_loss(worked_inputs(), tau=0.5, num_groups_total=2)
    assert out.loss.item() == pytest.approx(7 / 32, abs=1e-12)
    # advantages r - rbar: A = [2/3, -1/3, -1/3]; B all-equal rewards => exactly 0
    torch.testing.assert_close(out.advantages_N, t([2 / 3, -1 / 3, -1 / 3, 0, 0, 0]), rtol=0, atol=1e-12)
    assert torch.equal(out.advantages_N[3:], torch.zeros(3, dtype=F64))
    torch.testing.assert_close(out.log_ratio_N, t([0, 0.5, -1, 1, -1, 0]))
    m = {k: v.item() for k, v in out.metrics.items()}
    assert m["reward_mean"] == pytest.approx(4 / 6)
    assert m["baseline_mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["advantage_mean"] == pytest.approx(0, abs=1e-12)
    assert m["advantage_abs_mean"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 6)
    # sum delta = 0 + 0.5 - 1 + 1 - 1 + 0 = -0.5 over 6 sequences
    assert m["log_ratio_mean"] == pytest.approx(-1 / 12)
    assert m["kl_k1"] == pytest.approx(1 / 12)
    # k3 = e^d - 1 - d: [0, e^.5 - 1.5, e^-1, e - 2, e^-1, 0] = [0, .14872, .36788, .71828, .36788, 0]; /6
    assert m["kl_k3"] == pytest.approx(0.26712699691700964, abs=1e-12)
    # every group has k = 3, so rms^2 = sum(residual^2)/6 = (117/144 + 72/144)/6 = 7/32 = loss
    assert m["residual_rms"] == pytest.approx(math.sqrt(7 / 32))
    assert m["zero_signal_frac"] == 0.5  # prompt B
    assert (out.num_sequences, out.num_groups) == (6, 2)
    assert all(not v.requires_grad for v in out.metrics.values())


def test_logsumexp_baseline_worked_example():
    # A: b = tau log((e^{1/tau} + e^0 + e^0) / 3) = 0.5 log((e^2 + 2)/3) = 0.5 log(9.389056/3) = 0.5704662
    #    residual = [1 - b, -b - 0.25, -b + 0.5] = [0.4295338, -0.8204662, -0.0704662]
    #    squares = [0.1844993, 0.6731648, 0.0049655]; mean = 0.2875432
    # B: all rewards 1 => b = 0.5 log(3 e^2 / 3) = 1 exactly, same as the mean baseline: L_B = 1/6
    # loss = (0.2875432 + 0.1666667) / 2 = 0.2271049
    out = mirror_descent_loss(worked_inputs(), tau=0.5, num_groups_total=2, baseline="logsumexp")
    b_a = 0.5 * math.log((math.e**2 + 2) / 3)
    assert b_a == pytest.approx(0.5704662, abs=1e-7)
    assert out.loss.item() == pytest.approx(0.22710493196842124, abs=1e-12)
    torch.testing.assert_close(out.advantages_N, t([1 - b_a, -b_a, -b_a, 0, 0, 0]), rtol=0, atol=1e-12)
    # Jensen: b >= rbar, so the mean advantage is <= 0
    assert out.metrics["advantage_mean"].item() == pytest.approx(-(b_a - 1 / 3) * 3 / 6)


def _decimal_logsumexp_baseline(rewards: list[float], tau: float) -> float:
    """Independent reference: tau * ln(mean exp(r/tau)) in 50-digit decimal arithmetic, where
    exp(1000) is an ordinary number, so no max-shifting trick is involved."""
    getcontext().prec = 50
    tau_d = Decimal(repr(tau))
    mean_exp = sum((Decimal(repr(r)) / tau_d).exp() for r in rewards) / len(rewards)
    return float(tau_d * mean_exp.ln())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_logsumexp_baseline_tiny_and_huge_tau(dtype):
    rewards = [1.0, 0.0, 0.0]
    # Naively, e^{1/tau} = e^1000 overflows even in float64: this is what the baseline must avoid.
    assert torch.isinf(torch.exp(t(rewards, dtype) / 1e-3)).any()
    for tau, expected in [
        # tau -> 0: b -> max r + tau log(#argmax / k) = 1 - 1e-3 log 3 = 0.9989014 (e^{-1000} terms vanish)
        (1e-3, 1 - 1e-3 * math.log(3)),
        # tau -> inf: b = 100 log(1 + (e^{0.01} - 1)/3) = 0.3344457 ~ rbar + var/(2 tau) = 1/3 + (2/9)/200
        (100.0, 100 * math.log1p(math.expm1(0.01) / 3)),
    ]:
        assert expected == pytest.approx(_decimal_logsumexp_baseline(rewards, tau), abs=1e-12)
        inputs = MirrorDescentLossInputs(
            logp_N=t([-5.0, -6.0, -7.0], dtype, requires_grad=True),
            ref_logp_N=t([-5.0, -6.0, -7.0], dtype),  # delta = 0: the loss is mean (r - b)^2
            rewards_N=t(rewards, dtype),
            group_ids_N=torch.tensor([0, 0, 0]),
        )
        out = mirror_descent_loss(inputs, tau=tau, num_groups_total=1, baseline="logsumexp")
        tol = 1e-6 if dtype == torch.float32 else 1e-12
        b = 1.0 - out.advantages_N[0].item()
        assert b == pytest.approx(expected, abs=tol)
        assert out.loss.item() == pytest.approx(((1 - expected) ** 2 + 2 * expected**2) / 3, abs=tol)
        out.loss.backward()
        assert torch.isfinite(inputs.logp_N.grad).all()


@pytest.mark.parametrize("tau", [1e-3, 100.0])
@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
def test_extreme_tau_matches_reference(tau, baseline):
    # Same worked inputs, extreme tau, against a per-group Python-float reference.
    out = mirror_descent_loss(worked_inputs(), tau=tau, num_groups_total=2, baseline=baseline)
    groups = {10: ([1.0, 0.0, 0.0], [0.0, 0.5, -1.0]), 20: ([1.0, 1.0, 1.0], [1.0, -1.0, 0.0])}
    total = 0.0
    for r, delta in groups.values():
        b = sum(r) / 3 if baseline == "mean" else _decimal_logsumexp_baseline(r, tau)
        total += sum((rj - b - tau * dj) ** 2 for rj, dj in zip(r, delta)) / 3
    # e.g. tau = 100, mean baseline, prompt B: residuals [-100, 100, 0] -> 20000/3
    assert out.loss.item() == pytest.approx(total / 2, rel=1e-12)
    assert torch.isfinite(out.loss)


def test_gradient_wrt_logp_worked_example():
    # dL/dlogp_j = -(2 tau / (k G)) (r_j - b - tau delta_j) = -(1/6) * residual with tau = .5, k = 3, G = 2
    # A: -(1/6) [2/3, -7/12, 1/6] = [-1/9, 7/72, -1/36];  B: -(1/6) [-1/2, 1/2, 0] = [1/12, -1/12, 0]
    inputs = worked_inputs()
    mirror_descent_loss(inputs, tau=0.5, num_groups_total=2).loss.backward()
    expected = t([-1 / 9, 7 / 72, -1 / 36, 1 / 12, -1 / 12, 0])
    torch.testing.assert_close(inputs.logp_N.grad, expected, rtol=0, atol=1e-12)


# --- a tiny linear "policy" for a real gradient w.r.t. parameters --------------------------------
# pi_W(token | x_t) = softmax(x_t W); a response is a few (feature, token) pairs; its log-prob is
# sum_t log softmax(x_t W)[y_t], and in closed form grad_W log pi = sum_t x_t (onehot(y_t) - p_t)^T.
D, V = 4, 5


def make_batch(group_sizes: list[int], seed: int, tokens_per_seq: int = 3):
    g = torch.Generator().manual_seed(seed)
    n = sum(group_sizes)
    return {
        "x": torch.randn(n, tokens_per_seq, D, generator=g, dtype=F64),
        "y": torch.randint(0, V, (n, tokens_per_seq), generator=g),
        # mixed 0/1 and fractional rewards, so some groups have spread and some do not
        "r": torch.randint(0, 3, (n,), generator=g).to(F64) / 2,
        "gid": torch.repeat_interleave(torch.arange(len(group_sizes)), torch.tensor(group_sizes)),
    }


def seq_logp(W, x, y):
    return torch.log_softmax(x @ W, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(-1)


def closed_form_grad_logp(W, x, y):
    """(n, D, V): grad_W log pi(y_j) for each sequence, by hand (no autograd)."""
    p = torch.softmax(x @ W, dim=-1)  # (n, T, V)
    onehot = torch.nn.functional.one_hot(y, V).to(F64)
    return torch.einsum("ntd,ntv->ndv", x, onehot - p)


def paper_eq3(W, W_i, batch, tau, baseline_per_seq=None):
    """sum over prompts of Eq. 3: (1/k) sum_j [grad log pi_j (r_j - rbar) - (tau/2) grad delta_j^2],
    with grad delta_j^2 = 2 delta_j grad log pi_j. baseline_per_seq replaces rbar if given."""
    with torch.no_grad():
        glp = closed_form_grad_logp(W, batch["x"], batch["y"])
        delta = seq_logp(W, batch["x"], batch["y"]) - seq_logp(W_i, batch["x"], batch["y"])
        total = torch.zeros(D, V, dtype=F64)
        for gid in batch["gid"].unique():
            sel = batch["gid"] == gid
            k = int(sel.sum())
            r = batch["r"][sel]
            b = r.mean() if baseline_per_seq is None else baseline_per_seq[sel][0]
            terms = glp[sel] * (r - b).view(-1, 1, 1) - (tau / 2) * (2 * delta[sel]).view(-1, 1, 1) * glp[sel]
            total += terms.sum(0) / k
    return total


def loss_on(W, W_i, batch, idx, tau, num_groups_total, baseline="mean"):
    inputs = MirrorDescentLossInputs(
        logp_N=seq_logp(W, batch["x"][idx], batch["y"][idx]),
        ref_logp_N=seq_logp(W_i, batch["x"][idx], batch["y"][idx]).detach(),
        rewards_N=batch["r"][idx],
        group_ids_N=batch["gid"][idx],
    )
    return mirror_descent_loss(inputs, tau=tau, num_groups_total=num_groups_total, baseline=baseline)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_parameter_gradient_equals_minus_2tau_eq3(tau):
    # Groups of sizes 3, 3, 1, 4: a size-1 group has advantage 0 and only its tau delta^2 term.
    sizes = [3, 3, 1, 4]
    batch = make_batch(sizes, seed=0)
    g = torch.Generator().manual_seed(1)
    W_i = torch.randn(D, V, generator=g, dtype=F64)  # pi_theta_i, the start of the iteration
    W = (W_i + 0.3 * torch.randn(D, V, generator=g, dtype=F64)).requires_grad_()  # a few steps later
    out = loss_on(W, W_i, batch, slice(None), tau, num_groups_total=len(sizes))
    (grad,) = torch.autograd.grad(out.loss, W)
    expected = -2 * tau * paper_eq3(W, W_i, batch, tau) / len(sizes)
    assert expected.abs().max() > 1e-3  # a non-trivial gradient, so the comparison means something
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)


def test_parameter_gradient_logsumexp_baseline_identity():
    # Documented identity: with b = tau log mean exp(r/tau), grad = -2 tau x Eq.3 with rbar replaced
    # by b, which differs from -2 tau x Eq.3 whenever a group's rewards are not all equal.
    tau, sizes = 0.5, [3, 2, 4]
    batch = make_batch(sizes, seed=3)
    W_i = torch.randn(D, V, generator=torch.Generator().manual_seed(4), dtype=F64)
    W = (W_i + 0.2).requires_grad_()
    out = loss_on(W, W_i, batch, slice(None), tau, num_groups_total=len(sizes), baseline="logsumexp")
    (grad,) = torch.autograd.grad(out.loss, W)
    b_per_seq = batch["r"] - out.advantages_N
    expected = -2 * tau * paper_eq3(W, W_i, batch, tau, baseline_per_seq=b_per_seq) / len(sizes)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)
    mean_baseline_eq3 = -2 * tau * paper_eq3(W, W_i, batch, tau) / len(sizes)
    assert (grad - mean_baseline_eq3).abs().max() > 1e-4


@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
def test_micro_batch_and_data_parallel_invariance(baseline):
    # 5 groups of sizes 3, 1, 4, 2, 3, interleaved in the full batch (order must not matter),
    # split as two "ranks" x micro-batches of whole groups: {0, 3} {1} on rank 0, {2, 4} on rank 1.
    sizes = [3, 1, 4, 2, 3]
    batch = make_batch(sizes, seed=5)
    W_i = torch.randn(D, V, generator=torch.Generator().manual_seed(6), dtype=F64)
    W = (W_i + 0.1).requires_grad_()
    tau, G = 0.3, len(sizes)
    perm = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(7))
    full = loss_on(W, W_i, batch, perm, tau, G, baseline)
    (grad_full,) = torch.autograd.grad(full.loss, W)

    splits = [[0, 3], [1], [2, 4]]
    parts = [loss_on(W, W_i, batch, torch.isin(batch["gid"], torch.tensor(s)), tau, G, baseline) for s in splits]
    summed = sum(p.loss for p in parts)
    (grad_split,) = torch.autograd.grad(summed, W)
    assert summed.item() == pytest.approx(full.loss.item(), abs=1e-6)
    torch.testing.assert_close(grad_split, grad_full, rtol=0, atol=1e-6)

    # Normalising by the local group count instead would over-weight the 1-group micro-batch:
    local = sum(loss_on(W, W_i, batch, torch.isin(batch["gid"], torch.tensor(s)), tau, len(s), baseline).loss for s in splits)
    assert abs(local.item() - full.loss.item()) > 1e-3


@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
def test_all_equal_rewards_and_singleton_groups_give_zero_advantage(baseline):
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004 and /3 != 0.1 in floating point: a plain mean would
    # leave 1e-17 noise; the advantage must be exactly 0. The singleton group (id 5) likewise.
    inputs = MirrorDescentLossInputs(
        logp_N=t([-1.0, -2.0, -3.0, -4.0], requires_grad=True),
        ref_logp_N=t([-1.0, -2.0, -3.0, -2.0]),  # delta = [0, 0, 0, -2]
        rewards_N=t([0.1, 0.1, 0.1, 0.7]),
        group_ids_N=torch.tensor([1, 1, 1, 5]),
    )
    out = mirror_descent_loss(inputs, tau=0.25, num_groups_total=2, baseline=baseline)
    assert torch.equal(out.advantages_N, torch.zeros(4, dtype=F64))
    # only the singleton's tau delta term is left: (0 - 0.25 * -2)^2 / 1 = 0.25; over 2 prompts: 0.125
    assert out.loss.item() == pytest.approx(0.125, abs=1e-15)
    assert out.metrics["zero_signal_frac"].item() == 1.0
    out.loss.backward()
    assert torch.isfinite(inputs.logp_N.grad).all()


def test_bf16_log_probs_are_computed_in_float32():
    inputs = worked_inputs(torch.float32)
    inputs.logp_N = inputs.logp_N.detach().to(torch.bfloat16).requires_grad_()  # these values are exact in bf16
    out = mirror_descent_loss(inputs, tau=0.5, num_groups_total=2)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(7 / 32, abs=1e-6)
    out.loss.backward()
    assert inputs.logp_N.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
@pytest.mark.parametrize(
    "field,bad",
    [("logp_N", float("nan")), ("logp_N", float("-inf")), ("ref_logp_N", float("nan")), ("rewards_N", float("nan")),
     ("rewards_N", float("inf"))],
)
def test_non_finite_inputs_are_not_masked(field, bad, baseline):
    inputs = worked_inputs()
    with torch.no_grad():
        getattr(inputs, field)[4] = bad
    out = mirror_descent_loss(inputs, tau=0.5, num_groups_total=2, baseline=baseline)
    assert not torch.isfinite(out.loss)


def test_invalid_inputs_raise_clear_errors():
    def call(**changes):
        inputs = worked_inputs()
        kwargs = {"tau": 0.5, "num_groups_total": 2}
        for key, value in changes.items():
            if hasattr(inputs, key):
                setattr(inputs, key, value)
            else:
                kwargs[key] = value
        return mirror_descent_loss(inputs, **kwargs)

    empty = torch.zeros(0, dtype=F64)
    with pytest.raises(ValueError, match="empty"):
        mirror_descent_loss(
            MirrorDescentLossInputs(empty, empty, empty, torch.zeros(0, dtype=torch.long)), tau=1.0, num_groups_total=1
        )
    with pytest.raises(ValueError, match="num_groups_total"):
        call(num_groups_total=1)  # 2 groups present, so a global count of 1 is impossible
    with pytest.raises(ValueError, match="tau"):
        call(tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        call(tau=float("nan"))
    with pytest.raises(ValueError, match="baseline"):
        call(baseline="median")
    with pytest.raises(ValueError, match="must not require grad"):
        call(ref_logp_N=t([-1.0] * 6, requires_grad=True))
    with pytest.raises(ValueError, match="entries"):
        call(rewards_N=t([1.0] * 5))
    with pytest.raises(ValueError, match="integer"):
        call(group_ids_N=t([0.0] * 6))
    with pytest.raises(ValueError, match="1-D"):
        call(logp_N=t([[-1.0] * 6]))
