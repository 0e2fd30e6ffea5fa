"""`VerifierPool`: rule-based verification in worker processes that can be killed.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one hung worker (a sympy call
stuck in C on 10^{10^{10^{10}}} ignores signals and exceptions), and a worker that dies breaks the
whole executor. `pebble` could, but the logic we need is small enough to own: one pipe per
worker, at most one item in flight per worker, `multiprocessing.connection.wait` on the pipes
and process sentinels until the earliest deadline, and on a missed deadline SIGKILL + a fresh
worker. Results go back in input order; a timeout or crash costs that item (score 0, reason
`timeout` / `worker_crashed`), never the batch.

Workers start with "forkserver" by default: forking from a clean server that has already
imported sympy and math-verify makes a replacement worker ready in tens of milliseconds, and
unlike plain fork it is safe in a parent that runs threads (Ray, vLLM).

Deadlines measure the work (issue 20): an item's clock starts when it is handed to a worker that
has reported ready (never during start-up or while it waits in the queue), and on Linux it is the
worker's CPU time, so a busy machine that leaves the worker waiting for a core does not turn an
easy item into a timeout; a wall-clock backstop (`WALL_FACTOR` x the deadline) still bounds
anything that hangs without using CPU. A timed-out item is retried once on a fresh worker, with
a warning in the log, before it scores 0.

spawn/forkserver workers re-import the main module. A plain script without an
`if __name__ == "__main__":` guard would run again in every worker, so for such a script the
pool forks its workers instead (when the process has no other threads; with threads it fails at
once, saying what to do).
"""

from __future__ import annotations

import ast
import logging
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence

from rl.rewards.base import Reason, VerifyItem, VerifyResult
from rl.rewards.registry import run_rule_based

