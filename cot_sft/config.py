"""Typed config of the long-CoT SFT warm start (`cot_sft/train.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rl.dist import DeepSpeedConfig
from rollout.engine import EngineConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelSpec(_Strict):
    """Build an embedded tiny model instead of loading a checkpoint (the CPU default): a Qwen2
    (text demo) or a Kimi-K2.5 VLM, MoonViT tower + DeepSeek-V3 MoE decoder (image demo)."""

    kind: Literal["qwen2", "kimi_k25"] = Field("qwen2", description="Architecture (experiments/tiny_model.py, tiny_vlm.py)")
    seed: int = Field(0, description="Init seed")
    hidden_size: int = Field(256, gt=0, description="Decoder width")
    num_layers: int = Field(4, gt=0, description="Decoder layers")
    intermediate_size: int = Field(1024, gt=0, description="MLP width (kimi_k25: the dense first layer)")
    max_positions: int = Field(2048, gt=0, description="Qwen2: longest sequence (prompt + response) in tokens")
    moe_intermediate_size: int = Field(256, gt=0, description="kimi_k25: width of each routed expert")
    n_routed_experts: int = Field(4, gt=0, description="kimi_k25: routed experts per MoE layer")
    experts_per_tok: int = Field(2, gt=0, description="kimi_k25: experts each token is routed to")
    vision_hidden: int = Field(64, gt=0, description="kimi_k25: MoonViT width")
    vision_layers: int = Field(2, gt=0, description="kimi_k25: MoonViT blocks")


class SFTData(_Strict):
    train_file: str = Field(description="SFT rows: prompt-row fields plus `response` (the assistant CoT)")
    generate_arith: bool = Field(
        False, description="Generate the embedded arithmetic task into the data files' directory if missing"
    )
    arith_modality: Literal["text", "image"] = Field(
        "text", description="Embedded task: expressions in the prompt text, or rendered into images"
    )
    arith_trace: Literal["short", "long"] = Field(
        "short", description="Text task's SFT traces: short (arith.py) or long-CoT with checks and re-checks "
        "of variable length (long_cot.py)"
    )
    arith_max_level: int | None = Field(
        None, ge=1, description="Image task: keep levels up to this one (all splits; None: levels 1-6)"
    )
    arith_seed: int = Field(0, description="Seed of the generated task")
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
    init_checkpoint: str | None = Field(None, description="HF checkpoint to start from")
    build_tiny: TinyModelSpec | None = Field(None, description="Or build the embedded tiny model")
    data: SFTData
    train: SFTTrain = Field(default_factory=SFTTrain)
    optim: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    eval: SFTEval = Field(default_factory=SFTEval)

    @model_validator(mode="after")
    def _examples_fit_rows(self) -> "SFTConfig":
        # Checked here, not at the first packed step: a kept example longer than a row, or a row
        # longer than a micro-batch, would otherwise stop the run after training has started.
        d, t = self.data, self.train
        if d.arith_trace == "long" and d.arith_modality == "image":
            raise ValueError("data.arith_trace 'long' is a text task; the image task has short traces "
                             "(set data.arith_modality: text)")
        if d.max_seq_len > t.row_tokens:
            raise ValueError(
                f"data.max_seq_len ({d.max_seq_len}) > train.row_tokens ({t.row_tokens}): a kept example "
                "must fit in one packed row"
            )
        if t.row_tokens > t.tokens_per_microbatch:
            raise ValueError(
                f"train.row_tokens ({t.row_tokens}) > train.tokens_per_microbatch ({t.tokens_per_microbatch})"
            )
        return self
