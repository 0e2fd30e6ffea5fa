"""Per-iteration metrics and sample records from one iteration's rollouts (driver-side, no torch
collectives): what goes to metrics.jsonl / TensorBoard / samples.jsonl and the dashboard."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import torch

from prompts.schema import PromptRow
from rl.length_stats import length_summary
from rl.moe_metrics import load_metrics
from rl.rewards.scores import is_correct
from rl.scoring import ScoreResult
from rollout.engine import Generation


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def length_metrics(lengths: list[int], correct: list[bool], groups: list[int]) -> dict[str, float]:
    """Length distribution of one iteration's rollouts (rl.length_stats), named for the dashboard:
    response_len_{p5,p50,p90,p95,max}, response_len_{correct,incorrect}_{p50,p90},
    response_len_correct_cv_within_group."""
    s = length_summary(lengths, correct, groups=groups)
    out = {f"response_len_{k}": s[f"len_{k}"] for k in ("p5", "p50", "p90", "p95", "max")}
    for part in ("correct", "incorrect"):
        out.update({f"response_len_{part}_{q}": s[f"{part}_len_{q}"] for q in ("p50", "p90")})
    out["response_len_correct_cv_within_group"] = s["correct_len_cv_within_group"]
    return out


# Why an iteration made no optimizer step (metrics `skip_reason`; issue 16: these were silent).
SKIP_REASONS = {
    "no_groups": "no prompt group was kept (all filtered or too long)",
    "non_finite": "every optimizer step was skipped for a non-finite loss or reward",
}


def skip_reason(groups_kept: int, learner_stats: list[dict]) -> str | None:
    """A key of SKIP_REASONS when the iteration did not update the policy, else None."""
    if groups_kept == 0:
        return "no_groups"
    if learner_stats and learner_stats[0]["steps"] == 0 and learner_stats[0]["skipped_steps"] > 0:
        return "non_finite"
    return None


def skip_message(iteration: int, metrics: dict[str, Any]) -> str | None:
    """The log line for an iteration that skipped its update or some of its steps, else None."""
    if metrics["skip_reason"] is not None:
        return f"[iter {iteration}] no update: {SKIP_REASONS[metrics['skip_reason']]}"
    if metrics["skipped_steps"]:
        return (f"[iter {iteration}] {metrics['skipped_steps']} of "
                f"{metrics['skipped_steps'] + metrics['optimizer_steps']} optimizer steps skipped: "
                "non-finite loss or reward")
    return None


def iteration_metrics(
    iteration: int, gens: list[Generation], results: list[ScoreResult], rows: list[PromptRow],
    rewards: torch.Tensor, len_reward: torch.Tensor, len_weight: float, learner_stats: list[dict],
    times: dict[str, float], sampler_metrics: dict[str, Any], n_filtered: int, n_too_long: int,
    eval_result: dict | None, groups_kept: int, minibatches: int, generated_tokens: int | None = None,
) -> dict[str, Any]:
    """`generated_tokens`: tokens the engines generated this iteration, for rollout_tokens_per_s
    (partial rollouts: the new segments, not the released responses); None: every token of `gens`."""
    lengths = [len(g.token_ids) for g in gens]
    correct = [is_correct(r.score) for r in results]
    by_diff: dict[str, list[float]] = defaultdict(list)
    for row, r in zip(rows, results):
        by_diff[str(row.difficulty)].append(r.score)
    tot = {k: sum(s.get(k, 0) for s in learner_stats) for k in learner_stats[0]} if learner_stats else {}
    steps = max(1, learner_stats[0]["steps"]) if learner_stats else 1
    gen_tokens = sum(lengths) if generated_tokens is None else generated_tokens
    skipped = skip_reason(groups_kept, learner_stats)
    m: dict[str, Any] = {
        "iteration": iteration,
        "reward_mean": float(rewards.mean()) if len(rewards) else float("nan"),
        "pass_rate": _mean([float(c) for c in correct]),
        "score_mean": _mean([r.score for r in results]),
        "response_len_mean": _mean([float(n) for n in lengths]),
        "response_len_correct_mean": _mean([float(n) for n, c in zip(lengths, correct) if c]),
        "response_len_incorrect_mean": _mean([float(n) for n, c in zip(lengths, correct) if not c]),
        "truncated_frac": _mean([float(g.finish_reason == "length") for g in gens]),
        **length_metrics(lengths, correct, [g.prompt_index for g in gens]),
        "length_reward_mean": float(len_reward.mean()) if len(len_reward) else float("nan"),
        "length_penalty_weight": len_weight,
        "pass_rate_by_difficulty": {k: _mean(v) for k, v in sorted(by_diff.items())},
        "reasons": {k: sum(1 for r in results if r.reason == k) for k in sorted({r.reason for r in results})},
        "loss": tot.get("loss", 0.0) / steps,
        "kl_to_ref": tot.get("kl_k3", 0.0) / max(1, tot.get("sequences", 0)),
        "kl_k1": tot.get("kl_k1", 0.0) / max(1, tot.get("sequences", 0)),
        "entropy": tot.get("entropy_sum", 0.0) / max(1, tot.get("entropy_tokens", 0)),
        "grad_norm": learner_stats[0]["grad_norm"] / steps if learner_stats else float("nan"),
        "optimizer_steps": learner_stats[0]["steps"] if learner_stats else 0,
        "skipped_steps": learner_stats[0]["skipped_steps"] if learner_stats else 0,
        "skipped_update": int(skipped is not None),  # no optimizer step this iteration; why:
        "skip_reason": skipped,
        "groups_kept": groups_kept,
        "minibatches": minibatches,
        "engine_learner_logp_abs_diff": tot.get("engine_ref_abs_diff", 0.0) / max(1, tot.get("engine_ref_seqs", 0)),
        "rollout_tokens_per_s": gen_tokens / max(1e-9, times.get("time_rollout_s", 0.0)),
        "learner_tokens_per_s": tot.get("tokens", 0) / max(1e-9, times.get("time_learn_s", 0.0)),
        "prompts_too_long": n_too_long,
        "sampler_filtered": n_filtered,
        "num_samples": len(gens),
        **load_metrics(tot),  # MoE policies: expert load balance (rl/moe_metrics.py)
        # rank 0's seconds per learner phase (pack, ref, forward, backward, step: rl.learner.timed)
        **{k: v for k, v in (learner_stats[0] if learner_stats else {}).items() if k.startswith("learner_")},
        **times,
        "iteration_s": sum(v for k, v in times.items() if k.startswith("time_")),
        **{k: v for k, v in sampler_metrics.items() if k not in ("sampler_filtered",)},
    }
    if eval_result is not None:
        m["eval_pass_at_1"] = eval_result["pass_at_1"]
        m["eval_pass_at_k"] = eval_result["pass_at_k"]
        m["eval_k"] = eval_result["k"]
        m["eval_pass_at_1_by_difficulty"] = eval_result["by_difficulty"]
    return m


def sample_records(
    iteration: int, gens: list[Generation], results: list[ScoreResult], rows: list[PromptRow],
    rewards: torch.Tensor, len_reward: torch.Tensor, tokenizer, n: int, seed: int,
) -> list[dict[str, Any]]:
    """A few rollouts for the dashboard's browser: half correct, half not, where possible."""
    rng = random.Random(seed * 100003 + iteration)
    good = [j for j, r in enumerate(results) if is_correct(r.score)]
    bad = [j for j, r in enumerate(results) if not is_correct(r.score)]
    picks = rng.sample(good, min(len(good), n // 2)) + rng.sample(bad, min(len(bad), n - min(len(good), n // 2)))
    return [
        {
            "iteration": iteration, "prompt_id": rows[j].id, "difficulty": rows[j].difficulty,
            "prompt": rows[j].question(), "response": gens[j].text, "reward": float(rewards[j]),
            "score": results[j].score, "reason": results[j].reason, "length": len(gens[j].token_ids),
            "length_reward": float(len_reward[j]), "finish_reason": gens[j].finish_reason,
        }
        for j in picks
    ]
