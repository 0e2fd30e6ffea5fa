"""Sequence packing (rl/packing.py) and the packed forward (rl/modeling.py).

The acceptance check: the loss of a packed batch equals the loss of the same samples run one by
one, which proves no token attends across samples. The model is a tiny random Qwen2 in fp32 so
the only differences left are float rounding.

Tolerances (fp32, measured max error ~1e-6 per token, ~1e-5 on a 30-token sum):
  per-token log-prob   1e-5 absolute
  per-sample CE sum    1e-4 absolute (sums of up to 31 tokens of ~4.6 nats each)
The same comparison with packing broken (positions not restarting, or an explicit all-ones
attention mask, i.e. a plain causal mask over the row) puts the worst sample off by ~0.5-1 nat,
>1000x the tolerance, and every sample that has a neighbour before it off by >10x.
"""

from __future__ import annotations

import pytest
import torch

from rl.modeling import packed_ce_sum, packed_token_logprobs
from rl.packed_attention import PACKED_SDPA, segments_from_positions
from rl.packed_attention import register as register_packed_sdpa
from rl.packing import IGNORE, PackedBatch, Sample, pack, pack_by_budget, plan_bins

VOCAB = 97
TOKEN_ATOL = 1e-5
SUM_ATOL = 1e-4
# Lengths include a 1-token sample (no target at all) and a 2-token one (a single target).
LENGTHS = [9, 23, 1, 2, 17, 5, 31]


def tiny_qwen2(attn: str = "sdpa"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    register_packed_sdpa()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, attn_implementation=attn,
    )
    return Qwen2ForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module", params=["sdpa", "eager", PACKED_SDPA])
def model(request):
    return tiny_qwen2(request.param)


