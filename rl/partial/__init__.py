"""Kimi k1.5 partial rollouts (arXiv 2501.12599 §2.6.2): every iteration generates at most
`rollout.partial.segment_tokens` new tokens per trajectory; an unfinished trajectory waits in a
replay buffer and is continued first in the next iteration, under the then-current weights.

    config.py  `PartialRolloutConfig` (`rollout.partial`)
    buffer.py  `Trajectory`, `ReplayBuffer`: segment bookkeeping, group completion, truncation at
               max_segments, JSON state for the checkpoint
    repeat.py  `tail_repeat` / `RepeatRule`: stop a generation whose tail loops

Which tokens of a multi-segment trajectory are trained (`objective.partial_segments`) is decided by
`rl.mirror_descent.segments`. The RL loop's step that drives the buffer is `rl.steps.partial_rollout`
(rl/train.py calls it instead of `rl.steps.rollout` while rollout.partial is on). Importing this
package has no side effects and needs neither torch nor an engine.
"""

from .buffer import PartialSettings, ReplayBuffer, SegmentRequest, Trajectory, released_metrics, restore_buffer
from .config import PartialRolloutConfig
from .repeat import RepeatRule, TailRepeat, tail_repeat

__all__ = [
    "PartialRolloutConfig",
    "PartialSettings",
    "RepeatRule",
    "ReplayBuffer",
    "SegmentRequest",
    "TailRepeat",
    "Trajectory",
    "released_metrics",
    "restore_buffer",
    "tail_repeat",
]
