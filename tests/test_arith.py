"""The embedded arithmetic task (experiments/arith.py), checked against an independent reading of
each expression: the test parses the digits and +/- itself (no eval, no use of Problem.answer)."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from cot_sft.data import load_sft_rows
from experiments.arith import MAX_DIGITS, MAX_LEVEL, OP_MIXES, OPERAND_COUNTS, generate, main
from prompts.schema import PromptRow, load_prompt_rows, row_from_dict

N_SFT, N_TRAIN, N_EVAL = 3000, 600, 420
SLIP = 0.15


@pytest.fixture(scope="module")
def splits():
    return generate(seed=0, n_sft=N_SFT, n_train=N_TRAIN, n_eval=N_EVAL, slip_prob=SLIP)


def all_rows(splits):
    return [(name, r) for name, rows in splits.items() for r in rows]


def expression(r: dict) -> str:
    (msg,) = r["prompt"]
    assert msg["role"] == "user" and msg["content"].startswith("Compute ")
    return msg["content"].removeprefix("Compute ")


def parse(expr: str) -> tuple[list[int], list[str]]:
    """'52817-3904+11870' -> ([52817, 3904, 11870], ['-', '+']); refuses anything else."""
    assert re.fullmatch(r"\d+([+-]\d+)+", expr), expr
    return [int(x) for x in re.findall(r"\d+", expr)], re.findall(r"[+-]", expr)


def running_values(nums: list[int], ops: list[str]) -> list[int]:
    out = [nums[0]]
    for op, x in zip(ops, nums[1:]):
        out.append(out[-1] + x if op == "+" else out[-1] - x)
    return out


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    args = ["--n-sft", "200", "--n-train", "100", "--n-eval", "60"]
    for out, seed in [("a", 0), ("b", 0), ("c", 1)]:
        main(["--out", str(tmp_path / out), "--seed", str(seed), *args])
    for name in ["sft", "train", "eval"]:
        a, b, c = ((tmp_path / d / f"{name}.jsonl").read_bytes() for d in "abc")
        assert a == b, name
        assert a != c, name
        assert len(a.splitlines()) == {"sft": 200, "train": 100, "eval": 60}[name]


# -- splits, answers, difficulty ---------------------------------------------------------------


def test_no_expression_shared_across_splits(splits):
    exprs = {name: [expression(r) for r in rows] for name, rows in splits.items()}
    assert [len(exprs[n]) for n in ("sft", "train", "eval")] == [N_SFT, N_TRAIN, N_EVAL]
    sets = {n: set(e) for n, e in exprs.items()}
    assert not sets["sft"] & sets["train"]
    assert not sets["sft"] & sets["eval"]
    assert not sets["train"] & sets["eval"]
    # RL prompts and held-out prompts are also unique inside their split (SFT may repeat)
    assert len(sets["train"]) == N_TRAIN and len(sets["eval"]) == N_EVAL


def test_answers_are_the_true_values(splits):
    for name, r in all_rows(splits):
        nums, ops = parse(expression(r))
        values = running_values(nums, ops)
        assert r["answer"] == str(values[-1]), (name, r["id"])
        assert min(values) >= 0, r  # no step goes negative: every step is a column operation


def test_difficulty_is_the_documented_formula(splits):
    # level = digits + (operands - 2) + (1 if the expression has a minus sign else 0),
    # digits = digits of the first operand (later operands have at most as many)
    for name, r in all_rows(splits):
        expr = expression(r)
        nums, ops = parse(expr)
        digits = len(str(nums[0]))
        assert all(len(str(x)) <= digits for x in nums[1:]), expr
        assert r["difficulty"] == digits + (len(nums) - 2) + ("-" in expr), (name, expr)
        meta = r["metadata"]
        assert meta["digits"] == digits and meta["operands"] == len(nums)
        assert set(ops) <= set(meta["ops"]) and ("-" in ops) == ("-" in meta["ops"])
        if meta["ops"] == "+-" and len(nums) > 2:
            assert set(ops) == {"+", "-"}, expr  # a mixed problem mixes
    levels = Counter(r["difficulty"] for _, r in all_rows(splits))
    assert sorted(levels) == list(range(1, MAX_LEVEL + 1))


def test_eval_is_balanced_over_problem_kinds(splits):
    kinds = Counter((r["metadata"]["digits"], r["metadata"]["operands"], r["metadata"]["ops"]) for r in splits["eval"])
    assert len(kinds) == MAX_DIGITS * len(OPERAND_COUNTS) * len(OP_MIXES)
    assert max(kinds.values()) - min(kinds.values()) <= 1


def test_rows_validate_as_prompt_rows(splits, tmp_path):
    main(["--out", str(tmp_path), "--seed", "0", "--n-sft", "50", "--n-train", "40", "--n-eval", "30"])
    for name in ("train", "eval"):
        rows = load_prompt_rows(tmp_path / f"{name}.jsonl")
        assert len(rows) == {"train": 40, "eval": 30}[name] and all(isinstance(r, PromptRow) for r in rows)
        assert all(r.domain == "arithmetic" and r.verifier == "math" for r in rows)
    sft = load_sft_rows(tmp_path / "sft.jsonl")
    assert len(sft) == 50 and all(ex.response.startswith("<think>") for ex in sft)
    for name, r in all_rows(splits):
        pr = row_from_dict({k: v for k, v in r.items() if k != "response"}, f"{name}:{r['id']}")
        assert pr.id.startswith(name + "-") and pr.question() == "Compute " + expression(r)


# -- SFT traces ------------------------------------------------------------------------------
# <think>
# Plan: 3608+207 in 1 step, left to right.
# 3608+207:                      a step: running value, operator, operand
# 8+7+0=15 w5 c1                 a column, least significant first: write 5, carry 1
# 6+2+0=9 w9 c0                  (a slip ...)
# Wait, 6+2+0=8 not 9. Fix:      (... caught ...)
# 6+2+0=8 w8 c0                  (... and the column redone)
# = 3815                         the step's result
# Check: 3815-207=3608 ok        the steps undone in reverse
# </think>
# \boxed{3815}

TRACE = re.compile(r"<think>\n(?P<think>.*)\n</think>\n\\boxed\{(?P<boxed>\d+)\}", re.S)
STEP = re.compile(r"(\d+)([+-])(\d+):$")
ADD = re.compile(r"(\d)\+(\d)\+([01])=(\d+) w(\d) c([01])$")
SUB = re.compile(r"(\d)-(\d)-([01])(?:=(\d) b0|<0 (\d+)-\2-\3=(\d) b1)$")
FINAL_CARRY = "c1 w1"


def column(ln: str, op: str) -> tuple[int, int, int, int, int] | None:
    """(x, y, carry_in, written digit, carry_out) of a column line as written (not checked)."""
    if op == "+" and (m := ADD.match(ln)):
        x, y, c, _, w, co = map(int, m.groups())
        return x, y, c, w, co
    if op == "-" and (m := SUB.match(ln)):
        x, y, c = int(m[1]), int(m[2]), int(m[3])
        return (x, y, c, int(m[4]), 0) if m[4] is not None else (x, y, c, int(m[6]), 1)
    return None


def true_column(x: int, y: int, c: int, op: str) -> tuple[int, int]:
    if op == "+":
        return (x + y + c) % 10, (x + y + c) // 10
    d = x - y - c
    return (d + 10, 1) if d < 0 else (d, 0)


def check_trace(r: dict) -> bool:
    """Asserts every line of the trace is right and it ends right; returns whether it has a
    caught slip."""
    m = TRACE.fullmatch(r["response"])
    assert m, r["response"]
    expr = expression(r)
    nums, ops = parse(expr)
    values = running_values(nums, ops)
    lines = m["think"].split("\n")
    assert lines[0] == f"Plan: {expr} in {len(ops)} step{'s' if len(ops) > 1 else ''}, left to right."
    # the last "= value" line and the boxed answer are both the true value
    assert [ln for ln in lines if ln.startswith("= ")][-1] == f"= {values[-1]}"
    assert m["boxed"] == r["answer"] == str(values[-1])

    slips, i = 0, 1
    for k, op in enumerate(ops):
        step = STEP.match(lines[i])
        assert step and (int(step[1]), step[2], int(step[3])) == (values[k], op, nums[k + 1]), lines[i]
        a, b = str(values[k])[::-1], str(nums[k + 1])[::-1]
        i += 1
        written: list[int] = []  # digits after fixes, least significant first
        carry = 0
        while not lines[i].startswith("= "):
            ln, col = lines[i], len(written)
            if ln == FINAL_CARRY:
                assert op == "+" and carry == 1 and col == max(len(a), len(b))
                written.append(1)
                carry = 0
            elif ln.startswith("Wait, ") and ln.endswith(". Fix:"):
                slips += 1
                assert lines[i - 1] != lines[i + 1]  # the slipped line was wrong, the next one redoes it
            else:
                got = column(ln, op)
                assert got, f"unexpected trace line {ln!r}"
                x, y, c, w, co = got
                assert (x, y, c) == (int(a[col]) if col < len(a) else 0, int(b[col]) if col < len(b) else 0, carry), ln
                slipped = lines[i + 1].startswith("Wait, ")
                assert ((w, co) != true_column(x, y, c, op)) == slipped, ln
                if op == "+":
                    assert (int(ln.split("=")[1].split()[0]) == x + y + c) != slipped, ln
                if not slipped:
                    written.append(w)
                    carry = co
            i += 1
        assert int("".join(map(str, reversed(written)))) == values[k + 1], (lines, k)
        assert lines[i] == f"= {values[k + 1]}"
        i += 1
    # self-check: the steps undone in reverse, each equation true
    assert lines[i].startswith("Check: ") and lines[i].endswith(" ok") and i == len(lines) - 1
    checks = lines[i].removeprefix("Check: ").removesuffix(" ok").split(", ")
    assert len(checks) == len(ops)
    for eq in checks:
        lhs, rhs = eq.split("=")
        ns, os_ = parse(lhs)
        assert running_values(ns, os_)[-1] == int(rhs), eq
    assert slips <= 1
    return slips == 1


def test_every_sft_trace_is_correct_and_ends_boxed(splits):
    slipped = [check_trace(r) for r in splits["sft"]]
    assert any(slipped) and not all(slipped)  # both kinds were checked


def test_trace_checker_catches_wrong_traces(splits):
    r = next(r for r in splits["sft"] if r["difficulty"] >= 4 and "Wait," not in r["response"] and "+" in expression(r))
    check_trace(r)
    good = r["response"]
    bad_digit = re.sub(r" w(\d) ", lambda m: f" w{(int(m[1]) + 1) % 10} ", good, count=1)
    bad_box = good.replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{int(r['answer']) + 1}}}")
    no_think_close = good.replace("</think>", "")
    for bad in (bad_digit, bad_box, no_think_close):
        assert bad != good
        with pytest.raises(AssertionError):
            check_trace({**r, "response": bad})


@pytest.mark.parametrize("prob", [0.0, SLIP, 0.5])
def test_share_of_slip_traces_follows_config(prob):
    n = 2000
    rows = generate(seed=3, n_sft=n, n_train=10, n_eval=30, slip_prob=prob)["sft"]
    share = sum("Wait," in r["response"] for r in rows) / n
    sd = math.sqrt(prob * (1 - prob) / n)
    assert abs(share - prob) <= 4 * sd + 1e-12, share
    assert all(check_trace(r) == ("Wait," in r["response"]) for r in rows[:300])
