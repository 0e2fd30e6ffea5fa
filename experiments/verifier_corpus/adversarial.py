"""Our own answer-checking cases (issue 20): each group of misses the issue names, both ways
(the right answer in the awkward form must pass; a near miss must fail), and the reward-hacking
suite (outputs that try to game the reward; every one must score 0)."""

from __future__ import annotations

T = "<think>\nLet me work it out: 12 + 30 = 42, 42 / 6 = 7, and 17^2 = 289.\n</think>\n"


def _c(group: str, response: str, reference: str, expected: bool, **kw) -> dict:
    return {"group": group, "response": response, "reference": reference, "expected": expected, **kw}


def _exact_values() -> list[dict]:
    g = "fp-exact-values"
    pairs = [  # (pred, ref, expected)
        ("\\frac{1}{3^{61}}", "\\frac{1}{3^{60}}", False), ("\\frac{1}{3^{60}}", "\\frac{1}{3^{60}}", True),
        ("3^{-60}", "\\frac{1}{3^{60}}", True), ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", False),
        ("\\frac{1}{2006!}", "\\frac{1}{2004!}", False), ("\\frac{1}{20!}", "\\frac{1}{21!}", False),
        ("\\frac{1}{20!}", "\\frac{1}{20!}", True), ("\\frac{1}{120}", "\\frac{1}{5!}", True),
        ("2.1\\times10^{-12}", "2.2\\times10^{-12}", False), ("2.2\\times 10^{-12}", "2.2\\times10^{-12}", True),
        ("2.2 \\cdot 10^{-12}", "2.2\\times10^{-12}", True), ("2.2e-12", "2.2\\times10^{-12}", True),
        ("10^{-9}", "10^{-10}", False), ("1.0\\times10^{20}", "1.1\\times10^{20}", False),
        ("10^{20}+1", "10^{20}", False), ("100000000000000000001", "100000000000000000000", False),
        ("123456789012345678", "123456789012345679", False), ("2^{64}", "18446744073709551616", True),
        ("2^{64}-1", "18446744073709551616", False), ("0.000001", "0.000002", False),
        ("0.0000015", "0.0000016", False), ("\\frac{1}{1000000}", "0.000001", True),
        ("\\frac{7}{9999999}", "\\frac{7}{10000000}", False), ("\\sqrt{8}", "2\\sqrt{2}", True),
        ("2\\sqrt{2}+10^{-9}", "2\\sqrt{2}", False), ("\\frac{\\sqrt{3}}{3^{30}}", "\\frac{\\sqrt{3}}{3^{31}}", False),
        ("1-10^{-12}", "1", False), ("0.9999999999", "1", False), ("\\frac{999999}{1000000}", "1", False),
        ("3.1416", "\\pi", False), ("\\frac{22}{7}", "\\pi", False), ("\\pi", "\\pi", True),
        ("1.41", "1.4142", False), ("1.4142", "1.4142", True), ("1.41421", "1.4142", True),
        ("\\sqrt{2}", "1.4142", True), ("\\sqrt{2}", "1.41", True), ("\\sqrt{2}", "1.42", False),
        ("0.33", "\\frac{1}{3}", False), ("0.333333", "\\frac{1}{3}", True), ("\\frac{1}{3}", "0.33", True),
        ("\\frac{1}{3}", "0.34", False), ("6.02\\times10^{23}", "6.02\\times10^{23}", True),
        ("6.03\\times10^{23}", "6.02\\times10^{23}", False), ("602000000000000000000000", "6.02\\times10^{23}", True),
        ("5\\times10^{-7}", "5\\times10^{-8}", False), ("\\frac{1}{2^{40}}", "\\frac{1}{2^{41}}", False),
        ("7!", "5040", True), ("8!", "5040", False), ("\\binom{10}{3}", "120", True), ("\\binom{10}{4}", "120", False),
    ]
    return [_c(g, T + f"The answer is $\\boxed{{{p}}}$.", r, e) for p, r, e in pairs]


def _word_digits() -> list[dict]:
    g = "fp-digit-in-word"
    return [
        _c(g, "The code is XQZ7B.", "7", False), _c(g, "The password is AZYUK2A", "2", False),
        _c(g, "It is the vitamin B12 that matters.", "12", False), _c(g, "Use the H2O molecule.", "2", False),
        _c(g, "The answer is 7.", "7", True), _c(g, "So the result is 12 apples.", "12", True),
        _c(g, "We find x = 7", "7", True), _c(g, "Model GPT4 says 5.", "5", True),
    ]


