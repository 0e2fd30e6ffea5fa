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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from rl.dist import DeepSpeedConfig, build_deepspeed, init_distributed
from rl.mirror_descent import MirrorDescentLossInputs, mirror_descent_loss, sequence_logprob_sums
from rl.modeling import load_policy, load_tokenizer, packed_token_logprobs, save_hf
from rl.packing import PackedBatch, Sample, pack, pack_by_budget, plan_bins


@dataclass
class Episode:
    """One scored response, as the learner needs it (the driver keeps the text and reasons)."""

    group: int  # global prompt-group id within the iteration
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float  # verifier score + weighted length reward
    sample_logprob_sum: float  # vLLM's sum of sampled-token log-probs (pi_theta_i per the engine)


def split_minibatches(groups: list[int], m: int) -> list[list[int]]:
    """Contiguous, near-equal split of group ids into m mini-batches."""
    bounds = [round(i * len(groups) / m) for i in range(m + 1)]
    return [groups[bounds[i] : bounds[i + 1]] for i in range(m)]


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


def pack_groups(episodes: list[Episode], max_tokens: int, row_tokens: int) -> list[PackedBatch]:
    """Micro-batches that never split a prompt group (the loss's baseline and 1/k weights are
    per group). Groups are added to a micro-batch while its samples, packed first-fit-decreasing
    into rows of `row_tokens`, fit in max_tokens // row_tokens rows; a group that needs more
    rows on its own becomes a micro-batch of its own. Every micro-batch is one `PackedBatch`."""
    if row_tokens > max_tokens:
        raise ValueError(f"row_tokens {row_tokens} > max_tokens {max_tokens}")
    samples = [
        Sample(e.prompt_ids + e.response_ids, [False] * len(e.prompt_ids) + [True] * len(e.response_ids), i)
        for i, e in enumerate(episodes)
    ]
    by_group: dict[int, list[int]] = {}
    for i, e in enumerate(episodes):
        by_group.setdefault(e.group, []).append(i)

    def rows(idxs: list[int]) -> list[list[int]]:
        return [[idxs[k] for k in b] for b in plan_bins([len(samples[i].ids) for i in idxs], row_tokens)]

    max_rows = max(1, max_tokens // row_tokens)
    batches: list[list[int]] = []
    current: list[int] = []
    for idxs in by_group.values():
        if current and len(rows(current + idxs)) > max_rows:
            batches.append(current)
            current = []
        current = current + idxs
    if current:
        batches.append(current)
    return [pack([[samples[i] for i in row] for row in rows(idxs)]) for idxs in batches]


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
        import ray

        from rl.dist import free_port

        host = "127.0.0.1" if loopback else ray.util.get_node_ip_address()
        return f"{host}:{free_port()}"

    def setup(self, policy: str, ds: DeepSpeedConfig | dict, rank: int, world_size: int, master: str,
              tokens_per_microbatch: int, row_tokens: int, seed: int) -> int:
        ds = ds if isinstance(ds, DeepSpeedConfig) else DeepSpeedConfig.model_validate(ds)
        if ds.zero_stage == 3:
            raise ValueError("ZeRO-3 is not supported by the RL learner yet: export_weights would need to "
                             "gather the sharded parameters on every rank; use zero_stage 0 or 1")
        if ds.zero_stage == 2 and world_size > 1:
            # tests/test_rl_distributed.py: with DeepSpeed 0.19.8's unmanaged accumulation, ZeRO-2 on
            # 2 ranks updates rank 1's partition wrongly when a step has several backward passes
            # (world size 2 vs 1 differ by ~2 x lr), so data-parallel invariance does not hold.
            raise ValueError("ZeRO-2 with several learner ranks gives wrong gradients when a step has "
                             "several micro-batches (DeepSpeed 0.19.8); use zero_stage 0 or 1")
        self.dist = init_distributed(rank, world_size, master)
        torch.manual_seed(seed)
        self.tokenizer = load_tokenizer(policy)
        self.engine, self.bf16 = build_deepspeed(load_policy(policy), ds)
        self.tokens_per_microbatch = tokens_per_microbatch
        self.row_tokens = row_tokens
        return rank

    # -- log-probs ------------------------------------------------------------------------

    def _sequence_logps(self, mb: PackedBatch, with_entropy: bool = False):
        logp_T, ent_T = packed_token_logprobs(self.engine, mb, with_entropy=with_entropy)
        seq_logp = sequence_logprob_sums(logp_T, mb.seq, len(mb.indices), response_mask_T=mb.seq >= 0)
        return seq_logp, ent_T

    @torch.no_grad()
    def sequence_logprobs(self, episodes: list[Episode]) -> list[float]:
        """log pi(y|x) of each episode under the current weights (no grad)."""
        out = [0.0] * len(episodes)
        for mb in pack_groups(episodes, self.tokens_per_microbatch, self.row_tokens):
            seq_logp, _ = self._sequence_logps(mb)
            for slot, idx in enumerate(mb.indices):
                out[idx] = float(seq_logp[slot])
        return out

    @torch.no_grad()
    def token_logprobs(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Per-token log-probs after each prompt (to compare with vLLM's for a sync check)."""
        samples = [Sample(s, [j >= p for j in range(len(s))], i) for i, (s, p) in enumerate(zip(sequences, prompt_lens))]
        out: list[list[float]] = [[] for _ in sequences]
        for mb in pack_by_budget(samples, self.tokens_per_microbatch, self.row_tokens):
            logp_T, _ = packed_token_logprobs(self.engine, mb)
            for slot, idx in enumerate(mb.indices):
                out[idx] = logp_T[mb.seq == slot].tolist()
        return out

    # -- one iteration ---------------------------------------------------------------------

    def train_iteration(self, minibatches: list[list[Episode]], num_groups: list[int], tau: float,
                        baseline: str, ref_from_engine: bool, reset_optimizer: bool) -> dict:
        """`minibatches[m]`: this rank's episodes of mini-batch m; `num_groups[m]`: groups in
        mini-batch m over all ranks (the global normaliser). Returns metrics summed/averaged over
        this rank (the driver combines ranks)."""
        t0 = time.perf_counter()
        if reset_optimizer:
            reset_optimizer_state(self.engine)
        # pi_theta_i log-probs of mini-batches 1.. before any update (mini-batch 0 reuses its own
        # first forward, which runs before the first update).
        ref: list[list[float] | None] = [None] * len(minibatches)
        for m, eps in enumerate(minibatches):
            if ref_from_engine:
                ref[m] = [e.sample_logprob_sum for e in eps]
            elif m > 0 and eps:
                ref[m] = self.sequence_logprobs(eps)
        stats = {"loss": 0.0, "kl_k1": 0.0, "kl_k3": 0.0, "entropy_sum": 0.0, "entropy_tokens": 0,
                 "tokens": 0, "steps": 0, "skipped_steps": 0, "grad_norm": 0.0, "engine_ref_abs_diff": 0.0,
                 "engine_ref_seqs": 0, "sequences": 0}
        world = self.dist.world_size
        for m, eps in enumerate(minibatches):
            if num_groups[m] == 0:  # no group anywhere (all prompts too long or filtered): no step
                continue
            micro = pack_groups(eps, self.tokens_per_microbatch, self.row_tokens) if eps else []
            # One collective for two facts: does any rank hold a non-finite reward, and how many
            # backward passes does the busiest rank need. Every rank runs that many (short ranks
            # pad with all-zero backwards): a rank with no group of this mini-batch must still
            # take part in the step, and stages that reduce inside backward pair them up.
            rewards_ok = all(math.isfinite(e.reward) for e in eps)
            sync = torch.tensor([0.0 if rewards_ok else 1.0, float(len(micro))])
            if world > 1:
                torch.distributed.all_reduce(sync, op=torch.distributed.ReduceOp.MAX)
            if sync[0].item() > 0:  # skip the whole step on every rank: weights stay as they are
                stats["skipped_steps"] += 1
                continue
            n_backward = max(1, int(sync[1].item()))
            nonfinite = False
            done = 0
            for mb in micro:
                seq_logp, ent_T = self._sequence_logps(mb, with_entropy=True)
                batch_eps = [eps[i] for i in mb.indices]
                if ref[m] is None:
                    ref_logp = seq_logp.detach()
                    engine_lp = torch.tensor([e.sample_logprob_sum for e in batch_eps])
                    stats["engine_ref_abs_diff"] += float((engine_lp - ref_logp).abs().sum())
                    stats["engine_ref_seqs"] += len(batch_eps)
                else:
                    ref_logp = torch.tensor([ref[m][i] for i in mb.indices], dtype=torch.float32)
                out = mirror_descent_loss(
                    MirrorDescentLossInputs(
                        logp_N=seq_logp,
                        ref_logp_N=ref_logp.to(seq_logp.dtype),
                        rewards_N=torch.tensor([e.reward for e in batch_eps], dtype=seq_logp.dtype),
                        group_ids_N=torch.tensor([e.group for e in batch_eps]),
                    ),
                    tau=tau, num_groups_total=num_groups[m], baseline=baseline,
                )
                if not torch.isfinite(out.loss):
                    nonfinite = True
                    break
                # DeepSpeed averages gradients over ranks; the loss is already a global-sum share.
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
                self.engine.backward(self._zero_loss(), scale_wrt_gas=False)
            flag = torch.tensor(1.0 if nonfinite else 0.0)
            if world > 1:
                torch.distributed.all_reduce(flag)
            if flag.item() > 0:
                # Drop this step's gradients and keep the weights (logged by the driver).
                self._discard_gradients()
                stats["skipped_steps"] += 1
                continue
            self.engine.step()
            gn = self.engine.get_global_grad_norm()
            stats["grad_norm"] += float(gn) if gn is not None else 0.0
            stats["steps"] += 1
        stats["seconds"] = time.perf_counter() - t0
        return stats

    def _discard_gradients(self) -> None:
        """Drop the step's accumulated gradients without an optimizer step. At ZeRO-0/1 they sit in
        param.grad (zero_grad clears them); ZeRO-2 has already reduced them into its partition
        buffers inside backward, which zero_grad leaves alone (the next step would apply them), so
        release those the way DeepSpeed's own overflow skip does (zero/stage_1_and_2.py, step)."""
        self.engine.zero_grad()
        opt = self.engine.optimizer
        if hasattr(opt, "averaged_gradients"):
            release = getattr(opt, "_release_preflattened_grad_buffers", None)
            if release is not None:
                release()
            for buffers in (opt.averaged_gradients, getattr(opt, "all_grad_tensors", {})):
                for k in list(buffers):
                    buffers[k] = None

    def _zero_loss(self) -> torch.Tensor:
        """A loss whose gradient is exactly zero for every trainable parameter."""
        return sum(p.sum() for p in self.engine.module.parameters() if p.requires_grad) * 0.0

    # -- weights ---------------------------------------------------------------------------

    def export_weights(self, bucket_mb: int = 256, dtype: str = "bfloat16") -> list:
        """The policy's weights as byte buckets for `VLLMEngine.load_weights` (rank 0 calls this).
        Stages 0-2 keep full parameters on every rank (setup refuses ZeRO-3)."""
        from rollout.weight_sync import pack_buckets

        return pack_buckets(self.engine.module.state_dict().items(), bucket_mb << 20, getattr(torch, dtype))

    def state_fingerprint(self) -> list[float]:
        """A few parameter sums, to compare weights across ranks/runs in tests."""
        return [float(p.detach().float().sum()) for p in self.engine.module.parameters()]

    def save(self, out_dir: str, save_deepspeed: bool = True) -> str:
        """HF checkpoint (rank 0) + DeepSpeed state (all ranks) under out_dir."""
        if save_deepspeed:
            self.engine.save_checkpoint(f"{out_dir}/deepspeed", tag="state")
        if self.dist.rank == 0:
            save_hf(self.engine.module, self.tokenizer, f"{out_dir}/policy")
        return out_dir

    def load(self, out_dir: str) -> None:
        self.engine.load_checkpoint(f"{out_dir}/deepspeed", tag="state")

