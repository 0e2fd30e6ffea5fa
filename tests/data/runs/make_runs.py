"""Regenerates the recorded-run fixtures the dashboard tests read.

    python tests/data/runs/make_runs.py          # rewrites tests/data/runs/arith-*/

Until `rl/train.py` has produced a real run, these stand in for one: two short runs on the
embedded arithmetic task (difficulty = integer level 1..7, see experiments/arith.py), one with
the k1.5 length penalty switched on after a warm-up and one without. The curves follow the
shape of a real run (pass rate rising faster on easy levels, length falling once the penalty
is on, eval only every few iterations, noisy loss) so the dashboard is exercised on realistic
data rather than constants. Everything is drawn from a seeded `random.Random`, so the output
is byte-identical on every machine and Python version.

Deliberate quirks, each checked by a test:
  * eval keys appear only on eval iterations (the contract says any key may be missing);
  * `arith-lenpen` carries keys the dashboard does not know (`lr`, `ray`, `tau`);
  * one response contains `</script>` and an `<img onerror>`: model text must be escaped;
  * only `arith-lenpen` has `summary.json` / `sft_eval.json` (both are optional).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
LEVELS = list(range(1, 8))  # experiments.arith: level = digits + (operands - 2) + minus sign
BATCH_PROMPTS = 64
EVAL_EVERY = 3  # eval on iterations 1, 4, 7, 10
EVAL_K = 8


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def level_pass_rate(level: int, progress: float) -> float:
    """True pass rate of the policy on a level after `progress` (0..1) of training."""
    return sigmoid(3.2 - 0.85 * level + 2.4 * progress)


def expression(rng: random.Random, level: int) -> tuple[str, int]:
    """A problem of roughly this level in the style of experiments.arith."""
    operands = 3 if level >= 4 and rng.random() < 0.5 else 2
    minus = level >= 2 and rng.random() < 0.5
    digits = max(1, min(5, level - (operands - 2) - int(minus)))
    nums = [rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)]
    ops: list[str] = []
    for i in range(operands - 1):
        op = "-" if minus and i == 0 else "+"
        x = rng.randint(0, nums[0] if op == "-" else 10**digits - 1)
        ops.append(op)
        nums.append(x)
    text, value = str(nums[0]), nums[0]
    for op, x in zip(ops, nums[1:]):
        text += f"{op}{x}"
        value = value + x if op == "+" else value - x
    return text, value


def response_text(rng: random.Random, expr: str, value: int, correct: bool) -> tuple[str, str, int]:
    """(response, verifier reason, length in tokens) of one sampled rollout."""
    got = value if correct else value + rng.choice([-10, -1, 1, 9, 100])
    steps = [f"Plan: evaluate {expr} left to right, column by column."]
    steps += [f"Step {i + 1}: carry {rng.randint(0, 1)} into column {i + 2}." for i in range(rng.randint(2, 5))]
    if rng.random() < 0.3:
        steps.append("Wait, I dropped a carry in the tens column. Fix: recompute that column.")
    steps.append(f"Check by the inverse operation: {got} looks consistent.")
    body = "<think>\n" + "\n".join(steps) + "\n</think>\n"
    if not correct and rng.random() < 0.25:
        return body + f"So the result is {got}.", "no \\boxed{} answer found", rng.randint(380, 520)
    reason = "correct" if correct else f"wrong answer: got {got}, expected {value}"
    return body + f"The answer is \\boxed{{{got}}}.", reason, rng.randint(120, 260) + (0 if correct else 90)


def make_run(name: str, seed: int, iterations: int, lenpen: bool) -> None:
    rng = random.Random(seed)
    out = HERE / name
    out.mkdir(parents=True, exist_ok=True)
    metrics, samples = [], []
    wall = 0.0
    first_eval = last_eval = None
    for it in range(1, iterations + 1):
        progress = it / 10
        # The curriculum sampler drifts toward harder levels as easy ones saturate.
        weights = [math.exp(-((lvl - (2.5 + 2.5 * progress)) ** 2) / 4.0) for lvl in LEVELS]
        hist = {str(lvl): 0 for lvl in LEVELS}
        for lvl in rng.choices(LEVELS, weights=weights, k=BATCH_PROMPTS):
            hist[str(lvl)] += 1
        by_level = {
            str(lvl): round(min(1.0, max(0.0, level_pass_rate(lvl, progress) + rng.gauss(0, 0.05))), 4)
            for lvl in LEVELS
            if hist[str(lvl)] > 0
        }
        pass_rate = sum(by_level[k] * n for k, n in hist.items() if n) / BATCH_PROMPTS
        weight = (0.0 if it < 4 else min(1.0, (it - 3) / 3)) if lenpen else 0.0
        length_reward = -0.06 + 0.05 * progress + rng.gauss(0, 0.01)
        len_correct = (310 - (90 if lenpen else -40) * progress) * (1 + rng.gauss(0, 0.03))
        len_wrong = len_correct * (1.45 + rng.gauss(0, 0.05))
        t_rollout = 38.0 + rng.gauss(0, 2.5) - (6 * progress if lenpen else -4 * progress)
        t_verify, t_learn, t_sync = 1.2 + rng.random() * 0.4, 24.0 + rng.gauss(0, 1.5), 2.8 + rng.random()
        row = {
            "iteration": it,
            "reward_mean": round(pass_rate + weight * length_reward, 4),
            "pass_rate": round(pass_rate, 4),
            "pass_rate_by_difficulty": by_level,
            "response_len_mean": round(pass_rate * len_correct + (1 - pass_rate) * len_wrong, 1),
            "response_len_correct_mean": round(len_correct, 1),
            "response_len_incorrect_mean": round(len_wrong, 1),
            "length_reward_mean": round(length_reward, 4),
            "length_penalty_weight": round(weight, 4),
            "kl_to_ref": round(abs(0.004 + 0.006 * progress + rng.gauss(0, 0.002)), 5),
            "entropy": round(0.62 - 0.15 * progress + rng.gauss(0, 0.01), 4),
            "loss": round(0.04 * math.exp(-progress) + rng.gauss(0, 0.015), 5),
            "grad_norm": round(abs(0.55 + rng.gauss(0, 0.15)), 4),
            "rollout_tokens_per_s": round(9200 + rng.gauss(0, 350), 1),
            "learner_tokens_per_s": round(24500 + rng.gauss(0, 900), 1),
            "weight_sync_s": round(t_sync - 0.3, 3),
            "time_rollout_s": round(t_rollout, 3),
            "time_verify_s": round(t_verify, 3),
            "time_learn_s": round(t_learn, 3),
            "time_sync_s": round(t_sync, 3),
            "sampler_difficulty_hist": hist,
            "sampler_prior_pass_rate": round(0.5 - 0.12 * progress + rng.gauss(0, 0.02), 4),
            "sampler_filtered": rng.randint(3, 9) + int(8 * progress),
        }
        if (it - 1) % EVAL_EVERY == 0:
            ev = {str(lvl): round(min(1.0, max(0.0, level_pass_rate(lvl, progress - 0.05) + rng.gauss(0, 0.03))), 4) for lvl in LEVELS}
            p1 = sum(ev.values()) / len(ev)
            row.update(
                eval_pass_at_1=round(p1, 4),
                eval_pass_at_k=round(1 - (1 - p1) ** 2.2, 4),
                eval_k=EVAL_K,
                eval_pass_at_1_by_difficulty=ev,
                time_eval_s=round(11.5 + rng.gauss(0, 0.8), 3),
            )
            first_eval = first_eval if first_eval is not None else row["eval_pass_at_1"]
            last_eval = row["eval_pass_at_1"]
        wall += sum(v for k, v in row.items() if k.startswith("time_"))
        row["wall_s"] = round(wall, 2)
        if lenpen:  # keys outside the contract: the dashboard must ignore them, not choke
            row.update(lr=1e-6, tau=0.1, ray={"actor_restarts": 0, "rollout_workers": 2})
        metrics.append(row)

        for j in range(4):
            lvl = rng.choice([k for k, n in hist.items() if n])
            expr, value = expression(rng, int(lvl))
            correct = rng.random() < by_level[lvl]
            text, reason, length = response_text(rng, expr, value, correct)
            if lenpen and it == iterations and j == 1:
                # Model text is untrusted: this must show up verbatim, never run.
                text = "<think>\nI'll answer in HTML: </script><script>window.__xss=1</script>" \
                       "<img src=x onerror=\"window.__xss=2\">\n</think>\nThe answer is \\boxed{0}."
                correct, reason, length = False, f"wrong answer: got 0, expected {value}", 77
            len_reward = round(rng.uniform(-0.5, 0.5) if correct else min(0.0, rng.uniform(-0.5, 0.5)), 4)
            samples.append({
                "iteration": it,
                "prompt_id": f"arith-{int(lvl)}-{rng.randint(0, 4999):04d}",
                "difficulty": int(lvl),
                "prompt": f"Compute {expr}",
                "response": text,
                "reward": round(float(correct) + weight * len_reward, 4),
                "score": float(correct),
                "reason": reason,
                "length": length,
                "length_reward": len_reward,
            })

    with (out / "metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in metrics)
    with (out / "samples.jsonl").open("w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    if lenpen:
        (out / "sft_eval.json").write_text(json.dumps(
            {"eval_pass_at_1": first_eval, "eval_pass_at_k": round(1 - (1 - first_eval) ** 2.2, 4),
             "eval_k": EVAL_K, "n_prompts": 280}, indent=2) + "\n")
        (out / "summary.json").write_text(json.dumps(
            {"iterations": iterations, "wall_s": metrics[-1]["wall_s"], "eval_pass_at_1_start": first_eval,
             "eval_pass_at_1_final": last_eval, "checkpoint": "checkpoints/arith-lenpen/iter_10"}, indent=2) + "\n")


if __name__ == "__main__":
    make_run("arith-lenpen", seed=1, iterations=10, lenpen=True)
    make_run("arith-nolenpen", seed=2, iterations=9, lenpen=False)
