"""The shared prompt-row schema and its loader (prompts/schema.py): every error names file and row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompts.schema import DataError, PromptRow, iter_raw_rows, load_prompt_rows, row_from_dict, write_jsonl


def row(i, **kw) -> dict:
    return {"id": f"p{i}", "prompt": [{"role": "user", "content": f"Compute {i}+1"}], "answer": str(i + 1), **kw}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_round_trip(tmp_path):
    rows = [row(0, difficulty=2, domain="arithmetic", pass_rate=0.5), row(1)]
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    got = load_prompt_rows(path)
    assert [r.id for r in got] == ["p0", "p1"]
    assert got[0].difficulty == 2 and got[0].domain == "arithmetic" and got[0].pass_rate == 0.5
    assert got[1].difficulty is None and got[1].verifier == "math" and got[1].metadata == {}
    assert got[0].question() == "Compute 0+1" and got[0].chat() == [{"role": "user", "content": "Compute 0+1"}]
    assert not (tmp_path / "rows.jsonl.tmp").exists()  # atomic write left no temp file


def test_duplicate_ids_are_named(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(row(i, id=x)) for i, x in enumerate(["a", "b", "a", "c", "b", "d"])])
    with pytest.raises(DataError) as e:
        load_prompt_rows(path)
    assert str(e.value) == f"{path}: duplicate prompt ids (2): a, b"


def test_int_and_str_ids_collide(tmp_path):
    # ids are strings; 7 and "7" are the same prompt
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(row(0, id=7)), json.dumps(row(1, id="7"))])
    with pytest.raises(DataError, match=r"duplicate prompt ids \(1\): 7"):
        load_prompt_rows(path)


def test_json_error_names_file_and_line(tmp_path):
    # blank lines are skipped but still counted, so the line number is the editor's line number
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(row(0)), "", json.dumps(row(1))[:-1]])
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        load_prompt_rows(path)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"id": "x", "prompt": [{"role": "user", "content": "q"}]}, r":2: missing required field 'answer'"),
        ({**row(5), "answer": None}, r":2: missing required field 'answer'"),
        ({"id": "x", "answer": "1"}, r":2: missing required field 'prompt'"),
        ({**row(5), "prompt": "Compute 5+1"}, r":2: field 'prompt' must be a list of chat messages"),
        ({**row(5), "prompt": 42}, r":2: field 'prompt': Input should be a valid list"),
        ({**row(5), "prompt": [{"role": "user", "content": 42}]}, r":2: field 'prompt\.0\.content"),
        ({**row(5), "prompt": [{"role": "robot", "content": "hi"}]}, r":2: field 'prompt\.0\.role'"),
        ({**row(5), "prompt": []}, r":2: field 'prompt': List should have at least 1 item"),
        ({**row(5), "answer": 6}, r":2: field 'answer': Input should be a valid string"),
        ({**row(5), "pass_rate": 1.5}, r":2: field 'pass_rate'"),
        ({**row(5), "metadata": [1, 2]}, r":2: field 'metadata'"),
        ({**row(5), "metadata": [1, 2], "source": "x"}, r":2: field 'metadata'"),  # with extras to merge
        ([1, 2], r":2: expected a JSON object, got list"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, raw, match):
    path = write_lines(tmp_path / "rows.jsonl", [json.dumps(row(0)), json.dumps(raw), json.dumps(row(9))])
    with pytest.raises(DataError, match="^" + str(path) + match):
        load_prompt_rows(path)


def test_empty_and_missing_files(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=rf"^{empty}: file is empty"):
        load_prompt_rows(empty)
    blank = write_lines(tmp_path / "blank.jsonl", ["", "  "])
    with pytest.raises(DataError, match=rf"^{blank}: file is empty"):
        load_prompt_rows(blank)
    with pytest.raises(DataError, match="no such file"):
        load_prompt_rows(tmp_path / "missing.jsonl")


def test_unknown_top_level_keys_go_to_metadata():
    r = row_from_dict({**row(1), "source": "gsm8k", "metadata": {"level": 3}}, "f.jsonl:1")
    assert r.metadata == {"source": "gsm8k", "level": 3}


def test_image_parts_are_accepted():
    raw = {
        "id": "v1",
        "prompt": [
            {"role": "system", "content": "Look carefully."},
            {"role": "user", "content": [
                {"type": "text", "text": "How many apples in "},
                {"type": "image", "image": "imgs/apples.png"},
                {"type": "text", "text": "?"},
            ]},
        ],
        "answer": "3",
    }
    r = row_from_dict(raw, "vl.jsonl:1")
    assert r.has_images() and r.prompt[1].images() == ["imgs/apples.png"]
    assert r.question() == "How many apples in ?"  # text parts only
    assert r.chat()[1]["content"][1] == {"type": "image", "image": "imgs/apples.png"}
    with pytest.raises(DataError, match=r"vl\.jsonl:1: field 'prompt\.0\.content"):
        row_from_dict({**raw, "prompt": [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}]}, "vl.jsonl:1")


def test_parquet_rows_are_named_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    good = row(0)
    pq.write_table(pa.Table.from_pylist([good, {**good, "id": "p1", "answer": None}]), path)
    assert [loc for loc, _ in iter_raw_rows(path)] == [f"{path}:row 1", f"{path}:row 2"]
    with pytest.raises(DataError, match=rf"^{path}:row 2: missing required field 'answer'"):
        load_prompt_rows(path)


def test_prompt_row_forbids_unknown_fields_when_built_directly():
    with pytest.raises(Exception, match="extra"):
        PromptRow.model_validate({**row(0), "answr": "1"})
