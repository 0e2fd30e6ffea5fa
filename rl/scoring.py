"""The RL loop's and evaluation's view of the verifiers: (rows, responses) -> results + rewards.

One long-lived `VerifierPool` per run (killable workers, per-item deadlines, batched), with the
verifier chosen per row by `row.verifier` inside `rl.rewards`. Rewards are composed from the
results by config (correctness + optional format term); the length penalty is the loop's.
"""

from __future__ import annotations

from prompts.schema import PromptRow
from rl.rewards import JudgeVerifier, VerifierConfig, VerifierPool, VerifyResult, compose_rewards, verify_batch
from rl.rewards.base import Reason

ScoreResult = VerifyResult  # .score in [0, 1], .reason, .metrics


class Scorer:
    def __init__(self, cfg: VerifierConfig | None = None, judge: JudgeVerifier | None = None):
        self.cfg = cfg or VerifierConfig()
        self.judge = judge
        self.pool = VerifierPool.from_config(self.cfg)

    def score_detailed(self, rows: list[PromptRow], texts: list[str],
                       finish_reasons: list[str] | None = None) -> list[VerifyResult]:
        """One result per response. With `finish_reasons` (the engine's), a response cut at
        max_tokens ("length") is not verified at all: it scores 0 with reason `truncated`, so a
        \\boxed{} written before the cut never earns a reward (k1.5 long-CoT: a truncated
        trajectory is unfinished, not answered)."""
        if finish_reasons is not None and len(finish_reasons) != len(texts):
            raise ValueError(f"{len(finish_reasons)} finish reasons for {len(texts)} responses")
        cut = [fr == "length" for fr in finish_reasons] if finish_reasons is not None else [False] * len(texts)
        todo = [i for i, c in enumerate(cut) if not c]
        done = verify_batch([(rows[i], texts[i]) for i in todo], require_think=self.cfg.require_think,
                            timeout_s=self.cfg.timeout_s, pool=self.pool, judge=self.judge) if todo else []
        out = [VerifyResult(0.0, Reason.TRUNCATED, {"format_ok": False}) for _ in texts]
        for i, r in zip(todo, done):
            out[i] = r
        return out

    def score(self, rows: list[PromptRow], texts: list[str], finish_reasons: list[str] | None = None) -> list[float]:
        return [r.score for r in self.score_detailed(rows, texts, finish_reasons)]

    def rewards(self, results: list[VerifyResult]) -> list[float]:
        """Correctness plus the configured format term."""
        return compose_rewards(results, self.cfg.reward)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
