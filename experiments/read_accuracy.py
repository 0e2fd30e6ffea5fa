"""Does the VLM read its image? Exact-match accuracy of its answers on held-out image->text pairs
(experiments/arith_align.py's eval split), decoded with transformers `generate` (issue 19 item 2).

The transcription pairs are the direct test: the answer is the expression drawn in the image, so a
decoder that ignores the image (BENCHMARKS.md, "Image demo, SFT stage") scores ~0 however well it
formats. Operand-count and operator pairs are reported per kind too.

transformers, not vLLM: a checkpoint is measured the way the learner sees it, with no engine to
start; one prompt at a time (images of different sizes need no padding), greedy at T = 0.

    python -m experiments.read_accuracy --checkpoint runs/demo-image-align/checkpoint \\
        --data data/arith_align/eval.jsonl [--kind transcribe] [--temperature 1.0]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from prompts.chat import encode_prompt
from prompts.images import open_image
from prompts.schema import PromptRow, load_prompt_rows
from rl.modeling import load_policy, load_tokenizer
from rl.vision import load_vision


def read_accuracy(checkpoint: str | Path, rows: list[PromptRow], temperature: float = 0.0,
                  max_new_tokens: int = 24, seed: int = 0) -> dict:
    """{"n", "exact_match", "by_kind": {kind: accuracy}, "by_style": {"task-drawn" | "varied":
    {"n", "exact_match"}} (rows of arith_align, whose metadata says how they were drawn), "misses":
    first 10 (id, answer, said)}. Exact match is of the decoded response, stripped of surrounding
    whitespace, to `row.answer`."""
    model = load_policy(checkpoint, for_generate=True).eval()
    tokenizer = load_tokenizer(checkpoint)
    vision = load_vision(checkpoint)
    if vision is None:
        raise ValueError(f"{checkpoint}: a text-only policy cannot read images")
    torch.manual_seed(seed)
    hits: dict[str, list[bool]] = defaultdict(list)
    by_style: dict[str, list[bool]] = defaultdict(list)
    misses = []
    for row in rows:
        images = [open_image(src) for src in row.images()]
        ids = vision.expand(encode_prompt(tokenizer, row.chat()), images)
        pixels = vision.pixel_inputs(images)
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **pixels,
                do_sample=temperature > 0, temperature=temperature if temperature > 0 else None, top_k=None,
                top_p=None, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        said = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        ok = said == row.answer
        hits[row.metadata.get("kind", "all")].append(ok)
        style = row.metadata.get("style")
        if isinstance(style, dict) and "task" in style:
            by_style["task-drawn" if style["task"] else "varied"].append(ok)
        if not ok and len(misses) < 10:
            misses.append((row.id, row.answer, said))
    everything = [h for hs in hits.values() for h in hs]
    return {
        "n": len(everything), "exact_match": sum(everything) / max(1, len(everything)), "temperature": temperature,
        "by_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
        "by_style": {k: {"n": len(v), "exact_match": sum(v) / len(v)} for k, v in sorted(by_style.items())},
        "misses": misses,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="data/arith_align/eval.jsonl")
    ap.add_argument("--kind", default=None, help="only rows of this kind (transcribe, operands, operators)")
    ap.add_argument("--n", type=int, default=None, help="at most this many rows")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--out", default=None, help="write the result here as JSON")
    ap.add_argument("--summary", action="store_true", help="print one line instead of the whole result")
    args = ap.parse_args(argv)
    rows = [r for r in load_prompt_rows(args.data) if args.kind is None or r.metadata.get("kind") == args.kind]
    res = read_accuracy(args.checkpoint, rows[: args.n], args.temperature)
    if args.summary:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in res["by_kind"].items())
        styles = "".join(f"; {k} {v['exact_match']:.3f} (n={v['n']})" for k, v in res["by_style"].items())
        print(f"held-out exact match (T={args.temperature}, n={res['n']}): {res['exact_match']:.3f}; {kinds}{styles}")
    else:
        print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
