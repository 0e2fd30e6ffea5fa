"""Build tests/data/verifier_corpus.jsonl: answer-checking cases, each with its source (issue 20).

    python experiments/verifier_corpus/build.py --math-verify /path/to/Math-Verify > tests/data/verifier_corpus.jsonl

Sources, all collected as facts (an input and its expected label), never as code:
- math-verify's own pytest parametrize tables (huggingface/Math-Verify tests/*.py), read with
  `ast.literal_eval`; the gold string becomes our reference with `$`/`$$` delimiters removed
  (a long gold solution is reduced to its last \\boxed{}).
- OpenAI simple-evals' EQUALITY_TEMPLATE worked examples (math_eval / common.py).
- Qwen2.5-Math evaluation/grader.py `_test_math_equal` example pairs.
- The MATH test set and GSM8K test set (docs/INSTALL.md, "Public data"): the reference is the
  dataset's answer; responses are written by us in the formats models use (with and without a
  box), the wrong ones carry another problem's answer (pairs that math-verify calls equal are
  dropped).
- Our own adversarial cases (adversarial.py): issue 20's groups and the reward-hacking suite.
- The other graders' tests and documented normalizer rules (graders.py): lm-evaluation-harness
  (minerva_math, hendrycks_math), DeepSeek-Math, PRM800K, verl (math, gsm8k, DAPO, PRIME),
  open-instruct, OpenRLHF and simple-evals' answer line. Appended last, so earlier ids keep their rows.

A case: id, source, group, kind, response, reference, expected (bool), debatable (bool), note,
and optionally question / require_think / options.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.verifier_corpus.adversarial import ADVERSARIAL  # noqa: E402
from experiments.verifier_corpus.graders import grader_test_cases  # noqa: E402
from rl.rewards.extract import find_boxes  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MV_URL = "https://github.com/huggingface/Math-Verify/blob/5d148cf/tests/"
# Test functions whose labels depend on a non-default comparison setting (precision, strict,
# set-relation comparison) or on relational semantics graders disagree about.
MV_DEBATABLE_TESTS = {"test_relations_math", "test_set_rel_assymetry", "test_strict_variable_comparison",
                      "test_sqrt_precision", "test_symbols", "test_complex_math_expressions"}
# (file, gold, pred) whose label in math-verify's table is wrong or depends on a reading.
MV_RELABEL = {  # -> (expected, debatable, note)
    ("test_all.py", "$9$", "Answer $ \n 9 \n $"):
        (False, True, "math-verify's inline-math rule (no newline inside $...$); the value 9 is there"),
    ("test_all.py", "$9$", "Answer \\( \n 9 \n \\)"):
        (False, True, "math-verify's inline-math rule (no newline inside \\(...\\)); the value 9 is there"),
    ("test_yujianll.py", "$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$"):
        (False, False, "math-verify's table asserts 1; 1 - 1/e != 1 + 1/e"),
}


def strip_delims(s: str) -> str:
    s = s.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) > len(a) + len(b):
            return s[len(a) : -len(b)].strip()
    return s


def mv_reference(gold: str) -> str | None:
    boxes = find_boxes(gold)
    if len(gold) > 120 or (boxes and boxes[-1][1] - boxes[0][0] > 0.8 * len(gold.strip(" $.\n"))):
        return boxes[-1][2].strip() if len(boxes) == 1 else (strip_delims(gold) if len(gold) <= 120 else None)
    return strip_delims(gold)


def math_verify_cases(repo: Path) -> list[dict]:
    out = []
    for p in sorted((repo / "tests").glob("test_*.py")):
        tree = ast.parse(p.read_text())
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize")):
                    continue
                names = [s.strip() for s in ast.literal_eval(dec.args[0]).split(",")]
                try:
                    rows = ast.literal_eval(dec.args[1])
                except ValueError:  # a table built with f-strings/calls: not plain facts
                    continue
                for k, row in enumerate(rows):
                    d = dict(zip(names, row))
                    gold, pred = d["gold"], d["pred"]
                    expected = bool(d.get("expected", d.get("result")))
                    ref = mv_reference(gold)
                    debatable = fn.name in MV_DEBATABLE_TESTS or d.get("allow_set_relation_comp") is True
                    note = ""
                    if ref is None:
                        continue
                    if (p.name, gold, pred) in MV_RELABEL:
                        expected, debatable, note = MV_RELABEL[(p.name, gold, pred)]
                    out.append(dict(id=f"mv-{p.stem}-{fn.name}-{k}", source=f"math-verify {MV_URL}{p.name}#L{fn.lineno} ({fn.name})",
                                    group="math-verify", kind="math", response=pred, reference=ref,
                                    expected=expected, debatable=debatable, note=note))
    return out


SIMPLE_EVALS = "openai/simple-evals common.py EQUALITY_TEMPLATE examples"
QWEN = "QwenLM/Qwen2.5-Math evaluation/grader.py _test_math_equal examples"


def grader_example_cases() -> list[dict]:
    # (pred, reference, expected, debatable, note)
    se = [("$3+2x$", "2x+3", True, False, ""), ("1.5", "3/2", True, False, ""),
          ("$y^2+2y+1$", "x^2+2x+1", False, False, ""), ("$(x+1)^2$", "x^2+2x+1", True, False, ""),
          ("649", "3245/5", False, True, "simple-evals says No (needs nontrivial simplification); equal as numbers"),
          ("-2/3", "2/(-3)", True, False, ""), ("72", "72 degrees", True, False, "benefit of the doubt to units"),
          ("64 square feet", "64", True, False, "benefit of the doubt to units")]
    qw = [("0.0833333333333333", "\\frac{1}{12}", True, False, ""), ("(1,\\frac{9}{2})", "(1,4.5)", True, False, ""),
          ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", True, False, ""), ("\\tan^2(y)+1", "\\sec^2(y)", True, False, ""),
          ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", True, True, "same plane, equation multiplied by -1"),
          ("33.3", "\\frac{100}{3}", True, True, "a 3-significant-digit rounding"),
          ("\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}", "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}", True, False, ""),
          ("(+5)(b+2)", "(a+5)(b+2)", False, False, ""), ("2", "\\frac{1+\\sqrt{5}}{2}", False, False, ""),
          ("4", "\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}", False, False, ""), ("1\\sqrt{19}", "1", False, False, ""),
          ("(\\frac{3}{5},\\frac{8}{3}]", "(0.6,2.6667]", True, True, "4-decimal rounding of 8/3"),
          ("x+2n+1", "x+1", False, False, "")]
    out = []
    for src, tag, rows in ((SIMPLE_EVALS, "simple-evals", se), (QWEN, "qwen25-math", qw)):
        for k, (ref, pred, exp, deb, note) in enumerate(rows):
            # simple-evals lists (expression 1, expression 2); we take expression 2 as the response
            out.append(dict(id=f"{tag}-{k}", source=src, group=tag, kind="math",
                            response=f"The final answer is $\\boxed{{{pred}}}$.", reference=ref,
                            expected=exp, debatable=deb, note=note))
    return out


MATH_FORMATS = [
    "<think>\n{sol}\n</think>\nThe final answer is $\\boxed{{{ans}}}$.",
    "{sol}\n\nFinal Answer: The final answer is ${ans}$. I hope it is correct.",
    "<think>\nworking\n</think>\nTherefore the answer is $\\boxed{{{ans}}}$.<|im_end|>\n<|im_start|>user\nNext: what is 2+3?",
    "{sol}\n\n**Final Answer**\n\\[\n\\boxed{{{ans}}}\n\\]",
    "<answer>{ans}</answer>",
]


def _mv_equal(a: str, b: str) -> bool:
    from math_verify import parse, verify  # math-verify imports sympy (seconds): only when an answer is parsed

    return bool(verify(parse(f"${a}$"), parse(f"${b}$")))


def math_dataset_cases(n: int, seed: int = 20) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "math" / "MATH_test_5000.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    picked = [r for r in rng.sample(rows, 4 * n) if find_boxes(r["solution"])][: 2 * n]
    answers = [find_boxes(r["solution"])[-1][2].strip() for r in picked]
    out = []
    for i in range(n):
        r, ans = picked[i], answers[i]
        sol = re.sub(r"\\boxed\s*\{", "{", r["solution"])  # the worked solution, its box removed
        fmt = MATH_FORMATS[i % len(MATH_FORMATS)]
        src = f"MATH test set (hendrycks/math) idx {r['idx']}; response format written by thinkrl"
        out.append(dict(id=f"math-{r['idx']}-right", source=src, group="math-dataset", kind="math",
                        response=fmt.format(sol=sol, ans=ans), reference=ans, expected=True, debatable=False, note=""))
        wrong = answers[n + i]
        if wrong.replace(" ", "") != ans.replace(" ", "") and not _mv_equal(wrong, ans):
            out.append(dict(id=f"math-{r['idx']}-wrong", source=src + "; wrong = another problem's answer",
                            group="math-dataset", kind="math", response=fmt.format(sol=sol, ans=wrong),
                            reference=ans, expected=False, debatable=False, note=""))
    return out


def gsm8k_cases(n: int, seed: int = 20) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    out = []
    fmts = ["So she has {v} left.\n#### {v}", "Therefore, the answer is **{v}**.", "Answer: {v}",
            "The total is ${v}, which covers 3 tickets at $4 each and 2 drinks.",
            "Thus Tom needs {v} more minutes.<|im_end|><|im_start|>user\nAnother question with 7 and 12"]
    for i, r in enumerate(rng.sample(rows, n)):
        ans = r["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        v = int(ans)
        shown = f"{v:,}" if i % 3 == 0 else str(v)
        work = re.sub(r"<<[^>]*>>", "", r["answer"].rsplit("####", 1)[0]).strip()
        fmt = fmts[i % len(fmts)]
        src = f"GSM8K test set (openai/grade-school-math) row {rows.index(r)}; response format written by thinkrl"
        out.append(dict(id=f"gsm8k-{i}-right", source=src, group="gsm8k", kind="math",
                        response=work + "\n" + fmt.format(v=shown), reference=ans, expected=True, debatable=False, note=""))
        out.append(dict(id=f"gsm8k-{i}-wrong", source=src, group="gsm8k", kind="math",
                        response=work + "\n" + fmt.format(v=v + 1 + i % 7), reference=ans, expected=False, debatable=False, note=""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--math-verify", type=Path, required=True, help="a checkout of huggingface/Math-Verify")
    args = ap.parse_args()
    cases = math_verify_cases(args.math_verify) + grader_example_cases() + math_dataset_cases(100) + gsm8k_cases(40)
    for k, c in enumerate(ADVERSARIAL):
        cases.append({"id": f"adv-{k}", "source": "thinkrl adversarial (issue 20)", "kind": "math", "debatable": False, "note": "", **c})
    cases += grader_test_cases()
    seen = set()
    for c in cases:
        assert c["id"] not in seen, c["id"]
        seen.add(c["id"])
        print(json.dumps(c, ensure_ascii=False))


if __name__ == "__main__":
    main()
