"""The embedded multimodal task (issue 9 item 4): the arithmetic task of experiments/arith.py with
the expression rendered into a PNG instead of written in the prompt.

Same seed -> same problems, splits, answers, difficulty levels and CoT traces as the text task
(`arith.generate` draws them; only the row builder differs). The user message is the image and a
fixed instruction, so the policy must read the expression off the image; the SFT trace's first
line, "Plan: <expression> in N steps", is that transcription, so the warm start teaches reading
and computing together.

Rendering, sized for the tiny Kimi-K2.5 VLM (experiments/tiny_vlm.py: 14-px patches, 2x2 merge,
so one LLM token per 28x28 block; images wider than MAX_PATCHES_PER_SIDE patches are downscaled):

  - one character per 28x28 cell, black on white, 1-bit PNG; character k sits in cell
    (k % COLUMNS, k // COLUMNS), COLUMNS = the most cells the processor keeps at full scale
    (MAX_PATCHES_PER_SIDE // 2). At 32 patches a side (448 px, 16 cells) every expression (at
    most 14 characters, "9999+9999+9999") is one row; at 16 (224 px) one longer than 8
    characters wraps to a second row (read row-major, like the patches) instead of being
    downscaled off the token grid. Sizes are multiples of 28, so the processor never pads.
  - **every image is COLUMNS cells wide** (448 x 28 px: 16 image tokens), the cells after the
    expression left blank. With one cell per character (28*len px), the image-token count gave
    the expression's length away, and the tiny VLM keyed on it instead of reading the digits
    (BENCHMARKS.md, "Image demo, SFT stage"). (Reading itself is learnt with either width once
    the tower trains at a lower LR than the decoder: BENCHMARKS.md, "Issue 19, part 2".)
  - glyphs are Pillow's built-in font (`ImageFont.load_default(size=28)`, FreeType; no font
    files), thresholded to black/white, cropped to their ink and centered in the cell (digits
    14x19 px, "1" 9x19, "+" 12x13, "-" 6x2). 1-bit because the anti-aliased gray edges tripled the file size
    (~1 KB vs ~350 B a PNG) and a 14x19 digit is plainly legible without them.
  - a jitter of +-1 px per glyph in x and y, drawn from (seed, expression), so a glyph is not
    pixel-identical at every position yet the same expression always gives the same bytes. That
    lets SFT rows with a repeated expression (1-digit problems repeat) share one file.

    python -m experiments.arith_image --out data/arith_image --seed 0

writes sft.jsonl, train.jsonl, eval.jsonl and images/<split>-<idx>.png next to them; image paths
in the rows are relative to the jsonl's directory (the loader resolves them there). The defaults
(20,000 / 4,000 / 420 rows) take ~5 s on one core and write 22,628 images (18,208 for SFT),
8.8 MB of PNG (~390 B each) but ~90 MB on disk at 4 KB a block, plus 13 MB of JSONL.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from experiments.arith import Problem, generate, prompt_row, split_args
from experiments.tiny_vlm import MAX_PATCHES_PER_SIDE, MERGE, PATCH_SIZE
from prompts.schema import write_jsonl

DOMAIN = "arithmetic_image"
INSTRUCTION = "Compute the expression in the image."
CELL = PATCH_SIZE * MERGE  # 28 px: one merged vision token
COLUMNS = MAX_PATCHES_PER_SIDE // MERGE  # cells a row: the widest image kept at full scale
FONT_SIZE = 28
JITTER = 1  # px, each way
CHARS = "0123456789+-"


@functools.cache
def glyph(ch: str, font_size: int = FONT_SIZE) -> Image.Image:
    """The character's ink box, black on white (1-bit), as drawn by Pillow's built-in font.
    Other sizes than FONT_SIZE are for the vision-alignment pairs (experiments/arith_align.py)."""
    if ch not in CHARS:
        raise ValueError(f"cannot render {ch!r}: the task only uses {CHARS!r}")
    canvas = Image.new("L", (4 * font_size, 4 * font_size), 255)
    font = ImageFont.load_default(size=font_size)
    ImageDraw.Draw(canvas).text((2 * font_size, 2 * font_size), ch, font=font, fill=0, anchor="mm")
    g = canvas.crop(ImageOps.invert(canvas).getbbox()).point(lambda v: 255 if v >= 128 else 0)
    g = g.convert("1", dither=Image.Dither.NONE)
    if font_size == FONT_SIZE:
        assert g.width + 2 * JITTER <= CELL and g.height + 2 * JITTER <= CELL, (ch, g.size)
    return g


def image_size(n_chars: int) -> tuple[int, int]:
    """(width, height) of an expression's image: always COLUMNS cells wide, a row per COLUMNS
    characters."""
    return CELL * COLUMNS, CELL * max(1, -(-n_chars // COLUMNS))


def render(expr: str, jitter_seed: str | None = None) -> Image.Image:
    """The expression as a 1-bit image, one glyph centered per cell. No jitter when `jitter_seed`
    is None (cell k is then exactly render(expr[k]))."""
    im = Image.new("1", image_size(len(expr)), 1)
    rng = random.Random(jitter_seed) if jitter_seed is not None else None
    for k, ch in enumerate(expr):
        g = glyph(ch)
        dx, dy = (rng.randint(-JITTER, JITTER), rng.randint(-JITTER, JITTER)) if rng else (0, 0)
        x = (k % COLUMNS) * CELL + (CELL - g.width) // 2 + dx
        y = (k // COLUMNS) * CELL + (CELL - g.height) // 2 + dy
        im.paste(g, (x, y))
    return im


def image_row(p: Problem, idx: str) -> dict:
    """The text task's row with the expression moved into an image."""
    row = prompt_row(p, idx)
    row["prompt"] = [
        {
            "role": "user",
            "content": [{"type": "image", "image": f"images/{idx}.png"}, {"type": "text", "text": INSTRUCTION}],
        }
    ]
    row["domain"] = DOMAIN
    # The expression stays out of the prompt; metadata keeps it for error analysis (misread vs
    # miscomputed) and for the renderer.
    row["metadata"] = {**row["metadata"], "modality": "image", "expression": p.expression}
    return row


