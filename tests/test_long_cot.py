"""The long-CoT embedded task (experiments/long_cot.py): deterministic, correctly labelled, and
with the length spread the k1.5 length penalty needs; the checks really catch slips."""

from __future__ import annotations

import random
import re
import statistics

from experiments.arith import Problem, column_lines, difficulty_level, make_problem
from experiments.long_cot import OVERTHINK_LINE, generate_long_task, long_cot_response, main, slipped_lines
from prompts.schema import load_prompt_rows


def _value(expression: str) -> int:
    """Left-to-right + / - of non-negative integers (a tiny parser: never eval)."""
    tokens = re.findall(r"\d+|[+-]", expression)
    total = int(tokens[0])
    for op, x in zip(tokens[1::2], tokens[2::2]):
        total = total + int(x) if op == "+" else total - int(x)
    return total


def test_generator_is_deterministic_and_seeded():
    a = generate_long_task(seed=5, n_sft=200, n_train=50, n_eval=48)
    b = generate_long_task(seed=5, n_sft=200, n_train=50, n_eval=48)
    c = generate_long_task(seed=6, n_sft=200, n_train=50, n_eval=48)
    assert a == b
    assert a["sft"] != c["sft"]


def test_rows_are_labelled_correctly_and_traces_end_in_the_answer():
    splits = generate_long_task(seed=0, n_sft=400, n_train=100, n_eval=48)
    for split, rows in splits.items():
        for r in rows:
            expr = r["prompt"][0]["content"].removeprefix("Compute ")
            assert int(r["answer"]) == _value(expr), r
            md = r["metadata"]
            assert r["difficulty"] == difficulty_level(md["digits"], md["operands"], md["ops"])
    exprs = {s: {r["prompt"][0]["content"] for r in rows} for s, rows in splits.items()}
    assert not exprs["eval"] & exprs["train"] and not exprs["eval"] & exprs["sft"]
    for r in splits["sft"]:
        resp = r["response"]
        assert resp.startswith("<think>\n") and resp.count("</think>") == 1
        # The answer comes right after the thinking; what follows restates no value and boxes nothing.
        after = resp.split("</think>\n")[1].split("\n")
        assert after[0] == f"\\boxed{{{r['answer']}}}"
        assert all(line == OVERTHINK_LINE for line in after[1:]), after
    assert not any(ch.isdigit() for ch in OVERTHINK_LINE) and "boxed" not in OVERTHINK_LINE


def test_slip_is_one_column_one_too_high_and_uncaught():
    rng = random.Random(0)
    for a, b, op in [(4887, 1187, "+"), (5281, 394, "-"), (70, 5, "-"), (12, 34, "+")]:
        good, value = column_lines(a, b, op, None)
        bad, wrong = slipped_lines(a, b, op, rng)
        assert len(bad) == len(good)
        diff = [i for i, (x, y) in enumerate(zip(good, bad)) if x != y]
        assert len(diff) == 1
        assert wrong == value + 10 ** diff[0]
        assert "Wait" not in "\n".join(bad)  # not the in-line reflection of the short task
    assert slipped_lines(99, 0, "+", rng) is None  # every written digit is 9: no room for +1


def test_the_check_catches_a_slip_and_the_redone_work_checks():
    rng = random.Random(1)
    caught = 0
    for _ in range(400):
        p = make_problem(rng, rng.randint(2, 4), rng.choice((2, 3)), rng.choice(("+", "-", "+-")))
        text = long_cot_response(p, rng, slip_prob=1.0)  # every trace's work holds a slip
        lines = text.split("\n")
        mism = [i for i, line in enumerate(lines) if "Mismatch" in line]
        if not mism:  # only when no column could take a slip
            continue
        caught += 1
        first_check = lines.index("Check: undo the steps.")
        assert first_check < mism[0]  # found by the first check pass
        # The value the work reached before the redo differs from the answer by a power of 10.
        wrong = int(lines[mism[0]].split(" != ")[0].removeprefix("= "))
        right = int(lines[mism[0]].split(" != ")[1].split(".")[0])
        assert wrong != right and abs(wrong - right) in {10**k for k in range(6)}
        # After the mismatch, the redone steps are checked, every step ends "ok", and the box holds the answer.
        assert len(mism) == 1 and "Check the redone steps:" in lines[mism[0] + 1:]
        tail = lines[mism[0] + 1:]
        assert f"\\boxed{{{p.answer}}}" == tail[tail.index("</think>") + 1]
    assert caught > 350


def test_trace_lengths_have_the_stated_spread():
    rows = generate_long_task(seed=0, n_sft=3000, n_train=10, n_eval=24)["sft"]
    lengths = sorted(len(r["response"]) for r in rows)  # one byte token per ASCII character
    q = lambda f: lengths[int(f * (len(lengths) - 1))]  # noqa: E731
    assert q(0.05) < 200 and lengths[-1] >= 2000
    assert q(0.95) / q(0.5) >= 3.0
    # Within one prompt, traces differ by hundreds of tokens of second-guessing at equal correctness.
    rng = random.Random(3)
    cvs = []
    for d in range(1, 5):
        for ops in (2, 3):
            for mix in ("+", "-", "+-"):
                p = make_problem(rng, d, ops, mix)
                ls = [len(long_cot_response(p, rng)) for _ in range(8)]
                cvs.append(statistics.pstdev(ls) / statistics.mean(ls))
    assert statistics.mean(cvs) >= 0.3


def test_cli_writes_three_valid_splits(tmp_path):
    main(["--out", str(tmp_path), "--seed", "2", "--n-sft", "30", "--n-train", "20", "--n-eval", "24"])
    assert [len(load_prompt_rows(tmp_path / f"{s}.jsonl")) for s in ("sft", "train", "eval")] == [30, 20, 24]
    assert isinstance(Problem((1, 2), ("+",), 1, "+").answer, int)
