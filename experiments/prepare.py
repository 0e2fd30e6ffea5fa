"""What the demo does before SFT: write the embedded task's data files and build the tiny starting
model. `cot_sft.train` takes an `init_checkpoint` and data files and knows nothing of the demo;
this module is the demo side (docs/ARCHITECTURE.md: `experiments` sits above the entry points).

    python -m experiments.prepare --config experiments/configs/prep_demo.yaml

A task's files are generated only when its `sft.jsonl` is missing; the tiny model is rebuilt
each time (seeded, a few seconds), as SFT used to build it into `<run>/init`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from experiments import arith, arith_align, arith_image, long_cot
from experiments.tiny_model import build_tiny_checkpoint
from experiments.tiny_vlm import build_tiny_vlm_checkpoint
from rl.configio import ConfigError, load_config

GENERATORS = {"arith": arith.main, "arith_image": arith_image.main, "arith_align": arith_align.main,
              "long_cot": long_cot.main}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelSpec(_Strict):
    """The embedded tiny model (the CPU default): a Qwen2 (text demo) or a Kimi-K2.5 VLM, MoonViT
    tower + DeepSeek-V3 MoE decoder (image demo)."""

    out: str = Field(description="Checkpoint directory to write (the SFT config's init_checkpoint)")
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


class TaskSpec(_Strict):
    task: Literal["arith", "arith_image", "arith_align", "long_cot"] = Field(
        description="arith: short traces (arith.py); arith_image: the expressions rendered into images "
        "(arith_image.py); arith_align: image->text pairs for vision alignment (arith_align.py); "
        "long_cot: traces with checks and re-checks of variable length (long_cot.py)"
    )
    out: str = Field(description="Directory of {sft,train,eval}.jsonl (and images/)")
    seed: int = Field(0, description="Seed of the generated task")
    max_level: int | None = Field(
        None, ge=1, description="arith_image: keep levels up to this one (all splits; None: levels 1-6)"
    )


class PrepConfig(_Strict):
    tasks: list[TaskSpec] = Field(default_factory=list, description="Task data to write if missing")
    tiny_model: TinyModelSpec | None = Field(None, description="The starting model to build")


def write_task(t: TaskSpec) -> None:
    if (Path(t.out) / "sft.jsonl").exists():
        return
    args = ["--out", t.out, "--seed", str(t.seed)]
    if t.max_level is not None:
        if t.task != "arith_image":
            raise ConfigError(f"tasks: max_level applies to the image task (task: arith_image), not {t.task}")
        args += ["--max-level", str(t.max_level)]
    GENERATORS[t.task](args)


def build_model(spec: TinyModelSpec) -> Path:
    if spec.kind == "kimi_k25":
        return build_tiny_vlm_checkpoint(
            spec.out, seed=spec.seed, vision_hidden=spec.vision_hidden, vision_layers=spec.vision_layers,
            hidden_size=spec.hidden_size, num_layers=spec.num_layers, intermediate_size=spec.intermediate_size,
            moe_intermediate_size=spec.moe_intermediate_size, n_routed_experts=spec.n_routed_experts,
            experts_per_tok=spec.experts_per_tok,
        )
    return build_tiny_checkpoint(
        spec.out, seed=spec.seed, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, intermediate_size=spec.intermediate_size, max_positions=spec.max_positions,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = ap.parse_args(argv)
    cfg = load_config(PrepConfig, args.config, args.set)
    for t in cfg.tasks:
        write_task(t)
    if cfg.tiny_model is not None:
        print(f"tiny {cfg.tiny_model.kind} model at {build_model(cfg.tiny_model)}")


if __name__ == "__main__":
    main()
