"""RL for reasoning models with Kimi k1.5 online policy mirror descent (arXiv 2501.12599 §2.3).

At iteration i the current policy pi_theta_i is the reference. For each chosen prompt, k
responses are sampled from pi_theta_i (vLLM, temperature 1.0), scored by the verifiers, given the
k1.5 length reward (§2.3.3), and the learner takes a few optimizer steps on

    L = mean_x mean_j ( r_j - b - tau * (log pi_theta(y_j|x) - log pi_theta_i(y_j|x)) )^2

(`rl.mirror_descent`), whose gradient is -2 tau x the paper's Eq. 3. No value network; the
optimizer state is reset every iteration. Image prompts (vision-language policies) go through
the same loop: the engine gets the decoded images, the learner the engine's expanded prompt ids
and the same images (`rl.vision`). Partial rollouts (§2.6.2, `rollout.partial`, text prompts
only) swap the rollout step for `rl.steps.partial_rollout`: a replay buffer (`rl.partial`) carries
unfinished trajectories from one iteration to the next and into the checkpoint, and only groups
whose k samples are all finished are trained on (`objective.partial_segments` picks their trained
tokens). Differences from the paper: the reference log-probs are recomputed by the learner (exact)
unless `objective.ref_logprobs: engine`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python rl/train.py --config experiments/configs/rl_demo.yaml

Top to bottom: config -> Ray -> prompts, sampler, verifier -> vLLM engine actors and learner
ranks -> loop: sample prompts -> rollout -> verify -> length reward -> update -> weight sync ->
eval / checkpoint / metrics. Each step before the sync is a function of `rl.steps` returning a typed
record (`Rollouts`, `Rewards`, `LearnerStats`); the metrics row is built from those records.

An engine whose actor or EngineCore dies is replaced in-run with the current weights and its lost
requests are generated again (`rollout.recovery.EngineGroup`, counted as `engine_restarts`);
`rollout.max_engine_restarts` failures in a row of one engine end the run, naming the checkpoint
to resume from. A learner rank that dies takes its group down: every rank is started again from
the latest complete checkpoint (the initial policy before the first one), the logs are cut back
to it and the driver's state restored as --resume does, the engines get the restored weights, and
the iterations since the checkpoint are redone (`rl.learner_group`; `learner_restarts` and
`redone` in the metrics); `learner.max_restarts` restarts in a row end the run, naming the rank
and the checkpoint to resume from.

However the run ends (done, an exception, Ctrl-C, SIGTERM from `ray job stop` or `kill`),
`stop_run` stops the engines (each EngineCore included), the learner ranks and the verifier pool
in a bounded time. `ray job stop` SIGKILLs the driver 3 s after its SIGTERM unless
RAY_JOB_STOP_WAIT_TIME_S allows more; about 15 s leaves room for all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python rl/train.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from prompts.schema import load_prompt_rows
from rl.checkpoint import (ResumePoint, TrainerState, begin_checkpoint, checkpoint_due, commit_checkpoint,
                           latest_checkpoint, prepare_run_dir, restore_driver, save_trainer_state)
from rl.config import RLConfig
from rl.configio import dump_config, load_config
from rl.evaluate import evaluate
from rl.learner import Learner
from rl.learner_group import Iterations, LearnerDied, LearnerGroup, restart_message
from rl.metrics import RUN_LOGS, RunLogger
from rl.modeling import load_tokenizer
from rl.ray_loopback import connect_or_start
from rl.rollout_stats import sample_records, skip_message
from rl.partial import ReplayBuffer
from rl.sampling import PromptSampler, build_sampler
from rl.scoring import Scorer
from rl.steps import (Prompts, RunCounters, compute_rewards, learner_record, replay_buffer, rollout_step, step_metrics,
                      update)
from rl.vision import load_vision
from rollout.engine import make_rollout_actor
from rollout.recovery import EngineGroup, close_engines


def resolve_paths(cfg: RLConfig, base_dir: str | None) -> RLConfig:
    if base_dir is None:
        return cfg

    def r(p: str | None) -> str | None:
        return p if p is None or Path(p).is_absolute() else str(Path(base_dir) / p)

    data = cfg.data.model_copy(update={"train_file": r(cfg.data.train_file), "eval_file": r(cfg.data.eval_file)})
    return cfg.model_copy(update={"policy": r(cfg.policy), "output_dir": r(cfg.output_dir), "data": data})


def connect_ray(cfg: RLConfig) -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS is set then), a configured one, or
    start a local one bound to 127.0.0.1."""
    connect_or_start(cfg.ray.address or os.environ.get("RAY_ADDRESS"), cfg.ray.num_cpus)


