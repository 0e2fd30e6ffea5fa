"""Typed config of the long-CoT SFT warm start (`cot_sft/train.py`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rl.dist import DeepSpeedConfig
from rollout.engine import EngineConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SFTData(_Strict):
    train_file: str = Field(description="SFT rows: prompt-row fields plus `response` (the assistant CoT)")
    max_seq_len: int = Field(1024, gt=0, description="Longer examples are dropped and counted")
    max_examples: int | None = Field(None, gt=0, description="Use at most this many rows (after validation)")


class SFTTrain(_Strict):
    max_steps: int = Field(400, gt=0, description="Optimizer steps")
    tokens_per_step: int = Field(32768, gt=0, description="Tokens per optimizer step (all ranks), packed")
    tokens_per_microbatch: int = Field(8192, gt=0, description="Token budget per forward pass (all rows)")
    row_tokens: int = Field(1024, gt=0, description="Packed row length; attention costs O(row_tokens^2) per row")
    short_row_tokens: int | None = Field(
        None, gt=0, description="Long-CoT data: examples up to this length share rows of this size, longer "
        "ones get a row each (rl.packing.plan_rows); None: every row is row_tokens"
    )
    warmup_steps: int = Field(20, ge=0, description="Linear LR warm-up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay floor as a fraction of peak LR")
    seed: int = Field(0, description="Data order and init seed")
    time_budget_s: float | None = Field(None, gt=0, description="Stop early after this many seconds of training")
    freeze_decoder_steps: int = Field(
        0, ge=0, description="Vision alignment (issue 19): for this many first steps only the vision tower and "
        "projector learn, the decoder's weights stay exactly as loaded; then it joins, its LR warming up again "
        "over warmup_steps (cot_sft/vision_groups.py). 0: everything trains from the start. "
        "Vision-language policies only"
    )
    vision_lr_ratio: float = Field(
        1.0, gt=0, le=1, description="LR of the vision tower and projector as a fraction of optim.lr "
        "(cot_sft/vision_groups.py; the image demo uses 0.5 in alignment and 0.25 in SFT: at the decoder's LR the "
        "projector output collapsed onto one vector). "
        "Vision-language policies only"
    )


class SFTEval(_Strict):
    file: str | None = Field(None, description="Held-out prompt rows; None skips evaluation")
    num_prompts: int = Field(420, gt=0, description="Evaluate on the first N rows")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for pass@1")
    samples: int = Field(1, ge=1, description="Samples per prompt (pass@1 averages over them)")
    max_tokens: int = Field(768, gt=0, description="Max response tokens")
    seed: int = Field(1234, description="Sampling seed")
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model="<set at run time>", kv_cache_gib=0.5),
        description="vLLM settings for the eval engine (`model` is set to the trained checkpoint)",
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _model_set_at_run_time(cls, v: Any) -> Any:
        # `model` is required by EngineConfig but is the trained checkpoint here: an `engine:`
        # section (or `--set eval.engine.kv_cache_gib=...`) need not name it.
        if isinstance(v, dict) and "model" not in v:
            return {**v, "model": "<set at run time>"}
        return v


class SFTConfig(_Strict):
    run_name: str = Field("sft", description="Outputs go to <output_dir>/<run_name>/")
    output_dir: str = Field("runs", description="Root of run directories")
    init_checkpoint: str = Field(
        description="HF checkpoint to start from (the demo builds its tiny model first: experiments/prepare.py)"
    )
    data: SFTData
    train: SFTTrain = Field(default_factory=SFTTrain)
    optim: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    eval: SFTEval = Field(default_factory=SFTEval)

    @model_validator(mode="after")
    def _examples_fit_rows(self) -> "SFTConfig":
        # Checked here, not at the first packed step: a kept example longer than a row, or a row
        # longer than a micro-batch, would otherwise stop the run after training has started.
        d, t = self.data, self.train
        if d.max_seq_len > t.row_tokens:
            raise ValueError(
                f"data.max_seq_len ({d.max_seq_len}) > train.row_tokens ({t.row_tokens}): a kept example "
                "must fit in one packed row"
            )
        if t.freeze_decoder_steps > t.max_steps:
            raise ValueError(
                f"train.freeze_decoder_steps ({t.freeze_decoder_steps}) > train.max_steps ({t.max_steps}): the "
                "decoder would never be unfrozen; set it to max_steps to train only the vision side"
            )
        if t.row_tokens > t.tokens_per_microbatch:
            raise ValueError(
                f"train.row_tokens ({t.row_tokens}) > train.tokens_per_microbatch ({t.tokens_per_microbatch})"
            )
        return self
