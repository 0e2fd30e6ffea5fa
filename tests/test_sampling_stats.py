"""Statistical acceptance tests for the samplers' draw distributions.

Every test uses a fixed seed, so it is deterministic. Tolerance: Pearson's chi-square
goodness-of-fit test must NOT reject the configured distribution at level α = 0.01
(p > 0.01); a correct sampler passes that for 99 % of seeds, and each test also checks the
same counts against a plausible wrong distribution, which must be rejected (p < 1e-6), so the
test has power to fail. Where a stage allows no draw from a label, that is asserted exactly.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from prompts.schema import PromptRow
from rl.sampling import build_sampler

ALPHA = 0.01  # chi-square: p-value must exceed this (configured distribution not rejected)
POWER = 1e-6  # ... and a wrong distribution must be rejected below this
N_DRAWS = 10_000


def row(pid: str, difficulty: int | None = None, pass_rate: float | None = None) -> PromptRow:
    return PromptRow(id=pid, prompt=[{"role": "user", "content": pid}], answer="1",
                     difficulty=difficulty, pass_rate=pass_rate)


def single_draws(sampler, iteration: int, n: int = N_DRAWS) -> Counter:
    """n independent single-prompt draws (num_prompts=1 draws exactly from the distribution)."""
    return Counter(sampler.sample(1, iteration)[0] for _ in range(n))


def gof(counts: Counter, probs: dict[str, float]) -> float:
    """Chi-square p-value of observed counts against probabilities over the keys of `probs`;
    any draw outside those keys fails immediately."""
    assert set(counts) <= set(probs), f"drew outside the support: {set(counts) - set(probs)}"
    keys = sorted(probs)
    obs = np.array([counts[k] for k in keys], dtype=float)
    exp = np.array([probs[k] for k in keys]) / sum(probs.values()) * obs.sum()
    return float(chisquare(obs, exp).pvalue)


def prioritized_setup(cfg: dict, seed: int = 1234):
    """20 prompts: p0..p16 scored 16 times with 0..16 successes (rates 0, 1/16, ..., 1),
    u0/u1 unseen (prior 0.5), t0 tagged 0.9 and never scored. Returns (sampler, rate per id)."""
    rows = [row(f"p{i}") for i in range(17)] + [row("u0"), row("u1"), row("t0", pass_rate=0.9)]
    s = build_sampler(cfg, rows, seed=seed)
    s.update(0, [(f"p{i}", [1.0] * i + [0.0] * (16 - i)) for i in range(17)])
    rates = {f"p{i}": i / 16 for i in range(17)} | {"u0": 0.5, "u1": 0.5, "t0": 0.9}
    return s, rates


def test_prioritized_draws_match_one_minus_pass_rate_with_floor():
    eps = 0.07
    s, rates = prioritized_setup({"kind": "prioritized", "floor": eps, "tracker": {"decay": 0.0}})
    want = {p: max(1 - r, eps) for p, r in rates.items()}  # p15, p16 sit on the floor
    counts = single_draws(s, iteration=1)
    p = gof(counts, want)
    assert p > ALPHA, f"chi-square p={p:.4g} (df={len(want) - 1})"
    assert gof(counts, {k: 1.0 for k in want}) < POWER  # uniform would be detected
    assert gof(counts, {k: 1 - rates[k] + 1e-9 for k in want}) < POWER  # so would a missing floor
    # max deviation of the empirical frequency: 4 binomial s.d. at most (s.d. <= 0.005 here)
    tot = sum(want.values())
    dev = max(abs(counts[k] / N_DRAWS - w / tot) for k, w in want.items())
    assert dev < 4 * np.sqrt(0.25 / N_DRAWS)


def test_prioritized_first_pick_of_a_batch_has_the_same_law():
    # Without replacement within a call, the *first* pick of each batch is still ∝ weight.
    s, rates = prioritized_setup({"kind": "prioritized", "floor": 0.05, "tracker": {"decay": 0.0}}, seed=99)
    counts = Counter(s.sample(5, 1)[0] for _ in range(N_DRAWS))
    p = gof(counts, {k: max(1 - r, 0.05) for k, r in rates.items()})
    assert p > ALPHA, f"chi-square p={p:.4g}"


def curriculum_rows() -> list[PromptRow]:
    # difficulty 1: 30 prompts, 2: 20, 3: 10 -> natural mix 1/2, 1/3, 1/6
    return [row(f"d{d}_{i}", d) for d, n in ((1, 30), (2, 20), (3, 10)) for i in range(n)]


def by_difficulty(counts: Counter) -> Counter:
    """Per-prompt counts of ids like "d3_7" -> per-difficulty counts {"3": ...}."""
    out: Counter = Counter()
    for pid, n in counts.items():
        out[pid.split("_")[0][1:]] += n
    return out


def test_curriculum_uniform_then_hard_only_after_iteration_n():
    """k1.5's curriculum ablation: uniform over the set, then hard problems only from N on."""
    cfg = {"kind": "curriculum", "schedule": [{"iteration": 0}, {"iteration": 100, "only": [3]}]}
    s = build_sampler(cfg, curriculum_rows(), seed=5)
    before = single_draws(s, iteration=99)
    by_label = by_difficulty(before)
    p = gof(by_label, {"1": 30, "2": 20, "3": 10})
    assert p > ALPHA, f"uniform stage: chi-square p={p:.4g}"
    assert gof(by_label, {"1": 1, "2": 1, "3": 1}) < POWER  # equal label shares would be caught
    for it in (100, 250):
        after = single_draws(s, iteration=it, n=5_000)
        assert set(by_difficulty(after)) == {"3"}, "hard-only stage drew an easier prompt"
        p = gof(after, {f"d3_{i}": 1.0 for i in range(10)})  # uniform among the hard prompts
        assert p > ALPHA, f"hard stage at {it}: chi-square p={p:.4g}"


