"""The tagging CLI's config (`TagConfig`), what it computes for a chunk of prompts, and the
end-of-run summary.

Per prompt (k1.5 §2.1; the samplers of §2.3.4 use the pass rate):

- difficulty: k samples at temperature T from the checkpoint, each scored by the row's verifier;
  `pass_rate` = passing samples (`rl.rewards.scores.is_correct`) / k, `difficulty` = the pass-rate bucket
  (1 = easiest; a pass rate below more thresholds is harder), metadata `num_samples`,
  `response_len_mean` (tokens), `num_truncated` (samples that hit max_tokens: they score 0, so
  a pass rate with truncated samples is a floor), and `correct_len_mean` / `correct_len_p90`
  (tokens of the passing samples; None when none passed), to filter or weight long-CoT prompts
  by how long their right answers run.
- hack-proneness: N answer-only tries (the question in an "answer only" template, plus a
  prefilled empty think block for models that think), scored by the same verifier; metadata
  `guess_tries`, `guess_hits`, `guessable` (= guess_hits >= guess.min_hits; k1.5 drops a prompt
  the model answers right "within N attempts" without CoT, N = 8).
- domain: see prompts/tag_domain.py; metadata `domain_source`.

Image rows (vision-language checkpoints): the samples and the answer-only tries see the row's
images (the guess template is spliced around the original message parts, so an interleaved
figure stays where it was); the domain classifier sees the question text only (a label from the
words is what the rules give too, and it keeps the classifier prompt model-agnostic). Length
checks and response budgets count the expanded prompt (`rl.vision` placeholder expansion).

All of a chunk's generations (samples, guesses, classifications) go to the engine in one call
(`rollout.engine.VLLMEngine.generate`, or `rollout.recovery.EngineGroup.generate` over Ray
engines), each request with its own n, temperature, top_p, max_tokens and seed. The seed is
derived from (run seed, prompt id, purpose) by `derive_seed`, and vLLM seeds the n samples of a
request with seed + j, so a prompt's samples depend neither on the chunk it falls in nor on its
place in the call nor on the engine that runs it (up to batch-dependent float rounding, which
the CLI sidesteps by always batching the same chunks; see prompts/tag.py). A request the engine
fails (finish_reason "error") fails the whole chunk: tagging it as a miss would bias the pass rate.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich.table import Table

from prompts.chat import render_chat
from prompts.images import row_images
from prompts.schema import PromptRow
from prompts.tag_domain import DEFAULT_DOMAIN_KEYS, Rule, classifier_messages, known_domain, parse_label, rule_domain
from prompts.tag_io import FieldMap, same_file
from rl.length_stats import percentile
from rl.rewards.scores import is_correct
from rl.rewards import VerifierConfig
from rollout.engine import EngineConfig, GenRequest, SamplingConfig, by_request, stable_seed

EXCLUDE_TYPES = ("multiple_choice", "true_false", "proof")
GUESS_TEMPLATE = (
    "{question}\n\nAnswer immediately with only the final answer in \\boxed{}. Do not show any reasoning."
)
EMPTY_THINK = "<think>\n</think>\n"


def derive_seed(seed: int, prompt_id: str, purpose: str) -> int:
    """A per-(run seed, prompt id, purpose) seed, stable across processes and Python versions."""
    return stable_seed(seed, purpose, prompt_id)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingSection(_Strict):
    """The k samples that measure a prompt's pass rate."""

    samples: int = Field(10, ge=1, description="k samples per prompt")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="Response token budget per sample")
    seed: int = Field(0, description="Run seed; each prompt's seeds derive from (seed, prompt id)")
    thresholds: list[float] = Field([0.8, 0.6, 0.4, 0.2], description="Pass-rate cut points (sorted high to low): "
                                    "difficulty = 1 + how many the pass rate is below")

    @field_validator("thresholds")
    @classmethod
    def _high_to_low(cls, v: list[float]) -> list[float]:
        v = sorted(v, reverse=True)
        if not v or any(not 0.0 < t <= 1.0 for t in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct pass rates in (0, 1], got {v}")
        return v


class GuessSection(_Strict):
    """The hack-prone filter: answer-only tries, no reasoning (k1.5 §2.1)."""

    tries: int = Field(8, ge=0, description="Answer-only tries per prompt (0: no filter)")
    template: str = Field(GUESS_TEMPLATE, description="The last user message; '{question}' marks the question")
    prefill: str = Field("auto", description="Start of the assistant turn; auto: an empty <think></think> block "
                         "when the tokenizer has a </think> token, else nothing")
    max_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0)
    min_hits: int = Field(1, ge=1, description="Correct guesses that make a prompt guessable")
    drop: bool = Field(False, description="Write guessable prompts to <output stem>.guessable.jsonl, not the output")