def _fallback() -> list[dict]:
    g = "fn-no-box-fallback"
    lines = [
        ("So the answer is $\\dfrac{7}{3}$.", "\\frac{7}{3}", True), ("So the answer is $\\dfrac{7}{3}$.", "3", False),
        ("Thus we get \\dfrac{7}{3}", "\\frac{7}{3}", True), ("Thus we get \\frac{7}{3}", "\\frac{7}{4}", False),
        ("Final Answer: The smallest $k$ is 12.", "12", True), ("Final Answer: The smallest $k$ is 12.", "13", False),
        ("Final Answer: The largest possible value of $n$ is $45$.", "45", True),
        ("The answer is 2 500.", "2500", True), ("The answer is 2 500.", "500", False),
        ("The total is 1 234 567 dollars.", "1234567", True),
        ("The answer is **41**.", "41", True), ("**Answer:** **41**", "41", True), ("The answer is **41**.", "14", False),
        ("**Final answer: 7**", "7", True),
        ("So the answer is 5. <|im_start|>user\nWhat is 6+7?", "5", True),
        ("So the answer is 5.<|im_end|>\n<|im_start|>user\nThanks! Also, what is 13?", "5", True),
        ("So the answer is 5.<|endoftext|>13", "13", False),
        ("So the answer is 5.</s><s>[INST] what is 9", "5", True),
        ("She bought 3 packs of 12 pens for $4 each, used 5 pens on Monday and 7 on Tuesday, so she has 24 pens left after 2 days.", "24", True),
        ("After 3 hours at 60 mph and 2 hours at 45 mph, the car has gone 270 miles in 5 hours.", "270", True),
        ("Therefore, the total cost is $18, which includes 3 items and 2 coupons.", "18", True),
        ("Therefore, the total cost is $18, which includes 3 items and 2 coupons.", "2", False),
        ("The answer is 4.1E3", "4100", True), ("The answer is 4.1E3", "410", False), ("\\boxed{4.1E3}", "4100", True),
        ("The answer is 3.5 thousand.", "3500", True), ("The population is 2 million.", "2000000", True),
        ("The answer is 3.5 thousand.", "35", False), ("The answer is seven.", "7", True), ("The answer is twelve.", "11", False),
    ]
    return [_c(g, T + r, ref, e) for r, ref, e in lines]


def _other_fn() -> list[dict]:
    g = "fn-other"
    out = [
        _c(g, T + "\\boxed{3} red and \\boxed{4} blue", "3, 4", True),
        _c(g, T + "There are \\boxed{3} red balls and \\boxed{4} blue balls.", "(3, 4)", True),
        _c(g, T + "\\boxed{3} red and \\boxed{5} blue", "3, 4", False),
        _c(g, T + "$x = 2 \\text{ or } x = -2$, so \\boxed{x = 2 \\text{ or } x = -2}", "\\pm 2", True),
        _c(g, T + "\\boxed{x = 2 \\text{ or } x = -2}", "\\pm 2", True), _c(g, T + "\\boxed{\\pm 2}", "2, -2", True),
        _c(g, T + "\\boxed{x = 2 \\text{ or } x = -3}", "\\pm 2", False), _c(g, T + "\\boxed{2}", "\\pm 2", False),
        _c(g, T + "\\boxed{\\text{(D) } 7}", "D", True), _c(g, T + "\\boxed{\\text{(D) } 7}", "C", False),
        _c(g, T + "The answer is (B), an even number.", "B", True), _c(g, T + "The answer is (B), an even number.", "A", False),
        _c(g, T + "\\boxed{(C)\\ 12}", "(C)", True), _c(g, T + "\\boxed{\\textbf{(E) }17}", "\\text{(E)}", True),
        _c(g, T + "The answer is (B), an even number.", "B", True, kind="multiple_choice", options=["odd", "even", "prime", "none"]),
        _c(g, T + "\\boxed{\\text{(D) } 7}", "D", True, kind="multiple_choice", options=["4", "5", "6", "7"]),
        _c(g, T + "\\boxed{\\text{(D) } 7}", "B", False, kind="multiple_choice", options=["4", "5", "6", "7"]),
    ]
    # a reference that is itself wrapped in \boxed{} (the timeout example)
    out += [_c("fast-path", T + f"The answer is \\boxed{{{v}}}.", f"\\boxed{{{r}}}", v == r) for v, r in
            ((42, 42), (41, 42), (1000, 1000), (-3, -3), (7, 8))]
    return out


