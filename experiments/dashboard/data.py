"""Reading run directories that a trainer may still be writing.

A run directory (written by `rl/train.py`) holds `metrics.jsonl` (one object per iteration),
`samples.jsonl` (one object per sampled rollout) and optionally `summary.json` /
`sft_eval.json`. The dashboard reads them while the run is in progress, so:

* files are read incrementally from a byte offset: a poll costs what was appended, not the
  whole file (samples.jsonl of a long run is gigabytes of model text);
* only newline-terminated lines are committed. A last line without a newline is the trainer
  mid-write: it is shown provisionally if it already parses (some writers omit the final
  newline), and silently ignored if not. It is never fatal;
* a complete line that does not parse (a crash left garbage, a disk filled up) is skipped and
  counted, and the count is shown on the page instead of aborting;
* a file that is replaced, shrinks, or is rewritten in place (the run was restarted into the
  same directory: detected by its first bytes changing) resets the reader, and the new
  generation id tells the browser to drop what it had;
* NaN / Infinity (Python's json writes them for a diverged loss) become null: browsers'
  JSON.parse rejects them, and a gap in the curve is the honest rendering.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rl.rewards.scores import is_correct as score_is_correct  # no torch, no sympy: cheap

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
SIDE_FILES = ("summary.json", "sft_eval.json")

HEAD_BYTES = 256


def sanitize(value: Any) -> Any:
    """Recursively replace non-finite floats with None so the result is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    return value


def parse_object(line: bytes) -> dict | None:
    """One JSONL line as a dict, or None if it is not a JSON object."""
    try:
        obj = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return sanitize(obj) if isinstance(obj, dict) else None


def is_correct(sample: dict) -> bool:
    """Verifier-correct by `rl.rewards.scores.is_correct`; without a score, a positive reward."""
    score = sample.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        return score_is_correct(score)
    if isinstance(score, bool):
        return score
    reward = sample.get("reward")
    return isinstance(reward, (int, float)) and reward > 0


class JsonlTail:
    """Incremental reader of a JSON-lines file another process appends to.

    `refresh()` reads what was appended since the last call. Subclasses decide what to keep
    per committed line via `_commit`; this base keeps the parsed objects in `rows`.
    """

    def __init__(self, path: Path):
        self.path = path
        self._reset()

    def _reset(self) -> None:
        self.gen = uuid.uuid4().hex[:12]
        self.offset = 0
        self.identity: tuple[int, int] | None = None
        self.head = b""  # the file's first bytes as last read: a rewrite changes them
        self.rows: list[dict] = []
        self.pending: dict | None = None  # parsed unterminated last line, not yet committed
        self.bad_lines = 0

    def _commit(self, obj: dict, start: int, end: int) -> None:
        self.rows.append(obj)

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.offset or self.pending is not None:
                self._reset()  # the file went away: whatever we showed is no longer the run
            return
        identity = (st.st_dev, st.st_ino)
        with open(self.path, "rb") as f:
            if self.identity is not None and (
                identity != self.identity or st.st_size < self.offset or f.read(len(self.head)) != self.head
            ):
                self._reset()
            self.identity = identity
            if st.st_size == self.offset:
                self.pending = None
                return
            if len(self.head) < HEAD_BYTES:
                f.seek(0)
                self.head = f.read(min(HEAD_BYTES, st.st_size))
            f.seek(self.offset)
            # Read only up to the size we stat'ed: bytes appended meanwhile wait for next poll.
            chunk = f.read(st.st_size - self.offset)
        cut = chunk.rfind(b"\n") + 1
        pos = self.offset
        for line in chunk[:cut].split(b"\n")[:-1]:
            start, pos = pos, pos + len(line) + 1
            if not line.strip():
                continue
            obj = parse_object(line)
            if obj is None:
                self.bad_lines += 1
            else:
                self._commit(obj, start, pos)
        self.offset += cut
        rest = chunk[cut:]
        self.pending = parse_object(rest) if rest.strip() else None


class SamplesIndex(JsonlTail):
    """Byte ranges of samples.jsonl lines per iteration; sample text stays on disk."""

    def _reset(self) -> None:
        super()._reset()
        # iteration -> [(start, end, correct)], in file order
        self.by_iteration: dict[int, list[tuple[int, int, bool]]] = {}

    def _commit(self, obj: dict, start: int, end: int) -> None:
        it = obj.get("iteration")
        if isinstance(it, (int, float)) and not isinstance(it, bool) and it == int(it):
            self.by_iteration.setdefault(int(it), []).append((start, end, is_correct(obj)))
        else:
            self.bad_lines += 1  # a sample without an iteration cannot be browsed

    def counts(self) -> dict[str, int]:
        return {str(it): len(v) for it, v in sorted(self.by_iteration.items())}

    def read(self, iteration: int, limit: int, max_chars: int) -> tuple[list[dict], int]:
        """Up to `limit` samples of one iteration (balanced correct/incorrect), and the total."""
        entries = self.by_iteration.get(iteration, [])
        chosen = balanced_pick(entries, limit)
        out = []
        with open(self.path, "rb") as f:
            for start, end, _ in chosen:
                f.seek(start)
                obj = parse_object(f.read(end - start))
                if obj is not None:
                    out.append(truncate_text(obj, max_chars))
        return out, len(entries)


