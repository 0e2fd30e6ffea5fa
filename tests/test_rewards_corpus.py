"""The public verifier corpus (tests/data/verifier_corpus.jsonl, issue 20): its shape, and the
acceptance bar on its non-debatable cases: no false positives, accuracy >= 0.99, and at least
plain math-verify + 0.03. Full report: python -m rl.rewards.corpus_eval"""

from __future__ import annotations

from collections import Counter

import pytest

from rl.rewards.corpus_eval import load_corpus, plain_math_verify, score_ours, tally

CASES = load_corpus()
CLEAR = [c for c in CASES if not c["debatable"]]


def test_corpus_shape():
    assert len(CASES) >= 600
    assert len({c["id"] for c in CASES}) == len(CASES)
    for c in CASES:
        assert c["source"].strip() and isinstance(c["debatable"], bool) and isinstance(c["expected"], bool), c["id"]
        assert c["kind"] in ("math", "integer", "multiple_choice", "string"), c["id"]
    groups = Counter(c["group"] for c in CASES)
    assert groups["math-verify"] >= 200 and groups["reward-hacking"] >= 20
    assert sum(not c["expected"] for c in CLEAR) >= 200  # enough wrong answers to catch false positives


@pytest.fixture(scope="module")
def ours():
    verdicts, results, _ = score_ours(CLEAR, workers=2, timeout_s=5.0)
    return verdicts, results


def test_no_false_positives_and_accuracy_at_least_0_99(ours):
    verdicts, results = ours
    t = tally(CLEAR, verdicts)
    fps = [(c["id"], r.metrics.get("extracted")) for c, v, r in zip(CLEAR, verdicts, results) if v and not c["expected"]]
    fns = [(c["id"], str(r.reason), r.metrics.get("extracted")) for c, v, r in zip(CLEAR, verdicts, results) if c["expected"] and not v]
    assert t["fp"] == 0, fps
    assert t["accuracy"] >= 0.99, (t, fns)


def test_at_least_plain_math_verify_plus_0_03(ours):
    mv = tally(CLEAR, [plain_math_verify(c) for c in CLEAR])
    t = tally(CLEAR, ours[0])
    assert t["accuracy"] >= mv["accuracy"] + 0.03, (t, mv)
