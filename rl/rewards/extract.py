"""Find the final answer in a response, as text. No parsing into math objects happens here.

Order of business (k1.5 §2.3 scores the final answer only, never the reasoning):
1. The answer part: the text after the last `</think>`, cut where a leaked chat template starts
   (`<|im_start|>`, `<|endoftext|>`, `</s>`, ...). An opening `<think>` may be missing because
   chat templates pre-fill it; a response that opened `<think>` and never closed it, or one
   without `</think>` when thinking is required, has no answer part (`unterminated_think`); with
   `require_think`, an empty think block is `empty_think`. Inside the answer part, the last
   `<answer>...</answer>` block narrows it further; a verbatim echo of the question is removed,
   and so are code blocks (a box inside code is `answer_in_code`, not an answer).
2. In the answer part the last `\\boxed{...}` wins (so "\\boxed{5} ... wait, ... \\boxed{6}" is
   a self-correction to 6). Boxes separated only by connectors ("\\boxed{5} or \\boxed{6}",
   "x=\\boxed{1}, y=\\boxed{2}") form one group, returned together so the verifier can tell a
   list answer from a hedge; `loose_parts` also joins boxes separated by a few words
   ("\\boxed{3} red and \\boxed{4} blue"), for a list reference only. A box inside a box is
   `nested_boxes`. A "Final Answer: ..." stated after the last box overrides it.
3. Without a box: the last "answer is ..."/"Answer: ..."/"#### ..." phrase, else the last
   sentence's stated value ("... so she has 24 pens left after 2 days" -> 24), else its last
   number or fraction. Digits inside words (XQZ7B, H2O) are never numbers.

Everything is a linear scan or a regex without nested quantifiers, so a 1 MB response costs
milliseconds; the worker pool's deadline is the backstop, not the plan.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MAX_ANSWER_CHARS = 1000  # a longer "final answer" is not an answer; it also bounds parsing work
_TAIL = 4000  # no-box extraction looks only at the end of the answer part
_BARE_MAX = 200  # a response longer than this with no answer phrase is not a bare answer

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_SPACE_RE = re.compile(r"\\boxed +([^\s${}]+)")  # "\boxed 5": TeX's one-token argument
_CONNECTOR_RE = re.compile(
    r"(?:\s|[,;.&$:]|\\[,;!]|\\q?quad|\\[()\[\]]|\\text\{[^{}]{0,12}\}|\b(?:and|or|either)\b"
    r"|\b[a-zA-Z]_?\d?\s*=)*"
)
# Between boxes of one list answer: a few plain words ("red and", "for part (a) and"), never a
# retraction ("wait", "no", "actually").
_LOOSE_RE = re.compile(r"[\s,;.&$:()]*(?:(?:\\text\{[^{}]{0,30}\}|[A-Za-z()]{1,12})[\s,;.&$:()]*){0,6}")
_RETRACT_RE = re.compile(r"(?i)\b(?:wait|no|not|actually|instead|wrong|mistake|correct|but|hmm|sorry|oops|rather)\b")
# Where a leaked chat template starts: nothing after it is the model's answer to this prompt.
_TEMPLATE_RE = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end|start_header_id|user|assistant)\|>|</s>|<｜end▁of▁sentence｜>|<｜User｜>")
# The response's own turn header at its very start ("<|assistant|> 9") opens the answer; it is not a leak.
_OWN_HEADER_RE = re.compile(r"\A\s*(?:<\|assistant\|>|<\|im_start\|>assistant\b|<\|start_header_id\|>assistant<\|end_header_id\|>)")
_CODE_RE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL)
_BOLD_RE = re.compile(r"(?<![\w*])(\*\*|__)(?=\S)(.{1,200}?)(?<=\S)\1(?![\w*])")  # bounded: linear
_PHRASE_RES = (
    re.compile(r"####\s*(?P<ans>[^\n]+)"),
    re.compile(r"(?i)\b(?:final\s+answer|answer)\b[^\n:=]{0,30}?(?:\bis\b|:|=)\s*:?\s*(?P<ans>[^\n]+)"),
)
_MATH_ENV_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$]+)\$", re.DOTALL)
# A number not glued to letters (XQZ7B, H2O, B12 are words): 1,234.5 / 2 500 / -3 / .5 / 4.1E3 / 12%
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z_\d.])(?:-?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?![\d.,])|-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+)"
    r"(?:\s*\\?%)?",
    re.ASCII,  # only ASCII digits are digits here: look-alikes are the verifier's to reject
)
_FRACTION_RE = re.compile(r"-?\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}|(?<![\w.])-?\d+\s*/\s*\d+(?!\w|\.\d)", re.ASCII)
_BOILERPLATE_RE = re.compile(r"I hope it is correct\.?")  # Minerva sign-off; no leading \s*: quadratic on long blank runs
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\s(?:because|since|which|so that|I hope)\b")
# In a last sentence "..., which is 1,000.99" restates the value, so only reasons cut it.
_REASON_RE = re.compile(r"\s(?:because|since|so that|I hope)\b")
# The verb that states a value: "the smallest $k$ is 12", "the car has gone 270 miles", "= 25".
_STATES_RE = re.compile(r"(?i)\b(?:is|are|was|were|equals?|be|gives?|has|have|had|needs?|gets?|makes?|takes?|pays?|costs?)\b|=")


@dataclass
class Extraction:
    """What was found. `parts` holds the candidate answer text(s): several when a group of boxes
    or an "either $a$ or $b$" phrase was found. Whether several parts form a list answer or a
    hedge depends on the reference, so the verifier decides."""

    status: str  # "ok" | "no_answer" | "unterminated_think" | "answer_too_long" | a hacking reason
    parts: list[str] = field(default_factory=list)
    method: str = ""  # "box" | "phrase" | "answer_tag" | "last_line" | "last_number"
    format_ok: bool = False  # thinking closed properly and the answer is boxed or in <answer>
    loose_parts: list[str] = field(default_factory=list)  # boxes joined by a few words
    bare: str = ""  # with no answer found: the whole answer part, if it is one short line


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


def empty_think(response: str) -> bool:
    """The think block holds nothing (a guess after `<think></think>`)."""
    close = response.rfind("</think>")
    if close < 0:
        return False
    start = response.rfind("<think>", 0, close)
    return not response[start + len("<think>") if start >= 0 else 0 : close].strip()


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


def final_box_group(text: str, boxes: list[tuple[int, int, str]], loose: bool = False) -> list[str]:
    """Contents of the last box and of the boxes before it joined only by connectors (`loose`:
    or by a few words that do not retract the earlier box)."""
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        between = text[prev[1] : group[0][0]]
        if len(between) > (60 if loose else 40):
            break
        if _CONNECTOR_RE.fullmatch(between) is None and not (
            loose and _LOOSE_RE.fullmatch(between) and not _RETRACT_RE.search(between)
        ):
            break
        group.insert(0, prev)
    return [c for _, _, c in group]


def _math_envs(phrase: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH_ENV_RE.finditer(phrase)]


_TEXT_IN_MATH_RE = re.compile(r"\\(?:text|mbox|mathrm|textbf)\s*\{[^{}]*\}")


def _strip_currency(phrase: str) -> str:
    """`\\$18`, an unpaired `$18`, and `$18, which covers ... $4` are money, not math delimiters."""
    phrase = phrase.replace("\\$", "")
    out, i = [], 0
    while True:
        j = phrase.find("$", i)
        if j < 0:
            out.append(phrase[i:])
            break
        close = phrase.find("$", j + 1)
        inner = phrase[j + 1 : close] if close > 0 else ""
        # Prose inside the pair makes it money; words in \\text{} are math ("$3 \\text{ and } 5$").
        words = _TEXT_IN_MATH_RE.sub(" ", inner)
        money = j + 1 < len(phrase) and phrase[j + 1].isdigit() and (close < 0 or re.search(r"(?<!\\)\b[A-Za-z]{3,}\b", words))
        if money:
            out.append(phrase[i:j])
            i = j + 1
        elif close < 0:
            out.append(phrase[i:])
            break
        else:
            out.append(phrase[i : close + 1])
            i = close + 1
    return "".join(out)


def _values(text: str) -> list[tuple[int, str]]:
    """(position, text) of every number and fraction in `text`, in order."""
    spans = [(m.start(), m.end(), m.group()) for m in _FRACTION_RE.finditer(text)]
    for m in _NUMBER_RE.finditer(text):
        if not any(s <= m.start() < e for s, e, _ in spans):
            spans.append((m.start(), m.end(), m.group()))
    return [(s, v.strip().rstrip(",")) for s, _, v in sorted(spans)]


def _stated(sentence: str) -> str | None:
    """The value a sentence states after its last stating verb (outside math), if any."""
    masked = _MATH_ENV_RE.sub(lambda m: " " * len(m.group()), sentence)
    verbs = list(_STATES_RE.finditer(masked))
    for v in reversed(verbs):
        rest = sentence[v.end() :]
        end = _SENTENCE_END_RE.search(rest)
        clause = rest[: end.start()] if end else rest
        if re.search(r"\bor\b", clause) and len(_values(clause)) > 1:
            return clause.strip()  # "It is 18 or 20": a hedge, for the verifier to see whole
        envs = _math_envs(rest)
        vals = _values(_MATH_ENV_RE.sub(lambda m: " " * len(m.group()), rest))
        if envs and (not vals or envs[0][0] <= vals[0][0]):
            return envs[0][2]
        if vals:
            return vals[0][1] + _scale_word(rest, vals[0])
    return None


def _scale_word(rest: str, val: tuple[int, str]) -> str:
    """"3.5 thousand": keep the scale word with its number (the verifier multiplies)."""
    m = re.match(r"\s*(thousand|million|billion|trillion)\b", rest[val[0] + len(val[1]) :], re.I)
    return f" {m.group(1)}" if m else ""


def phrase_parts(phrase: str) -> list[str]:
    """Candidate values in a stated-answer phrase: its math, or its leading number or text."""
    phrase = _strip_currency(phrase.strip())
    end = _SENTENCE_END_RE.search(_MATH_ENV_RE.sub(lambda m: "x" * len(m.group()), phrase))
    first = phrase[: end.start()] if end else phrase
    if re.match(r"\s*(?:the\s|[A-Z][a-z]*[\s,])", first) and (
        stated := _stated(first)
    ):
        return [stated]  # "The smallest $k$ is 12." -> 12
    envs = _math_envs(phrase)
    if envs:
        # Math after a clause boundary ("$5$. Check: $2+3=5$") is commentary, not answer.
        first_end = _SENTENCE_END_RE.search(phrase, envs[0][1])
        envs = [e for e in envs if first_end is None or e[0] < first_end.start()] or envs[:1]
        return [e[2] for e in envs]
    phrase = first.strip().rstrip(".,;:!")
    if re.search(r"\bor\b", phrase):
        return [p.strip() for p in re.split(r"\s*\bor\b\s*|\s*,\s*", phrase) if p.strip()]
    vals = _values(phrase)
    num = _NUMBER_RE.match(phrase)
    if num and (num.end() == len(phrase) or re.match(r"\s+[A-Za-z]{2,}", phrase[num.end() :])):
        return [num.group().strip() + _scale_word(phrase, (0, num.group()))]  # "18 dollars" -> "18"
    if len(vals) == 1 and re.match(r"[A-Za-z]", phrase) and len(phrase) > 12:
        return [vals[0][1]]  # "Jane started growing Sphere 3 hours ago" -> 3
    return [phrase]


def _last_line_value(text: str) -> tuple[list[str], str] | None:
    """No box, no answer phrase: the value the last sentence states, else its last math or
    number, else the last line's math, else the last number of the tail."""
    lines = [ln for ln in text[-_TAIL:].splitlines() if ln.strip()]
    if not lines:
        return None
    line = _strip_currency(lines[-1])
    sentences = [s for s in re.split(r"(?:(?<=[.!?])|(?<=\$\$)|(?<=\\\]))\s+(?=[A-Z])", line) if s.strip()]
    last = sentences[-1] if sentences else line
    cut = _REASON_RE.search(_MATH_ENV_RE.sub(lambda m: "x" * len(m.group()), last))
    head = last[: cut.start()] if cut and cut.start() > 0 else last
    if stated := _stated(head):
        return [stated], "last_line"
    if envs := _math_envs(head):
        return [envs[-1][2]], "last_line"
    masked = _MATH_ENV_RE.sub(lambda m: " " * len(m.group()), head)
    if vals := _values(masked):
        return [vals[-1][1] + _scale_word(masked, vals[-1])], "last_number"
    if envs := _math_envs(line):
        return [envs[-1][2]], "last_line"
    vals = _values(_strip_currency(text[-_TAIL:]))
    return ([vals[-1][1]], "last_number") if vals else None


