"""The one definition of "correct" (issue 20): every module that turns a score into right/wrong
(rewards, length penalty, rollout stats, evaluation, tagging, the dashboard) calls this.

A verifier's score is in [0, 1] and 1.0 means "the final answer is right" (rule-based scores are
exactly 0.0 or 1.0; a judge's are too). Scores that went through float32 tensors or a JSON round
trip may come back as 0.99999994, so "correct" is score >= 1 - CORRECT_ATOL, never >= 0.5: a
partial-credit score (a format bonus, a composed reward) is not a right answer.
"""

from __future__ import annotations

from typing import Any

CORRECT_ATOL = 1e-6
CORRECT_THRESHOLD = 1.0 - CORRECT_ATOL


def is_correct(score: float | None) -> bool:
    """True when a verifier score means a right answer. None (unscored) is not correct."""
    return score is not None and float(score) >= CORRECT_THRESHOLD


def is_success(score: float | None, threshold: float | None = None) -> bool:
    """`is_correct`, unless a caller configured its own success threshold (a sampler's pass rate
    with a partial-credit verifier): then score >= threshold. The one place either is decided."""
    return is_correct(score) if threshold is None else score is not None and float(score) >= threshold


def is_correct_tensor(scores: Any) -> Any:
    """Elementwise `is_correct` for a torch tensor (a bool tensor is returned as is)."""
    import torch  # torch: only the tensor form; verifier workers import this module without it

    if scores.dtype == torch.bool:
        return scores
    return scores.to(torch.float64) >= CORRECT_THRESHOLD
