"""The embedded multimodal task (experiments/arith_image.py): the text task's problems with the
expression drawn into a 1-bit PNG, one glyph per 28x28 cell (one vision token after the 2x2 merge),
on a canvas of a fixed COLUMNS cells whatever the expression's length."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.arith import MAX_LEVEL, generate
from experiments.arith_image import CELL, CHARS, COLUMNS, DOMAIN, INSTRUCTION, generate_image_task, main, render
from experiments.tiny_vlm import num_image_tokens
from prompts.schema import load_prompt_rows

N_SFT, N_TRAIN, N_EVAL = 3000, 600, 420


@pytest.fixture(scope="module")
def both():
    return generate(0, N_SFT, N_TRAIN, N_EVAL), generate_image_task(0, N_SFT, N_TRAIN, N_EVAL)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("arith_image")
    main(["--out", str(out), "--seed", "0", "--n-sft", "300", "--n-train", "100", "--n-eval", "60"])
    return out


def ink(im: Image.Image) -> np.ndarray:
    """True where a pixel is black."""
    return np.asarray(im.convert("L")) < 128


def cells(im: Image.Image) -> list[Image.Image]:
    """The image cut into its 28x28 cells, row-major."""
    w, h = im.size
    return [im.crop((x, y, x + CELL, y + CELL)) for y in range(0, h, CELL) for x in range(0, w, CELL)]


# -- same task as the text version ------------------------------------------------------------


def test_same_problems_answers_levels_and_traces_as_the_text_task(both):
    text, image = both
    for name in ("sft", "train", "eval"):
        assert len(image[name]) == len(text[name])
        for t, r in zip(text[name], image[name]):
            expr = t["prompt"][0]["content"].removeprefix("Compute ")
            assert r["metadata"]["expression"] == expr
            ids = (r["id"], r["answer"], r["difficulty"], r["verifier"])
            assert ids == (t["id"], t["answer"], t["difficulty"], "math")
            assert r.get("response") == t.get("response")  # the same CoT trace (None off SFT)
            assert r["domain"] == DOMAIN and r["metadata"] == {**t["metadata"], "modality": "image", "expression": expr}
    # the trace's plan line is the transcription of the image
    r = image["sft"][0]
    assert r["response"].startswith(f"<think>\nPlan: {r['metadata']['expression']} in ")


def test_prompt_is_image_then_instruction_without_the_expression(both):
    _, image = both
    for name, rows in image.items():
        for r in rows:
            (msg,) = r["prompt"]
            img, txt = msg["content"]
            assert msg["role"] == "user" and img["type"] == "image" and txt == {"type": "text", "text": INSTRUCTION}
            assert not any(c.isdigit() for c in INSTRUCTION)  # so no operand can hide in the text
            assert img["image"].startswith(f"images/{name}-") and img["image"].endswith(".png")


def test_eval_is_balanced_and_every_level_present(both):
    _, image = both
    kinds = Counter((r["metadata"]["digits"], r["metadata"]["operands"], r["metadata"]["ops"]) for r in image["eval"])
    assert len(kinds) == 24 and max(kinds.values()) - min(kinds.values()) <= 1  # 420 = 24 * 17 + 12
    assert sorted({r["difficulty"] for r in image["eval"]}) == list(range(1, MAX_LEVEL + 1))


def test_sft_repeats_share_an_image_and_nothing_else_does(both):
    _, image = both
    path_of: dict[str, str] = {}
    for name, rows in image.items():
        for r in rows:
            expr, path = r["metadata"]["expression"], r["prompt"][0]["content"][0]["image"]
            assert path_of.setdefault(expr, path) == path  # one image per expression
            assert path.startswith(f"images/{name}-")
    assert len(set(path_of.values())) == len(path_of)  # and one expression per image
    n_sft_images = len({r["prompt"][0]["content"][0]["image"] for r in image["sft"]})
    assert n_sft_images < N_SFT  # 1-digit sums repeat in 3,000 draws


# -- rendering --------------------------------------------------------------------------------


def test_cells_of_a_render_are_the_single_character_renders():
    # "12+3" without jitter: 16 28x28 cells, the first four pixel-equal to that character drawn
    # alone, the rest blank paper
    im = render("12+3")
    assert (im.mode, im.size) == ("1", (COLUMNS * 28, 28))
    for cell, ch in zip(cells(im), "12+3"):
        assert np.array_equal(ink(cell), ink(cells(render(ch))[0]))
    assert not any(ink(cell).any() for cell in cells(im)[4:])


def test_glyphs_are_distinct_centered_and_sized():
    singles = {ch: ink(cells(render(ch))[0]) for ch in CHARS}
    keys = [a.tobytes() for a in singles.values()]
    assert len(set(keys)) == len(CHARS)  # 12 different pictures
    for ch, a in singles.items():
        ys, xs = np.nonzero(a)
        assert a.shape == (28, 28) and len(xs) > 0
        # centered: left and right (top and bottom) margins differ by at most one pixel
        assert abs(xs.min() - (27 - xs.max())) <= 1 and abs(ys.min() - (27 - ys.max())) <= 1, ch
        if ch.isdigit():
            assert ys.max() - ys.min() + 1 >= 16, ch  # digits fill most of the cell's height
    # "+" is "-" plus a vertical bar: more ink, and taller
    assert singles["+"].sum() > singles["-"].sum()
    assert np.ptp(np.nonzero(singles["+"])[0]) > np.ptp(np.nonzero(singles["-"])[0])


def test_jitter_moves_each_glyph_at_most_one_pixel_and_is_deterministic():
    expr = "5281-394+1187"
    plain, a, b = render(expr), render(expr, "0:" + expr), render(expr, "0:" + expr)
    assert a.tobytes() == b.tobytes() and a.tobytes() != plain.tobytes()
    assert not ink(a).any(axis=0)[len(expr) * CELL :].any()  # no jitter reaches the blank cells
    for c0, c1 in zip(cells(plain)[: len(expr)], cells(a)):
        p, q = ink(c0), ink(c1)
        assert p.sum() == q.sum()  # a shift, never a clip into the next cell
        (py, px), (qy, qx) = np.nonzero(p), np.nonzero(q)
        assert abs(int(px.min()) - int(qx.min())) <= 1 and abs(int(py.min()) - int(qy.min())) <= 1


@pytest.mark.parametrize("expr", ["3+4", "27+7-9", "5281-394+1187", "9999+9999+9999"])
def test_every_image_is_one_16_cell_row_and_the_processor_keeps_it(expr):
    """A fixed width: the image-token count says nothing about the expression's length."""
    im = render(expr, "0:" + expr)
    assert im.size == (28 * COLUMNS, 28) == (448, 28)
    # not downscaled by the tiny VLM's processor: one image token per 28x28 cell, 16 for every expression
    assert num_image_tokens(im) == COLUMNS == 16


