"""Checkpoints of an RL run and resuming from them (issue 16): atomic, regular, the last N kept, and
a resume that never duplicates a metric row.

Layout of a run's checkpoints (`runs/<run>/checkpoints/`):
    iter_NNNNN/            one complete checkpoint
        policy/            HF checkpoint (vLLM and transformers load it)
        deepspeed/         DeepSpeed engine + optimizer state (all ranks)
        rng/rank_R.json    each learner rank's RNG states
        trainer_state.json `TrainerState`: iteration, sampler + tracker, driver RNG, log offsets,
                           the partial-rollout replay buffer
    iter_NNNNN.tmp/        a checkpoint being written (a crash leaves it; the next save removes it)
    latest                 the name of the newest complete checkpoint, replaced atomically

A save writes everything into `iter_NNNNN.tmp`, renames it to `iter_NNNNN`, then points `latest` at
it. A crash at any point leaves `latest` naming a complete checkpoint: the learner rank killed
during a save in the issue's measurements left a directory that only the absence of
trainer_state.json marked as incomplete. `latest_checkpoint` trusts only the marker (runs from
before it fall back to the newest directory with a state file).

Resume equals never stopping for the logs: the state records how many rows of each per-iteration
log (metrics.jsonl, samples.jsonl) were written through its iteration, and `prepare_run_dir` cuts
the logs back to those rows before the run goes on, so redone iterations replace their rows (the
issue measured 0, 1, 2, 3, 2, 3, 4, ... after a resume that appended). A learner rank that dies
in-run sends the run back to its latest checkpoint the same way, without a new process
(rl/train.py, rl/learner_group.py): `prepare_run_dir` and `restore_driver` serve both.

And for the samples: vLLM's own generator starts over in every new engine process, so each rollout
call is seeded from (seed, iteration, call) (`rollout_seed`); a resumed run's engines then sample
what the uninterrupted run's did (tests/test_resume_equals_never_stopping.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl.metrics import RUN_LOGS
from rollout.engine import stable_seed

STATE_FILE = "trainer_state.json"
MARKER = "latest"
TMP_SUFFIX = ".tmp"
CKPT_RE = re.compile(r"^iter_(\d+)$")


@dataclass
class TrainerState:
    """Driver-side state of one checkpoint (the learner's is in policy/ and deepspeed/)."""

    iteration: int  # the last finished iteration; a resume starts at iteration + 1
    seed: int
    sampler: dict[str, Any]  # `Sampler.state_dict()`: pass-rate tracker + its RNG
    wall_s: float  # wall time so far (a resumed run's clock continues from it)
    start_eval: dict | None = None  # the held-out eval at iteration 0 (not redone on resume)
    # Rows of each run log written through `iteration`; None in checkpoints from before issue 16.
    log_rows: dict[str, int] | None = None
    rng: dict[str, Any] | None = None  # `rng_state()` of the driver
    skipped_updates: int = 0  # running count of iterations without an optimizer step
    engine_restarts: int = 0  # running count of engines replaced after dying (rollout.recovery)
    learner_restarts: int = 0  # running count of learner group restarts after a rank died (rl.learner_group)
    redone_iterations: int = 0  # running count of iterations redone after those restarts
    # Partial rollouts: `rl.partial.ReplayBuffer.state_dict()` after the iteration's complete groups were
    # trained on (None: partial rollouts off, or a checkpoint from before them)
    replay_buffer: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainerState":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ResumePoint:
    """Where a run starts: a checkpoint (or none) and what was cut from its logs to match it."""

    checkpoint: Path | None = None
    state: TrainerState | None = None
    log_rows: dict[str, int] = field(default_factory=dict)  # rows each log holds now
    dropped_rows: dict[str, int] = field(default_factory=dict)  # rows cut (redone iterations, a torn line)
    missing_rows: dict[str, int] = field(default_factory=dict)  # rows the checkpoint counted but the log lacks

    @property
    def start_iteration(self) -> int:
        return 0 if self.state is None else self.state.iteration + 1

    def policy(self, initial: str) -> str:
        """The policy the learner starts from: the checkpoint's, else the run's `initial` one."""
        return initial if self.checkpoint is None else str(self.checkpoint / "policy")

    def describe(self) -> str:
        """What a resume did, for the run's log."""
        if self.checkpoint is None:
            first = "--resume: no complete checkpoint yet, starting at iteration 0"
        else:
            first = f"resuming from {self.checkpoint} at iteration {self.start_iteration}"
        return "\n".join([first, *self.log_changes()])

    def log_changes(self) -> list[str]:
        """What was cut from the logs, and rows they lack (also printed after a learner restart)."""
        lines = []
        dropped = [f"{n} from {name}" for name, n in self.dropped_rows.items() if n]
        if dropped:
            lines.append(f"  logs cut back to the checkpoint (redone iterations, a torn last line): "
                         f"dropped {' and '.join(dropped)} rows")
        for name, n in self.missing_rows.items():
            lines.append(f"  warning: {name} has {n} rows fewer than the checkpoint recorded")
        return lines


class RunExistsError(FileExistsError):
    pass


# -- RNG states (JSON, so a checkpoint stays readable) -------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    """The process's Python, NumPy and torch (CPU, and CUDA when present) RNG states."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": [version, list(words), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# -- rollout seeds ------------------------------------------------------------------------------

def rollout_seed(seed: int, iteration: int, call: int) -> int:
    """The base seed of an iteration's `call`-th rollout (0: the prompts drawn first, 1: the
    replacements after dynamic filtering), a hash of the three that is the same in every process.

    Without it vLLM samples from the engine's own generator, which starts over from the engine
    seed in every new engine process: a run resumed after iteration j would sample iteration j+1
    with the random stream an uninterrupted run used at iteration 0, and so would an engine
    replaced in-run, while iterations redone after a learner restart would continue the stream
    where the first attempt left it. With a seed per call (and per sample within it,
    `rollout.engine.SamplingConfig.seed`) the samples depend only on the run's seed, the
    iteration, the prompts drawn and the weights."""
    return stable_seed(seed, "rollout", iteration, call)


# -- atomic files ------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    _write_atomic(Path(path), json.dumps(obj))


def save_trainer_state(ckpt_dir: str | Path, state: TrainerState) -> None:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ckpt_dir / STATE_FILE, asdict(state))


