"""Rollout engines that survive their processes dying (issue 16 item 2).

`EngineGroup` holds a run's engine actors (one `EngineConfig` per slot) and is the only place the
driver calls them: `generate` (prompts sharded over the slots) and `sync_weights` (learner export
-> every engine). When a slot's engine dies during a call, the group

1. closes what is left of the old actor, kills it, and kills the EngineCore (and workers) it
   left behind on its node (`rollout.reaper.kill_processes`; vLLM's EngineCore outlives a
   SIGKILLed parent);
2. starts a fresh actor with the slot's `EngineConfig` and loads the current policy weights into
   it, by the same learner export -> engine load path as the weight sync after an update;
3. submits the slot's lost call again (the same requests and per-request seeds), and goes on.

A failure is logged and counted (`restarts`, reported per iteration as `engine_restarts`).

What counts as an engine failure: a call fails and the engine then reports itself dead
(`VLLMEngine.dead_reason`: its EngineCore exited, which also fails the call in flight at once) or
cannot be reached (its actor died: `RayActorError`, `ActorDiedError`, `ActorUnavailableError`).
Any other error (a bad request, a learner that died while exporting weights) is raised as before.
A call that outlives `timeout_s` is an error too, not a restart: a slow engine is not known to be
dead.

Each slot counts its failures in a row; a call that succeeds resets them. A slot that fails more
than `max_restarts` times in a row (a restart that fails counts too) ends the run with
`EngineRestartsExhausted`, whose message names the checkpoint to resume from. Restarts after the
first in a row wait a little longer each time (`RestartBudget.wait_s`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rollout.engine import GenRequest, Generation, SamplingConfig, merge_shards, sample_offsets, shard_bounds
from rollout.reaper import kill_processes

PROBE_TIMEOUT_S = 60.0  # how long a failed engine gets to say whether it is alive
CLOSE_TIMEOUT_S = 10.0  # a dead engine's close(): its EngineCore is already gone, so it is quick


def next_ready(pending: dict, deadline: float, what: str, timeout_s: float) -> tuple[Any, Any]:
    """The first of `pending` (object ref -> key) to finish, removed from it: (ref, key). Raises
    GetTimeoutError naming the keys still pending once `deadline` (time.monotonic()) has passed."""
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
    if not ready:
        raise ray.exceptions.GetTimeoutError(f"{what} {sorted(pending.values())} did not answer within {timeout_s:.0f}s")
    return ready[0], pending.pop(ready[0])


class EngineRestartsExhausted(RuntimeError):
    """An engine slot failed more times in a row than `rollout.max_engine_restarts` allows."""


@dataclass
class RestartBudget:
    """Failures in a row of each engine slot, and the wait before each restart."""

    max_restarts: int = 3  # restarts in a row allowed per slot (0: the first failure ends the run)
    backoff_s: float = 2.0  # wait before the second restart in a row; doubles after that
    backoff_max_s: float = 60.0
    in_a_row: dict[int, int] = field(default_factory=dict)

    def failed(self, slot: int) -> int:
        """Record a failure of `slot`; returns its failures in a row, this one included."""
        self.in_a_row[slot] = self.in_a_row.get(slot, 0) + 1
        return self.in_a_row[slot]

    def allows(self, failures: int) -> bool:
        """May a slot with `failures` in a row be restarted once more?"""
        return failures <= self.max_restarts

    def wait_s(self, failures: int) -> float:
        """Seconds to wait before restarting a slot with `failures` in a row: none for the first
        (an engine killed once is restarted at once), then backoff_s, 2 x backoff_s, ... capped."""
        if failures <= 1:
            return 0.0
        return min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 2))

    def succeeded(self, slot: int) -> None:
        self.in_a_row.pop(slot, None)


def give_up_message(slot: int, failures: int, why: str, max_restarts: int, checkpoint: str | None) -> str:
    where = (f"resume with --resume, which continues from {checkpoint}" if checkpoint
             else "no checkpoint was written yet, so --resume starts the run over at iteration 0")
    return (f"engine {slot} failed {failures} times in a row (last: {why}); rollout.max_engine_restarts="
            f"{max_restarts} allows {max_restarts} restarts in a row, so the run stops here: {where}")


WeightExport = Callable[[], tuple[Any, list]]  # () -> (buckets ref, other refs to wait for)


def close_engines(actors: list, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Stop engine actors within about `timeout_s`: each shuts its vLLM engine down first (killing
    the actor alone can orphan its EngineCore); one still busy, or dead, is killed when the wait
    runs out, and every one is killed however the wait ends."""
    try:
        if actors:
            ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=timeout_s)
    finally:
        for a in actors:
            ray.kill(a)