def balanced_pick(entries: list[tuple[int, int, bool]], limit: int) -> list[tuple[int, int, bool]]:
    """At most `limit` entries, alternating correct and incorrect so both kinds are visible.

    Keeps file order within each kind; if one kind runs out the other fills the rest.
    """
    if len(entries) <= limit:
        return list(entries)
    right = [e for e in entries if e[2]]
    wrong = [e for e in entries if not e[2]]
    picked: list[tuple[int, int, bool]] = []
    while len(picked) < limit and (right or wrong):
        for pool in (wrong, right):  # wrong first: the failures are usually what one looks for
            if pool and len(picked) < limit:
                picked.append(pool.pop(0))
    return sorted(picked)


def truncate_text(sample: dict, max_chars: int) -> dict:
    """Cap prompt/response length (a 32k-token response would swamp the page); mark the cut."""
    out = dict(sample)
    for key in ("prompt", "response"):
        text = out.get(key)
        if isinstance(text, str) and len(text) > max_chars:
            out[key] = text[:max_chars]
            out[f"{key}_chars"] = len(text)
    return out


def read_side_file(path: Path) -> tuple[Any, str | None]:
    """(content, problem) of an optional small JSON file; (None, None) when absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{path.name}: {e.strerror}"
    try:
        return sanitize(json.loads(text)), None
    except ValueError as e:
        return None, f"{path.name}: invalid JSON ({e})"


class RunSource:
    """One run directory as the dashboard sees it. Thread-safe: the server is threaded."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        self.metrics = JsonlTail(path / METRICS_FILE)
        self.samples = SamplesIndex(path / SAMPLES_FILE)
        self._lock = threading.Lock()

    def snapshot(self, gen: str | None = None, have: int = 0) -> dict:
        """The run's state for the page: metric rows after the first `have` if `gen` matches."""
        with self._lock:
            self.metrics.refresh()
            self.samples.refresh()
            rows = self.metrics.rows
            start = have if gen == self.metrics.gen and 0 <= have <= len(rows) else 0
            side, warnings = {}, []
            for fname in SIDE_FILES:
                content, problem = read_side_file(self.path / fname)
                side[fname.removesuffix(".json")] = content
                if problem:
                    warnings.append(problem)
            for tail, fname in ((self.metrics, METRICS_FILE), (self.samples, SAMPLES_FILE)):
                if tail.bad_lines:
                    warnings.append(f"{fname}: skipped {tail.bad_lines} unparseable line(s)")
            if not self.metrics.path.exists():
                warnings.append(f"{METRICS_FILE} not written yet")
            return {
                "name": self.name,
                "path": str(self.path),
                "gen": self.metrics.gen,
                "start": start,
                "rows": rows[start:],
                "tail": self.metrics.pending,
                "sample_counts": self.samples.counts(),
                "summary": side["summary"],
                "sft_eval": side["sft_eval"],
                "warnings": warnings,
            }

    def read_samples(self, iteration: int, limit: int, max_chars: int) -> tuple[list[dict], int]:
        with self._lock:
            self.samples.refresh()
            return self.samples.read(iteration, limit, max_chars)


def run_names(paths: list[Path]) -> list[str]:
    """Legend names: the directory name, with parents added only where different runs collide."""
    parts = [p.resolve().parts for p in paths]
    depth = [1] * len(paths)
    while True:
        names = [str(Path(*pp[-d:])) for pp, d in zip(parts, depth)]
        grow = [i for i, n in enumerate(names)
                if depth[i] < len(parts[i]) and len({parts[j] for j, m in enumerate(names) if m == n}) > 1]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    # Whatever still collides is the same directory given twice: number the repeats.
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def open_runs(paths: list[str | Path]) -> "OrderedDict[str, RunSource]":
    """RunSources keyed by legend name. Raises FileNotFoundError / NotADirectoryError naming the path."""
    resolved = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"run directory does not exist: {p}")
        if not path.is_dir():
            raise NotADirectoryError(f"not a run directory (expected a folder holding {METRICS_FILE}): {p}")
        resolved.append(path)
    return OrderedDict((n, RunSource(p, n)) for n, p in zip(run_names(resolved), resolved))
