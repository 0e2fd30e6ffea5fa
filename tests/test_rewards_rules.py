"""Integer, multiple-choice and string verifiers, answer extraction, reward composition, and
per-row verifier selection. Verifiers are called through the pool except where a test is about
the pure extraction functions."""

from __future__ import annotations

import pytest

from prompts.schema import PromptRow
from rl.rewards import RewardConfig, VerifierConfig, VerifierPool, VerifyItem, compose_rewards, verify_batch
from rl.rewards.extract import extract_answer, find_boxes

GSM_REF = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
T = "<think>9 eggs, 2 dollars each: 9 * 2 = 18. Check 18 / 2 = 9.</think>\n"

INTEGER = [
    (T + "The answer is \\boxed{18}.", GSM_REF, 1.0, "correct"),
    (T + "The answer is 18.", GSM_REF, 1.0, "correct"),
    (T + "She makes $18 every day.", "18", 1.0, "correct"),
    (T + "The answer is 18.0", "18", 1.0, "correct"),
    (T + "\\boxed{9 \\times 2 = 18}", "18", 1.0, "correct"),
    (T + "\\boxed{18 \\text{ dollars}}", "#### 18", 1.0, "correct"),
    (T + "The answer is 18 dollars for 9 eggs.", "18", 1.0, "correct"),
    (T + "\\boxed{1,080}", "#### 1,080", 1.0, "correct"),
    (T + "\\boxed{-3}", "#### -3", 1.0, "correct"),
    (T + "\\boxed{3}", "#### -3", 0.0, "wrong"),
    (T + "The answer is 18.5", "18", 0.0, "wrong"),
    (T + "The answer is 19.", GSM_REF, 0.0, "wrong"),
    (T + "It is 18 or 20.", "18", 0.0, "multiple_answers"),  # no answer phrase, but a stated hedge
    (T + "The answer is 18 or 20.", "18", 0.0, "multiple_answers"),
    (T + "\\boxed{18}, \\boxed{20}", "18", 0.0, "multiple_answers"),
    (T + "I don't know.", "18", 0.0, "no_answer"),
    ("<think>thinking about 18 forever", "18", 0.0, "unterminated_think"),
    (T + "\\boxed{18}", "eighteen", 0.0, "reference_unparsable"),
]

OPTIONS = ("4", "6", "$2\\sqrt{3}$", "none of these")
MULTIPLE_CHOICE = [
    (T + "The answer is \\boxed{B}.", "B", 1.0, "correct"),
    (T + "The answer is (B).", "B", 1.0, "correct"),
    (T + "\\boxed{\\text{(B)}}", "(B)", 1.0, "correct"),
    (T + "Answer: B) 6", "B", 1.0, "correct"),
    (T + "\\boxed{6}", "B", 1.0, "correct"),  # the option's text maps to its letter
    (T + "\\boxed{B}", "6", 1.0, "correct"),  # a reference given as option text
    (T + "\\boxed{none of these}", "D", 1.0, "correct"),
    (T + "\\boxed{C}", "B", 0.0, "wrong"),
    (T + "\\boxed{4}", "B", 0.0, "wrong"),
    (T + "\\boxed{A}\\boxed{B}\\boxed{C}\\boxed{D}", "B", 0.0, "multiple_answers"),
    (T + "\\boxed{A, B, C, D}", "B", 0.0, "multiple_answers"),
    (T + "The answer is (A) or (B).", "B", 0.0, "multiple_answers"),
    (T + "\\boxed{B}. Hmm, no: the correct choice is \\boxed{C}.", "C", 1.0, "correct"),
    (T + "\\boxed{K}", "B", 0.0, "no_answer"),  # not one of the 4 options
]

STRING = [
    (T + "The capital is \\boxed{\\text{Paris}}.", "Paris", 1.0, "correct"),
    (T + "Answer: paris.", "Paris", 1.0, "correct"),
    (T + "<answer> New  York </answer>", "new york", 1.0, "correct"),
    (T + "\\boxed{London}", "Paris", 0.0, "wrong"),
    (T + "\\boxed{Paris} \\boxed{London}", "Paris", 0.0, "multiple_answers"),
    # A response that is nothing but the answer (open-instruct's string matcher tests).
    ("Hello World", "hello world", 1.0, "correct"),
    ("<think>This is complex</think>hello world", "hello world", 1.0, "correct"),
    ("Hello World", "hello", 0.0, "wrong"),
    (T + "I am not sure.\nMaybe it is Paris.", "Paris", 0.0, "no_answer"),  # two lines: not a bare answer
]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool.from_config(VerifierConfig(num_workers=2, timeout_s=5.0)) as p:
        yield p


