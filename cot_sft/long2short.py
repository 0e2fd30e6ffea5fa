"""long2short (Kimi k1.5 §2.4): make a long-CoT model answer in fewer tokens, on top of any run.

Two of the paper's four methods (the length penalty is the RL loop's, §2.3.3):

- **shortest rejection sampling**: sample n responses per prompt (vLLM, T = 1), keep the
  *shortest correct* one of each prompt, and SFT the model on those (`cot_sft.train` with
  `init_checkpoint`; experiments/configs/sft_long2short.yaml). Prompts with no correct sample
  are left out and counted.
- **model merging**: average the weights of a long-CoT model and a short model of the same
  architecture, theta = alpha * long + (1 - alpha) * short (alpha = 0.5 in the paper).

    python -m cot_sft.long2short shortest-rs --model runs/demo-long-rl/checkpoints/iter_00023/policy \\
        --prompts data/long/train.jsonl --n 8 --num-prompts 1000 --out data/long/shortest_rs.jsonl
    python -m cot_sft.train --config experiments/configs/sft_long2short.yaml \\
        --set init_checkpoint=runs/demo-long-rl/checkpoints/iter_00023/policy
    python -m cot_sft.long2short merge --long runs/demo-long/checkpoint \\
        --short runs/demo-long-rl-lenpen/checkpoints/iter_00023/policy --alpha 0.5 --out runs/long2short-merged
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from prompts.schema import DataError, PromptRow, load_prompt_rows, write_jsonl
from rl.modeling import load_policy, load_tokenizer, save_hf
from rl.scoring import Scorer
from rollout.engine import EngineConfig, Generation, SamplingConfig, VLLMEngine, encode_request


@dataclass
class Pick:
    """The shortest correct sample of one prompt: its text and token count."""

    prompt_index: int
    text: str
    tokens: int


def shortest_correct(gens: Sequence[Generation], correct: Sequence[bool]) -> dict[int, Pick]:
    """Per prompt index, the correct sample with the fewest tokens (the first of equals).
    Truncated samples are never correct here: the scorer gives them 0."""
    best: dict[int, Pick] = {}
    for g, ok in zip(gens, correct):
        if ok and (g.prompt_index not in best or len(g.token_ids) < best[g.prompt_index].tokens):
            best[g.prompt_index] = Pick(g.prompt_index, g.text, len(g.token_ids))
    return best


def shortest_rs(model: str, rows: list[PromptRow], n: int, max_tokens: int, engine_cfg: EngineConfig,
                seed: int = 0) -> tuple[list[dict], dict]:
    """SFT rows (prompt row + `response`) of the shortest correct sample per prompt, and stats."""
    with VLLMEngine(engine_cfg.model_copy(update={"model": model})) as engine:
        prompts, kept = [], []
        for r in rows:
            req, n_tokens = encode_request(engine.tokenizer, r, None)
            if n_tokens + max_tokens <= engine_cfg.max_model_len:
                prompts.append(req)
                kept.append(r)
        if len(kept) < len(rows):
            raise DataError(f"{len(rows) - len(kept)} prompts do not fit max_model_len "
                            f"{engine_cfg.max_model_len} with max_tokens {max_tokens}")
        gens = engine.generate(prompts, SamplingConfig(n=n, temperature=1.0, max_tokens=max_tokens, seed=seed))
    with Scorer() as scorer:
        results = scorer.score_detailed([kept[g.prompt_index] for g in gens], [g.text for g in gens],
                                        [g.finish_reason for g in gens])
    picks = shortest_correct(gens, [r.correct for r in results])
    out = []
    for i, p in sorted(picks.items()):
        row = kept[i].model_dump(mode="json", exclude_none=True)
        row["response"] = p.text
        out.append(row)
    lengths = [len(g.token_ids) for g in gens]
    ok_lengths = [n for n, r in zip(lengths, results) if r.correct]
    stats = {
        "prompts": len(kept), "samples": len(gens), "prompts_with_correct": len(picks),
        "sample_len_mean": sum(lengths) / max(1, len(lengths)),
        "correct_len_mean": sum(ok_lengths) / max(1, len(ok_lengths)),
        "kept_len_mean": sum(p.tokens for p in picks.values()) / max(1, len(picks)),
        "pass_rate": sum(r.correct for r in results) / max(1, len(results)),
    }
    return out, stats


def merge_weights(long_sd: dict[str, torch.Tensor], short_sd: dict[str, torch.Tensor],
                  alpha: float) -> dict[str, torch.Tensor]:
    """alpha * long + (1 - alpha) * short for every floating tensor, computed in float32 and
    returned in the long model's dtypes; other tensors must be equal. Key sets and shapes must
    match (the same architecture)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if long_sd.keys() != short_sd.keys():
        only = sorted(long_sd.keys() ^ short_sd.keys())
        raise ValueError(f"the two models have different parameters, e.g. {only[:3]}: not the same architecture")
    out = {}
    for k, a in long_sd.items():
        b = short_sd[k]
        if a.shape != b.shape:
            raise ValueError(f"{k}: shape {tuple(a.shape)} vs {tuple(b.shape)}: not the same architecture")
        if a.is_floating_point():
            out[k] = (alpha * a.float() + (1 - alpha) * b.to(a.device).float()).to(a.dtype)
        elif torch.equal(a, b.to(a.device)):
            out[k] = a
        else:
            raise ValueError(f"{k}: non-float tensors differ; cannot average them")
    return out


