"""experiments.strays: which process titles count as left behind by a run."""

from __future__ import annotations

import subprocess
import sys
import time

from experiments.strays import is_stray, strays


def test_titles_that_count_as_strays():
    yes = ["VLLM::EngineCore", "VLLM::Worker_TP0", "ray::Learner.train_iteration", "ray::IDLE",
           "/x/.venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/r",
           "/x/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/r", "/x/bin/python /x/bin/ray start --head --block",
           "/x/bin/python -m rollout.reaper 123 456:1.0"]
    no = ["python -m pytest -q", "bash .ci/run", "python rl/train.py --config x.yaml", "/usr/bin/rayban", "sleep 60"]
    assert [t for t in yes if not is_stray(t)] == []
    assert [t for t in no if is_stray(t)] == []


def test_only_processes_started_since_count():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ray start --head --block"])
    try:
        time.sleep(0.5)
        assert proc.pid in [pid for pid, _ in strays(since=time.time() - 60)]
        assert proc.pid not in [pid for pid, _ in strays(since=time.time() + 60)]
    finally:
        proc.kill()
        proc.wait()
