"""Score the public verifier corpus (tests/data/verifier_corpus.jsonl) with `rl.rewards` and with
plain math-verify, and print accuracy with false positives and false negatives apart (issue 20).

    python -m rl.rewards.corpus_eval                 # ours vs plain math-verify
    python -m rl.rewards.corpus_eval --load 2        # ours only, while 2 busy processes load the CPUs
    python -m rl.rewards.corpus_eval --show-misses   # every case we get wrong

"Plain math-verify" is `verify(parse("$" + reference + "$"), parse(response))` with math-verify's
default extraction (LaTeX + plain expressions) and its own timeouts; a reference it cannot parse
inside `$...$` is parsed as given. Debatable cases (marked in the corpus) are scored apart.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from collections import Counter, defaultdict
from pathlib import Path

from rl.rewards.base import VerifyItem
from rl.rewards.pool import VerifierPool
from rl.rewards.scores import is_correct

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "data" / "verifier_corpus.jsonl"
# Inputs that only a killed worker stops (sympy inside C): scored with the corpus under --load,
# reported apart; each must score 0 within its (retried) deadline.
HANGS = {"power_tower": "\\boxed{10^{10^{10^{10}}}}", "factorial_1e9": "\\boxed{1000000000!}", "factorial_10_pow_9": "\\boxed{(10^9)!}"}


def load_corpus(path: Path = CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_item(case: dict) -> VerifyItem:
    return VerifyItem(case["response"], case["reference"], case.get("kind", "math"), case.get("question", ""),
                      case["id"], bool(case.get("require_think")), tuple(case.get("options", ())))


def plain_math_verify(case: dict) -> bool:
    from math_verify import parse, verify  # math-verify imports sympy (seconds): only when an answer is parsed

    try:
        gold = parse(f"${case['reference']}$") or parse(case["reference"])
        return bool(verify(gold, parse(case["response"])))
    except Exception:  # math-verify's own timeout or a parse error: not a pass
        return False


def tally(cases: list[dict], verdicts: list[bool]) -> dict:
    t = Counter()
    for c, v in zip(cases, verdicts):
        t["n"] += 1
        t["right"] += v == c["expected"]
        t["fp"] += v and not c["expected"]
        t["fn"] += c["expected"] and not v
    return {"n": t["n"], "accuracy": round(t["right"] / max(1, t["n"]), 4), "fp": t["fp"], "fn": t["fn"]}


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1000003


def score_ours(cases: list[dict], workers: int, timeout_s: float) -> tuple[list[bool], list, dict]:
    with VerifierPool(num_workers=workers, timeout_s=timeout_s) as pool:
        t0 = time.perf_counter()
        results = pool.map([as_item(c) for c in cases])
        wall = time.perf_counter() - t0
        stats = dict(pool.stats, wall_s=round(wall, 2), items_per_s=round(len(cases) / wall, 1))
    return [is_correct(r.score) for r in results], results, stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--load", type=int, default=0, help="busy processes to run while scoring (load test)")
    ap.add_argument("--no-baseline", action="store_true", help="skip plain math-verify")
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args(argv)
    cases = load_corpus(args.corpus)
    burners = []
    if args.load:
        stop_at = time.time() + 600
        burners = [mp.get_context("spawn").Process(target=_burn, args=(stop_at,), daemon=True) for _ in range(args.load)]
        for b in burners:
            b.start()
    hang_cases = [{"id": f"hang-{k}", "response": v, "reference": "1", "expected": False, "group": "hang"} for k, v in HANGS.items()] if args.load else []
    try:
        ours, results, stats = score_ours(cases + hang_cases, args.workers, args.timeout)
    finally:
        for b in burners:
            b.kill()
    hang_results = results[len(cases) :]
    ours, results = ours[: len(cases)], results[: len(cases)]
    report: dict = {"corpus": str(args.corpus), "cases": len(cases), "by_source_group": dict(Counter(c["group"] for c in cases)),
                    "load_processes": args.load, "pool": stats}
    clear = [i for i, c in enumerate(cases) if not c.get("debatable")]
    debatable = [i for i, c in enumerate(cases) if c.get("debatable")]
    report["ours"] = {"non_debatable": tally([cases[i] for i in clear], [ours[i] for i in clear]),
                      "debatable": tally([cases[i] for i in debatable], [ours[i] for i in debatable])}
    over = [c["id"] for c, r in zip(cases, results) if r.reason == "timeout"]
    report["over_deadline"] = {"count": len(over), "ids": over[:20],
                               "retried": sum(1 for r in results if r.metrics.get("retried"))}
    if hang_cases:
        report["hangs"] = {c["id"]: {"score": r.score, "reason": str(r.reason), "cpu_s": r.metrics.get("cpu_s"),
                                     "elapsed_s": r.metrics.get("elapsed_s")} for c, r in zip(hang_cases, hang_results)}
    groups = defaultdict(list)
    for i in clear:
        groups[cases[i]["group"]].append(i)
    report["ours_by_group"] = {g: tally([cases[i] for i in ix], [ours[i] for i in ix]) for g, ix in sorted(groups.items())}
    if not args.no_baseline:
        mv = [plain_math_verify(c) for c in cases]
        report["math_verify"] = {"non_debatable": tally([cases[i] for i in clear], [mv[i] for i in clear]),
                                 "debatable": tally([cases[i] for i in debatable], [mv[i] for i in debatable])}
        report["math_verify_by_group"] = {g: tally([cases[i] for i in ix], [mv[i] for i in ix]) for g, ix in sorted(groups.items())}
    print(json.dumps(report, indent=1))
    if args.show_misses:
        for c, v, r in zip(cases, ours, results):
            if v != c["expected"]:
                print(json.dumps({"id": c["id"], "expected": c["expected"], "debatable": c.get("debatable"), "reason": str(r.reason),
                                  "extracted": r.metrics.get("extracted"), "ref": c["reference"][:80],
                                  "tail": c["response"][-160:]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
