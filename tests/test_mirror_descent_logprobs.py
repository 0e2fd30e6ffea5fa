"""Tests of the packed per-sequence log-prob sums and the chunked entropy (rl/mirror_descent/logprobs.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rl.mirror_descent import entropy_from_logits, sequence_logprob_sums

F64 = torch.float64


def test_packed_sums_worked_example():
    # One packed row: [p0 p0 a0 a0 | p1 a1 a1 a1 | pad], p = prompt tokens (masked), a = response.
    # seq 0 response: -0.5 + -1.0 = -1.5;  seq 1 response: -0.25 + -0.25 + -2.0 = -2.5; seq 2 has no token: 0
    logp = torch.tensor([-9.0, -9.0, -0.5, -1.0, -9.0, -0.25, -0.25, -2.0, float("-inf")], requires_grad=True)
    seq = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, -1])
    mask = torch.tensor([False, False, True, True, False, True, True, True, False])
    out = sequence_logprob_sums(logp, seq, 3, response_mask_T=mask)
    assert out.tolist() == [-1.5, -2.5, 0.0]
    # d(out0 + 2 out1)/dlogp: 1 on seq 0's response, 2 on seq 1's, 0 on prompt/padding (no NaN from -inf)
    (out[0] + 2 * out[1]).backward()
    assert logp.grad.tolist() == [0, 0, 1, 1, 0, 2, 2, 2, 0]


def test_packed_sums_against_naive_loop_2d():
    g = torch.Generator().manual_seed(0)
    B, T, S = 3, 17, 7
    logp = -torch.rand(B, T, generator=g, dtype=F64)
    seq = torch.randint(0, S, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.7
    out = sequence_logprob_sums(logp, seq, S, response_mask_T=mask)
    naive = [0.0] * S
    for b in range(B):
        for i in range(T):
            if mask[b, i]:
                naive[seq[b, i]] += logp[b, i].item()
    torch.testing.assert_close(out, torch.tensor(naive, dtype=F64), rtol=0, atol=1e-12)
    # without a mask every token counts
    out_all = sequence_logprob_sums(logp, seq, S)
    naive_all = torch.zeros(S, dtype=F64)
    for b in range(B):
        for i in range(T):
            naive_all[seq[b, i]] += logp[b, i]
    torch.testing.assert_close(out_all, naive_all, rtol=0, atol=1e-12)


def test_packed_sums_accumulate_bf16_in_float32():
    # 4096 tokens of log-prob -0.01 (bf16 -0.010009765625): the float32 sum is -41.0; a bf16
    # running sum would stall (at |sum| = 32, bf16 spacing 0.25 swallows each 0.01 increment).
    n = 4096
    logp = torch.full((n,), -0.01, dtype=torch.bfloat16)
    out = sequence_logprob_sums(logp, torch.zeros(n, dtype=torch.long), 1)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(n * -0.010009765625, rel=1e-6)


def test_packed_sums_errors():
    logp = torch.zeros(3)
    with pytest.raises(ValueError, match="outside"):
        sequence_logprob_sums(logp, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="outside"):
        sequence_logprob_sums(logp, torch.tensor([0, -1, 1]), 2, response_mask_T=torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match="shape"):
        sequence_logprob_sums(logp, torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="integer"):
        sequence_logprob_sums(logp, torch.zeros(3), 2)


def naive_entropy(row: torch.Tensor) -> float:
    p = [math.exp(z) for z in row.tolist()]
    s = sum(p)
    return -sum((q / s) * math.log(q / s) for q in p if q > 0)


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_entropy_against_naive_loop(chunk_size):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(2, 5, 11, generator=g, dtype=F64)
    out = entropy_from_logits(logits, chunk_size=chunk_size)
    assert out.shape == (2, 5)
    naive = torch.tensor([[naive_entropy(logits[b, i]) for i in range(5)] for b in range(2)], dtype=F64)
    torch.testing.assert_close(out, naive, rtol=0, atol=1e-12)


def test_entropy_hand_values_and_masking():
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # uniform over 4: H = log 4
            [0.0, 0.0, float("-inf"), float("-inf")],  # masked vocab: uniform over 2, H = log 2 (0 log 0 = 0)
            [100.0, 0.0, 0.0, 0.0],  # almost one-hot: H ~ 0
            [0.0, float("nan"), 0.0, 0.0],  # NaN logit: NaN entropy, not a quiet number
        ]
    )
    out = entropy_from_logits(logits, chunk_size=2)
    assert out[0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert out[1].item() == pytest.approx(math.log(2), abs=1e-6)
    assert 0 <= out[2].item() < 1e-6
    assert math.isnan(out[3].item())
    assert out.dtype == torch.float32 and not out.requires_grad
    # bf16 logits are upcast
    assert entropy_from_logits(logits[:1].to(torch.bfloat16)).item() == pytest.approx(math.log(4), abs=1e-6)
