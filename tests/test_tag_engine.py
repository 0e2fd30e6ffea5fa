"""thinkrl-tag through a real vLLM engine: values, determinism, MATH / GSM8K end to end, and a
resume after SIGKILL.

The checkpoint is a "noisy oracle" built here: a 1-layer Qwen2 whose attention and MLP write
nothing, so the next token depends only on the current one (a bigram table in the weights).
After the assistant header it answers "<think></think>\\boxed{7}" with probability 1/2 and
otherwise "z", "zz", ... (each further z with probability 1/2). So a row's pass rate is exactly 0
unless its answer is 7, and about 1/2 if it is; and everything random comes from the engine's
seeded sampling, which is what the resume and determinism checks need.

One engine in this process for the module (plus one in the killed subprocess).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prompts import tag
from prompts.schema import load_prompt_rows
from prompts.tag_io import last_boxed, read_output

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ENGINE_FLAGS = ["--set", "engine.max_model_len=512", "--set", "engine.kv_cache_gib=0.25",
                "--set", "sampling.max_tokens=24"]


def build_oracle_checkpoint(out_dir: Path) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from experiments.tiny_model import build_tokenizer

    tok = build_tokenizer()
    eos = tok.eos_token_id

    def tid(s: str) -> int:
        return tok.convert_tokens_to_ids(s) if s.startswith("<") and len(s) > 1 else tok.encode(s)[0]

    hidden = 128
    cfg = Qwen2Config(
        vocab_size=((len(tok) + 63) // 64) * 64, hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=eos, pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    nxt = {"\n": ["<think>", "z"], "<think>": ["</think>"], "</think>": ["\\"], "\\": ["b"], "b": ["o"],
           "o": ["x"], "x": ["e"], "e": ["d"], "d": ["{"], "{": ["7"], "7": ["}"], "}": [eos], "z": ["z", eos]}
    dim = {tid(c): i for i, c in enumerate(nxt)}  # one-hot residual direction per known token
    other = hidden - 1
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith("norm.weight") else 0.0)  # o_proj, down_proj = 0: layers add nothing
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb[:, other] = 1.0
        for t, i in dim.items():
            emb[t, other], emb[t, i] = 0.0, 1.0
        scale = 40.0 / hidden**0.5  # RMSNorm scales a one-hot to sqrt(hidden): allowed logits are 40
        head[eos, other] = scale
        for src, dsts in nxt.items():
            for d in dsts:
                head[d if isinstance(d, int) else tid(d), dim[tid(src)]] = scale
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return build_oracle_checkpoint(tmp_path_factory.mktemp("oracle"))


@pytest.fixture(scope="module")
def backend(oracle):
    from rollout.engine import EngineConfig, VLLMEngine

    with VLLMEngine(EngineConfig(model=str(oracle), max_model_len=512, kv_cache_gib=0.25)) as engine:
        yield engine


def rows_with_sevens(n: int) -> list[dict]:
    """Even rows have answer 7, odd rows 8."""
    return [{"id": f"r{i:03d}", "prompt": f"Compute {i % 5}+{7 - i % 5 + i % 2}", "answer": str(7 + i % 2),
             "difficulty": 1 + i % 3} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(oracle, inp, out, *sets) -> list[str]:
    return ["--model", str(oracle), "--input", str(inp), "--output", str(out), *ENGINE_FLAGS,
            *(a for s in sets for a in ("--set", s))]


def run_inproc(backend, argv):
    return tag.run(tag.parse_args(argv + ["--set", "run.progress=false"]), backend=backend)


def test_pass_rates_and_guesses_through_vllm(tmp_path, oracle, backend):
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows_with_sevens(24)), tmp_path / "out.jsonl"
    summary = run_inproc(backend, cli(oracle, inp, out, "sampling.samples=8", "guess.tries=4"))
    got = read_output(out)
    assert [r["id"] for r in got] == [f"r{i:03d}" for i in range(24)]
    sevens = [r for r in got if r["answer"] == "7"]
    others = [r for r in got if r["answer"] != "7"]
    assert all(r["pass_rate"] == 0.0 and r["difficulty"] == 5 for r in others)
    assert all(r["metadata"]["guess_hits"] == 0 and not r["metadata"]["guessable"] for r in others)
    mean7 = sum(r["pass_rate"] for r in sevens) / len(sevens)
    assert 0.3 <= mean7 <= 0.7  # 96 fair coin flips: 0.5 +- 0.05
    guess7 = sum(r["metadata"]["guess_hits"] for r in sevens) / (4 * len(sevens))
    assert 0.25 <= guess7 <= 0.75  # the prefilled empty think block is followed by the same coin flip
    assert len({r["pass_rate"] for r in sevens}) > 1  # each prompt has its own seed
    for r in got:
        m = r["metadata"]
        assert m["num_samples"] == 8 and (r["pass_rate"] * 8).is_integer() and m["num_truncated"] == 0
        assert m["known_difficulty"] in (1, 2, 3) and r["domain"] == "arithmetic"
    assert summary["rows_tagged"] == 24 and summary["this_run"]["prompts_per_s"] > 0
    assert len(load_prompt_rows(out)) == 24


def test_seeded_runs_repeat_and_differ_by_seed(tmp_path, oracle, backend):
    inp = write_jsonl(tmp_path / "in.jsonl", rows_with_sevens(20))
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    run_inproc(backend, cli(oracle, inp, a, "sampling.samples=6", "sampling.seed=1", "run.chunk_size=3"))
    run_inproc(backend, cli(oracle, inp, b, "sampling.samples=6", "sampling.seed=1", "run.chunk_size=64"))
    run_inproc(backend, cli(oracle, inp, c, "sampling.samples=6", "sampling.seed=2"))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_math_and_gsm8k_end_to_end(tmp_path, oracle, backend, capsys):
    math_in, math_out = SHARED / "math" / "MATH_test_5000.jsonl", tmp_path / "math.jsonl"
    s = run_inproc(backend, cli(oracle, math_in, math_out, "run.limit=150", "run.on_bad_row=skip",
                                "fields.prompt_field=problem", "fields.answer_field=solution", "fields.id_field=idx",
                                "sampling.samples=2", "guess.tries=2"))
    out, err = capsys.readouterr()
    rows = read_output(math_out)
    src = [json.loads(line) for line in math_in.open().readlines()[:150]]
    # prompts that leave no room for a response in 512 tokens are listed by line and skipped
    too_long = [i for i, x in enumerate(src) if f"{math_in}:{i + 1}: prompt takes " in err]
    assert too_long and s["this_run"]["bad_rows"] == len(too_long)
    assert all(len(src[i]["problem"]) > 300 for i in too_long)
    src = [x for i, x in enumerate(src) if i not in too_long]
    assert [r["id"] for r in rows] == [str(x["idx"]) for x in src]
    printed = out
    for r, x in zip(rows, src):
        assert r["answer"] == last_boxed(x["solution"]) and r["verifier"] == "math"
        assert r["domain"] == x["type"] and r["metadata"]["domain_source"] == "metadata:type"
        assert r["metadata"]["level"] == x["level"] and r["prompt"] == [{"role": "user", "content": x["problem"]}]
        assert r["pass_rate"] == 0.0 or r["answer"] == "7"
    assert s["rows_tagged"] == len(src) and sum(d["count"] for d in s["domains"].values()) == len(src)
    assert "Algebra" in printed and "Difficulty" in printed and "mean pass rate" in printed

    gsm_out = tmp_path / "gsm8k.parquet"
    s = run_inproc(backend, cli(oracle, SHARED / "gsm8k" / "test.jsonl", gsm_out, "run.limit=150",
                                "run.on_bad_row=skip", "fields.prompt_field=question", "sampling.samples=2",
                                "guess.tries=2"))
    out, err = capsys.readouterr()
    rows = read_output(gsm_out)
    skipped = {f"test-{i}" for i in range(150) if f"test.jsonl:{i + 1}: prompt takes " in err}
    assert s["this_run"]["bad_rows"] == len(skipped) < 30
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(150) if f"test-{i}" not in skipped]
    assert all(r["verifier"] == "integer" and r["answer"].lstrip("-").isdigit() for r in rows)
    assert rows[0]["answer"] == "18" and rows[0]["metadata"]["solution"].endswith("#### 18")
    assert all(r["pass_rate"] == 0.0 or r["answer"] == "7" for r in rows)
    assert s["rows_tagged"] == len(rows) and "Domains" in out


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, oracle, backend):
    inp = write_jsonl(tmp_path / "in.jsonl", rows_with_sevens(96))
    flags = ["sampling.samples=6", "guess.tries=3", "run.chunk_size=4", "sampling.seed=5"]
    full = tmp_path / "full.jsonl"
    run_inproc(backend, cli(oracle, inp, full, *flags))

    part = tmp_path / "part.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "killed.log").open("wb")
    argv = [*cli(oracle, inp, part, *flags), "--set", "run.progress=false"]
    proc = subprocess.Popen([sys.executable, "-m", "prompts.tag", *argv],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and part.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its vLLM engine process
        proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    written = [json.loads(line) for line in part.read_text().splitlines() if line.strip()]
    assert 0 < len(written) < 96  # really cut off part-way
    s = run_inproc(backend, cli(oracle, inp, part, *flags))
    assert s["this_run"]["already_done"] == len(written) and s["this_run"]["tagged"] == 96 - len(written)
    ids = [r["id"] for r in read_output(part)]
    assert len(ids) == len(set(ids)) == 96
    assert part.read_bytes() == full.read_bytes()
