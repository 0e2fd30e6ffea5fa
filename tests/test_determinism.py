"""experiments/determinism.py without engines: its RL config, killing a driver process at an
iteration, and comparing two runs' logs and weights. The runs themselves (minutes, a Ray node):

    pytest tests/test_resume_equals_never_stopping.py -m integration -q -s
    python -m experiments.determinism
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
import torch

from experiments.chaos import read_iterations
from experiments.determinism import (PROMPTS, SAMPLES, RunLogs, compare_iteration, compare_runs, run, tiny_config,
                                     weights_max_abs_diff)
from rl.config import RLConfig
from rl.configio import load_config


def test_tiny_config_is_a_valid_rl_config(tmp_path):
    path = tmp_path / "rl.yaml"
    path.write_text(tiny_config("b", tmp_path / "runs", tmp_path / "tiny", tmp_path / "train.jsonl", "127.0.0.1:6390"))
    cfg = load_config(RLConfig, str(path), [])
    assert (cfg.iterations, cfg.checkpoint_every, cfg.checkpoint_every_minutes, cfg.keep_checkpoints) == (4, 2, 0, 0)
    assert cfg.samples_to_log == PROMPTS * SAMPLES == cfg.prompts_per_iteration * cfg.rollout.sampling.n
    assert cfg.learner.row_tokens == 64 + 64 and cfg.data.eval_file is None  # no eval
    assert cfg.objective.length_penalty_weight > 0 and not cfg.sampler.dynamic_filtering
    assert cfg.ray.address == "127.0.0.1:6390" and cfg.rollout.sampling.seed is None  # seeds: rollout_seed(0, ...)


def test_the_driver_is_killed_once_its_metrics_show_the_iteration_and_its_session_goes_too(tmp_path):
    """A stand-in driver logs an iteration every 0.2 s and has a child in its session (as the
    verifier pool is): killed once row 2 is there, before row 5, and the child is gone too."""
    import psutil

    metrics, child_pid = tmp_path / "metrics.jsonl", tmp_path / "child.pid"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import json, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        open({str(child_pid)!r}, "w").write(str(child.pid))
        with open({str(metrics)!r}, "a") as f:
            for it in range(50):
                f.write(json.dumps({{"iteration": it}}) + "\\n")
                f.flush()
                time.sleep(0.2)
    """))
    d = run([], tmp_path / "driver.log", timeout_s=60, kill_when=lambda: 2 in read_iterations(metrics),
            script=str(script))
    assert d.killed and d.proc.returncode == -9, d.text()
    assert read_iterations(metrics)[:3] == [0, 1, 2] and len(read_iterations(metrics)) < 5
    child = psutil.Process(int(child_pid.read_text()))
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while time.monotonic() < deadline:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:  # dead, not reaped yet by its new parent
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the driver's child {child.pid} outlived it")


def test_a_driver_that_ends_before_the_condition_is_not_killed(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text("raise SystemExit(3)\n")
    d = run([], tmp_path / "driver.log", timeout_s=60, kill_when=lambda: False, script=str(script))
    assert not d.killed and d.proc.returncode == 3


def write_run(run: Path, rows: list[dict], samples: list[dict]) -> Path:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples) + '{"iteration": 0, "torn')
    return run


def row(**kw) -> dict:
    return {"iteration": 0, "sampler_drawn_ids": ["p1", "p2"], "reward_mean": -0.25, "loss": 0.5, "wall_s": 1.0,
            "time_rollout_s": 0.4, **kw}


def sample(**kw) -> dict:
    return {"iteration": 0, "prompt_id": "p1", "response": "12", "length": 2, "finish_reason": "stop",
            "reward": 0.0, "score": 0.0, "length_reward": 0.0, **kw}


def test_two_runs_compared_by_iteration(tmp_path):
    a = RunLogs.read(write_run(tmp_path / "a", [row()], [sample(), sample(response="123", length=3, reward=-0.5)]))
    assert a.iterations == [0] and len(a.samples[0]) == 2  # the torn last line is not a row

    def vs(rows, samples):
        return compare_iteration(a, RunLogs.read(write_run(tmp_path / f"b{len(list(tmp_path.iterdir()))}", rows,
                                                           samples)), 0)

    same = [sample(), sample(response="123", length=3, reward=-0.5)]
    # clock readings differ between any two runs: not a difference
    assert vs([row(wall_s=9.0, time_rollout_s=3.0)], same) == {"draws": True, "generations": True, "rewards": True,
                                                                "metrics": True}
    assert vs([row(sampler_drawn_ids=["p2", "p1"])], same)["draws"] is False
    other = vs([row()], [sample(), sample(response="124", length=3, reward=-0.5)])
    assert other["generations"] is False and other["rewards"] is None  # rewards are asked of the same responses only
    assert vs([row()], [sample(), sample(response="123", length=3, reward=-0.4)])["rewards"] is False
    loss = vs([row(loss=0.6)], same)
    assert loss["metrics"] is False and loss["metrics_differ"] == ["loss"]
    assert compare_runs(a, a, [0, 1]) == {0: vs([row()], same), 1: {"missing": True}}  # a run that never got to 1


def test_weights_max_abs_diff_over_every_tensor(tmp_path):
    from safetensors.torch import save_file

    for name, w in (("a", [[1.0, 2.0]]), ("b", [[1.0, 2.5]])):
        (tmp_path / name).mkdir()
        save_file({"w": torch.tensor(w, dtype=torch.bfloat16), "v": torch.zeros(3)},
                  str(tmp_path / name / "model.safetensors"))
    assert weights_max_abs_diff(tmp_path / "a", tmp_path / "b") == 0.5  # |2.0 - 2.5|, exact in bf16
    assert weights_max_abs_diff(tmp_path / "a", tmp_path / "a") == 0.0
    (tmp_path / "c").mkdir()
    save_file({"w": torch.zeros(1, 2)}, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(ValueError, match="different tensors"):
        weights_max_abs_diff(tmp_path / "a", tmp_path / "c")
