"""The GPU tier (issue 17): the learner and SFT on one CUDA device, no Ray, no vLLM.

    pytest -m gpu -q            # on a machine with CUDA

Every test here is marked `gpu`; without CUDA, tests/conftest.py marks them skipped, so a CPU
run reports them as skipped, never as passed. The learner is a plain class: one rank with world
size 1 runs in this process (NCCL process group on the GPU). Checks are the CPU tests' checks
(tests/test_learner.py, tests/test_packing.py) on CUDA, with numbers worked out from the inputs:

- one `train_iteration` per baseline: at the first forward log pi_theta == log pi_theta_i, so the
  loss is a function of the rewards alone, exact to float32 whatever the device and dtype;
- optimizer reset: AdamW moments live on the GPU and are cleared;
- a non-finite reward and an overflowing loss skip their step without moving a weight;
- weight export in the engine's dtype: every exported tensor equals the policy's, cast;
- an SFT run's first step: its logged loss is the initial policy's packed CE on that step;
- packed vs one-by-one log-probs in bf16 on CUDA within bf16 noise, and broken packing outside it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_learner import TAU, make_episodes, make_learner, max_weight_change, torch_optimizer, weights
from test_packing import LAYOUTS, VOCAB, make_samples, tiny_qwen2

from rl.learner import Episode
from rl.modeling import checkpoint_state_dict, packed_token_logprobs
from rl.packing import IGNORE, PackedBatch, pack

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda", 0)  # what a rank of world size 1 gets (rl.dist.rank_device)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from experiments.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_gpu"), seed=0)


def first_step_loss(eps: list[Episode], baseline: str) -> float:
    """sum over groups of (1/k) sum_j (r_j - b)^2, over G groups (delta = 0 at the first forward)."""
    groups = sorted({e.group for e in eps})
    total = 0.0
    for g in groups:
        r = [e.reward for e in eps if e.group == g]
        if baseline == "mean":
            b = sum(r) / len(r)
        else:
            b = TAU * math.log(sum(math.exp(x / TAU) for x in r) / len(r))
        total += sum((x - b) ** 2 for x in r) / len(r)
    return total / len(groups)


def iterate(learner, minibatches, baseline="mean", reset=True):
    num_groups = [len({e.group for e in eps}) for eps in minibatches]
    return learner.train_iteration(minibatches, num_groups, TAU, baseline, False, reset)


# -- the learner -------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
@pytest.mark.parametrize("bf16", [False, True])
def test_train_iteration_on_cuda(tiny, baseline, bf16):
    learner = make_learner(tiny, bf16=bf16)
    assert learner.device == CUDA
    assert {p.device for p in learner.engine.module.parameters()} == {CUDA}
    eps = make_episodes(4, 4, seed=2)
    before = weights(learner)
    stats = iterate(learner, [eps], baseline)
    assert stats["loss"] == pytest.approx(first_step_loss(eps, baseline), rel=1e-5)
    assert stats["steps"] == 1 and stats["skipped_steps"] == 0 and stats["sequences"] == len(eps)
    assert math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 0
    assert stats["entropy_tokens"] == sum(len(e.response_ids) for e in eps)
    assert 0 < max_weight_change(before, learner) < 1  # moved, and by an lr-sized step

    # Two mini-batches: the second's reference is a no-grad pass before the first step.
    mb0, mb1 = [e for e in eps if e.group < 2], [e for e in eps if e.group >= 2]
    stats = iterate(learner, [mb0, mb1], baseline)
    assert stats["steps"] == 2 and math.isfinite(stats["loss"]) and stats["kl_k3"] > 0


@pytest.mark.integration
def test_optimizer_reset_on_cuda(tiny):
    learner = make_learner(tiny)
    eps = make_episodes(2, 3, seed=5)
    opt = torch_optimizer(learner)
    iterate(learner, [eps], reset=False)
    iterate(learner, [eps], reset=False)
    assert {int(s["step"]) for s in opt.state.values()} == {2}
    assert {s["exp_avg"].device for s in opt.state.values()} == {CUDA}
    assert any(float(s["exp_avg"].abs().sum()) > 0 for s in opt.state.values())
    iterate(learner, [eps], reset=True)
    assert {int(s["step"]) for s in opt.state.values()} == {1}  # cleared, then one fresh step


@pytest.mark.integration
@pytest.mark.parametrize("bad", [float("nan"), 1e30])
def test_nonfinite_loss_skips_the_step_on_cuda(tiny, bad):
    """NaN: the reward check skips the step before any forward. 1e30: the loss overflows to inf
    in float32 after group 0's micro-batch already ran backward; those gradients are dropped."""
    learner = make_learner(tiny, tokens_per_microbatch=128, row_tokens=128)
    eps = make_episodes(2, 3, seed=9)
    eps[4].reward = bad  # group 1
    before = weights(learner)
    stats = iterate(learner, [eps])
    assert stats["skipped_steps"] == 1 and stats["steps"] == 0
    assert max_weight_change(before, learner) == 0.0
    assert len(torch_optimizer(learner).state) == 0
    assert all(p.grad is None or not p.grad.any() for p in learner.engine.module.parameters())

    # The next iteration trains as a fresh learner does. (CUDA reductions are not bit-stable, so
    # compare the share of weights whose update differs by more than a tenth of lr: a leaked
    # gradient would turn the signs of most of AdamW's first-step updates.)
    good = [Episode(e.group + 10, e.prompt_ids, e.response_ids, 0.1 * (i % 3), 0.0)
            for i, e in enumerate(make_episodes(2, 3, seed=10))]
    fresh = make_learner(tiny, tokens_per_microbatch=128, row_tokens=128)
    s1, s2 = iterate(learner, [good]), iterate(fresh, [good])
    assert s1["steps"] == s2["steps"] == 1 and s1["loss"] == pytest.approx(s2["loss"], rel=1e-6)
    diff = torch.cat([(a.detach() - b.detach()).abs().flatten() for a, b in
                      zip(learner.engine.module.parameters(), fresh.engine.module.parameters())])
    assert float((diff > 1e-4).float().mean()) < 1e-3


