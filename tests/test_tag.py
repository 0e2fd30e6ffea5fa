"""thinkrl-tag without an engine: field mapping on the public sets, bad rows, refusal to overwrite
the input, exact tag values, resume, determinism across chunkings, parquet / datasets I/O, domain
tags, and that the output feeds the RL samplers.

The generation backend is a fake with the engine's interface (`generate(requests, sampling)`,
as `rollout.engine.VLLMEngine`); it answers "Compute a+b" correctly with a probability that falls
with the digit count, drawing sample j of a request from `random.Random(request.seed + j)` like
vLLM seeds sample j with `seed + j`. Verification is the
real `rl.scoring.Scorer`. Engine runs are in test_tag_engine.py.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from prompts import tag
from prompts.schema import PromptRow, load_prompt_rows
from prompts.tag_core import TagConfig, bucket_label, bucket_of, derive_seed, excluded_type
from prompts.tag_domain import DEFAULT_RULES, compile_rules, load_rules, parse_label, rule_domain
from prompts.tag_io import FieldMap, gsm8k_final, last_boxed, load_rows, map_row, read_output
from rl.rewards import VerifierConfig
from rl.scoring import Scorer
from rollout.engine import Generation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH = SHARED / "math" / "MATH_test_5000.jsonl"
GSM8K = SHARED / "gsm8k" / "test.jsonl"


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory):
    from experiments.tiny_model import build_tokenizer

    from transformers import Qwen2Config

    d = tmp_path_factory.mktemp("tok")  # a checkpoint directory without weights: the fake backend needs none
    build_tokenizer().save_pretrained(d)
    Qwen2Config(vocab_size=320, hidden_size=64, num_hidden_layers=1).save_pretrained(d)
    return d


def skill(a: str) -> float:
    return max(0.0, 1.0 - 0.2 * len(a))  # 1 digit: 0.8 ... 5 digits: 0.0


class FakeBackend:
    def __init__(self, tokenizer, fail_on_call: int | None = None, classify_reply: str = "geometry"):
        self.tok, self.fail_on_call, self.calls, self.reply = tokenizer, fail_on_call, 0, classify_reply
        self.jobs_seen: list = []

    def generate(self, jobs, sampling):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("engine died")
        self.jobs_seen.extend(jobs)
        out = []
        for i, job in enumerate(jobs):
            text = self.tok.decode(job.prompt_token_ids)
            if "Which one of these domains" in text:
                out.append(Generation(i, [0] * 3, [], "stop", self.reply))
                continue
            a, b = re.search(r"Compute (\d+)\+(\d+)", text).groups()
            right = int(a) + int(b)
            guess = "Answer immediately" in text
            p = 0.9 if guess and len(a) == 1 else 0.0 if guess else skill(a)
            for j in range(job.n):
                rng = random.Random(job.seed + j)
                ok = rng.random() < p
                val = right if ok else right + 1
                resp = f"\\boxed{{{val}}}" if guess else f"<think>\n{'x' * rng.randint(0, 9)}\n</think>\n\\boxed{{{val}}}"
                out.append(Generation(i, [0] * len(resp), [], "stop" if rng.random() < 0.9 else "length", resp))
        return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arith_rows(n: int, start: int = 0) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(start + n):
        d = 1 + i % 5
        a, b = rng.randint(10 ** (d - 1), 10**d - 1), rng.randint(0, 9)
        rows.append({"id": f"q{i:03d}", "prompt": [{"role": "user", "content": f"Compute {a}+{b}"}],
                     "answer": str(a + b), "difficulty": d, "domain": "arithmetic", "metadata": {"digits": d}})
    return rows[start:]


def args_for(tokdir, inp, out, *sets: str) -> TagConfig:
    argv = ["--model", str(tokdir), "--input", str(inp), "--output", str(out), "--set", "run.progress=false"]
    return tag.parse_args(argv + [a for s in sets for a in ("--set", s)])


def expected_pass_rate(row: dict, seed: int, k: int) -> float:
    a = re.search(r"Compute (\d+)", row["prompt"][0]["content"]).group(1)
    s = derive_seed(seed, row["id"], "sample")

    def passes(rng: random.Random) -> bool:  # FakeBackend's draws: right answer, then finished (not cut)
        right = rng.random() < skill(a)
        rng.randint(0, 9)
        return right and rng.random() < 0.9  # a sample cut at max_tokens scores 0, whatever it holds

    return sum(passes(random.Random(s + j)) for j in range(k)) / k


# -- field mapping -----------------------------------------------------------------------------


def test_answer_extraction():
    assert last_boxed(r"so $\boxed{2}$ and then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\{1,2\}} end") == r"\{1,2\}"
    assert last_boxed(r"\fbox{5}") == "5"
    assert last_boxed(r"\boxed{unclosed") is None and last_boxed("no box") is None
    assert gsm8k_final("a\nb\n#### 1,234") == "1234"
    assert gsm8k_final("#### -5") == "-5" and gsm8k_final("#### 3.5") == "3.5"
    assert gsm8k_final("no marker") is None


def test_math_fields_map_to_prompt_rows():
    good, bad = load_rows(MATH, FieldMap("problem", "solution", "idx"))
    assert (len(good), bad) == (5000, [])
    where, row = good[0]
    assert where == f"{MATH}:1"
    assert row.id == "0" and row.answer == "2" and row.verifier == "math"
    assert row.prompt[0].role == "user" and row.question().startswith("How many vertical asymptotes")
    assert row.metadata["type"] == "Algebra" and row.metadata["level"] == "Level 3"
    assert row.metadata["solution"].endswith("vertical asymptotes.")
    assert "problem" not in row.metadata and "idx" not in row.metadata
    # a nested-brace answer comes out whole
    fracs = [r.answer for _, r in good if r.answer.startswith("\\frac")]
    assert fracs and all(a.count("{") == a.count("}") for a in fracs)


def test_gsm8k_fields_map_to_prompt_rows():
    good, bad = load_rows(GSM8K, FieldMap("question"))
    assert (len(good), bad) == (1319, [])
    row = good[0][1]
    assert (row.id, row.answer, row.verifier) == ("test-0", "18", "integer")
    assert row.metadata["solution"].endswith("#### 18")
    assert all(re.fullmatch(r"-?\d+", r.answer) for _, r in good)
    raw = {"q": "x?", "a": "#### 7"}
    assert map_row(raw, 3, "s", FieldMap("q", "a", answer_format="raw")).answer == "#### 7"
    assert map_row(raw, 3, "s", FieldMap("q", "a", verifier="string")).verifier == "string"


def test_known_difficulty_moves_to_metadata():
    row = map_row(arith_rows(1)[0], 0, "s", FieldMap())
    assert row.difficulty is None and row.metadata["known_difficulty"] == 1
    assert row.domain == "arithmetic" and row.metadata["digits"] == 1


# -- bad input ---------------------------------------------------------------------------------


def bad_file(tmp_path: Path) -> Path:
    good = arith_rows(3)
    p = tmp_path / "in.jsonl"
    lines = [json.dumps(good[0]), json.dumps({"id": "np", "answer": "1"}),
             json.dumps({"id": "na", "prompt": "Compute 1+1"}), "{not json",
             json.dumps(good[1]), json.dumps({**good[2], "id": good[0]["id"]}),
             json.dumps({"id": "nb", "prompt": "x", "answer": "\\boxed{"})]
    p.write_text("\n".join(lines) + "\n")
    return p


def test_bad_rows_fail_the_run_with_file_and_line(tmp_path, tokdir, capsys):
    inp, out = bad_file(tmp_path), tmp_path / "out.jsonl"
    rc = tag.main(["--model", str(tokdir), "--input", str(inp), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{inp}:2: missing prompt field 'prompt'" in err
    assert f"{inp}:3: missing answer field 'answer'" in err
    assert f"{inp}:4: invalid JSON" in err
    assert f"{inp}:6: duplicate id 'q000' (first at {inp}:1)" in err
    assert f"{inp}:7: answer field 'answer' has no complete \\boxed" in err
    assert "5 bad row(s)" in err and "run.on_bad_row=skip" in err
    assert not out.exists()


def test_bad_rows_skipped_on_request(tmp_path, tokdir, capsys):
    inp, out = bad_file(tmp_path), tmp_path / "out.jsonl"
    a = args_for(tokdir, inp, out, "run.on_bad_row=skip", "sampling.samples=4", "guess.tries=2")
    summary = tag.run(a, backend=FakeBackend(_tok(tokdir)))
    assert [r["id"] for r in read_output(out)] == ["q000", "q001"]
    assert summary["this_run"]["bad_rows"] == 5 and summary["rows_tagged"] == 2
    assert f"{inp}:4: invalid JSON" in capsys.readouterr().err


def test_output_equal_to_input_is_refused(tmp_path, tokdir, capsys, monkeypatch):
    inp = write_jsonl(tmp_path / "in.jsonl", arith_rows(2))
    before = inp.read_bytes()
    monkeypatch.chdir(tmp_path)
    for out in (inp, "in.jsonl", "./sub/../in.jsonl"):
        assert tag.main(["--model", str(tokdir), "--input", str(inp), "--output", str(out)]) == 2
        assert "is the input file" in capsys.readouterr().err
    link = tmp_path / "link.jsonl"
    link.symlink_to(inp)
    assert tag.main(["--model", str(tokdir), "--input", str(inp), "--output", str(link)]) == 2
    assert inp.read_bytes() == before


def test_bad_flags_are_errors(tmp_path, tokdir, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", arith_rows(2))
    base = ["--model", str(tokdir), "--input", str(inp), "--output", str(tmp_path / "o.jsonl")]
    for extra, msg in ((["--set", "sampling.thresholds=[0.5,1.5]"], "sampling.thresholds"),
                       (["--set", "sampling.samples=0"], "sampling.samples"),
                       (["--set", "exclude_types=[essay]"], "unknown ['essay']"),
                       (["--set", "guess.drop=true", "--set", "guess.tries=0"], "guess.drop")):
        assert tag.main(base + extra) == 2
        assert msg in capsys.readouterr().err
    assert tag.main(base[:-1] + [str(tmp_path / "o.txt")]) == 2
    assert tag.main(["--model", str(tmp_path / "nope"), *base[2:]]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_config_file_and_shorthands(tmp_path, tokdir, capsys):
    demo = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tag_demo.yaml"
    cfg = tag.parse_args(["--config", str(demo), "--model", str(tokdir), "--set", "sampling.samples=3"])
    assert (cfg.model, cfg.engine.model, cfg.output) == (str(tokdir), str(tokdir), "data/arith/train.tagged.jsonl")
    assert (cfg.sampling.samples, cfg.sampling.max_tokens, cfg.engine.max_model_len) == (3, 480, 1024)
    assert tag.main(["--config", str(demo), "--model", str(tokdir), "--set", "sampling.k=3"]) == 2
    assert "unknown key 'sampling.k'" in capsys.readouterr().err


# -- what gets written -------------------------------------------------------------------------


def _tok(tokdir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokdir)


def test_tag_values_are_exact(tmp_path, tokdir, capsys):
    rows = arith_rows(20)
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    a = args_for(tokdir, inp, out, "sampling.samples=10", "sampling.seed=3", "run.chunk_size=7")
    summary = tag.run(a, backend=FakeBackend(_tok(tokdir)))
    got = read_output(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for src, r in zip(rows, got):
        want = expected_pass_rate(src, 3, 10)
        assert r["pass_rate"] == pytest.approx(want)
        assert r["difficulty"] == bucket_of(want, (0.8, 0.6, 0.4, 0.2))
        m = r["metadata"]
        assert m["known_difficulty"] == src["difficulty"] and m["digits"] == src["metadata"]["digits"]
        assert m["num_samples"] == 10 and m["guess_tries"] == 8
        assert m["guessable"] == (m["guess_hits"] >= 1)
        assert (m["guess_hits"] > 0) == (src["difficulty"] == 1)  # the fake guesses 1-digit sums only
        assert 26 <= m["response_len_mean"] <= 41 and 0 <= m["num_truncated"] <= 10
        assert r["domain"] == "arithmetic" and m["domain_source"] == "field"
    # the 5-digit rows are never solved: hardest bucket; the 1-digit ones mostly are
    assert {r["difficulty"] for s, r in zip(rows, got) if s["difficulty"] == 5} == {5}
    rows_loaded = load_prompt_rows(out)  # what we wrote loads as prompt rows
    assert all(isinstance(r, PromptRow) for r in rows_loaded)
    assert sum(v["count"] for v in summary["buckets"].values()) == 20
    assert summary["mean_pass_rate"] == pytest.approx(sum(r["pass_rate"] for r in got) / 20)
    assert summary["guessable"] == sum(r["metadata"]["guessable"] for r in got)
    printed = capsys.readouterr().out
    assert "Difficulty" in printed and "arithmetic" in printed and "guessable:" in printed


def test_output_feeds_the_rl_samplers(tmp_path, tokdir):
    from rl.sampling.sampler import build_sampler

    inp, out = write_jsonl(tmp_path / "in.jsonl", arith_rows(15)), tmp_path / "out.jsonl"
    tag.run(args_for(tokdir, inp, out, "sampling.samples=5"), backend=FakeBackend(_tok(tokdir)))
    rows = load_prompt_rows(out)
    from collections import Counter

    label, count = Counter(r.difficulty for r in rows).most_common(1)[0]
    cur = build_sampler({"kind": "curriculum", "schedule": [{"iteration": 0, "only": [label]}]}, rows, seed=0)
    picked = cur.sample(count, iteration=0)
    assert {r.difficulty for r in rows if r.id in set(picked)} == {label} and len(picked) == count
    pri = build_sampler({"kind": "prioritized"}, rows, seed=0)
    for r in rows:
        assert pri.tracker.get(r.id).rate == pytest.approx(r.pass_rate)


def test_same_tags_for_any_chunking(tmp_path, tokdir):
    inp = write_jsonl(tmp_path / "in.jsonl", arith_rows(17))
    outs = []
    for cs in ("1", "5", "64"):
        out = tmp_path / f"out{cs}.jsonl"
        tag.run(args_for(tokdir, inp, out, "sampling.samples=6", f"run.chunk_size={cs}"),
                backend=FakeBackend(_tok(tokdir)))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    other = tmp_path / "seed9.jsonl"
    tag.run(args_for(tokdir, inp, other, "sampling.samples=6", "sampling.seed=9"), backend=FakeBackend(_tok(tokdir)))
    assert other.read_bytes() != outs[0]


def test_resume_after_a_crash_and_a_torn_line(tmp_path, tokdir):
    inp = write_jsonl(tmp_path / "in.jsonl", arith_rows(23))
    full = tmp_path / "full.jsonl"
    tag.run(args_for(tokdir, inp, full, "run.chunk_size=4"), backend=FakeBackend(_tok(tokdir)))

    part = tmp_path / "part.jsonl"
    with pytest.raises(RuntimeError, match="engine died"):
        tag.run(args_for(tokdir, inp, part, "run.chunk_size=4"), backend=FakeBackend(_tok(tokdir), fail_on_call=3))
    lines = part.read_bytes().splitlines(keepends=True)
    assert len(lines) == 8  # two chunks made it
    part.write_bytes(b"".join(lines[:7]) + lines[7][:25])  # a write cut short
    fake = FakeBackend(_tok(tokdir))
    summary = tag.run(args_for(tokdir, inp, part, "run.chunk_size=4"), backend=fake)
    assert summary["this_run"]["already_done"] == 7 and summary["this_run"]["tagged"] == 16
    assert len(fake.jobs_seen) == 2 * 16  # sample + guess job for the 16 left, nothing redone
    # each row's sample job, then its guess job: an EngineGroup's equal-count shards get both kinds
    assert [j.n for j in fake.jobs_seen[:4]] == [10, 8, 10, 8]
    assert part.read_bytes() == full.read_bytes()
    again = FakeBackend(_tok(tokdir))
    tag.run(args_for(tokdir, inp, part, "run.chunk_size=4"), backend=again)
    assert again.calls == 0 and part.read_bytes() == full.read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path, tokdir, capsys):
    inp, out = write_jsonl(tmp_path / "in.jsonl", arith_rows(4)), tmp_path / "out.jsonl"
    tag.run(args_for(tokdir, inp, out, "sampling.samples=3"), backend=FakeBackend(_tok(tokdir)))
    rc = tag.main(["--model", str(tokdir), "--input", str(inp), "--output", str(out), "--set", "sampling.samples=4"])
    assert rc == 2 and "sampling.samples: 3 -> 4" in capsys.readouterr().err
    tag.run(args_for(tokdir, inp, out, "sampling.samples=4", "run.overwrite=true"), backend=FakeBackend(_tok(tokdir)))
    assert {r["metadata"]["num_samples"] for r in read_output(out)} == {4}
    foreign = write_jsonl(tmp_path / "foreign.jsonl", [{"x": 1}])
    assert tag.main(["--model", str(tokdir), "--input", str(inp), "--output", str(foreign)]) == 2
    assert "was not written by thinkrl-tag" in capsys.readouterr().err


def test_drop_guessable_keeps_them_aside_and_resumes(tmp_path, tokdir):
    inp, out = write_jsonl(tmp_path / "in.jsonl", arith_rows(10)), tmp_path / "out.jsonl"
    tag.run(args_for(tokdir, inp, out, "guess.drop=true"), backend=FakeBackend(_tok(tokdir)))
    kept, dropped = read_output(out), read_output(tmp_path / "out.guessable.jsonl")
    assert dropped and all(r["metadata"]["guessable"] for r in dropped)
    assert kept and not any(r["metadata"]["guessable"] for r in kept)
    assert sorted(r["id"] for r in kept + dropped) == [f"q{i:03d}" for i in range(10)]
    fake = FakeBackend(_tok(tokdir))
    summary = tag.run(args_for(tokdir, inp, out, "guess.drop=true"), backend=fake)
    assert fake.calls == 0 and summary["rows_dropped_guessable"] == len(dropped)


def test_parquet_and_datasets_io(tmp_path, tokdir):
    import datasets

    rows = arith_rows(9)
    for r in rows:  # plain-string prompts under another name
        r["question"] = r.pop("prompt")[0]["content"]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "in.parquet"))
    ref = tmp_path / "ref.jsonl"
    tag.run(args_for(tokdir, tmp_path / "in.parquet", ref, "fields.prompt_field=question"),
            backend=FakeBackend(_tok(tokdir)))
    out = tmp_path / "out.parquet"
    tag.run(args_for(tokdir, tmp_path / "saved", out, "fields.prompt_field=question"),
            backend=FakeBackend(_tok(tokdir)))
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()
    got, want = read_output(out), read_output(ref)
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["pass_rate"] for r in got] == [r["pass_rate"] for r in want]
    assert all(PromptRow.model_validate(r) for r in got)
    # resuming a finished parquet output tags nothing and keeps every row
    fake = FakeBackend(_tok(tokdir))
    tag.run(args_for(tokdir, tmp_path / "saved", out, "fields.prompt_field=question"), backend=fake)
    assert fake.calls == 0 and len(read_output(out)) == 9


# -- domains, exclusions, buckets --------------------------------------------------------------


def test_domain_sources(tmp_path, tokdir):
    rows = arith_rows(4)
    rows[0].pop("domain")
    rows[0]["metadata"]["type"] = "Counting & Probability"
    rows[1].pop("domain")
    rows[2].pop("domain")
    rows[2]["prompt"][0]["content"] += " (a triangle)"
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "rules.jsonl"
    tag.run(args_for(tokdir, inp, out, "sampling.samples=2"), backend=FakeBackend(_tok(tokdir)))
    got = {r["id"]: (r["domain"], r["metadata"]["domain_source"]) for r in read_output(out)}
    assert got == {"q000": ("Counting & Probability", "metadata:type"), "q001": ("arithmetic", "rules"),
                   "q002": ("geometry", "rules"), "q003": ("arithmetic", "field")}
    out2 = tmp_path / "model.jsonl"
    fake = FakeBackend(_tok(tokdir), classify_reply="Geometry, I think")
    tag.run(args_for(tokdir, inp, out2, "sampling.samples=2", "domain.fallback=model"), backend=fake)
    got = {r["id"]: (r["domain"], r["metadata"]["domain_source"]) for r in read_output(out2)}
    assert got["q001"] == got["q002"] == ("geometry", "model") and got["q000"][1] == "metadata:type"
    assert sum(j.temperature == 0.0 for j in fake.jobs_seen) == 2  # one greedy classification per row without one
    out3 = tmp_path / "none.jsonl"
    tag.run(args_for(tokdir, inp, out3, "sampling.samples=2", "domain.fallback=none", "domain.default=misc"),
            backend=FakeBackend(_tok(tokdir)))
    assert [r["domain"] for r in read_output(out3)][1:3] == ["misc", "misc"]


def test_rule_files_and_label_parsing(tmp_path):
    rules = load_rules(None)
    assert rule_domain("What is the probability that a die shows 6?", rules) == "counting_probability"
    assert rule_domain("Find the remainder when 2^10 is divided by 7.", rules) == "number_theory"
    assert rule_domain("Compute 12+7-3", rules) == "arithmetic"
    assert rule_domain("Tell me a story", rules) is None
    f = tmp_path / "r.yaml"
    f.write_text("- domain: dogs\n  patterns: ['\\bdogs?\\b']\n")
    assert rule_domain("How many dogs?", load_rules(f)) == "dogs"
    with pytest.raises(ValueError, match="bad regex"):
        compile_rules([{"domain": "x", "patterns": ["("]}])
    labels = [r["domain"] for r in DEFAULT_RULES]
    assert parse_label("It is Number Theory.", labels) == "number_theory"
    assert parse_label("geometry or algebra", labels) == "geometry"
    assert parse_label("no idea", labels) is None


def test_exclude_types(tmp_path, tokdir):
    rows = arith_rows(5)
    rows[1]["answer"] = "True"
    rows[2]["metadata"]["options"] = ["1", "2"]
    rows[3]["prompt"][0]["content"] = "Prove that Compute 1+1 is 2"
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    summary = tag.run(args_for(tokdir, inp, out, "exclude_types=[multiple_choice, true_false, proof]",
                               "sampling.samples=2"), backend=FakeBackend(_tok(tokdir)))
    assert [r["id"] for r in read_output(out)] == ["q000", "q004"]
    assert summary["this_run"]["excluded"] == {"multiple_choice": 1, "proof": 1, "true_false": 1}
    row = PromptRow.model_validate({"id": "x", "prompt": [{"role": "user", "content": "q"}], "answer": "B",
                                    "verifier": "multiple_choice"})
    assert excluded_type(row, ("multiple_choice",)) == "multiple_choice" and excluded_type(row, ("proof",)) is None


def test_spearman_matches_scipy_and_summary_reports_it(tmp_path, tokdir):
    from scipy.stats import spearmanr

    from prompts.tag_core import spearman

    rng = random.Random(0)
    for _ in range(20):
        x = [rng.choice([0.0, 0.1, 0.5, 0.9, 1.0]) for _ in range(30)]
        y = [rng.randint(1, 5) for _ in range(30)]
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    inp, out = write_jsonl(tmp_path / "in.jsonl", arith_rows(30)), tmp_path / "out.jsonl"
    s = tag.run(args_for(tokdir, inp, out), backend=FakeBackend(_tok(tokdir)))
    got = read_output(out)
    want = spearmanr([r["pass_rate"] for r in got], [r["metadata"]["known_difficulty"] for r in got]).statistic
    sp = s["spearman_pass_rate_vs_known_difficulty"]
    assert sp["n"] == 30 and sp["rho"] == pytest.approx(want) and sp["rho"] < -0.5  # the fake gets worse with digits


def test_known_difficulty_from_another_field():
    fm = FieldMap("problem", "solution", known_difficulty_field="level")
    row = map_row({"problem": "p", "solution": "\\boxed{1}", "level": "Level 4"}, 0, "s", fm)
    assert row.metadata["known_difficulty"] == 4 and row.metadata["level"] == "Level 4"
    odd = map_row({"problem": "p", "solution": "\\boxed{1}", "level": "Level ?"}, 0, "s", fm)
    assert odd.metadata["known_difficulty"] == "Level ?"


def test_require_think_stops_bare_numbers_from_passing():
    row = PromptRow.model_validate({"id": "x", "prompt": [{"role": "user", "content": "q"}], "answer": "2"})
    texts = ["noise 2", "<think>\nhm\n</think>\n\\boxed{2}"]
    cfg = VerifierConfig(num_workers=1)
    with Scorer(cfg) as lenient, Scorer(cfg.model_copy(update={"require_think": True})) as strict:
        assert lenient.score([row, row], texts) == [1.0, 1.0]  # the verifier's last-number fallback
        assert strict.score([row, row], texts) == [0.0, 1.0]


def test_progress_bar_and_console_script(capsys):
    import io
    import shutil
    import subprocess

    from rich.console import Console

    buf = io.StringIO()
    bar = tag._Progress(10, Console(file=buf, force_terminal=True, width=120), enabled=True)
    bar.advance(4)
    bar.advance(6)
    bar.close()
    shown = buf.getvalue()
    assert "10/10" in shown and "prompts/s" in shown and "ETA" in shown
    exe = shutil.which("thinkrl-tag") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "thinkrl-tag")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "guess.drop" in res.stdout and "run.on_bad_row" in res.stdout


def test_buckets_and_seeds():
    th = (0.8, 0.6, 0.4, 0.2)
    assert [bucket_of(p, th) for p in (1.0, 0.8, 0.79, 0.6, 0.5, 0.4, 0.2, 0.1, 0.0)] == [1, 1, 2, 2, 3, 3, 4, 5, 5]
    assert [bucket_label(b, th) for b in (1, 3, 5)] == ["[0.8, 1]", "[0.4, 0.6)", "[0, 0.2)"]
    assert derive_seed(0, "a", "sample") == derive_seed(0, "a", "sample") != derive_seed(0, "a", "guess")
