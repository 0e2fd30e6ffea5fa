"""Engine failure survived in-run (issue 16 item 2): the restart policy, the recovering engine group
on fake actors (no vLLM, no Ray cluster), and the engine's own death watch on fake processes.

    pytest tests/test_engine_recovery.py -q   # ~2 s

The real thing (a SIGKILLed EngineCore or engine actor in a short run on a local Ray cluster):
    python experiments/chaos.py --target engine-core --at-iteration 2
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import psutil
import pytest
import ray

from rollout import recovery
from rollout.engine import (EngineConfig, EngineCoreDied, Generation, GenRequest, SamplingConfig, VLLMEngine,
                            fail_pending_calls, merge_shards, sample_offsets, shard_bounds, watch_processes)
from rollout.reaper import kill_processes
from rollout.recovery import EngineGroup, EngineRestartsExhausted, RestartBudget, give_up_message

# -- the restart policy ---------------------------------------------------------------------------


def test_budget_counts_failures_in_a_row_per_slot_and_a_success_resets_them():
    b = RestartBudget(max_restarts=2)
    assert [b.failed(0), b.failed(0), b.failed(1)] == [1, 2, 1]
    assert b.allows(2) and not b.allows(3)
    b.succeeded(0)
    assert b.failed(0) == 1 and b.in_a_row == {0: 1, 1: 1}


def test_budget_of_zero_allows_no_restart():
    b = RestartBudget(max_restarts=0)
    assert not b.allows(b.failed(0))


def test_backoff_is_none_for_the_first_restart_then_doubles_up_to_a_cap():
    b = RestartBudget(backoff_s=2.0, backoff_max_s=10.0)
    assert [b.wait_s(n) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 10.0]


def test_give_up_message_names_the_slot_the_limit_and_the_checkpoint():
    msg = give_up_message(1, 4, "EngineCore (pid 7) exited with code -9", 3, "runs/r/checkpoints/iter_00003")
    assert "engine 1 failed 4 times in a row" in msg and "exited with code -9" in msg
    assert "rollout.max_engine_restarts=3" in msg and "--resume" in msg and "iter_00003" in msg
    assert "iteration 0" in give_up_message(0, 1, "x", 0, None)


# -- sharding -------------------------------------------------------------------------------------


def test_shards_are_contiguous_and_cover_every_request():
    assert shard_bounds(5, 2) == [(0, 2), (2, 5)]
    assert shard_bounds(1, 3) == [(0, 0), (0, 1), (1, 1)]  # round(1/3) = 0, round(2/3) = 1
    for n, k in [(0, 2), (7, 3), (32, 8)]:
        b = shard_bounds(n, k)
        assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(k - 1))


def test_merge_makes_prompt_indices_global_in_shard_order():
    bounds = [(0, 2), (2, 3)]
    res = {1: [Generation(0, [9], [0.0], "stop")], 0: [Generation(1, [8], [0.0], "stop")]}
    assert [(g.prompt_index, g.token_ids) for g in merge_shards(res, bounds)] == [(1, [8]), (2, [9])]


# -- the engine group on fake actors ----------------------------------------------------------------


class Ref:
    def __init__(self, value=None, exc: BaseException | None = None):
        self.value, self.exc = value, exc


class FakeRay:
    """What EngineGroup uses of Ray; calls ran when submitted, so every ref is ready."""

    exceptions = ray.exceptions

    def __init__(self):
        self.killed: list = []

    def get(self, x, timeout=None):
        if isinstance(x, list):
            return [self.get(r) for r in x]
        if x.exc is not None:
            raise x.exc
        return x.value

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def kill(self, actor):
        self.killed.append(actor)
        actor.dead = actor.dead or "actor"


class _Method:
    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner):
        return SimpleNamespace(remote=lambda *args: obj.call(self.name, *args))


class FakeEngine:
    """An engine actor. `plan` maps a method to what happens on its first call, or (a list) on
    each of its calls: None (it works), "core" (its EngineCore dies: this call and later ones
    fail, dead_reason says so), "actor" (the actor process dies) or an exception (an ordinary
    error; the engine stays alive)."""

    generate, load_weights, ready, dead_reason, close, processes = (_Method() for _ in range(6))

    def __init__(self, cfg, plan: dict):
        self.cfg, self.plan, self.dead, self.calls, self.weights = cfg, dict(plan), None, [], None

    def call(self, name, *args):
        self.calls.append(name)
        what = self.plan.get(name)
        if isinstance(what, list):
            what = what.pop(0) if what else None
        else:
            self.plan.pop(name, None)
        if isinstance(what, BaseException):
            return Ref(exc=what)
        if what in ("core", "actor"):
            self.dead = what
        if self.dead == "actor":
            return Ref(exc=ray.exceptions.ActorDiedError())
        if self.dead == "core" and name not in ("dead_reason", "close", "processes"):
            return Ref(exc=RuntimeError("EngineDeadError: EngineCore encountered an issue"))
        return Ref(value=getattr(self, "do_" + name)(*args))

    def do_generate(self, requests, sampling):
        return [Generation(i, list(r), [0.0], "stop") for i, r in enumerate(requests)]

    def do_load_weights(self, buckets):
        self.weights = buckets
        return {}

    def do_ready(self):
        return True

    def do_dead_reason(self):
        return "EngineCore (pid 7) exited with code -9" if self.dead else None

    def do_close(self):
        return None

    def do_processes(self):
        return {"node_id": None, "pid": 1, "procs": []}


class FakeEngineClass:
    """`make_rollout_actor(...)`: each new actor takes the next plan (none left: it never fails)."""

    def __init__(self, *plans: dict):
        self.plans, self.made = list(plans), []

    def remote(self, cfg):
        self.made.append(FakeEngine(cfg, self.plans.pop(0) if self.plans else {}))
        return self.made[-1]


@pytest.fixture
def fake_ray(monkeypatch):
    fr = FakeRay()
    monkeypatch.setattr(recovery, "ray", fr)
    return fr


def make_group(cls: FakeEngineClass, n: int = 2, max_restarts: int = 3, log: list | None = None) -> EngineGroup:
    exports = []

    def export_weights():
        exports.append(f"weights-{len(exports)}")
        return exports[-1], []

    g = EngineGroup(cls, [f"cfg{i}" for i in range(n)], timeout_s=60, max_restarts=max_restarts,
                    export_weights=export_weights, resume_hint=lambda: "runs/r/checkpoints/iter_00001",
                    log=(log.append if log is not None else lambda m: None))
    g.budget.backoff_s = 0.0
    g.start()
    g.ready()
    return g


REQS = [[10], [11], [12], [13]]
SAMPLING = SamplingConfig(n=1, max_tokens=4)


def tokens(gens):
    return [(g.prompt_index, g.token_ids) for g in gens]


@pytest.mark.parametrize("how", ["core", "actor"])
def test_a_dead_engine_is_replaced_with_current_weights_and_its_shard_generated_again(fake_ray, how):
    cls, log = FakeEngineClass({}, {"generate": how}), []
    g = make_group(cls, log=log)
    actors = g.actors
    gens = g.generate(REQS, SAMPLING)
    assert tokens(gens) == [(0, [10]), (1, [11]), (2, [12]), (3, [13])]  # the lost shard, redone, in order
    assert g.restarts == 1 and g.actors is actors and len(cls.made) == 3
    dead, new = cls.made[1], cls.made[2]
    assert g.actors == [cls.made[0], new] and new.cfg == "cfg1"  # the slot's own config (seed)
    assert new.weights == "weights-0"  # the learner's current policy, before the redo
    assert new.calls == ["ready", "processes", "load_weights", "generate"]
    assert "close" in dead.calls and dead in fake_ray.killed
    assert cls.made[0].calls.count("generate") == 1  # the healthy shard is not redone
    assert g.budget.in_a_row == {}
    assert any("[engine 1] died" in m for m in log) and any("restarted" in m for m in log)


def test_an_error_from_a_live_engine_is_raised_not_restarted(fake_ray):
    cls = FakeEngineClass({"generate": ValueError("bad request")})
    g = make_group(cls)
    with pytest.raises(ValueError, match="bad request"):
        g.generate(REQS, SAMPLING)
    assert g.restarts == 0 and len(cls.made) == 2 and not fake_ray.killed


def test_a_replacement_that_dies_too_counts_and_the_run_stops_naming_the_checkpoint(fake_ray):
    cls = FakeEngineClass({"generate": "core"}, {}, {"ready": "actor"}, {"load_weights": "core"})
    g = make_group(cls, max_restarts=2)
    with pytest.raises(EngineRestartsExhausted) as e:
        g.generate(REQS, SAMPLING)
    assert "engine 0 failed 3 times in a row" in str(e.value) and "iter_00001" in str(e.value)
    assert g.restarts == 2 and len(cls.made) == 4
    assert cls.made[3] in fake_ray.killed  # the last one is stopped too, not left to the teardown


def test_failures_separated_by_a_good_call_are_not_in_a_row(fake_ray):
    # engine 0 dies in calls 1, 2 and 3; each replacement's redo works, so none is a second in a row
    cls = FakeEngineClass({"generate": "core"}, {}, {"generate": [None, "actor"]}, {"generate": [None, "core"]})
    g = make_group(cls, max_restarts=1)
    for _ in range(4):
        assert tokens(g.generate(REQS, SAMPLING)) == [(0, [10]), (1, [11]), (2, [12]), (3, [13])]
    assert g.restarts == 3 and len(cls.made) == 5


def test_an_engine_dying_in_the_weight_sync_is_replaced_with_the_same_weights(fake_ray):
    cls = FakeEngineClass({"load_weights": "core"}, {})
    g = make_group(cls)
    g.sync_weights()
    new = cls.made[2]
    assert g.actors[0] is new and new.weights == "weights-0" and cls.made[1].weights == "weights-0"
    assert new.calls.count("load_weights") == 1  # the restart's load is the sync: not done twice


def test_what_a_dead_actor_left_behind_is_reaped(fake_ray, monkeypatch):
    cls = FakeEngineClass({"generate": "actor"}, {})
    monkeypatch.setattr(FakeEngine, "do_processes", lambda self: {"node_id": "n1", "pid": 5, "procs": [(6, 1.0)]})
    g = make_group(cls)
    reaped = []
    g._reap = lambda slot, info: reaped.append((slot, info["procs"]))
    g.generate(REQS, SAMPLING)
    assert reaped == [(0, [(6, 1.0)])]


# -- seeds: a request's samples get the same seeds however the requests are sharded ---------------------


def seed_echo(self, requests, sampling):
    """A fake engine's generate that answers with the seed of each sample (vLLM seeds sample j of
    request i with sampling.seed + i*n + j, rollout.engine.VLLMEngine.generate)."""
    return [Generation(i, [sampling.seed + i * sampling.n + j], [0.0], "stop")
            for i in range(len(requests)) for j in range(sampling.n)]


@pytest.mark.parametrize("engines", [1, 2, 3])
def test_each_sample_gets_the_seed_of_its_place_in_the_call_whatever_the_engine_count(fake_ray, monkeypatch, engines):
    """5 requests x 2 samples from base seed 100: request i's samples are 100 + 2i and 100 + 2i + 1,
    on one engine or on shards [0, 3) + [3, 5) (shard 1's base is 100 + 3 x 2 = 106) or
    [0, 2) + [2, 3) + [3, 5). Without the offset every shard would start at 100 again."""
    monkeypatch.setattr(FakeEngine, "do_generate", seed_echo)
    g = make_group(FakeEngineClass(), n=engines)
    gens = g.generate([[10], [11], [12], [13], [14]], SamplingConfig(n=2, max_tokens=4, seed=100))
    assert [(x.prompt_index, x.token_ids[0]) for x in gens] == [(i // 2, 100 + i) for i in range(10)]


def test_a_regenerated_shard_gets_its_seeds_again(fake_ray, monkeypatch):
    monkeypatch.setattr(FakeEngine, "do_generate", seed_echo)
    g = make_group(FakeEngineClass({}, {"generate": "core"}))
    gens = g.generate([[10], [11], [12], [13]], SamplingConfig(n=1, max_tokens=4, seed=7))
    assert g.restarts == 1 and [x.token_ids[0] for x in gens] == [7, 8, 9, 10]


def test_close_shuts_every_engine_down_then_kills_its_actor(fake_ray):
    """The tagging CLI's teardown: a dead engine (its EngineCore gone) is closed and killed too."""
    g = make_group(FakeEngineClass({"generate": "core"}))
    assert g.actors[0].generate.remote([[1]], SAMPLING).exc is not None and g.actors[0].dead == "core"
    g.close()
    assert all(a.calls[-1] == "close" for a in g.actors) and fake_ray.killed == g.actors


def request_builder(monkeypatch) -> tuple[VLLMEngine, list[dict]]:
    """A `VLLMEngine` with no vLLM behind it: only the request building runs, and the keyword
    arguments of each `SamplingParams` it builds are recorded in the list."""
    import sys

    params: list[dict] = []
    fake_vllm = SimpleNamespace(SamplingParams=lambda **kw: params.append(kw) or kw, TokensPrompt=dict)
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    engine = VLLMEngine.__new__(VLLMEngine)
    engine.cfg, engine.vision = EngineConfig(model="tiny"), None
    engine._llm = SimpleNamespace(generate=lambda prompts, sps, use_tqdm: [])
    return engine, params


def test_no_two_samples_of_a_call_share_a_seed(monkeypatch):
    """vLLM gives sample j of a request seed + j (vllm/v1/engine/parallel_sampling.py), so request
    seeds seed + i (as before) made request 0's second sample and request 1's first both seed + 1.
    With seed + i*n, 3 requests x 4 samples from 100 take 100..111, each once."""
    engine, params = request_builder(monkeypatch)
    engine.generate([[1], [2], [3]], SamplingConfig(n=4, max_tokens=4, seed=100))
    assert [p["seed"] for p in params] == [100, 104, 108]
    assert sorted(p["seed"] + j for p in params for j in range(p["n"])) == list(range(100, 112))
    params.clear()
    engine.generate([[1], [2]], SamplingConfig(n=4, max_tokens=4))
    assert [p["seed"] for p in params] == [None, None]  # unseeded: the engine's own generator


def test_requests_with_their_own_n_and_max_tokens_are_seeded_by_the_samples_before_them(monkeypatch):
    """Partial rollouts mix continuations (n = 1, a segment's max_tokens) with fresh prompts (the
    call's n): request i's seed is the base + the samples of requests 0..i-1, so with every request
    at the call's n it is the old base + i*n, and no two samples of the call share a seed."""
    engine, params = request_builder(monkeypatch)
    reqs = [GenRequest([1], n=1, max_tokens=3), [2], GenRequest([3], n=2), GenRequest([4])]
    engine.generate(reqs, SamplingConfig(n=4, max_tokens=8, seed=100))
    assert [(p["n"], p["max_tokens"], p["seed"]) for p in params] == [(1, 3, 100), (4, 8, 101), (2, 8, 105),
                                                                       (4, 8, 107)]
    assert sorted(p["seed"] + j for p in params for j in range(p["n"])) == list(range(100, 111))
    assert sample_offsets([[1], [2], GenRequest([3])], 4) == [0, 4, 8]  # all at the call's n: i * n


def test_a_request_with_its_own_seed_temperature_and_top_p_keeps_them(monkeypatch):
    """The tagging CLI's requests: each carries its own seed, used as is (not offset by the samples
    before it, so its samples do not depend on its place in the call), and its own temperature and
    top_p; a request without them keeps the call's, seeded as before."""
    engine, params = request_builder(monkeypatch)
    reqs = [GenRequest([1], n=2, seed=7, temperature=0.0, top_p=0.5), [2], GenRequest([3], n=3, seed=7)]
    engine.generate(reqs, SamplingConfig(n=4, max_tokens=8, seed=100, temperature=1.0, top_p=0.9))
    got = [(p["n"], p["seed"], p["temperature"], p["top_p"]) for p in params]
    assert got == [(2, 7, 0.0, 0.5), (4, 102, 1.0, 0.9), (3, 7, 1.0, 0.9)]
    params.clear()
    engine.generate(reqs[::-1], SamplingConfig(n=4))  # another order, and a call without a seed
    assert [p["seed"] for p in params] == [7, None, 7]


def seed_echo_per_request(self, requests, sampling):
    """seed_echo for requests with their own n (rollout.engine.sample_offsets)."""
    offsets = sample_offsets(requests, sampling.n)
    return [Generation(i, [sampling.seed + offsets[i] + j], [0.0], "stop")
            for i, r in enumerate(requests) for j in range(r.n or sampling.n)]


@pytest.mark.parametrize("engines", [1, 2, 3])
def test_mixed_n_requests_get_the_seeds_of_one_call_whatever_the_engine_count(fake_ray, monkeypatch, engines):
    """n = 1, 1, 3, 3 from base 50: seeds 50, 51, 52..54, 55..57 on one engine or sharded."""
    monkeypatch.setattr(FakeEngine, "do_generate", seed_echo_per_request)
    g = make_group(FakeEngineClass(), n=engines)
    reqs = [GenRequest([10], n=1), GenRequest([11], n=1), GenRequest([12]), GenRequest([13])]
    gens = g.generate(reqs, SamplingConfig(n=3, max_tokens=4, seed=50))
    assert [(x.prompt_index, x.token_ids[0]) for x in gens] == [(0, 50), (1, 51), (2, 52), (2, 53), (2, 54),
                                                                (3, 55), (3, 56), (3, 57)]


# -- the engine's own death watch ---------------------------------------------------------------------


class PipeProc:
    """A stand-in for the EngineCore process: its sentinel is readable once `exit()` is called."""

    def __init__(self, pid: int = 7):
        self.r, self.w = os.pipe()
        self.sentinel, self.pid, self.exitcode = self.r, pid, None

    def exit(self, code: int = -9) -> None:
        self.exitcode = code
        os.close(self.w)

    def is_alive(self) -> bool:
        return self.exitcode is None


def test_watch_reports_an_exit_and_not_a_stop():
    p, seen, stop = PipeProc(), [], threading.Event()
    t = threading.Thread(target=watch_processes, args=([p], stop, seen.append, 0.05))
    t.start()
    p.exit()
    t.join(5)
    os.close(p.r)
    assert seen == [p] and not t.is_alive()

    q, seen2, stop2 = PipeProc(), [], threading.Event()
    t2 = threading.Thread(target=watch_processes, args=([q], stop2, seen2.append, 0.05))
    t2.start()
    stop2.set()  # close(): the EngineCore is shut down on purpose
    t2.join(5)
    q.exit()
    os.close(q.r)
    assert seen2 == [] and not t2.is_alive()


def test_pending_calls_on_a_dead_core_are_woken_with_engine_dead_error():
    from vllm.v1.engine.exceptions import EngineDeadError

    waiting, done = Future(), Future()
    done.set_result(1)
    core = SimpleNamespace(outputs_queue=queue.Queue(), utility_results={1: waiting, 2: done})
    fail_pending_calls(core)
    assert isinstance(core.outputs_queue.get_nowait(), EngineDeadError)
    with pytest.raises(EngineDeadError):
        waiting.result(timeout=0)
    assert done.result() == 1


def fake_open_engine(procs: list) -> VLLMEngine:
    core = SimpleNamespace(resources=SimpleNamespace(engine_manager=SimpleNamespace(processes=procs)))
    engine = VLLMEngine.__new__(VLLMEngine)
    engine.cfg, engine._llm = EngineConfig(model="fake"), SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core))
    return engine


