"""The RL learner against a raw torch loop on the same batches (issue 17 item 6).

Replays one recorded learner call (an RL run with `learner.record_iterations: N` writes
`<run>/learner_batches/iter_NNNNN.json`) in this process, with the run config's learner settings
(threads, micro-batch budget, row packing, DeepSpeed stage and dtype):

1. `Learner.train_iteration` as the driver calls it, minus Ray (one rank, gloo; a call recorded
   with several ranks is merged into one rank's share): tokens/s, and its phases as the run logs
   them (`learner_<phase>_s`: pack, ref, forward, backward, step);
2. a raw torch loop on the same packed micro-batches (`rl.learner.pack_groups`, the same rows):
   the same model in the learner's compute dtype, forward -> summed token cross-entropy with the
   fp32 log-softmax (`rl.modeling.packed_ce_sum`) -> backward, one AdamW step per mini-batch. No
   DeepSpeed, no reference pass, no entropy, no loss bookkeeping;
3. what the Ray hop adds: pickling the episodes there and back (Ray's serializer for such
   objects is pickle 5), timed here without a cluster.

`ratio` = learner tokens/s / raw tokens/s, both counting the real (unpadded) tokens of the trained
micro-batches; the two run alternately (`--repeats` pairs) and `ratio` is the median of the pairs'
ratios, since a CPU's speed drifts by ~10 % within a minute. With `--idle-engine` a vLLM engine of the config's `rollout.engine` is started
and used for one generate before the timings, and left idle during them, as in a run.

    python -m experiments.bench_learner --config experiments/configs/rl_demo.yaml \\
        --batches runs/demo-rl/learner_batches/iter_00001.json --out runs/bench_learner.json

Without a recorded call, `--synthetic GxK` makes one: G groups of K responses of random tokens,
long-CoT shaped (response lengths log-uniform from 128 to the config's `rollout.sampling.max_tokens`),
rewards 0/1. `--build-policy qwen2-0.5b` builds the random-weight 507M Qwen2 of
experiments/bench_weight_sync.py. On a GPU the result also has the model FLOPs utilisation
(`mfu`): the forward FLOPs of every trained sequence (2 x parameters x length + the causal
attention's 2 x layers x hidden x length^2) x 3 (forward + backward), per second, over the GPU's
dense bf16 peak (its data sheet, and a bf16 8192^3 matmul measured in the same process); also
with the learner's reference forwards counted. The GPU run of issue 17 (experiments/gpu_check.sh):

    python -m experiments.bench_learner --config experiments/configs/gpu/rl_1node_8gpu.yaml \\
        --set learner.num_ranks=1 --set learner.deepspeed.zero_stage=1 \\
        --synthetic 32x8 --build-policy qwen2-0.5b --out bench_learner_gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import pickle
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from experiments.tiny_model import QWEN2_05B_LAYERS, build_tiny_checkpoint
from rl.config import RLConfig
from rl.configio import load_config
from rl.dist import free_port, rank_device
from rl.learner import Episode, Learner, LearnerCall, pack_groups, plan_minibatches, shard_groups
from rl.modeling import load_policy, packed_ce_sum
from rl.packing import PackedBatch
from rollout.engine import SamplingConfig, VLLMEngine

# Dense bf16 peak per GPU (NVIDIA data sheets, SXM parts, without sparsity), TFLOP/s.
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def one_rank(call: LearnerCall) -> list[list[Episode]]:
    """Every rank's episodes of each mini-batch, as one rank's share."""
    return [[e for r in call.per_rank for e in r[m]] for m in range(len(call.num_groups))]


def synthetic_call(cfg: RLConfig, groups: int, k: int, vocab: int, seed: int = 0) -> LearnerCall:
    """`groups` x `k` episodes of random tokens below `vocab`: prompts of 64-512 tokens, responses
    log-uniform from 128 to `rollout.sampling.max_tokens` (a long-CoT spread), rewards 0/1; split
    into the config's mini-batches as the driver does, for one rank."""
    rng = random.Random(seed)
    lo, hi = math.log(128), math.log(max(128, cfg.rollout.sampling.max_tokens))
    by_group: dict[int, list[Episode]] = {}
    for g in range(groups):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(64, min(512, cfg.data.max_prompt_tokens)))]
        by_group[g] = [Episode(g, prompt, [rng.randrange(vocab) for _ in range(int(math.exp(rng.uniform(lo, hi))))],
                               float(rng.random() < 0.5), 0.0) for _ in range(k)]
    minibatches = plan_minibatches(list(by_group), 1, cfg.learner.minibatches_per_iteration)
    obj = cfg.objective
    return LearnerCall(shard_groups(minibatches, by_group, 1), [len(m) for m in minibatches], obj.tau, obj.baseline,
                       False, cfg.learner.reset_optimizer_each_iteration)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_iteration(model: torch.nn.Module, opt: torch.optim.Optimizer, micro: list[list[PackedBatch]]) -> tuple[float, int]:
    """fwd + bwd over each mini-batch's micro-batches, then one optimizer step: (seconds, tokens)."""
    device = next(model.parameters()).device
    synchronize(device)
    t, tokens = time.perf_counter(), 0
    for batches in micro:
        for mb in batches:
            packed_ce_sum(model, mb).backward()
            tokens += mb.num_tokens
        opt.step()
        opt.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - t, tokens


