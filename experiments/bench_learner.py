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
micro-batches. With `--idle-engine` a vLLM engine of the config's `rollout.engine` is started
and used for one generate before the timings, and left idle during them, as in a run.

    python -m experiments.bench_learner --config experiments/configs/rl_demo.yaml \\
        --batches runs/demo-rl/learner_batches/iter_00001.json --out runs/bench_learner.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from rl.config import RLConfig
from rl.configio import load_config
from rl.dist import free_port
from rl.learner import Episode, Learner, LearnerCall, pack_groups
from rl.modeling import load_policy, packed_ce_sum
from rl.packing import PackedBatch
from rollout.engine import SamplingConfig, VLLMEngine


def one_rank(call: LearnerCall) -> list[list[Episode]]:
    """Every rank's episodes of each mini-batch, as one rank's share."""
    return [[e for r in call.per_rank for e in r[m]] for m in range(len(call.num_groups))]


def raw_iteration(model: torch.nn.Module, opt: torch.optim.Optimizer, micro: list[list[PackedBatch]]) -> tuple[float, int]:
    """fwd + bwd over each mini-batch's micro-batches, then one optimizer step: (seconds, tokens)."""
    t, tokens = time.perf_counter(), 0
    for batches in micro:
        for mb in batches:
            packed_ce_sum(model, mb).backward()
            tokens += mb.num_tokens
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t, tokens


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
    lc = cfg.learner
    threads = lc.threads or 1
    single = replace(call, per_rank=[one_rank(call)])
    mbs = single.per_rank[0]

    learner = Learner(threads=threads)
    # lc.row_tokens: RLConfig fills it in (prompt + response budget) when the file leaves it out
    learner.setup(cfg.policy, lc.deepspeed, 0, 1, f"127.0.0.1:{free_port()}", lc.tokens_per_microbatch,
                  lc.row_tokens, cfg.seed, short_row_tokens=lc.short_row_tokens)
    learner.train_iteration(*single.args(0))  # warm-up: first-call allocations, optimizer state
    runs = [learner.train_iteration(*single.args(0)) for _ in range(repeats)]
    bf16 = learner.bf16  # what DeepSpeed was built with (deepspeed.bf16 "auto" resolved)
    del learner

    model = load_policy(cfg.policy).to(torch.bfloat16 if bf16 else torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lc.deepspeed.lr)
    micro = [pack_groups(eps, lc.tokens_per_microbatch, lc.row_tokens, lc.short_row_tokens) for eps in mbs if eps]
    raw_iteration(model, opt, micro)  # warm-up
    raw = [raw_iteration(model, opt, micro) for _ in range(repeats)]

    med = statistics.median
    learn_s, raw_s = med(r["seconds"] for r in runs), med(s for s, _ in raw)
    tokens = runs[0]["tokens"]
    if tokens != raw[0][1]:
        raise AssertionError(f"learner trained {tokens} tokens, the raw loop {raw[0][1]}: not the same batches")
    phases = {k.removeprefix("learner_").removesuffix("_s"): med(r[k] for r in runs)
              for k in runs[0] if k.startswith("learner_")}
    return {
        "threads": threads, "bf16": bf16, "zero_stage": lc.deepspeed.zero_stage, "tokens": tokens,
        "sequences": sum(len(e) for e in mbs), "minibatches": len(mbs),
        "micro_batches": sum(len(m) for m in micro), "rows": sum(int(b.input_ids.shape[0]) for m in micro for b in m),
        "padded_tokens": sum(int(b.input_ids.numel()) for m in micro for b in m),
        "learner_s": learn_s, "learner_s_all": [r["seconds"] for r in runs], "learner_tokens_per_s": tokens / learn_s,
        "learner_phases_s": phases, "learner_unaccounted_s": learn_s - sum(phases.values()),
        "raw_s": raw_s, "raw_s_all": [s for s, _ in raw], "raw_tokens_per_s": tokens / raw_s,
        "ratio": raw_s / learn_s, "serialization": serialization_s(mbs),
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
    ap.add_argument("--batches", required=True, help="<run>/learner_batches/iter_NNNNN.json")
    ap.add_argument("--policy", help="default: the config's policy")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle-engine", action="store_true", help="keep an idle vLLM engine alive meanwhile")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    cfg = load_config(RLConfig, args.config, args.set + ([f"policy={args.policy}"] if args.policy else []))
    call = LearnerCall.load(args.batches)
    engine = idle_engine(cfg, call) if args.idle_engine else None
    try:
        result = bench(cfg, call, args.repeats)
    finally:
        if engine is not None:
            engine.close()
    result.update(command=" ".join(["python -m experiments.bench_learner", *sys.argv[1:]]), batches=args.batches,
                  idle_engine=args.idle_engine, policy=cfg.policy)
    ph = " ".join(f"{k} {v:.2f}" for k, v in result["learner_phases_s"].items())
    print(f"learner {result['learner_tokens_per_s']:.0f} tok/s ({result['learner_s']:.2f} s: {ph}, other "
          f"{result['learner_unaccounted_s']:.2f}) | raw torch {result['raw_tokens_per_s']:.0f} tok/s "
          f"({result['raw_s']:.2f} s) | ratio {result['ratio']:.2f} | {result['tokens']} tokens, "
          f"{result['micro_batches']} micro-batches | pickle there and back {result['serialization']['seconds']:.3f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