class DomainSection(_Strict):
    """Where a row's domain comes from (prompts/tag_domain.py)."""

    keys: list[str] = Field(list(DEFAULT_DOMAIN_KEYS), description="Metadata keys that hold a domain "
                            "(after the row's own `domain`)")
    fallback: Literal["rules", "model", "none"] = Field("rules", description="For rows without one: regex rules, "
                                                         "or ask the checkpoint to pick a label")
    rules: str | None = Field(None, description="YAML/JSON rule file (None: the built-in rules)")
    labels: list[str] = Field([], description="Labels for fallback model (empty: the rule set's domains)")
    default: str = Field("other", description="The domain of a row nothing else gives one")
    max_tokens: int = Field(16, ge=1, description="Reply budget of the model classifier")


class RunSection(_Strict):
    """How this run goes; none of it changes a row's tags."""

    limit: int | None = Field(None, ge=1, description="Only the first N usable rows of the input")
    on_bad_row: Literal["fail", "skip"] = Field("fail", description="Rows without a usable prompt/answer/id are "
                                                "listed (file:line); then stop, or skip them")
    overwrite: bool = Field(False, description="Start over instead of resuming an existing output")
    chunk_size: int = Field(64, ge=1, description="Prompts per engine call and per output append")
    progress: bool = Field(True, description="A progress bar on a terminal (else a log line per chunk)")
    summary_json: str | None = Field(None, description="Also write the summary to this file")


class EnginesSection(_Strict):
    """More than one engine: Ray actors, prompts sharded over them (the names of rl.config.RolloutConfig)."""

    num_engines: int = Field(1, ge=1, description="vLLM engines; > 1 runs them as Ray actors")
    actor_num_cpus: float = Field(1.0, gt=0, description="Ray CPU request per engine actor")
    actor_num_gpus: float = Field(0.0, ge=0, description="Ray GPU request per engine actor")
    timeout_s: float = Field(3600.0, gt=0, description="Seconds one chunk may take on Ray engines")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: start a local one)")


