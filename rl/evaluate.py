"""Held-out evaluation: pass@1 (mean over samples) and unbiased pass@k, overall and per difficulty.

Shared by the SFT stage and the RL loop so "before" and "after" numbers are measured identically.
`generate` is any callable (requests, SamplingConfig) -> list[Generation]: a local `VLLMEngine`'s
`generate`, or `EngineGroup.generate` over Ray actors (`rollout.recovery`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from prompts.schema import PromptRow
from rl.length_stats import length_summary
from rl.rewards.scores import is_correct
from rl.scoring import Scorer
from rl.vision import VisionIO
from rollout.engine import Generation, SamplingConfig, encode_request


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, HumanEval)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


@dataclass
class EvalResult:
    pass_at_1: float
    pass_at_k: float
    k: int
    n: int  # prompts
    samples_per_prompt: int
    temperature: float
    response_len_mean: float
    wall_s: float
    by_difficulty: dict[str, float] = field(default_factory=dict)
    skipped_too_long: int = 0
    # rl.length_stats.length_summary of every sample (percentiles, truncated_frac, within-group CV)
    lengths: dict[str, float] = field(default_factory=dict)
    # per sample, in order: tokens, correct, prompt index (for histograms and re-analysis)
    samples: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    generate: Callable[[Sequence[Any], SamplingConfig], list[Generation]],
    tokenizer,
    rows: list[PromptRow],
    scorer: Scorer,
    *,
    samples: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    max_model_len: int,
    vision: VisionIO | None = None,
) -> EvalResult:
    """`vision`: the policy's image I/O (rl.vision.load_vision), needed when rows carry images."""
    t0 = time.perf_counter()
    prompts, kept, lengths = [], [], []
    for r in rows:
        req, n_tokens = encode_request(tokenizer, r, vision)
        if n_tokens + 1 > max_model_len:
            continue
        prompts.append(req)
        kept.append(r)
        lengths.append(n_tokens)
    sampling = SamplingConfig(
        n=samples, temperature=temperature, max_tokens=min(max_tokens, max_model_len - max(lengths)), seed=seed
    )
    gens = generate(prompts, sampling)
    texts = [g.text for g in gens]
    results = scorer.score_detailed([kept[g.prompt_index] for g in gens], texts, [g.finish_reason for g in gens])
    scores = [r.score for r in results]
    n_tok = [len(g.token_ids) for g in gens]
    ok = [r.correct for r in results]
    group = [g.prompt_index for g in gens]
    per_prompt: dict[int, list[float]] = defaultdict(list)
    for g, s in zip(gens, scores):
        per_prompt[g.prompt_index].append(s)
    p1 = [sum(v) / len(v) for v in per_prompt.values()]
    pk = [pass_at_k(len(v), sum(1 for x in v if is_correct(x)), len(v)) for v in per_prompt.values()]
    by_diff: dict[str, list[float]] = defaultdict(list)
    for i, v in per_prompt.items():
        by_diff[str(kept[i].difficulty)].append(sum(v) / len(v))
    return EvalResult(
        pass_at_1=sum(p1) / max(1, len(p1)),
        pass_at_k=sum(pk) / max(1, len(pk)),
        k=samples,
        n=len(kept),
        samples_per_prompt=samples,
        temperature=temperature,
        response_len_mean=sum(len(g.token_ids) for g in gens) / max(1, len(gens)),
        wall_s=time.perf_counter() - t0,
        by_difficulty={k: sum(v) / len(v) for k, v in sorted(by_diff.items())},
        skipped_too_long=len(rows) - len(kept),
        lengths=length_summary(n_tok, ok, [g.finish_reason == "length" for g in gens], group),
        samples={"tokens": n_tok, "correct": ok, "prompt": group},
    )