def forward_flops(config: dict, params: int, lengths: list[int]) -> float:
    """Forward FLOPs of sequences of these lengths through a model of `params` parameters and HF
    `config`: 2 x matmul parameters x tokens + causal attention (QK^T and AV: 2 x hidden x L^2 per
    layer, half of the L x L blocks). Matmul parameters = all parameters minus the input
    embedding, plus the LM head (the same matrix when tied)."""
    c = config.get("text_config", config)
    n = params - (0 if c.get("tie_word_embeddings", False) else c["vocab_size"] * c["hidden_size"])
    return sum(2 * n * L + 2 * c["num_hidden_layers"] * c["hidden_size"] * L * L for L in lengths)


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """A bf16 n^3 matmul's measured TFLOP/s on `device` (3 warm-ups, mean of `repeats`)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def mfu(result: dict, policy: str, call: LearnerCall, device: torch.device) -> dict:
    """Model FLOPs utilisation against the data-sheet and the measured matmul peak. `training`
    counts forward + backward (3 forwards) of every sequence, the usual MFU; the learner's `all`
    adds its reference forward of mini-batches 1.. (mini-batch 0 reuses its first forward)."""
    config = json.loads((Path(policy) / "config.json").read_text())

    def fwd(minibatches: list[list[Episode]]) -> float:
        return forward_flops(config, result["params"], [len(e.prompt_ids) + len(e.response_ids) for m in minibatches for e in m])

    mbs = one_rank(call)
    train, ref = 3 * fwd(mbs), fwd(mbs[1:])
    name = torch.cuda.get_device_name(device)
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), math.nan)
    measured = matmul_tflops(device)
    out = {"gpu": name, "datasheet_bf16_tflops": sheet, "matmul_bf16_tflops": measured,
           "training_tflop": train / 1e12, "reference_tflop": ref / 1e12}
    for who, flops, seconds in (("learner_training", train, result["learner_s"]),
                                ("learner_all", train + ref, result["learner_s"]), ("raw", train, result["raw_s"])):
        achieved = flops / seconds / 1e12
        out[who] = {"tflops": achieved, "mfu_datasheet": achieved / sheet, "mfu_matmul": achieved / measured}
    return out


def serialization_s(minibatches: list[list[Episode]], repeats: int = 5) -> dict:
    """Pickle the episodes there and back (what Ray does to a task's arguments), best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        blob = pickle.dumps(minibatches, protocol=5)
        pickle.loads(blob)
        best = min(best, time.perf_counter() - t)
    return {"seconds": best, "bytes": len(blob)}


def bench(cfg: RLConfig, call: LearnerCall, repeats: int) -> dict:
    """The learner and the raw loop, each warmed up once, then `repeats` pairs run alternately
    (learner, raw, learner, raw, ...): a CPU's speed drifts by ~10 % within a minute (BENCHMARKS.md),
    so each pair's ratio compares runs seconds apart. `ratio` is the median of the pairs'."""
    lc = cfg.learner
    threads = lc.threads or 1
    single = replace(call, per_rank=[one_rank(call)])
    mbs = single.per_rank[0]

    learner = Learner(threads=threads)
    # lc.row_tokens: RLConfig fills it in (prompt + response budget) when the file leaves it out
    learner.setup(cfg.policy, lc.deepspeed, 0, 1, f"127.0.0.1:{free_port()}", lc.tokens_per_microbatch,
                  lc.row_tokens, cfg.seed, short_row_tokens=lc.short_row_tokens)
    bf16, device = learner.bf16, learner.device  # bf16: DeepSpeed's resolution of deepspeed.bf16 "auto"
    model = load_policy(cfg.policy).to(device, torch.bfloat16 if bf16 else torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lc.deepspeed.lr)
    micro = [pack_groups(eps, lc.tokens_per_microbatch, lc.row_tokens, lc.short_row_tokens, device=device)
             for eps in mbs if eps]

    def learner_iteration() -> dict:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out = learner.train_iteration(*single.args(0))
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return out

    learner_iteration(), raw_iteration(model, opt, micro)  # warm-up: first-call allocations, optimizer state
    runs, raw = [], []
    for _ in range(repeats):
        runs.append(learner_iteration())
        raw.append(raw_iteration(model, opt, micro))

    med = statistics.median
    learn_s, raw_s = med(r["seconds"] for r in runs), med(s for s, _ in raw)
    tokens = runs[0]["tokens"]
    if tokens != raw[0][1]:
        raise AssertionError(f"learner trained {tokens} tokens, the raw loop {raw[0][1]}: not the same batches")
    phases = {k.removeprefix("learner_").removesuffix("_s"): med(r[k] for r in runs)
              for k in runs[0] if k.startswith("learner_")}
    ratios = [s / r["seconds"] for (s, _), r in zip(raw, runs)]
    return {
        "device": str(device), "learner_peak_gpu_gib": runs[0]["peak_gpu_gib"], "threads": threads, "bf16": bf16,
        "zero_stage": lc.deepspeed.zero_stage, "params": sum(p.numel() for p in model.parameters()), "tokens": tokens,
        "sequences": sum(len(e) for e in mbs), "minibatches": len(mbs),
        "micro_batches": sum(len(m) for m in micro), "rows": sum(int(b.input_ids.shape[0]) for m in micro for b in m),
        "padded_tokens": sum(int(b.input_ids.numel()) for m in micro for b in m),
        "learner_s": learn_s, "learner_s_all": [r["seconds"] for r in runs], "learner_tokens_per_s": tokens / learn_s,
        "learner_phases_s": phases, "learner_unaccounted_s": learn_s - sum(phases.values()),
        "raw_s": raw_s, "raw_s_all": [s for s, _ in raw], "raw_tokens_per_s": tokens / raw_s,
        "ratio": med(ratios), "ratio_all": ratios, "serialization": serialization_s(mbs),
    }


def idle_engine(cfg: RLConfig, call: LearnerCall) -> VLLMEngine:
    """The config's engine, after one generate on a few recorded prompts (then idle)."""
    engine = VLLMEngine(cfg.rollout.engine.model_copy(update={"model": cfg.policy}))
    prompts = [e.prompt_ids for e in one_rank(call)[0][:: cfg.rollout.sampling.n]][:8]
    engine.generate(prompts, SamplingConfig(n=cfg.rollout.sampling.n, max_tokens=cfg.rollout.sampling.max_tokens))
    return engine


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the RL config the batches were recorded with")
    ap.add_argument("--set", action="append", default=[], help="config overrides, key=value (as rl/train.py)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--batches", help="<run>/learner_batches/iter_NNNNN.json")
    src.add_argument("--synthetic", metavar="GxK", help="G groups of K random long-CoT-shaped episodes instead")
    ap.add_argument("--policy", help="default: the config's policy")
    ap.add_argument("--build-policy", choices=["qwen2-0.5b"],
                    help="build the random-weight 507M Qwen2 (experiments.tiny_model.QWEN2_05B_LAYERS) and use it")
    ap.add_argument("--repeats", type=int, default=5, help="learner/raw pairs, run alternately")
    ap.add_argument("--idle-engine", action="store_true", help="keep an idle vLLM engine alive meanwhile")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_learner_") as work:
        cfg = load_config(RLConfig, args.config, args.set + ([f"policy={args.policy}"] if args.policy else []))
        if args.build_policy:
            rows = max(QWEN2_05B_LAYERS["max_positions"], cfg.learner.row_tokens)
            built = build_tiny_checkpoint(Path(work) / args.build_policy, seed=0,
                                          **{**QWEN2_05B_LAYERS, "max_positions": rows})
            cfg = cfg.model_copy(update={"policy": str(built)})
        if args.synthetic:
            groups, k = (int(x) for x in args.synthetic.lower().split("x"))
            hf = json.loads((Path(cfg.policy) / "config.json").read_text())
            # text ids only: a VLM's image placeholder ids sit above its byte/text ids
            vocab = min(hf.get("text_config", hf)["vocab_size"], hf.get("image_token_id", 1 << 62))
            call = synthetic_call(cfg, groups, k, vocab, cfg.seed)
        else:
            call = LearnerCall.load(args.batches)
        engine = idle_engine(cfg, call) if args.idle_engine else None
        try:
            result = bench(cfg, call, args.repeats)
        finally:
            if engine is not None:
                engine.close()
        device = rank_device(0)
        if device.type == "cuda":
            result["mfu"] = mfu(result, cfg.policy, call, device)
    result.update(command=" ".join(["python -m experiments.bench_learner", *sys.argv[1:]]), idle_engine=args.idle_engine,
                  batches=args.batches or f"synthetic {args.synthetic}", policy=args.build_policy or cfg.policy)
    ph = " ".join(f"{k} {v:.2f}" for k, v in result["learner_phases_s"].items())
    print(f"learner {result['learner_tokens_per_s']:.0f} tok/s ({result['learner_s']:.2f} s: {ph}, other "
          f"{result['learner_unaccounted_s']:.2f}) | raw torch {result['raw_tokens_per_s']:.0f} tok/s "
          f"({result['raw_s']:.2f} s) | ratio {result['ratio']:.2f} (pairs {min(result['ratio_all']):.2f}-"
          f"{max(result['ratio_all']):.2f}) | {result['tokens']} tokens, "
          f"{result['micro_batches']} micro-batches | pickle there and back {result['serialization']['seconds']:.3f} s")
    if "mfu" in result:
        m = result["mfu"]
        lt, la, raw = m["learner_training"], m["learner_all"], m["raw"]
        print(f"{m['gpu']}: learner MFU {lt['mfu_datasheet']:.3f} of the data sheet's {m['datasheet_bf16_tflops']:.0f} "
              f"TFLOP/s ({lt['mfu_matmul']:.3f} of a measured matmul's {m['matmul_bf16_tflops']:.0f}); with its "
              f"reference forward {la['mfu_datasheet']:.3f}; raw torch {raw['mfu_datasheet']:.3f}; "
              f"learner peak {result['learner_peak_gpu_gib']:.1f} GiB")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
