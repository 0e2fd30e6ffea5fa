"""Held-out token efficiency of one checkpoint, appended to a table: pass@1, response-length
percentiles, mean correct length, within-group CV of correct lengths, truncation rate -- the
numbers of the long-CoT SFT model, the length-penalty pair and the long2short table. Optionally
a histogram PNG of the response lengths (correct vs incorrect).

    python -m experiments.length_report --model runs/demo-long/checkpoint --label "SFT long" \\
        --eval data/long/eval.jsonl --samples 4 --table runs/long_table.json \\
        --hist docs/long_cot_sft_lengths.png
    python -m experiments.length_report --table runs/long_table.json       # print the table

One model per call (one vLLM engine per process, which exits with it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from prompts.schema import load_prompt_rows
from rl.evaluate import EvalResult, evaluate
from rl.scoring import Scorer
from rl.vision import load_vision
from rollout.engine import EngineConfig, VLLMEngine

COLUMNS = (
    ("label", "{}"), ("pass_at_1", "{:.3f}"), ("len_mean", "{:.0f}"), ("correct_len_mean", "{:.0f}"),
    ("correct_len_p90", "{:.0f}"), ("len_p50", "{:.0f}"), ("len_p95", "{:.0f}"), ("len_max", "{:.0f}"),
    ("len_p95_over_p50", "{:.2f}"), ("correct_len_cv_within_group", "{:.2f}"), ("truncated_frac", "{:.3f}"),
)


def table_row(label: str, model: str, res: EvalResult) -> dict:
    return {"label": label, "model": model, "pass_at_1": res.pass_at_1, "n_prompts": res.n,
            "samples_per_prompt": res.samples_per_prompt, "temperature": res.temperature,
            "wall_s": res.wall_s, **res.lengths, "samples": res.samples}


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the COLUMNS (NaN shown as n/a)."""
    def cell(fmt: str, v) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(fmt, r.get(c)) for c, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def histogram(tokens: list[int], correct: list[bool], out: str | Path, title: str) -> None:
    """Log-binned histogram of response lengths, correct and incorrect stacked."""
    import matplotlib  # matplotlib, numpy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): files, no display
    import numpy as np

    hi = max(tokens) if tokens else 1
    bins = np.geomspace(max(1, min(tokens, default=1)), hi + 1, 40)
    ok = [t for t, c in zip(tokens, correct) if c]
    bad = [t for t, c in zip(tokens, correct) if not c]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.hist([ok, bad], bins=bins, stacked=True, label=[f"correct ({len(ok)})", f"incorrect ({len(bad)})"],
            color=["#2a9d8f", "#e76f51"])
    ax.set_xscale("log")
    for q, style in ((50, "--"), (95, ":")):
        v = float(np.percentile(tokens, q))
        ax.axvline(v, color="k", linestyle=style, linewidth=1)
        ax.text(v, ax.get_ylim()[1] * 0.95, f" p{q} {v:.0f}", fontsize=9, va="top")
    ax.set_xlabel("response length (tokens, log scale)")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="JSON list of rows; this model's row is appended")
    ap.add_argument("--model", help="checkpoint to evaluate (omit to print the table)")
    ap.add_argument("--label", help="row label (default: the model path)")
    ap.add_argument("--eval", default="data/long/eval.jsonl", help="held-out prompt rows")
    ap.add_argument("--num-prompts", type=int, default=420)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (>= 2 for the within-group CV)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=3072)
    ap.add_argument("--max-model-len", type=int, default=3200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hist", default=None, help="write a length histogram PNG here")
    args = ap.parse_args(argv)

    table_path = Path(args.table)
    rows = json.loads(table_path.read_text()) if table_path.exists() else []
    if args.model:
        prompts = load_prompt_rows(args.eval)[: args.num_prompts]
        with (VLLMEngine(EngineConfig(model=args.model, max_model_len=args.max_model_len, kv_cache_gib=1.0)) as engine,
              Scorer() as scorer):
            res = evaluate(engine.generate, engine.tokenizer, prompts, scorer, samples=args.samples,
                           temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                           max_model_len=args.max_model_len, vision=load_vision(args.model))
        label = args.label or args.model
        rows = [r for r in rows if r["label"] != label] + [table_row(label, args.model, res)]
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table_path.write_text(json.dumps(rows, indent=2) + "\n")
        if args.hist:
            histogram(res.samples["tokens"], res.samples["correct"], args.hist,
                      f"{label}: {len(res.samples['tokens'])} held-out samples at T={args.temperature}, "
                      f"pass@1 {res.pass_at_1:.3f}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
