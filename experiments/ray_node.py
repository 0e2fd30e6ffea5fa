"""A local `ray start --block` node that ends exactly itself: what experiments/chaos.py (its Ray
head) and tests/ray_local.py (the integration tests' nodes) share.

Each node is started with `start_new_session=True`, so it leads a process group (session) of its
own. `stop_ray_node` sends that process SIGTERM, whose handler ends the raylet, GCS and workers it
started, then SIGKILLs whatever is left in its group by group id. `ray stop` is never used: it ends
every Ray process of the user, another job's or CI's too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

TERM_WAIT_S = 60.0  # `ray start --block` stopping its raylet, GCS and workers after SIGTERM
KILL_WAIT_S = 30.0  # the process exiting after its group was SIGKILLed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_ray_node(proc: subprocess.Popen, term_wait_s: float = TERM_WAIT_S, kill_wait_s: float = KILL_WAIT_S) -> None:
    """SIGTERM `proc` (a `ray start --block` in a session of its own) and wait for it, then SIGKILL
    what is left of its process group. Raises subprocess.TimeoutExpired if it has still not exited
    `kill_wait_s` after that."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # its handler ends the raylet, GCS and workers
        try:
            proc.wait(timeout=term_wait_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # our own session only
    except ProcessLookupError:
        pass
    proc.wait(timeout=kill_wait_s)
