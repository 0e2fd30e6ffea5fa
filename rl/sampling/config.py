"""Typed sampler configuration.

`SamplerConfig` is a union discriminated by `kind`, so a YAML block reads flat:

    sampler:
      kind: prioritized          # uniform | curriculum | prioritized | mix
      floor: 0.05                # prioritized only
      tracker: {decay: 0.5, unseen_prior: 0.5}
      dynamic_filtering: true

`tracker` and `dynamic_filtering` live on the top-level sampler only: a mix has one pass-rate
memory and one filtering policy, so its components (`MixComponent.sampler`) are the bare strategy
models, and a `tracker` key inside a component is rejected like any other unknown key.
Every model forbids extra keys, so a typo is an error naming the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _labels_to_str(v: Any) -> Any:
    # YAML gives `{3: 0.5}` int keys for difficulty labels; labels are compared as strings
    # everywhere (metrics use {"3": ...}), so accept ints and normalise once here.
    if isinstance(v, dict):
        return {str(k): x for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return v


class TrackerConfig(_Strict):
    """Pass-rate memory shared by every strategy of one sampler."""

    decay: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="EWMA weight on the previous rate: rate <- decay*rate + (1-decay)*batch_rate, "
        "one step per iteration in which the prompt was scored. 0 keeps only the latest group; "
        "values near 1 average over many visits (slow to follow a changing policy).",
    )
    success_threshold: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="None: a sample is a success when it is correct (rl.rewards.scores.is_correct, the "
        "one definition). A value: score >= it, for partial-credit verifiers.",
    )
    unseen_prior: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Pass-rate estimate used for a prompt never scored and without a tagged "
        "pass_rate. Prioritized sampling gives it weight max(1 - prior, floor); pass-rate bands "
        "place it in the band containing the prior.",
    )
    use_tagged_pass_rate: bool = Field(
        True,
        description="Seed the EWMA rate from the prompt rows' `pass_rate` column where present "
        "(k1.5 §2.1 tags difficulty by an SFT model's pass rate over 10 samples).",
    )


class UniformStrategy(_Strict):
    """Every prompt equally likely."""

    kind: Literal["uniform"] = Field("uniform", description="Discriminator.")


class PrioritizedStrategy(_Strict):
    """k1.5 §2.3.4 prioritized sampling: P(i) ∝ 1 - s_i, floored at `floor`."""

    kind: Literal["prioritized"] = Field("prioritized", description="Discriminator.")
    floor: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="Minimum weight ε: weight_i = max(1 - s_i, ε), so solved prompts (s_i = 1) "
        "still recur and a regression on them can be noticed. ε = 1 is uniform sampling.",
    )


class CurriculumKeyframe(_Strict):
    """The difficulty mix from `iteration` on (held, or interpolated to the next keyframe)."""

    iteration: int = Field(ge=0, description="Iteration at which this mix applies.")
    mix: dict[str, float] | None = Field(
        None,
        description="Share of draws per label (difficulty label like \"3\", or band name); "
        "normalised; labels left out get 0. Within a label prompts are uniform.",
    )
    only: list[str] | None = Field(
        None,
        description="Alternative to `mix`: draw uniformly over the prompts whose label is in "
        "this list (their natural proportions). With neither `mix` nor `only`: uniform over all.",
    )

    @field_validator("mix", "only", mode="before")
    @classmethod
    def _norm_labels(cls, v: Any) -> Any:
        return _labels_to_str(v)

    @model_validator(mode="after")
    def _one_of(self) -> "CurriculumKeyframe":
        if self.mix is not None and self.only is not None:
            raise ValueError("give either `mix` or `only`, not both")
        if self.mix is not None:
            if any(w < 0 for w in self.mix.values()):
                raise ValueError("`mix` shares must be >= 0")
            if sum(self.mix.values()) <= 0:
                raise ValueError("`mix` shares must not all be 0")
        if self.only is not None and not self.only:
            raise ValueError("`only` must name at least one label")
        return self

    def labels(self) -> set[str]:
        if self.mix is not None:
            return {k for k, w in self.mix.items() if w > 0}
        return set(self.only or ())


class CurriculumStrategy(_Strict):
    """k1.5 §2.3.4 curriculum sampling: a schedule over difficulty labels or pass-rate bands.

    The paper's curriculum ablation ("uniform, then hard only after iteration N"):

        kind: curriculum
        schedule: [{iteration: 0}, {iteration: 200, only: [4, 5]}]

    A smooth easy -> hard shift:

        kind: curriculum
        interpolation: linear
        schedule:
          - {iteration: 0,   mix: {1: 0.6, 2: 0.3, 3: 0.1}}
          - {iteration: 500, mix: {1: 0.1, 2: 0.3, 3: 0.6}}
    """

    kind: Literal["curriculum"] = Field("curriculum", description="Discriminator.")
    by: Literal["difficulty", "pass_rate"] = Field(
        "difficulty",
        description="Label prompts by their `difficulty` field (every row must have one), or by "
        "the band containing their current tracked pass rate (works on untagged sets).",
    )
    bands: dict[str, tuple[float, float]] | None = Field(
        None,
        description="by=pass_rate only: band name -> [low, high), tiling [0, 1] (the last band "
        "includes 1.0), e.g. {hard: [0, 0.3], medium: [0.3, 0.7], easy: [0.7, 1]}.",
    )
    schedule: list[CurriculumKeyframe] = Field(
        min_length=1,
        description="Keyframes with strictly increasing `iteration`; before the first keyframe "
        "its mix applies, after the last the last one holds.",
    )
    interpolation: Literal["step", "linear"] = Field(
        "step",
        description="step: a keyframe's mix holds until the next keyframe; linear: shares move "
        "linearly between consecutive keyframes (a smooth easy -> hard shift).",
    )

    @model_validator(mode="after")
    def _check(self) -> "CurriculumStrategy":
        its = [k.iteration for k in self.schedule]
        if any(b <= a for a, b in zip(its, its[1:])):
            raise ValueError(f"schedule iterations must be strictly increasing, got {its}")
        if self.by == "difficulty":
            if self.bands is not None:
                raise ValueError("`bands` is only used with by: pass_rate")
            return self
        if not self.bands:
            raise ValueError("by: pass_rate needs `bands` (name -> [low, high) tiling [0, 1])")
        spans = sorted(self.bands.values())
        edges_ok = spans[0][0] == 0.0 and spans[-1][1] == 1.0
        edges_ok = edges_ok and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        if not edges_ok or any(lo >= hi for lo, hi in spans):
            raise ValueError(f"`bands` must tile [0, 1] without gaps or overlaps, got {self.bands}")
        for k in self.schedule:
            unknown = sorted(k.labels() - set(self.bands))
            if unknown:
                raise ValueError(
                    f"keyframe at iteration {k.iteration} names bands {unknown} not in "
                    f"`bands` ({sorted(self.bands)})"
                )
        return self


ComponentStrategy = Annotated[
    Union[UniformStrategy, CurriculumStrategy, PrioritizedStrategy], Field(discriminator="kind")
]


class MixComponent(_Strict):
    """One weighted member of a mix."""

    weight: float = Field(gt=0.0, description="Relative weight (weights are normalised).")
    sampler: ComponentStrategy = Field(description="The strategy (uniform/curriculum/prioritized).")


class MixStrategy(_Strict):
    """Draw from the mixture Σ_c w_c · P_c of the components' distributions."""

    kind: Literal["mix"] = Field("mix", description="Discriminator.")
    components: list[MixComponent] = Field(min_length=1, description="Weighted strategies.")