def start_learners(cfg: RLConfig, policy: str, ranks: list | None = None) -> list:
    """The learner rank actors, set up from `policy`. They go into `ranks` (in place) before they
    are waited on, so that a teardown or a learner restart holding that list finds them."""
    lc = cfg.learner
    actor = ray.remote(num_cpus=lc.actor_num_cpus, num_gpus=lc.actor_num_gpus)(Learner)
    ranks = [] if ranks is None else ranks
    ranks[:] = [actor.remote(lc.threads) for _ in range(lc.num_ranks)]
    single_node = len([n for n in ray.nodes() if n["Alive"]]) == 1
    master = ray.get(ranks[0].address.remote(single_node), timeout=120)
    ray.get([r.setup.remote(policy, lc.deepspeed.model_dump(), i, lc.num_ranks, master,
                            lc.tokens_per_microbatch, lc.row_tokens, cfg.seed, lc.freeze_vision_tower,
                            lc.short_row_tokens)
             for i, r in enumerate(ranks)], timeout=lc.timeout_s)
    return ranks


@dataclass
class RunActors:
    """What a run starts outside the driver's own code, registered as it starts, for `stop_run`."""

    engines: list = field(default_factory=list)
    learners: list = field(default_factory=list)
    scorer: Scorer | None = None


ENGINE_CLOSE_TIMEOUT_S = 10.0  # each engine waits 5 s for its EngineCore, then kills it


def stop_run(run: RunActors, timeout_s: float = ENGINE_CLOSE_TIMEOUT_S) -> None:
    """Stop everything the run started, within about `timeout_s`. Each engine actor first shuts
    its vLLM engine down (`VLLMEngine.close`): killing the actor alone can leave its EngineCore
    running. An engine still busy with a rollout, or dead, is killed when the wait runs out."""
    if run.scorer is not None:
        run.scorer.close()  # local verifier workers, independent of Ray
    try:
        close_engines(run.engines, timeout_s)
    finally:
        for actor in run.learners:
            ray.kill(actor)


def save_checkpoint(run_dir: Path, learners: LearnerGroup, state: TrainerState, cfg: RLConfig) -> None:
    """Every rank writes into a staging directory, the trainer state goes in last, and only then
    is it renamed and marked as the latest (rl/checkpoint.py): a crash mid-save leaves the previous
    checkpoint as the one --resume (or a learner restart) uses."""
    t = time.perf_counter()
    staging = begin_checkpoint(run_dir, state.iteration)
    learners.run(lambda rank, actor: actor.save.remote(str(staging)))
    save_trainer_state(staging, state)
    ck, removed = commit_checkpoint(staging, cfg.keep_checkpoints)
    gone = f", removed {', '.join(p.name for p in removed)}" if removed else ""
    print(f"[iter {state.iteration}] checkpoint {ck} in {time.perf_counter() - t:.1f}s{gone}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    ap.add_argument("--base-dir", default=None,
                    help="resolve relative paths of the config against this directory (a submitted job "
                         "runs in an uploaded copy of the working dir, so outputs must go elsewhere)")
    return ap.parse_args(argv)


