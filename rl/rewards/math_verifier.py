"""Rule-based math verifier: the extracted final answer against the reference, on math-verify.

Equivalence is decided by math-verify (LaTeX -> sympy through latex2sympy, then numeric and
symbolic comparison: fractions/decimals/percent, `\\dfrac`, units and degrees, intervals, sets,
tuples, matrices, `x = 3` vs `3`, sqrt/pi forms). We only ever hand it LaTeX wrapped in a box,
with `LatexExtractionConfig` alone: its plain-expression extractor runs `sympy.parse_expr` (an
eval) on raw text, and model output must never reach eval/exec/sympify.

math-verify's own timeouts (SIGALRM, whole seconds) are switched off: this code runs in a
`VerifierPool` worker, whose per-item deadline kills and replaces the worker. That also covers
what SIGALRM cannot interrupt, e.g. sympy evaluating 10^{10^{10^{10}}} inside C code, and it
reports every overrun the same way (reason `timeout`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rl.rewards.base import Reason, Verifier, VerifyItem, VerifyResult
from rl.rewards.extract import clean_text, extract_answer

_UNICODE = {"−": "-", "×": "\\times ", "÷": "\\div ", "π": "\\pi ", "°": "^\\circ", "√": "\\sqrt ", "∞": "\\infty "}
_THOUSANDS_RE = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\{,\}|,\\!\s*|,)\d{3})+(?![\d])")
_SCI_RE = re.compile(r"(?<![\w\\.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_MIXED_RE = re.compile(r"(?<![\d.}^_{a-zA-Z])(\d+)\s*\\[dt]?frac\s*\{(\d+)\}\s*\{(\d+)\}")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_TEXTUAL_RE = re.compile(r"\(?[A-Za-z][A-Za-z\s']*\)?")
_BRACKETED_RE = re.compile(r"([(\[]|\\\{).*,.*([)\]]|\\\})", re.DOTALL)
_OR_RE = re.compile(r"\\text\{\s*or\s*\}|\\lor\b|\\vee\b|\bor\b")


def normalize(s: str) -> str:
    """Textual clean-up before math-verify: `$`, unicode math, spacing commands, a bare %,
    mixed numbers and plain scientific notation (1.5e-3 -> 1.5\\times 10^{-3})."""
    s = clean_text(s).strip()
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = s.replace("\\$", "").replace("$", "").strip().rstrip(".").strip()
    s = re.sub(r",\\!\s*", ",", s)  # 11,\!111 is a thousands separator; other spacing is noise
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad\b", " ", s).strip()
    s = re.sub(r"(?<!\\)%", r"\\%", s)  # a bare % starts a LaTeX comment
    # A whole number written against a fraction is a mixed number (MATH writes 15\\frac{39}{40}
    # for 639/40); latex2sympy would read it as the product 15 * 39/40.
    s = _MIXED_RE.sub(r"(\1+\\frac{\2}{\3})", s)
    return _SCI_RE.sub(r"\1\\times 10^{\2}", s)


def drop_thousands(s: str) -> str:
    """1,000 / 1{,}000 / 1,\\!000 -> 1000. Only for single-valued answers (a pair "(1,200)"
    would otherwise collapse), and never with a space after the comma ("1, 200" is a list)."""
    return _THOUSANDS_RE.sub(lambda m: re.sub(r"\{,\}|,\\!\s*|,", "", m.group()), s)


def top_level_parts(s: str) -> list[str]:
    """Split on commas/semicolons/"or"/"and" outside brackets: "5, 6" -> 2, "(5, 6)" -> 1."""
    s = _OR_RE.sub(",", re.sub(r"\\text\{\s*and\s*\}|\band\b", ",", s))
    parts, depth, cur = [], 0, []
    for c in s:
        depth += (c in "([{") - (c in ")]}")
        if c in ",;" and depth <= 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def is_multi_valued(ref: str) -> bool:
    """A list ("1, 2"), tuple/point ("(1, 2)"), set ("\\{1, 2\\}") or interval ("[1, 3)") reference."""
    if len(top_level_parts(ref)) > 1:
        return True
    return bool(_BRACKETED_RE.fullmatch(re.sub(r"\\left|\\right|\s", "", ref)))


def _wrap_like(ref: str, inner: str) -> str:
    """Several boxes joined into one answer wear the reference's brackets: (1, 2) or \\{1, 2\\}."""
    s = re.sub(r"\\left|\\right|\s", "", ref)
    m = _BRACKETED_RE.fullmatch(s)
    return f"{m.group(1)}{inner}{m.group(2)}" if m else inner


