"""Rule-based verifiers for integer (GSM8K-style), multiple-choice and string answers.

All three share the answer extraction of extract.py (answer part after </think>, last box,
else the stated answer), so a response is scored the same way whichever verifier its row names.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rl.rewards.base import Reason, Verifier, VerifyItem, VerifyResult
from rl.rewards.extract import Extraction, extract_answer
from rl.rewards.forms import lookalike_digits
from rl.rewards.math_verifier import canon, drop_thousands, top_level_parts

_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+", re.ASCII)  # ASCII: Decimal("٤٢") would be 42
_LETTER_RE = re.compile(r"\(?([A-Z])\)?(?:[.):,]|\s|$)")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


def _metrics(ex: Extraction) -> dict:
    return {"extracted": " | ".join(ex.parts)[:200], "method": ex.method, "format_ok": ex.format_ok}


def _result(ok: bool, m: dict) -> VerifyResult:
    return VerifyResult(float(ok), Reason.CORRECT if ok else Reason.WRONG, m)


def parse_number(text: str) -> list[Decimal]:
    """Every number written in `text`, money and thousands separators allowed ("$1,234.00")."""
    text = drop_thousands(_TEXT_CMD_RE.sub(r" \1 ", text).replace("\\$", "$").replace("\\!", ""))
    out = []
    for tok in _NUM_RE.findall(text):
        try:
            out.append(Decimal(tok))
        except InvalidOperation:
            pass
    return out


def _stated_values(part: str) -> list[Decimal]:
    """The number each alternative in a candidate states: "5+13=18" -> [18], "18 dollars for
    3 apples" -> [18] (the first number of an alternative), "18 or 20" -> [18, 20]."""
    part = drop_thousands(part).rsplit("=", 1)[-1]
    return [nums[0] for sub in top_level_parts(part) or [part] if (nums := parse_number(sub))]


class IntegerVerifier(Verifier):
    """Integer answers; the reference may be a bare number or a GSM8K solution ending "#### 42"."""

    name = "integer"

    def verify_one(self, item: VerifyItem) -> VerifyResult:
        ex = extract_answer(item.response, item.require_think, item.question)
        m = _metrics(ex)
        if ex.status != "ok":
            return VerifyResult(0.0, Reason(ex.status), m)
        if any(lookalike_digits(p) for p in ex.parts):
            return VerifyResult(0.0, Reason.LOOKALIKE_DIGITS, m)
        ref_nums = parse_number(item.reference.rsplit("####", 1)[-1])
        if len(ref_nums) != 1 or ref_nums[0] != ref_nums[0].to_integral_value():
            return VerifyResult(0.0, Reason.REFERENCE_UNPARSABLE, m)
        values = [v for p in ex.parts for v in _stated_values(p)]
        if not values:
            return VerifyResult(0.0, Reason.NO_ANSWER, m)
        if len(set(values)) > 1:  # "18 or 20", "\boxed{18}, \boxed{20}": a hedge
            return VerifyResult(0.0, Reason.MULTIPLE_ANSWERS, m)
        return _result(values[-1] == ref_nums[0], m)  # 18.0 == 18; 18.5 != 18


def _letter(text: str, options: tuple[str, ...]) -> str | None:
    """"B", "(B)", "\\text{(B)}", "B) 6" -> "B"; an option's own text maps to its letter."""
    bare = _TEXT_CMD_RE.sub(r"\1", text).strip()
    m = _LETTER_RE.match(bare)
    if m and ord(m.group(1)) - ord("A") < (len(options) or 10):
        return m.group(1)
    for i, opt in enumerate(options):
        if canon(opt) == canon(bare):
            return chr(ord("A") + i)
    return None


class MultipleChoiceVerifier(Verifier):
    """A letter (or an option's text) against a letter (or option text) reference."""

    name = "multiple_choice"

    def verify_one(self, item: VerifyItem) -> VerifyResult:
        ex = extract_answer(item.response, item.require_think, item.question)
        m = _metrics(ex)
        if ex.status != "ok":
            return VerifyResult(0.0, Reason(ex.status), m)
        ref = _letter(item.reference, item.options)
        if ref is None:
            return VerifyResult(0.0, Reason.REFERENCE_UNPARSABLE, m)
        # "\boxed{A}\boxed{B}" and "\boxed{A, C}" both offer several options: a hedge.
        # "(B), an even number" names B once: text after the letter is not another pick.
        picks = {_letter(q, item.options) for p in ex.parts for q in (top_level_parts(p) or [p])} - {None}
        if len(picks) > 1:
            return VerifyResult(0.0, Reason.MULTIPLE_ANSWERS, m)
        if not picks:
            return VerifyResult(0.0, Reason.NO_ANSWER, m)
        return _result(picks.pop() == ref, m)


class StringVerifier(Verifier):
    """Exact match after normalization (case, whitespace, \\text{}, surrounding punctuation)."""

    name = "string"

    def verify_one(self, item: VerifyItem) -> VerifyResult:
        ex = extract_answer(item.response, item.require_think, item.question)
        if ex.status == "no_answer" and ex.bare:  # "Hello World": the response is the answer
            ex = Extraction("ok", [ex.bare], "bare_text")
        m = _metrics(ex)
        if ex.status != "ok":
            return VerifyResult(0.0, Reason(ex.status), m)
        if len({canon(p) for p in ex.parts}) > 1:
            return VerifyResult(0.0, Reason.MULTIPLE_ANSWERS, m)
        return _result(canon(ex.parts[-1]).strip(",;:!?") == canon(item.reference).strip(",;:!?"), m)
