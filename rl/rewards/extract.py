"""Find the final answer in a response, as text. No parsing into math objects happens here.

Order of business (k1.5 §2.3 scores the final answer only, never the reasoning):
1. The answer part: the text after the last `</think>`. An opening `<think>` may be missing
   because chat templates pre-fill it; a response that opened `<think>` and never closed it, or
   one without `</think>` when thinking is required, has no answer part (`unterminated_think`).
   Inside the answer part, the last `<answer>...</answer>` block narrows it further.
2. In the answer part the last `\\boxed{...}` wins (so "\\boxed{5} ... wait, ... \\boxed{6}" is
   a self-correction to 6). Boxes separated only by connectors ("\\boxed{5} or \\boxed{6}",
   "x=\\boxed{1}, y=\\boxed{2}") form one group, returned together so the verifier can tell a
   list answer from a hedge.
3. Without a box: the last "answer is ..."/"Answer: ..."/"#### ..." phrase, else the last line's
   math or number.

Everything is a linear scan or a regex without nested quantifiers, so a 1 MB response costs
milliseconds; the worker pool's deadline is the backstop, not the plan.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MAX_ANSWER_CHARS = 1000  # a longer "final answer" is not an answer; it also bounds parsing work
_TAIL = 4000  # no-box extraction looks only at the end of the answer part

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_SPACE_RE = re.compile(r"\\boxed +([^\s${}]+)")  # "\boxed 5": TeX's one-token argument
_CONNECTOR_RE = re.compile(
    r"(?:\s|[,;.&$:]|\\[,;!]|\\q?quad|\\[()\[\]]|\\text\{[^{}]{0,12}\}|\b(?:and|or|either)\b"
    r"|\b[a-zA-Z]_?\d?\s*=)*"
)
_PHRASE_RES = (
    re.compile(r"####\s*(?P<ans>[^\n]+)"),
    re.compile(r"(?i)\b(?:final\s+answer|answer)\b[^\n:=]{0,30}?(?:\bis\b|:|=)\s*:?\s*(?P<ans>[^\n]+)"),
)
_MATH_ENV_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$]+)\$", re.DOTALL)
_NUMBER_RE = re.compile(r"(?:-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+)(?:\s*\\?%)?")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\s(?:because|since|which|so that)\s")


@dataclass
class Extraction:
    """What was found. `parts` holds the candidate answer text(s): several when a group of boxes
    or an "either $a$ or $b$" phrase was found. Whether several parts form a list answer or a
    hedge depends on the reference, so the verifier decides."""

    status: str  # "ok" | "no_answer" | "unterminated_think" | "answer_too_long"
    parts: list[str] = field(default_factory=list)
    method: str = ""  # "box" | "phrase" | "answer_tag" | "last_line" | "last_number"
    format_ok: bool = False  # thinking closed properly and the answer is boxed or in <answer>


def clean_text(text: str | bytes) -> str:
    """Bytes with invalid UTF-8 and strings with lone surrogates both become valid text."""
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")


def answer_part(response: str, require_think: bool) -> tuple[str | None, bool]:
    """(answer text or None if thinking never closed, whether the think block was well formed)."""
    close = response.rfind("</think>")
    if close >= 0:
        head = response[:close]
        # Well formed: one closing tag, and at most one opening tag, which precedes it.
        ok = head.count("</think>") == 0 and head.count("<think>") <= 1
        return response[close + len("</think>") :], ok
    if require_think or "<think>" in response:
        return None, False
    return response, True


def inside_answer_tags(text: str) -> tuple[str, bool]:
    """The last <answer>...</answer> block (an unclosed one runs to the end), if any."""
    start = text.rfind("<answer>")
    if start < 0:
        return text, False
    body = text[start + len("<answer>") :]
    end = body.find("</answer>")
    return (body if end < 0 else body[:end]), True


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each top-level \\boxed{...}/\\fbox{...}, brace-matched.

    Linear: a box opened inside an earlier box (or after an unclosed one) is skipped, and escaped
    braces (\\{ \\}) do not count. An unclosed box yields nothing."""
    boxes: list[tuple[int, int, str]] = []
    scanned_to = 0
    for m in _BOX_RE.finditer(text):
        if m.start() < scanned_to:
            continue
        depth, i, n = 1, m.end(), len(text)
        while i < n and depth:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            depth += (c == "{") - (c == "}")
            i += 1
        scanned_to = i
        if depth == 0:
            boxes.append((m.start(), i, text[m.end() : i - 1]))
    starts = [b[0] for b in boxes]  # sorted, non-overlapping: bisect keeps this linear-log
    spaced = []
    for m in _BOX_SPACE_RE.finditer(text):
        k = bisect.bisect_right(starts, m.start()) - 1
        if k < 0 or m.start() >= boxes[k][1]:
            spaced.append((m.start(), m.end(), m.group(1)))
    return sorted(boxes + spaced)