def is_textual(ref: str) -> bool:
    """Words, not math ("Evelyn", "\\text{(C)}"): compared as normalized strings, because
    latex2sympy reads "Evelyn" as the product E*v*e*l*y*n, which any anagram would equal."""
    bare = _TEXT_CMD_RE.sub(r"\1", ref).strip()
    return bool(_TEXTUAL_RE.fullmatch(bare)) and (len(re.sub(r"[^A-Za-z]", "", bare)) > 1 or "(" in bare)


def canon(s: str) -> str:
    """A string key for "same written answer" (hedge detection and textual answers)."""
    s = _TEXT_CMD_RE.sub(r"\1", s)
    s = re.sub(r"\\left|\\right|\\[,;!]|\\[dt]frac|\s+|[.'\"()]", lambda m: "\\frac" if "frac" in m.group() else "", s)
    return s.casefold()


def _parse(latex: str) -> tuple:
    from math_verify import LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    return tuple(parse("\\boxed{" + latex + "}", extraction_config=cfg, parsing_timeout=None))


_REFERENCES: dict[str, tuple] = {}


def _parse_reference(ref: str) -> tuple:
    """Parsed references, cached per worker: they repeat across a prompt's n samples. A failed
    parse is not cached: math-verify swallows exceptions (MemoryError included), so a failure
    may be transient."""
    hit = _REFERENCES.get(ref)
    if hit is None:
        hit = _parse(ref)
        if any(not isinstance(g, str) for g in hit):
            if len(_REFERENCES) >= 4096:
                _REFERENCES.clear()
            _REFERENCES[ref] = hit
    return hit


def math_equal(pred: str, ref: str) -> bool | None:
    """True/False, or None when the reference cannot be parsed at all."""
    if _PLAIN_NUMBER_RE.fullmatch(pred) and _PLAIN_NUMBER_RE.fullmatch(ref):
        try:  # the common case (integers, decimals) without sympy
            return Decimal(pred) == Decimal(ref)
        except InvalidOperation:
            pass
    from math_verify import verify

    gold = _parse_reference(ref)
    if not any(not isinstance(g, str) for g in gold):
        return True if canon(pred) == canon(ref) else None
    return verify(list(gold), list(_parse(pred)), timeout_seconds=None)


def equal_up_to_percent(pred: str, ref: str) -> bool | None:
    """math_equal, also accepting "12.5\\%" for a reference written 12.5 (and the reverse):
    MATH references often drop the % of a "what percent" question. math-verify does this for
    integers only ("9\\%" = 9)."""
    ok = math_equal(pred, ref)
    if not ok and pred.endswith("\\%") != ref.endswith("\\%"):
        return math_equal(pred.removesuffix("\\%").strip(), ref.removesuffix("\\%").strip()) or ok
    return ok


def _is_hedge(parts: list[str]) -> bool:
    """Several distinct values offered for one answer (unequal as written and as math)."""
    if len({canon(p) for p in parts}) <= 1:
        return False
    return len(parts) > 4 or not all(math_equal(p, parts[0]) for p in parts[1:])


class MathVerifier(Verifier):
    """Final answer vs a LaTeX reference, equal up to mathematical equivalence."""

    name = "math"

    def verify_one(self, item: VerifyItem) -> VerifyResult:
        ex = extract_answer(item.response, item.require_think)
        ref = normalize(item.reference)
        ref = drop_thousands(ref) if _THOUSANDS_RE.fullmatch(ref) else ref
        textual = is_textual(ref)
        m = {"extracted": " | ".join(ex.parts)[:200], "method": ex.method, "format_ok": ex.format_ok,
             "ref_type": "text" if textual else "math"}
        if ex.status != "ok":
            return VerifyResult(0.0, Reason(ex.status), m)
        parts = [normalize(p) for p in ex.parts]
        if is_multi_valued(ref):
            # Several boxes may together form a list/tuple/set answer.
            pred = parts[0] if len(parts) == 1 else _wrap_like(ref, ", ".join(parts))
        else:
            parts = [drop_thousands(p) for p in parts]
            if _is_hedge(parts) or _is_hedge(top_level_parts(parts[-1])):
                return VerifyResult(0.0, Reason.MULTIPLE_ANSWERS, m)
            pred = parts[-1]
        if textual:
            ok: bool | None = canon(pred) == canon(ref)
        else:
            ok = equal_up_to_percent(pred, ref)
        if ok is None:
            return VerifyResult(0.0, Reason.REFERENCE_UNPARSABLE, m)
        return VerifyResult(float(ok), Reason.CORRECT if ok else Reason.WRONG, m)
