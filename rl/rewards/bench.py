"""Throughput of rule-based verification through `VerifierPool`.

    python -m rl.rewards.bench --n 1000 --workers 2

Builds MATH-style responses from the public MATH test set: the reference solution as the
thinking, then a boxed final answer that is the right one for even rows and another problem's
answer for odd rows (so both the equal and the not-equal paths are timed). Also times the
embedded arithmetic task's format (`<think>...</think>\\nThe answer is \\boxed{303}.`).
Prints items/s and checks every score against the expected label.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from rl.rewards.base import VerifyItem
from rl.rewards.extract import find_boxes
from rl.rewards.pool import VerifierPool

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "math" / "MATH_test_5000.jsonl"


def math_items(path: Path, n: int, seed: int) -> tuple[list[VerifyItem], list[float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if find_boxes(r["solution"])]
    rng = random.Random(seed)
    picked = rng.sample(rows, n)
    answers = [find_boxes(r["solution"])[-1][2] for r in picked]
    items, labels = [], []
    for i, (r, ans) in enumerate(zip(picked, answers)):
        right = i % 2 == 0
        boxed = ans if right else answers[(i + 1) % n]
        resp = f"<think>\n{r['solution']}\n</think>\nSo the final answer is $\\boxed{{{boxed}}}$."
        items.append(VerifyItem(resp, ans))
        labels.append(1.0 if right or boxed == ans else 0.0)
    return items, labels


def arith_items(n: int, seed: int) -> tuple[list[VerifyItem], list[float]]:
    rng = random.Random(seed)
    items, labels = [], []
    for i in range(n):
        a, b, c = (rng.randrange(10, 99999) for _ in range(3))
        ans = a + b - min(c, a + b)
        given = ans if i % 2 == 0 else ans + 1
        work = f"{a} + {b} = {a + b}. " * 5
        items.append(VerifyItem(f"<think>{work}</think>\nThe answer is \\boxed{{{given}}}.", str(ans)))
        labels.append(1.0 if i % 2 == 0 else 0.0)
    return items, labels


def run(name: str, pool: VerifierPool, items: list[VerifyItem], labels: list[float]) -> dict:
    t0 = time.perf_counter()
    results = pool.map(items)
    wall = time.perf_counter() - t0
    per_item = sorted(r.metrics.get("elapsed_s", 0.0) for r in results)
    mismatches = sum(r.score != want for r, want in zip(results, labels))
    return {
        "set": name,
        "items": len(items),
        "wall_s": round(wall, 2),
        "items_per_s": round(len(items) / wall, 1),
        "p50_item_ms": round(1000 * statistics.median(per_item), 2),
        "p95_item_ms": round(1000 * per_item[int(0.95 * (len(per_item) - 1))], 2),
        "max_item_ms": round(1000 * per_item[-1], 1),
        "reasons": dict(Counter(str(r.reason) for r in results)),
        "label_mismatches": mismatches,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with VerifierPool(num_workers=args.workers, timeout_s=args.timeout) as pool:
        pool.map([VerifyItem("\\boxed{1}", "1")] * args.workers)  # workers up and ready
        print(json.dumps({"pool_start_s": round(time.perf_counter() - t0, 2), "workers": args.workers}))
        for name, (items, labels) in (
            ("math", math_items(args.data, args.n, args.seed)),
            ("arith", arith_items(args.n, args.seed)),
        ):
            print(json.dumps(run(name, pool, items, labels)))


if __name__ == "__main__":
    main()
