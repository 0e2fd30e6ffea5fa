"""The RL loop's partial-rollout steps (rl.steps.partial_rollout and what follows it) on a scripted
engine: no vLLM, Ray or learner, only the bookkeeping between them (issue 15).

The scripted engine stands in for `EngineGroup.generate`: every prompt has k = 2 scripted responses,
sample 0 of 3 tokens and sample 1 of 6, both ending with EOS ("stop"). Each call continues a request
by at most its max_tokens, so with segment_tokens 4, sample 0 ends in its first segment and sample 1
needs two. The log-prob of the token at response position p is -(p + 1) / 10, so sums over any
segment can be checked by hand.

    iteration 0   A, B drawn (4 slots = 2 prompts x k)    A0, B0 end; A1, B1 wait: nothing released
    iteration 1   A1, B1 continued (n = 1), C drawn         A, B released, each with a 2-segment sample
"""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from prompts.schema import PromptRow
from rl.checkpoint import TrainerState, rollout_seed
from rl.config import RLConfig
from rl.rewards import VerifierConfig, VerifyResult, compose_rewards
from rl.sampling import build_sampler
from rl.steps import (Prompts, RunCounters, compute_rewards, partial_rollout, replay_buffer, rollout, step_metrics,
                      trained_part, update)
from rollout.engine import Generation, GenRequest, sample_offsets

K = 2
SCRIPT = {0: [5, 6, 7], 1: [8, 9, 10, 11, 12, 7]}  # sample j's whole response, the same for every prompt
BASE_SEED = 3


def lp(pos: int) -> float:
    return -(pos + 1) / 10


def decode(ids) -> str:
    return " ".join(str(t) for t in ids)


TOKENIZER = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: decode(ids))


class ScriptedEngine:
    """`generate(requests, sampling)`: request i's prompt is [100 + prompt number, 1] followed by the
    response so far; n > 1 starts samples 0..n-1, n = 1 continues the scripted response it begins.
    Each generation's text is its segment's (as vLLM detokenizes a segment on its own)."""

    def __init__(self, script: dict[int, list[int]] = SCRIPT):
        self.script, self.calls = script, []

    def __call__(self, requests, sampling):
        self.calls.append((list(requests), sampling))
        out = []
        for i, r in enumerate(requests):
            ids = r.prompt_token_ids if isinstance(r, GenRequest) else list(r)
            n = r.n if isinstance(r, GenRequest) and r.n is not None else sampling.n
            budget = r.max_tokens if isinstance(r, GenRequest) and r.max_tokens is not None else sampling.max_tokens
            done = ids[2:]
            samples = range(n) if n > 1 else [j for j, s in self.script.items() if done and s[: len(done)] == done]
            for j in samples:
                seg = self.script[j][len(done): len(done) + budget]
                end = len(done) + len(seg)
                finish = "stop" if end == len(self.script[j]) else "length"
                out.append(Generation(i, seg, [lp(p) for p in range(len(done), end)], finish, decode(seg) + " "))
        return out


class FakeScorer:
    """Correct when the response ended itself with the answer token 7; records what it was shown."""

    def __init__(self):
        self.cfg, self.texts = VerifierConfig(), []

    def score_detailed(self, rows, texts, finish_reasons):
        self.texts.append(list(texts))
        return [VerifyResult(1.0 if fr == "stop" and t.split()[-1] == "7" else 0.0,
                             "correct" if fr == "stop" else "truncated") for t, fr in zip(texts, finish_reasons)]

    def rewards(self, results):
        return compose_rewards(results, self.cfg.reward)


STATS = {"loss": 0.0, "kl_k1": 0.0, "kl_k3": 0.0, "entropy_sum": 0.0, "entropy_tokens": 0, "tokens": 0, "steps": 1,
         "skipped_steps": 0, "grad_norm": 0.0, "engine_ref_abs_diff": 0.0, "engine_ref_seqs": 0, "sequences": 0,
         "seconds": 0.0}