log = logging.getLogger(__name__)
_PRELOAD = ["rl.rewards.registry", "math_verify", "latex2sympy2_extended.latex2sympy2"]
WALL_FACTOR = 4.0  # wall-clock backstop: deadline x this (+1 s), for hangs that use no CPU
_POLL_S = 0.05  # how often in-flight workers' CPU clocks are read
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where that is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def unguarded_main_script() -> str | None:
    """The path of the main script when it has no top-level `if __name__ == "__main__":` block
    (spawn/forkserver children would run all of it again), else None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py") or getattr(main, "__name__", "") != "__main__":
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return None
    return str(path)


def _start_method(requested: str) -> str:
    script = unguarded_main_script()
    if script is None or requested == "fork":
        return requested
    if threading.active_count() == 1:
        import math_verify  # noqa: F401  (imported once here, so forked workers start warm)

        log.info("%s has no `if __name__ == '__main__':` guard; verifier workers are forked instead of %s", script, requested)
        return "fork"
    raise RuntimeError(
        f"rl.rewards: the verifier pool starts worker processes ({requested}), which re-import the main script "
        f"{script}; it has no `if __name__ == \"__main__\":` guard, so every worker would run the script again. "
        "Put the script's top-level code under `if __name__ == \"__main__\":` (this process runs threads, so the "
        "pool cannot safely fork instead)."
    )


def _worker_main(conn: Connection, max_memory_mb: int | None, forked: bool = False) -> None:
    """Worker loop: receive (index, item), send (index, result); None means exit."""
    if max_memory_mb:
        # A runaway expansion raises MemoryError here instead of paging the whole machine. A forked
        # worker inherits its parent's mappings (torch alone maps gigabytes), so its cap is on top.
        mapped = 0
        if forked:
            try:
                with open("/proc/self/statm") as f:
                    mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                pass
        cap = (max_memory_mb << 20) + mapped
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # The pool owns timeouts, so math-verify's "timeout disabled" warning is noise here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (warm: a spawned worker would import sympy on its first item's clock)

    conn.send(("ready", os.getpid(), time.process_time()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        index, item = msg
        t0 = time.perf_counter()
        try:
            res = run_rule_based(item)
        except (Exception, RecursionError, MemoryError) as e:  # one bad item, not a dead worker
            res = VerifyResult(0.0, Reason.ERROR, {"error": type(e).__name__})
        res.metrics["elapsed_s"] = round(time.perf_counter() - t0, 6)
        # The worker's CPU clock after the item: also its clock at the next dispatch (idle in
        # between), so the pool can time the next item without a /proc read per item.
        conn.send((index, res, time.process_time()))


@dataclass
class _Worker:
    proc: Any  # multiprocessing BaseProcess
    conn: Connection
    ready: bool = False
    started: float = 0.0
    task: tuple[int, float, float] | None = None  # (item index, wall backstop, dispatch time)
    cpu_idle: float = 0.0  # the worker's CPU seconds when it last reported (= at the next dispatch)


def _stop(workers: list[_Worker]) -> None:
    """Finalizer (also run at interpreter exit): ask politely, then kill what is left."""
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    end = time.monotonic() + 1.0
    for w in workers:
        w.proc.join(max(0.0, end - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1.0)
        w.conn.close()
    workers.clear()


class VerifierPool:
    """A long-lived pool of killable verifier workers. Use as a context manager or call close().

    num_workers: parallel items (size it to the cores you can spare from rollouts).
    timeout_s: default per-item deadline; `map(items, timeout_s=...)` overrides it per call.
    max_memory_mb: address-space cap per worker (None: no cap).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        *,
        max_memory_mb: int | None = 4096,
        start_method: str = "forkserver",
        startup_timeout_s: float = 60.0,
        timeout_retries: int = 1,
    ) -> None:
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError("num_workers must be >= 1 and timeout_s > 0")
        self.num_workers, self.timeout_s, self.max_memory_mb = num_workers, timeout_s, max_memory_mb
        self.startup_timeout_s, self.timeout_retries = startup_timeout_s, timeout_retries
        start_method = _start_method(start_method)
        self.start_method = start_method
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)  # only takes effect if no server runs yet
        self.stats = {"timeouts": 0, "retries": 0, "crashes": 0, "restarts": 0}
        self._startup_deaths = 0  # consecutive workers that died before reporting ready
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one map at a time (the shared default pool may see threads)
        self._finalizer = weakref.finalize(self, _stop, self._workers)
        for _ in range(num_workers):
            self._workers.append(self._spawn())

    @classmethod
    def from_config(cls, cfg: Any) -> VerifierPool:
        """From a `VerifierConfig` (config.py)."""
        return cls(cfg.num_workers, cfg.timeout_s, max_memory_mb=cfg.max_memory_mb, start_method=cfg.start_method,
                   timeout_retries=cfg.timeout_retries)

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.max_memory_mb, self.start_method == "fork"), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent, started=time.monotonic())

    def _replace(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(1.0)
        w.conn.close()
        self._workers[self._workers.index(w)] = self._spawn()
        self.stats["restarts"] += 1

    def map(self, items: Sequence[VerifyItem], timeout_s: float | None = None) -> list[VerifyResult]:
        """Score every item; results in input order. Each item gets `timeout_s` once dispatched."""
        with self._lock:
            if not self._workers:
                raise RuntimeError("VerifierPool is closed")
            return self._map(items, self.timeout_s if timeout_s is None else timeout_s)

    def _map(self, items: Sequence[VerifyItem], limit: float) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(items)
        queue = deque(range(len(items)))
        tries = [0] * len(items)
        # A worker's start-up is timed from when it was spawned or from this call, whichever is
        # later: a pool made before a long generation must not be failed for the generation's time.
        t_map = time.monotonic()
        while queue or any(w.task for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and w.task is None and queue:
                    i = queue.popleft()
                    try:
                        w.conn.send((i, items[i]))
                        w.task = (i, now + WALL_FACTOR * limit + 1.0, now)
                    except (OSError, ValueError):  # died while idle: not this item's fault
                        queue.appendleft(i)
                        self._replace(w)
                elif not w.ready and now - max(w.started, t_map) > self.startup_timeout_s:
                    raise RuntimeError(f"verifier worker did not start within {self.startup_timeout_s}s")
            waiting = [w for w in self._workers if w.task or not w.ready]
            backstops = [w.task[1] for w in waiting if w.task]
            wait_s = max(0.0, min(min(backstops) - time.monotonic(), _POLL_S)) if backstops else 0.05
            ready = wait([w.conn for w in waiting] + [w.proc.sentinel for w in waiting], wait_s)
            for w in list(waiting):
                if w.conn in ready or w.proc.sentinel in ready:
                    self._receive(w, results)
            for w in list(self._workers):
                if w.task and (overrun := self._overrun(w, limit)):
                    self._timed_out(w, items, results, queue, tries, overrun)
        return results  # type: ignore[return-value]

    def _overrun(self, w: _Worker, limit: float) -> dict | None:
        """Measurements of an item past its deadline (CPU time, or the wall backstop), else None.
        A single-threaded worker's CPU time cannot exceed the wall time, so /proc is read only
        once the wall clock has passed the deadline."""
        i, backstop, t0 = w.task  # type: ignore[misc]
        now = time.monotonic()
        if now - t0 < limit:
            return None
        cpu = cpu_seconds(w.proc.pid)
        used = None if cpu is None else cpu - w.cpu_idle
        if used is None or used >= limit or now >= backstop:
            return {"elapsed_s": round(now - t0, 3), "cpu_s": None if used is None else round(used, 3)}
        return None

    def _timed_out(self, w: _Worker, items: Sequence[VerifyItem], results: list, queue: deque, tries: list, m: dict) -> None:
        i = w.task[0]  # type: ignore[index]
        self._replace(w)
        self.stats["timeouts"] += 1
        item_id = items[i].item_id or f"#{i}"
        if tries[i] < self.timeout_retries:
            tries[i] += 1
            self.stats["retries"] += 1
            log.warning("verifier item %s over its deadline (cpu %ss, wall %ss); retrying on a fresh worker",
                        item_id, m["cpu_s"], m["elapsed_s"])
            queue.appendleft(i)
            return
        log.warning("verifier item %s over its deadline again (cpu %ss, wall %ss); it scores 0 (timeout)",
                    item_id, m["cpu_s"], m["elapsed_s"])
        results[i] = VerifyResult(0.0, Reason.TIMEOUT, {"timeout": True, "retried": tries[i] > 0, **m})

    def _receive(self, w: _Worker, results: list[VerifyResult | None]) -> None:
        try:
            if not w.conn.poll():
                raise EOFError  # only the sentinel fired: the process is gone
            msg = w.conn.recv()
        except (EOFError, OSError):
            if not w.ready:
                # A worker that cannot even start (bad memory cap, broken install) would be
                # replaced forever; a few in a row is a configuration error, so say so.
                w.proc.join(1.0)
                self._startup_deaths += 1
                if self._startup_deaths >= 3:
                    self._finalizer()  # the pool is unusable: close it rather than leave it half-alive
                    raise RuntimeError(f"verifier workers die at start-up (exit code {w.proc.exitcode})")
            if w.task:
                i, _, t0 = w.task
                w.proc.join(1.0)  # reap it, so the exit code (e.g. -9 for SIGKILL) is known
                metrics = {"exitcode": w.proc.exitcode, "elapsed_s": time.monotonic() - t0}
                results[i] = VerifyResult(0.0, Reason.WORKER_CRASHED, metrics)
                self.stats["crashes"] += 1
            self._replace(w)
            return
        if msg[0] == "ready":
            w.ready, w.cpu_idle = True, msg[2]
            self._startup_deaths = 0
        else:
            index, res, w.cpu_idle = msg
            results[index] = res
            w.task = None

    def worker_pids(self) -> list[int]:
        """Current worker process ids (they change as workers are replaced)."""
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
