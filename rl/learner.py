"""The RL learner: one data-parallel rank of a DeepSpeed engine, run as a Ray actor.

Per iteration (k1.5 §2.3.2, online policy mirror descent):
  1. the driver hands each rank whole prompt groups (its share of every mini-batch);
  2. the rank computes log pi_theta_i of every response *before the first update*: for mini-batch
     0 this is the detached value of the training forward itself (the policy has not moved yet,
     so no extra pass), for later mini-batches a no-grad pass at iteration start;
  3. for each mini-batch: packed forward with grad -> per-sequence log-prob sums -> the pure loss
     (`rl.mirror_descent`) normalised by the global group count -> backward; one optimizer step;
  4. optimizer state is reset at the start of each iteration by default (each iteration is a new
     mirror-descent subproblem around pi_theta_i).

ZeRO-3 shards the parameters themselves: every forward all-gathers each layer's weights in
DeepSpeed's module hooks and every backward reduce-scatters its gradients, so forwards and
backwards are collectives. Each rank must therefore run the same number of them: ranks with less
work pad with forwards on a two-token dummy batch, followed by a backward of its loss times 0
where a backward is due (`_dummy_forwards`, `_pad_backward`). Code that reads whole weights
(export, save, fingerprint) gathers them a bucket at a time on every rank (`_gathered_state`).

Devices (issue 17): a rank has one device, `self.device`, decided by `rl.dist.init_distributed`
(its GPU under NCCL, else the CPU under gloo). Micro-batches are packed on it, the loss inputs
are made on it, and the tensors handed to collectives live on it; the host sees only Python
numbers (episodes in, stats out).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from rl.checkpoint import rng_state, set_rng_state, write_json_atomic
from rl.dist import DeepSpeedConfig, build_deepspeed, free_port, init_distributed
from rl.mirror_descent import GroupIndex, MirrorDescentLossInputs, mirror_descent_loss, sequence_logprob_sums
from rl.modeling import checkpoint_state_dict, load_policy, load_tokenizer, packed_token_logprobs, save_hf
from rl.moe_metrics import RouterLoad
from rl.packing import PackedBatch, Sample, pack, pack_by_budget, padded_tokens, plan_rows
from rl.vision import freeze_vision_tower, load_vision
from rollout.weight_sync import pack_buckets


@dataclass
class Episode:
    """One scored response, as the learner needs it (the driver keeps the text and reasons)."""

    group: int  # global prompt-group id within the iteration
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float  # verifier score + weighted length reward
    sample_logprob_sum: float  # vLLM's sum of sampled-token log-probs (pi_theta_i per the engine)
    # Image prompts: the decoded images; prompt_ids are then the engine's expanded ids
    images: list = field(default_factory=list)
    # Partial rollouts (rl.partial): response tokens before this offset are context only, not in the
    # loss (objective.partial_segments, rl.mirror_descent.first_trained_token); 0: the whole response.
    # sample_logprob_sum is then the engine's sum over the trained tokens only.
    trained_from: int = 0


@dataclass
class LearnerCall:
    """One iteration's `train_iteration` call, every rank's share: what the driver sends
    (rl.steps.update), what `learner.record_iterations` writes to the run directory, and what
    `experiments/bench_learner.py` replays against a raw torch loop. `per_rank[r][m]`: rank r's
    episodes of mini-batch m; `num_groups[m]`: groups in mini-batch m over all ranks."""

    per_rank: list[list[list[Episode]]]
    num_groups: list[int]
    tau: float
    baseline: str
    ref_from_engine: bool
    reset_optimizer: bool

    def args(self, rank: int) -> tuple:
        """`Learner.train_iteration`'s arguments for `rank`."""
        return (self.per_rank[rank], self.num_groups, self.tau, self.baseline, self.ref_from_engine,
                self.reset_optimizer)

    def save(self, path: str | Path) -> None:
        """As JSON (atomically). Images are not written, only their count: a replay of an image
        batch is refused (`load`)."""
        def ep(e: Episode) -> dict:
            return {**{k: v for k, v in e.__dict__.items() if k != "images"}, "images": len(e.images)}

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**self.__dict__, "per_rank": [[[ep(e) for e in mb] for mb in r] for r in self.per_rank]})

    @classmethod
    def load(cls, path: str | Path) -> LearnerCall:
        d = json.loads(Path(path).read_text())
        ranks = d.pop("per_rank")
        if any(e["images"] for r in ranks for mb in r for e in mb):
            raise ValueError(f"{path}: a recorded batch with image prompts cannot be replayed (images are not recorded)")
        return cls(per_rank=[[[Episode(**{**e, "images": []}) for e in mb] for mb in r] for r in ranks], **d)


