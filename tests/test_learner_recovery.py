"""Learner failure survived in-run (issue 16 item 3), without Ray: which errors count as a dead
rank, the learner group on fake actors (which rank died, restart from the checkpoint, the restart
budget and its error), the loop's rewind, and going back to a hand-made checkpoint the way
rl/train.py does after a restart (logs cut to the checkpoint's rows, sampler and RNG restored).

    pytest tests/test_learner_recovery.py -q   # a few seconds

The real thing (a SIGKILLed learner rank in a short run on a local Ray cluster):
    python -m experiments.chaos --target learner --at-iteration 2
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch

from rl import learner_group
from rl.checkpoint import (TrainerState, begin_checkpoint, commit_checkpoint, prepare_run_dir, restore_driver,
                           rng_state, save_trainer_state)
from rl.learner_group import (Iterations, LearnerDied, LearnerGroup, LearnerRestartBudget, LearnerRestartsExhausted,
                              give_up_message, is_actor_death, restart_message)
from rl.metrics import METRICS_LOG, RUN_LOGS, SAMPLES_LOG, RunLogger
from rl.sampling import build_sampler

CKPT = "runs/r/checkpoints/iter_00001"

# -- which errors are a dead actor ---------------------------------------------------------------


def task_error(cause: BaseException) -> ray.exceptions.RayTaskError:
    return ray.exceptions.RayTaskError("Learner.train_iteration", "Traceback ...", cause)


def test_actor_deaths_directly_or_as_the_cause_of_a_task_error():
    assert is_actor_death(ray.exceptions.ActorDiedError())
    assert is_actor_death(ray.exceptions.ActorUnavailableError("gone", None))
    assert is_actor_death(ray.exceptions.RayActorError())
    # an engine's load_weights given the buckets of a rank that died: the cause is the death
    assert is_actor_death(task_error(ray.exceptions.ActorDiedError()))
    assert is_actor_death(task_error(ray.exceptions.ActorDiedError()).as_instanceof_cause())


def test_ordinary_errors_and_timeouts_are_not_actor_deaths():
    assert not is_actor_death(RuntimeError("Connection closed by peer"))  # a survivor's gloo error
    assert not is_actor_death(task_error(RuntimeError("Connection closed by peer")))
    assert not is_actor_death(ray.exceptions.GetTimeoutError("slow"))  # slow is not known to be dead
    assert not is_actor_death(None)


def test_a_death_raised_from_another_error_counts():
    try:
        try:
            raise ray.exceptions.ActorDiedError()
        except ray.exceptions.ActorDiedError as e:
            raise RuntimeError("export failed") from e
    except RuntimeError as wrapped:
        assert is_actor_death(wrapped)


# -- the restart budget and the messages -------------------------------------------------------------


def test_budget_row_ends_only_once_the_iteration_of_the_last_death_is_finished():
    b = LearnerRestartBudget(max_restarts=2)
    assert b.failed(3) == 1  # died at iteration 3, the checkpoint is at 1: 2 and 3 are redone
    b.finished(2)  # a redone iteration before the death: still the same row
    assert b.failed(3) == 2 and b.allows(2)
    assert b.failed(3) == 3 and not b.allows(3)  # dies at 3 every time: the run stops
    b.finished(3)
    assert b.in_a_row == 0 and b.failed(5) == 1


def test_budget_of_zero_allows_no_restart_and_backoff_doubles_to_a_cap():
    assert not LearnerRestartBudget(max_restarts=0).allows(1)
    b = LearnerRestartBudget(backoff_s=2.0, backoff_max_s=10.0)
    assert [b.wait_s(n) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 10.0]


def test_give_up_message_names_the_rank_the_iteration_the_limit_and_the_checkpoint():
    msg = give_up_message(LearnerDied([1], "ActorDiedError: killed"), 3, 4, 3, CKPT)
    assert msg.startswith("learner rank 1 died at iteration 3 (ActorDiedError: killed)")
    assert "learner.max_restarts=3" in msg and f"--resume, which continues from {CKPT}" in msg
    none_yet = give_up_message(LearnerDied([0, 1], "x"), 0, 1, 0, None)
    assert none_yet.startswith("learner ranks 0, 1 died") and "starts the run over at iteration 0" in none_yet


def test_restart_message_says_where_from_and_which_iterations_are_redone():
    died = LearnerDied([1], "x")
    assert restart_message(died, 3, Path(CKPT), "/p", range(2, 4)) == (
        f"learner rank 1 died at iteration 3: restarted the learner group from {CKPT}, redoing iterations 2..3")
    assert restart_message(died, 0, None, "/p", range(0, 1)).endswith(
        "from the initial policy /p (no checkpoint yet), redoing iteration 0")


def test_iterations_rewind_to_the_checkpoint_then_go_on_to_the_end():
    its, seen = Iterations(0, 6), []
    for it in its:
        seen.append(it)
        if it == 3 and seen.count(3) == 1:  # a rank dies at 3, the checkpoint is at 1
            its.rewind(2)
    assert seen == [0, 1, 2, 3, 2, 3, 4, 5]
    assert list(Iterations(4, 4)) == []


# -- the learner group on fake actors ------------------------------------------------------------------


class Ref:
    def __init__(self, value=None, exc: BaseException | None = None, ready: bool = True):
        self.value, self.exc, self.ready = value, exc, ready


class FakeRay:
    """What LearnerGroup uses of Ray. Calls run when submitted; a "busy" ref is never ready."""

    exceptions = ray.exceptions

    def __init__(self):
        self.killed: list = []

    def get(self, ref, timeout=None):
        if ref.exc is not None:
            raise ref.exc
        return ref.value

    def wait(self, refs, num_returns=1, timeout=None):
        ready = [r for r in refs if r.ready][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def kill(self, actor):
        self.killed.append(actor)
        actor.dead = True


class _Method:
    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner):
        return SimpleNamespace(remote=lambda *args, **kwargs: obj.call(self.name, *args))


class FakeLearner:
    """A rank. `plan` maps a method to what its first call does: "die" (the actor dies: this call
    and every later one fail with ActorDiedError), "busy" (it never returns: stuck in a collective
    with a dead peer), or an exception (an ordinary error; the rank stays alive)."""

    train_iteration, save, load, ping = (_Method() for _ in range(4))

    def __init__(self, rank: int, policy: str, plan: dict):
        self.rank, self.policy, self.plan, self.dead, self.calls, self.busy = rank, policy, dict(plan), False, [], False

    def call(self, name, *args):
        self.calls.append((name, *args))
        what = self.plan.pop(name, None)
        if what == "die":
            self.dead = True
        if self.dead:
            return Ref(exc=ray.exceptions.ActorDiedError())
        if what == "busy":
            self.busy = True
        if self.busy:  # an actor runs one call at a time: everything after waits too
            return Ref(ready=False)
        if isinstance(what, BaseException):
            return Ref(exc=what)
        return Ref(value=f"{name}@{self.rank}")


class Starter:
    """start_learners: each start takes the next list of per-rank plans (none left: healthy)."""

    def __init__(self, num_ranks: int, *groups: list[dict]):
        self.num_ranks, self.groups, self.started = num_ranks, list(groups), []

    def __call__(self, ranks: list, policy: str) -> None:
        plans = self.groups.pop(0) if self.groups else [{}] * self.num_ranks
        ranks[:] = [FakeLearner(r, policy, p) for r, p in enumerate(plans)]
        self.started.append(list(ranks))
        if any(p.get("setup") == "die" for p in plans):  # start_learners' ray.get on setup
            for r, p in zip(ranks, plans):
                r.dead = r.dead or p.get("setup") == "die"
            raise ray.exceptions.ActorDiedError()


@pytest.fixture
def fake_ray(monkeypatch):
    fr = FakeRay()
    monkeypatch.setattr(learner_group, "ray", fr)
    monkeypatch.setattr(learner_group.time, "sleep", lambda s: None)
    return fr


def make_group(starter: Starter, max_restarts: int = 3, log: list | None = None) -> LearnerGroup:
    g = LearnerGroup(starter, timeout_s=60, max_restarts=max_restarts, resume_hint=lambda: CKPT,
                     log=(log.append if log is not None else lambda m: None), probe_timeout_s=0.2, probe_grace_s=0.1)
    g.start("/init")
    return g


def train(g: LearnerGroup) -> list:
    return g.run(lambda r, actor: actor.train_iteration.remote(f"batch{r}"))


def test_calls_return_in_rank_order(fake_ray):
    g = make_group(Starter(3))
    assert train(g) == ["train_iteration@0", "train_iteration@1", "train_iteration@2"]
    assert g.ranks[2].calls == [("train_iteration", "batch2")]


def test_a_dead_rank_is_named_even_when_a_survivor_fails_first_with_an_ordinary_error(fake_ray):
    # rank 0's collective loses its peer (a gloo error, submitted and failed first); rank 1 is dead
    g = make_group(Starter(2, [{"train_iteration": RuntimeError("Connection closed by peer")},
                               {"train_iteration": "die"}]))
    with pytest.raises(LearnerDied) as e:
        train(g)
    assert e.value.ranks == [1] and e.value.why == "RuntimeError: Connection closed by peer"
    assert str(e.value) == "learner rank 1 died (RuntimeError: Connection closed by peer)"


def test_survivors_stuck_in_a_collective_count_as_alive(fake_ray):
    g = make_group(Starter(3, [{"train_iteration": "busy"}, {"train_iteration": "die"}, {"train_iteration": "busy"}]))
    with pytest.raises(LearnerDied) as e:
        train(g)
    assert e.value.ranks == [1]


def test_an_ordinary_error_with_every_rank_alive_is_raised_as_it_is(fake_ray):
    g = make_group(Starter(2, [{"train_iteration": ValueError("bad batch")}, {}]))
    with pytest.raises(ValueError, match="bad batch"):
        train(g)
    assert g.restarts == 0 and fake_ray.killed == []


def test_a_death_seen_by_another_call_is_a_learner_death_through_the_guard(fake_ray):
    """The engines' weight sync fails with the dead rank's error as its cause."""
    g = make_group(Starter(2))
    g.ranks[0].dead = True
    with pytest.raises(LearnerDied) as e, g.guard():
        raise task_error(ray.exceptions.ActorDiedError())
    assert e.value.ranks == [0] and isinstance(e.value.__cause__, ray.exceptions.RayTaskError)
    with pytest.raises(KeyError), g.guard():  # an engine-side error while the learners are fine
        g.ranks[0].dead = False
        raise KeyError("engine")


def test_restart_kills_every_rank_and_starts_a_group_from_the_checkpoint(fake_ray):
    log: list = []
    starter = Starter(2, [{}, {"save": "die"}])
    g = make_group(starter, log=log)
    old = list(g.ranks)
    with pytest.raises(LearnerDied) as e:
        g.run(lambda r, actor: actor.save.remote("staging"))
    synced = []
    g.restart(e.value, 3, f"{CKPT}/policy", Path(CKPT), then=lambda: synced.append([a.policy for a in g.ranks]))
    assert fake_ray.killed == old  # the survivor too: its process group lost a member
    assert [a.policy for a in g.ranks] == [f"{CKPT}/policy"] * 2 and g.ranks[0] is not old[0]
    assert [a.calls for a in g.ranks] == [[("load", CKPT)], [("load", CKPT)]]
    assert synced == [[f"{CKPT}/policy"] * 2]  # the engines get the restored weights, after the load
    assert g.restarts == 1 and g.budget.in_a_row == 1
    assert log[0].startswith("[learner] rank 1 died at iteration 3 (ActorDiedError") and "restart 1 in a row" in log[0]


def test_restart_before_the_first_checkpoint_starts_from_the_initial_policy_without_a_load(fake_ray):
    g = make_group(Starter(1))
    g.restart(LearnerDied([0], "x"), 0, "/init", None)
    assert g.ranks[0].policy == "/init" and g.ranks[0].calls == []


def test_a_replacement_that_dies_while_loading_is_replaced_again(fake_ray):
    g = make_group(Starter(2, [{}, {}], [{"load": "die"}, {}]))
    g.restart(LearnerDied([1], "x"), 3, "/ck/policy", Path("/ck"))
    assert g.restarts == 2 and g.budget.in_a_row == 2 and not any(a.dead for a in g.ranks)


def test_a_rank_that_dies_at_startup_is_restarted(fake_ray):
    starter = Starter(2, [{}, {"setup": "die"}])
    g = make_group(starter)
    assert len(starter.started) == 2 and g.restarts == 1 and not any(a.dead for a in g.ranks)


def test_spent_budget_stops_the_run_naming_the_rank_and_the_checkpoint(fake_ray):
    g = make_group(Starter(2), max_restarts=1)
    g.restart(LearnerDied([1], "ActorDiedError: a"), 3, "/ck/policy", Path("/ck"))
    g.finished(2)  # redone iteration 2; the rank dies at 3 again
    last = list(g.ranks)
    with pytest.raises(LearnerRestartsExhausted) as e:
        g.restart(LearnerDied([1], "ActorDiedError: b"), 3, "/ck/policy", Path("/ck"))
    msg = str(e.value)
    assert msg.startswith("learner rank 1 died at iteration 3 (ActorDiedError: b): 2 failures in a row")
    assert f"--resume, which continues from {CKPT}" in msg and "learner.max_restarts=1" in msg
    assert all(a in fake_ray.killed for a in last) and g.ranks == [] and g.restarts == 1


def test_a_run_past_the_iteration_of_the_death_starts_a_new_row(fake_ray):
    g = make_group(Starter(1), max_restarts=1)
    g.restart(LearnerDied([0], "x"), 3, "/ck/policy", Path("/ck"))
    g.finished(3)
    g.restart(LearnerDied([0], "x"), 5, "/ck/policy", Path("/ck"))  # allowed: a new row
    assert g.restarts == 2


# -- back to a hand-made checkpoint, as rl/train.py does after a restart ----------------------------


def sampler_rows():
    from prompts.schema import PromptRow

    return [PromptRow(id=f"q{i:02d}", prompt=[{"role": "user", "content": f"q{i}"}], answer="1", difficulty=i % 4 + 1)
            for i in range(20)]


SAMPLER_CFG = {"kind": "prioritized", "floor": 0.05}


def run_iterations(sampler, its, run: Path | None = None, logger: RunLogger | None = None) -> list[list[str]]:
    """What the driver does per iteration that a restore must undo: draw prompts (sampler RNG),
    update the tracker, draw from the driver RNG, write 1 metrics row and 2 sample rows."""
    picks = []
    for it in its:
        ids = sampler.sample(4, it)
        sampler.update(it, [(p, [float(random.random() < 0.5) for _ in range(3)]) for p in ids])
        picks.append(ids + [f"{torch.rand(1).item():.6f}", f"{np.random.rand():.6f}"])
        if logger is not None:
            logger.log({"iteration": it})
            logger.samples([{"iteration": it, "j": 0}, {"iteration": it, "j": 1}])
    return picks


def rows(path: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def checkpoint(run: Path, state: TrainerState) -> Path:
    staging = begin_checkpoint(run, state.iteration)
    (staging / "policy").mkdir()
    save_trainer_state(staging, state)
    return commit_checkpoint(staging, 2)[0]


def test_a_restart_goes_back_to_the_checkpoint_as_a_resume_does(tmp_path):
    """Iterations 0-1, a checkpoint at 1, iterations 2-3 logged, a rank dies at 3: the logs are
    cut to the checkpoint's rows, and the sampler and RNG draw iterations 2-3 again exactly."""
    run = tmp_path / "run"
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    sampler = build_sampler(SAMPLER_CFG, sampler_rows(), seed=3)
    logger = RunLogger(run, tensorboard=False)
    run_iterations(sampler, [0, 1], run, logger)
    ck = checkpoint(run, TrainerState(1, 3, sampler.state_dict(), 12.5, {"pass_at_1": 0.5}, dict(logger.rows),
                                      rng_state(), skipped_updates=1, engine_restarts=2, learner_restarts=0))
    first_time = run_iterations(sampler, [2, 3], run, logger)
    logger.close()
    assert rows(run / METRICS_LOG) == [0, 1, 2, 3] and len(rows(run / SAMPLES_LOG)) == 8

    back = prepare_run_dir(run, resume=True, initial=None)
    assert back.checkpoint == ck and back.start_iteration == 2 and back.policy("/init") == str(ck / "policy")
    assert rows(run / METRICS_LOG) == [0, 1] and rows(run / SAMPLES_LOG) == [0, 0, 1, 1]
    assert back.dropped_rows == {METRICS_LOG: 2, SAMPLES_LOG: 4} and back.log_changes()[0].endswith(
        "dropped 2 from metrics.jsonl and 4 from samples.jsonl rows")
    s = back.state
    assert (s.skipped_updates, s.engine_restarts, s.wall_s, s.start_eval) == (1, 2, 12.5, {"pass_at_1": 0.5})

    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # the abandoned timeline moved them on
    restore_driver(s, sampler)
    logger = RunLogger(run, tensorboard=False, append=True, purge_step=back.start_iteration)
    assert logger.rows == {METRICS_LOG: 2, SAMPLES_LOG: 4}
    assert run_iterations(sampler, [2, 3], run, logger) == first_time  # same draws, same RNG
    logger.close()
    assert rows(run / METRICS_LOG) == [0, 1, 2, 3]  # each iteration once


