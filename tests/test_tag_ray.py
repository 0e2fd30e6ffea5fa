"""thinkrl-tag with several vLLM engines as Ray actors (engines.num_engines=2) writes exactly what one
in-process engine writes: a prompt's samples depend on its own seeds, not on the engine or the
shard it lands on. Uses the bigram "noisy oracle" checkpoint from test_tag_engine.py."""

from __future__ import annotations

import pytest
from test_tag_engine import ENGINE_FLAGS, build_oracle_checkpoint, rows_with_sevens, write_jsonl

from prompts import tag
from prompts.tag_io import read_output

pytestmark = pytest.mark.integration


def test_two_ray_engines_match_one_local_engine(tmp_path, capsys):
    oracle = build_oracle_checkpoint(tmp_path / "oracle")
    inp = write_jsonl(tmp_path / "in.jsonl", rows_with_sevens(30))
    common = ["--model", str(oracle), "--input", str(inp), *ENGINE_FLAGS, "--set", "sampling.samples=6",
              "--set", "guess.tries=3", "--set", "run.chunk_size=8", "--set", "sampling.seed=11",
              "--set", "run.progress=false"]
    ray_out, local_out = tmp_path / "ray.jsonl", tmp_path / "local.jsonl"
    assert tag.main([*common, "--output", str(ray_out), "--set", "engines.num_engines=2",
                     "--set", "engine.cpu_threads=1"]) == 0
    assert tag.main([*common, "--output", str(local_out)]) == 0
    rows = read_output(ray_out)
    assert len(rows) == 30 and ray_out.read_bytes() == local_out.read_bytes()
    assert all(r["pass_rate"] == 0.0 for r in rows if r["answer"] != "7")
    assert 0.25 <= sum(r["pass_rate"] for r in rows if r["answer"] == "7") / 15 <= 0.75
    assert "prompts/s" in capsys.readouterr().out
