"""The verifiers against public prompt sets (docs/INSTALL.md, "Public data"): MATH-500 and GSM8K test.

MATH-500: every solution's own final boxed answer must verify against the row's `answer`
(agreement 500/500 at the time of writing; the one past disagreement was ours: a mixed number
"15\\frac{39}{40}" boxed next to "\\frac{639}{40}" was read as a product and called a hedge).
Shifting the references by seven rows must make every pair fail unless the answers coincide.

GSM8K: the "#### n" reference must verify against the number written the ways people write it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl.rewards import VerifierPool, VerifyItem
from rl.rewards.math_verifier import canon

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH500 = DATA / "math" / "prm800k_math_splits_test.jsonl"
GSM8K = DATA / "gsm8k" / "test.jsonl"


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        pytest.fail(f"public data missing: {path} (see docs/INSTALL.md, 'Public data')")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=10.0) as p:
        yield p


def test_math500_solutions_verify_against_their_answers(pool):
    rows = _rows(MATH500)
    assert len(rows) == 500
    results = pool.map([VerifyItem(r["solution"], r["answer"], item_id=r["unique_id"]) for r in rows])
    disagree = [(r["unique_id"], r["answer"], x.reason, x.metrics.get("extracted")) for r, x in zip(rows, results) if x.score != 1.0]
    assert not disagree, f"agreement {500 - len(disagree)}/500; disagreements: {disagree}"


def test_math500_solutions_fail_against_other_rows_answers(pool):
    rows = _rows(MATH500)
    shifted = [rows[(i + 7) % len(rows)]["answer"] for i in range(len(rows))]
    results = pool.map([VerifyItem(r["solution"], ref) for r, ref in zip(rows, shifted)])
    passed = [(r["answer"], ref) for r, ref, x in zip(rows, shifted, results) if x.score == 1.0]
    assert all(canon(a) == canon(b) for a, b in passed), passed  # only coinciding answers pass
    assert sum(x.score for x in results) <= 5


def _written(n: str) -> list[str]:
    """Ways a response states the number n ("1,450,000", "-3", "18")."""
    plain = n.replace(",", "")
    with_commas = f"{int(plain):,}"
    return [
        f"The answer is {plain}.",
        f"The answer is {plain}.0",
        f"She pays ${with_commas} in total. The answer is ${with_commas}.",
        f"So the total is {with_commas} dollars.",
        f"<think>Adding up: 3 + 4 = 7, then 7 * 2 = 14.</think>\nThe answer is \\boxed{{{plain}}}.",
        f"Final answer: \\boxed{{\\${with_commas}.00}}",
        f"#### {with_commas}",
        f"<answer>{plain} apples</answer>",
    ]


@pytest.mark.parametrize("kind", ["integer", "math"])
def test_gsm8k_reference_verifies_against_written_numbers(pool, kind):
    rows = _rows(GSM8K)
    assert len(rows) == 1319
    items, wrong_items = [], []
    for i, r in enumerate(rows):
        n = r["answer"].rsplit("####", 1)[1].strip()
        # The integer verifier takes the raw GSM8K solution ("... #### 18"); math takes the number.
        ref = r["answer"] if kind == "integer" else n
        off = str(int(n.replace(",", "")) + 1)
        items += [VerifyItem(resp, ref, kind=kind) for resp in _written(n)]
        wrong_items.append(VerifyItem(_written(off)[i % 8], ref, kind=kind))
    results = pool.map(items)
    misses = [(it.reference[-12:], it.response[-60:], x.reason) for it, x in zip(items, results) if x.score != 1.0]
    assert not misses, f"{len(misses)} of {len(items)} missed, e.g. {misses[:10]}"
    wrong = pool.map(wrong_items)
    assert all(x.score == 0.0 and x.reason == "wrong" for x in wrong), [x for x in wrong if x.score][:5]
