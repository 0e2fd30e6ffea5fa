"""The prompt sampler the training driver talks to.

One class, `PromptSampler`, for every `kind`: the kind only changes the weight function
(`strategies.py`). The sampler owns the prompt set, the pass-rate tracker and a
`numpy.random.Generator`; draws use nothing else, so `state_dict()` (tracker + RNG) is the whole
state and a resumed run draws exactly what an uninterrupted one would.

Per iteration t the driver does:

    ids = sampler.sample(B, t)                          # k1.5 §2.3.4 curriculum / prioritized draw
    results = [(pid, scores_of(pid)) for pid in ids]    # k scores in [0, 1] per prompt
    sampler.update(t, results)                          # tracker sees every scored group
    kept, n = sampler.filter_groups(results)            # no-op unless dynamic_filtering
    while n and len(kept) < B:                          # optional refill, capped by the driver
        extra = sampler.sample(B - len(kept), t, exclude=[p for p, _ in results])
        ...score, update, filter, extend kept / results...
    log(sampler.metrics([p for p, _ in kept]))

Dynamic filtering drops a group from the *policy* update only; the tracker should still see it
(an all-correct group is exactly how prioritized sampling learns a prompt is solved).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Collection, Iterable, Sequence

import numpy as np

from prompts.schema import PromptRow
from rl.rewards.scores import is_success

from .config import SamplerConfig, parse_sampler_config, sampler_config_to_dict
from .strategies import Strategy, make_strategy
from .tracker import PassRateTracker, check_unique_ids, label_of, label_sort_key, shown_ids

STATE_FORMAT = "thinkrl.sampler/1"
Group = tuple[str, Sequence[float]]


def filter_groups(
    results: Iterable[Group], success_threshold: float | None = None
) -> tuple[list[Group], int]:
    """Drop groups whose samples were all correct or all wrong (`rl.rewards.scores.is_success`:
    `is_correct`, or score >= success_threshold when one is configured).

    Under a group-mean baseline (k1.5's mirror-descent update uses the mean reward of the k
    samples) such groups have zero advantage and contribute no gradient, only batch dilution.
    Returns (kept groups in input order, number dropped). A group of one sample is always
    "all correct or all wrong", so k < 2 is refused rather than silently dropping everything.
    """
    kept: list[Group] = []
    dropped = 0
    for pid, scores in results:
        if len(scores) < 2:
            raise ValueError(
                f"dynamic filtering needs at least 2 samples per prompt; prompt {pid!r} has {len(scores)}"
            )
        succ = sum(is_success(s, success_threshold) for s in scores)
        if succ == 0 or succ == len(scores):
            dropped += 1
        else:
            kept.append((pid, scores))
    return kept, dropped


class PromptSampler:
    """Draws prompt ids per iteration; see the module docstring for the driver loop."""

    def __init__(self, cfg: SamplerConfig, rows: Sequence[PromptRow], seed: int) -> None:
        if not rows:
            raise ValueError("the prompt set is empty")
        self.cfg = cfg
        self.seed = int(seed)
        self.ids = [r.id for r in rows]
        check_unique_ids(self.ids)
        self._index = {pid: i for i, pid in enumerate(self.ids)}
        difficulties = [r.difficulty for r in rows]
        self._labels = [label_of(d) for d in difficulties]
        self.tracker = PassRateTracker(
            self.ids, difficulties, cfg.tracker, [r.pass_rate for r in rows]
        )
        self.strategy: Strategy = make_strategy(cfg, self.ids, difficulties)
        self._rng = np.random.default_rng(self.seed)
        self._round = _new_round(None)

    @property
    def kind(self) -> str:
        return self.cfg.kind

    # -- the per-iteration API -------------------------------------------------------------

    def sample(self, num_prompts: int, iteration: int, exclude: Collection[str] = ()) -> list[str]:
        """Draw `num_prompts` distinct ids (none of `exclude`) for `iteration`.

        Without replacement by successive sampling: each next pick is drawn ∝ weight among the
        prompts not yet picked, so the first pick follows the configured distribution exactly
        and large batches from small sets flatten toward uniform inclusion. Implemented as the
        Efraimidis–Spirakis key trick (smallest Exp(1)/w_i), one RNG call of fixed size per draw.
        Pass the ids already drawn this iteration as `exclude` when asking for replacements.
        """
        if num_prompts < 0:
            raise ValueError(f"num_prompts must be >= 0, got {num_prompts}")
        unknown = [p for p in exclude if p not in self._index]
        if unknown:
            raise ValueError(f"exclude names ids not in the prompt set: {shown_ids(unknown)}")
        if self._round["iteration"] != iteration:
            self._round = _new_round(iteration)
        if num_prompts == 0:
            return []
        mask = np.ones(len(self.ids), dtype=bool)
        mask[[self._index[p] for p in exclude]] = False
        cand = np.flatnonzero(mask)
        est = self.tracker.estimates()
        w = self.strategy.weights(iteration, cand, est) if len(cand) else np.zeros(0)
        eligible = int((w > 0).sum())
        if eligible < num_prompts:
            raise ValueError(
                f"asked for {num_prompts} prompts at iteration {iteration}, but only {eligible} "
                f"are eligible ({len(self.ids)} in the set, {len(self.ids) - len(cand)} excluded, "
                f"{len(cand) - eligible} with zero weight under the {self.kind} sampler)"
            )
        keys = np.full(len(cand), np.inf)
        e = self._rng.exponential(size=len(cand))
        pos = w > 0
        keys[pos] = e[pos] / w[pos]
        top = np.argpartition(keys, num_prompts - 1)[:num_prompts]
        top = top[np.argsort(keys[top], kind="stable")]
        chosen = [self.ids[i] for i in cand[top]]
        had = self.tracker.has_estimate()
        for i, pid in zip(cand[top], chosen):
            self._round["prior"][pid] = float(est[i])
            if not had[i]:
                self._round["unseen"].append(pid)
        self._round["drawn"] += num_prompts
        return chosen

    def update(self, iteration: int, results: Iterable[Group]) -> None:
        """Record this iteration's scored groups: (prompt id, its k scores in [0, 1]).
        "Correct" is `rl.rewards.scores.is_success` with tracker.success_threshold (default None:
        `is_correct`)."""
        self.tracker.update(iteration, results)

    def filter_groups(self, results: Iterable[Group]) -> tuple[list[Group], int]:
        """Dynamic filtering per config: with `dynamic_filtering` off, everything is kept.
        The dropped count is added to this iteration's `sampler_filtered` metric."""
        results = list(results)
        if not self.cfg.dynamic_filtering:
            return results, 0
        kept, dropped = filter_groups(results, self.cfg.tracker.success_threshold)
        self._round["filtered"] += dropped
        return kept, dropped

    def metrics(self, chosen_ids: Sequence[str]) -> dict[str, Any]:
        """Scalars / small dicts for metrics.jsonl and the dashboard, for the current iteration.

        sampler_difficulty_hist   {"<difficulty>": count} over chosen_ids ("none" = unlabeled)
        sampler_prior_pass_rate   mean pass-rate estimate of chosen_ids when they were drawn
                                  (before this iteration's update; the unseen prior for
                                  never-scored untagged prompts), omitted if chosen_ids is empty
        sampler_unseen_frac       fraction of chosen_ids whose estimate was that prior
        sampler_drawn             ids drawn this iteration, replacements included
        sampler_filtered          groups dropped by dynamic filtering this iteration
        pass_rate_by_difficulty   {"<difficulty>": mean tracked rate} (labels with data only)
        sampler_curriculum_mix    {"<label>": share} in force (curriculum; "/i" per mix member)
        """
        unknown = [p for p in chosen_ids if p not in self._index]
        if unknown:
            raise ValueError(f"metrics() got ids not in the prompt set: {shown_ids(unknown)}")
        hist = Counter(self._labels[self._index[p]] for p in chosen_ids)
        out: dict[str, Any] = {
            "sampler_difficulty_hist": {k: hist[k] for k in sorted(hist, key=label_sort_key)},
            "sampler_drawn": self._round["drawn"],
            "sampler_filtered": self._round["filtered"],
            "pass_rate_by_difficulty": self.tracker.pass_rate_by_difficulty(),
        }
        if chosen_ids:
            est = self.tracker.estimates()
            had = self.tracker.has_estimate()
            prior = self._round["prior"]
            unseen = set(self._round["unseen"])
            vals, flags = [], []
            for p in chosen_ids:
                i = self._index[p]
                vals.append(prior.get(p, float(est[i])))
                flags.append(p in unseen if p in prior else not had[i])
            out["sampler_prior_pass_rate"] = float(np.mean(vals))
            out["sampler_unseen_frac"] = float(np.mean(flags))
        it = self._round["iteration"]
        out.update(self.strategy.describe(0 if it is None else it, self.tracker.estimates()))
        return out

    # -- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: config, seed, tracker, RNG, and the current iteration's
        bookkeeping (for metrics). The 128-bit PCG64 words are decimal strings so any JSON
        reader keeps them exact."""
        bg = self._rng.bit_generator.state
        return {
            "format": STATE_FORMAT,
            "config": sampler_config_to_dict(self.cfg),
            "seed": self.seed,
            "rng": {
                "bit_generator": bg["bit_generator"],
                "state": str(bg["state"]["state"]),
                "inc": str(bg["state"]["inc"]),
                "has_uint32": int(bg["has_uint32"]),
                "uinteger": int(bg["uinteger"]),
            },
            "tracker": self.tracker.state_dict(),
            "round": {
                **self._round,
                "prior": dict(self._round["prior"]),
                "unseen": list(self._round["unseen"]),
            },
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, int]:
        """Restore a `state_dict()`. Nothing is changed if an error is raised.

        strict=True (resume): the saved config and seed must equal this sampler's, and the saved
        prompt ids must be exactly this prompt set, else ValueError naming the differing config
        fields or the missing/added ids. strict=False (deliberate change, e.g. a grown prompt
        set or a new schedule): config differences are accepted, tracker stats carry over for
        ids in both sets, new ids start fresh. Returns {"restored", "dropped", "new"} id counts.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a sampler state (format {state.get('format')!r}, want {STATE_FORMAT!r})")
        if strict:
            diffs = _diff(state["config"], sampler_config_to_dict(self.cfg))
            if int(state["seed"]) != self.seed:
                diffs.append(f"seed: saved {state['seed']}, current {self.seed}")
            if diffs:
                raise ValueError(
                    "sampler state was saved with a different configuration: "
                    + "; ".join(diffs)
                    + ". Pass strict=False to resume with the new settings deliberately."
                )
        parse_sampler_config(state["config"])  # a corrupt saved config fails before any change
        r = state["rng"]
        rng = np.random.default_rng()
        rng.bit_generator.state = {
            "bit_generator": r["bit_generator"],
            "state": {"state": int(r["state"]), "inc": int(r["inc"])},
            "has_uint32": int(r["has_uint32"]),
            "uinteger": int(r["uinteger"]),
        }
        report = self.tracker.load_state_dict(state["tracker"], strict=strict)  # checks ids first
        self._rng = rng
        rd = state["round"]
        self._round = _new_round(rd["iteration"])
        self._round["prior"] = {p: float(v) for p, v in rd["prior"].items() if p in self._index}
        self._round["unseen"] = [p for p in rd["unseen"] if p in self._index]
        self._round["drawn"] = int(rd["drawn"])
        self._round["filtered"] = int(rd["filtered"])
        return report


