"""Repeat detection for partial rollouts (k1.5 §2.6.2): a generation whose tail repeats the same
n-gram over and over is stopped early instead of running to the length cap, and may be given a
reward penalty (`rollout.partial.repeat_penalty`).

The check runs between segments, on the token ids the driver already holds: after each segment
that ended at its token budget (finish reason "length"), the replay buffer asks `RepeatRule.find`
whether the response's tail is a loop; if so the trajectory is final and cut, like one that hit
the length cap. A loop therefore costs at most one segment (`rollout.partial.segment_tokens`) of
generation before it is stopped.

Why not a vLLM logits processor: vLLM 0.32's V1 engine takes only batch-level processor classes,
fixed when the engine is built (`LLM(logits_processors=[...])`), and a processor can stop a
sequence only by forcing EOS. That puts a token the policy did not sample into the response (its
log-prob, reported raw, would be trained on as if sampled) and makes the loop look like a response
that ended itself ("stop"), which the verifier would then score. Stopping between segments keeps
every trained token a sampled one, and the stop visible as `repeat_stop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class TailRepeat:
    """What `RepeatRule.find` found at the end of a token sequence."""

    period: int  # length of the repeating unit (the n-gram), in tokens
    copies: int  # whole consecutive copies of it at the end
    span: int  # tokens of the periodic tail (copies * period, plus a partial copy at its start)


def tail_repeat(ids: Sequence[int], max_ngram: int, min_count: int, min_tokens: int) -> TailRepeat | None:
    """The shortest unit u (1 <= p = len(u) <= max_ngram) such that `ids` ends with a run of copies
    of u at least max(min_count * p, min_tokens) tokens long -- at least `min_count` whole copies;
    None if there is none.

    Only the tail counts: a loop the generation has already left, or the same n-gram scattered
    through the text, does not fire. `min_tokens` keeps short natural runs ("0000" in a number, a
    "----" rule) from firing for small units: with min_count 4 and min_tokens 64 a single token must
    repeat 64 times, a 16-token unit 4 times.

    Cost: for each period p, a backward scan of at most max(min_count * p, min_tokens) tokens, so
    O(max_ngram * max(min_count * max_ngram, min_tokens)) per call whatever the sequence length
    (plus one scan of the tail when it fires, to measure the whole loop).
    """
    if max_ngram < 1 or min_count < 2 or min_tokens < 1:
        raise ValueError(f"need max_ngram >= 1, min_count >= 2, min_tokens >= 1; got {max_ngram}, {min_count}, "
                         f"{min_tokens}")
    n = len(ids)
    if n < min_tokens:
        return None
    for p in range(1, min(max_ngram, n // min_count) + 1):
        need = max(min_count * p, min_tokens)  # <= n: the periodic tail the rule asks for
        # ids[t] == ids[t - p] for the last `run` positions <=> the last run + p tokens are p-periodic
        run, t = 0, n - 1
        while t - p >= 0 and run + p < need and ids[t] == ids[t - p]:
            run, t = run + 1, t - 1
        span = run + p
        if span >= need:
            # The scan stopped at `need`: count the whole tail for the record.
            while t - p >= 0 and ids[t] == ids[t - p]:
                run, t = run + 1, t - 1
            span = run + p
            return TailRepeat(p, span // p, span)
    return None


@dataclass(frozen=True)
class RepeatRule:
    """`rollout.partial`'s repeat settings, as the replay buffer applies them."""

    max_ngram: int
    min_count: int
    min_tokens: int

    def __post_init__(self) -> None:
        tail_repeat([], self.max_ngram, self.min_count, self.min_tokens)  # validates the settings

    def find(self, ids: Sequence[int]) -> TailRepeat | None:
        return tail_repeat(ids, self.max_ngram, self.min_count, self.min_tokens)
