"""The vision-alignment decoder freeze (cot_sft/vision_groups.py, `train.freeze_decoder_steps`, issue 19):
which parameters are the decoder, the LR multipliers worked by hand, frozen parameters that do
not move while frozen and do move after (plain AdamW here; DeepSpeed ZeRO-1 in the integration
tests, through the same groups, multipliers and hooks as cot_sft/train.py), and config errors
that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cot_sft.data import load_sft_rows, tokenize_examples
from cot_sft.vision_groups import VisionDecoderGroups
from cot_sft.train import main
from experiments.arith_align import generate_align, write_images
from rl.configio import ConfigError
from rl.modeling import decoder_attention, load_policy, load_tokenizer, packed_ce_sum, packed_token_logprobs
from rl.packed_attention import PACKED_SDPA
from rl.packing import pack_by_budget
from rl.vision import load_vision

TINY_VLM = dict(hidden_size=64, num_layers=2, intermediate_size=128, moe_intermediate_size=32,
                vision_hidden=32, vision_layers=1, vision_intermediate=64)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> Path:
    from experiments.tiny_vlm import build_tiny_vlm_checkpoint

    return build_tiny_vlm_checkpoint(tmp_path_factory.mktemp("vlm"), seed=0, **TINY_VLM)


@pytest.fixture(scope="module")
def align_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("align")
    rows = generate_align(0, 24, 0)["sft"]
    write_images(rows, out)
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / "sft.jsonl"


@pytest.fixture(scope="module")
def batches(vlm_dir, align_file):
    """Four steps of packed image batches (6 pairs each) of the tiny VLM."""
    vision = load_vision(vlm_dir)
    samples, dropped = tokenize_examples(load_tokenizer(vlm_dir), load_sft_rows(align_file), 256, vision)
    assert dropped == 0 and len(samples) == 24
    return vision, [pack_by_budget(samples[i : i + 6], 2048, 512) for i in range(0, 24, 6)]


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().float().clone() for p in params]


def moved(before, params) -> list[bool]:
    return [not torch.equal(b, p.detach().float()) for b, p in zip(before, params)]


def test_vlm_decoder_attends_per_sample_and_scores_as_sdpa_does(vlm_dir, batches):
    """`load_policy` gives a VLM's causal decoder PACKED_SDPA (each packed sample at its own cost)
    and leaves the tower's bidirectional attention on SDPA; packed image rows score as under SDPA
    throughout (transformers' block-diagonal mask from the restarting positions)."""
    vision, steps = batches
    ours, theirs = load_policy(vlm_dir), load_policy(vlm_dir, for_generate=True)
    assert decoder_attention(ours) == PACKED_SDPA and ours.config.vision_config._attn_implementation == "sdpa"
    assert decoder_attention(theirs) == "sdpa"
    batch = steps[0][0]  # the first micro-batch of the first step
    assert any(len(segs) > 1 for segs in batch.segments)  # rows hold several samples
    with torch.no_grad():
        a, _ = packed_token_logprobs(ours, batch, vision=vision)
        b, _ = packed_token_logprobs(theirs, batch, vision=vision)
    assert (a != 0).sum() == batch.num_targets
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


# -- which parameters, which LR ----------------------------------------------------------------


def test_vision_side_is_tower_and_projector_the_rest_is_the_decoder(vlm_dir):
    model = load_policy(vlm_dir)
    f = VisionDecoderGroups(model, 2)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(f.vision_names + f.decoder_names) == sorted(names)
    assert f.vision_names and all(n.startswith(("model.vision_tower.", "model.mm_projector.")) for n in f.vision_names)
    assert {"lm_head.weight", "model.language_model.embed_tokens.weight"} <= set(f.decoder_names)
    assert any(n.startswith("model.mm_projector.") for n in f.vision_names)


def test_a_text_only_model_has_nothing_to_train_while_frozen():
    with pytest.raises(ValueError, match="no vision tower or projector"):
        VisionDecoderGroups(torch.nn.Linear(2, 2), 1)


def test_lr_multipliers():
    f = VisionDecoderGroups.__new__(VisionDecoderGroups)  # the multipliers need only `steps` and the ratio
    f.steps, f.vision_lr_ratio = 3, 1.0
    base = lambda s: 1.0 - 0.1 * s  # noqa: E731
    vision, decoder = f.lr_lambdas(base, warmup=2)
    assert [vision(s) for s in range(6)] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    # frozen for steps 0-2; then base x (1/2, 2/2, 1): 0.7 * 0.5 = 0.35, 0.6 * 1, 0.5 * 1
    assert [decoder(s) for s in range(6)] == pytest.approx([0.0, 0.0, 0.0, 0.35, 0.6, 0.5])
    _, no_warmup = f.lr_lambdas(base, warmup=0)
    assert no_warmup(3) == pytest.approx(0.7)


def test_vision_lr_ratio_scales_only_the_vision_side_and_no_freeze_means_no_rewarm():
    f = VisionDecoderGroups.__new__(VisionDecoderGroups)
    f.steps, f.vision_lr_ratio = 0, 0.25
    base = lambda s: 1.0 - 0.1 * s  # noqa: E731
    vision, decoder = f.lr_lambdas(base, warmup=2)
    assert [vision(s) for s in range(3)] == pytest.approx([0.25, 0.225, 0.2])
    # no freeze: the decoder follows the base schedule from step 0 (its warm-up is the base's own)
    assert [decoder(s) for s in range(3)] == pytest.approx([1.0, 0.9, 0.8])


# -- the schedule with plain AdamW (weight decay on: LR 0 must stop it too) ------------------------


def test_frozen_decoder_does_not_move_then_moves(vlm_dir, batches):
    vision, steps = batches
    torch.manual_seed(0)
    model = load_policy(vlm_dir)
    f = VisionDecoderGroups(model, 2)
    opt = torch.optim.AdamW([{"params": g} for g in f.groups], lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f.lr_lambdas(lambda s: 1.0, warmup=1))
    start_vis, start_dec = snapshot(f.groups[0]), snapshot(f.groups[1])
    for step, micro in enumerate(steps):
        f.at_step(step)
        for mb in micro:
            packed_ce_sum(model, mb, vision=vision).backward()
        if f.frozen(step):  # the hook zeroed them: nothing of the decoder reaches a clip norm or Adam
            assert all(p.grad is None or not p.grad.any() for p in f.groups[1])
        opt.step()
        sched.step()
        opt.zero_grad()
        if step == 1:  # the end of the frozen steps
            assert not any(moved(start_dec, f.groups[1]))
            assert all(moved(start_vis, f.groups[0]))
    dec = moved(start_dec, f.groups[1])
    assert sum(dec) >= 0.9 * len(dec), [n for n, m in zip(f.decoder_names, dec) if not m]


# -- config errors name the key ----------------------------------------------------------------------


def write_config(tmp_path: Path, init: Path, train_file: Path, extra: str = "") -> Path:
    p = tmp_path / "align.yaml"
    p.write_text(
        f"run_name: align\noutput_dir: {tmp_path / 'runs'}\ninit_checkpoint: {init}\n"
        f"data:\n  train_file: {train_file}\n  max_seq_len: 256\n"
        "train:\n  max_steps: 3\n  tokens_per_step: 2048\n  tokens_per_microbatch: 2048\n  row_tokens: 512\n"
        "  warmup_steps: 1\n" + extra
    )
    return p


@pytest.mark.parametrize("value, msg", [
    (4, "train.freeze_decoder_steps (4) > train.max_steps (3)"),
    (-1, "key 'train.freeze_decoder_steps'"),
    ("two", "key 'train.freeze_decoder_steps'"),
])
def test_bad_freeze_steps_stop_the_run_naming_the_key(tmp_path, align_file, value, msg):
    cfg = write_config(tmp_path, tmp_path / "no-init", align_file, f"  freeze_decoder_steps: {value}\n")
    with pytest.raises(ConfigError) as e:
        main(["--config", str(cfg), "--no-eval"])
    assert msg in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_freezing_a_text_only_policy_stops_the_run_naming_the_key(tmp_path):
    from experiments.arith import generate
    from experiments.tiny_model import build_tiny_checkpoint

    init = build_tiny_checkpoint(tmp_path / "qwen", hidden_size=32, num_layers=1, intermediate_size=64)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate(1, 4, 1, 30)["sft"]))
    cfg = write_config(tmp_path, init, data, "  freeze_decoder_steps: 2\n")
    with pytest.raises(ConfigError, match=r"train.freeze_decoder_steps=2: only for a vision-language policy"):
        main(["--config", str(cfg), "--no-eval"])
    assert not (tmp_path / "runs").exists()


