"""Learner failure survived in-run (issue 16 item 3), without Ray: which errors count as a dead
rank, the learner group on fake actors (which rank died, restart from the checkpoint, the restart
budget and its error), the loop's rewind, going back to a hand-made checkpoint the way
rl/train.py does after a restart (logs cut to the checkpoint's rows, sampler and RNG restored),
and rl/train.py's own loop with fake engines, learner and verifier, where a rank dies in its
update, its checkpoint save or the weight sync and the run must equal one where nothing died;
the same fake world with the driver killed and resumed with --resume (issue 16 item 4).

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
from rollout import recovery
from rl.checkpoint import (TrainerState, begin_checkpoint, commit_checkpoint, prepare_run_dir, restore_driver,
                           rng_state, save_trainer_state)
from rl.learner_group import (Iterations, LearnerDied, LearnerGroup, LearnerRestartBudget, LearnerRestartsExhausted,
                              give_up_message, is_actor_death, restart_message)
from rl.metrics import METRICS_LOG, RUN_LOGS, SAMPLES_LOG, RunLogger, is_clock_key
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
    monkeypatch.setattr(recovery, "ray", fr)  # rollout.recovery.next_ready waits for the group
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


# -- rl/train.py's loop in a fake world: a learner rank dies mid-run ----------------------------------
#
# Engines, learner ranks and verifiers are fakes (no Ray, vLLM or DeepSpeed); the driver's own code
# (sampler, rewards, metrics, logs, checkpoints, the restart) is real. The fake engine draws its
# "generations" from the driver's `random`, so a redone iteration repeats the first attempt only if
# the sampler and the driver RNG were restored; the fake learner's weights are a version number
# (+1 per update) that its checkpoint keeps, so the engines' weights can be followed.


class WorldLearner:
    train_iteration, save, load, export_weights, ping = (_Method() for _ in range(5))

    def __init__(self, policy: str, dies_at: dict):
        self.policy, self.dies_at, self.dead, self.version, self.calls = policy, dict(dies_at), False, 0, []

    def call(self, name, *args):
        self.calls.append(name)
        if self.calls.count(name) == self.dies_at.get(name):
            self.dead = True
        if self.dead:
            return Ref(exc=ray.exceptions.ActorDiedError())
        if name == "train_iteration":
            self.version += 1
            n = sum(len(mb) for mb in args[0])
            return Ref(value={"steps": 1, "skipped_steps": 0, "grad_norm": 1.0, "loss": 0.5, "kl_k1": 0.0,
                              "kl_k3": 0.0, "sequences": n, "entropy_sum": 0.0, "entropy_tokens": 1, "tokens": n})
        if name == "save":
            (Path(args[0]) / "version").write_text(str(self.version))
        if name == "load":
            self.version = int((Path(args[0]) / "version").read_text())
        return Ref(value=self.version)


class World:
    """What rl.train starts, faked; `dies_at` applies to the first learner group only."""

    def __init__(self, dies_at: dict):
        self.dies_at, self.groups, self.synced = dies_at, [], []

    def start_learners(self, cfg, policy, ranks):
        ranks[:] = [WorldLearner(policy, self.dies_at if not self.groups else {})]
        self.groups.append(ranks[0])

    def engines(self, actor_cls, configs, timeout_s, *, export_weights, **kwargs):
        world = self

        class Engines:
            restarts = 0

            def start(self):
                return []

            def ready(self):
                pass

            def generate(self, requests, sampling):
                from rollout.engine import Generation

                return [Generation(i, [5] * (1 + int(random.random() * 4)), [-0.5], "stop",
                                   "\\boxed{1}" if random.random() < 0.5 else "\\boxed{2}")
                        for i in range(len(requests)) for _ in range(sampling.n)]

            def sync_weights(self):
                buckets, extra = export_weights()
                for ref in [buckets, *extra]:
                    if ref.exc is not None:  # the engine's load got the dead rank's error
                        raise task_error(ref.exc)
                world.synced.append((len(world.groups), buckets.value))  # (which group, its weights)

        return Engines()


class WorldScorer:
    def __init__(self, cfg):
        pass

    def score_detailed(self, rows, texts, finish_reasons):
        from rl.rewards.base import VerifyResult

        return [VerifyResult(1.0, "correct") if "\\boxed{1}" in t else VerifyResult(0.0, "wrong") for t in texts]

    def rewards(self, results):
        return [r.score for r in results]

    def close(self):
        pass


@pytest.fixture(scope="module")
def world_inputs(tmp_path_factory):
    from experiments.arith import generate
    from experiments.tiny_model import build_tiny_checkpoint
    from prompts.schema import write_jsonl

    d = tmp_path_factory.mktemp("world")
    write_jsonl(d / "train.jsonl", generate(seed=0, n_sft=1, n_train=40, n_eval=1)["train"])
    build_tiny_checkpoint(d / "tiny", seed=0)
    return d


def run_world(world_inputs: Path, tmp_path: Path, monkeypatch, dies_at: dict, name: str, *sets: str,
              world: World | None = None, resume: bool = False):
    import rl.train

    world = world or World(dies_at)
    monkeypatch.setattr(rl.train, "connect_ray", lambda cfg: None)
    monkeypatch.setattr(rl.train, "make_rollout_actor", lambda *a: None)
    monkeypatch.setattr(rl.train, "EngineGroup", world.engines)
    monkeypatch.setattr(rl.train, "start_learners", world.start_learners)
    monkeypatch.setattr(rl.train, "Scorer", WorldScorer)
    monkeypatch.setattr(rl.train, "ray", FakeRay())
    monkeypatch.setattr(learner_group, "ray", FakeRay())
    monkeypatch.setattr(recovery, "ray", FakeRay())  # rollout.recovery.next_ready waits for the group
    monkeypatch.setattr(learner_group.time, "sleep", lambda s: None)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"run_name: {name}\noutput_dir: {tmp_path}\npolicy: {world_inputs / 'tiny'}\nseed: 5\n"
                   f"data: {{train_file: {world_inputs / 'train.jsonl'}}}\niterations: 6\ncheckpoint_every: 2\n"
                   "checkpoint_every_minutes: 0\ntensorboard: false\nprompts_per_iteration: 4\nsamples_to_log: 3\n"
                   "rollout: {sampling: {n: 3, max_tokens: 64}}\nlearner: {minibatches_per_iteration: 1}\n"
                   "sampler: {kind: prioritized, floor: 0.05}\n")
    random.seed(11)  # the driver does not seed it (vLLM's sampling has its own seeds); the fake engine uses it
    summary = rl.train.main(["--config", str(cfg), *[x for s in sets for x in ("--set", s)],
                             *(["--resume"] if resume else [])])
    run = tmp_path / name
    metrics = [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()]
    samples = [json.loads(line) for line in (run / SAMPLES_LOG).read_text().splitlines()]
    return world, summary, metrics, samples


RESTART_KEYS = ("learner_restarts", "learner_restarts_total", "redone", "redone_iterations_total")


def same_run(rows: list[dict]) -> list[dict]:
    """A metrics row without its clock readings and restart bookkeeping."""
    return [{k: v for k, v in r.items() if k not in RESTART_KEYS and not is_clock_key(k)} for r in rows]


@pytest.mark.parametrize("dies_at, redone, sets", [
    ({"train_iteration": 4}, [2, 3], []),  # iteration 3's update; the checkpoint is at 1
    ({"save": 2}, [2, 3], ["tensorboard=true"]),  # iteration 3's checkpoint save, after its row was logged
    ({"export_weights": 4}, [2, 3], []),  # iteration 3's weight sync
    ({"train_iteration": 1}, [0], []),  # iteration 0, before any checkpoint: back to the initial state
])
def test_the_run_survives_a_learner_death_and_equals_a_run_where_nothing_died(
        world_inputs, tmp_path, monkeypatch, capsys, dies_at, redone, sets):
    _, calm_summary, calm, calm_samples = run_world(world_inputs, tmp_path, monkeypatch, {}, "calm", *sets)
    world, summary, metrics, samples = run_world(world_inputs, tmp_path, monkeypatch, dies_at, "dies", *sets)
    out = capsys.readouterr().out

    assert [r["iteration"] for r in metrics] == [0, 1, 2, 3, 4, 5]  # each once
    assert [r["iteration"] for r in metrics if r["redone"]] == redone
    assert [r["learner_restarts"] for r in metrics] == [int(i == redone[0]) for i in range(6)]
    assert metrics[-1]["learner_restarts_total"] == 1 and metrics[-1]["redone_iterations_total"] == len(redone)
    assert [r["learner_restarts_total"] for r in calm] == [0] * 6 and not any(r["redone"] for r in calm)
    # same sampler draws, generations, rewards and logged samples as the run where nothing died
    assert same_run(metrics) == same_run(calm) and samples == calm_samples
    assert summary["iterations"] == calm_summary["iterations"] == 6

    first, second = world.groups
    ckpt = tmp_path / "dies" / "checkpoints" / "iter_00001"
    if redone[0] == 2:
        assert second.policy == str(ckpt / "policy") and second.calls[0] == "load"
        assert [v for g, v in world.synced if g == 2][0] == 2  # the restored weights (2 updates) to the engines
        where = str(ckpt)
    else:
        assert second.policy == str(world_inputs / "tiny") and "load" not in second.calls
        assert world.synced[0] == (2, 0)  # the initial weights, from the new group
        where = f"the initial policy {world_inputs / 'tiny'} (no checkpoint yet)"
    assert world.synced[-1] == (2, 6)  # six updates in the end, as without the death
    iters = "iterations 2..3" if redone == [2, 3] else "iteration 0"
    assert f"learner rank 0 died at iteration {redone[-1]}: restarted the learner group from {where}, redoing {iters}" \
        in out


def test_a_learner_death_with_no_restart_left_stops_naming_the_rank_and_the_checkpoint(
        world_inputs, tmp_path, monkeypatch):
    with pytest.raises(LearnerRestartsExhausted) as e:
        run_world(world_inputs, tmp_path, monkeypatch, {"train_iteration": 4}, "dies", "learner.max_restarts=0")
    msg = str(e.value)
    assert msg.startswith("learner rank 0 died at iteration 3 (")
    assert f"--resume, which continues from {tmp_path / 'dies' / 'checkpoints' / 'iter_00001'}" in msg


# -- the driver SIGKILLed and resumed with --resume, in the same fake world (issue 16 item 4) ---------
#
# The real thing, on the tiny model with vLLM, DeepSpeed and Ray: tests/test_resume_equals_never_stopping.py.


class Killed(BaseException):
    """The driver's death: no handler of the loop catches it, and main's teardown, which a SIGKILL
    would skip, writes nothing."""


class VLLMWorld(World):
    """A world whose engines sample as vLLM does: a seeded request's samples from their own seeds
    (seed + i*n + j), an unseeded one from the engine process's own generator, which starts from
    the engine seed in every new process. The driver dies in its rollout number `kill_at`."""

    def __init__(self, kill_at: int | None = None):
        super().__init__({})
        self.kill_at, self.events = kill_at, []

    def engines(self, actor_cls, configs, timeout_s, *, export_weights, **kwargs):
        world = self

        class Engines:
            restarts = 0

            def start(self):
                self.own = random.Random(configs[0].seed)  # a new EngineCore: vLLM seeds its generator
                return []

            def ready(self):
                pass

            def generate(self, requests, sampling):
                from rollout.engine import Generation

                if world.events.count("generate") == world.kill_at:
                    raise Killed
                world.events.append("generate")
                out = []
                for i in range(len(requests)):
                    for j in range(sampling.n):
                        rng = self.own if sampling.seed is None else random.Random(sampling.seed + i * sampling.n + j)
                        out.append(Generation(i, [5] * (1 + int(rng.random() * 4)), [-0.5], "stop",
                                              "\\boxed{1}" if rng.random() < 0.5 else "\\boxed{2}"))
                return out

            def sync_weights(self):
                buckets, _ = export_weights()
                world.events.append(("sync", buckets.value))

        return Engines()


def test_a_driver_killed_and_resumed_equals_a_run_never_stopped(world_inputs, tmp_path, monkeypatch, capsys):
    """Killed in iteration 3's rollout (iteration 2 logged, the checkpoint at 1), then --resume in a
    new process (new engines): iterations 2-5 draw, sample, score and log what the run that was
    never stopped did. Before per-call rollout seeds (rl.checkpoint.rollout_seed) the resumed
    engines sampled iteration 2 with the random stream of iteration 0."""
    _, _, calm, calm_samples = run_world(world_inputs, tmp_path, monkeypatch, {}, "calm", world=VLLMWorld())
    with pytest.raises(Killed):
        run_world(world_inputs, tmp_path, monkeypatch, {}, "b", world=VLLMWorld(kill_at=3))
    assert rows(tmp_path / "b" / METRICS_LOG) == [0, 1, 2]
    resumed = VLLMWorld()
    _, summary, metrics, samples = run_world(world_inputs, tmp_path, monkeypatch, {}, "b", world=resumed, resume=True)
    out = capsys.readouterr().out
    assert f"resuming from {tmp_path / 'b' / 'checkpoints' / 'iter_00001'} at iteration 2" in out
    assert "dropped 1 from metrics.jsonl" in out  # iteration 2's row, redone once
    assert [r["iteration"] for r in metrics] == [0, 1, 2, 3, 4, 5] and summary["iterations"] == 6
    assert same_run(metrics) == same_run(calm) and samples == calm_samples
    assert [len(r["sampler_drawn_ids"]) for r in metrics] == [4] * 6  # the draws are in the rows compared
    # The engines get the learner's restored weights (2 updates) before the first rollout: the
    # checkpoint's policy/ on disk is bf16, which an fp32 engine would otherwise run.
    assert resumed.events[:2] == [("sync", 2), "generate"]



def test_without_seeded_rollouts_a_resumed_run_samples_something_else(world_inputs, tmp_path, monkeypatch):
    """`rollout.seeded: false` (the engines' own generators): the resumed engines start their
    stream over, so iteration 2 is sampled with iteration 0's stream and the runs part."""
    off = "rollout.seeded=false"
    _, _, calm, _ = run_world(world_inputs, tmp_path, monkeypatch, {}, "calm", off, world=VLLMWorld())
    with pytest.raises(Killed):
        run_world(world_inputs, tmp_path, monkeypatch, {}, "b", off, world=VLLMWorld(kill_at=3))
    _, _, metrics, _ = run_world(world_inputs, tmp_path, monkeypatch, {}, "b", off, world=VLLMWorld(), resume=True)
    assert same_run(metrics)[:2] == same_run(calm)[:2]  # before the kill: one stream, the same
    assert same_run(metrics)[2] != same_run(calm)[2]