def final_box_group(text: str, boxes: list[tuple[int, int, str]]) -> list[str]:
    """Contents of the last box and of the boxes before it joined only by connectors."""
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        between = text[prev[1] : group[0][0]]
        if len(between) > 40 or _CONNECTOR_RE.fullmatch(between) is None:
            break
        group.insert(0, prev)
    return [c for _, _, c in group]


def _math_envs(phrase: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH_ENV_RE.finditer(phrase)]


def _strip_currency(phrase: str) -> str:
    """`\\$18` and an unpaired `$18` are money, not math delimiters."""
    phrase = phrase.replace("\\$", "")
    if phrase.count("$") % 2 == 1:
        phrase = re.sub(r"\$(?=\s*\d)", "", phrase, count=1)
    return phrase


def phrase_parts(phrase: str) -> list[str]:
    """Candidate values in a stated-answer phrase: its math, or its leading number or text."""
    phrase = _strip_currency(phrase.strip())
    envs = _math_envs(phrase)
    if envs:
        # Math after a clause boundary ("$5$. Check: $2+3=5$") is commentary, not answer.
        first_end = _SENTENCE_END_RE.search(phrase, envs[0][1])
        envs = [e for e in envs if first_end is None or e[0] < first_end.start()] or envs[:1]
        return [e[2] for e in envs]
    end = _SENTENCE_END_RE.search(phrase)
    phrase = (phrase[: end.start()] if end else phrase).strip().rstrip(".,;:!")
    if re.search(r"\bor\b", phrase):
        return [p.strip() for p in re.split(r"\s*\bor\b\s*|\s*,\s*", phrase) if p.strip()]
    num = _NUMBER_RE.match(phrase)
    if num and (num.end() == len(phrase) or re.match(r"\s+[A-Za-z]{2,}", phrase[num.end() :])):
        return [num.group().strip()]  # "18 dollars" -> "18"
    return [phrase]


def _last_line_value(text: str) -> tuple[list[str], str] | None:
    lines = [ln for ln in text[-_TAIL:].splitlines() if ln.strip()]
    if not lines:
        return None
    envs = _math_envs(_strip_currency(lines[-1]))
    if envs:
        return [envs[-1][2]], "last_line"
    nums = _NUMBER_RE.findall(_strip_currency(text[-_TAIL:]))
    return ([nums[-1].strip().rstrip(",")], "last_number") if nums else None


def extract_answer(response: str, require_think: bool = False) -> Extraction:
    """The final answer of a response, per the rules in this module's docstring."""
    text, think_ok = answer_part(clean_text(response), require_think)
    if text is None:
        return Extraction("unterminated_think")
    text, tagged = inside_answer_tags(text)
    boxes = find_boxes(text)
    if boxes:
        ex = Extraction("ok", final_box_group(text, boxes), "box", format_ok=think_ok)
    else:
        ex = Extraction("no_answer")
        tail = text[-_TAIL:]
        for rx in _PHRASE_RES:
            matches = list(rx.finditer(tail))
            if matches:
                ex = Extraction("ok", phrase_parts(matches[-1].group("ans")), "phrase", format_ok=think_ok and tagged)
                break
        else:
            if tagged and text.strip():  # <answer>\frac{1}{2}</answer>: the tag holds the answer
                ex = Extraction("ok", phrase_parts(text), "answer_tag", format_ok=think_ok)
            elif found := _last_line_value(text):
                ex = Extraction("ok", found[0], found[1], format_ok=False)
    ex.parts = [p.strip() for p in ex.parts if p.strip()]
    if ex.status == "ok" and not ex.parts:
        ex.status = "no_answer"
    if any(len(p) > MAX_ANSWER_CHARS for p in ex.parts):
        ex.status, ex.parts = "answer_too_long", []
    return ex
