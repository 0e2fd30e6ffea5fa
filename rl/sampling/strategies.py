"""Sampling strategies as pure weight functions.

A strategy maps (iteration, candidate prompts, current pass-rate estimates) to non-negative
weights over the candidates. It owns no randomness and no mutable state: the sampler draws with
its own Generator and the tracker holds the memory, so a checkpoint is just tracker + RNG state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from .config import (
    CurriculumKeyframe,
    CurriculumStrategy,
    MixStrategy,
    PrioritizedStrategy,
    UniformStrategy,
)
from .tracker import label_of, label_sort_key, shown_ids


class NoEligiblePrompts(ValueError):
    """The distribution in force puts no weight on any available prompt."""


class Strategy(ABC):
    @abstractmethod
    def weights(self, iteration: int, cand: np.ndarray, est: np.ndarray) -> np.ndarray:
        """Non-negative weights for prompts `cand` (indices into the prompt set); `est` holds the
        pass-rate estimate of every prompt. Raises ValueError if no candidate has weight."""

    def describe(self, iteration: int, est: np.ndarray) -> dict[str, Any]:
        """Extra metrics about the distribution in force at `iteration` (may be empty)."""
        return {}


class Uniform(Strategy):
    def weights(self, iteration: int, cand: np.ndarray, est: np.ndarray) -> np.ndarray:
        return np.ones(len(cand))


class Prioritized(Strategy):
    """k1.5 §2.3.4: "sample problems proportional to 1 - s_i". The floor ε keeps solved problems
    in rotation (the paper's rule would never revisit s_i = 1) and keeps every weight positive."""

    def __init__(self, cfg: PrioritizedStrategy) -> None:
        self.floor = cfg.floor

    def weights(self, iteration: int, cand: np.ndarray, est: np.ndarray) -> np.ndarray:
        return np.maximum(1.0 - est[cand], self.floor)


class Curriculum(Strategy):
    """k1.5 §2.3.4 curriculum: a schedule of label shares (difficulty labels or pass-rate bands).

    At an iteration the schedule gives a share per label; a label's share is spread uniformly over
    its candidate prompts. Labels with no candidates (e.g. an empty pass-rate band) lose their
    share and the rest are renormalised, so the batch is still filled from what the stage allows.
    """

    def __init__(self, cfg: CurriculumStrategy, ids: Sequence[str], difficulties: Sequence[int | None]):
        self.cfg = cfg
        self.schedule = cfg.schedule
        if cfg.by == "difficulty":
            missing = [pid for pid, d in zip(ids, difficulties) if d is None]
            if missing:
                what = "no prompt has" if len(missing) == len(ids) else f"{len(missing)} of {len(ids)} prompts lack"
                raise ValueError(
                    f"curriculum sampler (by: difficulty) needs the field 'difficulty' on every "
                    f"prompt, but {what} it (e.g. ids {shown_ids(missing, 5)}). Tag the set, or "
                    "configure a pass-rate-band schedule (by: pass_rate, bands: ...)."
                )
            labels = [label_of(d) for d in difficulties]
            self.names = sorted(set(labels), key=label_sort_key)
            code = {n: j for j, n in enumerate(self.names)}
            self._codes = np.array([code[lab] for lab in labels], dtype=np.int64)
            for k in self.schedule:
                unknown = sorted(k.labels() - set(self.names), key=label_sort_key)
                if unknown:
                    raise ValueError(
                        f"curriculum keyframe at iteration {k.iteration} names difficulty "
                        f"{unknown}, but the prompt set has difficulties {self.names}"
                    )
        else:
            assert cfg.bands is not None  # guaranteed by the config validator
            ordered = sorted(cfg.bands.items(), key=lambda kv: kv[1][0])
            self.names = [name for name, _ in ordered]
            self._lows = np.array([lo for _, (lo, _) in ordered])
        self._col = {n: j for j, n in enumerate(self.names)}

    def codes(self, est: np.ndarray) -> np.ndarray:
        """Label index of every prompt; bands follow the current estimates ([low, high))."""
        if self.cfg.by == "difficulty":
            return self._codes
        j = np.searchsorted(self._lows, est, side="right") - 1
        return np.clip(j, 0, len(self.names) - 1)

    def _resolve(self, k: CurriculumKeyframe, counts: np.ndarray) -> np.ndarray:
        if k.mix is not None:
            v = np.zeros(len(self.names))
            for lab, w in k.mix.items():
                v[self._col[lab]] = w
        elif k.only is not None:
            v = counts * np.isin(np.arange(len(self.names)), [self._col[lab] for lab in k.only])
        else:
            v = counts.astype(np.float64)
        total = v.sum()
        return v / total if total > 0 else v

    def shares(self, iteration: int, counts: np.ndarray) -> np.ndarray:
        """Label shares at `iteration`, given the candidate count per label, before dropping
        empty labels. `natural` keyframes (only / none) follow the counts."""
        its = [k.iteration for k in self.schedule]
        j = int(np.searchsorted(its, iteration, side="right")) - 1  # last keyframe <= iteration
        if j < 0:
            return self._resolve(self.schedule[0], counts)
        a = self._resolve(self.schedule[j], counts)
        if self.cfg.interpolation == "step" or j == len(self.schedule) - 1:
            return a
        b = self._resolve(self.schedule[j + 1], counts)
        lam = (iteration - its[j]) / (its[j + 1] - its[j])
        return (1.0 - lam) * a + lam * b

    def _effective(self, iteration: int, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(codes, minlength=len(self.names))
        s = self.shares(iteration, counts) * (counts > 0)
        if s.sum() <= 0:
            raise NoEligiblePrompts(
                f"curriculum stage at iteration {iteration} allows no available prompt "
                f"(labels with prompts left: {[n for n, c in zip(self.names, counts) if c]})"
            )
        return s / s.sum(), counts

    def weights(self, iteration: int, cand: np.ndarray, est: np.ndarray) -> np.ndarray:
        c = self.codes(est)[cand]
        s, counts = self._effective(iteration, c)
        return s[c] / np.maximum(counts[c], 1)

    def describe(self, iteration: int, est: np.ndarray) -> dict[str, Any]:
        try:
            s, _ = self._effective(iteration, self.codes(est))
        except NoEligiblePrompts:  # e.g. every band of the stage is empty: report an empty mix
            return {"sampler_curriculum_mix": {}}
        return {"sampler_curriculum_mix": {n: float(x) for n, x in zip(self.names, s)}}


class Mix(Strategy):
    """Mixture distribution Σ_c π_c P_c: each component's weights are normalised to a
    distribution first, so π_c is exactly the probability that a draw "comes from" component c
    (the first draw of a call; later draws in a call are without replacement).

    A component with no eligible prompt at this moment (a pass-rate band curriculum whose bands
    have emptied as the policy improved, or a stage exhausted by `exclude`) is skipped and the
    other weights renormalised, rather than stopping a long run; metrics show it as an empty
    `sampler_curriculum_mix/<i>`. Only if every component is empty is it an error."""

    def __init__(self, cfg: MixStrategy, ids: Sequence[str], difficulties: Sequence[int | None]):
        total = sum(c.weight for c in cfg.components)
        self.pis = [c.weight / total for c in cfg.components]
        self.parts = [make_strategy(c.sampler, ids, difficulties) for c in cfg.components]

    def weights(self, iteration: int, cand: np.ndarray, est: np.ndarray) -> np.ndarray:
        out = np.zeros(len(cand))
        errors = []
        for pi, part in zip(self.pis, self.parts):
            try:
                w = part.weights(iteration, cand, est)
            except NoEligiblePrompts as e:
                errors.append(str(e))
                continue
            out += pi * w / w.sum()
        if len(errors) == len(self.parts):
            raise NoEligiblePrompts("no mix component has an eligible prompt: " + "; ".join(errors))
        return out

    def describe(self, iteration: int, est: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, part in enumerate(self.parts):
            out.update({f"{k}/{i}": v for k, v in part.describe(iteration, est).items()})
        return out


def make_strategy(
    cfg: UniformStrategy | CurriculumStrategy | PrioritizedStrategy | MixStrategy,
    ids: Sequence[str],
    difficulties: Sequence[int | None],
) -> Strategy:
    """Build a strategy for this prompt set; data-dependent checks (labels) happen here."""
    if isinstance(cfg, UniformStrategy):
        return Uniform()
    if isinstance(cfg, PrioritizedStrategy):
        return Prioritized(cfg)
    if isinstance(cfg, CurriculumStrategy):
        return Curriculum(cfg, ids, difficulties)
    if isinstance(cfg, MixStrategy):
        return Mix(cfg, ids, difficulties)
    raise TypeError(f"unknown sampler config {type(cfg).__name__}")
