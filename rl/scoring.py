"""The RL loop's and evaluation's view of the verifiers: (rows, responses) -> scored results.

A thin adapter so the loop holds one long-lived verifier pool and does not know which verifier
each row uses (that is chosen per row by `row.verifier`, in `rl.rewards`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prompts.schema import PromptRow


@dataclass
class ScoreResult:
    score: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


_BOX = re.compile(r"\\boxed\{([^{}]*)\}")


class Scorer:
    """Placeholder until rl.rewards lands: last \\boxed{} after </think>, exact integer match."""

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0):
        self.num_workers = num_workers
        self.timeout_s = timeout_s

    def score_detailed(self, rows: list[PromptRow], texts: list[str]) -> list[ScoreResult]:
        out = []
        for row, text in zip(rows, texts):
            answer = text.rsplit("</think>", 1)[1] if "</think>" in text else ""
            boxes = _BOX.findall(answer)
            if not boxes:
                out.append(ScoreResult(0.0, "no_answer"))
                continue
            ok = boxes[-1].strip() == row.answer.strip()
            out.append(ScoreResult(1.0 if ok else 0.0, "correct" if ok else "wrong", {"extracted": boxes[-1]}))
        return out

    def score(self, rows: list[PromptRow], texts: list[str]) -> list[float]:
        return [r.score for r in self.score_detailed(rows, texts)]

    def close(self) -> None:
        pass

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