def test_a_restart_before_the_first_checkpoint_goes_back_to_the_initial_state(tmp_path):
    run = tmp_path / "run"
    random.seed(1)
    sampler = build_sampler(SAMPLER_CFG, sampler_rows(), seed=3)
    initial = TrainerState(-1, 3, sampler.state_dict(), 4.0, None, {name: 0 for name in RUN_LOGS}, rng_state())
    logger = RunLogger(run, tensorboard=False)
    first_time = run_iterations(sampler, [0, 1], run, logger)
    logger.close()

    back = prepare_run_dir(run, resume=True, initial=initial)
    assert back.checkpoint is None and back.state is initial and back.start_iteration == 0
    assert back.policy("/init") == "/init"
    assert (run / METRICS_LOG).read_text() == "" and (run / SAMPLES_LOG).read_text() == ""
    assert back.dropped_rows == {METRICS_LOG: 2, SAMPLES_LOG: 4}
    restore_driver(back.state, sampler)
    assert run_iterations(sampler, [0, 1]) == first_time


def test_a_resume_without_a_checkpoint_still_starts_afresh():
    """At startup no initial state is given: --resume without a checkpoint behaves as before."""
    point = prepare_run_dir(Path("/nonexistent/run"), resume=True)
    assert point.state is None and point.start_iteration == 0
    restore_driver(None, sampler=None)  # nothing to restore, nothing touched


def test_trainer_state_keeps_the_learner_counters_and_reads_older_checkpoints(tmp_path):
    s = TrainerState(4, 0, {}, 1.0, learner_restarts=2, redone_iterations=3)
    save_trainer_state(tmp_path, s)
    d = json.loads((tmp_path / "trainer_state.json").read_text())
    assert d["learner_restarts"] == 2 and d["redone_iterations"] == 3
    old = {k: v for k, v in d.items() if k not in ("learner_restarts", "redone_iterations")}
    assert TrainerState.from_dict(old).learner_restarts == 0
