"""Rule-based math verifier: the extracted final answer against the reference, on math-verify.

Equivalence is decided by math-verify (LaTeX -> sympy through latex2sympy, then numeric and
symbolic comparison: fractions/decimals/percent, `\\dfrac`, units and degrees, intervals, sets,
tuples, matrices, `x = 3` vs `3`, sqrt/pi forms). We only ever hand it LaTeX wrapped in a box,
with `LatexExtractionConfig` alone: its plain-expression extractor runs `sympy.parse_expr` (an
eval) on raw text, and model output must never reach eval/exec/sympify.

Before math-verify, plain numeric answers on both sides are settled exactly by exact.py (no
sympy, and no tolerance except to a rounded decimal's stated precision: math-verify's numeric
tolerance called 1/3^60 and 1/3^61 equal), and answer forms math-verify does not know are read
by forms.py: an option letter with its text ("(D) 7" for D), +/- references as the set of both
values, number words ("3.5 thousand"), decimal commas, and look-alike digits (rejected).

math-verify's own timeouts (SIGALRM, whole seconds) are switched off: this code runs in a
`VerifierPool` worker, whose per-item deadline kills and replaces the worker. That also covers
what SIGALRM cannot interrupt, e.g. sympy evaluating 10^{10^{10^{10}}} inside C code, and it
reports every overrun the same way (reason `timeout`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rl.rewards import forms
from rl.rewards.base import Reason, Verifier, VerifyItem, VerifyResult
from rl.rewards.exact import numbers_equal, parse_exact
from rl.rewards.extract import clean_text, extract_answer, find_boxes

_UNICODE = {"−": "-", "×": "\\times ", "÷": "\\div ", "π": "\\pi ", "°": "^\\circ", "√": "\\sqrt ", "∞": "\\infty "}
_THOUSANDS_RE = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\{,\}|,\\!\s*|,|\\[,;]|[ \u00a0\u202f~])\d{3})+(?![\d])")
_SCI_RE = re.compile(r"(?<![\w\\.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_MIXED_RE = re.compile(r"(?<![\d.}^_{a-zA-Z])(\d+)\s*\\[dt]?frac\s*\{(\d+)\}\s*\{(\d+)\}")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_PLAIN_INT_RE = re.compile(r"\s*-?[0-9]{1,64}\s*")  # ASCII digits only: look-alikes take the long path
_PLAIN_DECIMAL_RE = re.compile(r"-?\d*\.\d+")
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
    return forms.number_words(_SCI_RE.sub(r"\1\\times 10^{\2}", s))


def prepare_reference(ref: str) -> str:
    """The reference as a plain answer: a boxed reference is unboxed (several boxes are a list),
    a bare {1,2,3} is a set."""
    ref = clean_text(ref).strip()
    boxes = find_boxes(ref)
    if boxes:
        rest = "".join(ref[a:b] for a, b in zip([0] + [e for _, e, _ in boxes], [s for s, _, _ in boxes] + [len(ref)]))
        if re.fullmatch(r"(?:[\s$,.;+]|\\[()\[\]]|\band\b)*", rest):
            ref = ", ".join(b[2].strip() for b in boxes)
    ref = normalize(ref)
    if re.fullmatch(r"\{[^{}]*,[^{}]*\}", ref):
        ref = "\\" + ref[:-1] + "\\}"
    return drop_thousands(ref) if _THOUSANDS_RE.fullmatch(ref) else ref


def drop_thousands(s: str) -> str:
    """1,000 / 1{,}000 / 1,\\!000 -> 1000. Only for single-valued answers (a pair "(1,200)"
    would otherwise collapse), and never with a space after the comma ("1, 200" is a list)."""
    return _THOUSANDS_RE.sub(lambda m: re.sub(r"\{,\}|,\\!\s*|,|\\[,;]|[ \u00a0\u202f~]", "", m.group()), s)


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
    """Several boxes joined into one answer wear the reference's brackets: (1, 2) or \\{1, 2\\}
    (but not those of a list of tuples: "(3, 3), (1, 1)" has no outer bracket)."""
    s = re.sub(r"\\left|\\right|\s", "", ref)
    m = _BRACKETED_RE.fullmatch(s)
    if not m:
        return inner
    depth = 0
    for k, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if depth == 0 and k > 0 and s[k + 1 :] not in ("", "}"):  # "\\}": the backslash of the close
            return inner  # the first bracket closes before the end
    return f"{m.group(1)}{inner}{m.group(2)}"


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
    # math-verify imports sympy (seconds): only when an answer is parsed
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
    """True/False, or None when the reference cannot be parsed at all.

    Plain numeric answers on both sides (integers, decimals, fractions, powers, factorials,
    surds, pi) are settled by `exact.numbers_equal` without sympy: exactly, or to the stated
    precision of a rounded decimal. Only the rest goes to math-verify."""
    if _PLAIN_NUMBER_RE.fullmatch(pred) and _PLAIN_NUMBER_RE.fullmatch(ref):
        try:  # the common case (integers, decimals) without any parsing
            if Decimal(pred) == Decimal(ref):
                return True
            if "." not in pred + ref:
                return False  # two integers
        except InvalidOperation:
            pass
    exact_ref = parse_exact(ref)
    if exact_ref is not None:
        exact_pred = parse_exact(pred)
        if exact_pred is not None:
            return numbers_equal(exact_pred, exact_ref)
    from math_verify import verify  # math-verify imports sympy (seconds): only when an answer is parsed

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
        ex = extract_answer(item.response, item.require_think, item.question)
        ref = prepare_reference(item.reference)
        textual = is_textual(ref) and forms.option_letter_ref(ref) is None
        m = {"extracted": " | ".join(ex.parts)[:200], "method": ex.method, "format_ok": ex.format_ok,
             "ref_type": "text" if textual else "math"}
        if ex.status != "ok":
            return VerifyResult(0.0, Reason(ex.status), m)
        if len(ex.parts) == 1 and _PLAIN_INT_RE.fullmatch(ex.parts[0]) and _PLAIN_INT_RE.fullmatch(ref):
            ok = int(ex.parts[0]) == int(ref)  # the common case (GSM8K, the embedded tasks): no parsing
            return VerifyResult(float(ok), Reason.CORRECT if ok else Reason.WRONG, m)
        parts = [normalize(p) for p in ex.parts]
        if parse_exact(ref) is not None and any(forms.lookalike_digits(p) for p in parts):
            return VerifyResult(0.0, Reason.LOOKALIKE_DIGITS, m)
        ok = self._compare(parts, [normalize(p) for p in ex.loose_parts], ref, textual)
        if isinstance(ok, Reason):
            return VerifyResult(0.0, ok, m)
        if ok is None:
            return VerifyResult(0.0, Reason.REFERENCE_UNPARSABLE, m)
        return VerifyResult(float(ok), Reason.CORRECT if ok else Reason.WRONG, m)

    def _compare(self, parts: list[str], loose: list[str], ref: str, textual: bool) -> bool | None | Reason:
        if len(parts) == 1 and "".join(parts[0].split()) == "".join(ref.split()):
            return True  # the reference itself, character for character: nothing to parse
        letter = forms.option_letter_ref(ref)
        if letter is not None:  # "(D) 7" and "(B), an even number" name an option
            picks = {forms.option_letter_pred(q) for p in parts for q in (top_level_parts(p) or [p])} - {None}
            if len(picks) > 1:
                return Reason.MULTIPLE_ANSWERS
            if picks:
                return picks.pop() == letter
        pm = forms.expand_pm(ref)
        if pm is not None and not is_multi_valued(ref):
            ref = "\\{" + ", ".join(pm) + "\\}"  # 1 \pm \sqrt{19}: both roots, as a set
        if is_multi_valued(ref):
            return self._compare_list(parts, loose, ref)
        parts = [drop_thousands(p) for p in parts]
        if _PLAIN_DECIMAL_RE.fullmatch(ref):
            parts = [forms.decimal_comma(p) for p in parts]
        if _is_hedge(parts) or _is_hedge(top_level_parts(parts[-1])):
            return Reason.MULTIPLE_ANSWERS
        if textual:
            return canon(parts[-1]) == canon(ref)
        return equal_up_to_percent(parts[-1], ref)

    def _compare_list(self, parts: list[str], loose: list[str], ref: str) -> bool | None:
        """A list/tuple/set reference: the group of boxes (or the loose group) as one answer."""
        candidates = [parts] + ([loose] if len(loose) > len(parts) else [])
        unparsable = False
        for group in candidates:
            items, rewrite = group, len(group) > 1
            if len(group) == 1:  # "x = 2 \text{ or } x = -2" and "\pm 2" list their values
                pm = forms.expand_pm(group[0])
                items = pm or top_level_parts(group[0])
                rewrite = pm is not None or (len(items) > 1 and bool(re.search(r"=", group[0]) or _OR_RE.search(group[0])))
            pred = _wrap_like(ref, ", ".join(_value_of(q) for q in items)) if rewrite else group[0]
            ok = equal_up_to_percent(pred, ref)
            if ok:
                return True
            unparsable = unparsable or ok is None
        return None if unparsable else False


def _value_of(part: str) -> str:
    """"x = 2" -> "2" (a variable named in a list item)."""
    m = re.fullmatch(r"\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(.+)", part)
    return m.group(1).strip() if m else part.strip()
