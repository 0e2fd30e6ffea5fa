"""long2short (k1.5 §2.4): shortest rejection sampling and model merging, by hand and on a tiny
model with the real vLLM engine and verifier."""

from __future__ import annotations

import json

import pytest
import torch

from cot_sft.long2short import main, merge_weights, shortest_correct
from prompts.schema import load_prompt_rows
from rl.modeling import load_policy
from rl.scoring import Scorer
from rollout.engine import Generation


def _gen(p: int, n: int, text: str = "") -> Generation:
    return Generation(p, list(range(n)), [0.0] * n, "stop", text or f"p{p}-{n}")


def test_shortest_correct_by_hand():
    gens = [_gen(0, 30), _gen(0, 10), _gen(0, 20), _gen(1, 5), _gen(1, 7), _gen(2, 3)]
    correct = [True, False, True, False, True, False]
    picks = shortest_correct(gens, correct)
    assert sorted(picks) == [0, 1]  # prompt 2 has no correct sample
    assert (picks[0].tokens, picks[0].text) == (20, "p0-20")  # the 10-token one was wrong
    assert (picks[1].tokens, picks[1].text) == (7, "p1-7")
    tie = shortest_correct([_gen(0, 4, "first"), _gen(0, 4, "second")], [True, True])
    assert tie[0].text == "first"


def test_merge_weights_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "step": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "step": torch.tensor([3])}
    out = merge_weights(a, b, alpha=0.25)
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))  # 0.25 * a + 0.75 * b
    assert torch.equal(out["step"], torch.tensor([3]))
    with pytest.raises(ValueError, match="not the same architecture"):
        merge_weights(a, {"w": torch.zeros(3), "step": torch.tensor([3])}, 0.5)
    with pytest.raises(ValueError, match="different parameters"):
        merge_weights(a, {"w": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        merge_weights(a, b, 1.5)


@pytest.mark.integration
def test_merge_command_on_tiny_models(tmp_path):
    from experiments.tiny_model import build_tiny_checkpoint

    kw = dict(hidden_size=64, num_layers=1, intermediate_size=128)
    long_dir = build_tiny_checkpoint(tmp_path / "long", seed=0, **kw)
    short_dir = build_tiny_checkpoint(tmp_path / "short", seed=1, **kw)
    main(["merge", "--long", str(long_dir), "--short", str(short_dir), "--alpha", "0.5", "--out", str(tmp_path / "m")])
    a, b, m = (load_policy(d).state_dict() for d in (long_dir, short_dir, tmp_path / "m"))
    for k in ("model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight"):
        want = (0.5 * a[k].float() + 0.5 * b[k].float()).to(torch.bfloat16)
        assert torch.equal(m[k].to(torch.bfloat16), want), k  # stored in bf16, as the inputs are
    assert not torch.equal(m["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert json.loads((tmp_path / "m" / "thinkrl_merge.json").read_text())["alpha"] == 0.5


@pytest.mark.integration
def test_shortest_rs_command_on_the_sft_model(tmp_path, sft_checkpoint, arith_data):
    # The easiest train prompts (level <= 2), 8 samples each at T=1 from the tiny SFT model.
    easy = [r for r in load_prompt_rows(arith_data / "train.jsonl") if r.difficulty <= 2][:12]
    prompts = tmp_path / "easy.jsonl"
    prompts.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in easy))
    out = tmp_path / "rs.jsonl"
    main(["shortest-rs", "--model", str(sft_checkpoint), "--prompts", str(prompts), "--out", str(out),
          "--n", "8", "--max-tokens", "480", "--max-model-len", "1024", "--kv-cache-gib", "0.25"])
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats["prompts"] == 12 and stats["samples"] == 96
    assert len(kept) == stats["prompts_with_correct"] > 0
    # every kept response is right, and the shortest right one is no longer than the right mean
    with Scorer() as scorer:
        rows = {r.id: r for r in easy}
        assert scorer.score([rows[k["id"]] for k in kept], [k["response"] for k in kept]) == [1.0] * len(kept)
    assert stats["kept_len_mean"] <= stats["correct_len_mean"]