class FakeLearners:
    """One learner rank that records the episodes `update` sends it."""

    def __init__(self):
        self.minibatches: list = []
        self.train_iteration = SimpleNamespace(remote=self._train)

    def __len__(self) -> int:
        return 1

    def run(self, submit):
        return [submit(0, self)]

    def _train(self, minibatches, num_groups, tau, baseline, ref_from_engine, reset):
        self.minibatches.append(minibatches)
        return dict(STATS, steps=int(bool(minibatches)))


def make_cfg(enabled: bool = True, **objective) -> RLConfig:
    return RLConfig.model_validate({
        "policy": "unused", "prompts_per_iteration": 2,
        "data": {"train_file": "t.jsonl", "max_prompt_tokens": 100},
        "rollout": {"sampling": {"n": K, "max_tokens": 12},
                    "partial": {"enabled": enabled, "segment_tokens": 4}},
        "learner": {"tokens_per_microbatch": 1000, "minibatches_per_iteration": 1},
        "objective": objective,
    })


ROWS = [PromptRow(id=f"p{i}", prompt=[{"role": "user", "content": f"q{i}"}], answer="7") for i in range(6)]
PROMPTS = Prompts({r.id: r for r in ROWS}, {r.id: [100 + i, 1] for i, r in enumerate(ROWS)},
                  {r.id: 2 for r in ROWS})


def begin(cfg: RLConfig):
    return build_sampler(cfg.sampler, ROWS, seed=cfg.seed), replay_buffer(cfg, None, False)


def step(it, cfg, sampler, buf, engine, scorer=None):
    return partial_rollout(it, cfg, sampler, PROMPTS, engine, scorer or FakeScorer(), BASE_SEED, buf, TOKENIZER)


def test_groups_wait_for_their_last_sample_and_continuations_carry_the_earlier_segments():
    cfg = make_cfg()
    sampler, buf = begin(cfg)
    engine, scorer = ScriptedEngine(), FakeScorer()

    # Iteration 0: two fresh prompts of k samples, one call, seeded as an all-equal-n call always was.
    ro0 = step(0, cfg, sampler, buf, engine, scorer)
    reqs, sp = engine.calls[0]
    a, b = ro0.drawn
    assert [(r.prompt_token_ids, r.n, r.max_tokens) for r in reqs] == [(PROMPTS.ids[a], K, 4), (PROMPTS.ids[b], K, 4)]
    assert sp.seed == rollout_seed(BASE_SEED, 0, 0) and sample_offsets(reqs, sp.n) == [0, K]  # i * n
    assert ro0.chosen == [] and ro0.gens == [] and scorer.texts == [[]]  # A1 and B1 still run: nothing released
    assert ro0.generated_tokens == 3 + 4 + 3 + 4
    assert {k: ro0.partial_metrics[k] for k in ("partial_buffer_groups", "partial_buffer_running",
                                               "partial_buffer_waiting", "partial_released_trajectories")} == \
        {"partial_buffer_groups": 2, "partial_buffer_running": 2, "partial_buffer_waiting": 2,
         "partial_released_trajectories": 0}

    # Iteration 1: the two running samples first (prompt + segment 1, n = 1, a segment's budget),
    # then one fresh prompt for the 2 slots left, never one already in flight.
    ro1 = step(1, cfg, sampler, buf, engine, scorer)
    reqs, sp = engine.calls[1]
    [c] = ro1.drawn
    assert c not in (a, b)
    assert [(r.prompt_token_ids, r.n, r.max_tokens) for r in reqs] == [
        (PROMPTS.ids[a] + SCRIPT[1][:4], 1, 4), (PROMPTS.ids[b] + SCRIPT[1][:4], 1, 4), (PROMPTS.ids[c], K, 4)]
    assert sp.seed == rollout_seed(BASE_SEED, 1, 0) and sample_offsets(reqs, sp.n) == [0, 1, 2]
    assert ro1.chosen == [a, b] and ro1.kept == {a, b}
    assert [g.token_ids for g in ro1.gens] == [SCRIPT[0], SCRIPT[1]] * 2
    assert [g.logprobs for g in ro1.gens] == [[lp(p) for p in range(len(SCRIPT[j]))] for j in (0, 1)] * 2
    assert [t.segment_ends for t in ro1.trajectories] == [[3], [4, 6]] * 2
    assert [t.segment_iterations for t in ro1.trajectories] == [[0], [0, 1]] * 2
    # Scored on the whole response, decoded at once (a 1-segment one keeps the engine's text).
    assert scorer.texts[-1] == ["5 6 7 ", decode(SCRIPT[1])] * 2
    assert [r.score for r in ro1.results] == [1.0] * 4
    assert ro1.generated_tokens == 2 + 2 + 3 + 4  # this iteration's segments, not the released responses
    m = ro1.partial_metrics
    assert (m["partial_segments_mean"], m["partial_segments_max"], m["partial_multi_segment_frac"]) == (1.5, 2, 0.5)
    assert (m["partial_continued"], m["partial_new_groups"], m["partial_buffer_running"]) == (2, 1, 1)
    assert m["partial_stale_iterations_mean"] == 0.5  # A0, B0 finished at iteration 0 and waited one
    assert m["partial_trained_token_share"] == pytest.approx((3 + 2 + 3 + 2) / (3 + 6 + 3 + 6))  # exclude


