"""thinkrl-tag: tag a prompt set with difficulty, hack-proneness and domain (k1.5 §2.1).

    thinkrl-tag --model runs/demo/checkpoint --input data/arith/train.jsonl --output data/arith/train.tagged.jsonl
    thinkrl-tag --config experiments/configs/tag_demo.yaml [--set sampling.samples=16 ...]

The config (`prompts.tag_core.TagConfig`, every key documented there) has `model`, `input`,
`output` (--model/--input/--output set them) and sections; `--set key.sub=value` overrides one key
(lists in YAML: `--set exclude_types=[proof]`). For every prompt (details in prompts/tag_core.py):

- `sampling.samples` (10) samples at `sampling.temperature` (1.0) through vLLM (`engine`: a
  `rollout.engine.EngineConfig`; `engines.num_engines` > 1: Ray actors, prompts sharded over them
  by `rollout.recovery.EngineGroup`, which replaces an engine that dies), each scored by the
  row's verifier through `rl.scoring.Scorer` (`verifier`: an `rl.rewards.VerifierConfig`);
- `guess.tries` (8) answer-only tries: the question in `guess.template`, the assistant turn
  pre-filled with an empty think block, at most `guess.max_tokens` (32) tokens;
- a domain: the row's own, else metadata `domain.keys`, else `domain.fallback` rules or the model.

One output row (a `prompts.schema.PromptRow`, so the RL samplers read the file directly: the
curriculum sampler `difficulty`, the prioritized sampler and the tracker seed `pass_rate`):

    {"id": "eval-000007", "prompt": [...], "answer": "96", "verifier": "math",
     "pass_rate": 0.7, "difficulty": 2,        # bucket by sampling.thresholds: 1 easiest .. 5
     "domain": "arithmetic",
     "metadata": {..., "known_difficulty": 2,  # the input's own label, never overwritten
                  "num_samples": 10, "response_len_mean": 212.4, "num_truncated": 0,
                  "guess_tries": 8, "guess_hits": 0, "guessable": false, "domain_source": "field"}}

`guess.drop` moves guessable rows to `<output stem>.guessable.jsonl`; `exclude_types` (e.g.
[multiple_choice, true_false, proof]) leaves those rows out (k1.5 §2.1). The summary (per bucket,
per domain, guessable count, mean pass rate, Spearman rho against a known difficulty label,
prompts/s, generation vs verification time) is printed and saved in `<output>.tag.json`.

Other sets map their fields (`fields`, a `prompts.tag_io.FieldMap`); plain-string prompts are
one user message:

    # MATH: answer = last \\boxed{} of the solution; `type` becomes the domain; level -> known_difficulty
    thinkrl-tag --model CKPT --input MATH_test_5000.jsonl --output math.tagged.jsonl \\
        --set fields.prompt_field=problem --set fields.answer_field=solution --set fields.id_field=idx \\
        --set fields.known_difficulty_field=level
    # GSM8K: answer = the number after '####' (answer_format auto); verifier "integer"; ids "test-<row>"
    thinkrl-tag --model CKPT --input gsm8k/test.jsonl --output gsm8k.tagged.parquet --set fields.prompt_field=question

Rows without a usable prompt, answer or id, and prompts too long for `engine.max_model_len`, are
listed as `file:line: reason`; `run.on_bad_row` fail (default) stops before any generation, skip
goes on.

Resumable: finished chunks (`run.chunk_size` prompts) are appended and fsynced; a re-run skips
every id already in the output. The keys a row's tags depend on are recorded in `<output>.tag.json`,
and a re-run that changes one is refused unless `run.overwrite`. Per-prompt seeds come from
(`sampling.seed`, prompt id), so an interrupted-and-resumed run writes what an uninterrupted one
does. Parquet output is written at the end from a JSONL progress file (`<output>.partial.jsonl`).

Image prompts (issue 9; image parts {"type": "image", "image": path or bytes}) are tagged by a
vision-language checkpoint (`rl.vision.load_vision`; details in prompts/tag_core.py). A text-only
--model with image rows stops before any engine starts (`run.on_bad_row` skip: they are skipped). E.g.

    python -m prompts.mathv --input DATA/mathv/testmini.jsonl --output mathv.jsonl
    thinkrl-tag --model VLM_CKPT --input mathv.jsonl --output mathv.tagged.jsonl

(DATA: the public data folder, docs/INSTALL.md, "Public data".)

Scoring: without `verifier.require_think` the verifiers also take an answer from unformatted
text (e.g. its last number), so a weak model's noise can "pass" prompts with one-digit answers;
set it when the policy is trained to close </think> (and the RL run scores that way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prompts.schema import DataError
from prompts.tag_core import EMPTY_THINK, RunStats, TagConfig, Tagger, excluded_type, print_summary, summarize
from prompts.tag_domain import load_rules
from prompts.tag_io import BadRow, TagOutput, load_rows
from rl.configio import ConfigError, load_config
from rl.ray_loopback import connect_or_start
from rl.rewards.base import KINDS
from rl.scoring import Scorer
from rl.vision import load_vision
from rollout.engine import VLLMEngine, make_rollout_actor
from rollout.recovery import EngineGroup

# The keys a row's tags depend on: recorded in <output>.tag.json, and a resumed run must match them.
# Everything else (paths, run.*, engine memory and parallelism, verifier workers) may change.
TAGGED_WITH = {"model": True, "fields": True, "sampling": True, "domain": True, "engine": {"dtype", "max_model_len"},
               "guess": {"tries", "template", "prefill", "max_tokens", "temperature", "min_hits"},
               "verifier": {"require_think"}}


def parse_args(argv: list[str] | None = None) -> TagConfig:
    ap = argparse.ArgumentParser(prog="thinkrl-tag", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (keys: prompts.tag_core.TagConfig)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    for key in ("model", "input", "output"):
        ap.add_argument(f"--{key}", help=f"the config's `{key}` (a path)")
    a = ap.parse_args(argv)
    paths = [f"{k}={json.dumps(v)}" for k in ("model", "input", "output") if (v := getattr(a, k)) is not None]
    return load_config(TagConfig, a.config, paths + a.set)


def _resolved(cfg: TagConfig, tokenizer: Any, rule_names: list[str]) -> TagConfig:
    """`cfg` with paths made absolute (a resumed run may start elsewhere), `guess.prefill` auto
    decided by the tokenizer and `domain.labels` defaulting to the rule set's domains."""
    prefill = cfg.guess.prefill
    if prefill == "auto":
        prefill = EMPTY_THINK if "</think>" in tokenizer.get_vocab() else ""
    rules = str(Path(cfg.domain.rules).resolve()) if cfg.domain.rules else None
    return cfg.model_copy(update={
        "model": str(Path(cfg.model).resolve()),
        "guess": cfg.guess.model_copy(update={"prefill": prefill}),
        "domain": cfg.domain.model_copy(update={"rules": rules, "labels": cfg.domain.labels or rule_names}),
    })


