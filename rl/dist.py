"""Distributed plumbing, kept at the edge: process-group init and the DeepSpeed engine.

Everything else in the learners is written for one rank and gets `rank`/`world_size` and its
`device` from here (issue 17): one device per rank, decided once in `init_distributed`. With CUDA
visible the rank owns one GPU and the process group is NCCL; otherwise the CPU and gloo. Either
way `DistInfo.device` is where every tensor of that rank's learner lives, collectives' operands
included (NCCL only takes CUDA tensors, gloo takes CPU ones).
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator


class NcclConfig(BaseModel):
    """Process-group settings of the learner ranks (`deepspeed.init_distributed` creates the group).
    On GPUs the group is NCCL; `env` is applied in every rank before the group exists."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(
        1800, gt=0, description="A collective that waits longer than this fails the run (gloo too): a rank "
        "that died or diverged must not hang the others forever"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="NCCL_* / TORCH_NCCL_* variables for every rank, e.g. "
        "NCCL_SOCKET_IFNAME (multi-node: the NIC between nodes), NCCL_IB_HCA, NCCL_DEBUG=WARN"
    )

    @field_validator("env")
    @classmethod
    def _nccl_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [k for k in env if not k.startswith(("NCCL_", "TORCH_NCCL_"))]
        if bad:
            raise ValueError(f"{bad}: only NCCL_* and TORCH_NCCL_* variables belong here")
        return env


class DeepSpeedConfig(BaseModel):
    """The subset of DeepSpeed settings a user of this toolkit changes."""

    model_config = ConfigDict(extra="forbid")
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="ZeRO stage (0: plain data parallel)")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 compute with fp32 master weights; auto = on where the hardware has fast bf16"
    )
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    nccl: NcclConfig = Field(default_factory=NcclConfig, description="Process group: timeout, NCCL environment")


@dataclass
class DistInfo:
    """This rank's place in the process group and its one device (collectives' operands too)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def bf16_supported() -> bool:
    """bf16 is fast on GPUs from Ampere on and on CPUs with AMX/AVX512-BF16 (docs/INSTALL.md,
    "bf16 on CPU": ~7x fp32 on this box); elsewhere we keep fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_device(rank: int) -> torch.device:
    """The one device of a learner rank: its GPU when CUDA is visible (LOCAL_RANK if a launcher
    set it, else rank modulo the visible GPUs; a Ray actor with num_gpus=1 sees exactly one),
    else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    n = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_RANK", rank % n))
    if not 0 <= local < n:
        raise RuntimeError(f"rank {rank}: LOCAL_RANK={local} but only {n} GPU(s) are visible")
    return torch.device("cuda", local)


def init_distributed(rank: int | None = None, world_size: int | None = None, master: str | None = None,
                     nccl: NcclConfig | None = None) -> DistInfo:
    """Join (or create) the torch process group. Single process needs no launcher: we default to
    rank 0 of 1 on a free loopback port. Ray-launched learner ranks pass rank/world/master.

    The rank's device (`rank_device`) is made the current CUDA device before the group exists,
    so DeepSpeed places the model there (it uses the current device) and NCCL's communicator is
    bound to it; the backend follows the device (NCCL for a GPU, gloo for the CPU)."""
    import deepspeed  # DeepSpeed takes seconds to import (it probes accelerators)

    nccl = nccl or NcclConfig()
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if master:
        host, port = master.rsplit(":", 1)
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, port
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
    device = rank_device(rank)
    os.environ["LOCAL_RANK"] = str(device.index or 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        os.environ.update(nccl.env)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                                   auto_mpi_discovery=False, timeout=datetime.timedelta(seconds=nccl.timeout_s))
    return DistInfo(rank, world_size, device.index or 0, device)


def build_deepspeed(model: torch.nn.Module, cfg: DeepSpeedConfig, lr_lambda=None,
                    param_groups: list[list[torch.nn.Parameter]] | None = None) -> tuple[Any, bool]:
    """Wrap `model` in a DeepSpeed engine with AdamW and an optional LR-multiplier schedule.

    `param_groups`: AdamW parameter groups (default one group of all parameters); `lr_lambda` is
    then one multiplier function per group, as `torch.optim.lr_scheduler.LambdaLR` takes them
    (the SFT decoder freeze keeps the decoder's group at 0 for its first steps).

    Gradient accumulation is unmanaged (`managed_gradient_accumulation: false`): the learner calls
    `backward` once per packed micro-batch (their number varies with the token budget) and
    `step` once per optimizer step. Losses are pre-normalised by global token/group counts, so we
    pass `scale_wrt_gas=False` at backward. Returns (engine, bf16_enabled).
    """
    import deepspeed  # DeepSpeed takes seconds to import (it probes accelerators)

    use_bf16 = bf16_supported() if cfg.bf16 == "auto" else bool(cfg.bf16)
    groups = param_groups if param_groups is not None else [list(model.parameters())]
    optimizer = torch.optim.AdamW(  # frozen parameters (e.g. a frozen vision tower) get no state
        [{"params": [p for p in g if p.requires_grad]} for g in groups], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) if lr_lambda else None
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": use_bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine, use_bf16