def build_sampler(
    cfg: SamplerConfig | dict[str, Any], rows: Sequence[PromptRow], seed: int
) -> PromptSampler:
    """Build the sampler for `rows`; `cfg` may be a plain dict (validated here).
    Fails at start on bad input: duplicate ids (named), a difficulty curriculum over rows
    without `difficulty` (field named), schedule labels absent from the set."""
    if isinstance(cfg, dict):
        cfg = parse_sampler_config(cfg)
    return PromptSampler(cfg, rows, seed)


def _new_round(iteration: int | None) -> dict[str, Any]:
    return {"iteration": iteration, "prior": {}, "unseen": [], "drawn": 0, "filtered": 0}


def _diff(saved: Any, current: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON trees, as 'a.b[0].c: saved X, current Y'."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for k in sorted(set(saved) | set(current)):
            sub = f"{path}.{k}" if path else str(k)
            out += _diff(saved.get(k, "<absent>"), current.get(k, "<absent>"), sub)
        return out
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current)) for d in _diff(a, b, f"{path}[{i}]")]
    same = saved == current
    if isinstance(saved, float) and isinstance(current, float):
        same = same or (math.isnan(saved) and math.isnan(current))
    return [] if same else [f"{path or 'config'}: saved {saved!r}, current {current!r}"]
