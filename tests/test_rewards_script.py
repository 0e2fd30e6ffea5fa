"""A plain script without an `if __name__ == "__main__":` guard that calls `rl.rewards.verify`
(issue 20): it works (the pool forks its workers instead of re-importing the script), or, when
the process runs threads and cannot fork safely, fails at once saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOP = """
import rl.rewards
for i in range(3):
    r = rl.rewards.verify("<think>ok</think> \\\\boxed{%d}" % i, str(i))
    print("score", i, r.score, r.reason, flush=True)
print("done", flush=True)
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "plain.py"
    script.write_text(body)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_unguarded_script_scores_its_loop_once(tmp_path):
    out = _run(tmp_path, LOOP)
    assert out.returncode == 0, out.stderr
    # Every line once: workers did not run the script's loop again.
    assert out.stdout.splitlines() == ["score 0 1.0 correct", "score 1 1.0 correct", "score 2 1.0 correct", "done"]
    assert "bootstrapping" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_unguarded_script_with_threads_fails_at_once_with_the_fix(tmp_path):
    body = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n" + LOOP
    t0 = time.monotonic()
    out = _run(tmp_path, body)
    assert time.monotonic() - t0 < 30
    assert out.returncode != 0 and "score" not in out.stdout
    assert 'if __name__ == "__main__":' in out.stderr and "plain.py" in out.stderr, out.stderr
