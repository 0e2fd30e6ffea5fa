"""Public entry points: `verify` for one response, `verify_batch` for many.

Routing is per item by its kind (`PromptRow.verifier`): rule-based kinds go through a
`VerifierPool` (killable workers, per-item deadline), "judge" goes to the `JudgeVerifier`, and
"math_or_judge" goes to the pool first and to the judge only where the rule could not decide
(no extractable answer, or a non-math reference the rule did not match).

The RL loop should hold one `VerifierPool` for the run and pass it in; without one, a shared
default pool is started on first use (never at import) and closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING, Sequence, Union

from rl.rewards.base import UNDECIDED, Reason, VerifyItem, VerifyResult, check_kind
from rl.rewards.pool import VerifierPool

if TYPE_CHECKING:
    from prompts.schema import PromptRow
    from rl.rewards.judge import JudgeVerifier

Item = Union[VerifyItem, "tuple[PromptRow, str]"]
_default: VerifierPool | None = None
_lock = threading.Lock()


def default_pool() -> VerifierPool:
    """The shared pool for calls that pass none; THINKRL_VERIFIER_WORKERS sizes it."""
    global _default
    with _lock:
        if _default is None:
            n = int(os.environ.get("THINKRL_VERIFIER_WORKERS", min(4, os.cpu_count() or 1)))
            _default = VerifierPool(num_workers=n)
            atexit.register(close_default_pool)
        return _default


def close_default_pool() -> None:
    global _default
    with _lock:
        if _default is not None:
            _default.close()
            _default = None


def _as_reference(reference: object) -> str:
    """A list/tuple/set reference written as LaTeX: [1, 2] -> "1, 2", (1, 2) -> "(1, 2)"."""
    if isinstance(reference, (list, tuple, set, frozenset)):
        vals = sorted(map(str, reference)) if isinstance(reference, (set, frozenset)) else list(map(str, reference))
        inner = ", ".join(vals)
        return {list: inner, tuple: f"({inner})"}.get(type(reference), f"\\{{{inner}\\}}")
    return str(reference)


def verify(
    response: str | bytes,
    reference: object,
    *,
    kind: str = "math",
    require_think: bool = False,
    timeout_s: float = 5.0,
    question: str = "",
    options: Sequence[str] = (),
    pool: VerifierPool | None = None,
    judge: JudgeVerifier | None = None,
) -> VerifyResult:
    """Score one response against a reference; `.score` in [0, 1], `.reason`, `.metrics`."""
    item = VerifyItem(response, _as_reference(reference), kind, question, "", require_think, tuple(options))
    return verify_batch([item], timeout_s=timeout_s, pool=pool, judge=judge)[0]


def verify_batch(
    items: Sequence[Item],
    *,
    require_think: bool = False,
    timeout_s: float | None = None,
    pool: VerifierPool | None = None,
    judge: JudgeVerifier | None = None,
) -> list[VerifyResult]:
    """Score items ((row, response) pairs or VerifyItems) in parallel; results in input order.

    `require_think` applies to (row, response) pairs; a VerifyItem carries its own. `timeout_s`
    is the per-item deadline (default: the pool's)."""
    batch = [it if isinstance(it, VerifyItem) else VerifyItem.from_row(it[0], it[1], require_think=require_think) for it in items]
    for it in batch:
        check_kind(it.kind, it.item_id)
        if it.kind in ("judge", "math_or_judge") and judge is None:
            raise ValueError(f"row {it.item_id!r}: verifier {it.kind!r} needs a judge (pass judge=JudgeVerifier(...))")
    results: list[VerifyResult | None] = [None] * len(batch)
    rule_idx = [i for i, it in enumerate(batch) if it.kind != "judge"]
    if rule_idx:
        scored = (pool or default_pool()).map([batch[i] for i in rule_idx], timeout_s)
        for i, r in zip(rule_idx, scored):
            results[i] = r
    to_judge = [
        i for i, it in enumerate(batch)
        if it.kind == "judge" or (it.kind == "math_or_judge" and _undecided(results[i]))
    ]  # fmt: skip
    if to_judge:
        assert judge is not None
        for i, r in zip(to_judge, judge([batch[i] for i in to_judge])):
            if results[i] is not None:  # keep what the rule saw, for metrics
                r.metrics["rule_reason"] = str(results[i].reason)
                r.metrics.setdefault("format_ok", results[i].metrics.get("format_ok", False))
            results[i] = r
    return results  # type: ignore[return-value]


def _undecided(r: VerifyResult | None) -> bool:
    """The rule could not decide: nothing to compare, or a non-math reference it did not match."""
    if r is None:
        return False
    return r.reason in UNDECIDED or (r.reason == Reason.WRONG and r.metrics.get("ref_type") == "text")