def load_trainer_state(ckpt_dir: str | Path) -> TrainerState:
    return TrainerState.from_dict(json.loads((Path(ckpt_dir) / STATE_FILE).read_text()))


# -- writing checkpoints -------------------------------------------------------------------------


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:05d}"


def checkpoint_due(iteration: int, is_last: bool, every: int, every_minutes: float, since_last_s: float) -> bool:
    """Save after this iteration? At the last one; every `every` iterations; and when
    `every_minutes` have passed since the last save (0 turns either cadence off)."""
    by_iterations = every > 0 and (iteration + 1) % every == 0
    by_time = every_minutes > 0 and since_last_s >= every_minutes * 60
    return is_last or by_iterations or by_time


def begin_checkpoint(run_dir: str | Path, iteration: int) -> Path:
    """An empty staging directory for iteration's checkpoint. Staging directories left by a crash
    (any `*.tmp`) are removed."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for p in root.glob("*" + TMP_SUFFIX):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    staging = root / (checkpoint_name(iteration) + TMP_SUFFIX)
    staging.mkdir()
    return staging


def commit_checkpoint(staging: str | Path, keep: int) -> tuple[Path, list[Path]]:
    """Publish a fully written staging directory: rename it, point the marker at it, then prune.
    Keeps the `keep` newest checkpoints up to this one (0: all); later ones belong to a timeline
    abandoned by a resume (their iterations are being redone) and go too. Returns the checkpoint
    and the directories removed."""
    staging = Path(staging)
    if not staging.name.endswith(TMP_SUFFIX) or not (staging / STATE_FILE).is_file():
        raise ValueError(f"{staging} is not a finished staging checkpoint (no {STATE_FILE})")
    final = staging.with_name(staging.name[: -len(TMP_SUFFIX)])
    if final.exists():  # written by an abandoned timeline: this one replaces it
        shutil.rmtree(final)
    staging.rename(final)
    _write_atomic(final.parent / MARKER, final.name + "\n")
    return final, prune_checkpoints(final.parent, keep)


def _iteration(p: Path) -> int | None:
    m = CKPT_RE.match(p.name)
    return int(m.group(1)) if m and p.is_dir() else None


def prune_checkpoints(root: str | Path, keep: int) -> list[Path]:
    """Delete checkpoints other than the `keep` newest up to the marked one (0: keep all older
    ones) and any newer than it. The marked checkpoint is never deleted."""
    root = Path(root)
    marked = root / (root / MARKER).read_text().strip()
    top = _iteration(marked)
    if top is None:
        raise ValueError(f"{root / MARKER} names {marked.name}, not a checkpoint directory")
    done = sorted((i, p) for p in root.iterdir() if (i := _iteration(p)) is not None)
    older = [p for i, p in done if i <= top and p != marked]
    gone = [p for i, p in done if i > top]
    if keep > 0:
        gone += older[: max(0, len(older) - (keep - 1))]
    for p in gone:
        shutil.rmtree(p)
    return gone


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint the marker names; without a marker (runs from before issue 16), the newest
    `iter_N` directory holding a state file. A staging (`.tmp`) directory is never one."""
    root = Path(run_dir) / "checkpoints"
    marker = root / MARKER
    if marker.is_file():
        p = root / marker.read_text().strip()
        if not (p / STATE_FILE).is_file():
            raise FileNotFoundError(f"{marker} names {p}, which is missing or has no {STATE_FILE}")
        return p
    if not root.is_dir():
        return None
    done = sorted((i, p) for p in root.iterdir() if (i := _iteration(p)) is not None and (p / STATE_FILE).is_file())
    return done[-1][1] if done else None


