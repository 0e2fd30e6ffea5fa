"""One definition of "correct" (issue 20): `rl.rewards.scores.is_correct`. Every module that turns
a score into right/wrong must call it (or `is_correct_tensor`) instead of writing its own
threshold; this test walks the non-test code and lists every place that still does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

from rl.rewards import VerifyResult
from rl.rewards.scores import CORRECT_THRESHOLD, is_correct, is_correct_tensor

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("rl", "prompts", "experiments", "cot_sft", "rollout")
ALLOWED = ("rl/rewards/",)  # where "correct" is defined
_THRESHOLD_NAME = re.compile(r"(?i)success|threshold|^thr$|correct_atol")
# JavaScript embedded in a Python string (the dashboard): a statement, not prose in a docstring.
_JS_THRESHOLD = re.compile(r"(?:return|if|=)[^;\n]*score\s*(?:>=|>|<|<=)\s*(?:1|0\.5|1\.0)\b[^\n]*;")


def test_is_correct_values():
    # 1.0 and its float32 rounding are right; partial credit, 0, NaN and None are not.
    assert [is_correct(s) for s in (1.0, 0.99999994, 1 - 1e-7, 0.999, 0.5, 0.0, float("nan"), None)] == [
        True, True, True, False, False, False, False, False]
    assert is_correct_tensor(torch.tensor([1.0, 0.9999999, 0.5, float("nan")])).tolist() == [True, True, False, False]
    flags = torch.tensor([True, False])
    assert is_correct_tensor(flags) is flags
    assert VerifyResult(1.0, "correct").correct and not VerifyResult(0.5, "wrong").correct
    assert CORRECT_THRESHOLD == 1.0 - 1e-6


def test_length_penalty_and_evaluation_use_the_one_definition():
    from rl.mirror_descent import is_correct as lp_is_correct

    assert lp_is_correct is is_correct_tensor
    src = (ROOT / "rl" / "evaluate.py").read_text()
    assert "is_correct(" in src and ">= 0.5" not in src


def _is_score_expr(node: ast.AST) -> bool:
    return "score" in ast.unparse(node).lower()


def _is_threshold(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and node.value in (0.5, 1, 1.0):
        return True
    text = ast.unparse(node)
    if "1e-06" in text or "1e-6" in text or "CORRECT_ATOL" in text:
        return True
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return bool(name and _THRESHOLD_NAME.search(name))


def threshold_sites() -> list[str]:
    """file:line: code for every score-vs-threshold comparison outside rl/rewards."""
    sites = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(ALLOWED) or "/." in rel:
                continue
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.GtE, ast.Gt, ast.Lt, ast.LtE)):
                    left, right = node.left, node.comparators[0]
                    if (_is_threshold(right) and (_is_score_expr(left) or not isinstance(right, ast.Constant))) or (
                        _is_threshold(left) and _is_score_expr(right)
                    ):
                        sites.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _JS_THRESHOLD.search(node.value):
                    for k, line in enumerate(node.value.splitlines()):  # JavaScript inside a Python string
                        if _JS_THRESHOLD.search(line):
                            sites.append(f"{rel}:{node.lineno + k}: {line.strip()}")
    return sites


def test_the_detector_finds_thresholds_it_is_meant_to(tmp_path):
    src = "ok = r.score >= 1.0\nhits = sum(x >= SUCCESS for x in xs)\nc = s >= 1 - 1e-6\nn = len(x) >= 1\n"
    tree = ast.parse(src)
    found = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
             and (_is_threshold(n.comparators[0]) and (_is_score_expr(n.left) or not isinstance(n.comparators[0], ast.Constant)))]
    assert sorted(found) == sorted(["r.score >= 1.0", "x >= SUCCESS", "s >= 1 - 1e-06"])


def test_no_module_outside_rl_rewards_defines_correct_on_its_own():
    sites = threshold_sites()
    assert not sites, "score thresholds outside rl/rewards (use rl.rewards.scores.is_correct):\n" + "\n".join(sites)