class EngineGroup:
    """The engine actors of a run, replaced when they die (module docstring).

    actor_cls: the Ray actor class (`make_rollout_actor`); configs: one EngineConfig per slot.
    export_weights: returns refs to the current policy's weight buckets (learner rank 0) and any
    other refs that must finish with it (ZeRO-3 ranks); None: restarted engines keep the weights
    they load from their config's checkpoint. resume_hint: the checkpoint a resume would use
    (for the give-up error). `actors` is one list for the group's lifetime, updated in place, so
    a teardown holding it (rl.train.RunActors) stops the replacements too.
    """

    def __init__(self, actor_cls: Any, configs: Sequence[Any], timeout_s: float, *, max_restarts: int = 3,
                 export_weights: WeightExport | None = None, resume_hint: Callable[[], str | None] | None = None,
                 log: Callable[[str], None] | None = None, probe_timeout_s: float = PROBE_TIMEOUT_S):
        self.actor_cls, self.configs, self.timeout_s = actor_cls, list(configs), timeout_s
        self.export_weights, self.resume_hint = export_weights, resume_hint
        self.log = log or (lambda msg: print(msg, flush=True))
        self.probe_timeout_s = probe_timeout_s
        self.budget = RestartBudget(max_restarts)
        self.actors: list = []
        self.restarts = 0  # engines started to replace dead ones
        self._procs: dict[int, dict] = {}  # slot -> VLLMEngine.processes() of its actor

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> list:
        """Create the actors (their engines load in the background); `ready()` waits for them."""
        self.actors[:] = [self.actor_cls.remote(c) for c in self.configs]
        return self.actors

    def ready(self) -> None:
        ray.get([a.ready.remote() for a in self.actors], timeout=self.timeout_s)
        self._record_processes(range(len(self.actors)))

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop every engine of the group (`close_engines`)."""
        close_engines(self.actors, timeout_s)

    # -- calls with recovery ----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest | list[int]], sampling: SamplingConfig) -> list[Generation]:
        """Prompts sharded over the engines, results in prompt order; a shard whose engine died is
        generated again on its replacement, with the same seeds. With `sampling.seed`, each shard's
        base seed is offset by its first request, so request i's samples get the seeds it would
        get in one engine's call (`SamplingConfig.seed`), whatever the number of engines. The offset
        counts the samples of the requests before the shard (a * n when they all take the call's n)."""
        bounds = shard_bounds(len(requests), len(self.actors))
        shards = {i: list(requests[a:b]) for i, (a, b) in enumerate(bounds) if b > a}
        offsets = sample_offsets(requests, sampling.n)
        seeded = {i: sampling if sampling.seed is None else
                  sampling.model_copy(update={"seed": sampling.seed + offsets[bounds[i][0]]})
                  for i in shards}
        results = self._call(lambda slot, actor: actor.generate.remote(shards[slot], seeded[slot]), shards)
        return merge_shards(results, bounds)

    def sync_weights(self) -> None:
        """The current policy weights into every engine; an engine that dies meanwhile is replaced
        by one loaded with the same weights."""
        if self.export_weights is None:
            raise RuntimeError("EngineGroup.sync_weights needs export_weights")
        buckets, extra = self.export_weights()
        self._call(lambda slot, actor: actor.load_weights.remote(buckets), range(len(self.actors)),
                   redo=False, weights=buckets, extra=extra)

    def _call(self, submit: Callable[[int, Any], Any], slots: Iterable[int], *, redo: bool = True,
              weights: Any = None, extra: Sequence = ()) -> dict[int, Any]:
        """`submit(slot, actor)` on each slot's engine; wait for all (each round of waiting bounded
        by timeout_s). A slot whose engine died is restarted and, with `redo`, submitted again;
        without it the restart's weight load stands in for the call (its result is None)."""
        slots = list(slots)
        pending = {submit(s, self.actors[s]): s for s in slots}
        out: dict[int, Any] = {}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            ref, slot = next_ready(pending, deadline, "engines", self.timeout_s)
            try:
                out[slot] = ray.get(ref)
                continue
            except Exception as e:
                why = self._failure(slot, e)
                if why is None:
                    raise  # the engine is alive: an ordinary error
            self._restart(slot, why, weights)
            if redo:
                pending[submit(slot, self.actors[slot])] = slot
                deadline = time.monotonic() + self.timeout_s
            else:
                out[slot] = None
        if extra:
            ray.get(list(extra), timeout=self.timeout_s)
        for s in slots:
            self.budget.succeeded(s)
        return out

    def _failure(self, slot: int, exc: BaseException) -> str | None:
        """Why slot's engine is dead after a call raised `exc`; None when it says it is alive."""
        try:
            reason = ray.get(self.actors[slot].dead_reason.remote(), timeout=self.probe_timeout_s)
        except ray.exceptions.RayActorError as e:  # ActorDiedError, ActorUnavailableError
            return f"its actor is gone ({type(e).__name__})"
        except ray.exceptions.GetTimeoutError:
            return f"its actor did not answer within {self.probe_timeout_s:.0f}s after {type(exc).__name__}"
        return None if reason is None else str(reason)

    def _restart(self, slot: int, why: str, weights: Any = None) -> None:
        """Replace slot's engine with a fresh one holding the current weights, retrying (with
        backoff) while the replacement fails too, until the slot's budget runs out."""
        while True:
            n = self.budget.failed(slot)
            if not self.budget.allows(n):
                self._discard(slot)  # an EngineCore its dead actor left must not outlive the run
                hint = self.resume_hint() if self.resume_hint else None
                raise EngineRestartsExhausted(give_up_message(slot, n, why, self.budget.max_restarts, hint))
            wait = self.budget.wait_s(n)
            self.log(f"[engine {slot}] died: {why}; restarting it (restart {n} in a row of at most "
                     f"{self.budget.max_restarts}{f', in {wait:.0f}s' if wait else ''})")
            time.sleep(wait)
            self._discard(slot)
            t = time.perf_counter()
            self.actors[slot] = self.actor_cls.remote(self.configs[slot])
            self.restarts += 1
            try:
                ray.get(self.actors[slot].ready.remote(), timeout=self.timeout_s)
                self._record_processes([slot])
                self._load_current_weights(slot, weights)
            except Exception as e:
                again = self._failure(slot, e)
                if again is None:
                    raise
                why = f"its replacement failed: {again}"
                continue
            self.log(f"[engine {slot}] restarted with the current policy weights in {time.perf_counter() - t:.1f}s")
            return

    def _load_current_weights(self, slot: int, weights: Any) -> None:
        extra: list = []
        if weights is None:
            if self.export_weights is None:
                return
            weights, extra = self.export_weights()
        ray.get([self.actors[slot].load_weights.remote(weights), *extra], timeout=self.timeout_s)

    # -- what a dead engine leaves ------------------------------------------------------------------

    def _record_processes(self, slots: Iterable[int]) -> None:
        """Remember each engine's node and EngineCore/worker pids (best effort)."""
        for s in slots:
            try:
                self._procs[s] = ray.get(self.actors[s].processes.remote(), timeout=self.probe_timeout_s)
            except Exception:
                self._procs.pop(s, None)

    def _discard(self, slot: int) -> None:
        """Close, kill and reap slot's current engine, whatever state it is in."""
        old = self.actors[slot]
        try:
            ray.get(old.close.remote(), timeout=CLOSE_TIMEOUT_S)
        except Exception:
            pass  # dead, or stuck: killed next
        try:
            ray.kill(old)
        except Exception:
            pass
        info = self._procs.pop(slot, None)
        if info and info.get("procs"):
            self._reap(slot, info)

    def _reap(self, slot: int, info: dict) -> None:
        """Kill the recorded EngineCore/worker processes that outlived the actor, on its node."""
        task = ray.remote(num_cpus=0)(kill_processes)
        if info.get("node_id"):
            task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(info["node_id"], soft=False))
        try:
            killed = ray.get(task.remote(info["procs"]), timeout=self.probe_timeout_s)
        except Exception as e:  # the node is gone too: nothing to reap there
            self.log(f"[engine {slot}] could not reap its processes ({type(e).__name__}: {e})")
            return
        if killed:
            self.log(f"[engine {slot}] killed {killed} process(es) its dead actor left behind")
