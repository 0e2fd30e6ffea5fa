"""thinkrl-tag: tag a prompt set with difficulty, hack-proneness and domain (k1.5 §2.1).

    python -m prompts.tag --model runs/demo/checkpoint --input data/arith/train.jsonl \
        --output data/arith/train.tagged.jsonl --samples 10 --temperature 1.0 --seed 0

For every prompt (details in prompts/tag_core.py):

- k samples (--samples, 10) at --temperature (1.0) through vLLM (`rollout.engine.VLLMEngine`;
  --engines N > 1: N engines as Ray actors, prompts sharded over them by
  `rollout.recovery.EngineGroup`, which replaces an engine that dies), each scored by the row's
  verifier through `rl.scoring.Scorer`;
- N answer-only tries (--guess-tries, 8): the question in --guess-template, the assistant turn
  pre-filled with an empty think block, at most --guess-max-tokens (32) tokens;
- a domain: the row's own, else metadata type/subject/category, else rules or the model.

One output row (a `prompts.schema.PromptRow`, so the RL samplers read the file directly: the
curriculum sampler `difficulty`, the prioritized sampler and the tracker seed `pass_rate`):

    {"id": "eval-000007", "prompt": [...], "answer": "96", "verifier": "math",
     "pass_rate": 0.7, "difficulty": 2,        # bucket by --thresholds 0.8,0.6,0.4,0.2: 1 easiest .. 5
     "domain": "arithmetic",
     "metadata": {..., "known_difficulty": 2,  # the input's own label, never overwritten
                  "num_samples": 10, "response_len_mean": 212.4, "num_truncated": 0,
                  "guess_tries": 8, "guess_hits": 0, "guessable": false, "domain_source": "field"}}

--drop-guessable moves guessable rows to `<output stem>.guessable.jsonl`; --exclude-types
multiple_choice,true_false,proof leaves those rows out (k1.5 §2.1). The summary table (per
bucket, per domain, guessable count, mean pass rate, Spearman rho against a known difficulty
label, prompts/s, generation vs verification time) is printed and saved in `<output>.tag.json`.

Other sets: plain-string prompts and other field names are mapped by flags, e.g.

    # MATH: answer = last \boxed{} of the solution; `type` becomes the domain; level -> known_difficulty
    thinkrl-tag --model CKPT --input MATH_test_5000.jsonl --output math.tagged.jsonl \
        --prompt-field problem --answer-field solution --id-field idx --known-difficulty-field level
    # GSM8K: answer = the number after '####' (--answer-format auto); verifier "integer"; ids "test-<row>"
    thinkrl-tag --model CKPT --input gsm8k/test.jsonl --output gsm8k.tagged.parquet --prompt-field question

Rows without a usable prompt, answer or id, and prompts too long for --max-model-len, are listed
as `file:line: reason`; --on-bad-row fail (default) stops before any generation, skip goes on.

Resumable: finished chunks (--chunk-size prompts) are appended and fsynced; a re-run with the
same settings skips every id already in the output (settings are recorded in `<output>.tag.json`
and a re-run with different ones is refused unless --overwrite). Per-prompt seeds come from
(--seed, prompt id), so an interrupted-and-resumed run writes what an uninterrupted one does.
Parquet output is written at the end from a JSONL progress file (`<output>.partial.jsonl`).

Image prompts (issue 9): rows whose messages hold image parts ({"type": "image", "image": path or
bytes}) are tagged by a vision-language checkpoint (`rl.vision.load_vision`); every image is
decoded when the input is read, the samples and answer-only tries see the images, lengths count
the expanded placeholders, and the engine never samples media tokens. A text-only --model with
image rows stops before any engine starts (--on-bad-row skip: those rows are skipped). E.g.

    python -m prompts.mathv --input DATA/mathv/testmini.jsonl --output mathv.jsonl
    thinkrl-tag --model VLM_CKPT --input mathv.jsonl --output mathv.tagged.jsonl

(DATA: the public data folder, docs/INSTALL.md, "Public data".)

Scoring: without --require-think the verifiers also take an answer from unformatted text (e.g.
its last number), so a weak model's noise can "pass" prompts with one-digit answers; use
--require-think when the policy is trained to close </think> (and the RL run scores that way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prompts.schema import DataError
from prompts.tag_core import (
    EMPTY_THINK,
    EXCLUDE_TYPES,
    GUESS_TEMPLATE,
    RunStats,
    Tagger,
    TagSettings,
    count_types,
    excluded_type,
    print_summary,
    summarize,
)
from prompts.tag_domain import load_rules
from prompts.tag_io import BadRow, FieldMap, TagOutput, load_rows, same_file
from rl.ray_loopback import connect_or_start
from rl.rewards import VerifierConfig
from rl.rewards.base import KINDS
from rl.scoring import Scorer
from rl.vision import load_vision
from rollout.engine import EngineConfig, VLLMEngine, make_rollout_actor
from rollout.recovery import EngineGroup

_OUT_SUFFIXES = (".jsonl", ".json", ".parquet")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thinkrl-tag",
        description="Tag prompts with pass rate / difficulty, guessability and domain using a checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="HF checkpoint directory (vLLM-loadable)")
    p.add_argument("--input", required=True, help="JSONL / JSON-lines / parquet / csv, or a datasets save_to_disk dir")
    p.add_argument("--output", required=True, help="Output .jsonl or .parquet (never the input)")

    g = p.add_argument_group("difficulty")
    g.add_argument("--samples", type=int, default=10, help="k samples per prompt")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=1024, help="Response token budget per sample")
    g.add_argument("--seed", type=int, default=0, help="Run seed; each prompt's seeds derive from (seed, id)")
    g.add_argument("--thresholds", default="0.8,0.6,0.4,0.2",
                   help="Pass-rate cut points, high to low: difficulty = 1 + how many the pass rate is below")

    g = p.add_argument_group("hack-prone filter (answer without reasoning)")
    g.add_argument("--guess-tries", type=int, default=8, help="N answer-only tries per prompt (0: skip the filter)")
    g.add_argument("--guess-template", default=None,
                   help="Answer-only template for the last user message; '{question}' is replaced "
                        "(default: the question plus 'Answer immediately with only the final answer in \\boxed{}...')")
    g.add_argument("--guess-prefill", default="auto",
                   help="Text the assistant turn starts with; 'auto': an empty <think></think> block when the "
                        "tokenizer has a </think> token, else nothing")
    g.add_argument("--guess-max-tokens", type=int, default=32)
    g.add_argument("--guess-temperature", type=float, default=1.0)
    g.add_argument("--guess-min-hits", type=int, default=1, help="Correct guesses that make a prompt guessable")
    g.add_argument("--drop-guessable", action="store_true",
                   help="Leave guessable prompts out of the output (they go to <output stem>.guessable.jsonl)")
    g.add_argument("--exclude-types", default="",
                   help="Comma list of row types to leave out entirely: multiple_choice, true_false, proof")

    g = p.add_argument_group("domain")
    g.add_argument("--domain-keys", default="type,subject,category",
                   help="Metadata keys that already hold a domain (after the row's own `domain`)")
    g.add_argument("--domain-fallback", choices=("rules", "model", "none"), default="rules",
                   help="For rows without one: regex rules, or ask the checkpoint to pick a label")
    g.add_argument("--domain-rules", default=None, help="YAML/JSON rule file (default: built-in rules)")
    g.add_argument("--domain-labels", default=None,
                   help="Comma list of labels for --domain-fallback model (default: the rule set's domains)")
    g.add_argument("--default-domain", default="other")

    g = p.add_argument_group("input / output")
    g.add_argument("--prompt-field", default="prompt", help="Chat messages or a plain string")
    g.add_argument("--answer-field", default="answer")
    g.add_argument("--id-field", default=None, help="Default: 'id' if present, else '<file stem>-<row index>'")
    g.add_argument("--answer-format", choices=("auto", "raw", "boxed", "gsm8k"), default="auto",
                   help="auto: per row, '####' -> gsm8k, '\\boxed' -> last box, else raw")
    g.add_argument("--verifier", default=None,
                   help="Verifier for every row (default: the row's own, else 'integer' for gsm8k answers, else 'math')")
    g.add_argument("--known-difficulty-field", default="difficulty",
                   help="Field with a known difficulty label (e.g. MATH 'level'): kept as metadata "
                        "known_difficulty, and the summary reports its rank correlation with the pass rate")
    g.add_argument("--split", default=None, help="Split of a saved DatasetDict")
    g.add_argument("--limit", type=int, default=None, help="Only the first N usable rows of the input")
    g.add_argument("--on-bad-row", choices=("fail", "skip"), default="fail",
                   help="Rows without a usable prompt/answer/id are listed (file:line); then stop, or skip them")
    g.add_argument("--overwrite", action="store_true", help="Start over instead of resuming an existing output")
    g.add_argument("--chunk-size", type=int, default=64, help="Prompts per engine call and per output append")
    g.add_argument("--no-progress", action="store_true", help="No progress bar (log lines per chunk instead)")
    g.add_argument("--summary-json", default=None, help="Also write the summary to this file")

    g = p.add_argument_group("engines and verification")
    g.add_argument("--engines", type=int, default=1, help="vLLM engines; > 1 runs them as Ray actors")
    g.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    g.add_argument("--cpus-per-engine", type=float, default=1.0)
    g.add_argument("--gpus-per-engine", type=float, default=0.0)
    g.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16", "auto"))
    g.add_argument("--max-model-len", type=int, default=2048)
    g.add_argument("--kv-cache-gib", type=float, default=1.0, help="CPU KV cache per engine")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--max-num-seqs", type=int, default=256)
    g.add_argument("--cpu-threads", type=int, default=None)
    g.add_argument("--limit-images-per-prompt", type=int, default=4,
                   help="Vision-language checkpoints: most images one prompt may carry (rows with more are bad rows)")
    g.add_argument("--engine-timeout", type=float, default=3600.0, help="Seconds one chunk may take on Ray engines")
    g.add_argument("--verify-workers", type=int, default=2)
    g.add_argument("--verify-timeout", type=float, default=5.0, help="Seconds per verification")
    g.add_argument("--require-think", action="store_true",
                   help="Score a response only if it closes </think> (as the RL run does with require_think); "
                        "without it the verifiers also read an answer from unformatted text, e.g. its last number")
    return p


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(sorted((float(x) for x in text.split(",") if x.strip()), reverse=True))
    except ValueError:
        raise DataError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0.0 < v <= 1.0 for v in vals) or len(set(vals)) != len(vals):
        raise DataError(f"{flag}: expected distinct pass rates in (0, 1], got {text!r}")
    return vals


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def _check_args(args: argparse.Namespace) -> None:
    positive = {"--samples": args.samples, "--max-tokens": args.max_tokens, "--chunk-size": args.chunk_size,
                "--engines": args.engines, "--max-model-len": args.max_model_len,
                "--guess-max-tokens": args.guess_max_tokens, "--guess-min-hits": args.guess_min_hits}
    for flag, v in positive.items():
        if v < 1:
            raise DataError(f"{flag} must be >= 1, got {v}")
    if args.guess_tries < 0:
        raise DataError(f"--guess-tries must be >= 0, got {args.guess_tries}")
    if args.limit_images_per_prompt < 0:
        raise DataError(f"--limit-images-per-prompt must be >= 0, got {args.limit_images_per_prompt}")
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be >= 1, got {args.limit}")
    unknown = set(_names(args.exclude_types)) - set(EXCLUDE_TYPES)
    if unknown:
        raise DataError(f"--exclude-types: unknown {sorted(unknown)}; choose from {', '.join(EXCLUDE_TYPES)}")
    if args.drop_guessable and args.guess_tries == 0:
        raise DataError("--drop-guessable needs --guess-tries > 0")
    inp, out = Path(args.input), Path(args.output)
    if not (Path(args.model) / "config.json").is_file():
        raise DataError(f"--model {args.model}: not a checkpoint directory (no config.json)")
    if same_file(inp, out):
        raise DataError(f"--output {out} is the input file; write the tagged set to a new path")
    if out.suffix not in _OUT_SUFFIXES:
        raise DataError(f"--output must end in {', '.join(_OUT_SUFFIXES)}, got {out.name!r}")


def _settings(args: argparse.Namespace, tokenizer: Any, rule_names: list[str]):
    prefill = args.guess_prefill
    if prefill == "auto":
        prefill = EMPTY_THINK if "</think>" in tokenizer.get_vocab() else ""
    labels = _names(args.domain_labels) or tuple(rule_names)
    return TagSettings(
        model=str(Path(args.model).resolve()), dtype=args.dtype, max_model_len=args.max_model_len,
        samples=args.samples, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
        seed=args.seed, thresholds=_floats(args.thresholds, "--thresholds"), guess_tries=args.guess_tries,
        guess_template=args.guess_template or GUESS_TEMPLATE, guess_prefill=prefill,
        guess_max_tokens=args.guess_max_tokens, guess_temperature=args.guess_temperature,
        guess_min_hits=args.guess_min_hits, domain_keys=_names(args.domain_keys),
        domain_fallback=args.domain_fallback,
        domain_rules=str(Path(args.domain_rules).resolve()) if args.domain_rules else "built-in",
        domain_labels=labels, default_domain=args.default_domain, require_think=args.require_think,
    )


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".tag.json")


def _dropped_path(out: Path) -> Path:
    return out.with_name(out.with_suffix("").name + ".guessable.jsonl")


def _check_resume(out: Path, settings_json: dict[str, Any], field_map: dict[str, Any]) -> None:
    """Refuse to append to an output tagged under different settings (a mixed file)."""
    side = _sidecar(out)
    if not side.exists():
        if out.exists() and out.stat().st_size > 0:
            raise DataError(f"{out} exists and was not written by thinkrl-tag (no {side.name}); "
                            "use another --output, or --overwrite to replace it")
        return
    old = json.loads(side.read_text(encoding="utf-8"))
    now = {"settings": settings_json, "fields": field_map}
    diff = [f"{sec}.{k}: {old.get(sec, {}).get(k)!r} -> {v!r}"
            for sec in now for k, v in now[sec].items() if old.get(sec, {}).get(k) != v]
    if diff:
        raise DataError(f"{out} was tagged with other settings ({'; '.join(diff[:6])}); "
                        "use another --output, or --overwrite to start over")


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


def make_scorer(num_workers: int, timeout_s: float, require_think: bool = False) -> Scorer:
    """An `rl.scoring.Scorer` (a verifier pool; the verifier is chosen per row by `row.verifier`)."""
    return Scorer(VerifierConfig(num_workers=num_workers, timeout_s=timeout_s, require_think=require_think))


def _usable_rows(good: list, bad: list, tagger: Tagger, args: argparse.Namespace) -> list:
    """The rows that can be tagged; each other one goes into `bad` with its reason. Image rows and a
    text-only --model stop here, before any engine starts, unless --on-bad-row skip."""
    vision = tagger.vision
    with_images = [(where, row) for where, row in good if row.has_images()]
    if with_images and vision is None and args.on_bad_row == "fail":
        where, row = with_images[0]
        raise DataError(f"{where}: row {row.id!r} has images, but --model {args.model} is a text-only checkpoint "
                        f"(no vision_config in its config.json); {len(with_images)} of {len(good)} rows have images. "
                        "Tag them with a vision-language checkpoint, or pass --on-bad-row skip to tag the text rows only")
    usable = []
    for where, row in good:
        n_images = len(row.images())
        if n_images and vision is None:
            bad.append(BadRow(where, f"row has {n_images} image(s) but --model is a text-only checkpoint"))
            continue
        if n_images > args.limit_images_per_prompt:
            bad.append(BadRow(where, f"{n_images} images, over --limit-images-per-prompt {args.limit_images_per_prompt}"))
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
        if longest >= args.max_model_len:
            bad.append(BadRow(where, f"prompt takes {longest} tokens (counting its answer-only / classifier "
                                     f"versions); --max-model-len {args.max_model_len} leaves no room for a response"))
        elif row.verifier not in KINDS:
            bad.append(BadRow(where, f"unknown verifier {row.verifier!r} (one of {', '.join(KINDS)})"))
        else:
            usable.append(row)
    return usable


def _write_sidecar(out: Path, s: TagSettings, fm: FieldMap, **extra: Any) -> None:
    """`<output>.tag.json`: the settings and field map the output was tagged with (and `extra`)."""
    _sidecar(out).write_text(json.dumps({"settings": s.to_json(), "fields": fm.__dict__, **extra}, indent=1) + "\n")


@contextmanager
def open_engines(args: argparse.Namespace) -> Iterator[Any]:
    """The engines the flags describe: one `VLLMEngine` in this process (--engines 1), or an
    `EngineGroup` of --engines Ray actors (on --ray-address, else a new local cluster, shut down
    after). Each engine is closed on the way out, its EngineCore included."""
    cfg = EngineConfig(
        model=args.model, dtype=args.dtype, max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size,
        seed=args.seed, max_num_seqs=args.max_num_seqs, cpu_threads=args.cpu_threads,
        limit_images_per_prompt=args.limit_images_per_prompt,
    )
    if args.engines <= 1:
        with VLLMEngine(cfg) as engine:
            yield engine
        return
    own_ray = not ray.is_initialized()
    if own_ray:
        connect_or_start(args.ray_address)
    group = EngineGroup(make_rollout_actor(args.cpus_per_engine, args.gpus_per_engine), [cfg] * args.engines,
                        args.engine_timeout)
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
        rows_out, timing = tagger.tag(chunk)
        keep = [r for r in rows_out if not (drop_guessable and r["metadata"].get("guessable"))]
        drop = [r for r in rows_out if drop_guessable and r["metadata"].get("guessable")]
        output.append(keep, drop)
        stats.tagged_now += len(rows_out)
        stats.generate_s += timing.generate_s
        stats.verify_s += timing.verify_s
        stats.other_s += timing.other_s
        stats.tag_wall_s = time.perf_counter() - t_start
        progress.advance(len(rows_out))


def run(args: argparse.Namespace, backend: Any = None) -> dict[str, Any]:
    """Tag `args.input` into `args.output` and return the summary. `backend` (anything with
    `generate(requests, SamplingConfig) -> list[Generation]`, e.g. a `VLLMEngine` or an
    `EngineGroup` already running in a notebook or a test) replaces the engines the flags
    describe; it is not closed here."""
    from transformers import AutoTokenizer  # transformers takes seconds to import: not for --help or a bad flag

    err = Console(stderr=True)
    _check_args(args)
    out = Path(args.output)
    fm = FieldMap(args.prompt_field, args.answer_field, args.id_field, args.answer_format, args.verifier,
                  args.known_difficulty_field)
    rules = load_rules(args.domain_rules)
    good, bad = load_rows(args.input, fm, args.split)
    stats = RunStats(input_rows=len(good) + len(bad))
    if args.limit is not None:
        good = good[: args.limit]

    tok = AutoTokenizer.from_pretrained(args.model)
    s = _settings(args, tok, [r.domain for r in rules])
    if s.domain_fallback == "model" and not s.domain_labels:
        raise DataError("--domain-fallback model needs labels (--domain-labels or a rule set)")
    tagger = Tagger(None, None, tok, s, rules, _vision_of(args.model))
    usable = _usable_rows(good, bad, tagger, args)
    stats.bad_rows = len(bad)
    if bad:
        _report_bad(bad)
        if args.on_bad_row == "fail":
            raise DataError(f"{len(bad)} bad row(s) in {args.input} (listed above); fix them, map the fields "
                            "(--prompt-field/--answer-field/--id-field/--answer-format), or pass --on-bad-row skip")
    types = _names(args.exclude_types)
    excluded = [t for t in (excluded_type(r, types) for r in usable) if t] if types else []
    usable = [r for r in usable if not (types and excluded_type(r, types))]
    stats.excluded = count_types(excluded)

    if args.overwrite:
        _sidecar(out).unlink(missing_ok=True)
    else:
        _check_resume(out, s.to_json(), fm.__dict__)
    output = TagOutput(out, _dropped_path(out) if args.drop_guessable else None, overwrite=args.overwrite)
    kept, dropped = output.load_done()
    done = {r["id"] for r in kept + dropped}
    _write_sidecar(out, s, fm)

    cs = args.chunk_size
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
                backend = stack.enter_context(open_engines(args))
            stats.engine_start_s = time.perf_counter() - t0
            progress = _Progress(sum(len(c) for c in todo), err, not args.no_progress)
            stack.callback(progress.close)
            with make_scorer(args.verify_workers, args.verify_timeout, s.require_think) as scorer:
                tagger.backend, tagger.scorer = backend, scorer
                _tag_chunks(tagger, todo, output, stats, args.drop_guessable, progress)
    output.finalize()
    kept, dropped = output.read_all()
    summary = summarize(kept, dropped, s, stats)
    print_summary(summary, Console())
    _write_sidecar(out, s, fm, summary=summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # vLLM's per-request INFO lines would bury the progress bar; VLLM_LOGGING_LEVEL=INFO restores them.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        run(args)
    except DataError as e:
        print(f"thinkrl-tag: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thinkrl-tag: interrupted; finished chunks are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
