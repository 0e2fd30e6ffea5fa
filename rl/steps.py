"""The steps of one RL iteration (rl/train.py's loop), each a function returning a typed record:
`rollout` (choose prompts -> generate -> verify -> filter) -> `Rollouts`, or `partial_rollout`
with k1.5 partial rollouts (rl.partial: continue the replay buffer's trajectories, fill up with
fresh prompts, release complete groups) -> `Rollouts`; `compute_rewards`
(verifier score + k1.5 length reward) -> `Rewards`; `update` (episodes -> mini-batches -> learner
ranks) -> `LearnerStats`; `step_metrics` builds the iteration's metrics row from the three, and
`RunCounters` keeps the running counts across iterations, processes and learner restarts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from prompts.images import row_images
from prompts.schema import PromptRow
from rl.checkpoint import TrainerState, rng_state, rollout_seed
from rl.config import RLConfig
from rl.learner import Episode, LearnerCall, plan_minibatches, shard_groups
from rl.learner_group import LearnerGroup
from rl.mirror_descent import first_trained_token, length_penalty, length_penalty_weight, trained_token_share
from rl.partial import PartialSettings, ReplayBuffer, Trajectory, released_metrics, restore_buffer
from rl.rollout_stats import iteration_metrics
from rl.sampling import PromptSampler
from rl.scoring import Scorer, ScoreResult
from rollout.engine import Generation, GenRequest, by_request, encode_request


@dataclass
class Prompts:
    """The training prompts, encoded once: ids with one placeholder per image (`ids`) and the
    engine-side lengths with the placeholders expanded (`engine_len`)."""

    rows: dict[str, PromptRow]
    ids: dict[str, list[int]]
    engine_len: dict[str, int]

    @classmethod
    def encode(cls, rows: list[PromptRow], tokenizer, vision) -> Prompts:
        prompts = cls({r.id: r for r in rows}, {}, {})
        for r in rows:
            req, prompts.engine_len[r.id] = encode_request(tokenizer, r, vision)
            prompts.ids[r.id] = req if isinstance(req, list) else req.prompt_token_ids
        return prompts

    def request(self, pid: str) -> GenRequest | list[int]:
        """Images are decoded when a prompt is drawn, not held for the whole set."""
        row = self.rows[pid]
        return GenRequest(self.ids[pid], row_images(row)) if row.has_images() else self.ids[pid]


@dataclass
class Rollouts:
    """One iteration's rollout, verify and filter. `Generation.prompt_index` indexes `chosen`."""

    chosen: list[str]  # prompt ids generated for, both rounds
    gens: list[Generation]
    results: list[ScoreResult]  # one per generation
    images: list[list]  # per chosen prompt
    n_too_long: int  # drawn prompts skipped for exceeding data.max_prompt_tokens
    kept_ids: list[tuple[str, list[float]]]  # the groups the sampler kept, with their scores
    n_filtered: int  # groups dropped by dynamic filtering
    drawn: list[str]  # the sampler's draws, in order (replacements, too-long ones too)
    times: dict[str, float]
    by_prompt: dict[int, list[int]] = field(default_factory=dict)  # prompt index -> generation indices
    # Partial rollouts (`partial_rollout`; None / empty when off): each generation's trajectory, the
    # tokens generated in this iteration (its new segments) and the partial_* metrics
    trajectories: list[Trajectory] | None = None
    generated_tokens: int | None = None
    partial_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for j, g in enumerate(self.gens):
            self.by_prompt.setdefault(g.prompt_index, []).append(j)

    @property
    def kept(self) -> set[str]:
        return {pid for pid, _ in self.kept_ids}

    def rows(self, prompts: Prompts) -> list[PromptRow]:
        """The prompt row of each generation."""
        return [prompts.rows[self.chosen[g.prompt_index]] for g in self.gens]


@dataclass
class Verified:
    """Step 3's outcome for a set of groups: each generation's score, and the groups the sampler keeps."""

    results: list[ScoreResult]
    kept_ids: list  # the sampler's (prompt id, scores) of the kept groups
    n_filtered: int  # groups dynamic filtering dropped
    seconds: float  # verification wall time


