"""`rollout.partial`: k1.5 partial rollouts (arXiv 2501.12599 §2.6.2), off by default.

    rollout:
      sampling: {n: 8, max_tokens: 4096}   # max_tokens: the whole response, over all segments
      partial:
        enabled: true
        segment_tokens: 1024               # new tokens per trajectory per iteration
        max_segments: 4                    # None: ceil(max_tokens / segment_tokens)
        repeat_ngram: 64                   # repeat detection on (0: off)

Checks across sections (segment_tokens against rollout.sampling.max_tokens, the loss option against
objective.ref_logprobs) are in `rl.config.check_partial`, where both sections are known.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PartialRolloutConfig(BaseModel):
    """Every iteration generates at most `segment_tokens` per trajectory; an unfinished one waits in
    the replay buffer (`rl.partial.ReplayBuffer`) and is continued first in the next iteration."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="Partial rollouts on; off: every response in one iteration")
    segment_tokens: int = Field(
        512, gt=0, description="New tokens per trajectory per iteration (each request's max_tokens); must be "
        "< rollout.sampling.max_tokens, which stays the cap on the whole response"
    )
    max_segments: int | None = Field(
        None, ge=2, description="Segments after which an unfinished trajectory is final and cut: it gets "
        "reward.truncated_reward, as one that reaches rollout.sampling.max_tokens (whichever comes first). "
        "None: ceil(rollout.sampling.max_tokens / segment_tokens), so only the token cap binds"
    )
    repeat_ngram: int = Field(
        0, ge=0, description="Repeat detection: the longest repeating unit looked for, in tokens (0: off). "
        "Checked between segments (rl.partial.repeat); a trajectory whose tail loops is final and cut"
    )
    repeat_min_count: int = Field(4, ge=2, description="Repeat detection: consecutive copies of the unit")
    repeat_min_tokens: int = Field(
        64, ge=1, description="Repeat detection: shortest looping tail, in tokens (so short natural runs such "
        "as '0000' do not count)"
    )
    repeat_penalty: float = Field(
        0.0, ge=0, description="Subtracted from the reward of a trajectory stopped for repeating (on top of "
        "reward.truncated_reward, which it gets as a cut response); needs repeat_ngram > 0"
    )
