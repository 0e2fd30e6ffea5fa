"""Prompt rows with images (issue 9): the path / inline-bytes forms, load-time checks whose errors
name file:line and the image, and the MATH-Vision testmini converter (prompts/mathv.py)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from prompts.images import InlineImage, row_images
from prompts.mathv import convert
from prompts.schema import DataError, load_prompt_rows, write_jsonl
from rl.rewards import MultipleChoiceVerifier, VerifyItem

MATHV = Path(__file__).resolve().parents[2] / "shared" / "data" / "mathv" / "testmini.jsonl"


def png_bytes(size: tuple[int, int] = (4, 3), color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, size: tuple[int, int] = (4, 3), color: tuple[int, int, int] = (255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(size, color))
    return path


def vrow(i: int, *images, text: str = "How many apples?") -> dict:
    parts = [{"type": "text", "text": text}] + [{"type": "image", "image": im} for im in images]
    return {"id": f"v{i}", "prompt": [{"role": "user", "content": parts}], "answer": "3"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_path_forms_resolve_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_png(data / "imgs" / "a.png", (4, 3), (255, 0, 0))
    write_png(tmp_path / "other" / "b.png", (2, 5), (0, 0, 255))
    absolute = write_png(tmp_path / "c.png", (1, 1), (0, 255, 0))
    path = write_rows(data / "rows.jsonl", [vrow(0, "imgs/a.png", "../other/b.png"), vrow(1, str(absolute))])
    monkeypatch.chdir(tmp_path / "other")  # relative paths must not resolve against the cwd
    rows = load_prompt_rows(path)
    assert rows[0].images() == [str(data / "imgs" / "a.png"), str(tmp_path / "other" / "b.png")]
    assert rows[1].images() == [str(absolute)]
    ims = row_images(rows[0])
    assert [(im.mode, im.size) for im in ims] == [("RGB", (4, 3)), ("RGB", (2, 5))]
    assert ims[0].getpixel((0, 0)) == (255, 0, 0) and ims[1].getpixel((1, 4)) == (0, 0, 255)


def test_inline_bytes_json_form_loads_and_round_trips(tmp_path):
    b64 = base64.b64encode(png_bytes((3, 2), (0, 255, 0))).decode()
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, {"bytes_b64": b64, "name": "apples.png"})])
    rows = load_prompt_rows(path)
    assert rows[0].images() == [InlineImage(bytes_b64=b64, name="apples.png")]
    (im,) = row_images(rows[0])
    assert im.size == (3, 2) and im.getpixel((2, 1)) == (0, 255, 0)
    write_jsonl(tmp_path / "again.jsonl", rows)  # base64 in memory: JSON round trip unchanged
    assert load_prompt_rows(tmp_path / "again.jsonl")[0].images() == rows[0].images()


def test_parquet_hf_image_feature_dicts_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_png(tmp_path / "p.png", (5, 5), (0, 0, 255))
    rows = [
        vrow(0, {"bytes": png_bytes((6, 2)), "path": "orig.png"}),  # bytes win over the name
        vrow(1, {"bytes": None, "path": "p.png"}),  # a path-only dict is a path
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)  # text parts come back with "image": None
    got = load_prompt_rows(path)
    assert isinstance(got[0].images()[0], InlineImage) and got[0].images()[0].name == "orig.png"
    assert row_images(got[0])[0].size == (6, 2)
    assert got[1].images() == [str(tmp_path / "p.png")] and row_images(got[1])[0].size == (5, 5)


@pytest.mark.parametrize("n_slots, ok", [(0, True), (1, True), (2, False)])
def test_placeholder_rule_counts_bare_image_tokens(tmp_path, n_slots, ok):
    write_png(tmp_path / "a.png")
    text = "Compare " + " and ".join(["<image>"] * n_slots) + " <image1> <image2>"  # numbered labels not counted
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, "a.png"), vrow(1, "a.png", text=text)])
    if ok:
        assert len(load_prompt_rows(path)) == 2
    else:
        with pytest.raises(DataError) as e:
            load_prompt_rows(path)
        assert str(e.value) == f"{path}:2: 2 '<image>' placeholder(s) in the text but 1 image(s) in the row"


def test_placeholder_without_any_image_is_an_error_even_in_a_text_only_row(tmp_path):
    row = {"id": "t", "prompt": [{"role": "user", "content": "What is in <image>?"}], "answer": "1"}
    path = write_rows(tmp_path / "rows.jsonl", [row])
    with pytest.raises(DataError, match=rf"^{path}:1: 1 '<image>' placeholder\(s\) in the text but 0 image\(s\)"):
        load_prompt_rows(path)


def test_missing_image_names_file_line_and_image(tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, "imgs/a.png"), vrow(1, "imgs/a.png", "imgs/gone.png")])
    with pytest.raises(DataError) as e:
        load_prompt_rows(path)
    assert str(e.value) == f"{path}:2: image 2 ('imgs/gone.png'): no such file {tmp_path / 'imgs' / 'gone.png'}"


def test_corrupt_image_names_file_line_and_image(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really, just garbage bytes" * 10)
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, "good.png"), vrow(1, "bad.png")])
    with pytest.raises(DataError) as e:
        load_prompt_rows(path)
    assert str(e.value).startswith(f"{path}:2: image 1 ('bad.png'): does not decode as an image (UnidentifiedImageError:")


def test_truncated_image_fails_the_full_decode(tmp_path):
    # The header (and so the size) reads fine; only decoding the pixels finds the damage.
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with Image.open(tmp_path / "cut.jpg") as im:
        assert im.size == (64, 64)
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, "cut.jpg")])
    with pytest.raises(DataError) as e:
        load_prompt_rows(path)
    assert str(e.value).startswith(f"{path}:1: image 1 ('cut.jpg'): does not decode as an image (OSError: image file is truncated")


def test_pixel_budget_is_inclusive_and_configurable(tmp_path):
    write_png(tmp_path / "big.png", (40, 30))  # 1,200 pixels
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, "big.png")])
    assert len(load_prompt_rows(path, max_image_pixels=1200)) == 1
    with pytest.raises(DataError) as e:
        load_prompt_rows(path, max_image_pixels=1199)
    assert str(e.value) == (
        f"{path}:1: image 1 ('big.png'): 40x30 = 1,200 pixels is over the budget of 1,199 (max_image_pixels)"
    )


@pytest.mark.parametrize(
    "image, match",
    [
        ({"bytes_b64": "not base64!"}, r"image 1 \(inline bytes\): 'bytes_b64' is not valid base64"),
        ({"bytes_b64": base64.b64encode(b"garbage").decode(), "name": "x.png"},
         r"image 1 \(inline bytes 'x\.png'\): does not decode as an image"),
        ("https://example.com/a.png", r"image 1 \('https://example\.com/a\.png'\): URLs are not fetched"),
        ({"bytes": "aGk=", "path": None},
         r"field 'prompt\.0\.content\.parts\.1\.image\.image': Value error, 'bytes' must be raw bytes"),
    ],
)
def test_bad_inline_and_url_images(tmp_path, image, match):
    path = write_rows(tmp_path / "rows.jsonl", [vrow(0, image)])
    with pytest.raises(DataError, match=rf"^{path}:1: " + match):
        load_prompt_rows(path)


# -- MATH-Vision testmini ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mathv_rows(tmp_path_factory):
    if not MATHV.exists():
        pytest.fail(f"public data missing: {MATHV} (see docs/INSTALL.md, 'Public data')")
    out = tmp_path_factory.mktemp("mathv") / "testmini.jsonl"
    write_jsonl(out, convert(MATHV))
    return load_prompt_rows(out)  # every image opened, size-checked and decoded


def test_mathv_converts_all_304_rows_with_images(mathv_rows):
    rows = {r.id: r for r in mathv_rows}
    assert len(rows) == 304 and all(len(r.images()) == 1 for r in mathv_rows)
    assert all(Path(r.images()[0]).is_absolute() and Path(r.images()[0]).is_file() for r in mathv_rows)
    assert {r.difficulty for r in mathv_rows} == {1, 2, 3, 4, 5}
    assert len({r.domain for r in mathv_rows}) == 16
    assert sum(r.verifier == "multiple_choice" for r in mathv_rows) == 191  # 190 with options + id 59
    r4 = rows["mathv-4"]  # free form; its one label replaced by the figure in place
    assert (r4.answer, r4.difficulty, r4.domain, r4.verifier) == ("6", 1, "counting", "math")
    assert [type(p).__name__ for p in r4.prompt[0].content] == ["TextPart", "ImagePart"]
    r27 = rows["mathv-27"]  # options written into the prompt, in letter order
    assert "(A) $\\Delta, \\square, \\bullet$\n(B) $\\Delta, \\bullet, \\square$" in r27.question()
    r33 = rows["mathv-33"]  # a composite figure: image first, labels kept verbatim
    assert type(r33.prompt[0].content[0]).__name__ == "ImagePart" and "<image7>" in r33.question()
    assert r33.metadata["options"] == ["A", "B", "C", "D", "E"]  # labels only: options are drawn


def test_mathv_multiple_choice_scored_by_the_choice_verifier(mathv_rows):
    verifier = MultipleChoiceVerifier()
    mc = [r for r in mathv_rows if r.verifier == "multiple_choice"]
    for row in mc:
        wrong = next(c for c in "ABCDE" if c != row.answer)
        right = verifier.verify_one(VerifyItem.from_row(row, f"<think>...</think> \\boxed{{{row.answer}}}"))
        other = verifier.verify_one(VerifyItem.from_row(row, f"<think>...</think> \\boxed{{{wrong}}}"))
        assert (right.score, other.score) == (1.0, 0.0), (row.id, right, other)
    r923 = next(r for r in mc if r.id == "mathv-923")  # answering with the option's text also counts
    assert r923.answer == "D" and r923.metadata["options"][3] == "3h 41m"
    assert verifier.verify_one(VerifyItem.from_row(r923, "</think> \\boxed{3h 41m}")).score == 1.0
    assert verifier.verify_one(VerifyItem.from_row(r923, "</think> \\boxed{3h 39m}")).score == 0.0