def merge(long_dir: str, short_dir: str, alpha: float, out_dir: str) -> Path:
    """Write the merged model as an HF checkpoint with the long model's config and tokenizer."""
    long_m, short_m = load_policy(long_dir), load_policy(short_dir)
    merged = merge_weights(long_m.state_dict(), short_m.state_dict(), alpha)
    long_m.load_state_dict(merged)
    cfg = json.loads((Path(long_dir) / "config.json").read_text())
    dtype = getattr(torch, cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16")  # as the long model is stored
    out = save_hf(long_m, load_tokenizer(long_dir), out_dir, dtype=dtype, source=long_dir)
    (out / "thinkrl_merge.json").write_text(json.dumps({"long": long_dir, "short": short_dir, "alpha": alpha}) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rs = sub.add_parser("shortest-rs", help="shortest correct of n samples per prompt -> SFT rows")
    rs.add_argument("--model", required=True)
    rs.add_argument("--prompts", required=True, help="prompt rows (prompts/schema.py) with reference answers")
    rs.add_argument("--out", required=True, help="SFT rows to write (JSONL)")
    rs.add_argument("--n", type=int, default=8, help="samples per prompt")
    rs.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts")
    rs.add_argument("--max-tokens", type=int, default=3072)
    rs.add_argument("--max-model-len", type=int, default=3200)
    rs.add_argument("--kv-cache-gib", type=float, default=1.0)
    rs.add_argument("--seed", type=int, default=0)
    mg = sub.add_parser("merge", help="average a long and a short model's weights")
    mg.add_argument("--long", required=True)
    mg.add_argument("--short", required=True)
    mg.add_argument("--alpha", type=float, default=0.5, help="weight of the long model")
    mg.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "merge":
        out = merge(args.long, args.short, args.alpha, args.out)
        print(f"merged {args.alpha} x {args.long} + {1 - args.alpha:g} x {args.short} -> {out}")
        return
    if args.n < 2:
        ap.error("--n must be >= 2: one sample leaves nothing to choose the shortest from")
    rows = load_prompt_rows(args.prompts)[: args.num_prompts]
    cfg = EngineConfig(model=args.model, max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
                       seed=args.seed)
    out_rows, stats = shortest_rs(args.model, rows, args.n, args.max_tokens, cfg, args.seed)
    write_jsonl(args.out, out_rows)
    Path(args.out).with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"shortest-RS: {stats['prompts_with_correct']} of {stats['prompts']} prompts had a correct sample; "
          f"kept responses average {stats['kept_len_mean']:.0f} tokens (all samples {stats['sample_len_mean']:.0f}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
