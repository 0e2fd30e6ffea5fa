"""Long-CoT SFT warm start (Kimi k1.5 §2.2 / Kimi-VL-Thinking): teach the policy the reasoning
format -- plan, step-by-step work, self-check, reflection -- inside <think>...</think> followed
by a \\boxed{} answer, so that RL starts from a model that already produces long CoT.

What it does, top to bottom:
  config -> validate + tokenize all rows (tokenizer of `init_checkpoint`)
  -> DeepSpeed (ZeRO from config, bf16 where the hardware has it, AdamW, warm-up + cosine LR)
  -> loop: a step of ~tokens_per_step tokens, packed into rows of tokens_per_microbatch with no
     cross-sample attention; loss = summed CE on assistant tokens / assistant tokens in the step
  -> HF checkpoint (vLLM-loadable) -> held-out pass@1 with vLLM at temperature 1.0
     -> <run>/sft_eval.json.

Image rows (vision-language policies, e.g. the tiny Kimi-K2.5 of the image demo) train the
same way: placeholders expanded as the engine expands them (`rl.vision`), pixel inputs decoded
per step, tower, projector and decoder all trained. Vision alignment (issue 19, Kimi-VL's order:
tower first, on image->text pairs such as experiments/arith_align.py) is this entry on those pairs,
with the vision side on its own LR (`train.vision_lr_ratio`) and optionally the decoder frozen for
its first N steps (`train.freeze_decoder_steps`; cot_sft/vision_groups.py, align_image_demo.yaml).
Differences from the papers: a fixed number of optimizer steps instead of epochs (the embedded
task is generated, so "an epoch" has no special meaning). The demo writes the task data and
builds the tiny starting model before this runs (experiments/prepare.py).

    python -m cot_sft.train --config experiments/configs/sft_demo.yaml [--set train.max_steps=50]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from cot_sft.config import SFTConfig
from cot_sft.data import load_sft_rows, step_batches, tokenize_examples
from cot_sft.vision_groups import VisionDecoderGroups
from prompts.schema import DataError, load_prompt_rows
from rl.configio import ConfigError, dump_config, load_config
from rl.dist import build_deepspeed, init_distributed
from rl.evaluate import evaluate
from rl.metrics import ProgressLine
from rl.modeling import load_policy, load_tokenizer, packed_ce_sum, save_hf
from rl.packing import pack_by_budget
from rl.scoring import Scorer
from rl.vision import load_vision
from rollout.engine import VLLMEngine


def lr_multiplier(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up to 1, then cosine decay to `floor` at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_engine(model: torch.nn.Module, cfg: SFTConfig) -> tuple[Any, bool, VisionDecoderGroups | None]:
    """DeepSpeed around `model` with the warm-up + cosine LR schedule; with
    `train.freeze_decoder_steps` or `train.vision_lr_ratio`, two parameter groups: the vision side
    on its own LR, the decoder waiting while frozen (cot_sft/vision_groups.py)."""
    tr = cfg.train

    def schedule(s: int) -> float:
        return lr_multiplier(s, tr.warmup_steps, tr.max_steps, tr.min_lr_ratio)

    if not tr.freeze_decoder_steps and tr.vision_lr_ratio == 1.0:
        return (*build_deepspeed(model, cfg.optim, schedule), None)
    groups = VisionDecoderGroups(model, tr.freeze_decoder_steps, tr.vision_lr_ratio)
    engine, bf16 = build_deepspeed(model, cfg.optim, groups.lr_lambdas(schedule, tr.warmup_steps), groups.groups)
    print(f"vision side: {sum(p.numel() for p in groups.groups[0]) / 1e6:.2f}M params at {tr.vision_lr_ratio} x LR; "
          f"decoder: {sum(p.numel() for p in groups.groups[1]) / 1e6:.2f}M params, frozen for {groups.steps} steps")
    return engine, bf16, groups


def run_eval(cfg: SFTConfig, ckpt: Path) -> dict:
    ev = cfg.eval
    rows = load_prompt_rows(ev.file)[: ev.num_prompts]
    with VLLMEngine(ev.engine.model_copy(update={"model": str(ckpt)})) as engine, Scorer() as scorer:
        res = evaluate(
            engine.generate, engine.tokenizer, rows, scorer, samples=ev.samples, temperature=ev.temperature,
            max_tokens=ev.max_tokens, seed=ev.seed, max_model_len=ev.engine.max_model_len, vision=load_vision(ckpt),
        )
    return res.to_dict()


def load_training_data(cfg: SFTConfig, config_path: str, with_eval: bool) -> tuple[Any, list, Any]:
    """(tokenizer, tokenized samples, vision spec or None): every row validated and tokenized
    before anything is written or trained, so a bad file fails here and not half-way."""
    examples = load_sft_rows(cfg.data.train_file)[: cfg.data.max_examples]
    if with_eval:
        load_prompt_rows(cfg.eval.file)  # a bad eval file should fail now, not after training
    tokenizer = load_tokenizer(cfg.init_checkpoint)
    tr = cfg.train
    vision_keys = [f"train.freeze_decoder_steps={tr.freeze_decoder_steps}"] if tr.freeze_decoder_steps else []
    if tr.vision_lr_ratio != 1.0:
        vision_keys.append(f"train.vision_lr_ratio={tr.vision_lr_ratio}")
    policy_vision = load_vision(cfg.init_checkpoint)
    if vision_keys and policy_vision is None:
        raise ConfigError(f"{config_path}: {', '.join(vision_keys)}: only for a vision-language policy; "
                          f"{cfg.init_checkpoint} is text-only")
    vision = policy_vision if any(ex.row.has_images() for ex in examples) else None
    samples, dropped = tokenize_examples(tokenizer, examples, cfg.data.max_seq_len, vision)
    if not samples:
        raise DataError(f"{cfg.data.train_file}: no example fits data.max_seq_len={cfg.data.max_seq_len}")
    print(f"SFT data: {len(samples)} examples, {dropped} dropped (> {cfg.data.max_seq_len} tokens)")
    return tokenizer, samples, vision


def train_loop(engine: Any, groups: VisionDecoderGroups | None, samples: list, vision: Any, cfg: SFTConfig,
               dist: Any, log_path: Path) -> dict:
    """The optimizer steps, one metrics line each to `log_path`; stops at `train.max_steps` or
    after `train.time_budget_s`. Returns steps, tokens and wall time."""
    tr = cfg.train
    t_start = time.perf_counter()
    tokens_seen = 0
    stream = step_batches(samples, tr.tokens_per_step // dist.world_size, tr.seed + dist.rank)
    progress = ProgressLine("SFT", tr.max_steps, every_s=30.0)  # plain lines: readable in `make demo > log`
    with log_path.open("w") as log:
        for step in range(tr.max_steps):
            epoch, batch = next(stream)
            if groups is not None:
                groups.at_step(step)
            micro = pack_by_budget(batch, tr.tokens_per_microbatch, tr.row_tokens, tr.short_row_tokens,
                                   device=dist.device)
            n_targets = sum(mb.num_targets for mb in micro)
            # Global normaliser: assistant tokens of the whole step across ranks. DeepSpeed averages
            # gradients over ranks, so scale by world size to get the sum / global count.
            total = torch.tensor(float(n_targets), device=dist.device)
            if dist.world_size > 1:
                torch.distributed.all_reduce(total)
            loss_sum = 0.0
            for mb in micro:
                ce = packed_ce_sum(engine, mb, vision=vision)
                engine.backward(ce * dist.world_size / total, scale_wrt_gas=False)
                loss_sum += ce.item()
            lrs = engine.get_lr()  # this step's (the scheduler moves on in step())
            engine.step()
            tokens_seen += sum(mb.num_tokens for mb in micro)
            elapsed = time.perf_counter() - t_start
            rec = {
                "step": step, "epoch": epoch, "loss": loss_sum / max(1, n_targets),
                "lr": engine.get_lr()[0], "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "tokens_per_s": tokens_seen / elapsed, "wall_s": elapsed,
            }
            if groups is not None:
                rec["lr_decoder"], rec["decoder_frozen"] = lrs[1], groups.frozen(step)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if dist.rank == 0:
                progress.update(step, loss=rec["loss"], tok_per_s=round(rec["tokens_per_s"]))
            if tr.time_budget_s and elapsed > tr.time_budget_s:
                print(f"time budget reached after {step + 1} steps")
                break
    return {"train_wall_s": time.perf_counter() - t_start, "steps": step + 1, "tokens": tokens_seen}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    ap.add_argument("--eval-only", action="store_true",
                    help="no training: evaluate the run's saved checkpoint and write sft_eval.json")
    args = ap.parse_args(argv)

    cfg = load_config(SFTConfig, args.config, args.set)
    run_dir = Path(cfg.output_dir) / cfg.run_name
    if args.eval_only:
        if not (run_dir / "checkpoint").is_dir() or not cfg.eval.file:
            raise ConfigError(f"--eval-only needs {run_dir / 'checkpoint'} and eval.file in {args.config}")
        return {"eval": eval_and_write(cfg, run_dir / "checkpoint", run_dir, None)}
    with_eval = bool(cfg.eval.file) and not args.no_eval
    tokenizer, samples, vision = load_training_data(cfg, args.config, with_eval)

    # -- outputs start here ------------------------------------------------------------------
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "sft_config.yaml")
    init_ckpt = Path(cfg.init_checkpoint)
    dist = init_distributed(nccl=cfg.optim.nccl)
    torch.manual_seed(cfg.train.seed)
    model = load_policy(init_ckpt)
    engine, bf16, groups = build_engine(model, cfg)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, bf16={bf16}, "
          f"ZeRO-{cfg.optim.zero_stage}, world={dist.world_size}")
    result = train_loop(engine, groups, samples, vision, cfg, dist, run_dir / "sft_metrics.jsonl")

    ckpt = save_hf(engine.module, tokenizer, run_dir / "checkpoint", source=init_ckpt)
    result = {"checkpoint": str(ckpt), **result}
    if with_eval and dist.rank == 0:
        result["eval"] = eval_and_write(cfg, ckpt, run_dir, result["train_wall_s"])
    print(f"SFT done in {result['train_wall_s']:.0f}s; checkpoint at {ckpt}")
    return result


def eval_and_write(cfg: SFTConfig, ckpt: Path, run_dir: Path, train_s: float | None) -> dict:
    """Held-out evaluation of `ckpt` -> <run>/sft_eval.json (what the demo reads)."""
    ev = run_eval(cfg, ckpt)
    ev["train_wall_s"] = train_s
    (run_dir / "sft_eval.json").write_text(json.dumps(ev, indent=2) + "\n")
    ln = ev["lengths"]
    print(f"held-out pass@1 = {ev['pass_at_1']:.3f} (n={ev['n']}, T={ev['temperature']}); "
          f"by difficulty {ev['by_difficulty']}; response tokens p50 {ln['len_p50']:.0f} "
          f"p95 {ln['len_p95']:.0f} max {ln['len_max']:.0f}, truncated {ln['truncated_frac']:.3f}")
    return ev


if __name__ == "__main__":
    main()
