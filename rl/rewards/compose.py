"""Reward composition: correctness plus an optional, config-weighted format term."""

from __future__ import annotations

from typing import Sequence

from rl.rewards.base import Reason, VerifyResult
from rl.rewards.config import RewardConfig


def compose_reward(result: VerifyResult, cfg: RewardConfig) -> float:
    """correct_weight * score + format_weight * format_ok (no length term: that is the loop's); a
    response cut at max_tokens gets `truncated_reward` (<= 0) and nothing else."""
    if result.reason == Reason.TRUNCATED:
        return cfg.truncated_reward
    fmt = 1.0 if result.metrics.get("format_ok") else 0.0
    return cfg.correct_weight * result.score + cfg.format_weight * fmt


def compose_rewards(results: Sequence[VerifyResult], cfg: RewardConfig) -> list[float]:
    return [compose_reward(r, cfg) for r in results]
