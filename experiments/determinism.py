"""Does resuming an RL run equal never stopping it, and how deterministic is a run? (issue 16 item 4)

    python -m experiments.determinism          # about 3 min on 2 cores; prints a JSON report

Three runs of `rl/train.py` with one seed, one after another, on the random tiny model against one
local Ray node of this script's own (bound to 127.0.0.1, its own temp dir and ports):

- A and A2: never stopped;
- B: the same run, its driver process (only it) SIGKILLed once metrics.jsonl shows iteration
  `--kill-after`, then started again with --resume. With a checkpoint every 2 iterations and
  `--kill-after` even, the latest checkpoint is then the one before it: the resume cuts that
  iteration's logged rows and redoes it, and the driver died in the middle of the next one.

For every iteration the report says whether two runs drew the same prompts (the metrics'
`sampler_drawn_ids`), sampled the same responses (samples.jsonl logs all of them here: text,
length, finish reason), gave them the same rewards (only asked where the responses are the same),
and logged the same metrics apart from clock readings; and, for the final policies, the largest
absolute difference between their weights. A vs A2 is how far two runs that never stopped differ;
A vs B after the kill is what the resume adds to that.

Why the random tiny model and the k1.5 length reward: the random model ends a response with
<|im_end|> at about 1 token in 320, so in each group of 4 some responses end early and others hit
max_tokens; the length reward then differs within groups and every iteration updates the policy
(the verifier scores its text 0 throughout). The short-SFT'd fixture checkpoint writes 85+ token
answers, so at an affordable max_tokens every response is cut, all rewards are equal, nothing is
learnt, and equal final weights would prove nothing.

tests/test_resume_equals_never_stopping.py runs A and B of the same config (`tiny_config`) and
asserts on this module's comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from experiments.arith import generate, write_splits
from experiments.chaos import RayHead, read_iterations
from experiments.tiny_model import build_tiny_checkpoint
from rl.metrics import is_clock_key

REPO = Path(__file__).resolve().parent.parent
PROMPTS, SAMPLES = 4, 4  # per iteration: 16 responses, every one logged (samples_to_log)
POLL_S = 0.1


def tiny_config(name: str, out: Path, policy: Path, train_file: Path, ray_address: str, iterations: int = 4) -> str:
    """A short RL run: 4 prompts x 4 samples of at most 64 tokens, 2 optimizer steps per iteration,
    a checkpoint every 2 iterations (all kept, so the runs' checkpoints can be compared), no eval,
    one engine and one learner rank of one thread each (2 CPUs in all)."""
    return f"""
run_name: {name}
output_dir: {out}
policy: {policy}
seed: 0
iterations: {iterations}
prompts_per_iteration: {PROMPTS}
checkpoint_every: 2
checkpoint_every_minutes: 0
keep_checkpoints: 0
tensorboard: false
samples_to_log: {PROMPTS * SAMPLES}
data: {{train_file: {train_file}, max_prompt_tokens: 64}}
rollout:
  num_engines: 1
  actor_num_cpus: 1
  timeout_s: 300
  engine: {{model: "<policy>", kv_cache_gib: 0.25, max_model_len: 256, cpu_threads: 1}}
  sampling: {{n: {SAMPLES}, temperature: 1.0, max_tokens: 64}}
learner:
  num_ranks: 1
  actor_num_cpus: 1
  threads: 1
  minibatches_per_iteration: 2
  tokens_per_microbatch: 2048
  timeout_s: 300
  deepspeed: {{zero_stage: 1, lr: 1.0e-4}}
objective: {{length_penalty_weight: 1.0, length_penalty_warmup: 0}}
reward: {{num_workers: 1}}
ray: {{address: "{ray_address}"}}
"""


# -- the driver as a process of its own ----------------------------------------------------------------


def driver_env() -> dict:
    """The environment of a driver joining a token-authenticated local node (tests/ray_local.py):
    Ray reads RAY_AUTH_MODE at import, and the token from ~/.ray/auth_token. RAY_ADDRESS is
    dropped so that the config's `ray.address` is the cluster used."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


@dataclass
class Driver:
    """`python rl/train.py ARGS` from the repository root, in a session of its own (so that killing
    it touches nothing else, and what it forked can be found by its group), output to `log`."""

    args: list[str]
    log: Path
    env: dict = field(default_factory=driver_env)
    script: str = "rl/train.py"  # relative to the repository root
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0
    killed: bool = False

    def start(self) -> "Driver":
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, self.script, *self.args], cwd=REPO, stdout=f,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.started = time.monotonic()
        return self

    def kill_when(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """SIGKILL the driver (its process only) as soon as `cond()` holds; False if it exited or
        the time ran out first."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            if cond():
                self.proc.send_signal(signal.SIGKILL)
                self.killed = True
                break
            time.sleep(POLL_S)
        return self.killed

    def wait(self, timeout_s: float) -> int:
        """The exit code; a driver still running after `timeout_s` is killed and TimeoutError raised."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise TimeoutError(f"{self.script} {' '.join(self.args)} still ran after {timeout_s:.0f}s "
                               f"(log: {self.log})") from None
        finally:
            self.wall_s = time.monotonic() - self.started

    def reap(self) -> None:
        """Kill what the driver started in its own session and left behind (its verifier pool:
        forkserver and workers). Its Ray actors are the cluster's to clean up: a job whose driver
        died has its actors killed."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def run(args: list[str], log: Path, timeout_s: float, kill_when: Callable[[], bool] | None = None,
        script: str = "rl/train.py") -> Driver:
    """One driver process to its end (or its SIGKILL once `kill_when()` holds), reaped."""
    d = Driver(args, log, script=script).start()
    try:
        if kill_when is not None:
            d.kill_when(kill_when, timeout_s)
        d.wait(timeout_s - (time.monotonic() - d.started))
    finally:
        d.reap()
    return d


# -- what two runs logged --------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of a JSON-lines log (a torn last line is left out)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


@dataclass
class RunLogs:
    iterations: list[int]  # metrics.jsonl's rows, in file order
    metrics: dict[int, dict]
    samples: dict[int, list[dict]]

    @classmethod
    def read(cls, run_dir: Path) -> "RunLogs":
        rows = read_jsonl(run_dir / "metrics.jsonl")
        samples: dict[int, list[dict]] = {}
        for s in read_jsonl(run_dir / "samples.jsonl"):
            samples.setdefault(s["iteration"], []).append(s)
        return cls([r["iteration"] for r in rows], {r["iteration"]: r for r in rows}, samples)


def without_clock(row: dict) -> dict:
    return {k: v for k, v in row.items() if not is_clock_key(k)}


def _generations(samples: list[dict]) -> list[tuple]:
    return [(s["prompt_id"], s["response"], s["length"], s["finish_reason"]) for s in samples]


def _rewards(samples: list[dict]) -> list[tuple]:
    return [(s["reward"], s["score"], s["length_reward"]) for s in samples]


def compare_iteration(a: RunLogs, b: RunLogs, it: int) -> dict:
    """Did runs a and b draw, sample, score and log the same at iteration `it`? `rewards` is None
    where the responses differ (the same rewards are only asked of the same responses); `metrics`
    compares whole rows without clock readings."""
    ra, rb = a.metrics[it], b.metrics[it]
    sa, sb = a.samples.get(it, []), b.samples.get(it, [])
    same_gens = bool(sa) and _generations(sa) == _generations(sb)
    out = {
        "draws": ra.get("sampler_drawn_ids") == rb.get("sampler_drawn_ids") and "sampler_drawn_ids" in ra,
        "generations": same_gens,
        "rewards": (_rewards(sa) == _rewards(sb) and ra["reward_mean"] == rb["reward_mean"]) if same_gens else None,
        "metrics": without_clock(ra) == without_clock(rb),
    }
    if not out["metrics"]:
        out["metrics_differ"] = sorted(k for k in set(without_clock(ra)) | set(without_clock(rb))
                                       if ra.get(k) != rb.get(k))
    return out


def compare_runs(a: RunLogs, b: RunLogs, iterations) -> dict[int, dict]:
    """`compare_iteration` for each iteration; one that either run did not log is `{"missing": True}`
    (every check of it then fails)."""
    return {it: compare_iteration(a, b, it) if it in a.metrics and it in b.metrics else {"missing": True}
            for it in iterations}


def load_policy_tensors(policy_dir: Path) -> dict:
    from safetensors.torch import load_file  # safetensors.torch imports torch; only the weight check needs it

    out = {}
    for f in sorted(Path(policy_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    if not out:
        raise FileNotFoundError(f"no *.safetensors in {policy_dir}")
    return out


def weights_max_abs_diff(policy_a: Path, policy_b: Path) -> float:
    """The largest |a - b| over every weight of two HF checkpoints of one architecture."""
    ta, tb = load_policy_tensors(policy_a), load_policy_tensors(policy_b)
    if ta.keys() != tb.keys():
        raise ValueError(f"{policy_a} and {policy_b} hold different tensors: {sorted(ta.keys() ^ tb.keys())[:5]}")
    return max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)


def _diff_or_error(a: Path, b: Path) -> float | str:
    try:
        return weights_max_abs_diff(a, b)
    except (OSError, ValueError) as e:  # a run that failed has no final checkpoint: say so in the report
        return f"{type(e).__name__}: {e}"


def policy_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:05d}" / "policy"


# -- the experiment ------------------------------------------------------------------------------------------


def killed_and_resumed(config: Path, run_dir: Path, work: Path, kill_after: int, timeout_s: float) -> list[Driver]:
    """Run B: the driver SIGKILLed once metrics.jsonl has iteration `kill_after`, then --resume."""
    first = run(["--config", str(config)], work / f"{run_dir.name}-1.log", timeout_s,
                kill_when=lambda: kill_after in read_iterations(run_dir / "metrics.jsonl"))
    second = run(["--config", str(config), "--resume"], work / f"{run_dir.name}-2.log", timeout_s)
    return [first, second]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--kill-after", type=int, default=2, help="an even iteration < iterations - 1")
    ap.add_argument("--workdir", default=None, help="default: runs/determinism/<time>")
    ap.add_argument("--timeout-s", type=float, default=600, help="bound on each driver process")
    a = ap.parse_args(argv)
    if a.kill_after % 2 or not 0 < a.kill_after < a.iterations - 1:
        raise SystemExit("--kill-after must be even and in 2..iterations-2 (a checkpoint every 2 iterations)")
    work = Path(a.workdir or REPO / "runs" / "determinism" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    policy = build_tiny_checkpoint(work / "tiny", seed=0)
    # the test's data (tests/conftest.py's arith_data): the same train split
    write_splits({"train": generate(seed=0, n_sft=3000, n_train=400, n_eval=60)["train"]}, str(work / "data"))
    t0 = time.monotonic()
    head = RayHead(work / "ray_head.log", num_cpus=2, object_store_mb=256)
    drivers: dict[str, list[Driver]] = {}
    try:
        head.wait_ready()
        address = f"127.0.0.1:{head.gcs_port}"
        runs = {}
        for name in ("a", "a2", "b"):
            cfg = work / f"{name}.yaml"
            cfg.write_text(tiny_config(name, work / "runs", policy, work / "data" / "train.jsonl", address,
                                       a.iterations))
            runs[name] = work / "runs" / name
            if name == "b":
                drivers[name] = killed_and_resumed(cfg, runs[name], work, a.kill_after, a.timeout_s)
            else:
                drivers[name] = [run(["--config", str(cfg)], work / f"{name}.log", a.timeout_s)]
    finally:
        head.stop()

    logs = {name: RunLogs.read(d) for name, d in runs.items()}
    last = a.iterations - 1
    report = {
        "work_dir": str(work),
        "iterations": a.iterations,
        "kill_after": a.kill_after,
        "drivers": {name: [{"exit": d.proc.returncode, "killed": d.killed, "wall_s": round(d.wall_s, 1),
                            "log": str(d.log)} for d in ds] for name, ds in drivers.items()},
        "metrics_iterations": {name: lg.iterations for name, lg in logs.items()},
        "a_vs_a2": compare_runs(logs["a"], logs["a2"], range(a.iterations)),
        "a_vs_b": compare_runs(logs["a"], logs["b"], range(a.iterations)),
        "final_weights_max_abs_diff": {
            "a_vs_a2": _diff_or_error(policy_dir(runs["a"], last), policy_dir(runs["a2"], last)),
            "a_vs_b": _diff_or_error(policy_dir(runs["a"], last), policy_dir(runs["b"], last)),
        },
        # how far the policy moved in the iterations after the resume point: what the two
        # differences above are small against
        "a_update_after_kill_max_abs": _diff_or_error(policy_dir(runs["a"], a.kill_after - 1),
                                                      policy_dir(runs["a"], last)),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    (work / "determinism_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
