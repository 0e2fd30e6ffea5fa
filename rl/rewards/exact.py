"""Exact values for numeric answers, before any sympy work (issue 20).

math-verify compares numbers with a tolerance, so two tiny or huge values that differ
(\\frac{1}{3^{60}} vs \\frac{1}{3^{61}}, 1/20! vs 1/21!, 2.1\\times10^{-12} vs 2.2\\times10^{-12})
come out "equal". Here a small recursive-descent reader turns a numeric LaTeX answer (integers,
decimals, \\frac, a/b, powers with small integer exponents, factorials, \\binom, \\sqrt, \\pi,
\\times/\\cdot, parentheses) into a value: a `Fraction` when it is rational, else a 60-digit
mpmath number. Two exact values are compared exactly; a tolerance is used only where one side is
a rounded decimal, scaled to the precision it states (see `numbers_equal`).

It never evaluates model text as code: the reader knows only the tokens above and refuses
anything else (the caller then falls back to math-verify, inside the worker's deadline). Sizes
are bounded (exponents, factorials, digits), so this path cannot hang.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from math import comb, factorial

import mpmath

_PREC = 60  # decimal digits for irrational values
MAX_EXP = 4096  # |exponent| of a power
MAX_FACT = 3000  # n! for n up to this
MAX_DIGITS = 20000  # integers beyond this many digits are refused

_TOKEN_RE = re.compile(
    r"\s+|(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<op>[-+*/^!(){}\[\]])",
    re.ASCII,
)
_DROP = {"\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\big", "\\Big"}
_FRACS = {"\\frac", "\\dfrac", "\\tfrac", "\\cfrac"}


class NotExact(Exception):
    """The text is not a plain numeric expression this reader knows."""


@dataclass(frozen=True)
class Value:
    """A parsed numeric answer. `decimals` is set when the text is a single rounded decimal
    literal (2.5, 0.33, 2.2\\times10^{-12}): the unit of its last stated digit, as a Fraction."""

    value: Fraction | mpmath.mpf
    decimals: Fraction | None = None
    sig_digits: int = 0

    @property
    def rational(self) -> bool:
        return isinstance(self.value, Fraction)


def _tokens(s: str) -> list[str]:
    s = s.replace("\\left", "").replace("\\right", "")
    out, i = [], 0
    while i < len(s):
        m = _TOKEN_RE.match(s, i)
        if not m:
            raise NotExact(s[i : i + 10])
        i = m.end()
        tok = m.group()
        if tok.isspace() or tok in _DROP:
            continue
        out.append(tok)
    return out


def _mp(v: Fraction | mpmath.mpf) -> mpmath.mpf:
    return mpmath.mpf(v.numerator) / v.denominator if isinstance(v, Fraction) else v


def _check(v: Fraction | mpmath.mpf) -> Fraction | mpmath.mpf:
    if isinstance(v, Fraction):
        for part in (v.numerator, v.denominator):
            if part.bit_length() > MAX_DIGITS * 3.33:
                raise NotExact("too big")
    elif not mpmath.isfinite(v):
        raise NotExact("not finite")
    return v


class _Reader:
    def __init__(self, tokens: list[str]):
        self.t, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise NotExact(f"expected {want}")
        self.i += 1
        return tok

    def expr(self) -> Fraction | mpmath.mpf:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            w = self.term()
            v = _check(v + w if op == "+" else v - w) if type(v) is type(w) else _check(_mp(v) + _mp(w) if op == "+" else _mp(v) - _mp(w))
        return v

    def term(self) -> Fraction | mpmath.mpf:
        v = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\times", "\\cdot"):
                self.take()
                v = _mul(v, self.unary())
            elif tok == "/":
                self.take()
                v = _div(v, self.unary())
            elif tok is not None and (tok in ("(", "\\sqrt", "\\pi") or tok in _FRACS) :
                v = _mul(v, self.unary())  # implicit product: 2\sqrt{2}, 3(4), 2\pi
            else:
                return v

    def unary(self) -> Fraction | mpmath.mpf:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Fraction | mpmath.mpf:
        v = self.atom()
        while self.peek() == "!":
            self.take()
            if not (isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= MAX_FACT):
                raise NotExact("factorial")
            v = Fraction(factorial(int(v)))
        if self.peek() == "^":
            self.take()
            e = self.group() if self.peek() == "{" else self.atom_digit()
            if not (isinstance(e, Fraction) and e.denominator == 1 and abs(e) <= MAX_EXP):
                raise NotExact("exponent")
            if isinstance(v, Fraction):
                if v == 0 and e < 0:
                    raise NotExact("0^-n")
                if abs(v.numerator).bit_length() * abs(int(e)) > MAX_DIGITS * 3.33:
                    raise NotExact("power too big")
                v = v ** int(e)
            else:
                v = v ** int(e)
        return _check(v)

    def atom_digit(self) -> Fraction:
        tok = self.take()
        if not tok.isdigit():
            raise NotExact("exponent")
        return Fraction(int(tok[0])) if len(tok) > 1 else Fraction(int(tok))  # x^23 in TeX is x^2 3

    def group(self) -> Fraction | mpmath.mpf:
        self.take("{")
        v = self.expr()
        self.take("}")
        return v

    def arg(self) -> Fraction | mpmath.mpf:
        """A TeX argument: {expr} or a single digit (\\frac12)."""
        if self.peek() == "{":
            return self.group()
        tok = self.take()
        if tok.isdigit():
            d = Fraction(int(tok[0]))
            if len(tok) > 1:  # \frac12 = 1/2: put the rest back
                self.t.insert(self.i, tok[1:])
            return d
        raise NotExact("argument")

    def atom(self) -> Fraction | mpmath.mpf:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if len(tok.replace(".", "")) > MAX_DIGITS:
                raise NotExact("digits")
            return Fraction(tok)
        if tok in ("(", "{"):
            v = self.expr()
            self.take(")" if tok == "(" else "}")
            return v
        if tok in _FRACS:
            return _div(self.arg(), self.arg())
        if tok == "\\binom":
            n, k = self.arg(), self.arg()
            if not all(isinstance(x, Fraction) and x.denominator == 1 and 0 <= x <= MAX_FACT for x in (n, k)):
                raise NotExact("binom")
            return Fraction(comb(int(n), int(k)))
        if tok == "\\sqrt":
            root = 2
            if self.peek() == "[":
                self.take("[")
                r = self.expr()
                self.take("]")
                if not (isinstance(r, Fraction) and r.denominator == 1 and 2 <= r <= 64):
                    raise NotExact("root")
                root = int(r)
            return _root(self.arg(), root)
        if tok == "\\pi":
            with mpmath.workdps(_PREC):
                return +mpmath.pi
        raise NotExact(tok)


def _mul(a, b):
    return _check(a * b) if isinstance(a, Fraction) and isinstance(b, Fraction) else _check(_mp(a) * _mp(b))


def _div(a, b):
    if b == 0:
        raise NotExact("division by zero")
    return _check(a / b) if isinstance(a, Fraction) and isinstance(b, Fraction) else _check(_mp(a) / _mp(b))


def _root(v, n: int):
    if isinstance(v, Fraction) and v >= 0:
        num, den = _iroot(v.numerator, n), _iroot(v.denominator, n)
        if num is not None and den is not None:
            return Fraction(num, den)  # \sqrt{16} = 4 stays exact
    if v < 0:
        raise NotExact("negative root")
    return _mp(v) ** (mpmath.mpf(1) / n)


def _iroot(x: int, n: int) -> int | None:
    r = round(float(mpmath.root(mpmath.mpf(x), n))) if x.bit_length() < 3000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**n == x:
            return c
    return None


_DECIMAL_RE = re.compile(r"-?(\d*)\.(\d+)|-?(\d+)", re.ASCII)
_SCI_TEX_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot)\s*10\s*\^\s*\{?\s*(-?\d+)\s*\}?")


def _rounding(s: str) -> tuple[Fraction | None, int]:
    """The unit of the last stated digit of a decimal literal (and its significant digits)."""
    s = s.strip()
    m = _SCI_TEX_RE.fullmatch(s)
    exp = 0
    if m:
        s, exp = m.group(1), int(m.group(2))
    d = _DECIMAL_RE.fullmatch(s)
    if not d or "." not in s:
        return None, 0
    frac = d.group(2)
    digits = (d.group(1) or "").lstrip("0") + frac
    sig = len(digits.lstrip("0"))
    return Fraction(1, 10 ** len(frac)) * Fraction(10) ** exp, sig


def parse_exact(s: str) -> Value | None:
    """A `Value` for a plain numeric answer, or None when the text is anything else."""
    with mpmath.workdps(_PREC):
        try:
            r = _Reader(_tokens(s))
            v = r.expr()
            if r.peek() is not None:
                return None
        except (NotExact, ValueError, ZeroDivisionError, OverflowError, IndexError):
            return None
    unit, sig = _rounding(s)
    return Value(v, unit, sig)


def numbers_equal(pred: Value, ref: Value) -> bool:
    """Exact unless a side is a rounded decimal:
    - both exact (no decimal point): equal as numbers (Fractions exactly, irrationals to 1e-40);
    - the reference is a rounded decimal with >= 2 significant digits: the prediction must round
      to it (|pred - ref| <= half a unit of the reference's last digit); a decimal prediction
      needs >= 3 significant digits in the reference for that (0.54 is not 0.5);
    - the prediction is a decimal and the reference exact: within half a unit of the
      prediction's last digit and within a relative 1e-6 (0.3333333 = 1/3, 0.33 is not)."""
    with mpmath.workdps(_PREC):
        if pred.value == ref.value:
            return True
        p, r = _mp(pred.value), _mp(ref.value)
        diff = abs(p - r)
        if ref.decimals is not None and ref.sig_digits >= 2:
            if pred.decimals is None or (ref.sig_digits >= 3 and pred.decimals < ref.decimals):
                return diff <= _mp(ref.decimals) / 2 * (1 + mpmath.mpf(10) ** -12)
            return False
        if pred.decimals is not None and ref.decimals is None:
            if r == 0:
                return False
            return diff <= _mp(pred.decimals) / 2 * (1 + mpmath.mpf(10) ** -12) and diff / abs(r) <= mpmath.mpf(10) ** -6
        if pred.rational and ref.rational:
            return False
        scale = max(abs(p), abs(r))
        return diff <= scale * mpmath.mpf(10) ** -40
