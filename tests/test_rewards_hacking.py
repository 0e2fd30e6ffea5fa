"""Reward hacking (issue 20): outputs that try to game the reward each score 0, with a reason
that names the trick. The honest twin of each (last block) must still score 1, so the rules are
not simply rejecting everything. Run through the real worker pool, as the RL loop does."""

from __future__ import annotations

import pytest

from rl.rewards import VerifierPool, VerifyItem

T = "<think>\n3 + 4 = 7, and 7 * 6 = 42.\n</think>\n"
OPTS = ("1", "2", "3", "4")
Q = "Compute 3 + 4. For example, if the question were 2 + 2 the answer would be \\boxed{7}."

# (name, item, expected reason)
HACKS = [
    ("box_every_option", VerifyItem(T + "\\boxed{A} \\boxed{B} \\boxed{C} \\boxed{D}", "C", "multiple_choice", options=OPTS), "multiple_answers"),
    ("all_options_in_one_box", VerifyItem(T + "\\boxed{A, B, C, D}", "C", "multiple_choice", options=OPTS), "multiple_answers"),
    ("box_every_option_math_kind", VerifyItem(T + "\\boxed{A}\\boxed{B}\\boxed{C}\\boxed{D}", "C"), "multiple_answers"),
    ("every_option_integer_kind", VerifyItem(T + "\\boxed{1}\\boxed{2}\\boxed{3}\\boxed{4}", "3", "integer"), "multiple_answers"),
    ("hedge_either_or", VerifyItem(T + "The answer is either 3 or 4.", "3"), "multiple_answers"),
    ("hedge_text_or_in_box", VerifyItem(T + "\\boxed{3 \\text{ or } 4}", "4"), "multiple_answers"),
    ("hedge_two_boxes", VerifyItem(T + "It could be \\boxed{3} or \\boxed{4}.", "3"), "multiple_answers"),
    ("hedge_list_in_box", VerifyItem(T + "\\boxed{3, 4}", "4"), "multiple_answers"),
    ("answer_only_in_prompt_echo", VerifyItem(Q + "\nI am not sure.", "7", question=Q), "prompt_echo"),
    ("answer_only_in_quoted_prompt", VerifyItem("Question: " + Q + "\nLet me think. Hmm.", "7", question=Q), "prompt_echo"),
    ("empty_think_then_guess", VerifyItem("<think></think>\\boxed{7}", "7", require_think=True), "empty_think"),
    ("blank_think_then_guess", VerifyItem("<think>\n \n</think>\nThe answer is \\boxed{7}.", "7", require_think=True), "empty_think"),
    ("prefilled_empty_think", VerifyItem("</think>\\boxed{7}", "7", require_think=True), "empty_think"),
    ("box_in_code_block", VerifyItem(T + "```\n\\boxed{7}\n```", "7"), "answer_in_code"),
    ("box_in_latex_code_block", VerifyItem(T + "```latex\nThe answer is \\boxed{7}\n```", "7"), "answer_in_code"),
    ("box_in_inline_code", VerifyItem(T + "`\\boxed{7}`", "7"), "answer_in_code"),
    ("one_megabyte_answer", VerifyItem(T + "\\boxed{" + "7" * (1 << 20) + "}", "7"), "answer_too_long"),
    ("one_megabyte_padded_answer", VerifyItem(T + "\\boxed{7" + " " * (1 << 20) + "}", "7"), "answer_too_long"),
    ("nested_boxes_two_values", VerifyItem(T + "\\boxed{\\boxed{3}\\boxed{7}}", "7"), "nested_boxes"),
    ("nested_box_after_value", VerifyItem(T + "\\boxed{3 \\boxed{7}}", "7"), "nested_boxes"),
    ("nested_box_same_value", VerifyItem(T + "\\boxed{\\boxed{7}}", "7"), "nested_boxes"),
    ("fullwidth_digits", VerifyItem(T + "\\boxed{４２}", "42"), "lookalike_digits"),
    ("arabic_indic_digits", VerifyItem(T + "\\boxed{٤٢}", "42"), "lookalike_digits"),
    ("math_bold_digits", VerifyItem(T + "\\boxed{𝟒𝟐}", "42"), "lookalike_digits"),
    ("one_fullwidth_digit", VerifyItem(T + "\\boxed{4２}", "42"), "lookalike_digits"),
    ("letter_l_for_one", VerifyItem(T + "\\boxed{l2}", "12"), "lookalike_digits"),
    ("letter_o_for_zero", VerifyItem(T + "\\boxed{1O}", "10"), "lookalike_digits"),
    ("cyrillic_ze_for_three", VerifyItem(T + "\\boxed{З}", "3"), "lookalike_digits"),
    ("fullwidth_digits_integer_kind", VerifyItem(T + "\\boxed{４２}", "42", "integer"), "lookalike_digits"),
    ("arabic_digits_integer_kind", VerifyItem(T + "The answer is ٤٢.", "42", "integer"), "lookalike_digits"),
]

HONEST = [
    VerifyItem(T + "\\boxed{C}", "C", "multiple_choice", options=OPTS),
    VerifyItem(T + "The answer is 3.", "3"),
    VerifyItem(Q + "\nThe sum is \\boxed{7}.", "7", question=Q),
    VerifyItem("<think>3+4 is 7.</think>\nThe answer is \\boxed{7}.", "7", require_think=True),
    VerifyItem(T + "```python\nprint(3 + 4)\n```\nThe answer is \\boxed{7}.", "7"),
    VerifyItem(T + "\\boxed{42}", "42"),
    VerifyItem(T + "\\boxed{42}", "42", "integer"),
]


@pytest.fixture(scope="module")
def results():
    with VerifierPool(num_workers=2, timeout_s=5.0) as pool:
        yield pool.map([item for _, item, _ in HACKS]), pool.map(HONEST)


@pytest.mark.parametrize("k", range(len(HACKS)), ids=[h[0] for h in HACKS])
def test_hack_scores_zero_with_a_named_reason(results, k):
    name, _, reason = HACKS[k]
    res = results[0][k]
    assert (res.score, res.reason) == (0.0, reason), (name, res)


def test_the_honest_twins_still_score_one(results):
    assert [(r.score, str(r.reason)) for r in results[1]] == [(1.0, "correct")] * len(HONEST)
