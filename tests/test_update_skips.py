"""Silent skips become visible (issue 16): the mini-batch plan no longer drops the update when
there are fewer kept groups than learner ranks, and an iteration without an optimizer step says
why in its metrics and log line.

    pytest tests/test_update_skips.py -q
"""

from __future__ import annotations

import pytest

from rl.learner import plan_minibatches
from rl.rollout_stats import SKIP_REASONS, skip_message, skip_reason


@pytest.mark.parametrize("n_groups, ranks, wanted, expected", [
    (0, 1, 2, []),                                       # nothing kept: the only case without an update
    (1, 2, 2, [[0]]),                                    # fewer groups than ranks: rank 1 idles (was: no update)
    (3, 4, 2, [[0, 1, 2]]),                              # rank 3 idles
    (3, 2, 2, [[0, 1, 2]]),                              # 3 // 2 = 1 mini-batch, both ranks busy
    (4, 2, 2, [[0, 1], [2, 3]]),                         # enough for all: as configured
    (5, 1, 2, [[0, 1], [2, 3, 4]]),                      # bounds round(2.5) = 2
    (7, 2, 4, [[0, 1], [2, 3, 4], [5, 6]]),              # 7 // 2 = 3 < 4; bounds 0, 2, 5, 7
    (8, 2, 2, [[0, 1, 2, 3], [4, 5, 6, 7]]),
])
def test_plan_minibatches(n_groups, ranks, wanted, expected):
    plan = plan_minibatches(list(range(n_groups)), ranks, wanted)
    assert plan == expected
    assert sorted(g for mb in plan for g in mb) == list(range(n_groups))  # every kept group trains once


def stats(steps: int, skipped: int) -> list[dict]:
    return [{"steps": steps, "skipped_steps": skipped}, {"steps": steps, "skipped_steps": skipped}]


@pytest.mark.parametrize("groups_kept, learner_stats, reason", [
    (0, stats(0, 0), "no_groups"),
    (3, stats(0, 2), "non_finite"),  # both steps dropped
    (3, stats(1, 1), None),          # one of two dropped: the policy still moved
    (3, stats(2, 0), None),
])
def test_skip_reason(groups_kept, learner_stats, reason):
    assert skip_reason(groups_kept, learner_stats) == reason
    assert reason is None or reason in SKIP_REASONS


def test_skip_message_names_the_reason_or_the_skipped_steps():
    base = {"skipped_steps": 0, "optimizer_steps": 2, "skip_reason": None}
    assert skip_message(5, base) is None
    msg = skip_message(5, {**base, "skip_reason": "no_groups", "optimizer_steps": 0})
    assert msg == "[iter 5] no update: no prompt group was kept (all filtered or too long)"
    msg = skip_message(6, {**base, "skipped_steps": 1, "optimizer_steps": 1})
    assert msg == "[iter 6] 1 of 2 optimizer steps skipped: non-finite loss or reward"
