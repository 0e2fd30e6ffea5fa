"""Per-prompt pass-rate memory (k1.5 §2.3.4: "we track the success rates s_i for each problem i").

For every prompt id the tracker keeps, over all rollouts that scored it:

    count      samples scored
    successes  correct samples (rl.rewards.scores.is_success: is_correct, or score >= a configured
               success_threshold)
    rate       exponentially weighted pass rate, one step per iteration the prompt was scored:
                   rate <- decay * rate + (1 - decay) * (successes_t / k_t)
               The first observation of an untagged prompt sets rate to its group's pass rate
               (no pull toward an arbitrary prior); a tagged `pass_rate` column is the starting
               value instead, so the tag is treated as one earlier observation.
    last_seen  iteration of the latest update (None if never scored)

EWMA rather than the cumulative mean because the policy moves: a prompt failed 8/8 at iteration 10
and solved 8/8 at iteration 200 should stop being prioritized. The cumulative successes/count is
still kept (and summarised) for the dashboard.

State is columnar over all prompt ids (JSON lists), so a checkpoint is compact and a mismatch
between a saved state and the current prompt set can be reported by id.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from rl.rewards.scores import is_success

from .config import TrackerConfig

Results = Iterable[tuple[str, Sequence[float]]]


def shown_ids(ids: Sequence[str], limit: int = 10) -> str:
    """First `limit` ids for an error message."""
    ids = list(ids)
    return ", ".join(ids[:limit]) + (" …" if len(ids) > limit else "")


def check_unique_ids(ids: Sequence[str]) -> None:
    """Refuse duplicated prompt ids, naming them (a duplicate would get two sampling weights and
    merge two prompts' statistics)."""
    dups = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dups:
        raise ValueError(f"duplicate prompt ids ({len(dups)}): {shown_ids(dups)}")


def label_of(difficulty: int | None) -> str:
    """Metric / schedule key of a difficulty label ("none" for unlabeled prompts)."""
    return "none" if difficulty is None else str(difficulty)


@dataclass(frozen=True)
class PromptStats:
    """Read-only view of one prompt's tracked statistics."""

    count: int
    successes: int
    rate: float | None
    last_seen: int | None


class PassRateTracker:
    """Running success statistics per prompt id; see the module docstring."""

    def __init__(
        self,
        ids: Sequence[str],
        difficulties: Sequence[int | None],
        cfg: TrackerConfig,
        tagged_pass_rates: Sequence[float | None] | None = None,
    ) -> None:
        if len(ids) != len(difficulties):
            raise ValueError("ids and difficulties must have the same length")
        self.cfg = cfg
        self.ids = list(ids)
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        check_unique_ids(self.ids)
        self.labels = [label_of(d) for d in difficulties]
        n = len(self.ids)
        self.count = np.zeros(n, dtype=np.int64)
        self.successes = np.zeros(n, dtype=np.int64)
        self.rate = np.full(n, np.nan)  # NaN = no estimate yet
        self.last_seen = np.full(n, -1, dtype=np.int64)  # -1 = never scored
        self._seed_rates = np.full(n, np.nan)
        if cfg.use_tagged_pass_rate and tagged_pass_rates is not None:
            self._seed_rates = np.array(
                [np.nan if p is None else float(p) for p in tagged_pass_rates], dtype=np.float64
            )
            self.rate = self._seed_rates.copy()

    # -- updates ---------------------------------------------------------------------------

    def update(self, iteration: int, results: Results) -> None:
        """Fold one iteration's scored groups in. Several entries for one id are merged into
        one group (one EWMA step), so a prompt drawn again as a replacement is not double-stepped.
        Unknown ids, empty groups and scores outside [0, 1] are errors (nothing is applied)."""
        merged: dict[int, list[float]] = {}
        unknown: list[str] = []
        for pid, scores in results:
            i = self.index.get(pid)
            if i is None:
                unknown.append(str(pid))
                continue
            scores = [float(s) for s in scores]
            if not scores:
                raise ValueError(f"prompt {pid!r}: empty score list")
            bad = [s for s in scores if not (0.0 <= s <= 1.0)]  # also catches NaN
            if bad:
                raise ValueError(f"prompt {pid!r}: scores must be in [0, 1], got {bad[:5]}")
            merged.setdefault(i, []).extend(scores)
        if unknown:
            raise ValueError(f"update() got prompt ids not in the prompt set: {shown_ids(unknown)}")
        thr, decay = self.cfg.success_threshold, self.cfg.decay
        for i, scores in merged.items():
            k = len(scores)
            succ = sum(is_success(s, thr) for s in scores)
            self.count[i] += k
            self.successes[i] += succ
            batch = succ / k
            old = self.rate[i]
            self.rate[i] = batch if math.isnan(old) else decay * old + (1.0 - decay) * batch
            self.last_seen[i] = max(int(self.last_seen[i]), int(iteration))

    # -- reads -----------------------------------------------------------------------------

    def estimates(self) -> np.ndarray:
        """s_i for every prompt (prompt-set order): tracked rate, else `unseen_prior`."""
        return np.where(np.isnan(self.rate), self.cfg.unseen_prior, self.rate)

    def has_estimate(self) -> np.ndarray:
        """True where the rate comes from observations or a tag rather than the prior."""
        return ~np.isnan(self.rate)

    def get(self, pid: str) -> PromptStats:
        i = self.index[pid]
        r = self.rate[i]
        return PromptStats(
            count=int(self.count[i]),
            successes=int(self.successes[i]),
            rate=None if math.isnan(r) else float(r),
            last_seen=None if self.last_seen[i] < 0 else int(self.last_seen[i]),
        )

    def summary_by_difficulty(self) -> dict[str, dict[str, float | int | None]]:
        """Per difficulty label (dashboard): prompts, prompts scored, prompts with an estimate,
        mean EWMA rate over prompts with an estimate, and pooled successes / samples."""
        out: dict[str, dict[str, float | int | None]] = {}
        labels = np.array(self.labels, dtype=object)
        for lab in sorted(set(self.labels), key=label_sort_key):
            m = labels == lab
            est = m & self.has_estimate()
            samples = int(self.count[m].sum())
            out[lab] = {
                "num_prompts": int(m.sum()),
                "num_seen": int((m & (self.count > 0)).sum()),
                "num_with_estimate": int(est.sum()),
                "mean_rate": float(self.rate[est].mean()) if est.any() else None,
                "pooled_pass_rate": float(self.successes[m].sum() / samples) if samples else None,
            }
        return out

    def pass_rate_by_difficulty(self) -> dict[str, float]:
        """{"<difficulty>": mean tracked rate}; labels with no estimate yet are left out
        (rather than reporting the prior or NaN, which would read as a measurement)."""
        return {
            lab: s["mean_rate"]
            for lab, s in self.summary_by_difficulty().items()
            if s["mean_rate"] is not None
        }

    # -- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready columnar state. Floats round-trip exactly through Python's json (repr)."""
        return {
            "ids": list(self.ids),
            "count": self.count.tolist(),
            "successes": self.successes.tolist(),
            "rate": [None if math.isnan(r) else float(r) for r in self.rate],
            "last_seen": [None if t < 0 else int(t) for t in self.last_seen],
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, int]:
        """Restore. strict: the saved ids must be exactly this prompt set (any order), else a
        ValueError naming missing and added ids. strict=False: stats are restored for ids in
        both; removed ids are dropped; new ids keep their fresh (tag-seeded) state.
        Returns {"restored": n, "dropped": n, "new": n}."""
        saved = list(state["ids"])
        pos = {pid: j for j, pid in enumerate(saved)}
        missing = [p for p in saved if p not in self.index]
        added = [p for p in self.ids if p not in pos]
        if strict and (missing or added):
            raise ValueError(
                "sampler state was saved for a different prompt set: "
                f"{len(missing)} saved ids are not in the current set ({shown_ids(missing)}); "
                f"{len(added)} current ids are not in the saved state ({shown_ids(added)}). "
                "Pass strict=False to carry the overlap over explicitly."
            )
        for i, pid in enumerate(self.ids):
            j = pos.get(pid)
            if j is None:
                continue
            r, t = state["rate"][j], state["last_seen"][j]
            self.count[i] = int(state["count"][j])
            self.successes[i] = int(state["successes"][j])
            self.rate[i] = np.nan if r is None else float(r)
            self.last_seen[i] = -1 if t is None else int(t)
        return {"restored": len(self.ids) - len(added), "dropped": len(missing), "new": len(added)}


def label_sort_key(lab: str) -> tuple[int, int | str]:
    # Numeric difficulty labels in numeric order ("2" < "10"), then names, then "none".
    if lab == "none":
        return (2, "")
    try:
        return (0, int(lab))
    except ValueError:
        return (1, lab)
