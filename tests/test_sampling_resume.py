"""Kill-and-resume: a sampler restored from a JSON checkpoint picks exactly what an
uninterrupted run with the same seed picks.

Three real processes per sampler kind (this file is also the worker, see `__main__`):
  1. "die": runs iterations 0..N-1 with simulated scored rollouts, writes the sampler state to a
     JSON file (tmp + rename, as a trainer checkpoint would), keeps training past the checkpoint
     (so its in-memory state moves on), and is killed with SIGKILL.
  2. "resume": a fresh process builds the sampler, loads the JSON and runs iterations N..N+4.
  3. "full": an uninterrupted run of iterations 0..N+4.
Every `sample` call's ids (first draw and dynamic-filtering replacements) are compared.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

N_CKPT = 7  # iterations before the checkpoint
N_AFTER = 5  # iterations compared after it
SEED = 2025
BATCH, K = 6, 4

CONFIGS = {
    "uniform": {"kind": "uniform"},
    "prioritized": {"kind": "prioritized", "floor": 0.05, "tracker": {"decay": 0.7}},
    # the stage switch falls inside the compared window
    "curriculum": {"kind": "curriculum", "schedule": [{"iteration": 0}, {"iteration": N_CKPT + 2, "only": [3, 4]}]},
    "mix": {"kind": "mix", "dynamic_filtering": True, "tracker": {"decay": 0.5, "unseen_prior": 0.3},
            "components": [
                {"weight": 1, "sampler": {"kind": "uniform"}},
                {"weight": 2, "sampler": {"kind": "prioritized", "floor": 0.1}},
                {"weight": 1, "sampler": {"kind": "curriculum", "by": "pass_rate",
                                          "bands": {"hard": [0, 0.4], "easy": [0.4, 1]},
                                          "schedule": [{"iteration": 0, "mix": {"hard": 1}}]}},
            ]},
}


# -- the worker ----------------------------------------------------------------------------------


def make_rows():
    from prompts.schema import PromptRow

    return [
        PromptRow(id=f"q{i:02d}", prompt=[{"role": "user", "content": f"q{i}"}], answer="1",
                  difficulty=i % 4 + 1, pass_rate=(0.25 if i % 5 == 0 else None))
        for i in range(40)
    ]


def simulated_scores(pid: str, iteration: int, attempt: int) -> list[float]:
    """Deterministic in (pid, iteration, attempt) across processes: crc32, not the salted hash()."""
    h = zlib.crc32(pid.encode())
    p_true = 0.15 + 0.7 * ((h % 97) / 96)
    rng = np.random.default_rng([SEED, iteration, attempt, h])
    return (rng.random(K) < p_true).astype(float).tolist()


def run_iteration(sampler, it: int) -> list[list[str]]:
    """One driver iteration: sample, score, update, filter, refill up to 2 times."""
    picks = [sampler.sample(BATCH, it)]
    results = [(p, simulated_scores(p, it, 0)) for p in picks[0]]
    sampler.update(it, results)
    kept, dropped = sampler.filter_groups(results)
    for attempt in (1, 2):
        if not dropped or len(kept) >= BATCH:
            break
        extra = sampler.sample(BATCH - len(kept), it, exclude=[p for p, _ in results])
        picks.append(extra)
        new = [(p, simulated_scores(p, it, attempt)) for p in extra]
        sampler.update(it, new)
        results += new
        more, dropped = sampler.filter_groups(new)
        kept += more
    sampler.metrics([p for p, _ in kept])  # exercised like the driver does
    return picks


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def worker(mode: str, kind: str, state_path: str) -> None:
    from rl.sampling import build_sampler

    sampler = build_sampler(CONFIGS[kind], make_rows(), seed=SEED)
    if mode == "full":
        for it in range(N_CKPT + N_AFTER):
            emit({"it": it, "picks": run_iteration(sampler, it)})
    elif mode == "die":
        for it in range(N_CKPT):
            emit({"it": it, "picks": run_iteration(sampler, it)})
        tmp = state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"iteration": N_CKPT, "sampler": sampler.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_path)
        emit({"checkpoint": state_path})
        it = N_CKPT
        while True:  # keep training until killed; none of this may leak into the resume
            emit({"it": it, "picks": run_iteration(sampler, it), "after_checkpoint": True})
            it += 1
            time.sleep(0.05)
    elif mode == "resume":
        with open(state_path) as f:
            ckpt = json.load(f)
        sampler.load_state_dict(ckpt["sampler"])
        for it in range(ckpt["iteration"], ckpt["iteration"] + N_AFTER):
            emit({"it": it, "picks": run_iteration(sampler, it)})
    else:
        raise SystemExit(f"unknown mode {mode}")


# -- the test ------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def spawn(mode: str, kind: str, state: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, __file__, mode, kind, str(state)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def line_reader(proc: subprocess.Popen) -> queue.Queue:
    """Lines of the worker's stdout on a queue (a thread, so a wait can time out)."""
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(ln) for ln in proc.stdout], daemon=True).start()
    return q


def read_line(proc: subprocess.Popen, lines: queue.Queue, deadline: float) -> dict:
    try:
        return json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"worker gave no output in time; stderr:\n{proc.stderr.read()}") from None


def finish(proc: subprocess.Popen) -> dict[int, list]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return {d["it"]: d["picks"] for d in map(json.loads, out.splitlines())}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_resume_after_sigkill_picks_the_same_ids(kind, tmp_path):
    state = tmp_path / "sampler_state.json"
    full = spawn("full", kind, state)  # runs alongside the kill/resume pair

    dying = spawn("die", kind, state)
    lines, deadline = line_reader(dying), time.monotonic() + 120
    before: dict[int, list] = {}
    while "checkpoint" not in (msg := read_line(dying, lines, deadline)):
        before[msg["it"]] = msg["picks"]
    assert read_line(dying, lines, deadline).get("after_checkpoint")  # it trained past the save
    os.kill(dying.pid, signal.SIGKILL)
    dying.wait(timeout=30)
    dying.stderr.close()
    assert dying.returncode == -signal.SIGKILL

    resumed = finish(spawn("resume", kind, state))
    uninterrupted = finish(full)

    assert sorted(before) == list(range(N_CKPT))
    assert sorted(resumed) == list(range(N_CKPT, N_CKPT + N_AFTER))
    assert {it: uninterrupted[it] for it in range(N_CKPT)} == before
    for it in range(N_CKPT, N_CKPT + N_AFTER):
        assert resumed[it] == uninterrupted[it], f"iteration {it} differs after resume"
    # the comparison is not vacuous: the runs draw different prompts from one iteration to the next
    assert len({tuple(uninterrupted[it][0]) for it in uninterrupted}) > 1
    if CONFIGS[kind].get("dynamic_filtering"):  # replacement draws were part of the comparison
        assert any(len(uninterrupted[it]) > 1 for it in range(N_CKPT, N_CKPT + N_AFTER))


if __name__ == "__main__":
    worker(*sys.argv[1:4])
