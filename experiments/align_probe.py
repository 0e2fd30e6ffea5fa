"""Probe of the vision-alignment recipe (issue 19), the runs behind BENCHMARKS.md "Issue 19, part 2".

A plain-torch loop (AdamW, fp32 weights, optional bf16 autocast, no LR decay) over the same packing
and forward as cot_sft/train.py, with transcription pairs drawn in memory in one of four layouts,
so a recipe can be tried in minutes: every 25/50 steps it prints teacher-forced exact match on
held-out transcriptions (all answer tokens argmax = what greedy decoding would emit), character
accuracy, and the projector output's mean norm and the share of its energy in the mean over
image tokens (`mean_frac`: -> 1 is the collapse). The product path is cot_sft/train.py with
align_image_demo.yaml; this is for finding what that config should say.

    python -m experiments.align_probe --layout task --kinds transcribe --lr-vision 5e-4 --bf16 --time 420

Layouts (the runs of part 2 were made before arith_image drew every image 16 cells wide; `task`
keeps that earlier drawing): task (one 28-px cell per character, as wide as the expression),
fixed (the same glyphs on a 16-cell canvas: arith_image.render now), fixedvar (16-cell canvas,
18-28 px glyphs anywhere in their cells, gray levels, noise), mixed (arith_align's rows as drawn).
"""
import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cot_sft.data import encode_example
from experiments.arith_align import generate_align, render_row
from experiments.arith_image import CELL, COLUMNS, glyph, render
from experiments.tiny_vlm import build_tiny_vlm_checkpoint
from prompts.schema import row_from_dict
from rl.modeling import load_policy, load_tokenizer, packed_ce_sum, packed_logits
from rl.packing import IGNORE, Sample, pack, pack_by_budget
from rl.vision import load_vision, vision_side_names


def draw(raw: dict, layout: str, i: int) -> Image.Image:
    """Row `raw`'s expression drawn in `layout` (the module docstring); `i` seeds the jitter."""
    expr = raw["metadata"]["expression"]
    if layout == "mixed":
        return render_row(raw)
    fixed = render(expr, jitter_seed=str(i)).convert("L")
    if layout == "fixed":
        return fixed
    if layout == "task":
        return fixed.crop((0, 0, CELL * len(expr), CELL))
    if layout != "fixedvar":
        raise ValueError(f"unknown layout {layout!r}")
    r = random.Random(f"{expr}:{i}")
    paper, ink, size = r.randint(215, 255), r.randint(0, 60), r.randint(18, 28)
    canvas = np.full((CELL, COLUMNS * CELL), paper, dtype=np.uint8)
    for k, ch in enumerate(expr):
        g = glyph(ch, size)
        x, y = k * CELL + r.randint(0, CELL - g.width), r.randint(0, CELL - g.height)
        canvas[y : y + g.height, x : x + g.width][~np.asarray(g, dtype=bool)] = ink
    nrng = np.random.default_rng(i)
    hit = nrng.random(canvas.shape) < r.uniform(0, 0.02)
    canvas[hit] = nrng.integers(0, 256, int(hit.sum()), dtype=np.uint8)
    return Image.fromarray(canvas, mode="L")


def to_samples(tok, vision, rows: list[dict], kinds: set[str], layout: str) -> list[tuple[Sample, dict]]:
    out = []
    for i, raw in enumerate(rows):
        if raw["metadata"]["kind"] not in kinds:
            continue
        row = row_from_dict({k: v for k, v in raw.items() if k != "response"}, "probe")
        img = draw(raw, layout, i)
        ids, mask = encode_example(tok, row, raw["response"], [img], vision)
        out.append((Sample(ids, mask, i, [img]), raw))
    return out