def generate_image_task(
    seed: int, n_sft: int, n_train: int, n_eval: int, slip_prob: float = 0.15
) -> dict[str, list[dict]]:
    """The text task's splits as image rows. Rows with the same expression (only inside the SFT
    split: the splits share none) point at the first one's image."""
    splits = generate(seed, n_sft, n_train, n_eval, slip_prob, make_row=image_row)
    for rows in splits.values():
        first: dict[str, str] = {}
        for row in rows:
            part = row["prompt"][0]["content"][0]
            part["image"] = first.setdefault(row["metadata"]["expression"], part["image"])
    return splits


def write_images(rows: list[dict], out: Path, seed: int) -> int:
    """Render each distinct image of `rows` under `out`; returns how many were written."""
    done: set[str] = set()
    for row in rows:
        rel = row["prompt"][0]["content"][0]["image"]
        if rel in done:
            continue
        done.add(rel)
        expr = row["metadata"]["expression"]
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        render(expr, jitter_seed=f"{seed}:{expr}").save(path, format="PNG", optimize=True)
    return len(done)


def main(argv: list[str] | None = None) -> None:
    ap = split_args(__doc__, "data/arith_image", 0.15, "share of traces with a caught slip")
    ap.add_argument("--max-level", type=int, default=None,
                    help="keep only rows up to this difficulty level (shorter traces: a cheaper task for "
                         "slow learners such as the CPU demo's VLM)")
    args = ap.parse_args(argv)
    splits = generate_image_task(args.seed, args.n_sft, args.n_train, args.n_eval, args.slip_prob)
    if args.max_level is not None:
        splits = {k: [r for r in rows if r["difficulty"] <= args.max_level] for k, rows in splits.items()}
    out = Path(args.out)
    for name, rows in splits.items():
        n_images = write_images(rows, out, args.seed)
        write_jsonl(out / f"{name}.jsonl", rows)  # after its images, so a reader finds them all
        print(f"wrote {len(rows):6d} rows, {n_images:6d} images to {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