@pytest.mark.parametrize("mode, start, lp_sum", [
    ("exclude", 4, lp(4) + lp(5)),  # only segment 2 (tokens 4, 5): -0.5 - 0.6 = -1.1
    ("include", 0, sum(lp(p) for p in range(6))),  # every token: -(0.1 + ... + 0.6) = -2.1
])
def test_the_episode_of_a_two_segment_trajectory_trains_the_segments_the_option_names(mode, start, lp_sum):
    cfg = make_cfg(partial_segments=mode, ref_logprobs="learner")
    sampler, buf = begin(cfg)
    engine = ScriptedEngine()
    step(0, cfg, sampler, buf, engine)
    ro = step(1, cfg, sampler, buf, engine)
    rw = compute_rewards(1, cfg, FakeScorer(), ro)
    learners = FakeLearners()
    ls = update(cfg, learners, PROMPTS, ro, rw)
    [[episodes]] = learners.minibatches[-1:]  # one rank, one mini-batch
    assert ls.groups_kept == 2 and len(episodes) == 4
    e = episodes[1]  # A1: prompt A, the whole response as context, trained from `start`
    assert e.prompt_ids == PROMPTS.ids[ro.chosen[0]] and e.response_ids == SCRIPT[1]
    assert (e.trained_from, e.sample_logprob_sum) == (start, pytest.approx(lp_sum))
    assert (episodes[0].trained_from, episodes[0].sample_logprob_sum) == (0, pytest.approx(lp(0) + lp(1) + lp(2)))
    assert trained_part(ro, 1, mode) == (pytest.approx(lp_sum), start)


def test_a_small_prompt_set_draws_only_the_prompts_not_in_flight():
    """2 prompts, 2 per iteration: at iteration 1 both are in flight (their sample 1 runs) and 2
    slots are free, but no prompt is left to draw; the sampler is not asked for one."""
    cfg = make_cfg()
    rows = ROWS[:2]
    prompts = Prompts({r.id: r for r in rows}, {r.id: PROMPTS.ids[r.id] for r in rows}, {r.id: 2 for r in rows})
    sampler, buf = build_sampler(cfg.sampler, rows, seed=0), replay_buffer(cfg, None, False)
    engine = ScriptedEngine()
    for it in (0, 1):
        ro = partial_rollout(it, cfg, sampler, prompts, engine, FakeScorer(), BASE_SEED, buf, TOKENIZER)
    assert ro.drawn == [] and [r.n for r in engine.calls[1][0]] == [1, 1] and sorted(ro.chosen) == ["p0", "p1"]


def test_an_iteration_that_releases_nothing_still_makes_a_metrics_row():
    cfg = make_cfg()
    sampler, buf = begin(cfg)
    ro = step(0, cfg, sampler, buf, ScriptedEngine())
    rw = compute_rewards(0, cfg, FakeScorer(), ro)
    assert rw.rewards.numel() == 0 and rw.len_reward.numel() == 0
    learners = FakeLearners()
    ls = update(cfg, learners, PROMPTS, ro, rw)
    assert ls.groups_kept == 0 and ls.minibatches == 0
    times = dict(ro.times, time_learn_s=0.0)
    m = step_metrics(0, PROMPTS, sampler, ro, rw, ls, times, None)
    assert m["num_samples"] == 0 and m["skip_reason"] == "no_groups"
    assert m["rollout_tokens_per_s"] == pytest.approx(14 / max(1e-9, times["time_rollout_s"]))
    assert m["partial_buffer_trajectories"] == 4 and m["partial_released_trajectories"] == 0