def verify_groups(it: int, sampler: PromptSampler, scorer: Scorer, prompts: Prompts, ids: list[str],
                  gens: list[Generation]) -> Verified:
    """Verify `gens` in one batch (`g.prompt_index` indexes `ids`), give the sampler each group's
    scores, and let it filter the groups (dynamic filtering)."""
    t = time.perf_counter()
    results = scorer.score_detailed([prompts.rows[ids[g.prompt_index]] for g in gens], [g.text for g in gens],
                                    [g.finish_reason for g in gens])
    seconds = time.perf_counter() - t
    per_group: list[list[float]] = [[] for _ in ids]
    for g, r in zip(gens, results):
        per_group[g.prompt_index].append(r.score)
    scored = list(zip(ids, per_group))
    sampler.update(it, scored)
    kept_ids, n_filtered = sampler.filter_groups(scored)
    return Verified(results, kept_ids, n_filtered, seconds)


def rollout(it: int, cfg: RLConfig, sampler: PromptSampler, prompts: Prompts, generate: Callable,
            scorer: Scorer, base_seed: int) -> Rollouts:
    """Steps 1-3: choose prompts -> rollout (k samples each from pi_theta_i) -> verify (batched,
    every item under a deadline). With dynamic filtering, groups whose k samples were all right or
    all wrong carry no advantage; they are dropped and replaced once by fresh prompts."""
    rc = cfg.rollout
    chosen, gens, results, images, n_too_long = [], [], [], [], 0
    want, kept_ids, n_filtered, drawn = cfg.prompts_per_iteration, [], 0, []
    times: dict[str, float] = {}
    for call in range(2 if getattr(cfg.sampler, "dynamic_filtering", False) else 1):
        ids = sampler.sample(want, it, exclude=chosen)
        drawn += ids
        too_long = [i for i in ids if prompts.engine_len[i] > cfg.data.max_prompt_tokens]
        ids = [i for i in ids if i not in too_long]
        n_too_long += len(too_long)
        t = time.perf_counter()
        requests = [prompts.request(i) for i in ids]
        seed = rollout_seed(base_seed, it, call) if rc.seeded else None
        new_gens = generate(requests, rc.sampling.model_copy(update={"seed": seed}))
        times["time_rollout_s"] = times.get("time_rollout_s", 0.0) + time.perf_counter() - t
        v = verify_groups(it, sampler, scorer, prompts, ids, new_gens)
        times["time_verify_s"] = times.get("time_verify_s", 0.0) + v.seconds
        for g in new_gens:
            g.prompt_index += len(chosen)  # index into the iteration's `chosen`
        chosen, gens, results = chosen + ids, gens + new_gens, results + v.results
        images += [getattr(q, "images", []) for q in requests]
        kept_ids += v.kept_ids
        n_filtered += v.n_filtered
        want = v.n_filtered
        if not want:
            break
    return Rollouts(chosen, gens, results, images, n_too_long, kept_ids, n_filtered, drawn, times)


def replay_buffer(cfg: RLConfig, state: TrainerState | None, image_prompts: bool) -> ReplayBuffer | None:
    """The replay buffer of partial rollouts a run starts with, or goes back to after a learner
    restart: `state`'s (a checkpoint's), else an empty one; None while rollout.partial is off."""
    settings = PartialSettings.from_config(cfg)
    if settings is not None and image_prompts:
        # A continuation would have to carry the images again and the learner the engine's expanded
        # ids of the whole sequence; not wired (issue 15 covers the long-CoT text task).
        raise ValueError("rollout.partial.enabled: partial rollouts take text prompts only, and "
                         f"{cfg.data.train_file} has image prompts; turn rollout.partial.enabled off")
    return restore_buffer(None if state is None else state.replay_buffer, settings)


def rollout_step(it: int, cfg: RLConfig, sampler: PromptSampler, prompts: Prompts, generate: Callable,
                 scorer: Scorer, base_seed: int, buf: ReplayBuffer | None, tokenizer) -> Rollouts:
    """Steps 1-3: `rollout`, or `partial_rollout` when partial rollouts are on (`buf` is not None)."""
    if buf is None:
        return rollout(it, cfg, sampler, prompts, generate, scorer, base_seed)
    return partial_rollout(it, cfg, sampler, prompts, generate, scorer, base_seed, buf, tokenizer)


