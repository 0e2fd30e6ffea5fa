"""Domain tags for the tagging CLI: existing metadata first, then rules or a model classifier.

Order for each row (the first that gives a value wins; metadata["domain_source"] says which):

    1. "field":        the row's own `domain`
    2. "metadata:<k>": metadata[k] for k in the configured keys (default: type, subject,
                       category; MATH's `type` is e.g. "Counting & Probability")
    3. "rules":        the first rule whose regex matches the question (`domain.fallback: rules`)
       "model":        the checkpoint itself, asked to name one label (`domain.fallback: model`)
    4. "default":      `domain.default` ("other")

A rule file (`domain.rules`, YAML or JSON) is an ordered list, first match wins:

    - domain: geometry
      patterns: ['\\btriangle', '\\bcircle', 'radius']
    - domain: arithmetic
      patterns: ['^\\s*(compute|calculate|evaluate)?\\s*[-+*/() \\d.]+[?.]?\\s*$']

Patterns are Python regexes matched case-insensitively against the last user message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prompts.schema import PromptRow

DEFAULT_DOMAIN_KEYS = ("type", "subject", "category")

# Ordered: more specific subjects before the catch-alls (algebra, word problems).
DEFAULT_RULES: list[dict[str, Any]] = [
    {"domain": "arithmetic", "patterns": [r"^\s*(compute|calculate|evaluate|what is)?\s*[-+*/×÷()\d\s.,^]+[?=.]?\s*$"]},
    {"domain": "geometry", "patterns": [
        r"\btriangle", r"\bcircle", r"\bradius\b", r"\bdiameter\b", r"\bpolygon", r"\bhypotenuse\b",
        r"\bperimeter\b", r"\bangle", r"\bsphere\b", r"\bcylinder\b", r"\bcone\b", r"\bparallelogram",
        r"\btrapezoid", r"\\triangle", r"\\angle", r"\bsquare units\b", r"\bcube\b", r"\brectangle",
    ]},
    {"domain": "counting_probability", "patterns": [
        r"\bprobability\b", r"\bdice\b", r"\bdie\b", r"\bcoins?\b", r"\bat random\b", r"\brandomly\b",
        r"\bhow many ways\b", r"\barrangements?\b", r"\bpermutations?\b", r"\bcombinations?\b", r"\\binom",
        r"\bexpected value\b",
    ]},
    {"domain": "number_theory", "patterns": [
        r"\bprimes?\b", r"\bdivisible\b", r"\bdivisors?\b", r"\bremainder\b", r"\bmodulo\b", r"\\pmod",
        r"\bgcd\b", r"\bgreatest common (divisor|factor)\b", r"\bleast common multiple\b", r"\blcm\b",
        r"\bbase[- ]\d+\b", r"\bunits digit\b", r"\bsum of the digits\b",
    ]},
    {"domain": "calculus", "patterns": [r"\\lim\b", r"\\int\b", r"\bderivative\b", r"\bintegral\b", r"\blimit\b"]},
    {"domain": "algebra", "patterns": [
        r"\bsolve\b", r"\bequations?\b", r"\bpolynomial", r"\broots?\b", r"\binequalit", r"\bf\(x\)",
        r"\bslope\b", r"\bquadratic\b", r"\bfunction\b", r"\\frac\{[^{}]*x", r"\bx\^",
    ]},
    {"domain": "word_problem", "patterns": [
        r"\$\s?\d", r"\bdollars?\b", r"\bcents?\b", r"\bhow (many|much)\b", r"\beach\b", r"\bper\b",
        r"\bminutes?\b", r"\bhours?\b", r"\bdays?\b",
    ]},
]

CLASSIFIER_TEMPLATE = (
    "Which one of these domains does the problem belong to: {labels}?\n\n"
    "Problem: {question}\n\nReply with the domain name only."
)


@dataclass(frozen=True)
class Rule:
    domain: str
    patterns: tuple[re.Pattern[str], ...]


def compile_rules(spec: list[dict[str, Any]], where: str = "rules") -> list[Rule]:
    rules = []
    for i, item in enumerate(spec):
        if not isinstance(item, dict) or not isinstance(item.get("domain"), str) or not item.get("patterns"):
            raise ValueError(f"{where}: rule {i} needs 'domain' (string) and 'patterns' (list of regexes)")
        pats = item["patterns"]
        pats = [pats] if isinstance(pats, str) else pats
        try:
            compiled = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in pats)
        except re.error as e:
            raise ValueError(f"{where}: rule {i} ({item['domain']}): bad regex: {e}") from None
        rules.append(Rule(item["domain"], compiled))
    return rules


def load_rules(path: str | Path | None) -> list[Rule]:
    """The rule file's rules (YAML or JSON), or the built-in ones."""
    if path is None:
        return compile_rules(DEFAULT_RULES, "built-in rules")
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        spec = json.loads(text)
    else:
        spec = yaml.safe_load(text)
    if isinstance(spec, dict) and "rules" in spec:
        spec = spec["rules"]
    if not isinstance(spec, list):
        raise ValueError(f"{path}: expected a list of {{domain, patterns}} rules")
    return compile_rules(spec, str(path))


def known_domain(row: PromptRow, keys: tuple[str, ...]) -> tuple[str | None, str]:
    """(domain, source) from the row's own field or its metadata; (None, "") if neither has one."""
    if row.domain:
        return row.domain, "field"
    for k in keys:
        v = row.metadata.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip(), f"metadata:{k}"
    return None, ""


def rule_domain(question: str, rules: list[Rule]) -> str | None:
    for rule in rules:
        if any(p.search(question) for p in rule.patterns):
            return rule.domain
    return None


def classifier_messages(question: str, labels: list[str], template: str = CLASSIFIER_TEMPLATE) -> list[dict]:
    text = template.replace("{labels}", ", ".join(labels)).replace("{question}", question)
    return [{"role": "user", "content": text}]


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label the reply names first (case-, space- and underscore-insensitive), else None."""
    norm = re.sub(r"[\s_\-]+", " ", reply.lower())
    best: tuple[int, str] | None = None
    for label in labels:
        m = re.search(r"\b" + re.escape(re.sub(r"[\s_\-]+", " ", label.lower())) + r"\b", norm)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), label)
    return None if best is None else best[1]
