"""The vision-alignment pairs (experiments/arith_align.py, issue 19): deterministic from the seed,
labels that are functions of the expression drawn, images that say what the label says, and a
layout on the image task's fixed 16-cell grid (the token count gives nothing away), varied
inside it: font size, glyph placement, gray levels, noise."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from cot_sft.data import load_sft_rows
from experiments.arith_align import (
    INSTRUCTIONS, Style, caption, generate_align, glyph, glyph_origins, main, render_row, render_styled,
)
from experiments.arith_image import CELL, COLUMNS, render
from experiments.tiny_vlm import num_image_tokens
from prompts.schema import load_prompt_rows

N_TRAIN, N_EVAL = 600, 120


@pytest.fixture(scope="module")
def splits():
    return generate_align(0, N_TRAIN, N_EVAL, exclude={"1+2", "35-7"})


def ink_runs(im) -> list[tuple[int, int]]:
    """[start, end) x-ranges of the columns holding ink (pixels darker than mid-gray)."""
    cols = (np.asarray(im) < 128).any(axis=0)
    runs, start = [], None
    for x, on in enumerate(list(cols) + [False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            runs.append((start, x))
            start = None
    return runs


def test_same_seed_same_rows_and_images_other_seed_differs(splits):
    again = generate_align(0, N_TRAIN, N_EVAL, exclude={"1+2", "35-7"})
    assert again == splits
    for row in splits["eval"][:20]:
        assert render_row(row).tobytes() == render_row(row).tobytes()
    other = generate_align(1, N_TRAIN, N_EVAL, exclude={"1+2", "35-7"})
    assert [r["metadata"]["expression"] for r in other["eval"]] != [r["metadata"]["expression"] for r in splits["eval"]]


def test_labels_are_the_expression_its_operand_count_and_its_operators(splits):
    hand = {  # worked by hand
        ("transcribe", "5281-394+1187"): "5281-394+1187",
        ("operands", "5281-394+1187"): "3",
        ("operators", "5281-394+1187"): "plus and minus",
        ("operands", "7+4"): "2",
        ("operators", "7+4"): "plus",
        ("operators", "90-9-1"): "minus",
    }
    for row in splits["sft"] + splits["eval"]:
        meta = row["metadata"]
        expr, kind = meta["expression"], meta["kind"]
        numbers, ops = re.split(r"[+-]", expr), re.findall(r"[+-]", expr)
        want = {"transcribe": expr, "operands": str(len(numbers)),
                "operators": " and ".join(n for op, n in (("+", "plus"), ("-", "minus")) if op in ops)}[kind]
        assert row["response"] == row["answer"] == want, row["id"]
        assert row["prompt"][0]["content"][1]["text"] == INSTRUCTIONS[kind]
        hand.pop((kind, expr), None)
    for (kind, expr), want in hand.items():  # the cases the data did not happen to contain
        from experiments.arith import Problem
        numbers = tuple(int(x) for x in re.split(r"[+-]", expr))
        p = Problem(numbers, tuple(re.findall(r"[+-]", expr)), len(str(numbers[0])), "")
        assert caption(kind, p) == want
    kinds = {r["metadata"]["kind"] for r in splits["sft"]}
    assert kinds == set(INSTRUCTIONS)


def test_held_out_expressions_are_new_and_distinct(splits):
    train = {r["metadata"]["expression"] for r in splits["sft"]}
    held = [r["metadata"]["expression"] for r in splits["eval"]]
    assert len(set(held)) == len(held) and not train & set(held)
    assert not {"1+2", "35-7"} & (train | set(held))


def test_the_image_shows_the_expression_glyph_by_glyph(splits):
    """Without noise, character k's glyph is drawn whole inside cell k, where its style puts it,
    in the style's ink on its paper; the cells after the expression are blank paper."""
    checked, sizes, gaps = 0, set(), set()
    for row in splits["sft"][:150]:
        expr, st = row["metadata"]["expression"], Style(**row["metadata"]["style"])
        if st.task:
            assert render_row(row).tobytes() == render(expr, jitter_seed=str(st.noise_seed)).convert("L").tobytes()
            continue
        clean = np.asarray(render_styled(expr, replace(st, noise=0.0)))
        assert clean.shape == (CELL, COLUMNS * CELL)
        origins = glyph_origins(expr, st)
        for k, (ch, (x, y)) in enumerate(zip(expr, origins)):
            g = glyph(ch, st.font_size)
            assert k * CELL <= x and x + g.width <= (k + 1) * CELL and 0 <= y and y + g.height <= CELL
            want = np.where(np.asarray(g, dtype=bool), st.paper, st.ink)
            assert np.array_equal(clean[y : y + g.height, x : x + g.width], want), (row["id"], k)
        assert (clean[:, len(expr) * CELL :] == st.paper).all()
        assert 22 <= st.font_size <= 28
        sizes.add(st.font_size)
        gaps.update(x1 - x0 for (x0, _), (x1, _) in zip(origins, origins[1:]))
        # the noise is light: at most ~2 % of the pixels differ from the clean drawing
        assert (np.asarray(render_row(row)) != clean).mean() <= 0.03
        checked += 1
    assert checked > 50  # about half: task_style_share 0.5
    assert len(sizes) == 7 and max(gaps) - min(gaps) >= 12  # sizes and spacing vary


def test_every_image_has_the_same_token_count(splits):
    """The tiny VLM keyed on the number of image tokens: here every image is 16 tokens, whatever
    the expression's length or style."""
    counts = {num_image_tokens(render_row(row)) for row in splits["sft"] + splits["eval"]}
    assert counts == {COLUMNS} == {16}


def test_written_rows_load_as_sft_and_prompt_rows(tmp_path):
    main(["--out", str(tmp_path), "--seed", "3", "--n-train", "30", "--n-eval", "10", "--task-n-eval", "0"])
    examples = load_sft_rows(tmp_path / "sft.jsonl")
    assert len(examples) == 30 and all(ex.row.has_images() and ex.response == ex.row.answer for ex in examples)
    held = load_prompt_rows(tmp_path / "eval.jsonl")
    assert len(held) == 10 and all(r.verifier == "string" for r in held)
    rows = generate_align(3, 30, 10)
    from PIL import Image
    first = rows["sft"][0]
    saved = Image.open(tmp_path / first["prompt"][0]["content"][0]["image"])
    assert saved.tobytes() == render_row(first).tobytes()
