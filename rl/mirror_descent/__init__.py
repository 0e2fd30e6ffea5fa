"""Pure mathematical core of the Kimi k1.5 RL objective (arXiv 2501.12599, §2.3.2-§2.3.3).

No model, no process group: the learner computes log-probs and global normalisers and calls these.
Every function takes tensors on any device and returns tensors on that device; none makes a
tensor anywhere else (tests/test_device.py runs them on `meta` and records every op's output).
`segments` decides, on plain lists before any tensor exists, which response tokens of a
multi-segment (partial-rollout, §2.6.2) trajectory enter the loss.
"""

from rl.mirror_descent.groups import GroupIndex
from rl.mirror_descent.length_penalty import (
    CORRECT_ATOL,
    is_correct,
    length_penalty,
    length_penalty_weight,
)
from rl.mirror_descent.logprobs import entropy_from_logits, sequence_logprob_sums
from rl.mirror_descent.loss import (
    BASELINES,
    MirrorDescentLossInputs,
    MirrorDescentLossOutputs,
    mirror_descent_loss,
)
from rl.mirror_descent.segments import (
    PARTIAL_SEGMENTS,
    first_trained_token,
    segment_loss_mask,
    trained_token_share,
)

__all__ = [
    "BASELINES",
    "CORRECT_ATOL",
    "GroupIndex",
    "MirrorDescentLossInputs",
    "MirrorDescentLossOutputs",
    "PARTIAL_SEGMENTS",
    "entropy_from_logits",
    "first_trained_token",
    "is_correct",
    "length_penalty",
    "length_penalty_weight",
    "mirror_descent_loss",
    "segment_loss_mask",
    "sequence_logprob_sums",
    "trained_token_share",
]