@pytest.mark.integration
@pytest.mark.parametrize("zero_stage", [1, 3])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_weight_export_in_the_engines_dtype(tiny, zero_stage, dtype):
    from rollout.weight_sync import WeightBucket

    learner = make_learner(tiny, zero_stage=zero_stage)
    buckets: list[WeightBucket] = learner.export_weights(bucket_mb=1, dtype=dtype)
    got = {name: t for b in buckets for name, t in b.tensors()}
    assert len(buckets) > 1  # 1 MiB buckets: several
    if zero_stage == 3:
        learner_state = {}
        for items in learner._gathered_state(1 << 30, None):
            learner_state.update((n, t.detach().cpu().clone()) for n, t in items)
    else:
        learner_state = {n: t.detach().cpu() for n, t in learner.engine.module.state_dict().items()}
    want = checkpoint_state_dict(learner.engine.module, learner_state)
    assert sorted(got) == sorted(want)
    for name, t in got.items():
        assert t.dtype == getattr(torch, dtype), name
        assert torch.equal(t, want[name].to(t.dtype)), name


# -- SFT and packing -------------------------------------------------------------------------


@pytest.mark.integration
def test_sft_first_step_loss_is_the_initial_policys_packed_ce(tmp_path, arith_data):
    """Three SFT steps on the GPU through `cot_sft.train.main` (several packed micro-batches a
    step, all-reduce of the target count); the logged first loss must equal the initial policy's
    CE over that step's batch, recomputed here (fp32 both sides)."""
    from cot_sft.data import load_sft_rows, step_batches, tokenize_examples
    from cot_sft.train import main
    from experiments.tiny_model import build_tiny_checkpoint
    from rl.modeling import load_policy, load_tokenizer, packed_ce_sum
    from rl.packing import pack_by_budget

    init = build_tiny_checkpoint(tmp_path / "init", seed=0)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(
        f"run_name: sft\noutput_dir: {tmp_path}\ninit_checkpoint: {init}\n"
        f"data:\n  train_file: {arith_data / 'sft.jsonl'}\n  max_seq_len: 768\n"
        "train:\n  max_steps: 3\n  tokens_per_step: 4096\n  tokens_per_microbatch: 1536\n  row_tokens: 768\n"
        "  warmup_steps: 1\n  seed: 0\n"
        "optim:\n  zero_stage: 1\n  lr: 1.0e-3\n  bf16: false\n"
    )
    main(["--config", str(cfg), "--no-eval"])
    recs = [json.loads(line) for line in (tmp_path / "sft" / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 1, 2]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in recs)

    samples, _ = tokenize_examples(load_tokenizer(init), load_sft_rows(arith_data / "sft.jsonl"), 768)
    _, first = next(step_batches(samples, 4096, 0))
    micro = pack_by_budget(first, 1536, 768, device=CUDA)
    assert len(micro) > 1
    model = load_policy(init).to(CUDA)
    with torch.no_grad():
        ce = sum(float(packed_ce_sum(model, mb)) for mb in micro) / sum(mb.num_targets for mb in micro)
    assert recs[0]["loss"] == pytest.approx(ce, rel=1e-4)


def per_sample_logprobs(model, batch: PackedBatch, position_ids=None) -> dict[int, list[float]]:
    with torch.no_grad():
        if position_ids is None:
            logp_T, _ = packed_token_logprobs(model, batch)
        else:  # packing broken on purpose: positions run on across samples
            logits = model(input_ids=batch.input_ids, position_ids=position_ids, attention_mask=None,
                           use_cache=False).logits.float().reshape(-1, VOCAB)
            logp_T = torch.log_softmax(logits, -1).gather(-1, batch.targets.clamp(min=0)[:, None])[:, 0]
    keep = (batch.targets != IGNORE).cpu()
    seq, vals = batch.seq.cpu()[keep].tolist(), logp_T.cpu()[keep].tolist()
    out: dict[int, list[float]] = {i: [] for i in batch.indices}
    for slot, v in zip(seq, vals):
        out[batch.indices[slot]].append(v)
    return out


@pytest.mark.parametrize("layout", ["one_row", "three_rows_padded"])
def test_packed_equals_one_by_one_in_bf16_on_cuda(layout):
    """bf16 on the CPU (the calibration run for these bounds): packed vs alone differ by at most
    1.0e-3 per token (mean 8e-5); with positions that do not restart, by up to 0.33 (mean 0.05)."""
    model = tiny_qwen2("sdpa").to(CUDA, torch.bfloat16)
    samples = make_samples()
    alone: dict[int, list[float]] = {}
    for s in samples:
        alone.update(per_sample_logprobs(model, pack([[s]], device=CUDA)))
    batch = pack(LAYOUTS[layout](samples), device=CUDA)
    packed = per_sample_logprobs(model, batch)
    err = [abs(a - b) for i in alone for a, b in zip(alone[i], packed[i], strict=True)]
    assert len(err) == sum(sum(s.target_mask[1:]) for s in samples)
    assert max(err) < 0.02 and sum(err) / len(err) < 2e-3

    R, L = batch.input_ids.shape
    broken = per_sample_logprobs(model, batch, torch.arange(L, device=CUDA).expand(R, L))
    err_broken = [abs(a - b) for i in alone for a, b in zip(alone[i], broken[i])]
    assert max(err_broken) > 0.1  # the comparison above can fail
