"""`rl/train.py` end to end under `ray job submit` on a real local Ray head (issue 5).

One head (`ray start --block`, dashboard on 127.0.0.1, own temp dir and ports, token auth; see
tests/ray_local.py) serves two jobs, submitted the way experiments/demo.sh submits them:

1. a 2-iteration run with `checkpoint_every: 1` and `data.max_prompt_tokens` below the length
   of ~40% of the arithmetic prompts: the job SUCCEEDS, metrics.jsonl has 2 rows, the too-long
   prompts are skipped and counted (`prompts_too_long`), never sent to the engine;
2. submitting the same run again without `--resume` FAILS with an error naming the run directory
   and --resume (issue 16: it used to truncate metrics.jsonl silently).

Resuming is tested in tests/test_resume_equals_never_stopping.py (a SIGKILLed driver resumed
from its checkpoint equals a run never stopped) and, for checkpoint pruning after a resume, in
tests/test_resume.py.

Paths in the config are relative and resolved against `--base-dir`, as in the demo. The policy is
the random tiny model (rewards are all 0; the loop, not learning, is under test here).

    pytest tests/test_rl_e2e.py -m integration -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from ray_local import RAY, RayNode, ensure_auth_token, free_port, http_up, port_open, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engine_core_in_process]

REPO = Path(__file__).resolve().parent.parent
EXCLUDES = [".venv", "runs", "data", "checkpoints", ".git", "*.egg-info", "__pycache__"]
PROMPTS = 6
SAMPLES = 2
MAX_PROMPT_TOKENS = 34  # arithmetic prompts are 30-41 tokens: about 40% are longer

CONFIG = f"""
run_name: e2e
output_dir: runs
policy: tiny
seed: 0
iterations: 2
prompts_per_iteration: {PROMPTS}
checkpoint_every: 1
tensorboard: false
samples_to_log: 2
data:
  train_file: arith/train.jsonl
  eval_file: arith/eval.jsonl
  max_prompt_tokens: {MAX_PROMPT_TOKENS}
rollout:
  num_engines: 1
  actor_num_cpus: 1
  timeout_s: 600
  engine: {{model: "<policy>", kv_cache_gib: 0.25, max_model_len: 512, cpu_threads: 1}}
  sampling: {{n: {SAMPLES}, temperature: 1.0, max_tokens: 32}}
learner:
  num_ranks: 1
  actor_num_cpus: 1
  threads: 1
  minibatches_per_iteration: 2
  tokens_per_microbatch: 2048
  row_tokens: 512
  timeout_s: 600
  deepspeed: {{zero_stage: 1, lr: 1.0e-4}}
reward: {{num_workers: 1}}
eval: {{every: 0, num_prompts: 4, samples: 1, max_tokens: 32}}
"""


@pytest.fixture(scope="module")
def ray_head_node(tmp_path_factory):
    """A one-node Ray head with the job server (dashboard) on 127.0.0.1."""
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live under it
    head = RayNode(temp_dir, tmp_path_factory.mktemp("ray_logs") / "head.log", head=True, num_cpus=2,
                   dashboard_port=free_port())
    try:
        wait_for(lambda: port_open(head.gcs_port), 120, "the head's GCS", [head])
        wait_for(lambda: http_up(f"http://127.0.0.1:{head.dashboard_port}/api/version"), 120, "the job server", [head])
        yield head
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(ray_head_node):
    """The head's job server HTTP port."""
    return ray_head_node.dashboard_port


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, arith_data):
    """What --base-dir points at: the tiny policy and the task data, outputs go under runs/."""
    from experiments.tiny_model import build_tiny_checkpoint

    base = tmp_path_factory.mktemp("e2e_base")
    build_tiny_checkpoint(base / "tiny", seed=0)
    shutil.copytree(arith_data, base / "arith")
    (base / "rl.yaml").write_text(CONFIG)
    return base


def ray_env() -> dict:
    ensure_auth_token()
    return {**os.environ, "RAY_AUTH_MODE": "token"}  # the CLI sends ~/.ray/auth_token


def submit(dash: int, base: Path, submission_id: str, *args: str) -> str:
    """`ray job submit` as experiments/demo.sh runs it; returns the job's streamed output after
    checking that the job SUCCEEDED."""
    cmd = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--submission-id", submission_id,
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
           "--", "python", "rl/train.py", "--config", str(base / "rl.yaml"), "--base-dir", str(base), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ray_env())
    log = out.stdout + out.stderr
    status = subprocess.run([RAY, "job", "status", "--address", f"http://127.0.0.1:{dash}", submission_id],
                            capture_output=True, text=True, timeout=120, env=ray_env())
    # (the CLI prints JobStatus.SUCCEEDED as "Job '<id>' succeeded")
    assert f"Job '{submission_id}' succeeded" in status.stdout + status.stderr, \
        f"{status.stdout}\n{status.stderr}\n{log[-6000:]}"
    assert out.returncode == 0, log[-6000:]
    return log


def metrics(base: Path) -> list[dict]:
    return [json.loads(line) for line in (base / "runs" / "e2e" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(ray_head, base_dir):
    return submit(ray_head, base_dir, "thinkrl-e2e-first")


def test_job_submit_runs_two_iterations_and_skips_too_long_prompts(first_run, base_dir):
    rows = metrics(base_dir)
    assert [r["iteration"] for r in rows] == [0, 1]
    for r in rows:
        # Every chosen prompt was either skipped as too long or sampled SAMPLES times.
        assert r["prompts_too_long"] + r["num_samples"] // SAMPLES == PROMPTS
        assert r["weight_sync_s"] > 0 and r["skipped_steps"] == 0
        assert r["skipped_update"] == 0 and r["skip_reason"] is None and r["skipped_updates_total"] == 0
        assert r["loss"] is not None and r["reward_mean"] is not None
    assert sum(r["prompts_too_long"] for r in rows) > 0
    assert sum(r["num_samples"] for r in rows) > 0
    run = base_dir / "runs" / "e2e"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["iter_00000", "iter_00001", "latest"]
    assert (run / "checkpoints" / "latest").read_text() == "iter_00001\n"
    state = json.loads((run / "checkpoints" / "iter_00001" / "trainer_state.json").read_text())
    samples = len((run / "samples.jsonl").read_text().splitlines())
    assert state["log_rows"] == {"metrics.jsonl": 2, "samples.jsonl": samples}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["final_eval"]["n"] == 4
    assert "[iter 1]" in first_run


def test_rerunning_without_resume_is_refused(ray_head, first_run, base_dir):
    dash = ray_head
    cmd = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--submission-id", "thinkrl-e2e-again",
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
           "--", "python", "rl/train.py", "--config", str(base_dir / "rl.yaml"), "--base-dir", str(base_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ray_env())
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-6000:]
    assert "RunExistsError" in log and str(base_dir / "runs" / "e2e") in log and "--resume" in log, log[-6000:]
    assert [r["iteration"] for r in metrics(base_dir)] == [0, 1]  # untouched


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_every_server_of_the_head_listens_on_loopback_only(ray_head_node, first_run):
    """After a job ran (GCS, raylet, agents, job server and workers up):
    each TCP socket that a process of the head's tree listens on is bound to 127.0.0.1.
    Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (rl.ray_loopback) Ray 2.60 binds *:GCS port and
    the machine's address."""
    import psutil

    listeners = []
    head = psutil.Process(ray_head_node.proc.pid)
    for p in [head, *head.children(recursive=True)]:
        try:
            listeners += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    assert any(port == ray_head_node.gcs_port for _, _, port in listeners), listeners
    assert [x for x in listeners if x[1] not in LOOPBACK] == []
