"""Learner ranks that survive one of them dying (issue 16 item 3).

`LearnerGroup` holds a run's learner rank actors (`rl.learner.Learner`) and is the only place the
driver waits on them. When a call fails and a rank turns out to be dead, it raises `LearnerDied`
(which ranks, why), and the driver (rl/train.py)

1. kills every rank: the survivors are stuck in, or fail, a collective with the dead one, and a
   torch.distributed group takes no new member (so Ray's own actor restarts would not help);
2. starts a fresh group from the latest complete checkpoint's policy and loads its DeepSpeed and
   RNG states (`restart`), or from the run's initial policy when none was written yet, then
   pushes those weights into the engines;
3. cuts the run logs back to that checkpoint and restores the driver's state as --resume does
   (`rl.checkpoint.prepare_run_dir`, `restore_driver`), and redoes the iterations since the
   checkpoint (`Iterations.rewind`). Restarts are counted (`learner_restarts`), redone
   iterations marked (`redone`).

What counts as a learner death: a learner call, or one that waits on a learner's result (the
engines' weight sync), fails or outlives `timeout_s`, and a probe (`Learner.ping`) then finds a
rank whose actor is gone (`is_actor_death`: RayActorError, i.e. ActorDiedError or
ActorUnavailableError). The failed call's own error does not tell: the surviving ranks fail with
an ordinary error when their collective loses a peer. A failure while every rank answers (or is
busy) is raised as before.

`learner.max_restarts` bounds the restarts in a row. A row ends only once the run has finished
the iteration the last death happened at: a rank that dies at the same iteration every time
would otherwise loop for ever through the redone iterations before it. When the budget is spent
the run stops with `LearnerRestartsExhausted`, naming the rank(s) and the checkpoint to resume
from.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ray

from rollout.recovery import next_ready

PROBE_TIMEOUT_S = 30.0  # how long a probe waits for ranks that are busy (stuck in a collective)
PROBE_GRACE_S = 2.0  # once one rank is found dead, how long the others still get to answer


def is_actor_death(exc: BaseException | None) -> bool:
    """Is `exc` a Ray actor being gone (RayActorError: ActorDiedError, ActorUnavailableError),
    raised directly or as the cause of a task's error (a task given a dead actor's result)?"""
    for _ in range(8):  # a cause chain is short; a cycle must not loop
        if exc is None:
            return False
        if isinstance(exc, ray.exceptions.RayActorError):
            return True
        exc = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc.__cause__
    return False


class LearnerDied(RuntimeError):
    """A learner call failed and ranks `ranks` were found dead: the group must be restarted."""

    def __init__(self, ranks: Sequence[int], why: str):
        self.ranks, self.why = sorted(ranks), why
        super().__init__(f"learner {ranks_text(self.ranks)} died ({why})")


class LearnerRestartsExhausted(RuntimeError):
    """The learner group died more times in a row than `learner.max_restarts` allows."""


def ranks_text(ranks: Sequence[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line (a RayTaskError carries the remote traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


@dataclass
class LearnerRestartBudget:
    """Learner group failures in a row, and the wait before each restart."""

    max_restarts: int = 3  # restarts in a row allowed (0: the first death ends the run)
    backoff_s: float = 2.0  # wait before the second restart in a row; doubles after that
    backoff_max_s: float = 60.0
    in_a_row: int = 0
    until: int = -1  # the iteration of the last death: finishing it ends the row

    def failed(self, iteration: int) -> int:
        """Record a death at `iteration`; returns the failures in a row, this one included."""
        self.in_a_row += 1
        self.until = max(self.until, iteration)
        return self.in_a_row

    def allows(self, failures: int) -> bool:
        return failures <= self.max_restarts

    def wait_s(self, failures: int) -> float:
        """None before the first restart in a row, then backoff_s, 2 x backoff_s, ... capped."""
        return 0.0 if failures <= 1 else min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 2))

    def finished(self, iteration: int) -> None:
        """The run finished `iteration`: once past the last death, the row is over."""
        if iteration >= self.until:
            self.in_a_row = 0


def give_up_message(death: LearnerDied, iteration: int, failures: int, max_restarts: int,
                    checkpoint: str | None) -> str:
    where = (f"resume with --resume, which continues from {checkpoint}" if checkpoint
             else "no checkpoint was written yet, so --resume starts the run over at iteration 0")
    return (f"learner {ranks_text(death.ranks)} died at iteration {iteration} ({death.why}): {failures} "
            f"failures in a row, and learner.max_restarts={max_restarts} allows {max_restarts} restarts in a "
            f"row, so the run stops here: {where}")


def restart_message(death: LearnerDied, iteration: int, checkpoint: Path | None, policy: str,
                    redo: range) -> str:
    """The run log's line for a learner restart that sends the run back to `redo.start`."""
    source = str(checkpoint) if checkpoint is not None else f"the initial policy {policy} (no checkpoint yet)"
    if not redo:
        what = "nothing to redo"
    elif len(redo) == 1:
        what = f"redoing iteration {redo.start}"
    else:
        what = f"redoing iterations {redo.start}..{redo[-1]}"
    return (f"learner {ranks_text(death.ranks)} died at iteration {iteration}: restarted the learner group from "
            f"{source}, {what}")


class Iterations:
    """range(start, stop) for the training loop, which a learner restart sends back to an earlier
    iteration (`rewind`): the iteration after the checkpoint it restored."""

    def __init__(self, start: int, stop: int):
        self.next, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        while self.next < self.stop:
            it, self.next = self.next, self.next + 1
            yield it

    def rewind(self, to: int) -> None:
        self.next = to


StartRanks = Callable[[list, str], Any]  # (ranks, policy): fill `ranks` in place with new actors, set them up


