"""Answer forms the math verifier recognizes before comparing values (issue 20): option letters
with their text, +/- answers, number words, unicode look-alike digits, decimal commas.
Pure string functions; nothing here parses math."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname|textnormal)\s*\{([^{}]*)\}")
_OPTION_REF_RE = re.compile(r"\(?([A-J])\)?")
# "(D) 7", "D) 7", "(B), an even number", "B. 6", "D" - the letter must stand apart.
_OPTION_PRED_RE = re.compile(r"\(([A-J])\)(?:[\s,.:;]|$)|([A-J])(?:[.):,]\s|[.):]?$|\s)")
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
               "hundred": 100, "thousand": 1000})
_SCALE = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALED_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:\\text\{\s*)?(thousand|million|billion|trillion)\b\}?", re.I)
# Letters that pass for digits in a numeric answer (Cyrillic Ze/be/O, Latin l/O next to digits).
_CONFUSABLE = set("ЗзбОоІӀ") | {"\u0417", "\u0431"}
_PM_RE = re.compile(r"\\pm|±|\\mp")


def bare(s: str) -> str:
    return _TEXT_CMD_RE.sub(r"\1", s).strip()


def option_letter_ref(ref: str) -> str | None:
    """"C", "(C)", "\\text{(C)}", "\\textbf{C}" -> "C"; anything else -> None."""
    m = _OPTION_REF_RE.fullmatch(bare(ref).strip(" .$"))
    return m.group(1) if m else None


def option_letter_pred(pred: str) -> str | None:
    """The option a prediction names: "(D) 7", "\\text{(D) } 7", "(B), an even number", "B"."""
    s = bare(pred).strip(" $").replace("\\ ", " ").replace("\\,", " ")
    s = re.sub(r"^\\?(?:textbf|mathbf)?\s*", "", s)
    m = _OPTION_PRED_RE.match(s + " " if len(s) > 1 else s)
    return (m.group(1) or m.group(2)) if m else None


def lookalike_digits(s: str) -> bool:
    """Digits that are not ASCII (fullwidth ４, Arabic-Indic ٤, mathematical 𝟒) or letters posing
    as digits: Python's Decimal('４２') == 42, so a policy could be paid for them."""
    for ch in s:
        if ch.isdigit() and not ch.isascii():
            return True
        if ch in _CONFUSABLE or (not ch.isascii() and unicodedata.category(ch) == "No" and ch not in "²³¹"):
            return True  # circled ①, fractions-as-digits; superscripts stay (units: cm²)
    return bool(re.fullmatch(r"[\dlIO]*[lIO][\dlIO]*", s.strip()) and re.search(r"\d", s)) or s.strip() in ("O", "l")


def number_words(s: str) -> str:
    """"3.5 thousand" -> 3500, "2 million" -> 2000000, "seven" -> 7 (the whole answer only)."""
    s = _SCALED_RE.sub(lambda m: _scaled(m.group(1), m.group(2)), s)
    w = bare(s).strip(" .").lower()
    return str(_WORDS[w]) if w in _WORDS else s


def _scaled(num: str, word: str) -> str:
    try:
        return format((Decimal(num) * Decimal(10) ** _SCALE[word.lower()]).normalize(), "f")
    except InvalidOperation:
        return num


def expand_pm(s: str) -> list[str] | None:
    """"1 \\pm \\sqrt{19}" -> ["1 + \\sqrt{19}", "1 - \\sqrt{19}"]; None without exactly one ±."""
    if len(_PM_RE.findall(s)) != 1:
        return None
    plus, minus = _PM_RE.sub("+", s).strip(), _PM_RE.sub("-", s).strip()
    return [re.sub(r"^\+\s*", "", plus), minus]


def decimal_comma(pred: str) -> str:
    """"1000,99" -> 1000.99 and "2,74" -> 2.74 (a comma followed by 1-2 digits, or a leading 0,
    is a decimal comma). Only used when the reference is a decimal number."""
    m = re.fullmatch(r"(-?\d+),(\d{1,2}|\d{4,})", pred.strip()) or re.fullmatch(r"(-?0),(\d+)", pred.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else pred
