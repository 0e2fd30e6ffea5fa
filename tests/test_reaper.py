"""rollout.reaper: the EngineCore of an engine whose owner is SIGKILLed is killed too (issue 16:
`ray stop --force` left EngineCore processes running); a normal close kills nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from rollout.reaper import parse_procs

REPO = Path(__file__).resolve().parent.parent

# An "engine owner": starts a long-lived child (standing in for the EngineCore: any process the
# owner started) and its reaper, prints their pids, then waits; on "close" it stops the reaper.
OWNER = textwrap.dedent("""
    import json, subprocess, sys
    import psutil
    from rollout.reaper import start_reaper, stop_reaper
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    reaper = start_reaper([(core.pid, psutil.Process(core.pid).create_time())])
    print(json.dumps({"core": core.pid, "reaper": reaper.pid}), flush=True)
    if sys.stdin.readline().strip() == "close":
        stop_reaper(reaper)
        print("closed", flush=True)
        sys.stdin.readline()
""")


def _start_owner() -> tuple[subprocess.Popen, dict]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    pids = json.loads(owner.stdout.readline())
    return owner, pids


def _kill(pids) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_owner_sigkilled_then_its_engine_core_is_killed():
    owner, pids = _start_owner()
    try:
        assert psutil.Process(pids["core"]).is_running()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert _gone(pids["core"], 5.0), "the reaper left the orphaned core running"
        assert _gone(pids["reaper"], 5.0), "the reaper did not exit after reaping"
    finally:
        _kill(pids.values())


def test_a_closed_engine_stops_its_reaper_and_kills_nothing():
    owner, pids = _start_owner()
    try:
        owner.stdin.write("close\n")
        owner.stdin.flush()
        assert owner.stdout.readline().strip() == "closed"
        assert _gone(pids["reaper"], 5.0)
        os.kill(owner.pid, signal.SIGKILL)  # the owner dies after a proper close: nothing to reap
        owner.wait(10)
        time.sleep(1.0)  # longer than the reaper's poll, had it still been running
        assert psutil.Process(pids["core"]).status() != psutil.STATUS_ZOMBIE
    finally:
        _kill(pids.values())


def test_parse_procs_reads_pid_and_create_time():
    assert parse_procs(["12:1733390000.25", "7:3.0"]) == [(12, 1733390000.25), (7, 3.0)]