def test_a_looping_sample_is_stopped_after_its_first_segment_and_penalised():
    """Sample 1 loops (8 9 8 9 ...): with repeat detection (a unit of <= 2 tokens, 2 copies, 4
    tokens) its first segment is a loop, so it is final and cut; the group is released at once,
    and the looping sample gets the truncation reward (0 here) minus the penalty."""
    cfg = make_cfg()
    pc = cfg.rollout.partial
    pc.repeat_ngram, pc.repeat_min_count, pc.repeat_min_tokens, pc.repeat_penalty = 2, 2, 4, 0.5
    sampler, buf = begin(cfg)
    ro = step(0, cfg, sampler, buf, ScriptedEngine({0: SCRIPT[0], 1: [8, 9] * 10}))
    assert len(ro.chosen) == 2 and len(buf) == 0
    assert [(t.finish_reason, t.repeat_stop, t.segment_ends) for t in ro.trajectories] == [
        ("stop", False, [3]), ("length", True, [4])] * 2
    assert ro.partial_metrics["partial_repeat_stops"] == 2 and ro.partial_metrics["partial_truncated_frac"] == 0.5
    rw = compute_rewards(0, cfg, FakeScorer(), ro)
    verifier = compose_rewards(ro.results, VerifierConfig().reward)
    assert rw.rewards.tolist() == pytest.approx([v + rw.len_weight * float(lr) - 0.5 * (j % 2)
                                                 for j, (v, lr) in enumerate(zip(verifier, rw.len_reward))])


def test_the_buffer_goes_into_the_trainer_state_and_a_resume_continues_it():
    """Iterations 0-1, the checkpoint's trainer state through JSON, then iteration 2 from it: the
    same requests and the same released groups as the run that never stopped."""
    cfg = make_cfg()
    sampler, buf = begin(cfg)
    engine = ScriptedEngine()
    for it in (0, 1):
        step(it, cfg, sampler, buf, engine)
    state = RunCounters().trainer_state(1, cfg.seed, sampler, 0.0, None, {}, 0, 0, buf)
    saved = TrainerState.from_dict(json.loads(json.dumps(asdict(state))))
    assert saved.replay_buffer == buf.state_dict() and len(buf) == 2  # C0 waits, C1 runs

    sampler2 = build_sampler(cfg.sampler, ROWS, seed=cfg.seed)
    sampler2.load_state_dict(saved.sampler)
    buf2 = replay_buffer(cfg, saved, False)
    assert buf2.state_dict() == buf.state_dict()
    resumed = ScriptedEngine()
    ro_a, ro_b = step(2, cfg, sampler, buf, engine), step(2, cfg, sampler2, buf2, resumed)
    assert resumed.calls[0][0] == engine.calls[-1][0] and resumed.calls[0][1].seed == engine.calls[-1][1].seed
    assert ro_b.chosen == ro_a.chosen == [saved.replay_buffer["groups"][0][0]["prompt_id"]]
    assert buf2.state_dict() == buf.state_dict()


def test_partial_off_keeps_the_plain_rollout_with_no_buffer_and_no_partial_metrics():
    cfg = make_cfg(enabled=False)
    sampler, buf = begin(cfg)
    assert buf is None
    assert RunCounters().trainer_state(0, 0, sampler, 0.0, None, {}, 0, 0, buf).replay_buffer is None
    engine = ScriptedEngine()
    ro = rollout(0, cfg, sampler, PROMPTS, engine, FakeScorer(), BASE_SEED)
    reqs, sp = engine.calls[0]
    assert all(isinstance(r, list) for r in reqs) and sp.seed == rollout_seed(BASE_SEED, 0, 0)
    assert sp.max_tokens == 12 and ro.trajectories is None and ro.generated_tokens is None
    # Whole responses in one call (sample 1 runs to its EOS at 6 tokens), trained whole.
    assert [g.token_ids for g in ro.gens] == [SCRIPT[0], SCRIPT[1]] * 2
    rw = compute_rewards(0, cfg, FakeScorer(), ro)
    learners = FakeLearners()
    ls = update(cfg, learners, PROMPTS, ro, rw)
    assert [(e.trained_from, e.sample_logprob_sum) for e in learners.minibatches[0][0]] == [
        (0, pytest.approx(sum(g.logprobs))) for g in ro.gens]
    m = step_metrics(0, PROMPTS, sampler, ro, rw, ls, dict(ro.times, time_learn_s=0.0), None)
    assert not [k for k in m if k.startswith("partial_")]
    assert m["rollout_tokens_per_s"] == pytest.approx(18 / max(1e-9, ro.times["time_rollout_s"]))


