"""Clean shutdown (issue 16 item 5): a closed engine leaves no EngineCore behind, and the RL driver
stops its engines, learner ranks and verifier pool however a run ends.

    pytest tests/test_engine_shutdown.py -m "not integration" -q   # fakes, no vLLM or Ray (~5 s)
    pytest tests/test_engine_shutdown.py -q                        # + a real engine on the SFT model
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from rl import train
from rollout.engine import EngineConfig, SamplingConfig, VLLMEngine

# vLLM 0.32 titles its processes "VLLM::EngineCore", "VLLM::Worker", "VLLM::Worker_TP1", ... (setproctitle;
# earlier versions named workers VllmWorker)
ENGINE_PROCESS = re.compile(r"EngineCore|VllmWorker|::Worker")


# -- unit: close() on a fake vLLM -------------------------------------------------------------


class FakeProc:
    def __init__(self, stuck: bool = False):
        self.alive, self.joins, self.killed = stuck, 0, False

    def join(self, timeout: float | None = None) -> None:
        self.joins += 1

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed, self.alive = True, False


def fake_engine(procs: list[FakeProc]) -> tuple[VLLMEngine, SimpleNamespace]:
    calls = SimpleNamespace(core=[], renderer=0)

    def renderer_shutdown() -> None:
        calls.renderer += 1

    core = SimpleNamespace(shutdown=lambda timeout=None: calls.core.append(timeout),
                           resources=SimpleNamespace(engine_manager=SimpleNamespace(processes=procs)))
    llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core,
                                                     renderer=SimpleNamespace(shutdown=renderer_shutdown)))
    engine = VLLMEngine.__new__(VLLMEngine)  # no vLLM: the fake stands in for what __init__ builds
    engine.cfg, engine._llm = EngineConfig(model="fake"), llm
    return engine, calls


def test_close_shuts_the_core_down_once_and_reaps_its_processes():
    procs = [FakeProc(), FakeProc(stuck=True)]
    engine, calls = fake_engine(procs)
    engine.close(timeout_s=2.0)
    engine.close()
    assert calls.core == [2.0] and calls.renderer == 1
    assert all(p.joins >= 1 for p in procs)
    assert not procs[0].killed and procs[1].killed  # one that outlived vLLM's own kill is killed here
    with pytest.raises(RuntimeError, match="closed"):
        engine.llm


def test_engine_as_context_manager_closes_on_error():
    engine, calls = fake_engine([FakeProc()])
    with pytest.raises(ValueError), engine:
        raise ValueError("a failed job")
    assert calls.core == [5.0] and calls.renderer == 1


# -- unit: the RL driver's teardown -----------------------------------------------------------


class FakeActor:
    def __init__(self, log: list, name: str):
        self.close = SimpleNamespace(remote=lambda: log.append(("close", name)) or name)


def test_stop_run_closes_engines_then_kills_every_actor(monkeypatch):
    log: list = []
    engines, learners = [FakeActor(log, "e0"), FakeActor(log, "e1")], [FakeActor(log, "l0")]
    scorer = SimpleNamespace(close=lambda: log.append(("scorer",)))
    waited = []
    monkeypatch.setattr(train.ray, "wait", lambda refs, num_returns, timeout: waited.append((refs, num_returns, timeout)))
    monkeypatch.setattr(train.ray, "kill", lambda a: log.append(("kill", a)))
    train.stop_run(train.RunActors(engines, learners, scorer), timeout_s=3.0)
    assert waited == [(["e0", "e1"], 2, 3.0)]
    assert log == [("scorer",), ("close", "e0"), ("close", "e1"),
                   ("kill", engines[0]), ("kill", engines[1]), ("kill", learners[0])]


def test_stop_run_kills_the_actors_when_the_wait_is_interrupted(monkeypatch):
    log: list = []
    engines, learners = [FakeActor(log, "e0")], [FakeActor(log, "l0")]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.ray, "wait", interrupted)
    monkeypatch.setattr(train.ray, "kill", lambda a: log.append(("kill", a)))
    with pytest.raises(KeyboardInterrupt):
        train.stop_run(train.RunActors(engines, learners, None))
    assert log[-2:] == [("kill", engines[0]), ("kill", learners[0])]


def test_stop_run_before_any_actor_started_touches_no_ray(monkeypatch):
    monkeypatch.setattr(train.ray, "wait", lambda *a, **k: pytest.fail("ray.wait with nothing to wait for"))
    train.stop_run(train.RunActors())


# -- integration: a real engine's processes ------------------------------------------------------


def _title(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {p.name()} {' '.join(p.cmdline())[:100]}"
    except psutil.Error:
        return f"{p.pid} (gone)"


def _gone(p: psutil.Process) -> bool:
    """Exited. A zombie counts: it holds no memory or CPU, and only its parent can reap it (an
    orphaned worker's new parent may be a container's PID 1 that never does)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.integration
