"""Checkpoints and resume at the file level (issue 16), on tiny hand-made run directories: which
checkpoint counts as complete, keep-last-N, the save cadence, cutting the logs back to a
checkpoint so that no iteration is logged twice, refusing to reuse a run directory, RNG states.

    pytest tests/test_resume.py -q
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import rl.train
from experiments.arith import generate
from experiments.tiny_model import build_tiny_checkpoint
from prompts.schema import write_jsonl
from rl.checkpoint import (MARKER, STATE_FILE, ResumePoint, RunExistsError, TrainerState,
                           begin_checkpoint, checkpoint_due, commit_checkpoint, latest_checkpoint, load_trainer_state,
                           prepare_run_dir, rng_state, rollout_seed, rows_through_iteration, save_trainer_state,
                           set_rng_state, truncate_jsonl)
from rl.config import RLConfig
from rl.configio import load_config
from rl.metrics import RunLogger
from rollout.engine import SEED_SPACE

REPO = Path(__file__).resolve().parent.parent


def state(iteration: int, log_rows: dict[str, int] | None = None) -> TrainerState:
    return TrainerState(iteration=iteration, seed=0, sampler={"format": "fake"}, wall_s=1.0 + iteration,
                        log_rows=log_rows)


def fake_checkpoint(run: Path, iteration: int, keep: int = 2, log_rows=None) -> Path:
    """What rl/train.py's save does, with a stand-in for the learner's files."""
    staging = begin_checkpoint(run, iteration)
    (staging / "policy").mkdir()
    (staging / "policy" / "model.bin").write_text(f"weights {iteration}")
    save_trainer_state(staging, state(iteration, log_rows))
    ck, _ = commit_checkpoint(staging, keep)
    return ck


def names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def write_rows(path: Path, iterations: list[int], tail: str = "") -> None:
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in iterations) + tail)


def iterations(path: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


# -- which checkpoint is complete --------------------------------------------------------------


def test_latest_checkpoint_ignores_staging_and_unmarked_directories(tmp_path):
    ck = fake_checkpoint(tmp_path, 1)
    root = tmp_path / "checkpoints"
    # A save killed before its rename: a staging dir, even one that got as far as its state file.
    (root / "iter_00002.tmp").mkdir()
    (root / "iter_00002.tmp" / STATE_FILE).write_text("{}")
    # A save killed between its rename and the marker (or a leftover): complete-looking, unmarked.
    (root / "iter_00003" / "policy").mkdir(parents=True)
    (root / "iter_00003" / STATE_FILE).write_text(json.dumps({"iteration": 3}))
    assert (root / MARKER).read_text() == "iter_00001\n"
    assert latest_checkpoint(tmp_path) == ck == root / "iter_00001"


def test_latest_checkpoint_without_a_marker_takes_the_newest_with_a_state_file(tmp_path):
    """Runs from before the marker: trainer_state.json was written last, so it marks completeness."""
    root = tmp_path / "checkpoints"
    save_trainer_state(root / "iter_00000", state(0))
    (root / "iter_00001" / "policy").mkdir(parents=True)  # killed mid-save: no state file
    assert latest_checkpoint(tmp_path) == root / "iter_00000"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_marker_naming_a_missing_checkpoint_is_an_error(tmp_path):
    fake_checkpoint(tmp_path, 0)
    (tmp_path / "checkpoints" / MARKER).write_text("iter_00007\n")
    with pytest.raises(FileNotFoundError, match="iter_00007"):
        latest_checkpoint(tmp_path)


def test_commit_refuses_a_staging_dir_without_its_state_file(tmp_path):
    staging = begin_checkpoint(tmp_path, 0)
    with pytest.raises(ValueError, match=STATE_FILE):
        commit_checkpoint(staging, 2)
    assert latest_checkpoint(tmp_path) is None


# -- keep the last N ---------------------------------------------------------------------------


def test_keep_last_two_deletes_the_oldest(tmp_path):
    for it in range(4):
        fake_checkpoint(tmp_path, it, keep=2)
    assert names(tmp_path) == ["iter_00002", "iter_00003", MARKER]
    assert latest_checkpoint(tmp_path).name == "iter_00003"


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    for it in range(3):
        fake_checkpoint(tmp_path, it, keep=0)
    assert names(tmp_path) == ["iter_00000", "iter_00001", "iter_00002", MARKER]


def test_a_crashed_save_is_cleared_by_the_next_and_never_counts(tmp_path):
    fake_checkpoint(tmp_path, 0)
    crashed = begin_checkpoint(tmp_path, 1)
    (crashed / "policy").mkdir()  # the learner died here
    assert latest_checkpoint(tmp_path).name == "iter_00000"
    fake_checkpoint(tmp_path, 1)
    assert names(tmp_path) == ["iter_00000", "iter_00001", MARKER]


def test_after_a_resume_newer_checkpoints_are_replaced_and_the_marked_one_is_kept(tmp_path):
    """Resumed from iter 1 (the marker), iters 2-3 of the abandoned timeline still on disk: saving
    the redone iter 2 replaces the old one and drops iter 3; with keep=1 the new one is all left."""
    for it in range(2):
        fake_checkpoint(tmp_path, it)
    root = tmp_path / "checkpoints"
    for it in (2, 3):  # unmarked leftovers (a crash between rename and marker, then older ones)
        save_trainer_state(root / f"iter_0000{it}", state(it))
        (root / f"iter_0000{it}" / "old").write_text("abandoned")
    fake_checkpoint(tmp_path, 2, keep=2)
    assert names(tmp_path) == ["iter_00001", "iter_00002", MARKER]
    assert not (root / "iter_00002" / "old").exists()
    assert (root / "iter_00002" / "policy" / "model.bin").read_text() == "weights 2"
    fake_checkpoint(tmp_path, 3, keep=1)
    assert names(tmp_path) == ["iter_00003", MARKER]


# -- cadence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("iteration, is_last, every, minutes, since_s, due", [
    (4, False, 5, 0, 0.0, True),       # iterations 0..4 done: the 5th
    (3, False, 5, 0, 0.0, False),
    (3, True, 0, 0, 0.0, True),        # the last iteration always
    (3, False, 0, 5, 299.0, False),    # 5 minutes = 300 s
    (3, False, 0, 5, 300.0, True),
    (3, False, 5, 5, 300.0, True),     # either cadence
    (3, False, 0, 0, 1e9, False),      # both off
])
def test_checkpoint_due(iteration, is_last, every, minutes, since_s, due):
    assert checkpoint_due(iteration, is_last, every, minutes, since_s) is due


def test_every_demo_rl_config_checkpoints_at_least_twice_before_its_end():
    """The demos used to checkpoint only at the end (a crash at minute 18 of 19 lost everything)."""
    configs = sorted((REPO / "experiments" / "configs").glob("rl_*.yaml"))
    assert len(configs) >= 6
    for f in configs:
        cfg = load_config(RLConfig, str(f), [])
        by_iterations = 0 < cfg.checkpoint_every <= cfg.iterations / 3
        by_minutes = 0 < cfg.checkpoint_every_minutes * 60 <= (cfg.time_budget_s or 0) / 3
        assert by_iterations or by_minutes, f
        assert cfg.keep_checkpoints >= 1, f


# -- the logs are cut back to the checkpoint ---------------------------------------------------


def test_truncate_jsonl_keeps_the_first_rows_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [0, 1, 2, 3, 4], tail='{"iteration": 5, "rew')
    assert truncate_jsonl(path, 3) == (3, 3)  # rows 3 and 4, and the torn one
    assert iterations(path) == [0, 1, 2]
    assert truncate_jsonl(path, 3) == (3, 0)  # nothing to cut
    assert truncate_jsonl(path, 5) == (3, 0)  # fewer rows than asked: keep them all
    assert truncate_jsonl(tmp_path / "absent.jsonl", 2) == (0, 0)


def test_resume_leaves_every_iteration_exactly_once(tmp_path):
    """The issue's measurement: checkpoint at iteration 1, killed in iteration 4's logging; the old
    resume appended 2, 3 again after 0-3. Now the logs are cut to 0-1 and the run logs 2.. once."""
    run = tmp_path
    write_rows(run / "metrics.jsonl", [0, 1, 2, 3], tail='{"iteration": 4, "reward_me')
    write_rows(run / "samples.jsonl", [0, 0, 1, 1, 2, 2, 3, 3])  # two sample rows per iteration
    fake_checkpoint(run, 1, log_rows={"metrics.jsonl": 2, "samples.jsonl": 4})
    point = prepare_run_dir(run, resume=True)
    assert point.checkpoint == run / "checkpoints" / "iter_00001" and point.start_iteration == 2
    assert point.dropped_rows == {"metrics.jsonl": 3, "samples.jsonl": 4}
    assert point.log_rows == {"metrics.jsonl": 2, "samples.jsonl": 4} and point.missing_rows == {}
    assert iterations(run / "metrics.jsonl") == [0, 1]
    assert iterations(run / "samples.jsonl") == [0, 0, 1, 1]

    logger = RunLogger(run, tensorboard=False, append=True)
    assert logger.rows == {"metrics.jsonl": 2, "samples.jsonl": 4}
    for it in range(2, 5):
        logger.log({"iteration": it})
        logger.samples([{"iteration": it}, {"iteration": it}])
    logger.close()
    assert iterations(run / "metrics.jsonl") == [0, 1, 2, 3, 4]
    assert logger.rows == {"metrics.jsonl": 5, "samples.jsonl": 10}
    assert "resuming from" in point.describe() and "dropped 3 from metrics.jsonl and 4 from samples.jsonl" \
        in point.describe()


def test_resume_from_a_checkpoint_without_offsets_cuts_by_iteration(tmp_path):
    write_rows(tmp_path / "metrics.jsonl", [0, 1, 2, 3, 2, 3])  # the duplicated log of the issue
    write_rows(tmp_path / "samples.jsonl", [0, 1, 1, 2])
    save_trainer_state(tmp_path / "checkpoints" / "iter_00001", state(1, log_rows=None))  # old layout
    assert rows_through_iteration(tmp_path / "metrics.jsonl", 1) == 2
    point = prepare_run_dir(tmp_path, resume=True)
    assert point.dropped_rows == {"metrics.jsonl": 4, "samples.jsonl": 1}
    assert iterations(tmp_path / "metrics.jsonl") == [0, 1]
    assert iterations(tmp_path / "samples.jsonl") == [0, 1, 1]


def test_resume_without_a_checkpoint_starts_over_with_empty_logs(tmp_path):
    write_rows(tmp_path / "metrics.jsonl", [0, 1])
    point = prepare_run_dir(tmp_path, resume=True)
    assert point.checkpoint is None and point.start_iteration == 0
    assert point.dropped_rows == {"metrics.jsonl": 2, "samples.jsonl": 0}
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert point.describe().startswith("--resume: no complete checkpoint yet")


def test_rows_the_checkpoint_counted_but_the_log_lacks_are_reported(tmp_path):
    write_rows(tmp_path / "metrics.jsonl", [0])
    fake_checkpoint(tmp_path, 1, log_rows={"metrics.jsonl": 2, "samples.jsonl": 0})
    point = prepare_run_dir(tmp_path, resume=True)
    assert point.missing_rows == {"metrics.jsonl": 1}
    assert "metrics.jsonl has 1 rows fewer" in point.describe()


# -- a new run refuses a used run directory -----------------------------------------------------


def test_a_new_run_refuses_a_directory_with_metrics(tmp_path):
    write_rows(tmp_path / "metrics.jsonl", [0])
    with pytest.raises(RunExistsError) as e:
        prepare_run_dir(tmp_path, resume=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "--resume" in msg and "run_name" in msg and "metrics.jsonl" in msg
    assert iterations(tmp_path / "metrics.jsonl") == [0]  # untouched


def test_a_new_run_refuses_a_directory_with_checkpoints(tmp_path):
    fake_checkpoint(tmp_path, 0)
    with pytest.raises(RunExistsError, match="checkpoints/"):
        prepare_run_dir(tmp_path, resume=False)


def test_a_new_run_accepts_a_fresh_or_empty_directory(tmp_path):
    assert prepare_run_dir(tmp_path / "new", resume=False) == ResumePoint()
    (tmp_path / "metrics.jsonl").write_text("")  # a run that died before its first iteration
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert prepare_run_dir(tmp_path, resume=False).checkpoint is None


def test_train_py_refuses_a_used_run_directory_before_starting_anything(tmp_path, monkeypatch):
    """rl/train.py without --resume in a directory with metrics: a clear error, the metrics intact
    (it used to reopen metrics.jsonl with "w"), and no Ray (connect_ray would fail this test)."""
    write_jsonl(tmp_path / "train.jsonl", generate(seed=0, n_sft=1, n_train=4, n_eval=1)["train"])
    build_tiny_checkpoint(tmp_path / "tiny", seed=0)
    (tmp_path / "rl.yaml").write_text(f"run_name: r\noutput_dir: {tmp_path / 'runs'}\npolicy: {tmp_path / 'tiny'}\n"
                                      f"data: {{train_file: {tmp_path / 'train.jsonl'}}}\n")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    write_rows(run / "metrics.jsonl", [0, 1])

    def no_ray(cfg):
        raise AssertionError("started Ray instead of refusing")

    monkeypatch.setattr(rl.train, "connect_ray", no_ray)
    with pytest.raises(RunExistsError, match="pass --resume"):
        rl.train.main(["--config", str(tmp_path / "rl.yaml")])
    assert iterations(run / "metrics.jsonl") == [0, 1]
    assert not (run / "config.yaml").exists()


# -- state and RNG -----------------------------------------------------------------------------


def test_trainer_state_round_trips_and_reads_the_old_format(tmp_path):
    s = TrainerState(3, 7, {"format": "x"}, 12.5, {"pass_at_1": 0.5}, {"metrics.jsonl": 4}, {"python": 1}, 2)
    save_trainer_state(tmp_path, s)
    assert load_trainer_state(tmp_path) == s
    old = {"iteration": 3, "sampler": {}, "seed": 0, "wall_s": 1.0, "start_eval": None}
    (tmp_path / STATE_FILE).write_text(json.dumps(old))
    assert load_trainer_state(tmp_path) == TrainerState(3, 0, {}, 1.0, None, None, None, 0)


def test_rng_state_restores_python_numpy_and_torch_draws():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    saved = json.loads(json.dumps(rng_state()))  # as it goes through trainer_state.json
    first = (random.random(), float(np.random.standard_normal()), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(saved)
    assert (random.random(), float(np.random.standard_normal()), torch.rand(3).tolist()) == first


def test_rollout_seeds_are_the_same_in_every_process_and_differ_by_seed_iteration_and_call():
    """A hash (blake2b), not Python's salted hash(): a resumed process must derive what the first
    one did. The pinned value is what the first process of any run with seed 0 uses at iteration 0."""
    import subprocess
    import sys

    here = rollout_seed(0, 0, 0)
    code = "from rl.checkpoint import rollout_seed; print(rollout_seed(0, 0, 0))"
    there = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert here == int(there) == 1477512230
    seeds = {rollout_seed(s, it, call) for s in (0, 1) for it in range(50) for call in (0, 1)}
    assert len(seeds) == 200
    assert all(0 <= x and x + 2**24 < 2**31 for x in seeds) and SEED_SPACE + 2**24 == 2**31