def test_an_engine_reports_its_dead_core_and_refuses_calls():
    p = PipeProc(pid=42)
    engine = fake_open_engine([p])
    assert engine.dead_reason() is None and engine.llm is engine._llm
    p.exit(-9)
    assert engine.dead_reason() == "EngineCore (pid 42) exited with code -9"
    with pytest.raises(EngineCoreDied, match="pid 42"):
        engine.llm
    engine._llm = None  # closed
    assert engine.dead_reason() == "closed"
    os.close(p.r)


def test_an_engine_whose_core_reported_itself_dead_is_dead():
    q = PipeProc()
    engine = fake_open_engine([q])
    engine._llm.llm_engine.engine_core.resources.engine_dead = True  # a TP worker died; the core is exiting
    assert engine.dead_reason() == "vLLM marked the EngineCore dead"
    os.close(q.r)
    os.close(q.w)


def test_kill_processes_kills_by_pid_and_start_time_only():
    child = subprocess.Popen(["sleep", "30"])
    try:
        created = psutil.Process(child.pid).create_time()
        assert kill_processes([(child.pid, created + 100.0)]) == 0  # a pid reused by a newer process
        assert child.poll() is None
        assert kill_processes([(child.pid, created), (2**22 + 12345, 0.0)]) == 1  # the other never existed
        assert child.wait(5) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
