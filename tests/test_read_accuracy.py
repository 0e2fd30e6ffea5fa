"""experiments/read_accuracy.py: exact-match reading accuracy with transformers generate. On a
random tiny VLM the numbers are near 0; what is checked is the bookkeeping: counts per kind, a
miss recorded with what the model said, and T = 0 decoding that repeats itself."""

from __future__ import annotations

import json

import pytest

from experiments.arith_align import generate_align, write_images
from experiments.read_accuracy import main, read_accuracy
from prompts.schema import load_prompt_rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from experiments.tiny_vlm import build_tiny_vlm_checkpoint

    root = tmp_path_factory.mktemp("read")
    ckpt = build_tiny_vlm_checkpoint(root / "vlm", seed=0, hidden_size=64, num_layers=2, intermediate_size=128,
                                     moe_intermediate_size=32, vision_hidden=32, vision_layers=1)
    rows = generate_align(0, 0, 6)["eval"]
    write_images(rows, root)
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ckpt, load_prompt_rows(root / "eval.jsonl"), root / "eval.jsonl"


def test_counts_per_kind_and_greedy_is_repeatable(setup):
    ckpt, rows, _ = setup
    a = read_accuracy(ckpt, rows, max_new_tokens=6)
    b = read_accuracy(ckpt, rows, max_new_tokens=6)
    assert a == b and a["n"] == 6 and a["temperature"] == 0.0
    kinds = {r.metadata["kind"] for r in rows}
    assert set(a["by_kind"]) == kinds
    drawn = {"task-drawn" if r.metadata["style"]["task"] else "varied" for r in rows}
    assert set(a["by_style"]) == drawn and sum(v["n"] for v in a["by_style"].values()) == 6
    assert sum(v["n"] * v["exact_match"] for v in a["by_style"].values()) == pytest.approx(a["exact_match"] * 6)
    n_hits = round(a["exact_match"] * 6)
    assert len(a["misses"]) == 6 - n_hits
    assert all(rid in {r.id for r in rows} and isinstance(said, str) for rid, _, said in a["misses"])


def test_sampling_runs(setup):
    ckpt, rows, _ = setup
    res = read_accuracy(ckpt, rows[:2], temperature=1.0, max_new_tokens=4)
    assert res["n"] == 2 and 0.0 <= res["exact_match"] <= 1.0


def test_cli_summary_line_and_json_file_agree(setup, tmp_path, capsys):
    """The one line `make demo-image` prints after alignment is the saved result's numbers."""
    ckpt, _, data = setup
    out = tmp_path / "read.json"
    res = main(["--checkpoint", str(ckpt), "--data", str(data), "--kind", "transcribe", "--out", str(out), "--summary"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert set(res["by_kind"]) == {"transcribe"}
    styles = "".join(f"; {k} {v['exact_match']:.3f} (n={v['n']})" for k, v in res["by_style"].items())
    assert line == (f"held-out exact match (T=0.0, n={res['n']}): {res['exact_match']:.3f}; "
                    f"transcribe {res['by_kind']['transcribe']:.3f}{styles}")