class _SamplerSettings(_Strict):
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Pass-rate memory settings."
    )
    dynamic_filtering: bool = Field(
        False,
        description="`filter_groups` drops groups whose k samples were all correct or all wrong "
        "(no learning signal under a group-mean baseline) so the driver can draw replacements.",
    )


class UniformSamplerConfig(_SamplerSettings, UniformStrategy):
    """Uniform sampler."""


class PrioritizedSamplerConfig(_SamplerSettings, PrioritizedStrategy):
    """Prioritized sampler."""


class CurriculumSamplerConfig(_SamplerSettings, CurriculumStrategy):
    """Curriculum sampler."""


class MixSamplerConfig(_SamplerSettings, MixStrategy):
    """Weighted mix of samplers sharing one tracker."""


SamplerConfig = Annotated[
    Union[UniformSamplerConfig, CurriculumSamplerConfig, PrioritizedSamplerConfig, MixSamplerConfig],
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(SamplerConfig)


def parse_sampler_config(data: dict[str, Any]) -> SamplerConfig:
    """Validate a plain dict (e.g. a YAML block) into a SamplerConfig."""
    return _ADAPTER.validate_python(data)


def sampler_config_to_dict(cfg: SamplerConfig) -> dict[str, Any]:
    """JSON-ready dict that `parse_sampler_config` reads back to an equal config."""
    return cfg.model_dump(mode="json")