def start_actors(cfg: RLConfig, run: RunActors, run_dir: Path, policy: str, ckpt: Path | None,
                 start_iter: int) -> tuple[EngineGroup, LearnerGroup]:
    """The engines and the learner ranks (restored from `ckpt` when there is one), registered in
    `run` as they start, with the engines holding the learner's weights."""
    rc = cfg.rollout
    engine_cfg = rc.engine.model_copy(update={"model": policy, "seed": cfg.seed})
    sync_dtype = "float32" if rc.engine.dtype == "auto" else rc.engine.dtype  # auto: the engine casts
    zero3 = cfg.learner.deepspeed.zero_stage == 3

    def export_weights():
        """The learner's current policy as weight buckets (rank 0's ref) and the other ranks' refs:
        ZeRO-3 shards the weights, so every rank takes part in gathering them."""
        ranks = learners.ranks if zero3 else learners.ranks[:1]
        exports = [lr.export_weights.remote(dtype=sync_dtype) for lr in ranks]
        return exports[0], exports[1:]

    def resume_hint() -> str | None:
        ck = latest_checkpoint(run_dir)
        return None if ck is None else str(ck)

    engines = EngineGroup(make_rollout_actor(rc.actor_num_cpus, rc.actor_num_gpus),
                          [engine_cfg.model_copy(update={"seed": cfg.seed + i}) for i in range(rc.num_engines)],
                          rc.timeout_s, max_restarts=rc.max_engine_restarts, export_weights=export_weights,
                          resume_hint=resume_hint)
    run.engines = engines.start()  # the group's list: replacements are stopped too
    # A rank that dies takes the group down; it is started again from the latest checkpoint.
    learners = LearnerGroup(lambda ranks, pol: start_learners(cfg, pol, ranks), cfg.learner.timeout_s,
                            max_restarts=cfg.learner.max_restarts, resume_hint=resume_hint)
    run.learners = learners.ranks  # the group's list, as for the engines
    learners.start(policy, ckpt, iteration=start_iter)
    engines.ready()
    if ckpt is not None:
        # The checkpoint's policy/ is bf16 on disk (rl.modeling.save_hf): an engine in another dtype
        # gets the learner's weights as an uninterrupted run's engine had them, by the sync.
        engines.sync_weights()
    return engines, learners


def load_data(cfg: RLConfig) -> tuple[PromptSampler, Prompts, list, Any, Any, str]:
    """The training prompts' sampler and their encoding for the policy, the eval rows, the tokenizer,
    the image I/O (None: a text-only policy) and "image" or "text"; all checked before any actor starts."""
    px = cfg.data.max_image_pixels
    rows = load_prompt_rows(cfg.data.train_file, max_image_pixels=px)
    eval_rows = load_prompt_rows(cfg.data.eval_file, max_image_pixels=px)[: cfg.eval.num_prompts] if cfg.data.eval_file else []
    sampler = build_sampler(cfg.sampler, rows, seed=cfg.seed)
    tokenizer = load_tokenizer(cfg.policy)
    vision = load_vision(cfg.policy)
    modality = "image" if any(r.has_images() for r in rows) else "text"
    if modality == "image" and vision is None:
        raise ValueError(f"{cfg.data.train_file} has image prompts but policy {cfg.policy} is text-only")
    return sampler, Prompts.encode(rows, tokenizer, vision), eval_rows, tokenizer, vision, modality


