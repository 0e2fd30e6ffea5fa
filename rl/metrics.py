"""Run outputs: `metrics.jsonl` (one line per iteration), `samples.jsonl`, TensorBoard scalars.

Lines are flushed as written so the dashboard can follow a live run; dict-valued metrics (e.g.
`pass_rate_by_difficulty`) go to TensorBoard as one scalar per key (`pass_rate_by_difficulty/3`).
`rows` counts the lines of each log, which a checkpoint records so that a resume can cut the logs
back to it (`rl.checkpoint.prepare_run_dir`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def is_clock_key(key: str) -> bool:
    """Does this metrics key read a clock (a time or a rate), so that it differs between any two
    runs, even of one seed? (`time_*` phases, the learner's `learner_*_s` phases and tokens/s,
    wall and iteration seconds, the weight sync's.) Every other key of a seeded run repeats."""
    return (key.startswith("time_") or (key.startswith("learner_") and key.endswith("_s"))
            or key in ("wall_s", "iteration_s", "weight_sync_s", "rollout_tokens_per_s"))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; the dashboard shows a gap
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


METRICS_LOG = "metrics.jsonl"
SAMPLES_LOG = "samples.jsonl"
RUN_LOGS = (METRICS_LOG, SAMPLES_LOG)  # every per-iteration log a run appends to


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


class RunLogger:
    """`append`: continue logs that a resume has cut back to its checkpoint; `purge_step`
    (the resumed iteration) hides TensorBoard events of redone iterations from the old run."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, append: bool = False,
                 purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self.rows = {name: _count_lines(self.run_dir / name) if append else 0 for name in RUN_LOGS}
        self._metrics = (self.run_dir / METRICS_LOG).open(mode, encoding="utf-8")
        self._samples = (self.run_dir / SAMPLES_LOG).open(mode, encoding="utf-8")
        self._tb = None
        if tensorboard:
            # TensorBoard takes seconds to import; only runs that log to it
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)

    def log(self, metrics: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(_jsonable(metrics)) + "\n")
        self._metrics.flush()
        self.rows[METRICS_LOG] += 1
        if self._tb is not None:
            step = int(metrics.get("iteration", 0))
            for k, v in metrics.items():
                if isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                            self._tb.add_scalar(f"{k}/{kk}", vv, step)
                elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def samples(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self._samples.write(json.dumps(_jsonable(r), ensure_ascii=False) + "\n")
        self._samples.flush()
        self.rows[SAMPLES_LOG] += len(rows)

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()


class ProgressLine:
    """A plain progress line every `every_s` seconds (and at the last step), for logs that are
    not a terminal (`make demo > log`): `SFT step 120/500  loss 0.412  9812 tok/s  ETA 6m10s`.
    `clock` is injectable for tests."""

    def __init__(self, label: str, total: int, every_s: float = 30.0, clock=None, out=None):
        self.label, self.total, self.every_s = label, total, every_s
        self.clock = clock or time.perf_counter
        self.out = out or sys.stdout
        self.t0 = self.clock()
        self.last = self.t0

    def update(self, step: int, **fields: float) -> str | None:
        """`step` is 0-based; prints (and returns) a line when due, else None."""
        now = self.clock()
        done = step + 1
        if now - self.last < self.every_s and done < self.total:
            return None
        self.last = now
        eta = (now - self.t0) / done * (self.total - done)
        parts = [f"{self.label} step {done}/{self.total}"]
        parts += [f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                  for k, v in fields.items()]
        parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        line = "  ".join(parts)
        print(line, file=self.out, flush=True)
        return line
