"""experiments/chaos.py without a cluster: finding each target among process records, reading the
run's metrics and logs, and the verdict. The chaos runs themselves (minutes each, a real Ray head):

    python experiments/chaos.py --target engine-core --at-iteration 2
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.chaos import (CHAOS_OVERRIDES, Proc, check_iterations, count_kinds, drivers, job_outcome, kind_of,
                               last_value, learner_restart_lines, passed, pick_target, planned_iterations,
                               read_iterations, redone_rows, resume_dropped_rows, train_args, verifier_workers)
from rl.checkpoint import ResumePoint, TrainerState
from rl.learner_group import LearnerDied, restart_message

PY = "/work/.venv/bin/python"
TRAIN = "rl/train.py --config /x/rl_demo.yaml --base-dir /w --set iterations=6"
FORKSERVER = (f"{PY} -c from multiprocessing.forkserver import main; main(8, 9, ['rl.rewards.registry'], "
              "**{'main_path': '/tmp/ray/session/runtime_resources/working_dir_files/x/rl/train.py'})")

# A head's process tree during a run: raylet, job supervisor, the driver (under a shell) with its
# verifier pool (forkserver, two workers, resource tracker), an engine actor with its EngineCore,
# two learner ranks.
TREE = [
    Proc(100, 1, 0.0, "ray start --head --block"),
    Proc(101, 100, 0.0, "/work/.venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node=x"),
    Proc(110, 101, 0.0, "ray::JobSupervisor"),
    Proc(111, 110, 0.0, f"/bin/sh -c python {TRAIN}"),
    Proc(112, 111, 0.0, f"python {TRAIN}"),
    Proc(113, 112, 0.0, FORKSERVER),
    Proc(114, 113, 0.0, FORKSERVER),
    Proc(115, 113, 0.0, FORKSERVER),
    Proc(116, 112, 0.0, f"{PY} -c from multiprocessing.resource_tracker import main;main(12)"),
    Proc(120, 101, 0.0, "ray::VLLMEngine.generate"),
    Proc(121, 120, 0.0, "VLLM::EngineCore"),
    Proc(131, 101, 0.0, "ray::Learner"),
    Proc(130, 101, 0.0, "ray::Learner.train_iteration"),
    Proc(140, 101, 0.0, "ray::IDLE"),
]


def test_kinds_of_processes():
    assert [kind_of(t) for t in ["VLLM::EngineCore", "VLLM::Worker_TP1", "VllmWorker rank=0", "ray::Learner",
                                 "ray::IDLE", f"python {TRAIN}", "gcs_server --port 1"]] == \
        ["EngineCore", "VllmWorker", "VllmWorker", "ray::", "ray::", "other", "other"]
    assert count_kinds(TREE) == {"EngineCore": 1, "VllmWorker": 0, "ray::": 5, "other": 8}


def test_the_driver_is_the_python_process_not_its_shell_or_forkserver():
    assert [p.pid for p in drivers(TREE)] == [112]


@pytest.mark.parametrize("target, pid", [("engine-core", 121), ("engine-actor", 120), ("learner", 130),
                                         ("verifier", 114), ("driver", 112)])
def test_each_target_is_found_lowest_pid_first(target, pid):
    assert pick_target(target, TREE).pid == pid


def test_verifier_workers_are_the_forkserver_children_or_forked_copies_of_the_driver():
    assert [p.pid for p in verifier_workers(TREE)] == [114, 115]
    forked = [Proc(112, 111, 0.0, f"python {TRAIN}"), Proc(150, 112, 0.0, f"python {TRAIN}")]
    assert [p.pid for p in verifier_workers(forked)] == [150]


def test_no_target_yet_and_unknown_targets():
    assert pick_target("engine-core", TREE[:5]) is None
    with pytest.raises(ValueError, match="unknown target"):
        pick_target("gcs", TREE)


def test_read_iterations_skips_a_torn_last_line(tmp_path):
    f = tmp_path / "metrics.jsonl"
    assert read_iterations(f) == []
    f.write_text(json.dumps({"iteration": 0, "engine_restarts_total": 0}) + "\n"
                 + json.dumps({"iteration": 1, "engine_restarts_total": 1}) + "\n" + '{"iterat')
    assert read_iterations(f) == [0, 1]
    assert last_value(f, "engine_restarts_total") == 1 and last_value(f, "nope") is None


def test_iterations_once_each_or_duplicated_or_missing():
    assert check_iterations(list(range(6)), 6) == {"iterations": [0, 1, 2, 3, 4, 5], "reached_last": True,
                                                   "each_once": True, "duplicates": [], "missing": []}
    appended = [0, 1, 2, 3, 2, 3, 4, 5, 6, 7]  # the resume the issue measured
    c = check_iterations(appended, 8)
    assert not c["each_once"] and c["duplicates"] == [2, 3] and c["reached_last"]
    c = check_iterations([0, 1, 2], 6)
    assert not c["reached_last"] and c["missing"] == [3, 4, 5]


def test_resume_dropped_rows_reads_what_a_resume_prints():
    point = ResumePoint(Path("runs/r/checkpoints/iter_00001"), TrainerState(1, 0, {}, 1.0),
                        dropped_rows={"metrics.jsonl": 2, "samples.jsonl": 4})
    assert resume_dropped_rows("[iter 2] ...\n" + point.describe() + "\n[iter 3]") == 2
    assert resume_dropped_rows("no resume here") == 0


def test_learner_restarts_are_read_from_the_log_and_redone_rows_from_the_metrics(tmp_path):
    line = restart_message(LearnerDied([0], "ActorDiedError: x"), 3, Path("runs/r/checkpoints/iter_00001"), "/p",
                           range(2, 4))
    log = f"[iter 3] ...\n[learner] rank 0 died at iteration 3 (ActorDiedError: x); restarting\n{line}\n[iter 2] ..."
    assert learner_restart_lines(log) == [line] and learner_restart_lines("[iter 0] ...") == []
    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"iteration": i, "redone": i in (2, 3)}) + "\n" for i in range(6)))
    assert redone_rows(f) == [2, 3] and redone_rows(tmp_path / "none.jsonl") == []


def test_job_outcome_from_the_cli_log():
    assert job_outcome("...\nJob 'chaos-1' succeeded\n---", 0) == "succeeded"
    assert job_outcome("Job 'chaos-1' failed\n", 1) == "failed"
    assert job_outcome("Job 'chaos-1' was stopped\n", 0) == "stopped"
    assert job_outcome("cut short", 1) == "failed" and job_outcome("", None) == "timeout"


def test_verdict_needs_the_last_iteration_once_each_nothing_left_and_resume_only_after_the_driver():
    ok = check_iterations(list(range(6)), 6)
    assert passed("engine-core", True, False, ok, 0)
    assert passed("driver", True, True, ok, 0)
    assert not passed("learner", True, True, ok, 0)  # needed a resume: not survived in-run
    assert not passed("learner", True, False, ok, 0)  # no learner restart in the metrics: not recorded
    assert passed("learner", True, False, {**ok, "learner_restarts_total": 1}, 0)
    assert not passed("driver", True, False, ok, 0)
    assert not passed("engine-core", True, False, ok, 1)  # an EngineCore left behind
    assert not passed("engine-core", False, False, ok, 0)  # nothing was killed
    assert not passed("engine-core", True, False, check_iterations([0, 1, 2, 2, 3, 4, 5], 6), 0)


def test_train_args_put_the_users_overrides_last_and_validate():
    config = str((Path(__file__).parent.parent / "experiments/configs/rl_demo.yaml").resolve())
    args = train_args(config, Path("/w"), "chaos-driver", "/p", Path("/d"), ["iterations=8"])
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets[: len(CHAOS_OVERRIDES)] == CHAOS_OVERRIDES and sets[-1] == "iterations=8"
    assert "run_name=chaos-driver" in sets and "data.train_file=/d/train.jsonl" in sets
    assert args[:4] == ["--config", config, "--base-dir", "/w"]
    assert planned_iterations(args) == 8
    assert planned_iterations(args[:-2]) == 6  # the chaos default


def test_stop_ray_node_kills_what_ignores_sigterm_in_its_own_session_only(tmp_path):
    """experiments/ray_node.py, shared by chaos.py's head and tests/ray_local.py's nodes: a node
    (here a shell that ignores SIGTERM, with a child) is SIGKILLed with its process group after
    the wait, and a process outside its session is untouched."""
    import subprocess
    import time

    import psutil

    from experiments.ray_node import stop_ray_node

    pid_file = tmp_path / "child"
    node = subprocess.Popen(["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait"],
                            start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for _ in range(100):
            if pid_file.is_file() and pid_file.read_text().strip():
                break
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
        stop_ray_node(node, term_wait_s=0.5, kill_wait_s=5)
        assert node.returncode == -9  # SIGTERM ignored, so it took the SIGKILL
        child.wait(timeout=5)  # gone with its group (raises psutil.TimeoutExpired otherwise)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
