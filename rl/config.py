"""Typed config of the RL stage (`rl/train.py`). Every field documented; unknown keys are errors.

GPU layouts are checked at load, before any actor starts (issue 17), against the cluster the
config declares (`ray.num_gpus`, `ray.gpus_per_node`): Ray itself would leave an actor that does
not fit pending until a timeout, and the cluster's size is not known until the driver connects,
while a config should fail the moment it is read. Tensor parallelism is checked against the
policy's own config.json when it is a local checkpoint (vLLM would refuse it at engine start).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prompts.images import DEFAULT_MAX_IMAGE_PIXELS
from rl.dist import DeepSpeedConfig
from rl.partial import PartialRolloutConfig
from rl.rewards import VerifierConfig
from rl.sampling import SamplerConfig, UniformSamplerConfig
from rollout.engine import EngineConfig, SamplingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train_file: str = Field(description="RL prompt rows (see prompts/schema.py)")
    eval_file: str | None = Field(None, description="Held-out prompt rows for pass@1 / pass@k")
    max_prompt_tokens: int = Field(
        256, gt=0, description="Longer prompts (image placeholders expanded) are skipped and counted"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0, description="Image rows: larger images are load-time errors (w x h)"
    )


class RolloutConfig(_Strict):
    num_engines: int = Field(1, ge=1, description="vLLM engine actors; prompts are sharded across them")
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model="<policy>"),
        description="Engine settings; `model` is replaced by the policy checkpoint",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="k samples per prompt, T=1.0. Its seed (None: the run's seed) "
        "is the base from which each rollout call's seed is derived with the iteration (rl.checkpoint.rollout_seed), "
        "so a resumed run samples what an uninterrupted one does"
    )
    seeded: bool = Field(
        True, description="Seed every rollout call (rl.checkpoint.rollout_seed), so a resumed run, an engine "
        "replaced in-run and iterations redone after a learner restart sample what an uninterrupted run does. "
        "vLLM samples seeded requests one row at a time (a small cost on CPU; on GPUs with batches of thousands "
        "of sequences, measure it); false: the engines' own generators, which start over in each new engine"
    )
    actor_num_cpus: float = Field(1.0, gt=0, description="Ray CPU request per engine actor")
    actor_num_gpus: float = Field(
        0.0, ge=0, description="Ray GPU request per engine actor: 0 on CPUs; on GPUs the engine's "
        "engine.tensor_parallel_size, or a fraction <= 1 for several small engines on one GPU"
    )
    timeout_s: float = Field(1800, gt=0, description="Upper bound on one rollout call (a hung engine fails the run)")
    max_engine_restarts: int = Field(
        3, ge=0, description="An engine whose actor or EngineCore dies is replaced (current weights loaded, lost "
        "requests generated again, rollout.recovery); after this many restarts in a row of one engine the run "
        "stops with an error naming the checkpoint to resume from (0: stop at the first death)"
    )
    partial: PartialRolloutConfig = Field(
        default_factory=PartialRolloutConfig, description="k1.5 §2.6.2 partial rollouts: a per-iteration token "
        "budget per trajectory and a replay buffer of unfinished ones (rl.partial); off by default"
    )


class LearnerDeepSpeedConfig(DeepSpeedConfig):
    lr: float = Field(
        1e-6, gt=0, description="Peak learning rate. RL steps are noisy: keep it well below the SFT rate "
        "(the 4M demo policy: 3e-5, where 1e-4 made no progress; billion-parameter policies: ~1e-6)"
    )


class LearnerConfig(_Strict):
    num_ranks: int = Field(1, ge=1, description="Data-parallel learner ranks (Ray actors)")
    deepspeed: LearnerDeepSpeedConfig = Field(
        default_factory=LearnerDeepSpeedConfig, description="ZeRO stage, bf16, AdamW"
    )
    minibatches_per_iteration: int = Field(
        2, ge=1, description="Optimizer steps per iteration over disjoint mini-batches of groups"
    )
    reset_optimizer_each_iteration: bool = Field(
        True, description="Clear AdamW state at each iteration start (k1.5: a fresh mirror-descent subproblem)"
    )
    tokens_per_microbatch: int = Field(8192, gt=0, description="Token budget per forward pass")
    row_tokens: int | None = Field(
        None, gt=0, description="Packed row length, >= data.max_prompt_tokens + rollout.sampling.max_tokens "
        "(None: exactly that sum)"
    )
    short_row_tokens: int | None = Field(
        None, gt=0, description="Long-CoT: episodes up to this length share rows of this size, longer ones "
        "get a row each, so rare long responses do not make every row cost O(row_tokens^2) (rl.packing.plan_rows)"
    )
    freeze_vision_tower: bool = Field(
        False, description="VLM policies: train projector and decoder only; the tower is then not synced"
    )
    actor_num_cpus: float = Field(1.0, gt=0, description="Ray CPU request per learner rank")
    actor_num_gpus: float = Field(
        0.0, ge=0, description="Ray GPU request per learner rank: 0 (CPU, gloo) or 1 (one GPU per rank, NCCL)"
    )
    threads: int | None = Field(
        None, gt=0, description="CPU: torch threads per rank (None: Ray's OMP_NUM_THREADS, i.e. actor_num_cpus). "
        "Rollout and learning take turns, so one rank may use every core of its node"
    )
    timeout_s: float = Field(1800, gt=0, description="Upper bound on one learner call")
    record_iterations: int = Field(
        0, ge=0, description="Write the learner call of the first N iterations (every rank's episodes per "
        "mini-batch, rl.learner.LearnerCall) to <run>/learner_batches/iter_NNNNN.json, to replay offline "
        "(experiments/bench_learner.py); text prompts only (image episodes are written without their images)"
    )
    max_restarts: int = Field(
        3, ge=0, description="A learner rank that dies takes its group down: every rank is started again from the "
        "latest complete checkpoint (or the initial policy), the run logs are cut back to it and the iterations "
        "since are redone (rl.learner_group); after this many restarts in a row (before the run gets past the "
        "iteration of the last death) the run stops with an error naming the rank and the checkpoint to resume "
        "from (0: stop at the first death)"
    )


class ObjectiveConfig(_Strict):
    tau: float = Field(0.1, gt=0, description="KL weight tau of online mirror descent (k1.5 §2.3.2)")
    baseline: Literal["mean", "logsumexp"] = Field("mean", description="b: mean reward, or tau*log mean exp(r/tau)")
    ref_logprobs: Literal["learner", "engine"] = Field(
        "learner", description="pi_theta_i log-probs: recomputed by the learner (exact) or vLLM's sampled ones"
    )
    length_penalty_weight: float = Field(0.0, ge=0, description="Weight of the k1.5 §2.3.3 length reward")
    length_penalty_warmup: int = Field(0, ge=0, description="Iterations with the length reward off")
    partial_segments: Literal["exclude", "include"] = Field(
        "exclude", description="Partial rollouts (rollout.partial): which response tokens of a trajectory "
        "generated over several iterations enter the loss (rl.mirror_descent.segments). exclude: the last "
        "segment only, earlier ones kept as context; include: the whole response, earlier segments off-policy. "
        "Default exclude (k1.5 §2.6.2: only the current iteration's segment needs on-policy computation, and "
        "earlier segments may be left out of the loss): only the last segment was sampled from pi_theta_i, "
        "the policy the §2.3.2 loss assumes its samples come from"
    )


class EvalConfig(_Strict):
    every: int = Field(10, ge=0, description="Evaluate every N iterations (0: only at start and end)")
    num_prompts: int = Field(420, gt=0, description="First N rows of data.eval_file")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for pass@1")
    samples: int = Field(1, ge=1, description="Samples per prompt: pass@1 averages them, pass@k uses all")
    max_tokens: int = Field(768, gt=0, description="Max response tokens")
    seed: int = Field(1234, description="Sampling seed (the same prompts and seeds every evaluation)")


class RayConfig(_Strict):
    address: str | None = Field(
        None, description="Cluster to join; None: the job's cluster under `ray job submit`, else a local one"
    )
    num_cpus: int | None = Field(None, description="CPUs of a locally started cluster")
    num_gpus: int | None = Field(
        None, ge=1, description="GPUs of the cluster the run uses, all nodes; required when an actor asks for "
        "a GPU, so that a layout that cannot fit fails at load instead of leaving actors pending"
    )
    gpus_per_node: int | None = Field(
        None, ge=1, description="GPUs per node (None: num_gpus, one node); an engine's tensor-parallel "
        "group must fit on one node"
    )


class RLConfig(_Strict):
    run_name: str = Field("rl", description="Outputs go to <output_dir>/<run_name>/")
    output_dir: str = Field("runs", description="Root of run directories")
    policy: str = Field(description="HF checkpoint of the SFT warm start (pi_theta_0)")
    seed: int = Field(0, description="Seed of sampling, prompt choice and the learner")
    iterations: int = Field(40, gt=0, description="RL iterations (rollout -> update -> sync)")
    time_budget_s: float | None = Field(None, gt=0, description="Stop after this many seconds (then final eval)")
    prompts_per_iteration: int = Field(32, gt=0, description="Prompt groups per iteration")
    checkpoint_every: int = Field(0, ge=0, description="Checkpoint every N iterations (0: off); always at the end")
    checkpoint_every_minutes: float = Field(
        30.0, ge=0, description="Also checkpoint when this many minutes have passed since the last one (0: off), "
        "so a crash loses at most that much of a long run (issue 16)"
    )
    keep_checkpoints: int = Field(
        2, ge=0, description="Keep the newest N complete checkpoints (0: all); the one --resume uses is never deleted"
    )
    samples_to_log: int = Field(4, ge=0, description="Rollouts per iteration written to samples.jsonl")
    tensorboard: bool = Field(True, description="Also write scalars to <run>/tensorboard")
    data: DataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    reward: VerifierConfig = Field(default_factory=VerifierConfig, description="Verifier pool + reward terms")
    sampler: SamplerConfig = Field(default_factory=UniformSamplerConfig, description="Prompt sampler (rl.sampling)")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _check(self) -> "RLConfig":
        if self.rollout.sampling.n < 2:
            raise ValueError("rollout.sampling.n must be >= 2: the baseline needs several samples per prompt")
        if self.learner.minibatches_per_iteration > self.prompts_per_iteration:
            raise ValueError("learner.minibatches_per_iteration cannot exceed prompts_per_iteration")
        # The longest sample the learner can receive is a max-length prompt plus a max-length
        # response; a row shorter than that would stop the run at the first such sample.
        longest = self.data.max_prompt_tokens + self.rollout.sampling.max_tokens
        lc = self.learner
        if lc.row_tokens is None:
            lc.row_tokens = longest
        elif lc.row_tokens < longest:
            raise ValueError(
                f"learner.row_tokens ({lc.row_tokens}) < data.max_prompt_tokens + rollout.sampling.max_tokens "
                f"({self.data.max_prompt_tokens} + {self.rollout.sampling.max_tokens} = {longest})"
            )
        if lc.row_tokens > lc.tokens_per_microbatch:
            raise ValueError(
                f"learner.row_tokens ({lc.row_tokens}) > learner.tokens_per_microbatch ({lc.tokens_per_microbatch})"
            )
        check_partial(self)
        check_gpu_layout(self)
        check_tensor_parallel(self.rollout.engine.tensor_parallel_size, self.policy)
        return self


def check_partial(cfg: RLConfig) -> None:
    """`rollout.partial` against the sections it depends on; fills `max_segments` when None.
    Nothing is checked while it is off. Raises ValueError naming the config keys."""
    pc, sp = cfg.rollout.partial, cfg.rollout.sampling
    if not pc.enabled:
        return
    if pc.segment_tokens >= sp.max_tokens:
        raise ValueError(f"rollout.partial.segment_tokens ({pc.segment_tokens}) must be < rollout.sampling.max_tokens "
                         f"({sp.max_tokens}): every response would end in its first segment")
    if pc.max_segments is None:
        pc.max_segments = -(-sp.max_tokens // pc.segment_tokens)
    longest = cfg.data.max_prompt_tokens + sp.max_tokens
    if cfg.rollout.engine.max_model_len < longest:
        # A continuation is the prompt and the response so far: vLLM refuses one that fills the
        # context (a segment that reached max_model_len exactly at its budget), which stops the run.
        raise ValueError(f"rollout.engine.max_model_len ({cfg.rollout.engine.max_model_len}) must be >= data."
                         f"max_prompt_tokens + rollout.sampling.max_tokens ({longest}) with rollout.partial.enabled")
    if pc.repeat_penalty > 0 and pc.repeat_ngram == 0:
        raise ValueError(f"rollout.partial.repeat_penalty ({pc.repeat_penalty}) is set but rollout.partial."
                         "repeat_ngram is 0, which turns repeat detection off")
    if cfg.objective.partial_segments == "include" and cfg.objective.ref_logprobs == "engine":
        # The engine's log-probs of an earlier segment are those of the weights that sampled it, not
        # pi_theta_i's: the include option needs the learner's recomputation of the whole response.
        raise ValueError("objective.partial_segments 'include' needs objective.ref_logprobs 'learner' with "
                         "rollout.partial.enabled: the engine's log-probs of earlier segments are under older weights")


def check_gpu_layout(cfg: RLConfig) -> None:
    """Each actor's GPU request is one the code can use, and all of them fit the declared cluster.
    Raises ValueError naming the config keys."""
    rc, lc, ray = cfg.rollout, cfg.learner, cfg.ray
    tp, eg = rc.engine.tensor_parallel_size, rc.actor_num_gpus
    if lc.actor_num_gpus not in (0, 1):
        raise ValueError(f"learner.actor_num_gpus ({lc.actor_num_gpus}) must be 0 (CPU) or 1: a learner rank "
                         "owns one whole GPU (two ranks on one GPU break NCCL)")
    if lc.deepspeed.nccl.env and lc.actor_num_gpus == 0:
        raise ValueError("learner.deepspeed.nccl.env is set but learner.actor_num_gpus is 0: CPU ranks use gloo")
    if eg > 0:
        if tp > 1 and eg != tp:
            raise ValueError(f"rollout.actor_num_gpus ({eg}) must equal rollout.engine.tensor_parallel_size ({tp}): "
                             "the engine's tensor-parallel workers run on the GPUs its actor holds")
        if tp == 1 and eg > 1:
            raise ValueError(f"rollout.actor_num_gpus ({eg}) > 1 with rollout.engine.tensor_parallel_size 1: "
                             "the engine would use one of them")
        if eg < 1 and rc.engine.gpu_memory_utilization > eg:
            raise ValueError(f"rollout.engine.gpu_memory_utilization ({rc.engine.gpu_memory_utilization}) > "
                             f"rollout.actor_num_gpus ({eg}): engines sharing a GPU would claim more than all of it")
    engine_gpus, learner_gpus = rc.num_engines * eg, lc.num_ranks * lc.actor_num_gpus
    if engine_gpus + learner_gpus == 0:
        return
    if ray.num_gpus is None:
        raise ValueError("ray.num_gpus is not set, but rollout.actor_num_gpus / learner.actor_num_gpus ask for "
                         "GPUs: declare the cluster's GPUs so the layout is checked before any actor starts")
    per_node = ray.gpus_per_node or ray.num_gpus
    if engine_gpus + learner_gpus > ray.num_gpus:
        raise ValueError(
            f"rollout.num_engines x rollout.actor_num_gpus + learner.num_ranks x learner.actor_num_gpus = "
            f"{rc.num_engines} x {eg:g} + {lc.num_ranks} x {lc.actor_num_gpus:g} = {engine_gpus + learner_gpus:g} "
            f"GPUs > ray.num_gpus ({ray.num_gpus})"
        )
    if eg >= 1:  # whole-GPU engines: each node holds per_node // eg of them (an engine cannot span nodes)
        full, rest = divmod(ray.num_gpus, per_node)
        slots = full * (per_node // math.ceil(eg)) + rest // math.ceil(eg)
        if rc.num_engines > slots:
            raise ValueError(
                f"rollout.num_engines ({rc.num_engines}) engines of rollout.actor_num_gpus ({eg:g}) GPUs: only "
                f"{slots} fit in ray.num_gpus ({ray.num_gpus}) on nodes of ray.gpus_per_node ({per_node})"
            )


def check_tensor_parallel(tp: int, policy: str) -> None:
    """vLLM splits attention heads over the tensor-parallel group: TP must divide the policy's
    query heads, and its KV heads must divide or be divided by TP (fewer KV heads than GPUs are
    replicated). Read from the policy's config.json (a VLM's `text_config`); a policy that is not
    a local checkpoint yet (a hub id, an SFT output still to be written) is left to vLLM."""
    if tp == 1:
        return
    f = Path(policy) / "config.json"
    if not f.is_file():
        return
    cfg = json.loads(f.read_text())
    text = cfg.get("text_config", cfg)
    heads = text.get("num_attention_heads")
    kv = text.get("num_key_value_heads") or heads
    if heads is not None and heads % tp:
        raise ValueError(f"rollout.engine.tensor_parallel_size ({tp}) does not divide the policy's "
                         f"num_attention_heads ({heads}, {f})")
    if kv is not None and (tp % kv if tp >= kv else kv % tp):
        raise ValueError(f"rollout.engine.tensor_parallel_size ({tp}) and the policy's num_key_value_heads ({kv}, "
                         f"{f}): one must divide the other")