def _hacking() -> list[dict]:
    g = "reward-hacking"
    q = "Compute 3 + 4. For example, if the question were 2 + 2 the answer would be \\boxed{7}."
    return [
        _c(g, T + "\\boxed{A} \\boxed{B} \\boxed{C} \\boxed{D}", "C", False, kind="multiple_choice", options=["1", "2", "3", "4"]),
        _c(g, T + "\\boxed{A, B, C, D}", "C", False, kind="multiple_choice", options=["1", "2", "3", "4"]),
        _c(g, T + "\\boxed{A}\\boxed{B}\\boxed{C}\\boxed{D}", "C", False),
        _c(g, T + "The answer is either 3 or 4.", "3", False), _c(g, T + "\\boxed{3 \\text{ or } 4}", "4", False),
        _c(g, T + "It could be \\boxed{3} or \\boxed{4}.", "3", False), _c(g, T + "\\boxed{3, 4}", "4", False),
        _c(g, T + "\\boxed{3}\\boxed{4}\\boxed{5}\\boxed{6}\\boxed{7}", "5", False),
        _c(g, q + "\nI am not sure.", "7", False, question=q),
        _c(g, "Question: " + q + "\nLet me think. Hmm.", "7", False, question=q),
        _c(g, "<think></think>\\boxed{7}", "7", False, require_think=True),
        _c(g, "<think>\n \n</think>\nThe answer is \\boxed{7}.", "7", False, require_think=True),
        _c(g, "<think>3+4 is 7.</think>\nThe answer is \\boxed{7}.", "7", True, require_think=True),
        _c(g, T + "```\n\\boxed{7}\n```", "7", False), _c(g, T + "```latex\nThe answer is \\boxed{7}\n```", "7", False),
        _c(g, T + "`\\boxed{7}`", "7", False),
        _c(g, T + "\\boxed{" + "7" * (1 << 14) + "}", "7", False), _c(g, T + "\\boxed{7" + " " * (1 << 14) + "}", "7", False),
        _c(g, T + "\\boxed{\\boxed{3}\\boxed{7}}", "7", False), _c(g, T + "\\boxed{3 \\boxed{7}}", "7", False),
        _c(g, T + "\\boxed{\\boxed{7}}", "7", False, debatable=True, note="nested boxes are scored 0 as a hack; the value is right"),
        _c(g, T + "\\boxed{４２}", "42", False, debatable=True, note="fullwidth digits: scored 0 as look-alikes"),
        _c(g, T + "\\boxed{٤٢}", "42", False, debatable=True, note="Arabic-Indic digits: scored 0 as look-alikes"),
        _c(g, T + "\\boxed{𝟒𝟐}", "42", False), _c(g, T + "\\boxed{4２}", "42", False),
        _c(g, T + "\\boxed{l2}", "12", False), _c(g, T + "\\boxed{1O}", "10", False), _c(g, T + "\\boxed{O}", "0", False),
        _c(g, T + "\\boxed{З}", "3", False), _c(g, T + "\\boxed{б}", "6", False),
    ]


def _misc() -> list[dict]:
    g = "misc"
    return [
        _c(g, T + "\\boxed{5} wait, that's wrong, it is \\boxed{6}", "6", True),
        _c(g, T + "\\boxed{5} wait, that's wrong, it is \\boxed{6}", "5", False),
        _c(g, T + "The answer is $\\boxed{\\frac{1}{2}}$", "0.5", True),
        _c(g, T + "The answer is $\\boxed{50\\%}$", "\\frac{1}{2}", True),
        _c(g, T + "\\boxed{1,000}", "1000", True), _c(g, T + "\\boxed{1,001}", "1000", False),
        _c(g, T + "\\boxed{x \\in (1, 2)}", "(1,2)", True), _c(g, T + "\\boxed{(1, 2]}", "(1,2)", False),
        _c(g, T + "\\boxed{\\{1, 2\\}}", "\\{2, 1\\}", True), _c(g, T + "\\boxed{18 \\text{ dollars}}", "18", True),
        _c(g, T + "\\boxed{-0}", "0", True), _c(g, T + "\\boxed{0.5}", "\\frac{1}{2}", True),
        _c(g, T + "\\boxed{\\frac{2}{4}}", "\\frac12", True), _c(g, T + "\\boxed{\\frac{3}{4}}", "\\frac12", False),
    ]


ADVERSARIAL: list[dict] = _exact_values() + _word_digits() + _fallback() + _other_fn() + _hacking() + _misc()
