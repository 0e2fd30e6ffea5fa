"""Which response tokens of a multi-segment trajectory enter the loss (k1.5 §2.6.2, partial rollouts).

A trajectory continued over several iterations (`rl.partial`) has segments sampled under different
weights: only the last one was sampled from pi_theta_i, the reference of the iteration it is
trained in (the engines had that iteration's weights when they generated it; a member that finished
earlier and waited for the rest of its group has its last segment from the iteration it finished
in, `rl.partial.buffer`). The §2.3.2 loss is
built on samples from pi_theta_i, so `objective.partial_segments` offers the paper's choice:

    exclude  only the last segment's tokens enter log pi_theta(y|x) and log pi_theta_i(y|x); the
             earlier segments stay in the sequence as context the model conditions on (the default)
    include  every response token, as for a single-segment response (earlier segments off-policy)

Why exclude is the default. As we read §2.6.2 (from the paper as we know it; its exact wording was
not available offline when this was written), k1.5 says only the current iteration's segment
needs on-policy computation, earlier segments being reused from the replay buffer, and that
segments can be excluded from the loss computation; it does not name a default. Exclude keeps the
loss on-policy: every trained token was sampled from pi_theta_i given its context, which is what
the §2.3.2 surrogate and its gradient identity (Eq. 3) assume. Include trains on tokens from older
policies with no importance correction. With exclude, a trajectory's reward still judges the whole
response; only the last segment is credited for it.

The learner sums log-probs over exactly the tokens the mask keeps (`rl.packing.Sample.target_mask`,
then `sequence_logprob_sums`), for the trained policy and for the reference alike, so
delta_j = log pi_theta - log pi_theta_i is over the same tokens. A single-segment trajectory gets
the same mask under both options.
"""

from __future__ import annotations

from typing import Literal, Sequence

PartialSegments = Literal["exclude", "include"]
PARTIAL_SEGMENTS: tuple[str, ...] = ("exclude", "include")


def first_trained_token(segment_ends: Sequence[int], mode: PartialSegments) -> int:
    """Response offset of the first token in the loss: the start of the last segment ("exclude"),
    or 0 ("include"). `segment_ends`: the response length after each segment (non-decreasing;
    empty for a response with no segment record, trained whole)."""
    if mode not in PARTIAL_SEGMENTS:
        raise ValueError(f"partial_segments must be one of {PARTIAL_SEGMENTS}, got {mode!r}")
    if any(e < 0 for e in segment_ends) or any(b < a for a, b in zip(segment_ends, segment_ends[1:])):
        raise ValueError(f"segment_ends must be non-negative and non-decreasing, got {list(segment_ends)}")
    if mode == "include" or len(segment_ends) < 2:
        return 0
    return segment_ends[-2]


def segment_loss_mask(segment_ends: Sequence[int], mode: PartialSegments) -> list[bool]:
    """Per response token (segment_ends[-1] of them): True where the token enters the loss."""
    start = first_trained_token(segment_ends, mode)
    n = segment_ends[-1] if segment_ends else 0
    return [j >= start for j in range(n)]


def trained_token_share(segment_ends_per_response: Sequence[Sequence[int]], mode: PartialSegments) -> float:
    """Share of the response tokens that enter the loss, over a batch (the issue's "share of tokens
    trained with the exclude option"); 1.0 for an empty batch."""
    total = sum(e[-1] for e in segment_ends_per_response if e)
    kept = sum(e[-1] - first_trained_token(e, mode) for e in segment_ends_per_response if e)
    return kept / total if total else 1.0
