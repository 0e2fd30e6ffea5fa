"""Answer-checking facts from the public graders issue 20 names besides math-verify: each case is
an input pair and the label the grader's own tests, docstrings or documented normalizer rules
assert. Only inputs and labels are kept here, never the graders' code.

A row is (response, reference, expected, debatable, note). `response` is the model text as
scored; where a grader reads a plain answer string, the row's table names a wrapper that puts it
in the output format that grader extracts from. `expected` is the source's own label; a case is
`debatable` when reasonable graders disagree on it (tolerances, unreduced fractions, percent as a
ratio, which of two stated answers counts, malformed markup), and then its note says why.
"""

from __future__ import annotations

BOX = "The final answer is $\\boxed{{{}}}$."
MINERVA = "Final Answer: The final answer is ${}$. I hope it is correct."
ANSWER_LINE = "We solve it step by step.\nAnswer: {}"
RAW = "{}"

LM_EVAL = "https://github.com/EleutherAI/lm-evaluation-harness/blob/"
MINERVA_SRC = LM_EVAL + "0348ed9/lm_eval/tasks/minerva_math/utils.py"
HENDRYCKS_SRC = LM_EVAL + "04bc51f/lm_eval/tasks/hendrycks_math/utils.py"
DSM = "https://github.com/deepseek-ai/DeepSeek-Math/blob/21cc5c6/evaluation/"
PRM = "https://github.com/openai/prm800k/blob/00811d6/prm800k/grading/grader.py"
VERL = "https://github.com/volcengine/verl/blob/"
OI = "https://github.com/allenai/open-instruct/blob/"
ORLHF = "https://github.com/OpenRLHF/OpenRLHF/blob/"
SE = "https://github.com/openai/simple-evals/blob/0637982/math_eval.py"

