"""A response cut at max_tokens never earns a positive reward, whatever its text holds: it is not
verified, scores 0 with reason `truncated`, and gets `reward.truncated_reward` (<= 0)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prompts.schema import PromptRow
from rl.rewards import Reason, VerifierConfig
from rl.rewards.config import RewardConfig
from rl.scoring import Scorer

ROW = PromptRow(id="t1", prompt=[{"role": "user", "content": "Compute 2+3"}], answer="5")
FINISHED = "<think>\n2+3=5\n</think>\n\\boxed{5}"
CUT = "<think>\n2+3=5, so \\boxed{5}. Check again: 5-3=2 ok. Check again: 5-3"  # hit max_tokens


@pytest.fixture(scope="module")
def scorer():
    with Scorer(VerifierConfig(num_workers=1, reward=RewardConfig(truncated_reward=-0.25))) as s:
        yield s


def test_truncated_response_scores_zero_even_with_a_right_box(scorer):
    rows = [ROW] * 3
    res = scorer.score_detailed(rows, [FINISHED, CUT, FINISHED], ["stop", "length", "length"])
    assert [r.score for r in res] == [1.0, 0.0, 0.0]
    assert [r.reason for r in res] == [Reason.CORRECT, Reason.TRUNCATED, Reason.TRUNCATED]
    assert scorer.rewards(res) == [1.0, -0.25, -0.25]
    # without finish reasons (e.g. a scored text file) nothing is taken as truncated
    assert scorer.score([ROW], [FINISHED]) == [1.0]


def test_truncated_reward_defaults_to_zero_and_is_never_positive():
    assert RewardConfig().truncated_reward == 0.0
    with pytest.raises(ValidationError, match="truncated_reward"):
        RewardConfig(truncated_reward=0.1)


def test_finish_reasons_must_pair_with_responses(scorer):
    with pytest.raises(ValueError, match="2 finish reasons for 1 responses"):
        scorer.score_detailed([ROW], [FINISHED], ["stop", "stop"])