@torch.no_grad()
def evaluate(model, vision, ev: list[tuple[Sample, dict]], bf16: bool) -> dict:
    """Teacher-forced exact match by style (task-drawn or not), character accuracy, and the
    projector output's norm and mean share on 4 held-out images."""
    model.eval()
    hit: dict[bool, list[bool]] = {True: [], False: []}
    right = total = 0
    for j in range(0, len(ev), 40):
        chunk = ev[j : j + 40]
        b = pack([[s] for s, _ in chunk])
        pred = packed_logits(model, b, autocast_bf16=bf16, vision=vision).argmax(-1)
        trained = b.targets != IGNORE
        ok = (pred == b.targets) | ~trained
        right += int(((pred == b.targets) & trained).sum())
        total += int(trained.sum())
        for slot in range(len(b.indices)):
            hit[chunk[slot][1]["metadata"]["style"]["task"]].append(bool(ok[b.seq == slot].all()))
    px = vision.pixel_inputs([s.images[0] for s, _ in ev[:4]])
    out = model.model.get_image_features(pixel_values=px["pixel_values"], image_grid_thw=px["image_grid_thw"])
    feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in out.pooler_output]).float()
    model.train()
    share = float(feats.mean(0).norm() ** 2 / (feats.norm(dim=-1) ** 2).mean())
    return {"em_task": sum(hit[True]) / max(1, len(hit[True])), "em_styled": sum(hit[False]) / max(1, len(hit[False])),
            "char_acc": right / total, "feat_norm": float(feats.norm(dim=-1).mean()), "mean_frac": share}


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--time", type=float, default=420, help="stop after this many seconds of training")
    ap.add_argument("--lr-vision", type=float, default=2e-3)
    ap.add_argument("--lr-dec", type=float, default=2e-3)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights)")
    ap.add_argument("--kinds", default="transcribe,operands,operators")
    ap.add_argument("--layout", default="mixed", choices=("mixed", "task", "fixed", "fixedvar"))
    ap.add_argument("--task-share", type=float, default=0.25, help="arith_align's task_style_share (mixed)")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per step")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--init", default="/tmp/align_probe_init", help="where the tiny VLM is built (if missing)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(vars(args), flush=True)
    ck = Path(args.init)
    if not (ck / "config.json").exists():  # the image demo's tiny VLM (prep_image_demo.yaml)
        build_tiny_vlm_checkpoint(ck, seed=0, hidden_size=256, num_layers=2, intermediate_size=1024,
                                  moe_intermediate_size=256, n_routed_experts=4, experts_per_tok=2,
                                  vision_hidden=128, vision_layers=2)
    tok, vision, model = load_tokenizer(ck), load_vision(ck), load_policy(ck)
    torch.manual_seed(0)
    data = generate_align(0, args.n_train, 600, task_style_share=args.task_share)
    train = [s for s, _ in to_samples(tok, vision, data["sft"], set(args.kinds.split(",")), args.layout)]
    ev = to_samples(tok, vision, data["eval"], {"transcribe"}, args.layout)
    print(f"train {len(train)} eval transcribe {len(ev)}", flush=True)
    vis = set(vision_side_names(model))
    base = [args.lr_vision, args.lr_dec]
    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if (n in vis) == side], "lr": lr}
                             for side, lr in zip((True, False), base)], weight_decay=0.0, betas=(0.9, 0.95))
    rng, order, step, t0 = random.Random(0), [], 0, time.time()
    print("eval0", evaluate(model, vision, ev, args.bf16), flush=True)
    while step < args.steps and time.time() - t0 < args.time:
        if len(order) < 200:
            order += rng.sample(range(len(train)), len(train))
        batch, size = [], 0
        while size + len(train[order[0]].ids) <= args.tokens:
            batch.append(train[order.pop(0)])
            size += len(batch[-1].ids)
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * min(1.0, (step + 1) / 10)  # 10 warm-up steps, then constant
        micro = pack_by_budget(batch, args.tokens, 256)
        n_t = sum(mb.num_targets for mb in micro)
        loss = 0.0
        for mb in micro:
            ce = packed_ce_sum(model, mb, autocast_bf16=args.bf16, vision=vision)
            (ce / n_t).backward()
            loss += ce.item()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {loss / n_t:.3f} gn {gn:.2f} {time.time() - t0:.0f}s", flush=True)
        if step % args.eval_every == 0:
            print("eval", step, json.dumps(evaluate(model, vision, ev, args.bf16)), flush=True)
    print("final", step, json.dumps(evaluate(model, vision, ev, args.bf16)), f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
