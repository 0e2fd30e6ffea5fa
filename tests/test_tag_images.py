"""thinkrl-tag on image prompts (issue 9): MATH-Vision testmini rows (converted by prompts/mathv.py)
tagged by a tiny Kimi-K2.5 VLM through a real vLLM engine, the multiple-choice rows scored by the
choice verifier; and, without an engine, the checks made before one starts (a text-only
checkpoint, prompt lengths counted with the image placeholders expanded).

The tiny VLM is randomly initialised, so its pass rates are near zero; what is checked is that
every row comes back tagged, that every job carried its row's decoded figure with one placeholder,
that response budgets count the expanded prompt, and that the verifier each row names is the one
that scores it (a hand-written correct answer through the CLI's own scorer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prompts import tag
from prompts.mathv import convert
from prompts.schema import PromptRow, write_jsonl
from prompts.tag_core import bucket_of
from prompts.tag_io import read_output
from rl.rewards import VerifierConfig
from rl.scoring import Scorer
from rollout.engine import by_request

MATHV = Path(__file__).resolve().parents[2] / "shared" / "data" / "mathv" / "testmini.jsonl"
# Free-form (math verifier): 4, 5. Multiple choice with drawn options (letters only): 6, 33 (a
# composite figure for <image1>/<image2>); with text options: 27 (LaTeX), 39, 55; a free-form
# problem with a letter answer (choice verifier, no options): 59.
IDS = ["4", "5", "6", "27", "33", "39", "55", "59"]
K, MAX_TOKENS, GUESSES = 3, 12, 2

pytestmark = pytest.mark.skipif(not MATHV.exists(), reason=f"{MATHV} not present")


@pytest.fixture(scope="module")
def mathv_rows() -> list[PromptRow]:
    by_id = {r.metadata["source_id"]: r for r in convert(MATHV)}
    return [by_id[i] for i in IDS]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    from experiments.tiny_vlm import build_tiny_vlm_checkpoint

    return build_tiny_vlm_checkpoint(tmp_path_factory.mktemp("vlm"), seed=0)


@pytest.fixture
def text_ckpt(tmp_path) -> Path:
    from transformers import Qwen2Config

    from experiments.tiny_model import build_tokenizer

    d = tmp_path / "text-ckpt"  # no weights: the run must stop before any engine loads them
    build_tokenizer().save_pretrained(d)
    Qwen2Config(vocab_size=320, hidden_size=64, num_hidden_layers=1).save_pretrained(d)
    return d


class Recording:
    """A real engine whose requests (and their samples, one list per request) are kept for inspection."""

    def __init__(self, backend):
        self.backend, self.jobs, self.samples = backend, [], []

    def generate(self, jobs, sampling):
        self.jobs.extend(jobs)
        out = self.backend.generate(jobs, sampling)
        self.samples.extend(by_request(out, len(jobs)))
        return out


@pytest.mark.integration
def test_mathv_rows_tag_through_a_tiny_vlm(tmp_path, mathv_rows, vlm):
    from rl.vision import load_vision
    from rollout.engine import EngineConfig, GenRequest, SamplingConfig, VLLMEngine

    inp, out = tmp_path / "mathv.jsonl", tmp_path / "tagged.jsonl"
    write_jsonl(inp, mathv_rows)
    # engine.max_model_len 640 leaves every budget at its cap except row 33's guesses: its answer-only
    # prompt is 537 tokens with one placeholder, 616 with its figure's 80 image tokens (checked below).
    sets = [f"sampling.samples={K}", f"sampling.max_tokens={MAX_TOKENS}", f"guess.tries={GUESSES}",
            "engine.max_model_len=640", "engine.kv_cache_gib=0.25", "engine.dtype=float32", "sampling.seed=3",
            "run.progress=false"]
    args = tag.parse_args(["--model", str(vlm), "--input", str(inp), "--output", str(out),
                           *(a for s in sets for a in ("--set", s))])
    backend = VLLMEngine(EngineConfig(model=str(vlm), dtype="float32", max_model_len=640, kv_cache_gib=0.25, seed=3))
    rec = Recording(backend)
    try:
        summary = tag.run(args, backend=rec)
        # The figures really reach vLLM as multi_modal_data: a job whose ids lack the placeholder
        # its image needs is refused by vLLM's prompt replacement (ids alone would just run).
        job, greedy = rec.jobs[0], SamplingConfig(n=1, temperature=0.0, max_tokens=2, seed=0)
        no_slot = [t for t in job.prompt_token_ids if t != load_vision(vlm).image_token_id]
        with pytest.raises(Exception, match="(?i)placeholder|prompt update|replacement"):
            backend.generate([GenRequest(no_slot, job.images)], greedy)
        assert len(backend.generate([GenRequest(no_slot)], greedy)) == 1  # the same ids without the image run
    finally:
        backend.close()

    got = read_output(out)
    assert [r["id"] for r in got] == [f"mathv-{i}" for i in IDS]
    for r, src in zip(got, mathv_rows):
        m = r["metadata"]
        assert 0.0 <= r["pass_rate"] <= 1.0 and (r["pass_rate"] * K).is_integer()
        assert r["difficulty"] == bucket_of(r["pass_rate"], (0.8, 0.6, 0.4, 0.2))
        assert m["known_difficulty"] == src.difficulty and r["domain"] == src.domain  # level, subject kept
        assert r["verifier"] == src.verifier and r["answer"] == src.answer
        assert m["num_samples"] == K and m["guess_tries"] == GUESSES and 0 <= m["guess_hits"] <= GUESSES
        assert 0 < m["response_len_mean"] <= MAX_TOKENS and 0 <= m["num_truncated"] <= K
        assert r["prompt"] == src.model_dump()["prompt"]  # the figure's path is written back unchanged
    assert [r["verifier"] for r in got].count("multiple_choice") == 6
    assert summary["rows_tagged"] == 8 and summary["this_run"]["images"] == 8
    assert summary["verifiers"]["multiple_choice"]["count"] == 6 and summary["verifiers"]["math"]["count"] == 2

    # Every sample and guess job carried its row's figure, decoded, with one placeholder, and a
    # response budget counted from the expanded prompt.
    vision = load_vision(vlm)
    assert len(rec.jobs) == 2 * len(IDS)  # no model classification: every row has a domain
    assert [len(x) for x in rec.samples] == [K, GUESSES] * len(IDS)  # each row's sample job, then its guess job
    assert all(x.finish_reason in ("stop", "length") and len(x.token_ids) > 0 for xs in rec.samples for x in xs)
    for j, job in enumerate(rec.jobs):
        row = mathv_rows[j // 2]
        with Image.open(row.images()[0]) as im:
            size = im.size
        assert [im.size for im in job.images] == [size] and job.images[0].mode == "RGB"
        assert job.prompt_token_ids.count(vision.image_token_id) == 1
        expanded = vision.expanded_len(job.prompt_token_ids, job.images)
        assert expanded == len(job.prompt_token_ids) - 1 + vision.num_tokens(job.images[0])
        cap = MAX_TOKENS if j % 2 == 0 else 32  # guess.max_tokens default
        assert job.max_tokens == min(cap, 640 - expanded)
    guess33 = rec.jobs[2 * IDS.index("33") + 1]
    assert len(guess33.prompt_token_ids) == 537 and guess33.max_tokens == 640 - 616 == 24  # not 32 = min(32, 640 - 537)

    # The choice verifier scores the multiple-choice rows: through the CLI's own scorer, the right
    # letter and the right option's text pass, another letter fails (the math verifier would read
    # "red" against "A" as wrong, and "\boxed{B}" against "A" as a symbol to compare).
    rows = [PromptRow.model_validate(r) for r in got]
    by_id = {r.metadata["source_id"]: r for r in rows}
    cases = [(by_id["39"], "\\boxed{A}", 1.0), (by_id["39"], "\\boxed{red}", 1.0), (by_id["39"], "\\boxed{B}", 0.0),
             (by_id["55"], "The answer is \\boxed{KNAO}", 1.0), (by_id["6"], "\\boxed{(D)}", 1.0),
             (by_id["6"], "\\boxed{C}", 0.0), (by_id["59"], "\\boxed{C}", 1.0), (by_id["4"], "\\boxed{6}", 1.0),
             (by_id["5"], "\\boxed{60}", 0.0)]
    with Scorer(VerifierConfig(num_workers=1)) as scorer:
        scores = scorer.score([c[0] for c in cases], [c[1] for c in cases])
    assert scores == [c[2] for c in cases]
    assert by_id["55"].metadata["options"][0] == "KNAO" and by_id["39"].metadata["options"][0] == "red"


def test_text_only_checkpoint_refuses_image_rows_before_any_engine(tmp_path, mathv_rows, text_ckpt, capsys):
    inp = tmp_path / "in.jsonl"
    text_row = {"id": "t0", "prompt": [{"role": "user", "content": "Compute 2+3"}], "answer": "5"}
    write_jsonl(inp, [text_row, *mathv_rows[:3]])
    argv = ["--model", str(text_ckpt), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
            "--set", "run.progress=false"]
    assert tag.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{inp}:2: row 'mathv-4' has images" in err and "text-only checkpoint" in err
    assert "3 of 4 rows have images" in err and not (tmp_path / "o.jsonl").exists()

    class Engine:  # stands in for vLLM: only the text row may reach it
        def generate(self, jobs, sampling):
            assert all(not j.images for j in jobs) and len(jobs) == 2  # 1 sample job + 1 guess job
            return [Generation(i, [0] * 3, [], "stop", "\\boxed{5}") for i, j in enumerate(jobs) for _ in range(j.n)]

    from rollout.engine import Generation

    summary = tag.run(tag.parse_args(argv + ["--set", "run.on_bad_row=skip"]), backend=Engine())
    err = capsys.readouterr().err
    assert summary["this_run"]["bad_rows"] == 3 and summary["rows_tagged"] == 1
    assert f"{inp}:3: row has 1 image(s) but --model is a text-only checkpoint" in err
    assert read_output(tmp_path / "o.jsonl")[0]["pass_rate"] == 1.0


def test_prompt_length_counts_expanded_image_tokens(tmp_path, mathv_rows, vlm, capsys):
    from transformers import AutoTokenizer

    from prompts.chat import encode_prompt
    from prompts.images import row_images
    from rl.vision import load_vision

    row = mathv_rows[4]  # id 33: a 1383 x 1774 figure, shrunk to 80 image tokens
    ids = encode_prompt(AutoTokenizer.from_pretrained(vlm), row.chat())
    vision = load_vision(vlm)
    n = vision.expanded_len(ids, row_images(row))
    assert n == len(ids) - 1 + 80 == 525  # the placeholder is one token of 80
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [row])
    argv = ["--model", str(vlm), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"), "--set", "guess.tries=0",
            "--set", f"engine.max_model_len={n}"]
    assert tag.main(argv) == 2
    assert f"{inp}:1: prompt takes {n} tokens" in capsys.readouterr().err


def test_broken_image_is_a_bad_row_naming_file_line_and_image(tmp_path, mathv_rows, vlm, capsys):
    raw = json.loads(mathv_rows[0].model_dump_json())
    (tmp_path / "bad.png").write_bytes(b"not a png")
    raw["prompt"][0]["content"][1]["image"] = "bad.png"  # relative: resolves against the input file
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(raw) + "\n")
    argv = ["--model", str(vlm), "--input", str(inp), "--output", str(tmp_path / "o.jsonl")]
    assert tag.main(argv) == 2
    assert f"{inp}:1: image 1 ('bad.png'): does not decode as an image" in capsys.readouterr().err
