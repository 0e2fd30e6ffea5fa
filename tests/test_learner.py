"""The RL learner on one in-process rank (no Ray, no vLLM): how episodes are grouped and packed,
what one `train_iteration` does to the weights, and the bad-input paths (issue 5).

A random tiny Qwen2 is enough here: the properties are about grouping, the sign and size of the
update, and what is (not) changed on a skipped step. Everything runs in fp32 so weights can be
compared exactly. The tests that build a DeepSpeed rank are marked integration (issue 18: every
test that starts vLLM, Ray or DeepSpeed is); the grouping and packing ones are the fast tier.

    pytest tests/test_learner.py -q
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rl.dist import DeepSpeedConfig, free_port
from rl.learner import Episode, Learner, pack_groups, reset_optimizer_state, shard_groups, split_minibatches

TAU = 0.1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from experiments.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_learner"), seed=0)


def make_learner(policy, tokens_per_microbatch: int = 4096, row_tokens: int = 512, **ds) -> Learner:
    """A fresh world-size-1 rank (the process group is created once and reused; DeepSpeed
    engines are cheap to rebuild). fp32 and lr 1e-3 unless overridden."""
    learner = Learner(threads=1)
    cfg = DeepSpeedConfig(**{"bf16": False, "lr": 1e-3, "zero_stage": 1, **ds})
    learner.setup(str(policy), cfg, 0, 1, f"127.0.0.1:{free_port()}", tokens_per_microbatch, row_tokens, seed=0)
    return learner


def make_episodes(num_groups: int, k: int, seed: int, rewards=None, prompt_len=(6, 16), resp_len=(4, 40)) -> list[Episode]:
    """Synthetic episodes over byte tokens; rewards vary within each group unless given
    (`rewards(g, j) -> float`)."""
    rng = random.Random(seed)
    out = []
    for g in range(num_groups):
        prompt = [rng.randrange(32, 127) for _ in range(rng.randint(*prompt_len))]
        for j in range(k):
            resp = [rng.randrange(32, 127) for _ in range(rng.randint(*resp_len))]
            r = rewards(g, j) if rewards else float(rng.random() < 0.5) + 0.1 * j
            out.append(Episode(g, prompt, resp, r, 0.0))
    return out


def weights(learner: Learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.engine.module.parameters()]


def max_weight_change(before: list[torch.Tensor], learner: Learner) -> float:
    return max(float((a - p.detach()).abs().max()) for a, p in zip(before, learner.engine.module.parameters()))


def torch_optimizer(learner: Learner) -> torch.optim.Optimizer:
    opt = learner.engine.optimizer
    while not isinstance(opt, torch.optim.Optimizer):
        opt = opt.optimizer
    return opt


def train(learner: Learner, minibatches: list[list[Episode]], reset: bool = True, ref_from_engine: bool = False) -> dict:
    num_groups = [len({e.group for e in eps}) for eps in minibatches]
    return learner.train_iteration(minibatches, num_groups, TAU, "mean", ref_from_engine, reset)


# -- grouping and packing (pure) -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_tokens,row_tokens", [(256, 128), (1024, 256), (2048, 2048), (600, 200)])
def test_pack_groups_never_splits_a_group_and_respects_the_budget(seed, max_tokens, row_tokens):
    rng = random.Random(seed)
    episodes = []
    for g in range(rng.randint(1, 12)):
        prompt = [1] * rng.randint(3, 40)
        for _ in range(rng.randint(1, 6)):
            episodes.append(Episode(g, prompt, [2] * rng.randint(0, 80), 0.0, 0.0))
    rng.shuffle(episodes)  # groups interleaved in the input
    batches = pack_groups(episodes, max_tokens, row_tokens)

    seen = [i for mb in batches for i in mb.indices]
    assert sorted(seen) == list(range(len(episodes)))  # every episode exactly once
    group_batch = {}
    for b, mb in enumerate(batches):
        groups = {episodes[i].group for i in mb.indices}
        for g in groups:
            assert group_batch.setdefault(g, b) == b, f"group {g} split over micro-batches"
        rows, width = mb.input_ids.shape
        assert width <= row_tokens
        real = sum(len(episodes[i].prompt_ids) + len(episodes[i].response_ids) for i in mb.indices)
        assert mb.num_tokens == real
        if len(groups) > 1:  # only a lone oversized group may exceed the budget
            assert rows <= max_tokens // row_tokens and rows * width <= max_tokens
    # Targets are exactly the response tokens.
    assert sum(mb.num_targets for mb in batches) == sum(len(e.response_ids) for e in episodes)


def test_pack_groups_keeps_a_group_whole_when_rows_fragment():
    # 3 x 300-token samples of one group: 900 real tokens fit a 1024 budget, but two samples do
    # not share a 512-token row, so they need 3 rows (> 1024 // 512). They must still be one
    # micro-batch: the group baseline is computed inside a micro-batch.
    eps = [Episode(0, [1] * 100, [2] * 200, float(j), 0.0) for j in range(3)]
    eps += [Episode(1, [1] * 10, [2] * 20, float(j), 0.0) for j in range(3)]
    batches = pack_groups(eps, 1024, 512)
    assert [sorted(mb.indices) for mb in batches] == [[0, 1, 2], [3, 4, 5]]


def test_pack_groups_rejects_rows_longer_than_the_budget():
    with pytest.raises(ValueError):
        pack_groups(make_episodes(1, 2, 0), 128, 256)


@pytest.mark.parametrize("n,m", [(10, 3), (7, 7), (32, 2), (5, 1), (9, 4)])
def test_split_minibatches_is_contiguous_and_balanced(n, m):
    groups = [10 * i + 3 for i in range(n)]
    mbs = split_minibatches(groups, m)
    assert len(mbs) == m
    assert [g for mb in mbs for g in mb] == groups  # contiguous, in order, nothing lost
    sizes = [len(mb) for mb in mbs]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize("num_ranks", [1, 2, 3])
def test_shard_groups_gives_whole_groups_to_each_rank(num_ranks):
    eps = make_episodes(7, 3, seed=1)
    by_group = {}
    for e in eps:
        by_group.setdefault(e.group, []).append(e)
    mbs = split_minibatches(list(by_group), 2)
    per_rank = shard_groups(mbs, by_group, num_ranks)
    assert len(per_rank) == num_ranks and all(len(r) == len(mbs) for r in per_rank)
    for m, groups in enumerate(mbs):
        owners = {}
        for r in range(num_ranks):
            for e in per_rank[r][m]:
                owners.setdefault(e.group, set()).add(r)
        assert set(owners) == set(groups)
        assert all(len(o) == 1 for o in owners.values())  # a group lives on one rank
        for g in groups:  # all k episodes of the group are there
            (r,) = owners[g]
            assert [e for e in per_rank[r][m] if e.group == g] == by_group[g]
        counts = [len({e.group for e in per_rank[r][m]}) for r in range(num_ranks)]
        assert max(counts) - min(counts) <= 1


# -- one iteration on a real (tiny) policy ---------------------------------------------------


@pytest.mark.integration
def test_first_step_loss_and_update_direction(tiny):
    """At the first forward log pi_theta == log pi_theta_i, so the loss is exactly
    sum_g mean_j (r_j - rbar_g)^2 / G; after the step, responses with positive advantage
    gained log-probability relative to those with negative advantage."""
    learner = make_learner(tiny)
    eps = make_episodes(4, 4, seed=2)
    before = learner.sequence_logprobs(eps)
    stats = train(learner, [eps])
    after = learner.sequence_logprobs(eps)

    expected = 0.0
    adv = []
    for g in range(4):
        r = [e.reward for e in eps if e.group == g]
        rbar = sum(r) / len(r)
        expected += sum((x - rbar) ** 2 for x in r) / len(r) / 4
        adv += [x - rbar for x in r]
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["steps"] == 1 and stats["skipped_steps"] == 0
    assert stats["sequences"] == len(eps) and stats["kl_k3"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 0
    delta = [a - b for a, b in zip(after, before)]
    assert sum(a * d for a, d in zip(adv, delta)) > 0
    pos = [d for a, d in zip(adv, delta) if a > 0]
    neg = [d for a, d in zip(adv, delta) if a < 0]
    assert sum(pos) / len(pos) > sum(neg) / len(neg)


@pytest.mark.integration
def test_token_and_sequence_logprobs_agree(tiny):
    learner = make_learner(tiny, tokens_per_microbatch=256, row_tokens=128)
    eps = make_episodes(3, 3, seed=3)
    seq = learner.sequence_logprobs(eps)
    tok = learner.token_logprobs([e.prompt_ids + e.response_ids for e in eps], [len(e.prompt_ids) for e in eps])
    for e, s, t in zip(eps, seq, tok):
        assert len(t) == len(e.response_ids)
        assert s == pytest.approx(sum(t), abs=1e-4)
        assert all(x < 0 for x in t)


@pytest.mark.integration
def test_second_minibatch_uses_the_policy_at_iteration_start_as_reference(tiny):
    """Mini-batch 1's reference is log pi_theta_i from before the first step. Training on
    [mb0, mb1] must therefore give the same weights as two learners that differ only in where
    mb1's reference came from: the engine's sample log-probs set to the same start values."""
    a, b = make_learner(tiny), make_learner(tiny)
    eps = make_episodes(4, 3, seed=4)
    mb0, mb1 = [e for e in eps if e.group < 2], [e for e in eps if e.group >= 2]
    # (scored per mini-batch, packed as the learner packs them, so the numbers are bit-equal)
    start = [b.sequence_logprobs(mb0), b.sequence_logprobs(mb1)]
    stats_a = train(a, [mb0, mb1])
    with_ref = [[Episode(e.group, e.prompt_ids, e.response_ids, e.reward, lp) for e, lp in zip(mb, lps)]
                for mb, lps in zip([mb0, mb1], start)]
    stats_b = train(b, with_ref, ref_from_engine=True)
    assert stats_a["steps"] == stats_b["steps"] == 2
    assert stats_a["loss"] == pytest.approx(stats_b["loss"], rel=1e-5)
    assert max_weight_change(weights(b), a) < 1e-6
    assert stats_a["kl_k3"] > 0  # mini-batch 1 was scored after the first step moved the policy


@pytest.mark.integration
def test_optimizer_state_reset_clears_adamw_moments(tiny):
    learner = make_learner(tiny)
    eps = make_episodes(2, 3, seed=5)
    opt = torch_optimizer(learner)

    def steps() -> set[int]:
        return {int(s["step"]) for s in opt.state.values()}

    train(learner, [eps], reset=False)
    assert steps() == {1}
    train(learner, [eps], reset=False)
    assert steps() == {2}  # AdamW state carried over
    moments = [s["exp_avg"].clone() for s in opt.state.values()]
    assert any(float(m.abs().sum()) > 0 for m in moments)

    reset_optimizer_state(learner.engine)
    assert len(opt.state) == 0
    train(learner, [eps], reset=True)
    assert steps() == {1}  # a fresh subproblem: bias correction restarts at step 1


@pytest.mark.integration
def test_equal_rewards_in_every_group_give_zero_loss_and_no_update(tiny):
    learner = make_learner(tiny)
    eps = make_episodes(3, 4, seed=6, rewards=lambda g, j: float(g % 2))
    before = weights(learner)
    stats = train(learner, [eps[:8], eps[8:]])
    assert stats["loss"] == 0.0 and math.isfinite(stats["grad_norm"]) and stats["grad_norm"] == 0.0
    assert stats["steps"] == 2 and stats["skipped_steps"] == 0
    assert max_weight_change(before, learner) == 0.0


@pytest.mark.integration
def test_empty_response_is_a_finite_zero_logprob_episode(tiny):
    learner = make_learner(tiny)
    eps = make_episodes(2, 3, seed=7)
    eps[1] = Episode(eps[1].group, eps[1].prompt_ids, [], 0.0, 0.0)
    lps = learner.sequence_logprobs(eps)
    assert lps[1] == 0.0 and all(math.isfinite(x) for x in lps)
    stats = train(learner, [eps])
    assert math.isfinite(stats["loss"]) and stats["steps"] == 1


def test_empty_generation_is_scored_zero():
    """What the driver does with an empty response (EOS first): the verifier scores it 0, with a
    reason, and the reward is 0 -- no crash, no NaN."""
    from prompts.schema import row_from_dict
    from rl.rewards import VerifierConfig
    from rl.scoring import Scorer

    row = row_from_dict({"id": "r0", "prompt": [{"role": "user", "content": "Compute 2+3"}], "answer": "5"}, "test")
    with Scorer(VerifierConfig(num_workers=1)) as scorer:
        results = scorer.score_detailed([row, row], ["", "<think>2+3=5</think> \\boxed{5}"])
        rewards = scorer.rewards(results)
    assert [r.score for r in results] == [0.0, 1.0] and rewards == [0.0, 1.0]
    assert results[0].reason and results[0].reason != results[1].reason


@pytest.mark.integration
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_reward_skips_the_step_and_keeps_the_weights(tiny, bad):
    learner = make_learner(tiny)
    eps = make_episodes(2, 3, seed=8)
    eps[4].reward = bad
    before = weights(learner)
    stats = train(learner, [eps])
    assert stats["skipped_steps"] == 1 and stats["steps"] == 0
    assert max_weight_change(before, learner) == 0.0
    assert len(torch_optimizer(learner).state) == 0  # no optimizer step taken either


@pytest.mark.integration
@pytest.mark.parametrize("zero_stage,bf16", [(1, False), (2, False), (1, True), (2, True)])
def test_overflowing_loss_skips_only_its_step_and_leaks_no_gradient(tiny, zero_stage, bf16):
    """A finite but huge reward makes the loss inf in fp32 after some micro-batches already ran
    backward. That step is dropped (gradients discarded, weights kept); the next mini-batch trains
    as if the bad one had never been there. ZeRO-2 reduces gradients inside backward and bf16
    accumulates them in fp32 buffers: neither may carry them into the next step."""
    bad_eps = make_episodes(2, 3, seed=9)
    bad_eps[4].reward = 1e30  # group 1; (1e30)^2 overflows float32
    good = make_episodes(2, 3, seed=10)
    good = [Episode(e.group + 10, e.prompt_ids, e.response_ids, e.reward, 0.0) for e in good]

    # 128-token budget: each group is its own micro-batch, so group 0 runs backward first.
    a = make_learner(tiny, tokens_per_microbatch=128, row_tokens=128, zero_stage=zero_stage, bf16=bf16)
    assert len(pack_groups(bad_eps, 128, 128)) == 2
    stats = train(a, [bad_eps, good])
    assert stats["skipped_steps"] == 1 and stats["steps"] == 1

    b = make_learner(tiny, tokens_per_microbatch=128, row_tokens=128, zero_stage=zero_stage, bf16=bf16)
    train(b, [good])
    assert max_weight_change(weights(b), a) < 1e-6


@pytest.mark.integration
def test_an_empty_iteration_is_a_no_op(tiny):
    """No groups left (all prompts too long or filtered): no step, no crash, weights kept."""
    learner = make_learner(tiny)
    before = weights(learner)
    stats = learner.train_iteration([[]], [0], TAU, "mean", False, True)
    assert stats["steps"] == 0 and stats["skipped_steps"] == 0 and stats["loss"] == 0.0
    assert max_weight_change(before, learner) == 0.0


@pytest.mark.integration
def test_save_and_load_restore_fp32_weights_and_rng(tiny, tmp_path):
    a = make_learner(tiny)
    train(a, [make_episodes(2, 3, seed=11)])
    a.save(str(tmp_path / "ck"))
    assert (tmp_path / "ck" / "policy" / "config.json").exists()
    next_draw = torch.rand(4)  # what the rank draws next after its checkpoint
    b = make_learner(tmp_path / "ck" / "policy")  # bf16 HF copy, then the exact DeepSpeed state
    assert max_weight_change(weights(a), b) > 0
    b.load(str(tmp_path / "ck"))  # (setup reseeded torch; load restores the saved RNG states)
    assert max_weight_change(weights(a), b) == 0.0
    assert torch.equal(torch.rand(4), next_draw)
    assert a.state_fingerprint() == b.state_fingerprint()
