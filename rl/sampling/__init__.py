"""Prompt sampling for RL iterations: pass-rate memory plus the Kimi k1.5 §2.3.4 samplers.

    from rl.sampling import build_sampler, parse_sampler_config

    sampler = build_sampler(parse_sampler_config(cfg_dict), rows, seed=cfg.seed)
    ids = sampler.sample(batch_size, iteration)
    sampler.update(iteration, [(pid, scores), ...])
    kept, num_filtered = sampler.filter_groups(results)
    metrics.update(sampler.metrics([pid for pid, _ in kept]))
    checkpoint["sampler"] = sampler.state_dict()        # JSON-serialisable
    sampler.load_state_dict(checkpoint["sampler"])      # on resume

Kinds: uniform, curriculum (schedule over difficulty labels or pass-rate bands), prioritized
(∝ max(1 - s_i, ε)), and mix (weighted mixture of the others). Importing this package has no
side effects.
"""

from .config import (
    CurriculumKeyframe,
    CurriculumSamplerConfig,
    CurriculumStrategy,
    MixComponent,
    MixSamplerConfig,
    MixStrategy,
    PrioritizedSamplerConfig,
    PrioritizedStrategy,
    SamplerConfig,
    TrackerConfig,
    UniformSamplerConfig,
    UniformStrategy,
    parse_sampler_config,
    sampler_config_to_dict,
)
from .sampler import STATE_FORMAT, PromptSampler, build_sampler, filter_groups
from .tracker import PassRateTracker, PromptStats

__all__ = [
    "STATE_FORMAT",
    "CurriculumKeyframe",
    "CurriculumSamplerConfig",
    "CurriculumStrategy",
    "MixComponent",
    "MixSamplerConfig",
    "MixStrategy",
    "PassRateTracker",
    "PrioritizedSamplerConfig",
    "PrioritizedStrategy",
    "PromptSampler",
    "PromptStats",
    "SamplerConfig",
    "TrackerConfig",
    "UniformSamplerConfig",
    "UniformStrategy",
    "build_sampler",
    "filter_groups",
    "parse_sampler_config",
    "sampler_config_to_dict",
]
