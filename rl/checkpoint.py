"""Trainer state next to the learner's checkpoint: iteration, sampler state, RNG seeds, wall time.

Layout of one checkpoint (`runs/<run>/checkpoints/iter_NNNNN/`):
    policy/           HF checkpoint (vLLM and transformers load it)
    deepspeed/        DeepSpeed engine + optimizer state (all ranks)
    trainer_state.json
The state file is written last (atomically), so a checkpoint without it is incomplete and
`latest_checkpoint` skips it: a run killed mid-save resumes from the previous one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"


def save_trainer_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / (STATE_FILE + ".tmp")
    with tmp.open("w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(ckpt_dir / STATE_FILE)


def load_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(ckpt_dir) / STATE_FILE).read_text())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if (p / STATE_FILE).exists())
    return done[-1] if done else None