@pytest.mark.parametrize(
    "iteration, shares",
    [
        (0, {"1": 0.6, "2": 0.3, "3": 0.1}),
        (250, {"1": 0.35, "2": 0.3, "3": 0.35}),  # halfway: the average of the two keyframes
        (500, {"1": 0.1, "2": 0.3, "3": 0.6}),
        (900, {"1": 0.1, "2": 0.3, "3": 0.6}),  # after the last keyframe it holds
    ],
)
def test_curriculum_linear_easy_to_hard_shift(iteration, shares):
    cfg = {"kind": "curriculum", "interpolation": "linear", "schedule": [
        {"iteration": 0, "mix": {1: 0.6, 2: 0.3, 3: 0.1}},
        {"iteration": 500, "mix": {1: 0.1, 2: 0.3, 3: 0.6}},
    ]}
    s = build_sampler(cfg, curriculum_rows(), seed=17 + iteration)
    by_label = by_difficulty(single_draws(s, iteration))
    p = gof(by_label, shares)
    assert p > ALPHA, f"iteration {iteration}: chi-square p={p:.4g}, counts {dict(by_label)}"
    assert gof(by_label, {"1": 30, "2": 20, "3": 10}) < POWER  # the natural mix would be caught
    mix = s.metrics([])["sampler_curriculum_mix"]
    assert mix == pytest.approx(shares, abs=1e-12)


def test_curriculum_over_pass_rate_bands_follows_the_tracker():
    # 30 untagged prompts; scoring puts 10 in each band. Bands move when rates move.
    rows = [row(f"{b}{i}") for b in "hme" for i in range(10)]
    cfg = {"kind": "curriculum", "by": "pass_rate", "tracker": {"decay": 0.0},
           "bands": {"hard": [0, 0.3], "medium": [0.3, 0.7], "easy": [0.7, 1.0]},
           "schedule": [{"iteration": 0, "mix": {"easy": 1}},
                        {"iteration": 10, "mix": {"hard": 0.75, "medium": 0.25}}]}
    s = build_sampler(cfg, rows, seed=21)
    frac = {"h": 0, "m": 2, "e": 4}  # successes out of 4
    s.update(0, [(p, [1.0] * frac[p[0]] + [0.0] * (4 - frac[p[0]])) for p in s.ids])
    s.update(1, [("h0", [1, 1, 1, 1])])  # h0 is now solved: it moves to the easy band
    early = single_draws(s, iteration=0, n=5_000)
    assert set(early) == {f"e{i}" for i in range(10)} | {"h0"}
    late = single_draws(s, iteration=10)
    assert not any(p.startswith("e") or p == "h0" for p in late)
    by_band = Counter({"hard": sum(v for k, v in late.items() if k[0] == "h"),
                       "medium": sum(v for k, v in late.items() if k[0] == "m")})
    p = gof(by_band, {"hard": 0.75, "medium": 0.25})
    assert p > ALPHA, f"chi-square p={p:.4g}, counts {dict(by_band)}"
    assert gof(by_band, {"hard": 9, "medium": 10}) < POWER  # natural proportions would be caught


def test_mix_honours_component_weights_on_disjoint_supports():
    only = lambda d: {"kind": "curriculum", "schedule": [{"iteration": 0, "only": [d]}]}  # noqa: E731
    cfg = {"kind": "mix", "components": [{"weight": 3, "sampler": only(1)}, {"weight": 7, "sampler": only(3)}]}
    s = build_sampler(cfg, curriculum_rows(), seed=8)
    by_label = by_difficulty(single_draws(s, iteration=0))
    p = gof(by_label, {"1": 0.3, "3": 0.7})
    assert p > ALPHA, f"chi-square p={p:.4g}, counts {dict(by_label)}"
    assert gof(by_label, {"1": 30, "3": 10}) < POWER  # pooling the supports would be caught


def test_mix_of_uniform_and_prioritized_is_the_mixture_distribution():
    cfg = {"kind": "mix", "tracker": {"decay": 0.0}, "components": [
        {"weight": 1, "sampler": {"kind": "uniform"}},
        {"weight": 3, "sampler": {"kind": "prioritized", "floor": 0.05}},
    ]}
    s, rates = prioritized_setup(cfg, seed=77)
    w = {k: max(1 - r, 0.05) for k, r in rates.items()}
    tot = sum(w.values())
    want = {k: 0.25 / len(w) + 0.75 * v / tot for k, v in w.items()}
    counts = single_draws(s, iteration=1)
    p = gof(counts, want)
    assert p > ALPHA, f"chi-square p={p:.4g}"
    assert gof(counts, w) < POWER  # prioritized alone would be caught
