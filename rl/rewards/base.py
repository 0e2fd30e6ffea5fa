"""The verifier interface: items in, one `VerifyResult` per item out.

A `VerifyItem` is what a verifier needs from a (prompt row, response) pair, flattened into a
small picklable record so it can cross into a worker process (the rule-based verifiers run in
`VerifierPool` workers that can be killed; see pool.py). A verifier is a class with a `name`
(the value of `PromptRow.verifier` that selects it) and a `verify_one` method; `__call__` maps it
over a batch. Concrete verifiers live in math_verifier.py, rule_verifiers.py and judge.py.

k1.5 (§2.3 "Reward modeling for math") scores a response by the correctness of its final
answer only; the score here is that correctness in [0, 1]. Format rewards are composed on top
(compose.py); the length penalty belongs to the RL loop (k1.5 §2.3.3), not to the verifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from rl.rewards.scores import is_correct

if TYPE_CHECKING:
    from prompts.schema import PromptRow


class Reason(StrEnum):
    """Why an item got its score. A StrEnum so `result.reason == "timeout"` reads naturally."""

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"  # nothing extractable in the answer part
    UNTERMINATED_THINK = "unterminated_think"  # thinking opened (or required) and never closed
    MULTIPLE_ANSWERS = "multiple_answers"  # hedging: several distinct values for one answer
    ANSWER_TOO_LONG = "answer_too_long"
    REFERENCE_UNPARSABLE = "reference_unparsable"
    TIMEOUT = "timeout"  # the per-item deadline passed; the worker was killed and replaced
    WORKER_CRASHED = "worker_crashed"  # the worker died (segfault, OOM kill) on this item
    ERROR = "error"  # the verifier raised; the exception type is in metrics["error"]
    # Reward hacking (issue 20): outputs that try to game the reward score 0 with these reasons.
    EMPTY_THINK = "empty_think"  # `require_think` and the think block is empty: a guess
    ANSWER_IN_CODE = "answer_in_code"  # the only box is inside a code block
    PROMPT_ECHO = "prompt_echo"  # the only answer is inside a verbatim echo of the question
    NESTED_BOXES = "nested_boxes"  # \\boxed{... \\boxed{...}}
    LOOKALIKE_DIGITS = "lookalike_digits"  # non-ASCII digits or letters posing as digits
    TRUNCATED = "truncated"  # cut at max_tokens: never scored, whatever its text holds
    JUDGE_CORRECT = "judge_correct"
    JUDGE_INCORRECT = "judge_incorrect"
    JUDGE_UNPARSABLE = "judge_unparsable"  # no valid verdict in the judge's output: not a pass
    JUDGE_ERROR = "judge_error"  # transport failed after its retries


# Every reason that means "the rule could not decide" (rather than "the answer is wrong"):
# the combined math_or_judge mode sends exactly these items on to the judge.
UNDECIDED = frozenset({Reason.NO_ANSWER, Reason.REFERENCE_UNPARSABLE})


@dataclass(frozen=True)
class VerifyItem:
    """One response to score, with what the verifier needs from its prompt row."""

    response: str
    reference: str
    kind: str = "math"
    question: str = ""
    item_id: str = ""
    require_think: bool = False
    options: tuple[str, ...] = ()  # multiple-choice option texts, in letter order (A, B, ...)

    @classmethod
    def from_row(cls, row: PromptRow, response: str, *, require_think: bool = False) -> VerifyItem:
        opts = row.metadata.get("options") or row.metadata.get("choices") or ()
        if isinstance(opts, dict):  # {"A": "...", "B": "..."}
            opts = [opts[k] for k in sorted(opts)]
        return cls(
            response=response,
            reference=row.answer,
            kind=row.verifier,
            question=row.question(),
            item_id=row.id,
            require_think=require_think,
            options=tuple(str(o) for o in opts),
        )


@dataclass
class VerifyResult:
    """A score in [0, 1], a `Reason`, and per-item metrics (e.g. extracted, format_ok, elapsed_s)."""

    score: float
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    @property
    def correct(self) -> bool:
        return is_correct(self.score)


class Verifier(ABC):
    """A scorer for one kind of row. Subclasses set `name` and implement `verify_one`.

    `verify_one` has no deadline of its own: rule-based verifiers are meant to run inside
    `VerifierPool`, which kills a worker that overruns; `rule_based = False` verifiers (the
    judge) bound their own calls with transport timeouts instead.
    """

    name: ClassVar[str]
    rule_based: ClassVar[bool] = True

    @abstractmethod
    def verify_one(self, item: VerifyItem) -> VerifyResult: ...

    def __call__(self, batch: Sequence[VerifyItem]) -> list[VerifyResult]:
        return [self.verify_one(item) for item in batch]


KINDS = ("math", "integer", "multiple_choice", "string", "judge", "math_or_judge")


def check_kind(kind: str, item_id: str = "") -> str:
    """Unknown verifier names are configuration errors: fail loudly, naming the row."""
    if kind not in KINDS:
        where = f"row {item_id!r}: " if item_id else ""
        raise ValueError(f"{where}unknown verifier {kind!r}; expected one of {', '.join(KINDS)}")
    return kind