def test_image_prompts_and_a_leftover_buffer_with_partial_off_are_refused():
    with pytest.raises(ValueError, match="rollout.partial.enabled"):
        replay_buffer(make_cfg(), None, True)
    cfg = make_cfg()
    sampler, buf = begin(cfg)
    step(0, cfg, sampler, buf, ScriptedEngine())
    state = RunCounters().trainer_state(0, 0, sampler, 0.0, None, {}, 0, 0, buf)
    with pytest.raises(ValueError, match="rollout.partial.enabled is false"):
        replay_buffer(make_cfg(enabled=False), state, False)


# -- rl/train.py: partial rollouts start; a checkpoint's buffer is never dropped --------------------


class RayStarted(Exception):
    pass


def train_config(tmp_path, partial: bool):
    from experiments.arith import generate
    from experiments.tiny_model import build_tiny_checkpoint
    from prompts.schema import write_jsonl

    write_jsonl(tmp_path / "train.jsonl", generate(seed=0, n_sft=1, n_train=8, n_eval=1)["train"])
    if not (tmp_path / "tiny").exists():
        build_tiny_checkpoint(tmp_path / "tiny", seed=0)
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(f"run_name: r\noutput_dir: {tmp_path / 'runs'}\npolicy: {tmp_path / 'tiny'}\n"
                   f"data: {{train_file: {tmp_path / 'train.jsonl'}}}\n"
                   f"rollout: {{sampling: {{max_tokens: 64}}, partial: {{enabled: {str(partial).lower()}, "
                   "segment_tokens: 16}}\n")
    return cfg


def test_train_py_with_partial_rollouts_goes_on_to_start_its_actors(tmp_path, monkeypatch):
    """The refusal of rollout.partial.enabled is gone: config, data and the (empty) replay buffer are
    set up and the run goes on to Ray (stopped there: no actor is started in a unit test)."""
    import rl.train

    def no_ray(cfg):
        raise RayStarted

    monkeypatch.setattr(rl.train, "connect_ray", no_ray)
    with pytest.raises(RayStarted):
        rl.train.main(["--config", str(train_config(tmp_path, partial=True))])
    assert "enabled: true" in (tmp_path / "runs" / "r" / "config.yaml").read_text()


def test_train_py_refuses_to_resume_a_checkpoint_buffer_with_partial_rollouts_off(tmp_path, monkeypatch):
    """A checkpoint holding unfinished trajectories, resumed with rollout.partial off: an error
    before Ray, not trajectories dropped without a word."""
    import rl.train
    from rl.checkpoint import begin_checkpoint, commit_checkpoint, save_trainer_state

    def no_ray(cfg):
        raise AssertionError("started Ray instead of refusing")

    monkeypatch.setattr(rl.train, "connect_ray", no_ray)
    cfg = make_cfg()
    sampler, buf = begin(cfg)
    step(0, cfg, sampler, buf, ScriptedEngine())
    staging = begin_checkpoint(tmp_path / "runs" / "r", 0)
    (staging / "policy").mkdir()
    save_trainer_state(staging, RunCounters().trainer_state(0, 0, sampler, 1.0, None, {}, 0, 0, buf))
    commit_checkpoint(staging, 2)
    with pytest.raises(ValueError, match="holds 4 trajectories of partial rollouts"):
        rl.train.main(["--config", str(train_config(tmp_path, partial=False)), "--resume"])
