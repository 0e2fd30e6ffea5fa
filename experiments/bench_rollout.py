"""Our rollout path against vLLM's own `LLM.generate` on the same requests (issue 15 item 5).

    python -m experiments.bench_rollout --config experiments/configs/rl_long.yaml --prompts 16

One engine built from the RL config's `rollout.engine` (the run's process count and threads),
the config's first `--prompts` training prompts, its `rollout.sampling` (n, temperature,
max_tokens). After a warm-up call, the same requests go through, in turn:

1. `LLM.generate` as a vLLM user calls it: no log-probs, no seeds;
2. the same with `logprobs=0` (the sampled token's log-prob, which the loss needs);
3. the same with a seed per request (what `rollout.seeded` adds: vLLM then samples the seeded
   rows one at a time);
4. `VLLMEngine.generate`, our path, seeded as a run seeds it: 3 plus building the requests and
   extracting the log-probs into `Generation` records.

Each line gives tokens generated, wall seconds and tokens/s; the ratios say where our path's time
goes. The samples differ between lines (different seeds), so so do the token counts: compare
tokens/s, over enough samples (16 prompts x 8) that the mean length settles. A Ray actor adds one
object transfer of the results per call (not measured here: the engine is in this process).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prompts.schema import load_prompt_rows
from rl.config import RLConfig
from rl.configio import load_config
from rl.steps import Prompts
from rollout.engine import SamplingConfig, VLLMEngine


def timed(fn) -> tuple[int, float]:
    t = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="an RL config (rl/train.py's)")
    ap.add_argument("--prompts", type=int, default=16, help="training prompts to send, each n times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = ap.parse_args(argv)
    from vllm import SamplingParams, TokensPrompt  # vLLM: an optional extra, seconds to import

    cfg = load_config(RLConfig, args.config, [])
    rows = load_prompt_rows(cfg.data.train_file)[: args.prompts]
    sp = cfg.rollout.sampling
    engine = VLLMEngine(cfg.rollout.engine.model_copy(update={"model": cfg.policy, "seed": args.seed}))
    with engine:
        prompts = Prompts.encode(rows, engine.tokenizer, None)
        ids = [prompts.ids[r.id] for r in rows]
        llm = engine.llm

        def raw(logprobs: int | None, seeded: bool) -> int:
            params = [SamplingParams(n=sp.n, temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens,
                                     logprobs=logprobs, seed=args.seed + i * sp.n if seeded else None)
                      for i in range(len(ids))]
            outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs)

        def ours() -> int:
            gens = engine.generate(ids, sp.model_copy(update={"seed": args.seed}))
            return sum(len(g.token_ids) for g in gens)

        engine.generate(ids[:2], sp.model_copy(update={"max_tokens": 16}))  # warm-up
        runs = {
            "vllm_generate": lambda: raw(None, False),
            "vllm_generate_logprobs": lambda: raw(0, False),
            "vllm_generate_logprobs_seeded": lambda: raw(0, True),
            "ours_vllm_engine_generate": ours,
        }
        result: dict = {"config": args.config, "prompts": len(ids), "n": sp.n, "max_tokens": sp.max_tokens,
                        "runs": {}}
        for name, fn in runs.items():
            tokens, wall = timed(fn)
            result["runs"][name] = {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}
            print(f"{name:32s} {tokens:7d} tokens {wall:7.1f} s {tokens / wall:8.0f} tokens/s", flush=True)
    base = result["runs"]["vllm_generate"]["tokens_per_s"]
    result["ratio_to_vllm_generate"] = {k: v["tokens_per_s"] / base for k, v in result["runs"].items()}
    print(json.dumps(result["ratio_to_vllm_generate"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