def test_closed_engine_leaves_no_engine_process(sft_checkpoint):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}  # other fixtures' engines may be running
    engine = VLLMEngine(EngineConfig(model=str(sft_checkpoint), kv_cache_gib=0.25, max_model_len=1024, seed=0,
                                     cpu_threads=1))
    try:
        # a 4-token first prefill: on an AMX CPU it needs the AMX plugin (rollout/vllm_compat.py)
        gens = engine.generate([engine.tokenizer.encode("1+1=")], SamplingConfig(n=1, temperature=0.0, max_tokens=4))
        assert len(gens) == 1 and gens[0].token_ids
        started = [p for p in me.children(recursive=True) if p.pid not in before]
        ours = [p for p in started if ENGINE_PROCESS.search(_title(p))]  # EngineCore and its workers
        cores = [p for p in ours if p.ppid() == me.pid]
        assert cores, f"no EngineCore child among the processes the engine started: {[_title(p) for p in started]}"
    finally:
        engine.close()
    engine.close()  # a second close is a no-op

    # close() returns once each EngineCore has exited and been reaped (not even a zombie left)...
    assert not [p for p in cores if p.is_running()], [_title(p) for p in cores]
    # ...and its workers were shut down by it, or SIGKILLed with it: give those a moment to die.
    deadline = time.monotonic() + 5.0
    while not all(_gone(p) for p in ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [_title(p) for p in ours if not _gone(p)]
    assert not left, f"engine processes left after close(): {left}"
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([[1, 2, 3]], SamplingConfig(n=1, max_tokens=1))


# The engine of the test above, with every vLLM plugin but ours: what vLLM does without the
# workaround `rollout.vllm_compat.request_amx_permission`. A subprocess, since VLLM_PLUGINS is read
# by each process vLLM starts.
NO_AMX_PLUGIN = """
import sys
from rollout.engine import EngineConfig, SamplingConfig, VLLMEngine

if __name__ == "__main__":
    with VLLMEngine(EngineConfig(model=sys.argv[1], kv_cache_gib=0.25, max_model_len=1024, seed=0, cpu_threads=1)) as e:
        gens = e.generate([e.tokenizer.encode("1")], SamplingConfig(n=1, temperature=0.0, max_tokens=2))
        print("generated", gens[0].token_ids)
"""


@pytest.mark.integration
def test_without_the_amx_plugin_a_short_first_prefill_kills_the_worker(sft_checkpoint, tmp_path):
    import torch

    script = tmp_path / "no_amx_plugin.py"  # a file, not -c: vLLM's spawned processes re-import __main__
    script.write_text(NO_AMX_PLUGIN)
    env = {**os.environ, "VLLM_PLUGINS": "lora_filesystem_resolver"}  # any list without thinkrl_cpu_amx
    out = subprocess.run([sys.executable, str(script), str(sft_checkpoint)], capture_output=True, text=True,
                         env=env, timeout=300)
    if torch.cpu._is_amx_tile_supported():
        # the bug: a 1-token prefill runs vLLM's AMX attention before anything asked Linux for AMX.
        # Once this fails, vLLM fixed it and the plugin can go.
        log = out.stdout + out.stderr  # vLLM logs to stdout
        # vLLM reports "exit code: -4" (SIGILL), or "None" when it sees the death before reaping the worker
        assert out.returncode != 0 and "VllmWorker-0 died unexpectedly" in log, log[-3000:]
    else:  # no AMX: vLLM picks another attention kernel, and the same engine generates
        assert out.returncode == 0 and "generated" in out.stdout, out.stderr[-2000:]