@pytest.mark.parametrize(
    "kind,cases", [("integer", INTEGER), ("multiple_choice", MULTIPLE_CHOICE), ("string", STRING)]
)
def test_rule_verifier_cases(pool, kind, cases):
    items = [VerifyItem(resp, ref, kind=kind, options=OPTIONS if kind == "multiple_choice" else ()) for resp, ref, _, _ in cases]
    got = [(r.score, str(r.reason)) for r in pool.map(items)]
    want = [(s, why) for _, _, s, why in cases]
    bad = [(c[0][-50:], c[1], g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert not bad, bad


def test_verifier_chosen_per_row_and_options_from_metadata(pool):
    def row(i: str, answer: str, verifier: str, **meta) -> PromptRow:
        return PromptRow(id=i, prompt=[{"role": "user", "content": "q"}], answer=answer, verifier=verifier, metadata=meta)

    rows = [
        row("m", "\\frac{1}{2}", "math"),
        row("i", "#### 18", "integer"),
        row("c", "C", "multiple_choice", options={"A": "1", "B": "2", "C": "0.5"}),
        row("s", "Paris", "string"),
    ]
    # The same response means different things to different verifiers.
    responses = [T + "\\boxed{0.5}", T + "\\boxed{18}", T + "\\boxed{0.5}", T + "\\boxed{paris}"]
    assert [r.score for r in verify_batch(list(zip(rows, responses)), pool=pool)] == [1.0, 1.0, 1.0, 1.0]
    as_string = [row(f"x{k}", r.answer, "string") for k, r in enumerate(rows[:1])]
    assert verify_batch([(as_string[0], responses[0])], pool=pool)[0].score == 0.0


def test_extraction_units():
    ex = extract_answer("<think>\\boxed{1}</think> Maybe \\boxed{2}, final: \\boxed{3}")
    assert (ex.parts, ex.method, ex.format_ok) == (["3"], "box", True)
    ex = extract_answer("\\boxed{3} or \\boxed{4}")
    assert ex.parts == ["3", "4"]
    ex = extract_answer("x = \\boxed{1}, y = \\boxed{2}")
    assert ex.parts == ["1", "2"]
    ex = extract_answer("<think>a</think><answer>7</answer>")
    assert (ex.parts, ex.method, ex.format_ok) == (["7"], "answer_tag", True)
    assert extract_answer("<think>never closed \\boxed{3}").status == "unterminated_think"
    assert extract_answer("no think tags \\boxed{3}", require_think=True).status == "unterminated_think"
    assert extract_answer("\\boxed{" + "9" * 2000 + "}").status == "answer_too_long"
    assert find_boxes("\\boxed{\\{1,2\\}} and \\boxed{a{b}c}") == [(0, 15, "\\{1,2\\}"), (20, 33, "a{b}c")]
    assert find_boxes("\\boxed{unclosed {") == []


def test_extraction_own_turn_header_and_text_in_math():
    # The response's own "<|assistant|>" header opens the answer; a template token later is a leak.
    assert extract_answer("<|assistant|> 9 ").parts == ["9"]
    assert extract_answer("<|im_start|>assistant\nThe answer is 7<|im_end|>").parts == ["7"]
    assert extract_answer("The answer is 5.<|im_start|>assistant\nThe answer is 7").parts == ["5"]
    # Words inside \text{} do not make a $...$ pair money: the Minerva line keeps its list.
    ex = extract_answer("Final Answer: The final answer is $3 \\text{ and } 5$. I hope it is correct.")
    assert ex.parts == ["3 \\text{ and } 5"]
    assert extract_answer("The total is $18, which covers 3 tickets at $4 each.").parts == ["18"]


def test_reward_composition_weights_format():
    items = [
        VerifyItem("<think>w</think> \\boxed{5}", "5"),  # right, well formatted
        VerifyItem("<think>w</think> The answer is 5.", "5"),  # right, not boxed
        VerifyItem("<think>w</think> \\boxed{6}", "5"),  # wrong, well formatted
        VerifyItem("<think>w never closed \\boxed{5}", "5"),  # unterminated
    ]
    with VerifierPool(num_workers=1) as p:
        results = p.map(items)
    assert compose_rewards(results, RewardConfig()) == [1.0, 1.0, 0.0, 0.0]
    assert compose_rewards(results, RewardConfig(correct_weight=1.0, format_weight=0.2)) == [1.2, 1.0, 0.2, 0.0]


def test_config_rejects_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        VerifierConfig.model_validate({"num_workers": 2, "length_penalty": 0.1})