def split_minibatches(groups: list[int], m: int) -> list[list[int]]:
    """Contiguous, near-equal split of group ids into m mini-batches."""
    bounds = [round(i * len(groups) / m) for i in range(m + 1)]
    return [groups[bounds[i] : bounds[i + 1]] for i in range(m)]


def plan_minibatches(groups: list[int], num_ranks: int, wanted: int) -> list[list[int]]:
    """The iteration's mini-batches: `wanted` of them when every rank gets a group in each; fewer
    when there are fewer groups than num_ranks x wanted; one when there are fewer groups than
    ranks (the ranks without a group pad with zero-gradient backwards, `Learner._pad_backward`,
    and the update still happens). None only when no group was kept. Before issue 16 fewer
    groups than ranks gave no mini-batch, and the iteration silently did not update."""
    if not groups:
        return []
    return split_minibatches(groups, max(1, min(wanted, len(groups) // num_ranks)))


def shard_groups(minibatches: list[list[int]], group_episodes: dict[int, list[Episode]],
                 num_ranks: int) -> list[list[list[Episode]]]:
    """Each learner rank's share of every mini-batch: whole prompt groups, dealt round-robin
    (group gi of a mini-batch goes to rank gi % num_ranks). `per_rank[r][m]` is rank r's
    episodes of mini-batch m (possibly empty: every rank still takes part in every step)."""
    per_rank: list[list[list[Episode]]] = [[[] for _ in minibatches] for _ in range(num_ranks)]
    for m, groups in enumerate(minibatches):
        for gi, g in enumerate(groups):
            per_rank[gi % num_ranks][m].extend(group_episodes[g])
    return per_rank


def pack_groups(episodes: list[Episode], max_tokens: int, row_tokens: int,
                short_row_tokens: int | None = None, *,
                device: torch.device | str | None = None) -> list[PackedBatch]:
    """Micro-batches that never split a prompt group (the loss's baseline and 1/k weights are
    per group). Groups are added to a micro-batch while its samples, packed first-fit-decreasing
    into rows of `row_tokens`, fit in max_tokens // row_tokens rows; a group that needs more
    rows on its own becomes a micro-batch of its own. Every micro-batch is one `PackedBatch`,
    its tensors on `device`.
    With `short_row_tokens` (long-CoT, see `rl.packing.plan_rows`) the test is the padded size
    (rows x widest row) against max_tokens.
    Targets are the response tokens from each episode's `trained_from` on (partial rollouts: the
    earlier segments are context), for the trained policy and the reference alike."""
    if row_tokens > max_tokens:
        raise ValueError(f"row_tokens {row_tokens} > max_tokens {max_tokens}")
    samples = [
        Sample(e.prompt_ids + e.response_ids,
               [False] * len(e.prompt_ids) + [j >= e.trained_from for j in range(len(e.response_ids))], i, e.images)
        for i, e in enumerate(episodes)
    ]
    by_group: dict[int, list[int]] = {}
    for i, e in enumerate(episodes):
        by_group.setdefault(e.group, []).append(i)

    def rows(idxs: list[int]) -> list[list[int]]:
        return [[idxs[k] for k in b] for b in plan_rows([len(samples[i].ids) for i in idxs], row_tokens, short_row_tokens)]

    max_rows = max(1, max_tokens // row_tokens)
    lengths = [len(s.ids) for s in samples]

    def too_big(idxs: list[int]) -> bool:
        r = rows(idxs)
        return padded_tokens(r, lengths) > max_tokens if short_row_tokens else len(r) > max_rows

    batches: list[list[int]] = []
    current: list[int] = []
    for idxs in by_group.values():
        if current and too_big(current + idxs):
            batches.append(current)
            current = []
        current = current + idxs
    if current:
        batches.append(current)
    return [pack([[samples[i] for i in row] for row in rows(idxs)], device=device) for idxs in batches]


def loss_inputs(logp_N: torch.Tensor, episodes: list[Episode], ref_logp: list[float] | None) -> MirrorDescentLossInputs:
    """The loss's inputs for one micro-batch (`episodes` in slot order), every tensor made on
    logp_N's device from the episodes' Python numbers (the group index too, so no device sync).
    `ref_logp` None: the batch is its own reference (mini-batch 0 runs before any update)."""
    dev, dt = logp_N.device, logp_N.dtype
    return MirrorDescentLossInputs(
        logp_N=logp_N,
        ref_logp_N=logp_N.detach() if ref_logp is None else torch.tensor(ref_logp, dtype=dt, device=dev),
        rewards_N=torch.tensor([e.reward for e in episodes], dtype=dt, device=dev),
        group_ids_N=GroupIndex.from_labels([e.group for e in episodes], dev),
    )


@contextmanager
def timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to seconds[key]. On a GPU it is host time: the `.item()` and
    `float()` reads in the loop sync often enough for phase totals, not for single kernels."""
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t


def reset_optimizer_state(engine) -> None:
    """Clear AdamW moments and step counts: DeepSpeed wraps the torch optimizer (ZeRO / bf16
    wrappers expose it as `.optimizer`), and `state` is the torch optimizer's public state."""
    opt = engine.optimizer
    while hasattr(opt, "optimizer") and not isinstance(opt, torch.optim.Optimizer):
        opt = opt.optimizer
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"cannot find the torch optimizer inside {type(engine.optimizer).__name__}")
    opt.state.clear()


class Learner:
    """One learner rank. Create `num_ranks` of these as Ray actors and call them in lockstep."""

    def __init__(self, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)

    def address(self, loopback: bool) -> str:
        """host:port for the process group's rendezvous on this rank's node (loopback when every
        rank is on one node, so nothing listens beyond 127.0.0.1)."""
        import ray  # Ray: only a rank running as a Ray actor asks; in-process learners never import it

        host = "127.0.0.1" if loopback else ray.util.get_node_ip_address()
        return f"{host}:{free_port()}"

    def ping(self) -> int:
        """This rank's pid: it answers, so its actor is alive (rl.learner_group probes ranks with it)."""
        return os.getpid()

    def setup(self, policy: str, ds: DeepSpeedConfig | dict, rank: int, world_size: int, master: str,
              tokens_per_microbatch: int, row_tokens: int, seed: int, freeze_vision: bool = False,
              short_row_tokens: int | None = None) -> int:
        ds = ds if isinstance(ds, DeepSpeedConfig) else DeepSpeedConfig.model_validate(ds)
        if ds.zero_stage == 2 and world_size > 1:
            # tests/test_rl_distributed.py: with DeepSpeed 0.19.8's unmanaged accumulation, ZeRO-2 on
            # 2 ranks updates rank 1's partition wrongly when a step has several backward passes
            # (world size 2 vs 1 differ by ~2 x lr), so data-parallel invariance does not hold.
            raise ValueError("ZeRO-2 with several learner ranks gives wrong gradients when a step has "
                             "several micro-batches (DeepSpeed 0.19.8); use zero_stage 0 or 1")
        self.dist = init_distributed(rank, world_size, master, ds.nccl)
        self.device = self.dist.device
        torch.manual_seed(seed)
        self.tokenizer = load_tokenizer(policy)
        self.vision = load_vision(policy)
        self.policy_dir = policy
        # Under ZeRO-3 each rank loads the full model once and deepspeed.initialize partitions it
        # (fine for models one host's memory holds; larger ones would need deepspeed.zero.Init).
        model = load_policy(policy)
        # A frozen vision tower takes no gradient, no optimizer state and no weight sync.
        self.frozen = set(freeze_vision_tower(model)) if freeze_vision else set()
        self.router = RouterLoad.attach(model)  # MoE policies: expert load per iteration
        self.engine, self.bf16 = build_deepspeed(model, ds)
        if self.engine.device != self.device:  # DeepSpeed places the model on the current device
            raise RuntimeError(f"DeepSpeed put the policy on {self.engine.device}, the rank's device is {self.device}")
        self.zero3 = ds.zero_stage == 3
        self.tokens_per_microbatch = tokens_per_microbatch
        self.row_tokens = row_tokens
        self.short_row_tokens = short_row_tokens
        return rank

    # -- log-probs ------------------------------------------------------------------------

    def _sequence_logps(self, mb: PackedBatch, with_entropy: bool = False):
        logp_T, ent_T = packed_token_logprobs(self.engine, mb, with_entropy=with_entropy, vision=self.vision)
        seq_logp = sequence_logprob_sums(logp_T, mb.seq, len(mb.indices), response_mask_T=mb.seq >= 0)
        return seq_logp, ent_T

    @torch.no_grad()
    def sequence_logprobs(self, episodes: list[Episode]) -> list[float]:
        """log pi(y|x) of each episode under the current weights (no grad). Under ZeRO-3 with several
        ranks every rank must call this together (possibly with no episodes)."""
        out = [0.0] * len(episodes)
        micro = (pack_groups(episodes, self.tokens_per_microbatch, self.row_tokens, self.short_row_tokens,
                             device=self.device) if episodes else [])
        pad = self._forwards_short_of_busiest(len(micro))
        for mb in micro:
            seq_logp, _ = self._sequence_logps(mb)
            for slot, idx in enumerate(mb.indices):
                out[idx] = float(seq_logp[slot])
        self._dummy_forwards(pad)
        return out

    @torch.no_grad()
    def token_logprobs(self, sequences: list[list[int]], prompt_lens: list[int],
                       images: list[list] | None = None) -> list[list[float]]:
        """Per-token log-probs after each prompt (to compare with vLLM's for a sync check). With
        `images`, sequences hold one placeholder per image (expanded here, as vLLM does) and
        `prompt_lens` count unexpanded tokens."""
        images = images or [[] for _ in sequences]
        samples = []
        for i, (s, p, im) in enumerate(zip(sequences, prompt_lens, images)):
            if im:
                full = self.vision.expand(s, im)
                p, s = p + len(full) - len(s), full
            samples.append(Sample(s, [j >= p for j in range(len(s))], i, list(im)))
        out: list[list[float]] = [[] for _ in sequences]
        micro = (pack_by_budget(samples, self.tokens_per_microbatch, self.row_tokens, self.short_row_tokens,
                                device=self.device) if samples else [])
        pad = self._forwards_short_of_busiest(len(micro))
        for mb in micro:
            logp_T, _ = packed_token_logprobs(self.engine, mb, vision=self.vision)
            for slot, idx in enumerate(mb.indices):
                out[idx] = logp_T[mb.seq == slot].tolist()
        self._dummy_forwards(pad)
        return out

    # -- ZeRO-3: equal numbers of (collective) forwards and backwards on every rank ---------

    def _collective_forwards(self) -> bool:
        return self.zero3 and self.dist.world_size > 1

    def _forwards_short_of_busiest(self, n: int) -> int:
        """Under ZeRO-3 with several ranks: how many forwards this rank, about to run n, must add
        to match the busiest rank (each forward all-gathers the layers' weights, a collective that
        would hang if one rank skipped it); 0 otherwise. Call it before the forwards: the
        all_reduce must not interleave with DeepSpeed's own per-forward collectives."""
        if not self._collective_forwards():
            return 0
        t = torch.tensor([float(n)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item()) - n

    def _dummy_batch(self) -> PackedBatch:
        """One two-token sequence with one target: the cheapest forward that touches every layer."""
        tok = self.tokenizer.eos_token_id or 0
        return pack([[Sample([tok, tok], [False, True], 0)]], device=self.device)

    @torch.no_grad()
    def _dummy_forwards(self, n: int) -> None:
        for _ in range(n):
            self._sequence_logps(self._dummy_batch())

    def _pad_backward(self) -> None:
        """A backward pass whose gradient is exactly zero for every trainable parameter (x * 0.0 of
        a finite x is +-0, and g + 0 == g), for ranks with fewer micro-batches than the busiest.
        Stages 0-2 hold full parameters, so a sum of them times 0 is enough (no forward). Under
        ZeRO-3 parameters outside a forward are empty placeholders and the gradient
        reduce-scatter is driven by DeepSpeed's hooks, so it takes a real forward on the dummy
        batch."""
        if self.zero3:
            seq_logp, _ = self._sequence_logps(self._dummy_batch())
            loss = seq_logp.sum() * 0.0
        else:
            loss = sum(p.sum() for p in self.engine.module.parameters() if p.requires_grad) * 0.0
        self.engine.backward(loss, scale_wrt_gas=False)

    # -- one iteration ---------------------------------------------------------------------

    def train_iteration(self, minibatches: list[list[Episode]], num_groups: list[int], tau: float,
                        baseline: str, ref_from_engine: bool, reset_optimizer: bool) -> dict:
        """`minibatches[m]`: this rank's episodes of mini-batch m; `num_groups[m]`: groups in
        mini-batch m over all ranks (the global normaliser). Returns metrics summed/averaged over
        this rank (the driver combines ranks)."""
        t0 = time.perf_counter()
        if self.router is not None:
            self.router.reset()
        if reset_optimizer:
            reset_optimizer_state(self.engine)
        # pi_theta_i log-probs of mini-batches 1.. before any update (mini-batch 0 reuses its own
        # first forward, which runs before the first update).
        phase: dict[str, float] = {}  # seconds per phase (learner_<phase>_s metrics)
        ref: list[list[float] | None] = [None] * len(minibatches)
        for m, eps in enumerate(minibatches):
            if ref_from_engine:
                ref[m] = [e.sample_logprob_sum for e in eps]
            elif m > 0 and (eps or self._collective_forwards()):  # ZeRO-3: every rank joins
                with timed(phase, "ref"):
                    ref[m] = self.sequence_logprobs(eps)
        stats = {"loss": 0.0, "kl_k1": 0.0, "kl_k3": 0.0, "entropy_sum": 0.0, "entropy_tokens": 0,
                 "tokens": 0, "steps": 0, "skipped_steps": 0, "grad_norm": 0.0, "engine_ref_abs_diff": 0.0,
                 "engine_ref_seqs": 0, "sequences": 0}
        world = self.dist.world_size
        for m, eps in enumerate(minibatches):
            if num_groups[m] == 0:  # no group anywhere (all prompts too long or filtered): no step
                continue
            with timed(phase, "pack"):
                micro = (pack_groups(eps, self.tokens_per_microbatch, self.row_tokens, self.short_row_tokens,
                                     device=self.device) if eps else [])
            # One collective for two facts: does any rank hold a non-finite reward, and how many
            # backward passes does the busiest rank need. Every rank runs that many (short ranks
            # pad with all-zero backwards, `_pad_backward`): a rank with no group of this mini-batch
            # must still take part in the step, and stages that reduce inside backward pair them up.
            rewards_ok = all(math.isfinite(e.reward) for e in eps)
            sync = torch.tensor([0.0 if rewards_ok else 1.0, float(len(micro))], device=self.device)
            if world > 1:
                torch.distributed.all_reduce(sync, op=torch.distributed.ReduceOp.MAX)
            if sync[0].item() > 0:  # skip the whole step on every rank: weights stay as they are
                stats["skipped_steps"] += 1
                continue
            n_backward = max(1, int(sync[1].item()))
            nonfinite = False
            done = 0
            for mb in micro:
                with timed(phase, "forward"):
                    seq_logp, ent_T = self._sequence_logps(mb, with_entropy=True)
                batch_eps = [eps[i] for i in mb.indices]
                inputs = loss_inputs(seq_logp, batch_eps, None if ref[m] is None else [ref[m][i] for i in mb.indices])
                if ref[m] is None:  # how far vLLM's pi_theta_i is from the learner's (a metric)
                    engine_lp = [e.sample_logprob_sum for e in batch_eps]
                    diff = torch.tensor(engine_lp, dtype=seq_logp.dtype, device=self.device) - inputs.ref_logp_N
                    stats["engine_ref_abs_diff"] += float(diff.abs().sum())
                    stats["engine_ref_seqs"] += len(batch_eps)
                out = mirror_descent_loss(inputs, tau=tau, num_groups_total=num_groups[m], baseline=baseline)
                if not torch.isfinite(out.loss):
                    nonfinite = True
                    if self.zero3:  # pair the forward that ran with a backward (the step is dropped)
                        self.engine.backward(seq_logp.sum() * 0.0, scale_wrt_gas=False)
                        done += 1
                    break
                # DeepSpeed averages gradients over ranks; the loss is already a global-sum share.
                with timed(phase, "backward"):
                    self.engine.backward(out.loss * world, scale_wrt_gas=False)
                done += 1
                n = len(batch_eps)
                stats["loss"] += float(out.loss.detach())
                stats["kl_k1"] += float(out.metrics["kl_k1"]) * n
                stats["kl_k3"] += float(out.metrics["kl_k3"]) * n
                stats["sequences"] += n
                stats["entropy_sum"] += float(ent_T.sum())
                stats["entropy_tokens"] += int((mb.seq >= 0).sum())
                stats["tokens"] += mb.num_tokens
            for _ in range(n_backward - done):
                self._pad_backward()
            flag = torch.tensor(1.0 if nonfinite else 0.0, device=self.device)
            if world > 1:
                torch.distributed.all_reduce(flag)
            if flag.item() > 0:
                # Drop this step's gradients and keep the weights (logged by the driver).
                self._discard_gradients()
                stats["skipped_steps"] += 1
                continue
            with timed(phase, "step"):
                self.engine.step()
            gn = self.engine.get_global_grad_norm()
            stats["grad_norm"] += float(gn) if gn is not None else 0.0
            stats["steps"] += 1
        stats["seconds"] = time.perf_counter() - t0
        stats.update({f"learner_{k}_s": v for k, v in phase.items()})
        if self.router is not None:
            stats.update(self.router.stats())
        return stats

    def _discard_gradients(self) -> None:
        """Drop the step's accumulated gradients without an optimizer step. At ZeRO-0/1 they sit in
        param.grad (zero_grad clears them); ZeRO-2 has already reduced them into its partition
        buffers inside backward, which zero_grad leaves alone (the next step would apply them), so
        release those the way DeepSpeed's own overflow skip does (zero/stage_1_and_2.py, step)."""
        self.engine.zero_grad()
        opt = self.engine.optimizer
        if self.zero3:
            # ZeRO-3 also reduces inside backward, into partition buffers that the first backward
            # of a step overwrites and later ones add to (its `micro_step_id`). Its own overflow
            # skip resets that through the optimizer's zero_grad, which engine.zero_grad skips.
            opt.zero_grad(set_to_none=True)
        if hasattr(opt, "averaged_gradients"):
            release = getattr(opt, "_release_preflattened_grad_buffers", None)
            if release is not None:
                release()
            for buffers in (opt.averaged_gradients, getattr(opt, "all_grad_tensors", {})):
                for k in list(buffers):
                    buffers[k] = None

    # -- weights ---------------------------------------------------------------------------

    def export_weights(self, bucket_mb: int = 256, dtype: str = "bfloat16") -> list:
        """The policy's trainable-side weights (a frozen vision tower is left out: the engine
        already has it) as byte buckets for `VLLMEngine.load_weights`, in checkpoint format
        (`checkpoint_state_dict`). Stages 0-2 keep full parameters on every rank: call it on rank 0.
        Under ZeRO-3 every rank must call it (gathering is a collective); rank 0 returns the
        buckets, the others []."""
        cast, module = getattr(torch, dtype), self.engine.module
        if not self.zero3:
            state = {k: v for k, v in module.state_dict().items() if k not in self.frozen}
            return pack_buckets(checkpoint_state_dict(module, state).items(), bucket_mb << 20, cast)
        out = []
        for items in self._gathered_state(bucket_mb << 20, cast):
            state = {k: v for k, v in items if k not in self.frozen}
            if self.dist.rank == 0 and state:
                out += pack_buckets(checkpoint_state_dict(module, state).items(), bucket_mb << 20, cast)
        return out

    def _gathered_state(self, bucket_bytes: int, dtype: torch.dtype | None) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """ZeRO-3: the full state dict as lists of (name, tensor) of about `bucket_bytes` each (the
        rule of `rollout.weight_sync.pack_buckets`, sizes in the export dtype; whole tensors, so a
        fused MoE tensor converts to checkpoint format within its list). Each list's parameters
        are all-gathered on every rank while the caller holds it (peak: one bucket of full
        weights, not the model); its tensors are valid only until the next list is requested.
        Buffers (e.g. DeepSeek's router `e_score_correction_bias`) are not partitioned and pass
        as they are."""
        import deepspeed  # DeepSpeed takes seconds to import (it probes accelerators)

        def out_bytes(t: torch.Tensor) -> int:
            numel = getattr(t, "ds_numel", t.numel())
            itemsize = dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size()
            return numel * itemsize

        group: list[tuple[str, torch.Tensor]] = []
        size = 0

        def gathered(items):
            params = list({id(t): t for _, t in items if hasattr(t, "ds_id")}.values())  # tied: once
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield [(name, t.detach()) for name, t in items]

        for name, t in self.engine.module.state_dict(keep_vars=True).items():
            n = out_bytes(t)
            if size and size + n > bucket_bytes:
                yield from gathered(group)
                group, size = [], 0
            group.append((name, t))
            size += n
        if group:
            yield from gathered(group)

    def state_fingerprint(self) -> list[float]:
        """A few parameter sums, to compare weights across ranks/runs in tests (under ZeRO-3 all
        ranks call it together)."""
        if not self.zero3:
            return [float(p.detach().float().sum()) for p in self.engine.module.parameters()]
        sums = {}
        for items in self._gathered_state(256 << 20, None):
            sums.update((name, float(t.float().sum())) for name, t in items)
        return [sums[name] for name, _ in self.engine.module.named_parameters()]

    def _rng_file(self, out_dir: str) -> Path:
        return Path(out_dir) / "rng" / f"rank_{self.dist.rank}.json"

    def save(self, out_dir: str, save_deepspeed: bool = True) -> str:
        """HF checkpoint (rank 0) + DeepSpeed state and RNG states (all ranks) under out_dir. Every
        rank calls it (DeepSpeed's save is collective; under ZeRO-3 so is gathering the full weights)."""
        if save_deepspeed:
            self.engine.save_checkpoint(f"{out_dir}/deepspeed", tag="state")
        self._rng_file(out_dir).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._rng_file(out_dir), rng_state())
        state = None
        if self.zero3:
            state = {}
            for items in self._gathered_state(256 << 20, torch.bfloat16):
                if self.dist.rank == 0:
                    state.update((name, t.to("cpu", torch.bfloat16 if t.is_floating_point() else t.dtype).clone())
                                 for name, t in items)
        if self.dist.rank == 0:
            save_hf(self.engine.module, self.tokenizer, f"{out_dir}/policy", source=self.policy_dir,
                    state_dict=state)
        return out_dir

    def load(self, out_dir: str) -> None:
        """DeepSpeed state and this rank's RNG states (checkpoints from before issue 16 have none)."""
        self.engine.load_checkpoint(f"{out_dir}/deepspeed", tag="state")
        if self._rng_file(out_dir).is_file():
            set_rng_state(json.loads(self._rng_file(out_dir).read_text()))

