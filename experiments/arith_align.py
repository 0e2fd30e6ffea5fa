"""Image->text pairs for the vision-alignment stage of the image demo (issue 19 item 1).

Kimi-VL trains MoonViT on captions and OCR before any SFT (its report: OCR data made the caption
loss fall sharply). After long-CoT SFT alone the tiny VLM ignored the digits and keyed on the
number of image tokens (BENCHMARKS.md, "Image demo, SFT stage"). These pairs teach reading first:

  - transcribe: "Write out the expression in the image exactly." -> "5281-394+1187" (OCR);
  - operands:   "How many numbers are in the image?"              -> "3";
  - operators:  "Which operators are in the image?"               -> "plus and minus".

Expressions are the arithmetic task's (experiments/arith.py draws them), glyphs are its renderer's
(arith_image.glyph, Pillow's built-in font), but the layout varies, so the image-token count says
little about the text: font size 18-34 px, 1-10 px between glyphs, the line anywhere on a canvas
of 1-16 x 1-4 cells (28 px each; <= 256 patches, so the processor never downscales), paper and
ink gray levels, and 0-2 % speckle pixels. A share of the rows (`task_style_share`) is drawn
exactly as the image task draws it (arith_image.render), so the aligned tower has seen those too.

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
from experiments.arith_image import CELL, COLUMNS, glyph, render
from prompts.schema import write_jsonl

DOMAIN = "arithmetic_image_align"
INSTRUCTIONS = {
    "transcribe": "Write out the expression in the image exactly.",
    "operands": "How many numbers are in the image?",
    "operators": "Which operators are in the image?",
}
KIND_WEIGHTS = {"transcribe": 0.6, "operands": 0.2, "operators": 0.2}  # OCR first, as the report stresses
OP_NAMES = {"+": "plus", "-": "minus"}
FONT_SIZES = range(18, 35)
SPACING = (1, 10)  # px between ink boxes
MAX_ROWS = 4  # canvas height in cells; 16 x 4 cells = 448 x 112 px = 256 patches, the processor's limit
MARGIN = 2  # px of paper kept around the line
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
    """How one image is drawn. `task` True: exactly as arith_image.render draws it, `noise_seed`
    seeding its glyph jitter (the other fields unused)."""

    task: bool
    font_size: int = 28
    spacing: int = 0
    x0: int = 0  # top-left of the line's ink box
    y0: int = 0
    width: int = CELL  # canvas, px (multiples of CELL: the processor pads nothing)
    height: int = CELL
    paper: int = 255  # gray levels
    ink: int = 0
    noise: float = 0.0  # share of pixels replaced by random gray
    noise_seed: int = 0


def line_size(expr: str, font_size: int, spacing: int) -> tuple[int, int]:
    """(width, height) of the expression's ink line at this size and spacing."""
    gs = [glyph(ch, font_size) for ch in expr]
    return sum(g.width for g in gs) + spacing * (len(gs) - 1), max(g.height for g in gs)


def draw_style(rng: random.Random, expr: str, task_style_share: float) -> Style:
    if rng.random() < task_style_share:
        return Style(task=True, noise_seed=rng.getrandbits(32))  # the seed of the glyph jitter
    while True:  # the widest expressions at the largest sizes may not fit in 16 cells: redraw
        font_size, spacing = rng.choice(FONT_SIZES), rng.randint(*SPACING)
        w, h = line_size(expr, font_size, spacing)
        if w + 2 * MARGIN <= COLUMNS * CELL:
            break
    min_cols, min_rows = -(-(w + 2 * MARGIN) // CELL), -(-(h + 2 * MARGIN) // CELL)
    width, height = CELL * rng.randint(min_cols, COLUMNS), CELL * rng.randint(min_rows, MAX_ROWS)
    return Style(
        task=False, font_size=font_size, spacing=spacing,
        x0=rng.randint(MARGIN, width - w - MARGIN), y0=rng.randint(MARGIN, height - h - MARGIN),
        width=width, height=height, paper=rng.randint(215, 255), ink=rng.randint(0, 60),
        noise=round(rng.uniform(0.0, MAX_NOISE), 4), noise_seed=rng.getrandbits(32),
    )


def render_styled(expr: str, style: Style) -> Image.Image:
    """The expression as a grayscale image drawn in `style`, glyphs centered on the line's middle."""
    if style.task:
        return render(expr, jitter_seed=str(style.noise_seed)).convert("L")
    canvas = np.full((style.height, style.width), style.paper, dtype=np.uint8)
    _, line_h = line_size(expr, style.font_size, style.spacing)
    x = style.x0
    for ch in expr:
        g = glyph(ch, style.font_size)
        y = style.y0 + (line_h - g.height) // 2
        ink = ~np.asarray(g, dtype=bool)  # 1-bit glyph: False where black
        canvas[y : y + g.height, x : x + g.width][ink] = style.ink
        x += g.width + style.spacing
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
                   task_style_share: float = 0.25) -> dict[str, list[dict]]:
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
                             "style": asdict(draw_style(rng, p.expression, task_style_share))},
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
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--task-style-share", type=float, default=0.25,
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
