"""Partial rollouts on vs off (issue 15): the paired runs' numbers from their logs.

    python -m experiments.partial_report runs/long-timed runs/long-partial

For each run directory (metrics.jsonl, summary.json of `rl/train.py`): rollout tokens/s over the
whole run (tokens generated / time in rollout), held-out pass@1 against *training* wall time
(the run's wall clock less the time spent in held-out evals, so an arm that evaluates more often
is not charged for it), the final pass@1, and with partial rollouts on, the mean number of
segments per finished trajectory and the share of released tokens that were trained on. Then,
for the first run as the baseline: the on/off ratio of rollout tokens/s and of the training time
each needed to reach the highest held-out pass@1 that both reached.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class RunReport:
    run: str
    iterations: int
    rollout_tokens_per_s: float
    train_wall_s: float
    curve: list[tuple[float, float]]  # (training wall s, held-out pass@1), the start eval first
    final_pass_at_1: float | None
    segments_mean: float | None  # over finished trajectories; None: partial rollouts off
    trained_token_share: float | None

    def time_to(self, threshold: float) -> float | None:
        return next((t for t, p in self.curve if p >= threshold - 1e-12), None)


def read_run(run_dir: Path) -> RunReport:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.jsonl'}: no iterations logged")
    start = summary.get("start_eval") or {}
    eval_s = start.get("wall_s", 0.0)  # the start eval ran after the run's clock started
    curve = [(0.0, start["pass_at_1"])] if "pass_at_1" in start else []
    for r in rows:
        eval_s += r.get("time_eval_s", 0.0)
        if "eval_pass_at_1" in r:
            curve.append((r["wall_s"] - eval_s, r["eval_pass_at_1"]))
    rollout_s = sum(r["time_rollout_s"] for r in rows)
    tokens = sum(r["rollout_tokens_per_s"] * r["time_rollout_s"] for r in rows)
    released = [(r["partial_released_trajectories"], r["partial_segments_mean"]) for r in rows
                if r.get("partial_released_trajectories")]
    shares = [r["partial_trained_token_share"] for r in rows if r.get("partial_released_trajectories")]
    n_released = sum(n for n, _ in released)
    return RunReport(
        run=run_dir.name, iterations=len(rows), rollout_tokens_per_s=tokens / rollout_s if rollout_s else 0.0,
        train_wall_s=rows[-1]["wall_s"] - eval_s, curve=curve, final_pass_at_1=summary.get("final_eval_pass_at_1"),
        segments_mean=sum(n * s for n, s in released) / n_released if n_released else None,
        trained_token_share=sum(shares) / len(shares) if shares else None,
    )


def compare(base: RunReport, other: RunReport) -> dict:
    """`other` against `base`: rollout tokens/s ratio, and the training-time ratio to the highest
    held-out pass@1 both runs reached (from their curves)."""
    threshold = min(max(p for _, p in base.curve), max(p for _, p in other.curve))
    t_base, t_other = base.time_to(threshold), other.time_to(threshold)
    return {
        "rollout_tokens_per_s_ratio": other.rollout_tokens_per_s / base.rollout_tokens_per_s,
        "threshold_pass_at_1": threshold,
        "time_to_threshold_s": {base.run: t_base, other.run: t_other},
        "time_to_threshold_ratio": (t_other / t_base) if t_base else None,
        "final_pass_at_1_diff": (other.final_pass_at_1 - base.final_pass_at_1)
        if other.final_pass_at_1 is not None and base.final_pass_at_1 is not None else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path, help="run directory of the baseline (partial rollouts off)")
    ap.add_argument("other", type=Path, help="run directory to compare (partial rollouts on)")
    args = ap.parse_args(argv)
    base, other = read_run(args.base), read_run(args.other)
    out = {"runs": [asdict(base), asdict(other)], "compare": compare(base, other)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