class TagConfig(_Strict):
    """The tagging CLI's config (prompts/tag.py; experiments/configs/tag_demo.yaml)."""

    model: str = Field(description="HF checkpoint directory; engine.model is set to it")
    input: str = Field(description="JSONL / JSON-lines / parquet / csv, or a datasets save_to_disk directory")
    output: str = Field(description="Output .jsonl or .parquet (never the input)")
    split: str | None = Field(None, description="Split of a saved DatasetDict")
    fields: FieldMap = Field(FieldMap(), description="Input field names and answer format (prompts/tag_io.py)")
    sampling: SamplingSection = SamplingSection()
    guess: GuessSection = GuessSection()
    domain: DomainSection = DomainSection()
    exclude_types: list[str] = Field([], description=f"Row types to leave out: {', '.join(EXCLUDE_TYPES)}")
    engine: EngineConfig = Field(description="The vLLM engine (rollout.engine.EngineConfig)")
    engines: EnginesSection = EnginesSection()
    verifier: VerifierConfig = Field(VerifierConfig(), description="The verifier pool (rl.rewards.VerifierConfig)")
    run: RunSection = RunSection()

    @model_validator(mode="before")
    @classmethod
    def _engine_model(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(eng := raw.get("engine") or {}, dict):
            if "model" in eng:
                raise ValueError("engine.model: set the checkpoint as `model`")
            raw = {**raw, "engine": {**eng, "model": raw.get("model", "")}}
        return raw

    @field_validator("exclude_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        if unknown := set(v) - set(EXCLUDE_TYPES):
            raise ValueError(f"unknown {sorted(unknown)}; choose from {', '.join(EXCLUDE_TYPES)}")
        return v

    @model_validator(mode="after")
    def _paths(self) -> TagConfig:
        if self.guess.drop and self.guess.tries == 0:
            raise ValueError("guess.drop needs guess.tries > 0")
        if not (Path(self.model) / "config.json").is_file():
            raise ValueError(f"model {self.model}: not a checkpoint directory (no config.json)")
        if same_file(self.input, self.output):
            raise ValueError(f"output {self.output} is the input file; write the tagged set to a new path")
        if Path(self.output).suffix not in (".jsonl", ".json", ".parquet"):
            raise ValueError(f"output must end in .jsonl, .json or .parquet, got {Path(self.output).name!r}")
        return self


def bucket_of(pass_rate: float, thresholds: Sequence[float]) -> int:
    """1 + the number of thresholds the pass rate falls below (thresholds sorted high to low)."""
    return 1 + sum(pass_rate < t for t in thresholds)


def bucket_label(b: int, thresholds: Sequence[float]) -> str:
    hi = 1.0 if b == 1 else thresholds[b - 2]
    lo = 0.0 if b > len(thresholds) else thresholds[b - 1]
    return f"[{lo:g}, {hi:g}" + ("]" if b == 1 else ")")


def excluded_type(row: PromptRow, types: Sequence[str]) -> str | None:
    """Which of the excluded row types this row is (k1.5 §2.1 leaves these out: a multiple-choice
    or true/false answer is guessed by chance, a proof cannot be checked by a rule)."""
    if "multiple_choice" in types and (
        row.verifier == "multiple_choice" or row.metadata.get("options") or row.metadata.get("choices")
    ):
        return "multiple_choice"
    if "true_false" in types and row.answer.strip().lower().strip(".") in {"true", "false", "yes", "no"}:
        return "true_false"
    if "proof" in types and re.search(r"\b(prove|show that|proof)\b", row.question(), re.IGNORECASE):
        return "proof"
    return None


def guess_messages(row: PromptRow, template: str) -> list[dict[str, Any]]:
    """The prompt with its last user message put in the answer-only template. A message with
    images keeps its parts in order, the template's text around them ("{question}" marks where)."""
    msgs = row.chat()
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    last = row.prompt[users[-1]] if users else None
    if last is not None and last.images():
        before, sep, after = template.partition("{question}")
        parts = list(msgs[users[-1]]["content"])
        if not sep:  # no "{question}" slot: the images, then the template
            parts, before, after = [p for p in parts if p["type"] == "image"], "", template
        parts = [{"type": "text", "text": before}, *parts, {"type": "text", "text": after}]
        msgs[users[-1]] = {"role": "user", "content": [p for p in parts if p["type"] == "image" or p["text"]]}
        return msgs
    text = template.replace("{question}", row.question())
    if users:
        msgs[users[-1]] = {"role": "user", "content": text}
    else:
        msgs.append({"role": "user", "content": text})
    return msgs


@dataclass(frozen=True)
class Encoded:
    sample: tuple[int, ...]
    guess: tuple[int, ...] | None  # None: no guess tries
    classify: tuple[int, ...] | None  # None: no model classification for this row (text only)
    image_extra: int = 0  # tokens the engine adds expanding the image placeholders (sample, guess)

    def sample_len(self) -> int:
        return len(self.sample) + self.image_extra

    def guess_len(self) -> int:
        return len(self.guess) + self.image_extra if self.guess is not None else 0

    def longest(self) -> int:
        """The longest prompt in engine tokens (image placeholders expanded)."""
        return max(self.sample_len(), self.guess_len(), len(self.classify or ()))


class Tagger:
    """Tags chunks of rows with a `Scorer` and a generation backend: anything with
    `generate(requests, SamplingConfig) -> list[Generation]` (`VLLMEngine`, `EngineGroup`). Every
    request sets all it samples with, so the call's `SamplingConfig` is never read."""

    def __init__(self, backend: Any, scorer: Any, tokenizer: Any, cfg: TagConfig, rules: list[Rule],
                 vision: Any = None):
        self.backend, self.scorer, self.tok, self.cfg, self.rules = backend, scorer, tokenizer, cfg, rules
        self.vision = vision  # `rl.vision.VisionIO` of a VLM checkpoint, None for a text-only one

    def encode(self, messages: list[dict[str, Any]], prefill: str = "") -> tuple[int, ...]:
        return tuple(self.tok.encode(render_chat(self.tok, messages, True) + prefill, add_special_tokens=False))

    def encode_row(self, row: PromptRow, images: list[Any] | None = None) -> Encoded:
        """Token ids of every prompt the row needs (measured up front, encoded again per chunk).
        `images`: the row's decoded images (decoded here when None). Raises ValueError, naming the
        row, when it has images and the checkpoint is text-only, or placeholders and images do not
        pair up."""
        g, d = self.cfg.guess, self.cfg.domain
        sample = self.encode(row.chat())
        guess = self.encode(guess_messages(row, g.template), g.prefill) if g.tries else None
        classify = None
        if d.fallback == "model" and known_domain(row, d.keys)[0] is None:
            classify = self.encode(classifier_messages(row.question(), d.labels))
        extra = 0
        if row.has_images():
            if self.vision is None:
                raise ValueError(f"row {row.id!r} has images but the checkpoint is text-only (no vision_config)")
            if images is None:
                images = row_images(row)
            try:
                for ids in (sample, guess):  # `expand` checks the placeholders pair up with the images
                    if ids is not None:
                        self.vision.expand(ids, images)
            except ValueError as e:
                raise ValueError(f"row {row.id!r}: {e}") from None
            extra = self.vision.expanded_len(sample, images) - len(sample)
        return Encoded(sample, guess, classify, extra)

    def tag(self, rows: list[PromptRow], t: RunStats) -> list[dict]:
        """The rows tagged (as dicts to write); the time each part took is added to `t`."""
        s, g, d = self.cfg.sampling, self.cfg.guess, self.cfg.domain
        t0 = time.perf_counter()
        images = [row_images(r) if r.has_images() else [] for r in rows]  # one list per row: pickled once
        enc = [self.encode_row(r, ims) for r, ims in zip(rows, images)]
        budget = self.cfg.engine.max_model_len
        # Row i's sample job, then its guess job (per = 2), so that engines splitting the call into
        # contiguous shards of equal request counts (EngineGroup) get equal shares of both kinds.
        per = 2 if g.tries > 0 else 1
        jobs: list[GenRequest] = []
        for row, e, ims in zip(rows, enc, images):
            jobs.append(GenRequest(list(e.sample), ims, n=s.samples,
                                   max_tokens=min(s.max_tokens, budget - e.sample_len()), temperature=s.temperature,
                                   top_p=s.top_p, seed=derive_seed(s.seed, row.id, "sample")))
            if per == 2:
                jobs.append(GenRequest(list(e.guess), ims, n=g.tries,
                                       max_tokens=min(g.max_tokens, budget - e.guess_len()),
                                       temperature=g.temperature, top_p=1.0,
                                       seed=derive_seed(s.seed, row.id, "guess")))
        domains = [known_domain(r, d.keys) for r in rows]
        classify = [i for i, e in enumerate(enc) if e.classify is not None]
        classify_at = len(jobs)
        for i in classify:
            c = enc[i].classify
            jobs.append(GenRequest(list(c), n=1, max_tokens=min(d.max_tokens, budget - len(c)), temperature=0.0,
                                   top_p=1.0, seed=0))
        t.other_s += time.perf_counter() - t0

        t0 = time.perf_counter()
        outs = by_request(self.backend.generate(jobs, SamplingConfig()), len(jobs))
        t.generate_s += time.perf_counter() - t0

        t0 = time.perf_counter()
        score_rows: list[PromptRow] = []
        texts: list[str] = []
        finish: list[str] = []
        for j in range(classify_at):
            prefix = g.prefill if j % per else ""
            for smp in outs[j]:
                score_rows.append(rows[j // per])
                texts.append(prefix + smp.text)
                finish.append(smp.finish_reason)
        flat = self.scorer.score(score_rows, texts, finish)  # a sample cut at max_tokens scores 0
        scores, pos = [], 0  # one list per job
        for j in range(classify_at):
            scores.append(flat[pos : pos + len(outs[j])])
            pos += len(outs[j])
        t.verify_s += time.perf_counter() - t0

        t0 = time.perf_counter()
        result = []
        for i, row in enumerate(rows):
            smp, sc = outs[i * per], scores[i * per]
            n = len(smp)
            meta = dict(row.metadata)
            meta["num_samples"] = n
            meta["response_len_mean"] = round(sum(len(x.token_ids) for x in smp) / max(1, n), 3)
            meta["num_truncated"] = sum(x.finish_reason == "length" for x in smp)
            ok_len = [len(x.token_ids) for x, c in zip(smp, sc) if is_correct(c)]
            meta["correct_len_mean"] = round(sum(ok_len) / len(ok_len), 3) if ok_len else None
            meta["correct_len_p90"] = round(percentile(ok_len, 90), 3) if ok_len else None
            if per == 2:
                hits = sum(is_correct(x) for x in scores[i * per + 1])
                meta.update(guess_tries=len(outs[i * per + 1]), guess_hits=hits, guessable=hits >= g.min_hits)
            result.append((row, sum(is_correct(x) for x in sc) / max(1, n), meta))
        for j, i in enumerate(classify):
            label = parse_label(outs[classify_at + j][0].text, d.labels)
            domains[i] = (label, "model") if label else (None, "")
        out_rows = []
        for i, (row, rate, meta) in enumerate(result):
            dom, src = domains[i]
            if dom is None and d.fallback == "rules":
                dom = rule_domain(row.question(), self.rules)
                src = "rules" if dom else ""
            if dom is None:
                dom, src = d.default, "default"
            meta["domain_source"] = src
            tagged = row.model_copy(
                update={"pass_rate": rate, "difficulty": bucket_of(rate, s.thresholds), "domain": dom, "metadata": meta}
            )
            out = tagged.model_dump(exclude_none=True)
            PromptRow.model_validate(out)  # what we write must load as a prompt row
            out_rows.append(out)
        t.other_s += time.perf_counter() - t0
        return out_rows


# -- summary -----------------------------------------------------------------------------------


@dataclass
class RunStats:
    input_rows: int = 0
    bad_rows: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    already_done: int = 0
    tagged: int = 0
    images: int = 0  # images in the prompts tagged this run (each decoded and sent to the engine)
    engine_start_s: float = 0.0
    wall_s: float = 0.0  # from the first chunk to the last, engine start excluded
    generate_s: float = 0.0
    verify_s: float = 0.0
    other_s: float = 0.0


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (ties get average ranks); None when either side is constant."""

    def ranks(v: list[float]) -> list[float]:
        at: dict[float, list[int]] = defaultdict(list)  # value -> its 1-based places in sorted order
        for i, x in enumerate(sorted(v), start=1):
            at[x].append(i)
        return [sum(at[x]) / len(at[x]) for x in v]

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def summarize(kept: list[dict], dropped: list[dict], thresholds: list[float], st: RunStats) -> dict[str, Any]:
    rows = kept + dropped

    def by(key: Any) -> list[tuple[Any, dict[str, Any]]]:  # (group, its count and mean pass rate), sorted
        groups: dict[Any, list[float]] = defaultdict(list)
        for r in rows:
            groups[key(r)].append(r["pass_rate"])
        return [(k, {"count": len(v), "mean_pass_rate": sum(v) / len(v)}) for k, v in sorted(groups.items())]

    rates = [r["pass_rate"] for r in rows]
    guess = [r for r in rows if (r.get("metadata") or {}).get("guessable")]
    work = st.generate_s + st.verify_s + st.other_s
    known = [(r["pass_rate"], (r.get("metadata") or {}).get("known_difficulty")) for r in rows]
    known = [(p, k) for p, k in known if isinstance(k, (int, float)) and not isinstance(k, bool)]
    rho = spearman([p for p, _ in known], [k for _, k in known]) if len(known) >= 3 else None
    return {
        "rows_tagged": len(rows),
        "rows_written": len(kept),
        "rows_dropped_guessable": len(dropped),
        "mean_pass_rate": sum(rates) / len(rates) if rates else None,
        "guessable": len(guess),
        # agreement with a known label: should be clearly negative (harder -> lower pass rate)
        "spearman_pass_rate_vs_known_difficulty": None if rho is None else {"rho": rho, "n": len(known)},
        "buckets": {str(b): {"pass_rate_range": bucket_label(b, thresholds), **v}
                    for b, v in by(lambda r: int(r["difficulty"]))},
        "domains": dict(sorted(by(lambda r: str(r.get("domain"))), key=lambda kv: -kv[1]["count"])),  # stable
        # rows scored by each verifier (the row's `verifier` picks it in rl.rewards)
        "verifiers": dict(by(lambda r: str(r.get("verifier", "math")))),
        "this_run": {
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(st).items()},
            "prompts_per_s": round(st.tagged / st.wall_s, 3) if st.wall_s > 0 else None,
            "generate_share": round(st.generate_s / work, 3) if work > 0 else None,
            "verify_share": round(st.verify_s / work, 3) if work > 0 else None,
        },
    }


def print_summary(summary: dict[str, Any], console: Any) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    t = Table(title="Difficulty (tagged pass-rate buckets; higher = harder)")
    for c in ("difficulty", "pass rate", "prompts", "mean pass rate"):
        t.add_column(c, justify="right")
    for b, v in summary["buckets"].items():
        t.add_row(b, v["pass_rate_range"], str(v["count"]), pct(v["mean_pass_rate"]))
    console.print(t)
    d = Table(title="Domains")
    for c in ("domain", "prompts", "mean pass rate"):
        d.add_column(c, justify="right" if c != "domain" else "left")
    items = list(summary["domains"].items())
    for name, v in items[:25]:
        d.add_row(name, str(v["count"]), pct(v["mean_pass_rate"]))
    if len(items) > 25:
        d.add_row(f"... {len(items) - 25} more", str(sum(v["count"] for _, v in items[25:])), "")
    console.print(d)
    run = summary["this_run"]
    lines = [
        f"prompts tagged: {summary['rows_tagged']} (written {summary['rows_written']}, "
        f"dropped as guessable {summary['rows_dropped_guessable']})",
        f"mean pass rate: {pct(summary['mean_pass_rate'])}   guessable: {summary['guessable']}",
        f"this run: {run['tagged']} tagged, {run['already_done']} already done, {run['bad_rows']} bad rows skipped, "
        f"excluded {sum(run['excluded'].values())} {dict(run['excluded']) or ''}".rstrip(),
    ]
    if len(summary.get("verifiers", {})) > 1 or run.get("images"):
        by_v = ", ".join(f"{k} {v['count']} (mean {pct(v['mean_pass_rate'])})" for k, v in summary["verifiers"].items())
        lines.append(f"verifiers: {by_v}; images sent this run: {run.get('images', 0)}")
    sp = summary["spearman_pass_rate_vs_known_difficulty"]
    if sp is not None:
        lines.append(f"Spearman rho(pass rate, known difficulty): {sp['rho']:.3f} over {sp['n']} prompts")
    if run["tagged"]:
        lines.append(
            f"throughput: {run['prompts_per_s']} prompts/s over {run['wall_s']} s (engine start {run['engine_start_s']} s"
            f" not counted); generation {run['generate_s']} s ({100 * (run['generate_share'] or 0):.1f}%), "
            f"verification {run['verify_s']} s ({100 * (run['verify_share'] or 0):.1f}%), other {run['other_s']} s"
        )
    for ln in lines:
        console.print(ln, soft_wrap=True, highlight=False, markup=False)