def partial_rollout(it: int, cfg: RLConfig, sampler: PromptSampler, prompts: Prompts, generate: Callable,
                    scorer: Scorer, base_seed: int, buf: ReplayBuffer, tokenizer) -> Rollouts:
    """Steps 1-3 with k1.5 partial rollouts (arXiv 2501.12599 §2.6.2; `rl.partial.buffer` has the
    bookkeeping): every running trajectory of `buf` is continued by at most segment_tokens under the
    current weights, fresh prompts (k samples each) fill the batch's other slots, all in one engine
    call; then the groups whose k samples are all final leave the buffer and are verified. Only those
    are trained on, so an iteration may release none. Dynamic filtering drops released groups
    without drawing replacements: a replacement could not finish in this iteration anyway."""
    rc = cfg.rollout
    times: dict[str, float] = {}
    in_flight = buf.prompts_in_flight()  # a prompt is in one group at a time
    # Groups in flight can outnumber prompts_per_iteration (each holds at least one running
    # sample), so a prompt set smaller than prompts_per_iteration x k may have fewer left to draw.
    n_new = min(buf.fresh_prompts(cfg.prompts_per_iteration * rc.sampling.n), len(prompts.rows) - len(in_flight))
    drawn = sampler.sample(n_new, it, exclude=in_flight)
    fresh = [(i, prompts.ids[i]) for i in drawn if prompts.engine_len[i] <= cfg.data.max_prompt_tokens]
    requests = buf.next_requests(fresh)  # the running trajectories first, then the fresh prompts
    t = time.perf_counter()
    seed = rollout_seed(base_seed, it, 0) if rc.seeded else None
    new_gens = generate([GenRequest(r.prompt_ids, n=r.n, max_tokens=r.max_tokens) for r in requests],
                        rc.sampling.model_copy(update={"seed": seed}))
    times["time_rollout_s"] = time.perf_counter() - t
    buf.record(requests, by_request(new_gens, len(requests)), it)
    groups = buf.pop_complete()

    chosen = [g[0].prompt_id for g in groups]
    trajs = [tr for g in groups for tr in g]
    # One segment: the engine's text, as with partial rollouts off. Several: the whole response
    # decoded at once (the segments' texts were detokenized apart, which can split a character).
    gens = [Generation(gi, list(tr.response_ids), list(tr.logprobs), tr.finish_reason,
                       tr.text if tr.num_segments == 1 else tokenizer.decode(tr.response_ids, skip_special_tokens=True))
            for gi, g in enumerate(groups) for tr in g]
    v = verify_groups(it, sampler, scorer, prompts, chosen, gens)
    times["time_verify_s"] = v.seconds
    results, kept_ids, n_filtered = v.results, v.kept_ids, v.n_filtered
    kept = {pid for pid, _ in kept_ids}
    trained = [tr.segment_ends for tr in trajs if tr.prompt_id in kept]
    partial_metrics = {
        **buf.metrics(), **released_metrics(groups, it),
        "partial_continued": float(len(requests) - len(fresh)),  # trajectories given a further segment
        "partial_new_groups": float(len(fresh)),
        "partial_trained_token_share": trained_token_share(trained, cfg.objective.partial_segments),
    }
    return Rollouts(chosen, gens, results, [[] for _ in chosen], len(drawn) - len(fresh), kept_ids, n_filtered,
                    drawn, times, trajectories=trajs, generated_tokens=sum(len(g.token_ids) for g in new_gens),
                    partial_metrics=partial_metrics)


@dataclass
class Rewards:
    """Step 4's per-generation rewards: verifier reward + `len_weight` x the k1.5 length reward."""

    rewards: torch.Tensor  # [n_gens]
    len_reward: torch.Tensor  # [n_gens]
    len_weight: float


