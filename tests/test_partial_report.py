"""experiments/partial_report.py on two hand-written runs (numbers worked out in the comments)."""

from __future__ import annotations

import json

import pytest

from experiments.partial_report import compare, read_run


def write_run(path, rows, start_pass, start_eval_s, final):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({
        "start_eval": {"pass_at_1": start_pass, "wall_s": start_eval_s}, "final_eval_pass_at_1": final}))
    return path


def test_training_time_leaves_out_evals_and_the_threshold_is_the_best_both_reached(tmp_path):
    # off: 2 iterations, 100 tokens/s for 10 s then 200 tokens/s for 10 s -> 3000 / 20 = 150 tokens/s.
    # Start eval 5 s; the eval after iteration 1 took 4 s and ends at wall 40 -> training time 40 - 5 - 4 = 31.
    off = write_run(tmp_path / "off", [
        {"wall_s": 20.0, "time_rollout_s": 10.0, "rollout_tokens_per_s": 100.0},
        {"wall_s": 40.0, "time_rollout_s": 10.0, "rollout_tokens_per_s": 200.0, "time_eval_s": 4.0,
         "eval_pass_at_1": 0.40},
    ], start_pass=0.30, start_eval_s=5.0, final=0.40)
    # on: 3 iterations of 300 tokens/s (-> 300). Evals of 2 s after iterations 0 and 2:
    # training time 15 - 5 - 2 = 8 (pass 0.40: already the threshold) and 30 - 5 - 4 = 21 (0.45).
    # Released 4 trajectories of 1 segment, then 2 of 2.5 on average -> (4 * 1 + 2 * 2.5) / 6 = 1.5.
    on = write_run(tmp_path / "on", [
        {"wall_s": 15.0, "time_rollout_s": 5.0, "rollout_tokens_per_s": 300.0, "time_eval_s": 2.0,
         "eval_pass_at_1": 0.40, "partial_released_trajectories": 4, "partial_segments_mean": 1.0,
         "partial_trained_token_share": 1.0},
        {"wall_s": 22.0, "time_rollout_s": 5.0, "rollout_tokens_per_s": 300.0, "partial_released_trajectories": 0},
        {"wall_s": 30.0, "time_rollout_s": 5.0, "rollout_tokens_per_s": 300.0, "time_eval_s": 2.0,
         "eval_pass_at_1": 0.45, "partial_released_trajectories": 2, "partial_segments_mean": 2.5,
         "partial_trained_token_share": 0.5},
    ], start_pass=0.30, start_eval_s=5.0, final=0.45)

    a, b = read_run(off), read_run(on)
    assert a.rollout_tokens_per_s == pytest.approx(150.0) and b.rollout_tokens_per_s == pytest.approx(300.0)
    assert a.curve == [(0.0, 0.30), (31.0, 0.40)] and b.curve == [(0.0, 0.30), (8.0, 0.40), (21.0, 0.45)]
    assert a.train_wall_s == pytest.approx(31.0) and b.train_wall_s == pytest.approx(21.0)
    assert a.segments_mean is None and b.segments_mean == pytest.approx(1.5)
    assert b.trained_token_share == pytest.approx(0.75)  # the mean over the 2 iterations that released groups

    c = compare(a, b)
    assert c["rollout_tokens_per_s_ratio"] == pytest.approx(2.0)
    assert c["threshold_pass_at_1"] == pytest.approx(0.40)  # off never reached 0.45
    assert c["time_to_threshold_s"] == {"off": 31.0, "on": 8.0}
    assert c["time_to_threshold_ratio"] == pytest.approx(8.0 / 31.0)
    assert c["final_pass_at_1_diff"] == pytest.approx(0.05)


def test_a_run_without_iterations_is_an_error_naming_the_file(tmp_path):
    run = write_run(tmp_path / "empty", [], start_pass=0.3, start_eval_s=1.0, final=None)
    with pytest.raises(ValueError, match="metrics.jsonl: no iterations"):
        read_run(run)