def _boxes_outside_code(text: str) -> tuple[str, bool]:
    """The text with code blocks blanked, and whether a box was inside one."""
    boxed_in_code = False

    def blank(m: re.Match) -> str:
        nonlocal boxed_in_code
        boxed_in_code = boxed_in_code or bool(_BOX_RE.search(m.group()))
        return " " * len(m.group())

    return _CODE_RE.sub(blank, text), boxed_in_code


def _without_echo(text: str, question: str) -> str:
    q = question.strip()
    return text.replace(q, " ") if len(q) >= 20 and q in text else text


def extract_answer(response: str, require_think: bool = False, question: str = "") -> Extraction:
    """The final answer of a response, per the rules in this module's docstring."""
    response = clean_text(response)
    text, think_ok = answer_part(response, require_think)
    if text is None:
        return Extraction("unterminated_think")
    if require_think and empty_think(response):
        return Extraction("empty_think")
    text = _OWN_HEADER_RE.sub("", text, count=1)
    if m := _TEMPLATE_RE.search(text):
        text = text[: m.start()]
    text = _BOILERPLATE_RE.sub("", text)
    text, tagged = inside_answer_tags(text)
    echo_free = _without_echo(text, question)
    ex, code_box = _extract_outside_code(echo_free, think_ok, tagged)
    if ex.status == "no_answer" and code_box:
        ex.status = "answer_in_code"
    elif ex.status == "no_answer" and echo_free != text and _extract_outside_code(text, think_ok, tagged)[0].status == "ok":
        ex.status = "prompt_echo"  # the only answer was inside the copied question
    if ex.status == "no_answer" and (line := echo_free.strip()) and "\n" not in line and len(line) <= _BARE_MAX:
        ex.bare = line  # "Hello World": a response that is nothing but a textual answer
    return ex


