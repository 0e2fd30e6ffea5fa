"""Response-length statistics of a set of sampled responses: what a long-CoT user watches.

One definition, used by the held-out evaluation (`rl.evaluate`), the per-iteration metrics
(`rl.rollout_stats`, hence the dashboard) and the tagging CLI:
- percentiles of all, correct and incorrect response lengths (tokens);
- the share cut at max_tokens (`truncated_frac`);
- the within-group coefficient of variation of *correct* lengths (std / mean over the correct
  samples of one prompt, averaged over prompts with at least two): how much shorter right
  answers there are for the k1.5 length penalty to find.

Percentiles interpolate linearly between order statistics (numpy's default), so p50 of
[1, 2, 3, 4] is 2.5.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

PERCENTILES = (5, 50, 90, 95)


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) with linear interpolation; NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def within_group_cv(lengths: Sequence[int], correct: Sequence[bool], groups: Sequence[object]) -> float:
    """Mean over groups with >= 2 correct samples of (population std / mean) of their lengths.
    NaN when no group has two correct samples."""
    by_group: dict[object, list[float]] = defaultdict(list)
    for n, c, g in zip(lengths, correct, groups):
        if c:
            by_group[g].append(float(n))
    cvs = []
    for xs in by_group.values():
        if len(xs) >= 2 and _mean(xs) > 0:
            m = _mean(xs)
            cvs.append(math.sqrt(_mean([(x - m) ** 2 for x in xs])) / m)
    return _mean(cvs)


def length_summary(
    lengths: Sequence[int], correct: Sequence[bool], truncated: Sequence[bool] | None = None,
    groups: Sequence[object] | None = None,
) -> dict[str, float]:
    """Flat dict of floats (NaN where a subset is empty): len_{mean,max,p5,p50,p90,p95},
    len_p95_over_p50, correct_len_{mean,p50,p90}, incorrect_len_{mean,p50,p90}, truncated_frac,
    and, with `groups`, correct_len_cv_within_group."""
    if len(correct) != len(lengths) or (truncated is not None and len(truncated) != len(lengths)):
        raise ValueError("lengths, correct and truncated must have one entry per response")
    xs = [float(n) for n in lengths]
    ok = [x for x, c in zip(xs, correct) if c]
    bad = [x for x, c in zip(xs, correct) if not c]
    out = {"len_mean": _mean(xs), "len_max": max(xs) if xs else float("nan")}
    out.update({f"len_p{q}": percentile(xs, q) for q in PERCENTILES})
    p50 = out["len_p50"]
    out["len_p95_over_p50"] = out["len_p95"] / p50 if p50 and p50 == p50 else float("nan")
    for name, sub in (("correct", ok), ("incorrect", bad)):
        out[f"{name}_len_mean"] = _mean(sub)
        out[f"{name}_len_p50"] = percentile(sub, 50)
        out[f"{name}_len_p90"] = percentile(sub, 90)
    if truncated is not None:
        out["truncated_frac"] = _mean([float(t) for t in truncated])
    if groups is not None:
        out["correct_len_cv_within_group"] = within_group_cv(lengths, correct, groups)
    return out
