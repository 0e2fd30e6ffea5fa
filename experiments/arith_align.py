"""Image->text pairs for the vision-alignment stage of the image demo (issue 19 item 1).

Kimi-VL trains MoonViT on captions and OCR before any SFT (its report: OCR data made the caption
loss fall sharply). After long-CoT SFT alone the tiny VLM ignored the digits and keyed on the
number of image tokens (BENCHMARKS.md, "Image demo, SFT stage"). These pairs teach reading first:

  - transcribe: "Write out the expression in the image exactly." -> "5281-394+1187" (OCR);
  - operands:   "How many numbers are in the image?"              -> "3";
  - operators:  "Which operators are in the image?"               -> "plus and minus".

Expressions are the arithmetic task's (experiments/arith.py draws them), glyphs are its renderer's
(arith_image.glyph, Pillow's built-in font), and the layout is the image task's: character k in
cell k of a 16-cell row (448 x 28 px, 16 image tokens whatever the length, so the token count says
nothing about the text). Inside that grid the drawing varies: font size 22-28 px, each glyph up
to 4 px off its cell's center each way (so the gaps between glyphs vary by up to 16 px), paper and
ink gray levels, and 0-2 % speckle pixels. Half of the rows (`task_style_share`) are drawn exactly
as the image task draws them (arith_image.render), so the aligned tower has seen those too.

Why this much variety and no more (measured, BENCHMARKS.md "Issue 19, part 2"): after 350 steps
of the same training, the task's own drawing was read at 0.98 character accuracy, glyphs of
18-28 px placed anywhere in their cells at 0.39. (The free placement this generator first used,
sizes 18-34 px anywhere on canvases of 1-16 x 1-4 cells, was tried only at the decoder's LR, where
nothing was read.)

Everything is drawn from `seed`: a row keeps its `Style` and noise seed in metadata, and
`render_row(row)` redraws its image bit for bit. The held-out split shares no expression with
the training split, nor with the image task's eval split (`exclude`), so transcription accuracy
is measured on expressions the model never saw in any image.

Rows are prompt rows (image part + instruction) with `response` = `answer` = the text, verifier
"string": `cot_sft.train` trains on them as it trains on SFT traces (loss on the response only).

    python -m experiments.arith_align --out data/arith_align --seed 0

writes sft.jsonl (training pairs), eval.jsonl (held out) and images/<split>-<idx>.png.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.arith import MAX_DIGITS, OPERAND_COUNTS, OP_MIXES, Problem, generate, make_problem
from experiments.arith_image import CELL, COLUMNS, FONT_SIZE, glyph, image_size, render
from prompts.schema import write_jsonl

DOMAIN = "arithmetic_image_align"
INSTRUCTIONS = {
    "transcribe": "Write out the expression in the image exactly.",
    "operands": "How many numbers are in the image?",
    "operators": "Which operators are in the image?",
}
KIND_WEIGHTS = {"transcribe": 0.8, "operands": 0.1, "operators": 0.1}  # OCR first, as the report stresses
OP_NAMES = {"+": "plus", "-": "minus"}
FONT_SIZES = range(22, FONT_SIZE + 1)  # every glyph of these sizes fits a 28-px cell
SHIFT = 4  # px: most a glyph moves off its cell's center, each way (clipped to the cell)
MAX_NOISE = 0.02  # share of speckle pixels


def caption(kind: str, p: Problem) -> str:
    """The text a row of `kind` trains on: a function of the problem only."""
    if kind == "transcribe":
        return p.expression
    if kind == "operands":
        return str(len(p.operands))
    if kind == "operators":
        return " and ".join(OP_NAMES[op] for op in "+-" if op in p.ops)
    raise ValueError(f"unknown kind {kind!r} (known: {sorted(INSTRUCTIONS)})")


@dataclass(frozen=True)
class Style:
    """How one image is drawn: character k in cell k of arith_image's 16-cell row, at `font_size`,
    placed in its cell by offsets drawn from `noise_seed`, in `ink` on `paper` (gray levels), a
    share `noise` of its pixels replaced by random gray. `task` True: exactly as
    arith_image.render draws it, `noise_seed` seeding its glyph jitter (the other fields unused)."""

    task: bool
    font_size: int = FONT_SIZE
    paper: int = 255
    ink: int = 0
    noise: float = 0.0
    noise_seed: int = 0


def draw_style(rng: random.Random, task_style_share: float) -> Style:
    if rng.random() < task_style_share:
        return Style(task=True, noise_seed=rng.getrandbits(32))  # the seed of the glyph jitter
    return Style(task=False, font_size=rng.choice(FONT_SIZES), paper=rng.randint(215, 255), ink=rng.randint(0, 60),
                 noise=round(rng.uniform(0.0, MAX_NOISE), 4), noise_seed=rng.getrandbits(32))


def glyph_origins(expr: str, style: Style) -> list[tuple[int, int]]:
    """Top-left (x, y) of each glyph: up to SHIFT px off its cell's center, inside the cell,
    drawn from `style.noise_seed`."""
    rng = random.Random(style.noise_seed)
    out = []
    for k, ch in enumerate(expr):
        g = glyph(ch, style.font_size)
        cx, cy = (k % COLUMNS) * CELL, (k // COLUMNS) * CELL
        (x0, x1), (y0, y1) = ((max(0, (CELL - size) // 2 - SHIFT), min(CELL - size, (CELL - size) // 2 + SHIFT))
                              for size in (g.width, g.height))
        out.append((cx + rng.randint(x0, x1), cy + rng.randint(y0, y1)))
    return out


def render_styled(expr: str, style: Style) -> Image.Image:
    """The expression as a grayscale image drawn in `style`."""
    if style.task:
        return render(expr, jitter_seed=str(style.noise_seed)).convert("L")
    width, height = image_size(len(expr))
    canvas = np.full((height, width), style.paper, dtype=np.uint8)
    for ch, (x, y) in zip(expr, glyph_origins(expr, style)):
        g = glyph(ch, style.font_size)
        ink = ~np.asarray(g, dtype=bool)  # 1-bit glyph: False where black
        canvas[y : y + g.height, x : x + g.width][ink] = style.ink
    if style.noise > 0:
        nrng = np.random.default_rng(style.noise_seed)
        hit = nrng.random(canvas.shape) < style.noise
        canvas[hit] = nrng.integers(0, 256, int(hit.sum()), dtype=np.uint8)
    return Image.fromarray(canvas, mode="L")


def render_row(row: dict) -> Image.Image:
    """A row's image, redrawn from its metadata (what `write_images` saved)."""
    meta = row["metadata"]
    return render_styled(meta["expression"], Style(**meta["style"]))