def _settings(cfg: TagConfig) -> dict[str, Any]:
    """The `TAGGED_WITH` keys of `cfg` as {"key" or "section.key": value} (sections are one level deep)."""
    dump = cfg.model_dump(mode="json", include=TAGGED_WITH)
    flat = {k: v for k, v in dump.items() if not isinstance(v, dict)}
    flat.update({f"{k}.{sub}": x for k, v in dump.items() if isinstance(v, dict) for sub, x in v.items()})
    return flat


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".tag.json")


def _check_resume(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to append to an output tagged under different settings (a mixed file)."""
    side = _sidecar(out)
    if not side.exists():
        if out.exists() and out.stat().st_size > 0:
            raise DataError(f"{out} exists and was not written by thinkrl-tag (no {side.name}); "
                            "use another output, or set run.overwrite=true to replace it")
        return
    old = json.loads(side.read_text(encoding="utf-8")).get("settings", {})
    diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if diff:
        raise DataError(f"{out} was tagged with other settings ({'; '.join(diff[:6])}); "
                        "use another output, or set run.overwrite=true to start over")


def _report_bad(bad: list, limit: int = 50) -> None:
    """One unwrapped `file:line: reason` line per bad row (greppable, clickable in editors)."""
    print(f"{len(bad)} bad row(s):", file=sys.stderr)
    for b in bad[:limit]:
        print(f"  {b}", file=sys.stderr)
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more", file=sys.stderr)


class _Progress:
    """A rich bar with prompts/s and ETA on a terminal; one log line per chunk otherwise."""

    def __init__(self, total: int, console: Any, enabled: bool):
        self.total, self.done, self.console, self.t0 = total, 0, console, time.perf_counter()
        self.bar = None
        if enabled and console.is_terminal:
            self.bar = Progress(
                TextColumn("tagging"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} prompts/s"), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("elapsed"), TimeElapsedColumn(), console=console,
            )
            self.task = self.bar.add_task("tag", total=total, rate="-")
            self.bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        el = time.perf_counter() - self.t0
        rate = self.done / el if el > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=f"{rate:.2f}")
        else:
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"tagged {self.done}/{self.total} prompts, {rate:.2f} prompts/s, ETA {eta:.0f} s",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _vision_of(model: str) -> Any:
    """The checkpoint's image I/O (`rl.vision.VisionIO`), None for a text-only checkpoint."""
    try:
        return load_vision(model)
    except (NotImplementedError, FileNotFoundError, ValueError) as e:
        raise DataError(f"--model {model}: {e}") from None


def _usable_rows(good: list, bad: list, tagger: Tagger, cfg: TagConfig) -> list:
    """The rows that can be tagged; each other one goes into `bad` with its reason. Image rows and a
    text-only --model stop here, before any engine starts, unless run.on_bad_row is skip."""
    vision, max_len, max_images = tagger.vision, cfg.engine.max_model_len, cfg.engine.limit_images_per_prompt
    with_images = [(where, row) for where, row in good if row.has_images()]
    if with_images and vision is None and cfg.run.on_bad_row == "fail":
        where, row = with_images[0]
        raise DataError(f"{where}: row {row.id!r} has images, but --model {cfg.model} is a text-only checkpoint "
                        f"(no vision_config in its config.json); {len(with_images)} of {len(good)} rows have images. "
                        "Tag them with a vision-language checkpoint, or set run.on_bad_row=skip to tag the text rows "
                        "only")
    usable = []
    for where, row in good:
        n_images = len(row.images())
        if n_images and vision is None:
            bad.append(BadRow(where, f"row has {n_images} image(s) but --model is a text-only checkpoint"))
            continue
        if n_images > max_images:
            bad.append(BadRow(where, f"{n_images} images, over engine.limit_images_per_prompt {max_images}"))
            continue
        # Token ids are only measured here (keeping them would cost GBs on large sets); each chunk
        # encodes its rows again (and decodes their images again).
        try:
            longest = tagger.encode_row(row).longest()
        except ValueError as e:
            if not n_images:
                raise
            bad.append(BadRow(where, str(e)))  # placeholders and images do not pair up
            continue
        if longest >= max_len:
            bad.append(BadRow(where, f"prompt takes {longest} tokens (counting its answer-only / classifier "
                                     f"versions); engine.max_model_len {max_len} leaves no room for a response"))
        elif row.verifier not in KINDS:
            bad.append(BadRow(where, f"unknown verifier {row.verifier!r} (one of {', '.join(KINDS)})"))
        else:
            usable.append(row)
    return usable


@contextmanager
def open_engines(cfg: TagConfig) -> Iterator[Any]:
    """The engines the config describes: one `VLLMEngine` in this process, or an `EngineGroup` of
    engines.num_engines Ray actors (on engines.ray_address, else a new local cluster, shut down
    after). Each engine is closed on the way out, its EngineCore included."""
    ec, es = cfg.engine.model_copy(update={"seed": cfg.sampling.seed}), cfg.engines
    if es.num_engines <= 1:
        with VLLMEngine(ec) as engine:
            yield engine
        return
    own_ray = not ray.is_initialized()
    if own_ray:
        connect_or_start(es.ray_address)
    group = EngineGroup(make_rollout_actor(es.actor_num_cpus, es.actor_num_gpus), [ec] * es.num_engines, es.timeout_s)
    try:
        group.start()
        group.ready()
        yield group
    finally:
        group.close()
        if own_ray:
            ray.shutdown()


def _tag_chunks(tagger: Tagger, todo: list[list], output: TagOutput, stats: RunStats, drop_guessable: bool,
                progress: _Progress) -> None:
    """Tag each chunk and append its rows (guessable ones apart with `drop_guessable`) as it finishes."""
    t_start = time.perf_counter()
    for chunk in todo:
        rows_out = tagger.tag(chunk, stats)
        keep = [r for r in rows_out if not (drop_guessable and r["metadata"].get("guessable"))]
        drop = [r for r in rows_out if drop_guessable and r["metadata"].get("guessable")]
        output.append(keep, drop)
        stats.tagged += len(rows_out)
        stats.wall_s = time.perf_counter() - t_start
        progress.advance(len(rows_out))


def run(cfg: TagConfig, backend: Any = None) -> dict[str, Any]:
    """Tag `cfg.input` into `cfg.output` and return the summary. `backend` (anything with
    `generate(requests, SamplingConfig) -> list[Generation]`, e.g. a `VLLMEngine` or an
    `EngineGroup` already running in a notebook or a test) replaces the engines the config
    describes; it is not closed here."""
    from transformers import AutoTokenizer  # transformers takes seconds to import: not for --help or a bad key

    err = Console(stderr=True)
    out = Path(cfg.output)
    rules = load_rules(cfg.domain.rules)
    good, bad = load_rows(cfg.input, cfg.fields, cfg.split)
    stats = RunStats(input_rows=len(good) + len(bad))
    if cfg.run.limit is not None:
        good = good[: cfg.run.limit]

    tok = AutoTokenizer.from_pretrained(cfg.model)
    cfg = _resolved(cfg, tok, [r.domain for r in rules])
    if cfg.domain.fallback == "model" and not cfg.domain.labels:
        raise DataError("domain.fallback model needs labels (domain.labels or a rule set)")
    tagger = Tagger(None, None, tok, cfg, rules, _vision_of(cfg.model))
    usable = _usable_rows(good, bad, tagger, cfg)
    stats.bad_rows = len(bad)
    if bad:
        _report_bad(bad)
        if cfg.run.on_bad_row == "fail":
            raise DataError(f"{len(bad)} bad row(s) in {cfg.input} (listed above); fix them, map the fields "
                            "(fields.prompt_field/answer_field/id_field/answer_format), or set run.on_bad_row=skip")
    kinds = [excluded_type(r, cfg.exclude_types) for r in usable]
    stats.excluded = dict(sorted(Counter(k for k in kinds if k).items()))
    usable = [r for r, k in zip(usable, kinds) if not k]

    settings = _settings(cfg)
    if cfg.run.overwrite:
        _sidecar(out).unlink(missing_ok=True)
    else:
        _check_resume(out, settings)
    dropped_path = out.with_name(out.with_suffix("").name + ".guessable.jsonl") if cfg.guess.drop else None
    output = TagOutput(out, dropped_path, overwrite=cfg.run.overwrite)
    kept, dropped = output.load_done()
    done = {r["id"] for r in kept + dropped}
    _sidecar(out).write_text(json.dumps({"settings": settings}, indent=1) + "\n")

    cs = cfg.run.chunk_size
    # Chunks are fixed slices of the input order, so a resumed run batches the same prompts
    # together as an uninterrupted one (only a torn chunk's remainder is batched alone).
    chunks = [usable[i : i + cs] for i in range(0, len(usable), cs)]
    todo = [left for left in ([r for r in c if r.id not in done] for c in chunks) if left]
    stats.already_done = len(usable) - sum(len(c) for c in todo)
    stats.images = sum(len(r.images()) for c in todo for r in c)
    if todo:
        with ExitStack() as stack:
            t0 = time.perf_counter()
            if backend is None:
                backend = stack.enter_context(open_engines(cfg))
            stats.engine_start_s = time.perf_counter() - t0
            progress = _Progress(sum(len(c) for c in todo), err, cfg.run.progress)
            stack.callback(progress.close)
            with Scorer(cfg.verifier) as scorer:
                tagger.backend, tagger.scorer = backend, scorer
                _tag_chunks(tagger, todo, output, stats, cfg.guess.drop, progress)
    output.finalize()
    kept, dropped = output.read_all()
    summary = summarize(kept, dropped, cfg.sampling.thresholds, stats)
    print_summary(summary, Console())
    _sidecar(out).write_text(json.dumps({"settings": settings, "summary": summary}, indent=1) + "\n")
    if cfg.run.summary_json:
        Path(cfg.run.summary_json).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    # vLLM's per-request INFO lines would bury the progress bar; VLLM_LOGGING_LEVEL=INFO restores them.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        run(parse_args(argv))
    except (DataError, ConfigError) as e:
        print(f"thinkrl-tag: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thinkrl-tag: interrupted; finished chunks are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