# -- DeepSpeed ZeRO-1 (bf16 where the CPU has it), as cot_sft/train.py builds it ------------------


@pytest.mark.integration
def test_deepspeed_frozen_decoder_does_not_move_then_moves(vlm_dir, batches):
    from rl.dist import DeepSpeedConfig, build_deepspeed, init_distributed

    vision, steps = batches
    dist = init_distributed()
    model = load_policy(vlm_dir)
    f = VisionDecoderGroups(model, 2)
    engine, _ = build_deepspeed(model, DeepSpeedConfig(zero_stage=1, lr=1e-2, weight_decay=0.1),
                                f.lr_lambdas(lambda s: 1.0, warmup=1), f.groups)
    start_vis, start_dec = snapshot(f.groups[0]), snapshot(f.groups[1])
    for step, micro in enumerate(steps):
        f.at_step(step)
        for mb in micro:
            engine.backward(packed_ce_sum(engine, mb, vision=vision), scale_wrt_gas=False)
        lrs = engine.get_lr()  # this step's LR per group (vision, decoder)
        engine.step()
        assert lrs == [pytest.approx(1e-2), 0.0 if step < 2 else pytest.approx(1e-2)]
        if step == 1:  # the end of the frozen steps
            assert not any(moved(start_dec, f.groups[1]))
            assert sum(moved(start_vis, f.groups[0])) >= 0.9 * len(start_vis)
    dec = moved(start_dec, f.groups[1])
    assert sum(dec) >= 0.9 * len(dec), [n for n, m in zip(f.decoder_names, dec) if not m]