def _extract_outside_code(text: str, think_ok: bool, tagged: bool) -> tuple[Extraction, bool]:
    text, code_box = _boxes_outside_code(text)
    return _extract(_BOLD_RE.sub(r"\2", text), think_ok, tagged), code_box


def _extract(text: str, think_ok: bool, tagged: bool) -> Extraction:
    boxes = find_boxes(text)
    tail = text[-_TAIL:]
    phrase = None
    for rx in _PHRASE_RES:
        matches = list(rx.finditer(tail))
        if matches:
            phrase = matches[-1]
            break
    after_box = phrase is not None and boxes and phrase.start() + len(text) - len(tail) > boxes[-1][1]
    # Only an explicit final statement ("Final Answer: ...", "#### ...") after the last box overrides
    # it; "We may check our answer: 17*44 = 748 ..." after \boxed{44} does not (MATH500 nt/1000).
    overrides = after_box and (phrase.re is _PHRASE_RES[0] or "final" in phrase.group(0).lower())
    if boxes and not (overrides and re.search(r"\d|\$", phrase.group("ans"))):
        if len(boxes[-1][2]) > MAX_ANSWER_CHARS:  # padded or not, a 1 MB box is not an answer
            return Extraction("answer_too_long")
        if any(_BOX_RE.search(c) for _, _, c in boxes[-1:]):
            return Extraction("nested_boxes")
        ex = Extraction("ok", final_box_group(text, boxes), "box", format_ok=think_ok)
        ex.loose_parts = final_box_group(text, boxes, loose=True)
    elif phrase is not None:
        ex = Extraction("ok", phrase_parts(phrase.group("ans")), "phrase", format_ok=think_ok and tagged)
    elif tagged and text.strip():  # <answer>\frac{1}{2}</answer>: the tag holds the answer
        ex = Extraction("ok", phrase_parts(text), "answer_tag", format_ok=think_ok)
    elif found := _last_line_value(text):
        ex = Extraction("ok", found[0], found[1], format_ok=False)
    else:
        ex = Extraction("no_answer")
    ex.parts = [p.strip() for p in ex.parts if p.strip()]
    if ex.status == "ok" and not ex.parts:
        ex.status = "no_answer"
    if any(len(p) > MAX_ANSWER_CHARS for p in ex.parts + ex.loose_parts):
        ex.status, ex.parts, ex.loose_parts = "answer_too_long", [], []
    return ex