# -- files ------------------------------------------------------------------------------------


def test_written_rows_load_and_images_decode(written):
    counts = {"sft": 300, "train": 100, "eval": 60}
    for name, n in counts.items():
        rows = load_prompt_rows(written / f"{name}.jsonl")  # checks each image: exists, decodes, budget
        assert len(rows) == n
        for r in rows:
            (path,) = r.images()
            assert Path(path).is_absolute() and Path(path).parent == written / "images"
            assert r.question() == INSTRUCTION and r.metadata["modality"] == "image"
            expr = r.metadata["expression"]
            with Image.open(path) as im:
                assert im.mode == "1" and im.size == (28 * COLUMNS, 28)
            if name == "sft":  # the response rides along in metadata here
                assert r.metadata["response"].startswith(f"<think>\nPlan: {expr} in ")
    referenced = {Path(r.images()[0]).name for n in counts for r in load_prompt_rows(written / f"{n}.jsonl")}
    assert {p.name for p in (written / "images").iterdir()} == referenced  # nothing stray


def test_same_seed_same_bytes_other_seed_other_bytes(written, tmp_path):
    args = ["--n-sft", "300", "--n-train", "100", "--n-eval", "60"]
    main(["--out", str(tmp_path / "again"), "--seed", "0", *args])
    main(["--out", str(tmp_path / "other"), "--seed", "1", *args])

    def files(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert files(tmp_path / "again") == files(written)
    other = files(tmp_path / "other")
    assert other["eval.jsonl"] != files(written)["eval.jsonl"]
