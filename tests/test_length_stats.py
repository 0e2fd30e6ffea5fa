"""rl.length_stats, the plain progress line, `base:` config overlays and long-CoT row planning:
hand-worked values."""

from __future__ import annotations

import io
import math

import pytest

from rl.configio import ConfigError, load_config
from rl.config import RLConfig
from rl.length_stats import length_summary, percentile, within_group_cv
from rl.metrics import ProgressLine
from rl.packing import Sample, pack_by_budget, plan_rows


def test_percentile_interpolates_linearly():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 90) == 10
    assert percentile([0, 10], 95) == pytest.approx(9.5)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_length_summary_by_hand():
    # prompt 0: correct 100, 300 (cv = 100/200 = 0.5); prompt 1: correct 50, 50, wrong 1000 (cv 0)
    lengths = [100, 300, 50, 50, 1000]
    correct = [True, True, True, True, False]
    truncated = [False, False, False, False, True]
    s = length_summary(lengths, correct, truncated, groups=[0, 0, 1, 1, 1])
    assert s["len_mean"] == 300 and s["len_max"] == 1000 and s["len_p50"] == 100
    assert s["correct_len_mean"] == 125 and s["correct_len_p50"] == 75
    assert s["incorrect_len_mean"] == 1000
    assert s["truncated_frac"] == 0.2
    assert s["correct_len_cv_within_group"] == pytest.approx(0.25)
    assert s["len_p95_over_p50"] == pytest.approx(percentile(lengths, 95) / 100)
    assert math.isnan(within_group_cv([5, 6], [True, False], [0, 0]))  # no group with 2 correct
    with pytest.raises(ValueError):
        length_summary([1, 2], [True])


def test_progress_line_prints_every_interval_and_at_the_end():
    t = [0.0]
    out = io.StringIO()
    p = ProgressLine("SFT", total=10, every_s=30, clock=lambda: t[0], out=out)
    t[0] = 10.0
    assert p.update(0, loss=1.5) is None
    t[0] = 31.0
    line = p.update(1, loss=1.25, tok_per_s=900)
    assert line == "SFT step 2/10  loss 1.25  tok per s 900  ETA 2m04s"  # 31 s / 2 steps x 8 left
    t[0] = 32.0
    assert p.update(9, loss=1.0).startswith("SFT step 10/10")  # the last step always prints
    assert out.getvalue().count("\n") == 2


def test_config_base_overlay(tmp_path):
    (tmp_path / "a.yaml").write_text("run_name: a\npolicy: p\ndata: {train_file: t.jsonl}\n"
                                     "objective: {tau: 0.2, length_penalty_weight: 0.0}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrun_name: b\nobjective: {length_penalty_weight: 1.0}\n")
    cfg = load_config(RLConfig, tmp_path / "b.yaml")
    assert (cfg.run_name, cfg.policy, cfg.objective.tau, cfg.objective.length_penalty_weight) == ("b", "p", 0.2, 1.0)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(RLConfig, tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found \\(the 'base' of"):
        load_config(RLConfig, tmp_path / "e.yaml")


def test_shipped_long_configs_load():
    off = load_config(RLConfig, "experiments/configs/rl_long.yaml")
    on = load_config(RLConfig, "experiments/configs/rl_long_lenpen.yaml")
    assert off.objective.length_penalty_weight == 0.0 and on.objective.length_penalty_weight == 1.0
    assert on.model_dump(exclude={"run_name", "objective"}) == off.model_dump(exclude={"run_name", "objective"})


def test_plan_rows_gives_long_samples_rows_of_their_own():
    lengths = [3000, 200, 900, 300, 250, 100]
    rows = plan_rows(lengths, row_tokens=3072, short_row_tokens=640)
    assert rows[:2] == [[0], [2]]  # longest first, one each
    assert sorted(i for r in rows[2:] for i in r) == [1, 3, 4, 5]
    assert all(sum(lengths[i] for i in r) <= 640 for r in rows[2:])
    assert plan_rows(lengths, 3072) == plan_rows(lengths, 3072, None)  # default: unchanged
    samples = [Sample(list(range(n)), [True] * n, i) for i, n in enumerate(lengths)]
    mbs = pack_by_budget(samples, 8192, 3072, short_row_tokens=640)
    # each long sample alone, unpadded (SDPA's causal path); the short ones share one micro-batch
    assert [tuple(mb.input_ids.shape) for mb in mbs] == [(1, 3000), (1, 900), (2, 550)]
    assert sorted(i for mb in mbs for i in mb.indices) == list(range(6))
