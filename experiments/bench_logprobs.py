"""Log-prob agreement between the rollout engine and the learner, and the weight-sync time (issue 5).

For the same weights, vLLM's log-prob of every sampled token is compared with the learner's
recomputation of it (packed forward, fp32 log-softmax): mean and max |delta| per token, in fp32
(engine dtype float32, learner `bf16: false`) and in bf16 (engine bfloat16, learner bf16). Then one
weight sync learner -> engine is timed (`export_weights` + `load_weights`, what the driver logs
as `weight_sync_s`) and the engine's log-probs of the same samples are compared again.

The numbers mean something only on a trained policy (a random one is near-uniform, so any two
computations agree). Without --policy the script builds the tiny model and SFTs it briefly on the
embedded arithmetic task, as the tests do.

    python -m experiments.bench_logprobs                      # short SFT, then both dtypes
    python -m experiments.bench_logprobs --policy runs/demo/checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cot_sft.train import main as sft_main
from experiments.arith import generate
from experiments.tiny_model import build_tiny_checkpoint
from prompts.chat import encode_prompt
from prompts.schema import row_from_dict, write_jsonl
from rl.dist import DeepSpeedConfig, free_port
from rl.learner import Learner
from rl.modeling import load_tokenizer
from rollout.engine import EngineConfig, SamplingConfig, VLLMEngine


def sampled_logprob_gap(engine, learner, prompts: list[list[int]], sampling) -> dict:
    """Sample from `engine` (a `VLLMEngine`), recompute every sampled token's log-prob with
    `learner` (a `Learner` rank holding the same weights), and summarise |engine - learner|."""
    gens = engine.generate(prompts, sampling)
    seqs = [prompts[g.prompt_index] + g.token_ids for g in gens]
    plens = [len(prompts[g.prompt_index]) for g in gens]
    ours = learner.token_logprobs(seqs, plens)
    diffs = []
    for g, lp in zip(gens, ours):
        if len(lp) != len(g.logprobs):
            raise AssertionError(f"learner scored {len(lp)} tokens, engine sampled {len(g.logprobs)}")
        diffs += [abs(a - b) for a, b in zip(g.logprobs, lp)]
    return {
        "mean_abs": sum(diffs) / max(1, len(diffs)),
        "max_abs": max(diffs, default=0.0),
        "tokens": len(diffs),
        "sequences": len(gens),
        "engine_logprob_mean": sum(x for g in gens for x in g.logprobs) / max(1, len(diffs)),
    }


def sync_weights(learner, engine, dtype: str) -> float:
    """One learner -> engine weight sync in-process; returns its wall time in seconds."""
    t = time.perf_counter()
    engine.load_weights(learner.export_weights(dtype=dtype))
    return time.perf_counter() - t


def short_sft(work: Path, steps: int) -> Path:
    """Tiny model + `steps` SFT steps on the arithmetic task (the recipe of tests/conftest.py)."""
    data = work / "arith"
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in generate(seed=0, n_sft=3000, n_train=400, n_eval=60).items():
        write_jsonl(data / f"{name}.jsonl", rows)
    init = build_tiny_checkpoint(work / "init", seed=0)
    cfg = work / "sft.yaml"
    cfg.write_text(
        f"run_name: sft\noutput_dir: {work}\ninit_checkpoint: {init}\n"
        f"data:\n  train_file: {data / 'sft.jsonl'}\n  max_seq_len: 768\n"
        f"train:\n  max_steps: {steps}\n  tokens_per_step: 8192\n  tokens_per_microbatch: 8192\n"
        "  row_tokens: 768\n  warmup_steps: 10\n"
        "optim:\n  zero_stage: 1\n  lr: 2.0e-3\n  grad_clip: 1.0\n"
    )
    return Path(sft_main(["--config", str(cfg), "--no-eval"])["checkpoint"])


def arith_prompts(policy: str | Path, n: int, seed: int = 0) -> list[list[int]]:
    tok = load_tokenizer(policy)
    rows = generate(seed=seed + 1, n_sft=0, n_train=n, n_eval=0)["train"]
    return [encode_prompt(tok, row_from_dict(r, "arith").chat()) for r in rows[:n]]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="HF checkpoint (default: tiny model + a short SFT in a temp dir)")
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the learner and the engine")
    args = ap.parse_args(argv)
    print("command:", " ".join([Path(sys.executable).name, "-m", "experiments.bench_logprobs", *sys.argv[1:]]))
    work = Path(tempfile.mkdtemp(prefix="bench_logprobs_"))
    policy = Path(args.policy) if args.policy else short_sft(work, args.sft_steps)
    prompts = arith_prompts(policy, args.prompts, args.seed)
    sampling = SamplingConfig(n=args.samples, temperature=1.0, max_tokens=args.max_tokens, seed=args.seed)
    results = []
    for dtype in args.dtypes:
        engine = VLLMEngine(EngineConfig(model=str(policy), dtype=dtype, kv_cache_gib=0.25, max_model_len=1024,
                                         seed=args.seed, cpu_threads=args.threads))
        learner = Learner(threads=args.threads)
        learner.setup(str(policy), DeepSpeedConfig(bf16=dtype == "bfloat16"), 0, 1, f"127.0.0.1:{free_port()}",
                      8192, 1024, args.seed)
        gap = sampled_logprob_gap(engine, learner, prompts, sampling)
        sync_s = [sync_weights(learner, engine, dtype) for _ in range(3)]
        after = sampled_logprob_gap(engine, learner, prompts, sampling)
        row = {"dtype": dtype, **gap, "after_sync_mean_abs": after["mean_abs"],
               "weight_sync_s": min(sync_s), "weight_sync_s_all": sync_s,
               "params": sum(p.numel() for p in learner.engine.module.parameters()), "policy": str(policy)}
        results.append(row)
        print(f"{dtype:>8}: mean |dlogp| {gap['mean_abs']:.2e}  max {gap['max_abs']:.2e}  over {gap['tokens']} "
              f"sampled tokens ({gap['sequences']} seqs); after a sync {after['mean_abs']:.2e}; "
              f"weight_sync_s {min(sync_s):.3f} (best of 3, {row['params'] / 1e6:.1f}M params)", flush=True)
        engine.close()
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