# (group, id prefix, source, wrapper, kind, rows)
TABLES: list[tuple[str, str, str, str, str, list[tuple]]] = [
    ("lm-eval-harness", "lm-eval-minerva",
     f"lm-evaluation-harness {MINERVA_SRC} get_unnormalized_answer + normalize_final_answer (shorthand TeX, SUBSTITUTIONS, "
     "REMOVED_EXPRESSIONS: a true label means both sides normalize alike) + is_equiv (sympy)",
     MINERVA, "math", [
         ("\\frac12", "\\frac{1}{2}", True, False, "\\fracab -> \\frac{a}{b}"),
         ("-\\frac23", "-\\frac{2}{3}", True, False, "few-shot answer in shorthand"),
         ("\\sqrt3", "\\sqrt{3}", True, False, "\\sqrta -> \\sqrt{a}"),
         ("2\\sqrt2", "2\\sqrt{2}", True, False, ""),
         ("100,000", "100000", True, False, "Normalize 100,000 -> 100000"),
         ("\\$1,000", "1000", True, False, ""),
         ("x = 5", "5", True, False, "the text after the last = is kept"),
         ("10 \\text{ cm}", "10", True, False, "cm removed"),
         ("5 \\text{ dollars}", "5", True, False, "dollars removed"),
         ("\\$5", "5", True, False, ""),
         ("30^\\circ", "30", True, False, ""),
         ("30^{\\circ}", "30", True, False, ""),
         ("12 \\text{ inches}", "12", True, False, ""),
         ("60 \\text{ mph}", "60", True, False, ""),
         ("4 \\text{ hours}", "4", True, False, ""),
         ("\\textbf{7}", "7", True, False, ""),
         ("3 \\text{ and } 5", "3, 5", True, False, "\\text{and} -> ,"),
         ("[2,5)", "[2,5)", True, False, "few-shot answer"),
         ("\\frac{-2}{3}", "-\\frac{2}{3}", True, False, "is_equiv: sympy difference simplifies to 0"),
         ("\\frac{1}{3}", "\\frac{1}{2}", False, False, ""),
         ("x = 4", "5", False, False, ""),
         ("10 \\text{ cm}", "100", False, False, ""),
         ("\\sqrt{2}", "\\sqrt{3}", False, False, ""),
         ("[2,5]", "[2,5)", False, False, ""),
         ("(2,5)", "[2,5)", False, False, ""),
         ("23", "24", False, False, ""),
     ]),
    ("lm-eval-harness", "lm-eval-hendrycks",
     f"lm-evaluation-harness {HENDRYCKS_SRC} strip_string / is_equiv (documented normalizations)",
     BOX, "math", [
         ("0.5", "\\frac{1}{2}", True, False, "manually change 0.5 -> \\frac{1}{2}"),
         (".5", "\\frac{1}{2}", True, False, "a leading . gets a 0"),
         ("1/2", "\\frac{1}{2}", True, False, "X/Y -> \\frac{X}{Y}"),
         ("2/3", "\\frac{2}{3}", True, False, ""),
         ("\\dfrac{3}{4}", "\\frac{3}{4}", True, False, "dfrac -> frac"),
         ("\\tfrac{3}{4}", "\\frac34", True, False, "tfrac -> frac; \\frac34 -> \\frac{3}{4}"),
         ("\\frac1{72}", "\\frac{1}{72}", True, False, "Even works with \\frac1{72}"),
         ("\\left( 1, 2 \\right)", "(1,2)", True, False, "\\left/\\right and spaces removed"),
         ("k = 7", "7", True, False, "get rid of k = at the beginning"),
         ("5 \\text{ cm}", "5", True, False, "remove units (on the right)"),
         ("50\\%", "50", True, False, "remove percentage"),
         ("\\$5", "5", True, False, "remove dollar signs"),
         ("90^\\circ", "90", True, False, "Remove circ (degrees)"),
         ("\\sqrt2", "\\sqrt{2}", True, False, "fix sqrt3 --> sqrt{3}"),
         ("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", True, False, ""),
         ("\\frac{2}{4}", "\\frac{1}{2}", False, True, "string match after normalizing: an unreduced fraction fails; equal as numbers"),
         ("10/4", "\\frac{5}{2}", False, True, "string match after normalizing: an unreduced fraction fails; equal as numbers"),
         ("\\frac{1}{3}", "\\frac{1}{2}", False, False, ""),
         ("k = 8", "7", False, False, ""),
         ("0.25", "\\frac{1}{2}", False, False, ""),
         ("5 \\text{ cm}", "6", False, False, ""),
         ("(1,3)", "(1,2)", False, False, ""),
     ]),
    ("deepseek-math", "deepseek-math",
     f"DeepSeek-Math {DSM}data_processing/answer_extraction.py strip_string + {DSM}eval/eval_utils.py math_equal",
     BOX, "math", [
         ("\\cfrac{1}{2}", "\\frac{1}{2}", True, False, "cfrac -> frac"),
         ("\\text{Monday}", "Monday", True, False, "an enclosing \\text{} is removed"),
         ("5\\text{ miles}", "5", True, False, "a trailing \\text{...} unit is removed"),
         ("18 \\mbox{ cm}", "18", True, False, "\\mbox{...} removed"),
         ("2.000", "2", True, False, "a.000 -> a"),
         ("3.50", "3.5", True, False, "numerical equal"),
         ("x\\in[2,5]", "[2,5]", True, False, "x\\in removed"),
         ("1,000", "1000", True, False, "commas dropped before float()"),
         ("x = 3", "3", True, False, "a short left side of = is dropped"),
         ("3", "x = 3", True, False, ""),
         ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True, False, "matrices compared entry by entry"),
         ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False, False, ""),
         ("infinity", "\\infty", True, False, "infinity -> \\infty"),
         ("(1, 2)", "(1,2)", True, False, "tuples compared part by part"),
         ("y = 2x + 1", "y - 2x = 1", True, True, "both equations moved to one side; graders differ on equations"),
         ("50\\%", "0.5", True, True, "include_percentage: reference/100, reference, reference*100 all accepted"),
         ("50", "0.5", True, True, "include_percentage: reference*100 accepted"),
         ("1.0005", "1", True, True, "isclose with abs_tol=1e-3"),
         ("0.3333", "\\frac{1}{3}", True, True, "numeric isclose with abs_tol=1e-3"),
         ("3.1416", "\\pi", True, True, "numeric isclose with abs_tol=1e-3"),
         ("3+2j", "3+2i", True, True, "j -> i when no i is written"),
         ("x = 4", "3", False, False, ""),
         ("1.01", "1", False, False, "outside abs_tol=1e-3"),
         ("0.3", "\\frac{1}{3}", False, False, "outside abs_tol=1e-3"),
         ("(1,3)", "(1,2)", False, False, ""),
     ]),
    ("prm800k", "prm800k",
     f"openai/prm800k {PRM} grade_answer (mathd normalize, _normalize, split_tuple, sympy)",
     BOX, "math", [
         ("1,000,000", "1000000", True, False, "properly formatted commas stripped"),
         ("(1, 2)", "(1,2)", True, False, ""),
         ("3 million", "3000000", False, True, "million -> *10^6, but an integer reference needs a strict match; equal as numbers"),
         ("2.5 billion", "2500000000", False, True, "billion -> *10^9, but an integer reference needs a strict match; equal as numbers"),
         ("5 meters", "5", True, False, "unit words removed"),
         ("3 hours", "3", True, False, ""),
         ("45 degrees", "45", True, False, ""),
         ("7 days", "7", True, False, ""),
         ("Evelyn", "\\text{Evelyn}", True, False, "enclosing \\text{} removed"),
         ("1 or 2", "1, 2", True, False, "' or ' -> ' , '"),
         ("3 and 4", "3, 4", True, False, "' and ' -> ' , '"),
         ("0.5", "\\frac{1}{2}", True, False, "mathd normalizer: 0.5 -> \\frac{1}{2}"),
         ("10\\%", "10", True, False, "% removed"),
         ("\\$10", "10", True, False, "$ removed"),
         ("5.0", "5", True, False, "an integral float becomes an int"),
         ("- 5", "-5", True, False, "'- ' -> '-'"),
         ("2\\sqrt{2}", "\\sqrt{8}", True, False, "sympy difference simplifies to 0"),
         ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", True, False, ""),
         ("(x+1)^2", "x^2+2x+1", True, False, ""),
         ("[1,2]", "(1,2)", False, False, "tuple/interval delimiters must match"),
         ("(1,2,3)", "(1,2)", False, False, "element counts must match"),
         ("(1,3)", "(1,2)", False, False, ""),
         ("6", "5", False, False, ""),
         ("7 3/4", "\\frac{31}{4}", True, True, "mixed number 7 3/4 -> 7+3/4; could be read as 7*3/4"),
         ("\\frac{3}{2}", "1\\frac{1}{2}", True, True, "the reference is a mixed number; could be read as 1*1/2"),
         ("2/4", "1/2", False, True, "fractions must match unreduced; equal as numbers"),
         ("\\frac{10}{2}", "5", False, True, "an integer reference needs a strict match, no simplification; equal as numbers"),
         ("2+3", "5", False, True, "an integer reference needs a strict match, no simplification; equal as numbers"),
         ("2^{10}", "1024", False, True, "'^{' is never evaluated (sympy may hang); equal as numbers"),
         ("3.14", "\\pi", False, True, "exact sympy difference, no tolerance"),
     ]),
    ("verl", "verl-canonical-int",
     f"verl {VERL}d69068d/tests/utils/reward_score/test_numeric_canonicalization_on_cpu.py test_is_equiv_boxed (verl/utils/reward_score/math.py is_equiv)",
     BOX, "math", [
         ("33", "033", True, False, ""),
         ("33", "+033", True, False, ""),
         ("0", "-0", True, False, ""),
         ("0", "000", True, False, ""),
     ]),
    ("verl", "verl-gsm8k",
     f"verl {VERL}945104d/verl/utils/reward_score/gsm8k.py extract_solution (strict: '#### ' then the number, commas and $ dropped)",
     RAW, "math", [
         ("Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", "72", True, False, ""),
         ("The total is 1,234 dollars.\n#### 1,234", "1234", True, False, "commas dropped"),
         ("She is 3 degrees below zero.\n#### -3", "-3", True, False, ""),
         ("Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 71 clips.\n#### 71", "72", False, False, ""),
         ("Altogether she sold 72 clips.", "72", False, True, "strict mode scores 0 without '#### '; flexible mode takes the last number"),
     ]),
    ("verl", "verl-dapo",
     f"verl {VERL}012542c/verl/utils/reward_score/math_dapo.py is_correct_minerva ('Answer:' line, normalize_final_answer, string match)",
     ANSWER_LINE, "math", [
         ("42", "42", True, False, ""),
         ("\\frac12", "\\frac{1}{2}", True, False, "shorthand \\frac normalized"),
         ("x = 7", "7", True, False, "the text after the last = is kept"),
         ("5 \\text{ cm}", "5", True, False, "cm and \\text{} removed"),
         ("1,000,000", "1000000", True, False, "digits-and-commas become digits"),
         ("\\boxed{14}", "14", True, False, "\\boxed{} unwrapped"),
         ("8", "7", False, False, ""),
         ("\\frac{1}{3}", "\\frac{1}{2}", False, False, ""),
         ("0.5", "\\frac{1}{2}", False, True, "normalized strings compared, no math equivalence"),
     ]),
    ("verl", "verl-prime",
     f"verl {VERL}35101b5/verl/utils/reward_score/prime_math/__init__.py compute_score (match_answer, grade_answer, then "
     f"{VERL}23d6292/verl/utils/reward_score/prime_math/grader.py math_equal: normalize, include_percentage, rel_tol 1e-4, pi)",
     BOX, "math", [
         ("50%", "50", True, False, "<number>% -> <number>"),
         ("\\$5", "5", True, False, ""),
         ("1, 2, 3", "1,2,3", True, False, "comma lists compared part by part"),
         ("(0.5, 2)", "(\\frac{1}{2}, 2)", True, False, "tuples compared part by part"),
         ("1.5", "\\frac{3}{2}", True, False, ""),
         ("1010_2", "1010", True, True, "a base subscript is dropped"),
         ("3.14", "\\pi", True, True, "tried with pi = 3.14 as well as math.pi"),
         ("3.14159", "\\pi", True, True, "rel_tol 1e-4"),
         ("0.5", "50", True, True, "include_percentage: reference/100 accepted"),
         ("(1, 3)", "(1, 2)", False, False, ""),
         ("1.6", "\\frac{3}{2}", False, False, ""),
         ("2, 3", "1,2,3", False, False, ""),
     ]),
    ("open-instruct", "open-instruct-gsm8k",
     f"open-instruct {OI}0ff2842/open_instruct/test_ground_truth_utils.py TestGSM8KVerifier.test_signed_number_extraction",
     RAW, "math", [
         ("Therefore the answer is -3", "-3", True, False, ""),
         ("Therefore the answer is +7", "+7", True, False, ""),
         ("Final answer: -3.5", "-3.5", True, False, ""),
         ("The result is \\boxed{-3}", "-3", True, False, "the test writes the box with a doubled backslash"),
         ("Therefore the answer is 3", "-3", False, False, ""),
         ("The answer is +7", "7", True, False, ""),
         ("The answer is 42.0", "42", True, False, ""),
         ("The answer is -3.0", "-3", True, False, ""),
     ]),
    ("open-instruct", "open-instruct-extract",
     f"open-instruct {OI}452ca27/open_instruct/test_answer_utils.py test_existing_api_and_extraction (extract_final_answer)",
     RAW, "math", [
         ("reasoning <answer> 42\n </answer> ignored", "42", True, False, "<answer> content wins"),
         ("reasoning </think> 17 ", "17", True, False, "text after </think>"),
         ("<|assistant|> 9 ", "9", True, False, "<|assistant|> tag dropped"),
         ("<answer></answer>", "42", False, False, "empty answer"),
         ("reasoning about 42 </think> 17 ", "42", False, False, "only the text after </think> is the answer"),
     ]),
    ("open-instruct", "open-instruct-puzzle",
     f"open-instruct {OI}0ff2842/open_instruct/test_ground_truth_utils.py TestPuzzleMatcherVerifier.test_puzzle_matcher_scenarios",
     RAW, "string", [
         ("<answer>London</answer>", "london", True, False, "case-insensitive"),
         ("<answer>Albert Einstein</answer>", "albert einstein", True, False, ""),
         ("Hello World", "hello world", True, False, "case-insensitive"),
         ("<think>This is complex</think>hello world", "hello world", True, False, "thinking section removed"),
         ("<answer>wrong</answer>", "42", False, False, ""),
         ("hello", "world", False, False, ""),
         ("", "42", False, False, "empty prediction"),
     ]),
    ("open-instruct", "open-instruct-math",
     f"open-instruct {OI}0ff2842/open_instruct/test_ground_truth_utils.py TestPuzzleMatcherVerifier (numeric rows) and "
     f"{OI}0039262/open_instruct/ground_truth_utils.py MathVerifier (boxed, Minerva line, last $...$; is_equiv or hendrycks_is_equiv)",
     RAW, "math", [
         ("<think>Let me think about this...</think>42", "42", True, False, ""),
         ("<answer>42</answer>", "42", True, False, ""),
         ("<think>Thinking...</think><answer>42</answer>", "42", True, False, ""),
         ("<think>Analysis...</think>Wrong Answer", "42", False, False, ""),
         ("42", "43", False, False, ""),
         ("The area of the square is $12$.", "12", True, False, "last $...$ answer"),
         ("Final Answer: The final answer is $\\frac12$. I hope it is correct.", "\\frac{1}{2}", True, False, "Minerva line"),
         ("So the probability is $\\boxed{0.5}$.", "\\frac{1}{2}", True, False, "hendrycks_is_equiv: 0.5 -> \\frac{1}{2}"),
         ("So the probability is $\\boxed{0.25}$.", "\\frac{1}{2}", False, False, ""),
     ]),
    ("openrlhf", "openrlhf-tuple",
     f"OpenRLHF {ORLHF}563c316/tests/test_math_utils.py (openrlhf/utils/math_utils.py grade_answer)",
     BOX, "math", [
         ("[1,2]", "(1,2)", False, False, "mismatched tuple delimiters rejected"),
         ("(1,2)", "[1,2]", False, False, "mismatched tuple delimiters rejected"),
         ("(1,2]", "(1,2)", False, False, "mismatched tuple delimiters rejected"),
         ("[1,2)", "[1,2]", False, False, "mismatched tuple delimiters rejected"),
         ("(1.0,2.0)", "(1,2)", True, False, "equivalent tuple with matching delimiters"),
     ]),
    ("openrlhf", "openrlhf-boxed",
     f"OpenRLHF {ORLHF}e1f4a21/tests/test_boxed_answer_extraction.py (extract_boxed_answer)",
     RAW, "math", [
         ("answer: \\boxed{42}", "42", True, False, ""),
         ("answer: \\fbox{42}", "42", True, False, "\\fbox is a box command"),
         ("answer: \\fbox{\\frac{1}{2}}", "\\frac{1}{2}", True, False, ""),
         ("answer: \\fbox{42", "42", False, True, "an unclosed box extracts nothing; the value is written"),
     ]),
    ("openrlhf", "openrlhf-reward",
     f"OpenRLHF {ORLHF}160b08e/examples/python/math_reward_func.py + openrlhf/utils/math_utils.py grade_answer ('Answer:' line first, then \\boxed{{}})",
     RAW, "math", [
         ("Let me compute 6 * 7.\nAnswer: 42", "42", True, False, ""),
         ("Let me compute 6 * 7.\nAnswer: 41\n", "42", False, False, ""),
         ("Adding the parts gives the result.\nAnswer: \\frac{3}{4}", "0.75", True, False, "sympy difference is 0"),
         ("The sum is \\boxed{1,000}.", "1000", True, False, "properly formatted commas stripped"),
         ("The length is \\boxed{5 \\text{ cm}}.", "5", True, False, "mathd: units after '\\text{ ' removed"),
         ("The probability is \\boxed{\\frac12}.", "\\frac{1}{2}", True, False, "mathd: \\frac12 -> \\frac{1}{2}"),
         ("\\boxed{5}\nAnswer: 6", "6", True, True, "the 'Answer:' line is read before the box; two different answers"),
     ]),
    ("simple-evals", "simple-evals-answer",
     f"openai/simple-evals {SE} QUERY_TEMPLATE / ANSWER_PATTERN (case-insensitive 'ANSWER:' line) + EQUALITY_TEMPLATE",
     RAW, "math", [
         ("The two numbers add to 17.\nANSWER: 17", "17", True, False, ""),
         ("The two numbers add to 17.\nanswer: 17", "17", True, False, "case-insensitive"),
         ("The two numbers add to 18.\nANSWER: 18", "17", False, False, ""),
         ("Divide 3 by 2.\nANSWER: $\\frac{3}{2}$", "1.5", True, False, ""),
     ]),
]


def grader_test_cases() -> list[dict]:
    out = []
    for group, prefix, source, wrapper, kind, rows in TABLES:
        for k, (resp, ref, expected, debatable, note) in enumerate(rows):
            response = wrapper.format(resp) if wrapper != RAW else resp
            out.append(dict(id=f"{prefix}-{k}", source=source, group=group, kind=kind, response=response,
                            reference=ref, expected=expected, debatable=debatable, note=note))
    return out