def open_run_dir(cfg: RLConfig, run_dir: Path, resume: bool,
                 image_prompts: bool) -> tuple[ResumePoint, ReplayBuffer | None, RunLogger]:
    """A new run refuses a used run directory; `resume` cuts its logs back to the latest checkpoint.
    The resume point, the partial rollouts' replay buffer (None: off) and the run's logger."""
    point = prepare_run_dir(run_dir, resume)
    buf = replay_buffer(cfg, point.state, image_prompts)
    if resume:
        print(point.describe(), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    return point, buf, RunLogger(run_dir, cfg.tensorboard, append=resume,
                                 purge_step=point.start_iteration if resume else None)


def sync_weights(engines: EngineGroup, learners: LearnerGroup) -> float:
    """Step 6, timed in seconds: learner rank 0 -> object store -> every engine (bucketed, in place), in
    the engine's dtype (bf16-rounded weights in an fp32 engine would be a different policy)."""
    t = time.perf_counter()
    with learners.guard():  # a rank that dies while exporting is a learner death
        engines.sync_weights()
    return time.perf_counter() - t


def out_of_time(budget_s: float | None, elapsed_s: float, iteration_s: float, last_eval: dict | None) -> bool:
    """Whether another iteration (and its eval, as long as the last one) would overrun the budget."""
    eval_s = (last_eval or {}).get("wall_s", 0.0)
    return budget_s is not None and elapsed_s + iteration_s + eval_s > budget_s


def restart_learners(death: LearnerDied, it: int, cfg: RLConfig, run_dir: Path, learners: LearnerGroup,
                     engines: EngineGroup, sampler: PromptSampler, counters: RunCounters,
                     initial: TrainerState) -> ResumePoint:
    """Back to the latest complete checkpoint (`initial` before the first) as --resume would go, in this
    process: logs cut, learner ranks restarted (their weights to the engines), sampler, RNG, counters restored."""
    back = prepare_run_dir(run_dir, resume=True, initial=initial)
    learners.restart(death, it, back.policy(cfg.policy), back.checkpoint, then=engines.sync_weights)
    restore_driver(back.state, sampler)
    redo = range(back.start_iteration, it + 1)
    counters.rewound(back.state, it, redo)
    print(restart_message(death, it, back.checkpoint, cfg.policy, redo), flush=True)
    for line in back.log_changes():
        print(line, flush=True)
    return back


def held_out_eval(cfg: RLConfig, generate, tokenizer, eval_rows: list, scorer: Scorer, vision,
                  iteration: int) -> dict:
    """The held-out eval (pass@1, pass@k) of the engines' current policy, printed and as a dict."""
    ec = cfg.eval
    res = evaluate(generate, tokenizer, eval_rows, scorer, samples=ec.samples, temperature=ec.temperature,
                   max_tokens=ec.max_tokens, seed=ec.seed, max_model_len=cfg.rollout.engine.max_model_len,
                   vision=vision)
    print(f"[eval @ {iteration}] pass@1 {res.pass_at_1:.3f}  pass@{res.k} {res.pass_at_k:.3f}  n={res.n}")
    return res.to_dict()


def print_iteration(it: int, metrics: dict, times: dict[str, float]) -> None:
    """The iteration's line on stdout, and why its update was skipped if it was."""
    print(f"[iter {it}] reward {metrics['reward_mean']:.3f} pass {metrics['pass_rate']:.3f} "
          f"len {metrics['response_len_mean']:.0f} kl {metrics['kl_to_ref']:.4f} "
          f"({metrics['iteration_s']:.1f}s: rollout {times['time_rollout_s']:.1f} learn {times['time_learn_s']:.1f})",
          flush=True)
    if (skipped := skip_message(it, metrics)) is not None:
        print(skipped, flush=True)


def write_summary(run_dir: Path, modality: str, iterations: int, wall_s: float, start_eval: dict | None,
                  last_eval: dict | None) -> dict:
    """summary.json: the run's length and its first and last held-out eval."""
    summary = {
        "modality": modality,
        "iterations": iterations,
        "wall_s": wall_s,
        "start_eval_pass_at_1": (start_eval or {}).get("pass_at_1"),
        "final_eval_pass_at_1": (last_eval or {}).get("pass_at_1"),
        "start_eval": start_eval,
        "final_eval": last_eval,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done: pass@1 {summary['start_eval_pass_at_1']} -> {summary['final_eval_pass_at_1']} "
          f"in {summary['wall_s']:.0f}s ({summary['iterations']} iterations)")
    return summary


def main(argv: list[str] | None = None) -> dict:
    """The run (`train`), then `stop_run`, however the run ends."""
    run = RunActors()
    try:
        return train(argv, run)
    finally:
        stop_run(run)


def train(argv: list[str] | None, run: RunActors) -> dict:
    args = parse_args(argv)

    # -- config, data, sampler (all validated before any actor starts) ---------------------
    cfg = resolve_paths(load_config(RLConfig, args.config, args.set), args.base_dir)
    run_dir = Path(cfg.output_dir) / cfg.run_name
    sampler, prompts, eval_rows, tokenizer, vision, modality = load_data(cfg)

    resume, buf, logger = open_run_dir(cfg, run_dir, args.resume, modality == "image")
    ckpt, state, start_iter = resume.checkpoint, resume.state, resume.start_iteration

    # -- actors: engines, learner ranks, verifier pool -------------------------------------
    connect_ray(cfg)
    engines, learners = start_actors(cfg, run, run_dir, resume.policy(cfg.policy), ckpt, start_iter)
    scorer = run.scorer = Scorer(cfg.reward)
    generate = engines.generate  # an engine that dies is replaced and its requests generated again
    run_eval = partial(held_out_eval, cfg, generate, tokenizer, eval_rows, scorer, vision)

    t_start = time.perf_counter() - (state.wall_s if state else 0.0)
    start_eval = last_eval = (state.start_eval if state else None) or (run_eval(start_iter) if eval_rows else None)
    counters = RunCounters.from_state(state)
    restore_driver(state, sampler)  # sampler and driver RNG as the checkpoint left them
    # What a learner restart before the first checkpoint goes back to: the run as it is now.
    initial = counters.trainer_state(-1, cfg.seed, sampler, time.perf_counter() - t_start, start_eval,
                                     {name: 0 for name in RUN_LOGS}, 0, 0, buf)
    last_ckpt_t = time.perf_counter()
    # Each rollout call's seed comes from (seed, iteration, call): what the engines sample does not
    # depend on when their processes started (rl.checkpoint.rollout_seed).
    rollout_base_seed = cfg.seed if cfg.rollout.sampling.seed is None else cfg.rollout.sampling.seed

    # -- the loop ------------------------------------------------------------------------------
    iterations = Iterations(start_iter, cfg.iterations)  # a learner restart sends it back to a checkpoint
    it = start_iter
    for it in iterations:
        try:
            t_iter = time.perf_counter()
            restarts_at_start = engines.restarts

            ro = rollout_step(it, cfg, sampler, prompts, generate, scorer, rollout_base_seed, buf, tokenizer)  # 1-3
            rw = compute_rewards(it, cfg, scorer, ro)  # 4. verifier score + weighted k1.5 length reward
            ls = update(cfg, learners, prompts, ro, rw, learner_record(run_dir, cfg, it))  # 5. -> learner ranks
            times = ro.times
            times["time_learn_s"] = ls.time_learn_s
            times["time_sync_s"] = times["weight_sync_s"] = sync_weights(engines, learners)  # 6. -> engines

            # 7. eval, checkpoint, metrics
            time_up = out_of_time(cfg.time_budget_s, time.perf_counter() - t_start, time.perf_counter() - t_iter,
                                  last_eval)
            is_last = it == cfg.iterations - 1 or time_up
            eval_now = None
            if eval_rows and (is_last or (cfg.eval.every and (it + 1) % cfg.eval.every == 0)):
                t = time.perf_counter()
                eval_now = last_eval = run_eval(it + 1)
                times["time_eval_s"] = time.perf_counter() - t
            metrics = step_metrics(it, prompts, sampler, ro, rw, ls, times, eval_now)
            counters.stamp(metrics, it, engines.restarts, restarts_at_start, learners.restarts)
            metrics["wall_s"] = time.perf_counter() - t_start
            logger.log(metrics)
            logger.samples(sample_records(it, ro.gens, ro.results, ro.rows(prompts), rw.rewards, rw.len_reward,
                                          tokenizer, cfg.samples_to_log, cfg.seed))
            print_iteration(it, metrics, times)
            if checkpoint_due(it, is_last, cfg.checkpoint_every, cfg.checkpoint_every_minutes,
                              time.perf_counter() - last_ckpt_t):
                save_checkpoint(run_dir, learners, counters.trainer_state(
                    it, cfg.seed, sampler, time.perf_counter() - t_start, start_eval, dict(logger.rows),
                    engines.restarts, learners.restarts, buf), cfg)
                last_ckpt_t = time.perf_counter()
            learners.finished(it)
        except LearnerDied as death:
            logger.close()  # the logs are cut back to the checkpoint, then reopened
            back = restart_learners(death, it, cfg, run_dir, learners, engines, sampler, counters, initial)
            buf = replay_buffer(cfg, back.state, modality == "image")
            t_start, last_eval = time.perf_counter() - back.state.wall_s, start_eval
            logger = RunLogger(run_dir, cfg.tensorboard, append=True, purge_step=back.start_iteration)
            last_ckpt_t = time.perf_counter()
            iterations.rewind(back.start_iteration)
            continue
        if time_up:
            print(f"time budget of {cfg.time_budget_s:.0f}s reached after iteration {it}")
            break

    summary = write_summary(run_dir, modality, it + 1, time.perf_counter() - t_start, start_eval, last_eval)
    logger.close()
    return summary


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (`ray job stop`, `kill`) leaves through main's teardown, as Ctrl-C does. `ray.init`
    installs a handler of its own that also raises SystemExit; this one covers the time before."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main()