def _problems(rng: random.Random, n: int, avoid: set[str]) -> list[Problem]:
    combos = [(d, m, mix) for d in range(1, MAX_DIGITS + 1) for m in OPERAND_COUNTS for mix in OP_MIXES]
    out: list[Problem] = []
    for _ in range(200 * n + 1000):
        if len(out) == n:
            return out
        p = make_problem(rng, *rng.choice(combos))
        if p.expression not in avoid:
            out.append(p)
    raise RuntimeError(f"could not draw {n} problems avoiding {len(avoid)} expressions")


def generate_align(seed: int, n_train: int, n_eval: int, exclude: set[str] = frozenset(),
                   task_style_share: float = 0.5) -> dict[str, list[dict]]:
    """{"sft": training pairs, "eval": held-out pairs}. Eval expressions are distinct, and neither
    split has an expression of `exclude`; training expressions may repeat (with other styles)."""
    rng = random.Random(seed)
    kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
    eval_problems: list[Problem] = []
    taken = set(exclude)
    while len(eval_problems) < n_eval:  # distinct, so accuracy is over n_eval expressions
        (p,) = _problems(rng, 1, taken)
        taken.add(p.expression)
        eval_problems.append(p)
    splits = {"eval": eval_problems, "sft": _problems(rng, n_train, taken)}
    out: dict[str, list[dict]] = {}
    for split, problems in splits.items():
        rows = []
        for i, p in enumerate(problems):
            kind = rng.choices(kinds, weights)[0]
            idx = f"align-{split}-{i:06d}"
            text = caption(kind, p)
            rows.append({
                "id": idx,
                "prompt": [{"role": "user", "content": [
                    {"type": "image", "image": f"images/{idx}.png"}, {"type": "text", "text": INSTRUCTIONS[kind]},
                ]}],
                "answer": text,
                "difficulty": p.level,
                "domain": DOMAIN,
                "verifier": "string",
                "metadata": {"modality": "image", "kind": kind, "expression": p.expression,
                             "style": asdict(draw_style(rng, task_style_share))},
                "response": text,
            })
        out[split] = rows
    return out


def write_images(rows: list[dict], out: Path) -> None:
    for row in rows:
        path = out / row["prompt"][0]["content"][0]["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        render_row(row).save(path, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/arith_align")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=24000)
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--task-style-share", type=float, default=0.5,
                    help="share of images drawn exactly as the image task draws them")
    ap.add_argument("--task-seed", type=int, default=0,
                    help="seed of the image task whose eval expressions are kept out of both splits")
    ap.add_argument("--task-n-eval", type=int, default=420, help="that task's eval size (0: exclude nothing)")
    args = ap.parse_args(argv)
    # The task's eval split is drawn first from its seed, so it is the same whatever its other sizes.
    task_eval = generate(args.task_seed, 0, 0, args.task_n_eval)["eval"] if args.task_n_eval else []
    exclude = {r["prompt"][0]["content"].removeprefix("Compute ") for r in task_eval}
    splits = generate_align(args.seed, args.n_train, args.n_eval, exclude, args.task_style_share)
    out = Path(args.out)
    for name, rows in splits.items():
        write_images(rows, out)
        write_jsonl(out / f"{name}.jsonl", rows)  # after its images, so a reader finds them all
        print(f"wrote {len(rows):6d} rows and images to {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