def compute_rewards(it: int, cfg: RLConfig, scorer: Scorer, ro: Rollouts) -> Rewards:
    """Verifier score + weighted k1.5 length reward (per prompt group, arXiv 2501.12599 §2.3.3).
    Partial rollouts: lengths are whole responses (every segment), and a trajectory stopped for
    repeating loses rollout.partial.repeat_penalty on top of its truncation reward. No generation
    (a partial-rollout iteration that released no group): empty rewards."""
    len_w = length_penalty_weight(it, cfg.objective.length_penalty_weight, cfg.objective.length_penalty_warmup)
    if not ro.gens:
        return Rewards(torch.zeros(0), torch.zeros(0), len_w)
    lengths = torch.tensor([len(g.token_ids) for g in ro.gens], dtype=torch.float32)
    correct = torch.tensor([r.score for r in ro.results], dtype=torch.float32)
    group_ids = torch.tensor([g.prompt_index for g in ro.gens])
    len_reward = length_penalty(lengths, correct, group_ids)
    rewards = torch.tensor(scorer.rewards(ro.results), dtype=torch.float32) + len_w * len_reward
    if ro.trajectories is not None and cfg.rollout.partial.repeat_penalty:
        stopped = torch.tensor([float(t.repeat_stop) for t in ro.trajectories])
        rewards = rewards - cfg.rollout.partial.repeat_penalty * stopped
    return Rewards(rewards, len_reward, len_w)


@dataclass
class LearnerStats:
    """Step 5's outcome: each rank's `train_iteration` stats, and how the groups were split."""

    per_rank: list[dict]
    groups_kept: int
    minibatches: int
    time_learn_s: float


def trained_part(ro: Rollouts, j: int, mode: str) -> tuple[float, int]:
    """(sample_logprob_sum, trained_from) of generation j: the engine's log-prob sum over the response
    tokens in the loss, and where they start. Partial rollouts with objective.partial_segments
    "exclude": the last segment only (rl.mirror_descent.segments), so with objective.ref_logprobs
    "engine" the reference is the log-probs of the weights that sampled those tokens."""
    g = ro.gens[j]
    if ro.trajectories is None:
        return float(sum(g.logprobs)), 0
    start = first_trained_token(ro.trajectories[j].segment_ends, mode)
    return float(sum(g.logprobs[start:])), start


def update(cfg: RLConfig, learners: LearnerGroup, prompts: Prompts, ro: Rollouts, rw: Rewards,
           record: Path | None = None) -> LearnerStats:
    """Whole kept groups, split into mini-batches, each shared out over the learner ranks. With
    `record` (learner.record_iterations), the learner call is also written there."""
    kept = ro.kept
    groups = [p for p in ro.by_prompt if ro.chosen[p] in kept]
    episodes: dict[int, Episode] = {}
    for j, g in enumerate(ro.gens):
        if ro.chosen[g.prompt_index] in kept:
            lp_sum, trained_from = trained_part(ro, j, cfg.objective.partial_segments)
            # Image prompts: the engine's expanded prompt ids and the same decoded images.
            episodes[j] = Episode(g.prompt_index, g.prompt_token_ids or prompts.ids[ro.chosen[g.prompt_index]],
                                  g.token_ids, float(rw.rewards[j]), lp_sum, ro.images[g.prompt_index], trained_from)
    t = time.perf_counter()
    n_ranks = len(learners)
    # Fewer mini-batches when groups are few; ranks without a group in one pad with zero gradients.
    minibatches = plan_minibatches(groups, n_ranks, cfg.learner.minibatches_per_iteration)
    obj = cfg.objective
    call = LearnerCall(shard_groups(minibatches, {p: [episodes[j] for j in ro.by_prompt[p]] for p in groups}, n_ranks),
                       [len(g) for g in minibatches], obj.tau, obj.baseline, obj.ref_logprobs == "engine",
                       cfg.learner.reset_optimizer_each_iteration)
    if record is not None:
        call.save(record)
    stats = learners.run(lambda r, lr: lr.train_iteration.remote(*call.args(r)))
    return LearnerStats(stats, len(groups), len(minibatches), time.perf_counter() - t)


