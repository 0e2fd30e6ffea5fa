"""The RL loop's and evaluation's view of the verifiers: (rows, responses) -> results + rewards.

One long-lived `VerifierPool` per run (killable workers, per-item deadlines, batched), with the
verifier chosen per row by `row.verifier` inside `rl.rewards`. Rewards are composed from the
results by config (correctness + optional format term); the length penalty is the loop's.
"""

from __future__ import annotations

from prompts.schema import PromptRow
from rl.rewards import JudgeVerifier, VerifierConfig, VerifierPool, VerifyResult, compose_rewards, verify_batch

ScoreResult = VerifyResult  # .score in [0, 1], .reason, .metrics


class Scorer:
    def __init__(self, cfg: VerifierConfig | None = None, judge: JudgeVerifier | None = None):
        self.cfg = cfg or VerifierConfig()
        self.judge = judge
        self.pool = VerifierPool.from_config(self.cfg)

    def score_detailed(self, rows: list[PromptRow], texts: list[str]) -> list[VerifyResult]:
        return verify_batch(list(zip(rows, texts)), require_think=self.cfg.require_think,
                            timeout_s=self.cfg.timeout_s, pool=self.pool, judge=self.judge)

    def score(self, rows: list[PromptRow], texts: list[str]) -> list[float]:
        return [r.score for r in self.score_detailed(rows, texts)]

    def rewards(self, results: list[VerifyResult]) -> list[float]:
        """Correctness plus the configured format term."""
        return compose_rewards(results, self.cfg.reward)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
