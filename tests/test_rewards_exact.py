"""Exact comparison of numeric answers (rl/rewards/exact.py, issue 20). Hand-checkable values:
1/3^60 and 1/3^61 differ by a factor of 3 however small both are; a tolerance applies only where
a side is a rounded decimal, and only to the precision that decimal states."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rl.rewards.exact import numbers_equal, parse_exact


@pytest.mark.parametrize("text, value", [
    ("42", Fraction(42)), ("-3.5", Fraction(-7, 2)), ("\\frac{1}{3^{2}}", Fraction(1, 9)), ("\\frac12", Fraction(1, 2)),
    ("\\dfrac{-7}{2}", Fraction(-7, 2)), ("3^{-2}", Fraction(1, 9)), ("5!", Fraction(120)), ("\\binom{5}{2}", Fraction(10)),
    ("2.2\\times10^{-3}", Fraction(22, 10000)), ("\\sqrt{16}", Fraction(4)), ("2(3+4)", Fraction(14)),
    ("\\left(\\frac{1}{2}\\right)^{3}", Fraction(1, 8)), ("7/2", Fraction(7, 2)), ("2^{10}-1", Fraction(1023)),
])
def test_parse_exact_values(text, value):
    v = parse_exact(text)
    assert v is not None and v.value == value


@pytest.mark.parametrize("text", ["x", "10^{10^{10}}", "(10^9)!", "1000000000!", "\\frac{1}{0}", "2^{x}", "\\sqrt{-4}",
                                  "3+", "\\text{cm}", "1,2", "\\infty", "４２"])
def test_parse_exact_refuses_what_it_does_not_know_or_cannot_bound(text):
    assert parse_exact(text) is None


@pytest.mark.parametrize("pred, ref, same", [
    ("\\frac{1}{3^{61}}", "\\frac{1}{3^{60}}", False),   # ratio 3, both ~1e-29
    ("3^{-60}", "\\frac{1}{3^{60}}", True),
    ("\\frac{1}{2006!}", "\\frac{1}{2004!}", False),
    ("2.1\\times10^{-12}", "2.2\\times10^{-12}", False),  # the reference states 2 digits: 2.1 is not 2.2
    ("2.2\\cdot10^{-12}", "2.2\\times10^{-12}", True),
    ("123456789012345678", "123456789012345679", False),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("2\\sqrt{2}+10^{-9}", "2\\sqrt{2}", False),
    ("\\sqrt{2}", "1.41", True),    # sqrt 2 = 1.41421..., rounds to the stated 1.41
    ("\\sqrt{2}", "1.42", False),
    ("1.41421", "1.4142", True),    # more digits than the reference, within its half unit 0.00005
    ("1.41", "1.4142", False),
    ("0.54", "0.5", False),         # a one-digit reference gets no tolerance
    ("0.3333333", "\\frac{1}{3}", True),  # decimal prediction: within 5e-8 and 1e-6 relative
    ("0.33", "\\frac{1}{3}", False),
    ("3.1416", "\\pi", False),      # 2.3e-6 relative: not pi
    ("\\frac{22}{7}", "\\pi", False),
    ("602000000000000000000000", "6.02\\times10^{23}", True),
])
def test_numbers_equal(pred, ref, same):
    assert numbers_equal(parse_exact(pred), parse_exact(ref)) is same