def make_samples() -> list[Sample]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i, n in enumerate(LENGTHS):
        ids = torch.randint(0, VOCAB, (n,), generator=g).tolist()
        # a "prompt" of the first third, then a response with one masked hole in it
        mask = [j >= n // 3 and j != n - 2 for j in range(n)]
        out.append(Sample(ids, mask, index=100 + i))
    return out


def unpacked_token_logprobs(model, s: Sample) -> dict[int, float]:
    """Reference, computed without rl.packing: one sample alone, default positions and mask.
    Returns {t: log p(ids[t] | ids[:t])} for every trained token t."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([s.ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return {t: logp[t - 1, s.ids[t]].item() for t in range(1, len(s.ids)) if s.target_mask[t]}


def packed_per_sample(model, batch: PackedBatch, **fwd) -> tuple[dict[int, list[float]], dict[int, float]]:
    """Per-sample list of trained-token log-probs (in order) and per-sample CE sum, keyed by
    Sample.index. `fwd` overrides position_ids / attention_mask to break packing on purpose."""
    if fwd:
        with torch.no_grad():
            logits = model(
                input_ids=batch.input_ids, position_ids=fwd.get("position_ids", batch.position_ids),
                attention_mask=fwd.get("attention_mask"), use_cache=False,
            ).logits
        logp_all = torch.log_softmax(logits.double().reshape(-1, VOCAB), -1)
        logp_T = logp_all.gather(-1, batch.targets.clamp(min=0)[:, None])[:, 0]
    else:
        with torch.no_grad():
            logp_T, _ = packed_token_logprobs(model, batch)
    tokens: dict[int, list[float]] = {idx: [] for idx in batch.indices}
    for t in range(batch.targets.numel()):
        if batch.targets[t] != IGNORE:
            tokens[batch.indices[batch.seq[t]]].append(logp_T[t].item())
    sums = {idx: -sum(v) for idx, v in tokens.items()}
    return tokens, sums


LAYOUTS = {
    "one_row": lambda s: [s],
    "three_rows_padded": lambda s: [[s[0], s[1]], [s[2], s[3], s[4]], [s[5], s[6]]],
    "one_sample_per_row": lambda s: [[x] for x in s],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_equals_one_by_one(model, layout):
    samples = make_samples()
    batch = pack(LAYOUTS[layout](samples))
    ref = {s.index: unpacked_token_logprobs(model, s) for s in samples}
    tokens, sums = packed_per_sample(model, batch)

    for s in samples:
        want = list(ref[s.index].values())
        assert len(tokens[s.index]) == len(want) == sum(s.target_mask[1:])
        torch.testing.assert_close(
            torch.tensor(tokens[s.index], dtype=torch.float64), torch.tensor(want, dtype=torch.float64),
            rtol=0, atol=TOKEN_ATOL,
        )
        assert sums[s.index] == pytest.approx(-sum(want), abs=SUM_ATOL)
    assert tokens[102] == []  # the 1-token sample has nothing to predict

    # The SFT loss of the batch (summed CE / trained tokens) is the token-mean over the samples.
    n_ref = sum(len(r) for r in ref.values())
    assert batch.num_targets == n_ref
    with torch.no_grad():
        loss = packed_ce_sum(model, batch).item() / batch.num_targets
    assert loss == pytest.approx(-sum(sum(r.values()) for r in ref.values()) / n_ref, abs=TOKEN_ATOL)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("layout", ["one_row", "three_rows_padded"])
def test_broken_packing_fails_the_same_comparison(attn, layout):
    """Without restarting positions, or with a plain causal mask over the whole row, samples see
    each other: the worst sample is off by >1000x the tolerance and every sample with a neighbour
    before it by >10x (the first sample of a row sees nothing else either way). This is what the
    test above would catch. (PACKED_SDPA takes its samples from the positions: an all-ones mask
    means no padding to it, so only the first case applies; see the test below.)"""
    model = tiny_qwen2(attn)
    samples = make_samples()
    batch = pack(LAYOUTS[layout](samples))
    ref = {s.index: -sum(unpacked_token_logprobs(model, s).values()) for s in samples}
    R, L = batch.input_ids.shape
    broken = {
        "positions_not_restarting": {"position_ids": torch.arange(L).expand(R, L)},
        "plain_causal_mask": {"attention_mask": torch.ones(R, L, dtype=torch.long)},
    }
    first_of_row = {row[0].index for row in LAYOUTS[layout](samples)}
    for name, fwd in broken.items():
        _, sums = packed_per_sample(model, batch, **fwd)
        err = {i: abs(sums[i] - ref[i]) for i in ref}
        assert max(err.values()) > 1000 * SUM_ATOL, name
        later = [i for i in ref if i not in first_of_row and sums[i] != 0]
        assert later and all(err[i] > 10 * SUM_ATOL for i in later), (name, sorted(err.items()))
        if name == "plain_causal_mask":  # positions still restart: the first sample is intact
            assert all(err[i] < SUM_ATOL for i in first_of_row), err


def test_pack_layout_worked_example():
    # row 0: a=[1 2 3] (trains 2,3)  b=[4 5] (trains 5);  row 1: c=[6 7 8 9] (trains 8,9) ; pad 0
    a = Sample([1, 2, 3], [False, True, True], 10)
    b = Sample([4, 5], [False, True], 11)
    c = Sample([6, 7, 8, 9], [False, False, True, True], 12)
    batch = pack([[a, b], [c]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    X = IGNORE
    # targets[t] is the token predicted at t; the last token of a sample predicts nothing
    assert batch.targets.tolist() == [2, 3, X, 5, X, X, 8, 9, X, X]
    assert batch.seq.tolist() == [0, 0, -1, 1, -1, -1, 2, 2, -1, -1]
    assert batch.indices == [10, 11, 12]
    assert batch.num_tokens == 9 and batch.num_targets == 5


def test_pack_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="sample 7"):
        pack([[Sample([1, 2, 3], [True, True], 7)]])


def test_plan_bins_first_fit_decreasing():
    lengths = [5, 9, 3, 7, 1, 10, 4]
    bins = plan_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # each exactly once
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    # FFD on 10,9,7,5,4,3,1 into 10: [10] [9,1] [7,3] [5,4]
    assert sorted(bins) == [[0, 6], [1, 4], [2, 3], [5]]
    with pytest.raises(ValueError, match="11 tokens"):
        plan_bins([3, 11], 10)


def test_pack_by_budget_covers_every_sample_within_budget(model):
    samples = make_samples()
    micro = pack_by_budget(samples, max_tokens=64, row_tokens=32)
    seen = [i for mb in micro for i in mb.indices]
    assert sorted(seen) == sorted(s.index for s in samples)
    for mb in micro:
        rows, width = mb.input_ids.shape
        assert width <= 32 and rows <= 2 and mb.num_tokens <= 64
    assert sum(mb.num_tokens for mb in micro) == sum(LENGTHS)
    # Summed CE over the micro-batches equals the one-by-one sum (what one SFT step trains on).
    with torch.no_grad():
        total = sum(packed_ce_sum(model, mb).item() for mb in micro)
    ref = -sum(sum(unpacked_token_logprobs(model, s).values()) for s in samples)
    assert total == pytest.approx(ref, abs=SUM_ATOL)
    with pytest.raises(ValueError, match="row_tokens"):
        pack_by_budget(samples, max_tokens=16, row_tokens=32)


@pytest.mark.parametrize("layout", ["one_row", "three_rows_padded"])
def test_packed_sdpa_matches_masked_sdpa_in_value_and_gradient(layout):
    """Per-sample causal attention (rl.packed_attention) against transformers' SDPA with the
    block-diagonal mask, same weights: equal log-probs and equal gradients of the summed CE (fp32)."""
    samples = make_samples()
    batch = pack(LAYOUTS[layout](samples))
    grads, values = {}, {}
    for attn in ("sdpa", PACKED_SDPA):
        model = tiny_qwen2(attn).train()
        logp_T, _ = packed_token_logprobs(model, batch)
        (-logp_T.sum()).backward()
        values[attn] = logp_T.detach()
        grads[attn] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(values[PACKED_SDPA], values["sdpa"], rtol=0, atol=TOKEN_ATOL)
    for name, g in grads["sdpa"].items():
        torch.testing.assert_close(grads[PACKED_SDPA][name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_packed_sdpa_segments_and_their_failure_modes():
    a, b, c = Sample([1, 2, 3], [False, True, True], 0), Sample([4, 5], [False, True], 1), Sample([6] * 4, [True] * 4, 2)
    batch = pack([[a, b], [c]])
    assert batch.segments == [[(0, 3), (3, 5)], [(0, 4), (4, 5)]]  # the padding is a segment of its own
    assert segments_from_positions(batch.position_ids) == batch.segments
    model = tiny_qwen2(PACKED_SDPA)
    R, L = batch.input_ids.shape
    with torch.no_grad():
        # Positions that do not restart make one segment of the row: samples see each other.
        flat = model(input_ids=batch.input_ids, position_ids=torch.arange(L).expand(R, L)).logits
        ok = model(input_ids=batch.input_ids, position_ids=batch.position_ids).logits
        assert (flat[0, 3:5] - ok[0, 3:5]).abs().max() > 1e-2
        torch.testing.assert_close(flat[0, :3], ok[0, :3], rtol=0, atol=1e-5)  # the first sample alike
        with pytest.raises(ValueError, match="padding mask"):
            model(input_ids=batch.input_ids, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]))
        with pytest.raises(ValueError, match="without a KV cache"):
            model.generate(input_ids=batch.input_ids[:1], max_new_tokens=2, do_sample=False)
        with pytest.raises(ValueError, match="cover 4 positions of a 5-token row"):
            model(input_ids=batch.input_ids, position_ids=batch.position_ids, packed_segments=[[(0, 4)], [(0, 5)]])


def test_load_policy_uses_packed_sdpa_for_a_deepseek_v3_moe_and_it_matches_sdpa(tmp_path):
    """MLA attention (query/key head dim 96, value 32), loaded as a policy is: `load_policy` picks
    PACKED_SDPA for text decoders, and a packed batch scores as under transformers' SDPA."""
    from transformers import AutoModelForCausalLM

    from experiments.tiny_vlm import build_tiny_moe_checkpoint
    from rl.modeling import load_policy

    path = build_tiny_moe_checkpoint(tmp_path / "moe", seed=0, num_layers=2, init_std=0.1)
    ours = load_policy(path)
    assert ours.config._attn_implementation == PACKED_SDPA
    theirs = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa")
    samples = make_samples()
    batch = pack(LAYOUTS["three_rows_padded"](samples))
    with torch.no_grad():
        a, _ = packed_token_logprobs(ours, batch)
        b, _ = packed_token_logprobs(theirs, batch)
    assert (a != 0).sum() == batch.num_targets
    torch.testing.assert_close(a, b, rtol=0, atol=TOKEN_ATOL)
