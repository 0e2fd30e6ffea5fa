"""Which verifier scores a row: `PromptRow.verifier` names it (default "math").

The rule-based ones run inside `VerifierPool` workers through `run_rule_based`; "judge" needs a
model and runs in the caller's process; "math_or_judge" runs "math" here and goes to the judge
only when the rule cannot decide (see api.verify_batch).
"""

from __future__ import annotations

from rl.rewards.base import Verifier, VerifyItem, VerifyResult
from rl.rewards.math_verifier import MathVerifier
from rl.rewards.rule_verifiers import IntegerVerifier, MultipleChoiceVerifier, StringVerifier

RULE_BASED: dict[str, type[Verifier]] = {
    v.name: v for v in (MathVerifier, IntegerVerifier, MultipleChoiceVerifier, StringVerifier)
}
_INSTANCES: dict[str, Verifier] = {}


def rule_kind(kind: str) -> str:
    """The rule-based verifier behind a kind ("math_or_judge" starts as "math")."""
    return "math" if kind == "math_or_judge" else kind


def run_rule_based(item: VerifyItem) -> VerifyResult:
    kind = rule_kind(item.kind)
    if kind not in RULE_BASED:
        raise ValueError(f"row {item.item_id!r}: {item.kind!r} is not a rule-based verifier")
    if kind not in _INSTANCES:
        _INSTANCES[kind] = RULE_BASED[kind]()
    return _INSTANCES[kind].verify_one(item)