@pytest.mark.integration
def test_align_run_through_the_entry_keeps_the_decoder_it_was_given(tmp_path, vlm_dir, align_file):
    """`cot_sft.train.main` with freeze_decoder_steps = max_steps: the saved checkpoint's decoder
    is the initial one bit for bit (both bf16), its tower and projector are not."""
    from safetensors.torch import load_file

    cfg = write_config(tmp_path, vlm_dir, align_file, "  freeze_decoder_steps: 3\noptim:\n  lr: 1.0e-2\n")
    out = main(["--config", str(cfg), "--no-eval"])
    init, trained = load_file(str(vlm_dir / "model.safetensors")), load_file(str(Path(out["checkpoint"]) / "model.safetensors"))
    assert init.keys() == trained.keys()
    vision = [k for k in init if k.startswith(("vision_tower.", "mm_projector."))]
    decoder = [k for k in init if k not in vision]
    assert vision and decoder
    assert [k for k in decoder if not torch.equal(init[k], trained[k])] == []
    assert sum(not torch.equal(init[k], trained[k]) for k in vision) >= 0.9 * len(vision)
    log = [json.loads(line) for line in (tmp_path / "runs" / "align" / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["decoder_frozen"] for r in log] == [True, True, True] and all(r["lr_decoder"] == 0.0 for r in log)
