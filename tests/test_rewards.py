"""Rule-based math verifier: a table of real cases, each equal and not-equal, through the real
worker pool (the path the RL loop uses). Run: pytest tests/test_rewards.py -q"""

from __future__ import annotations

import pytest

from rl.rewards import Reason, VerifierPool, VerifyItem, verify, verify_batch

# A long, realistic reasoning block with distractor numbers and a box inside the thinking, so
# every case also checks that only the answer part is scored.
THINK = (
    "<think>\nLet me set up the problem. First I try 17 and get 289, which is too big.\n"
    + "Checking the intermediate step: 12 + 30 = 42, and 42 / 6 = 7. " * 40
    + "Maybe the answer is \\boxed{999}? No, let me re-check the algebra.\n</think>\n"
)
PREFILLED = THINK.removeprefix("<think>")  # the chat template already emitted <think>

# (response, reference, expected score, expected reason or None for correct/wrong)
CASES: list[tuple[str, str, float, str | None]] = [
    # --- integers, and the embedded arithmetic task's exact format
    (THINK + "The answer is \\boxed{303}.", "303", 1, None),
    (PREFILLED + "The answer is \\boxed{303}.", "303", 1, None),
    (THINK + "The answer is \\boxed{304}.", "303", 0, "wrong"),
    (THINK + "The answer is \\boxed{-42}.", "-42", 1, None),
    (THINK + "The answer is \\boxed{42}.", "-42", 0, "wrong"),
    (THINK + "\\boxed{007}", "7", 1, None),
    # --- fractions and decimals
    (THINK + "So $\\boxed{\\frac{1}{2}}$.", "0.5", 1, None),
    (THINK + "So $\\boxed{\\dfrac{1}{2}}$.", "\\frac12", 1, None),
    (THINK + "So $\\boxed{\\tfrac{3}{4}}$.", "0.75", 1, None),
    (THINK + "So \\boxed{1/2}.", "\\frac{1}{2}", 1, None),
    (THINK + "So \\boxed{0.5}.", "\\dfrac{1}{2}", 1, None),
    (THINK + "So \\boxed{\\frac{2}{4}}.", "\\frac{1}{2}", 1, None),
    (THINK + "So \\boxed{\\frac{1}{3}}.", "\\frac{1}{2}", 0, "wrong"),
    (THINK + "So \\boxed{0.33}.", "\\frac{1}{3}", 0, "wrong"),
    (THINK + "So \\boxed{0.3333333}.", "\\frac{1}{3}", 1, None),
    (THINK + "So \\boxed{326.50}.", "326.5", 1, None),
    (THINK + "So \\boxed{3.0}.", "3", 1, None),
    (THINK + "So \\boxed{3.01}.", "3", 0, "wrong"),
    (THINK + "So \\boxed{-\\frac{7}{2}}.", "-3.5", 1, None),
    (THINK + "So \\boxed{\\frac{-7}{2}}.", "-\\frac{7}{2}", 1, None),
    (THINK + "So \\boxed{\\frac{7}{2}}.", "-\\frac{7}{2}", 0, "wrong"),
    (THINK + "So \\boxed{\\frac{9}{256}}.", "\\frac{9}{256}", 1, None),
    (THINK + "So \\boxed{\\frac{33}{100}}.", "\\dfrac{33}{100}", 1, None),
    # --- percent
    (THINK + "So \\boxed{50\\%}.", "50", 1, None),
    (THINK + "So \\boxed{50\\%}.", "0.5", 1, None),
    (THINK + "So \\boxed{50\\%}.", "\\frac{1}{2}", 1, None),
    (THINK + "So \\boxed{25\\%}.", "50", 0, "wrong"),
    (THINK + "So \\boxed{40\\%}.", "0.5", 0, "wrong"),
    (THINK + "The answer is 12.5%.", "12.5", 1, None),
    (THINK + "The answer is 12.5%.", "0.125", 1, None),
    (THINK + "The answer is 12%.", "12.5", 0, "wrong"),
    # --- LaTeX spacing and wrappers
    (THINK + "\\boxed{\\frac {1} {2}}", "\\frac{1}{2}", 1, None),
    (THINK + "\\boxed{ \\left( 3 , \\frac{\\pi}{2} \\right) }", "\\left( 3, \\frac{\\pi}{2} \\right)", 1, None),
    (THINK + "\\boxed{(3,\\pi)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 0, "wrong"),
    (THINK + "\\boxed{\\displaystyle \\frac{5}{8}}", "\\frac58", 1, None),
    (THINK + "\\boxed{5\\,\\!}", "5", 1, None),
    (THINK + "\\fbox{12}", "12", 1, None),
    (THINK + "\\boxed 12", "12", 1, None),
    (THINK + "\\boxed{\\boxed{12}}", "12", 0, "nested_boxes"),  # a box in a box is a hack (issue 20)
    (THINK + "\\boxed{\\frac{\\frac{1}{2}}{3}}", "\\frac16", 1, None),
    (THINK + "\\boxed{\\frac{\\frac{1}{2}}{3}}", "\\frac13", 0, "wrong"),
    # --- units, money and degrees
    (THINK + "\\boxed{5 \\text{ cm}}", "5", 1, None),
    (THINK + "\\boxed{5.4 \\text{ cents}}", "5.4 \\text{ cents}", 1, None),
    (THINK + "\\boxed{5.4}", "5.4 \\text{ cents}", 1, None),
    (THINK + "\\boxed{6 \\text{ cm}}", "5", 0, "wrong"),
    (THINK + "\\boxed{\\$18}", "18", 1, None),
    (THINK + "\\boxed{\\$18.00}", "18", 1, None),
    (THINK + "\\boxed{\\$19}", "18", 0, "wrong"),
    (THINK + "\\boxed{90^\\circ}", "90^\\circ", 1, None),
    (THINK + "\\boxed{90}", "90^\\circ", 1, None),
    (THINK + "\\boxed{90^{\\circ}}", "90", 1, None),
    (THINK + "\\boxed{90°}", "90", 1, None),
    (THINK + "\\boxed{45^\\circ}", "90^\\circ", 0, "wrong"),
    (THINK + "\\boxed{90^\\circ}", "45", 0, "wrong"),
    (THINK + "The area is 24 square meters. Answer: 24 square meters", "24", 1, None),
    # --- intervals
    (THINK + "\\boxed{(-\\infty, 3]}", "(-\\infty,3]", 1, None),
    (THINK + "\\boxed{(-\\infty, 3)}", "(-\\infty,3]", 0, "wrong"),
    (THINK + "\\boxed{[1,3)}", "[1, 3)", 1, None),
    (THINK + "\\boxed{(1,3)}", "[1, 3)", 0, "wrong"),
    (THINK + "\\boxed{[1,3]}", "[1, 3)", 0, "wrong"),
    (THINK + "\\boxed{[-2,5) \\cup (7, \\infty)}", "[-2,5)\\cup(7,\\infty)", 1, None),
    (THINK + "\\boxed{[-2,5) \\cup [7, \\infty)}", "[-2,5)\\cup(7,\\infty)", 0, "wrong"),
    (THINK + "\\boxed{x \\in [2,5)}", "[2,5)", 1, None),
    # --- sets
    (THINK + "\\boxed{\\{1,2\\}}", "\\{2,1\\}", 1, None),
    (THINK + "\\boxed{\\{1,2,3\\}}", "\\{1,2\\}", 0, "wrong"),
    (THINK + "\\boxed{\\{1,3\\}}", "\\{1,2\\}", 0, "wrong"),
    (THINK + "\\boxed{1, 2}", "\\{1,2\\}", 1, None),
    (THINK + "\\boxed{-1, 2}", "2, -1", 1, None),
    (THINK + "\\boxed{-1, 3}", "2, -1", 0, "wrong"),
    # --- tuples and points
    (THINK + "\\boxed{(1,2)}", "(1, 2)", 1, None),
    (THINK + "\\boxed{(2,1)}", "(1, 2)", 0, "wrong"),
    (THINK + "\\boxed{(1,-16,-4,43)}", "(1,-16,-4,43)", 1, None),
    (THINK + "\\boxed{(1,-16,-4,42)}", "(1,-16,-4,43)", 0, "wrong"),
    (THINK + "\\boxed{(1,3,2)}", "(1,2,3)", 0, "wrong"),
    (THINK + "\\boxed{\\left(\\frac{1}{2}, -\\frac{\\sqrt{3}}{2}\\right)}", "(0.5, -\\frac{\\sqrt3}{2})", 1, None),
    # --- matrices and vectors
    (THINK + "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1, None),
    (THINK + "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 0, "wrong"),
    (THINK + "\\boxed{\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1, None),
    (THINK + "\\boxed{\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}}",
     "\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}", 1, None),
    (THINK + "\\boxed{\\begin{pmatrix} \\frac{16}{49} \\\\ \\frac{48}{49} \\\\ \\frac{24}{49} \\end{pmatrix}}",
     "\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}", 1, None),
    (THINK + "\\boxed{\\begin{pmatrix} 16/49 \\\\ 24/49 \\\\ 48/49 \\end{pmatrix}}",
     "\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}", 0, "wrong"),
    # --- equations vs values
    (THINK + "\\boxed{x = 3}", "3", 1, None),
    (THINK + "\\boxed{3}", "x = 3", 1, None),
    (THINK + "\\boxed{x=4}", "3", 0, "wrong"),
    (THINK + "\\boxed{3}", "x = 4", 0, "wrong"),
    (THINK + "\\boxed{y = 2x + 1}", "2x+1", 1, None),
    (THINK + "\\boxed{y = 2x + 1}", "y=2x+1", 1, None),
    (THINK + "\\boxed{y = 2x - 1}", "y=2x+1", 0, "wrong"),
    (THINK + "\\boxed{k = 5}", "5", 1, None),
    # --- scientific notation
    (THINK + "\\boxed{3 \\times 10^{5}}", "300000", 1, None),
    (THINK + "\\boxed{3 \\times 10^{4}}", "300000", 0, "wrong"),
    (THINK + "\\boxed{1.2 \\cdot 10^{4}}", "1200", 0, "wrong"),
    (THINK + "\\boxed{1.2 \\cdot 10^{3}}", "1200", 1, None),
    (THINK + "\\boxed{1.5e-3}", "0.0015", 1, None),
    (THINK + "\\boxed{1.5E-3}", "0.0015", 1, None),
    (THINK + "\\boxed{1.5e-3}", "0.015", 0, "wrong"),
    (THINK + "The answer is 2.5e6.", "2500000", 1, None),
    # --- thousands separators
    (THINK + "\\boxed{1,000}", "1000", 1, None),
    (THINK + "\\boxed{1{,}000}", "1000", 1, None),
    (THINK + "\\boxed{11,\\!111,\\!111,\\!100}", "11,\\! 111,\\! 111,\\! 100", 1, None),
    (THINK + "\\boxed{58500}", "58,500", 1, None),
    (THINK + "\\boxed{1,000,000}", "1000000", 1, None),
    (THINK + "\\boxed{1,000}", "100", 0, "wrong"),
    (THINK + "\\boxed{58,000}", "58,500", 0, "wrong"),
    (THINK + "The answer is 1,234,567.", "1234567", 1, None),
    # --- sqrt and pi forms
    (THINK + "\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1, None),
    (THINK + "\\boxed{\\sqrt{8}}", "2\\sqrt2", 1, None),
    (THINK + "\\boxed{2\\sqrt{3}}", "3\\sqrt{2}", 0, "wrong"),
    (THINK + "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{1}{2}\\sqrt{3}", 1, None),
    (THINK + "\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", 1, None),
    (THINK + "\\boxed{9\\pi}", "9 \\pi", 1, None),
    (THINK + "\\boxed{\\pi/2}", "\\frac{\\pi}{2}", 1, None),
    (THINK + "\\boxed{\\frac{\\pi}{3}}", "\\frac{\\pi}{2}", 0, "wrong"),
    (THINK + "\\boxed{\\sqrt{2}/2}", "\\frac{1}{2}", 0, "wrong"),
    (THINK + "\\boxed{1+2\\sqrt{3}}", "1+2\\sqrt{3}", 1, None),
    (THINK + "\\boxed{2\\sqrt{3}+1}", "1+2\\sqrt{3}", 1, None),
    (THINK + "\\boxed{\\sqrt{51}}", "\\sqrt{51}", 1, None),
    (THINK + "\\boxed{\\sqrt{52}}", "\\sqrt{51}", 0, "wrong"),
    # --- symbolic expressions and complex numbers
    (THINK + "\\boxed{(x+2)(x+5)}", "x^2+7x+10", 1, None),
    (THINK + "\\boxed{(x+2)(x+4)}", "x^2+7x+10", 0, "wrong"),
    (THINK + "\\boxed{2(k+1)}", "2k+2", 1, None),
    (THINK + "\\boxed{2n+2}", "2k+2", 0, "wrong"),
    (THINK + "\\boxed{7i-2}", "-2 + 7i", 1, None),
    (THINK + "\\boxed{7i+2}", "-2 + 7i", 0, "wrong"),
    (THINK + "\\boxed{-2-7i}", "-2 + 7i", 0, "wrong"),
    (THINK + "\\boxed{5r^5}", "5r^5", 1, None),
    # --- text answers (compared as words, so an anagram is not a match)
    (THINK + "\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1, None),
    (THINK + "\\boxed{Evelyn}", "\\text{Evelyn}", 1, None),
    (THINK + "\\boxed{\\text{Nevely}}", "\\text{Evelyn}", 0, "wrong"),
    (THINK + "\\boxed{\\text{(C)}}", "\\text{(C)}", 1, None),
    (THINK + "\\boxed{C}", "\\text{(C)}", 1, None),
    (THINK + "\\boxed{D}", "\\text{(C)}", 0, "wrong"),
    (THINK + "The answer is \\textbf{Monday}.", "\\text{Monday}", 1, None),
    (THINK + "\\boxed{\\text{Tuesday}}", "\\text{Monday}", 0, "wrong"),
    # --- the last box in the answer part wins; boxes inside thinking do not count
    (THINK + "First \\boxed{5}. Wait, I dropped a sign; redoing it gives \\boxed{6}.", "6", 1, None),
    (THINK + "First \\boxed{6}. Wait, I dropped a sign; redoing it gives \\boxed{5}.", "6", 0, "wrong"),
    ("<think>So it is \\boxed{6}.</think> The answer is \\boxed{5}.", "6", 0, "wrong"),
    ("<think>So it is \\boxed{6}.</think> I am not sure.", "6", 0, "no_answer"),
    (THINK + "The answer is $\\boxed{12}$ and that is final; check: 3 \\cdot 4 = 12.", "12", 1, None),
    # --- <think> handling
    ("<think>long thinking, never closed ... \\boxed{6}", "6", 0, "unterminated_think"),
    ("The answer is \\boxed{6}.", "6", 1, None),
    ("<think>a</think><think>b</think> \\boxed{6}", "6", 1, None),
    # --- <answer> tags
    (THINK + "<answer>\\boxed{42}</answer>", "42", 1, None),
    (THINK + "<answer>42</answer>", "42", 1, None),
    (THINK + "<answer>41</answer>", "42", 0, "wrong"),
    (THINK + "<answer>\\frac{1}{3}</answer>", "0.5", 0, "wrong"),
    (THINK + "<answer>\\frac{1}{2}</answer> (I also considered \\boxed{7})", "0.5", 1, None),
    (THINK + "<answer>The answer is $x = -3$.</answer>", "-3", 1, None),
    # --- no box: the final stated answer
    (THINK + "The final answer is 5.", "5", 1, None),
    (THINK + "The final answer is 5.", "6", 0, "wrong"),
    (THINK + "Answer: $\\frac{3}{4}$", "0.75", 1, None),
    (THINK + "Answer: $\\frac{3}{5}$", "0.75", 0, "wrong"),
    (THINK + "Therefore the answer is $2\\sqrt{5}$. Check: $(2\\sqrt5)^2 = 20$.", "\\sqrt{20}", 1, None),
    (THINK + "Therefore\n$$x = 17$$", "17", 1, None),
    (THINK + "We conclude that she has 18 apples left.", "18", 1, None),
    (THINK + "#### 1,080", "1080", 1, None),
    (THINK + "The answer is 18 dollars.", "18", 1, None),
    (THINK + "The answer is $18.", "18", 1, None),
    (THINK + "The answer is 19 dollars.", "18", 0, "wrong"),
    (THINK + "I could not solve it.", "18", 0, "no_answer"),
    # --- hedging
    (THINK + "It is either \\boxed{5} or \\boxed{6}.", "5", 0, "multiple_answers"),
    (THINK + "\\boxed{5} or \\boxed{6}", "6", 0, "multiple_answers"),
    (THINK + "\\boxed{5 \\text{ or } 6}", "5", 0, "multiple_answers"),
    (THINK + "\\boxed{5, 6}", "5", 0, "multiple_answers"),
    (THINK + "The answer is either 5 or 6.", "5", 0, "multiple_answers"),
    (THINK + "The answer is $5$ or $6$.", "6", 0, "multiple_answers"),
    (THINK + "\\boxed{A} \\boxed{B} \\boxed{C} \\boxed{D}", "\\text{(C)}", 0, "multiple_answers"),
    (THINK + "\\boxed{A, B, C, D}", "\\text{(C)}", 0, "multiple_answers"),
    (THINK + " ".join(f"\\boxed{{{i}}}" for i in range(1, 51)), "7", 0, "multiple_answers"),
    (THINK + "\\boxed{5} and again, to be clear, \\boxed{5}", "5", 1, None),
    (THINK + "\\boxed{\\frac12} or equivalently \\boxed{0.5}", "0.5", 1, None),
    # --- list references: several boxes together form the answer
    (THINK + "The roots are \\boxed{3} and \\boxed{-3}.", "3, -3", 1, None),
    (THINK + "The roots are \\boxed{3} and \\boxed{-3}.", "\\{-3, 3\\}", 1, None),
    (THINK + "The roots are \\boxed{3} and \\boxed{3}.", "3, -3", 0, "wrong"),
    (THINK + "The only root is \\boxed{3}.", "3, -3", 0, "wrong"),
    (THINK + "\\boxed{x = 3 \\text{ or } x = -3}", "-3, 3", 1, None),
    (THINK + "\\boxed{1}, \\boxed{2}", "(1, 2)", 1, None),
    (THINK + "x = \\boxed{1}, y = \\boxed{2}", "(1,2)", 1, None),
    (THINK + "\\boxed{2}, \\boxed{1}", "(1, 2)", 0, "wrong"),
]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=5.0) as p:
        yield p


def test_case_table_is_large_and_balanced():
    assert len(CASES) >= 150
    assert sum(c[2] == 1 for c in CASES) >= 60 and sum(c[2] == 0 for c in CASES) >= 60


def test_math_case_table(pool):
    results = pool.map([VerifyItem(resp, ref) for resp, ref, _, _ in CASES])
    failures = []
    for (resp, ref, want, why), got in zip(CASES, results):
        want_reason = why or ("correct" if want else "wrong")
        if got.score != want or got.reason != want_reason:
            failures.append(f"ref={ref!r} resp=...{resp[-80:]!r}: got {got.score} {got.reason} {got.metrics}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases failed:\n" + "\n".join(failures)


def test_require_think_flag(pool):
    answer_only = "The answer is \\boxed{6}."
    assert verify(answer_only, "6", pool=pool).score == 1.0
    r = verify(answer_only, "6", require_think=True, pool=pool)
    assert (r.score, r.reason) == (0.0, "unterminated_think")
    r = verify("thinking...</think> \\boxed{6}", "6", require_think=True, pool=pool)
    assert (r.score, r.reason) == (1.0, "correct") and r.metrics["format_ok"]


def test_python_collection_references(pool):
    resp = THINK + "The roots are \\boxed{2} and \\boxed{-1}."
    assert verify(resp, [2, -1], pool=pool).score == 1.0
    assert verify(resp, {-1, 2}, pool=pool).score == 1.0
    assert verify(THINK + "\\boxed{(2, -1)}", (2, -1), pool=pool).score == 1.0
    assert verify(THINK + "\\boxed{(-1, 2)}", (2, -1), pool=pool).score == 0.0


def test_batch_of_rows_in_order_and_metrics(pool):
    from prompts.schema import PromptRow

    rows = [
        PromptRow(id=f"r{i}", prompt=[{"role": "user", "content": f"{i}+{i}?"}], answer=str(2 * i))
        for i in range(40)
    ]
    responses = [f"<think>{i}+{i}</think>\nThe answer is \\boxed{{{2 * i + (i % 3 == 0)}}}." for i in range(40)]
    results = verify_batch(list(zip(rows, responses)), pool=pool)
    assert [r.score for r in results] == [0.0 if i % 3 == 0 else 1.0 for i in range(40)]
    assert all(r.metrics["format_ok"] and r.metrics["method"] == "box" for r in results)
    assert results[1].metrics["extracted"] == "2" and results[3].metrics["extracted"] == "7"


def test_unknown_verifier_names_the_row(pool):
    from prompts.schema import PromptRow

    row = PromptRow(id="bad-7", prompt=[{"role": "user", "content": "q"}], answer="1", verifier="regex")
    with pytest.raises(ValueError, match="bad-7.*regex"):
        verify_batch([(row, "\\boxed{1}")], pool=pool)


def test_reason_values_are_plain_strings():
    assert Reason.TIMEOUT == "timeout" and str(Reason.MULTIPLE_ANSWERS) == "multiple_answers"
