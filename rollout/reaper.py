"""Reap a vLLM engine's EngineCore when the process that owns the engine dies without closing it.

vLLM 0.32's EngineCore (and its worker processes) do not exit with their parent. When the engine's
owner is SIGKILLed -- `ray stop --force`, the OOM killer, `ray job stop` running out of grace, a
chaos test -- they keep running, holding memory and a core each (issue 16: seen after `ray stop
--force`). `rollout.engine.VLLMEngine` therefore starts one small reaper process per engine:

    python -m rollout.reaper OWNER_PID PID:CREATE_TIME [PID:CREATE_TIME ...]

It polls whether OWNER_PID is still its parent; once it is not (the owner died), it SIGKILLs the
listed processes that are still the same processes (same create time: a reused pid is left
alone) and exits. On SIGTERM (the engine's `close`, which shuts the core down itself) it exits
without killing anything. It runs in a session of its own, so a Ctrl-C to the terminal's process
group goes to the owner, which closes the engine and stops the reaper.

Polling rather than PR_SET_PDEATHSIG: the death signal fires when the *thread* that started the
child exits, and an engine may be created on a thread that ends before the engine does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5


def kill_processes(procs: list[tuple[int, float]]) -> int:
    """SIGKILL each (pid, create_time) still running, on this node; a pid reused by a newer
    process is left alone. Returns how many were killed."""
    killed = 0
    for pid, created in procs:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) > 0.5 or p.status() == psutil.STATUS_ZOMBIE:
                continue  # a newer process under a reused pid, or one already dead
            p.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


def start_reaper(procs: list[tuple[int, float]]) -> subprocess.Popen | None:
    """Start the reaper of `procs` for this process (None when there is nothing to reap)."""
    if not procs:
        return None
    args = [f"{pid}:{created!r}" for pid, created in procs]
    return subprocess.Popen([sys.executable, "-m", "rollout.reaper", str(os.getpid()), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)


def stop_reaper(reaper: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """Stop a reaper without it killing anything (the engine was closed properly)."""
    if reaper is None or reaper.poll() is not None:
        return
    reaper.terminate()
    try:
        reaper.wait(timeout_s)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait(timeout_s)


def parse_procs(args: list[str]) -> list[tuple[int, float]]:
    out = []
    for a in args:
        pid, _, created = a.partition(":")
        out.append((int(pid), float(created)))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    owner, procs = int(argv[0]), parse_procs(argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == owner:
        time.sleep(POLL_S)
    n = kill_processes(procs)
    if n:
        print(f"[rollout.reaper] engine owner {owner} died without closing its engine: killed {n} "
              f"leftover EngineCore/worker process(es)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