class LearnerGroup:
    """The learner ranks of a run, restarted together when one dies (module docstring).

    start_ranks: creates the rank actors into the list it is given (in place, before waiting on
    them: `ranks` is one list for the group's lifetime, so a teardown holding it, rl.train.RunActors,
    stops the replacements too) and sets them up from a policy checkpoint. resume_hint: the
    checkpoint a resume would use (for the give-up error).
    """

    def __init__(self, start_ranks: StartRanks, timeout_s: float, *, max_restarts: int = 3,
                 resume_hint: Callable[[], str | None] | None = None, log: Callable[[str], None] | None = None,
                 probe_timeout_s: float = PROBE_TIMEOUT_S, probe_grace_s: float = PROBE_GRACE_S):
        self.start_ranks, self.timeout_s, self.resume_hint = start_ranks, timeout_s, resume_hint
        self.log = log or (lambda msg: print(msg, flush=True))
        self.probe_timeout_s, self.probe_grace_s = probe_timeout_s, probe_grace_s
        self.budget = LearnerRestartBudget(max_restarts)
        self.ranks: list = []
        self.restarts = 0  # groups started to replace a dead one

    def __len__(self) -> int:
        return len(self.ranks)

    # -- start and restart -------------------------------------------------------------------

    def start(self, policy: str, checkpoint: Path | None = None, *, iteration: int = 0) -> None:
        """Start the ranks from `policy` and load `checkpoint` (DeepSpeed and RNG states) into
        them; a rank that dies meanwhile is handled as `restart` does."""
        try:
            self._start(policy, checkpoint)
        except LearnerDied as death:
            self.restart(death, iteration, policy, checkpoint)

    def _start(self, policy: str, checkpoint: Path | None) -> None:
        with self.guard():
            self.start_ranks(self.ranks, policy)
        if checkpoint is not None:
            self.run(lambda rank, actor: actor.load.remote(str(checkpoint)))

    def restart(self, death: LearnerDied, iteration: int, policy: str, checkpoint: Path | None,
                then: Callable[[], Any] | None = None) -> None:
        """After `death` at `iteration`: kill every rank, start a fresh group from `policy`, load
        `checkpoint` and call `then` (the engines' weight sync). A replacement that dies too is
        replaced again while the budget lasts; then LearnerRestartsExhausted."""
        while True:
            n = self.budget.failed(iteration)
            if not self.budget.allows(n):
                self.kill()
                hint = self.resume_hint() if self.resume_hint else None
                raise LearnerRestartsExhausted(give_up_message(death, iteration, n, self.budget.max_restarts, hint))
            wait = self.budget.wait_s(n)
            self.log(f"[learner] {ranks_text(death.ranks)} died at iteration {iteration} ({death.why}); restarting "
                     f"all {len(self.ranks)} ranks (restart {n} in a row of at most {self.budget.max_restarts}"
                     f"{f', in {wait:.0f}s' if wait else ''})")
            time.sleep(wait)
            self.kill()
            self.restarts += 1
            t = time.perf_counter()
            try:
                self._start(policy, checkpoint)
                if then is not None:
                    with self.guard():
                        then()
            except LearnerDied as again:
                death = LearnerDied(again.ranks, f"its replacement died: {again.why}")
                continue
            self.log(f"[learner] group restarted from {checkpoint or policy} in {time.perf_counter() - t:.1f}s")
            return

    def finished(self, iteration: int) -> None:
        """The run finished `iteration` (its checkpoint, if due, included)."""
        self.budget.finished(iteration)

    def kill(self) -> None:
        """Kill every rank; the list is emptied, so a failure before the next start probes none."""
        for actor in self.ranks:
            try:
                ray.kill(actor)
            except Exception:
                pass  # already gone
        self.ranks.clear()

    # -- calls ----------------------------------------------------------------------------------

    def run(self, submit: Callable[[int, Any], Any]) -> list:
        """`submit(rank, actor)` on every rank; their results in rank order. LearnerDied when one
        fails or the wait outlives timeout_s and a rank is then found dead."""
        with self.guard():
            return self._get([submit(r, actor) for r, actor in enumerate(self.ranks)])

    def _get(self, refs: list) -> list:
        """ray.get of each ref, raising at the first failure: the other ranks may be stuck in a
        collective with a dead one, and would fail only at the timeout."""
        pending = {ref: i for i, ref in enumerate(refs)}
        out: list = [None] * len(refs)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            ref, rank = next_ready(pending, deadline, "learner ranks", self.timeout_s)
            out[rank] = ray.get(ref)
        return out

    @contextmanager
    def guard(self) -> Iterator[None]:
        """A failure inside (a learner call, or a call that waits on one, like the engines' weight
        sync) becomes LearnerDied when a rank is then found dead; otherwise it is raised as is."""
        try:
            yield
        except LearnerDied:
            raise
        except Exception as e:
            dead = self.dead_ranks()
            if not dead:
                raise
            raise LearnerDied(dead, first_line(e)) from e

    def dead_ranks(self) -> list[int]:
        """Ranks whose actor is gone, by a `ping` to each. A rank still busy (a call in flight, or
        stuck in a collective with a dead peer: an actor runs one call at a time) counts as alive;
        once one rank is found dead, the others get probe_grace_s more to answer."""
        pings = {actor.ping.remote(): r for r, actor in enumerate(self.ranks)}
        dead: list[int] = []
        deadline = time.monotonic() + self.probe_timeout_s
        while pings:
            ready, _ = ray.wait(list(pings), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            rank = pings.pop(ready[0])
            try:
                ray.get(ready[0])
            except Exception as e:
                if is_actor_death(e):
                    dead.append(rank)
                    deadline = min(deadline, time.monotonic() + self.probe_grace_s)
        return sorted(dead)