def learner_record(run_dir: Path, cfg: RLConfig, it: int) -> Path | None:
    """Where iteration `it`'s learner call is recorded (learner.record_iterations), or None."""
    return run_dir / "learner_batches" / f"iter_{it:05d}.json" if it < cfg.learner.record_iterations else None


def step_metrics(it: int, prompts: Prompts, sampler: PromptSampler, ro: Rollouts, rw: Rewards,
                 ls: LearnerStats, times: dict[str, float], eval_now: dict | None) -> dict[str, Any]:
    """The iteration's metrics row, from the steps' records."""
    metrics = iteration_metrics(
        it, ro.gens, ro.results, ro.rows(prompts), rw.rewards, rw.len_reward, rw.len_weight, ls.per_rank, times,
        sampler.metrics([pid for pid, _ in ro.kept_ids]), ro.n_filtered, ro.n_too_long, eval_now,
        groups_kept=ls.groups_kept, minibatches=ls.minibatches, generated_tokens=ro.generated_tokens,
    )
    metrics["sampler_drawn_ids"] = ro.drawn
    metrics.update(ro.partial_metrics)  # partial rollouts only: the buffer, the released groups
    return metrics


@dataclass
class RunCounters:
    """The running counts a metrics row and a checkpoint carry. `*_before`: counted before this
    process (from the checkpoint resumed). Learner restarts and redone iterations keep counting
    through a learner restart (events that happened); `skipped_updates` goes back with the run."""

    skipped_updates: int = 0
    engine_restarts_before: int = 0
    learner_restarts_before: int = 0
    redone_before: int = 0
    redone: int = 0  # iterations redone after learner restarts in this process
    redone_until: int = -1  # the last iteration being redone
    logged_learner_restarts: int = 0  # the total as of the last metrics row

    @classmethod
    def from_state(cls, state: TrainerState | None) -> RunCounters:
        if state is None:
            return cls()
        return cls(state.skipped_updates, state.engine_restarts, state.learner_restarts, state.redone_iterations,
                   logged_learner_restarts=state.learner_restarts)

    def stamp(self, metrics: dict[str, Any], it: int, engine_restarts: int, engine_restarts_at_start: int,
              learner_restarts: int) -> None:
        """Add the counters to iteration `it`'s row; the group counts are those of this process."""
        self.skipped_updates += metrics["skipped_update"]
        metrics["skipped_updates_total"] = self.skipped_updates
        metrics["engine_restarts"] = engine_restarts - engine_restarts_at_start  # engines replaced in this iteration
        metrics["engine_restarts_total"] = self.engine_restarts_before + engine_restarts
        # learner group restarts since the previous row, and whether this row replaces cut ones
        metrics["learner_restarts_total"] = self.learner_restarts_before + learner_restarts
        metrics["learner_restarts"] = metrics["learner_restarts_total"] - self.logged_learner_restarts
        self.logged_learner_restarts = metrics["learner_restarts_total"]
        metrics["redone"] = it <= self.redone_until
        metrics["redone_iterations_total"] = self.redone_before + self.redone

    def trainer_state(self, it: int, seed: int, sampler: PromptSampler, wall_s: float, start_eval: dict | None,
                      log_rows: dict[str, int], engine_restarts: int, learner_restarts: int,
                      buf: ReplayBuffer | None = None) -> TrainerState:
        """`buf`: the replay buffer of partial rollouts (None: off) after this iteration's groups were
        trained on, so a resume continues every trajectory held and trains none twice."""
        return TrainerState(it, seed, sampler.state_dict(), wall_s, start_eval, log_rows, rng_state(),
                            self.skipped_updates, self.engine_restarts_before + engine_restarts,
                            learner_restarts=self.learner_restarts_before + learner_restarts,
                            redone_iterations=self.redone_before + self.redone,
                            replay_buffer=None if buf is None else buf.state_dict())

    def rewound(self, back: TrainerState, it: int, redo: range) -> None:
        """After a learner restart at iteration `it` back to checkpoint `back`, redoing `redo`."""
        self.skipped_updates = back.skipped_updates
        self.logged_learner_restarts = back.learner_restarts
        self.redone, self.redone_until = self.redone + len(redo), max(self.redone_until, it)