# -- run directory: refuse to overwrite, or cut the logs back to the checkpoint -----------------


def refuse_existing_run(run_dir: str | Path) -> None:
    """A run started without --resume must not mix with (or, as before, silently truncate) the
    logs and checkpoints of an earlier run in the same directory."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_LOGS if (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0]
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        found.append("checkpoints/")
    if found:
        raise RunExistsError(
            f"run directory {run_dir} already holds {', '.join(found)} from an earlier run: pass --resume "
            f"to continue it, or choose another run_name (--set run_name=...)"
        )


def rows_through_iteration(path: str | Path, iteration: int) -> int:
    """Leading complete rows of a log whose "iteration" is <= iteration (for checkpoints that did
    not record their log offsets)."""
    path = Path(path)
    if not path.is_file():
        return 0
    n = 0
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                it = json.loads(line).get("iteration")
            except ValueError:
                break
            if not isinstance(it, int) or it > iteration:
                break
            n += 1
    return n


def truncate_jsonl(path: str | Path, rows: int) -> tuple[int, int]:
    """Cut a JSON-lines log to its first `rows` complete lines; a torn last line (a crash
    mid-write) is cut too. The shorter file replaces the old one atomically (a crash leaves one of
    the two, and a dashboard following it sees a new file). Returns (rows kept, rows dropped),
    a torn line counting as one dropped row."""
    path = Path(path)
    if not path.is_file():
        return 0, 0
    data = path.read_bytes()
    end, kept = 0, 0
    while kept < rows:
        nl = data.find(b"\n", end)
        if nl < 0:
            break
        end, kept = nl + 1, kept + 1
    rest = data[end:]
    if not rest:
        return kept, 0
    dropped = rest.count(b"\n") + (0 if rest.endswith(b"\n") else 1)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_bytes(data[:end])
    tmp.replace(path)
    return kept, dropped


def prepare_run_dir(run_dir: str | Path, resume: bool, initial: TrainerState | None = None) -> ResumePoint:
    """Without resume: refuse a directory an earlier run wrote to. With resume: the latest complete
    checkpoint (or none: start over at iteration 0, from the `initial` state when one is given),
    and each run log cut back to the rows written through that checkpoint's iteration.

    `initial` is the driver's state before iteration 0 (`iteration` -1, no log rows), which a
    learner restart before the first checkpoint goes back to (rl/train.py); a resumed process
    has none and starts afresh."""
    run_dir = Path(run_dir)
    if not resume:
        refuse_existing_run(run_dir)
        return ResumePoint()
    ckpt = latest_checkpoint(run_dir)
    state = load_trainer_state(ckpt) if ckpt is not None else initial
    point = ResumePoint(ckpt, state)
    for name in RUN_LOGS:
        if state is None or ckpt is None:
            want = 0
        elif state.log_rows is not None:
            want = state.log_rows.get(name, 0)
        else:
            want = rows_through_iteration(run_dir / name, state.iteration)
        kept, dropped = truncate_jsonl(run_dir / name, want)
        point.log_rows[name] = kept
        point.dropped_rows[name] = dropped
        if kept < want:
            point.missing_rows[name] = want - kept
    return point


def restore_driver(state: TrainerState | None, sampler: Any) -> None:
    """The sampler (pass-rate tracker and its RNG) and the driver's RNG as `state` left them
    (nothing for a run that starts afresh): the same for a resume and a learner restart."""
    if state is None:
        return
    sampler.load_state_dict(state.sampler)
    if state.rng is not None:
        set_rng_state(state.rng)
