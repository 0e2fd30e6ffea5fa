"""Image prompts through rollout, learner and weight sync on the tiny Kimi-K2.5 VLM (issue 9):
vLLM (the rollout engine) and the DeepSpeed learner must give the same log-probs on the same
image prompts, in fp32 and bf16, before and after a real update is synced, including the vision
tower, projector and experts; a frozen tower is neither trained nor sent.

The prompts mix native resolutions in one engine call and one learner batch (MoonViT packs every
image at its own size): 1-image and 2-image prompts, wide, 2-row, 3-row and padded images, and
the 2-image sync probe interleaves text between its images. A 2-image prompt's log-probs must
move when either image's pixels change, so a dropped or misplaced image would fail the tests.

The checkpoint uses init_std=0.1, so the random model is far from uniform and the image moves the
text log-probs after it (tests/test_tiny_vlm.py): a placeholder or pixel mismatch between the
two sides would show far above the tolerances.

    pytest tests/test_vlm_rl.py -q -s     # -s prints the measured numbers
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.tiny_vlm import build_tiny_vlm_checkpoint
from rl.dist import DeepSpeedConfig, free_port
from rl.learner import Episode, Learner
from rl.modeling import load_policy, packed_token_logprobs
from rl.packing import Sample, pack, pack_by_budget
from rl.vision import load_vision
from rollout.engine import EngineConfig, GenRequest, SamplingConfig

FP32_TOL = 1e-3  # mean |d log p| per token (measured ~1e-6)
BF16_TOL = 0.05  # bf16 engine vs bf16 learner (measured ~1e-2; vLLM's bf16 MLA vs HF bf16 autocast)
TOL = {"float32": FP32_TOL, "bfloat16": BF16_TOL}
SAMPLING = SamplingConfig(n=4, temperature=1.0, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_vlm_checkpoint(tmp_path_factory.mktemp("vlm"), seed=0, init_std=0.1)


@pytest.fixture(scope="module")
def vision(ckpt):
    return load_vision(ckpt)


@pytest.fixture(scope="module")
def tokenizer(ckpt):
    from rl.modeling import load_tokenizer

    return load_tokenizer(ckpt)


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    # (h, w) px -> merged tokens (28-px blocks): 5, 9 (wide), 3, 6 (2 rows), 10 (2 rows) and 6
    # (70x50 padded to 84x56: 3 rows); 6 and 7 are other pixels of 4's and 5's sizes.
    shapes = [(28, 140), (28, 252), (28, 84), (56, 84), (56, 140), (70, 50), (56, 140), (70, 50)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


def image_prompt(tokenizer, text: str, n_images: int = 1) -> list[int]:
    from prompts.chat import encode_prompt

    return encode_prompt(tokenizer, [{"role": "user", "content": [{"type": "image"}] * n_images
                                      + [{"type": "text", "text": text}]}])


def interleaved_prompt(tokenizer, parts: list[str | None]) -> list[int]:
    """A user turn of text parts and images (None), in order."""
    from prompts.chat import encode_prompt

    return encode_prompt(tokenizer, [{"role": "user", "content": [
        {"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]}])


@pytest.fixture(scope="module")
def requests(tokenizer, images):
    """1- and 2-image prompts of different sizes, for one engine call and one learner batch; the
    last (the sync probe) has two images (3 rows, padded; 2 rows) with text between them."""
    return [
        GenRequest(image_prompt(tokenizer, "Compute the expression 0."), [images[0]]),
        GenRequest(image_prompt(tokenizer, "Add the two expressions 1.", 2), [images[2], images[3]]),
        GenRequest(image_prompt(tokenizer, "Compute the expression 2."), [images[1]]),
        GenRequest(interleaved_prompt(tokenizer, [None, "Compare it with", None, "Which is larger, 3?"]),
                   [images[5], images[4]]),
    ]


def test_packed_forward_with_images_equals_one_sample_at_a_time(ckpt, vision, tokenizer, images):
    """Several image and text samples in one packed batch (block-diagonal attention, pixel inputs in
    placeholder order) give each sample the log-probs it gets alone."""
    import torch

    model = load_policy(ckpt).eval()
    a = vision.expand(image_prompt(tokenizer, "What is 2+3?") + tokenizer.encode("<think>five</think>"), images[:1])
    b = vision.expand(image_prompt(tokenizer, "Add them", 2) + tokenizer.encode("ok 12"), images[1:3])
    c = tokenizer.encode("plain text sample here")
    samples = [Sample(a, [j >= len(a) - 8 for j in range(len(a))], 0, images[:1]),
               Sample(b, [j >= len(b) - 5 for j in range(len(b))], 1, images[1:3]),
               Sample(c, [j >= 3 for j in range(len(c))], 2)]
    with torch.no_grad():
        alone = [packed_token_logprobs(model, pack([[s]]), vision=vision)[0] for s in samples]
        batch = pack([[samples[0], samples[2]], [samples[1]]])
        packed, _ = packed_token_logprobs(model, batch, vision=vision)
    for slot, idx in enumerate(batch.indices):
        mine, ref = packed[batch.seq == slot], alone[idx][alone[idx] != 0]
        assert len(mine) == sum(samples[idx].target_mask[1:])
        assert (mine - ref).abs().max().item() < 1e-4
    # A placeholder count that does not match the images is an error, not a silent misalignment.
    bad = pack([[Sample(a[:-10] + [vision.image_token_id] + a[-10:], [False] * (len(a) + 1), 0, images[:1])]])
    with pytest.raises(ValueError, match="placeholder mismatch"):
        packed_token_logprobs(model, bad, vision=vision)


@pytest.fixture(scope="module")
def engines(ckpt):
    from rollout.engine import VLLMEngine

    engines = {}
    try:
        for dtype in ("float32", "bfloat16"):
            engines[dtype] = VLLMEngine(EngineConfig(model=str(ckpt), dtype=dtype, kv_cache_gib=0.1, max_model_len=512,
                                                     seed=0, cpu_threads=1, max_num_seqs=16))
        yield engines
    finally:
        for e in engines.values():
            e.close()


def make_learner(ckpt, dtype: str, freeze_vision: bool = False) -> Learner:
    learner = Learner(threads=1)
    learner.setup(str(ckpt), DeepSpeedConfig(bf16=dtype == "bfloat16", lr=3e-3), 0, 1, f"127.0.0.1:{free_port()}",
                  4096, 512, seed=0, freeze_vision=freeze_vision)
    return learner


@pytest.fixture(scope="module")
def learners(ckpt):
    return {dtype: make_learner(ckpt, dtype) for dtype in ("float32", "bfloat16")}


def mean_abs(a, b) -> float:
    assert len(a) == len(b) and len(a) > 0
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def sampled_gap(engine, learner, requests, seed: int) -> tuple[float, dict[int, float], list]:
    """Engine-sampled token log-probs vs the learner's recomputation of the same sequences (one
    engine call, one learner call): mean |d| over all tokens, and by images per prompt."""
    gens = engine.generate(requests, SAMPLING.model_copy(update={"seed": seed}))
    seqs = [requests[g.prompt_index].prompt_token_ids + g.token_ids for g in gens]
    plens = [len(requests[g.prompt_index].prompt_token_ids) for g in gens]
    mine = learner.token_logprobs(seqs, plens, [requests[g.prompt_index].images for g in gens])
    diffs = [np.abs(np.asarray(g.logprobs) - np.asarray(m)) for g, m in zip(gens, mine)]
    n_images = [len(requests[g.prompt_index].images) for g in gens]
    by_images = {n: float(np.concatenate([d for d, k in zip(diffs, n_images) if k == n]).mean())
                 for n in sorted(set(n_images))}
    return float(np.concatenate(diffs).mean()), by_images, gens


@pytest.mark.integration
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engine_and_learner_agree_on_image_prompts(engines, learners, requests, vision, dtype):
    # The batch mixes 1- and 2-image prompts, and image sizes (merged-token grids) differ.
    assert sorted(len(r.images) for r in requests) == [1, 1, 2, 2]
    grids = [vision.pixel_inputs([im])["image_grid_thw"][0].tolist() for r in requests for im in r.images]
    assert len({tuple(g) for g in grids}) == len(grids), grids
    gap, by_images, gens = sampled_gap(engines[dtype], learners[dtype], requests, seed=0)
    print(f"\n[VLM log-prob agreement {dtype}] mean |d| {gap:.2e} over {sum(len(g.token_ids) for g in gens)} "
          f"sampled tokens, {len(gens)} sequences; by images per prompt "
          + ", ".join(f"{n}: {d:.2e}" for n, d in by_images.items()))
    assert len(gens) == len(requests) * SAMPLING.n
    assert gap <= TOL[dtype] and by_images[1] <= TOL[dtype] and by_images[2] <= TOL[dtype]
    # The learner scored all of them in one packed forward: every image of the batch, at its own
    # size, in one pixel tensor.
    learner = learners[dtype]
    samples = [Sample(g.prompt_token_ids + g.token_ids, [True] * (len(g.prompt_token_ids) + len(g.token_ids)), i,
                      requests[g.prompt_index].images) for i, g in enumerate(gens)]
    micro = pack_by_budget(samples, learner.tokens_per_microbatch, learner.row_tokens, learner.short_row_tokens)
    assert len(micro) == 1 and len(micro[0].images) == SAMPLING.n * sum(len(r.images) for r in requests)
    # The engine's expanded prompt is the learner's expansion of the same prompt and image.
    for g in gens:
        req = requests[g.prompt_index]
        assert g.prompt_token_ids == vision.expand(req.prompt_token_ids, req.images)
    # Media tokens are banned from sampling: the random model sampled the video placeholder
    # otherwise, which transformers and vLLM then read differently (|d| ~0.1 on those sequences).
    assert len(vision.media_token_ids) == 4 and not {t for g in gens for t in g.token_ids} & set(vision.media_token_ids)


def real_episodes(engine, requests, seed: int) -> list[Episode]:
    """k samples per image prompt, rewarded by a rule on the text (share of digits) so every group
    has a spread; prompt ids are the engine's expanded ones, as rl/train.py passes them."""
    gens = engine.generate(requests, SAMPLING.model_copy(update={"seed": seed}))
    return [Episode(g.prompt_index, g.prompt_token_ids, g.token_ids,
                    sum(c.isdigit() for c in g.text) / max(1, len(g.text)) + 0.01 * len(g.token_ids) / 24,
                    sum(g.logprobs), requests[g.prompt_index].images) for g in gens]


def probe(requests):
    """Prompt (the 2-image one) + a fixed continuation, scored before and after each sync."""
    r = requests[-1]
    return [r.prompt_token_ids + [40, 41, 42, 43, 44, 45, 46, 47]], [len(r.prompt_token_ids)], [r.images]


@pytest.mark.integration
def test_two_image_prompt_reads_both_images(engines, learners, requests, images):
    """The probe's log-probs move when either of its two images is swapped for other pixels of the
    same size (same ids), on both sides, and the sides still agree: neither drops an image nor
    reads a stale one (vLLM's prefix and encoder caches key on the images)."""
    engine, learner = engines["float32"], learners["float32"]
    seqs, plens, [ims] = probe(requests)
    assert ims == [images[5], images[4]] and images[7].size == images[5].size and images[6].size == images[4].size
    variants = [ims, [ims[0], images[6]], [images[7], ims[1]]]  # as is, second swapped, first swapped
    on_engine = engine.score(seqs * 3, plens * 3, variants)
    on_learner = learner.token_logprobs(seqs * 3, plens * 3, variants)
    agree = [mean_abs(e, m) for e, m in zip(on_engine, on_learner)]
    moved_second = (mean_abs(on_engine[0], on_engine[1]), mean_abs(on_learner[0], on_learner[1]))
    moved_first = (mean_abs(on_engine[0], on_engine[2]), mean_abs(on_learner[0], on_learner[2]))
    print(f"\n[VLM 2-image probe fp32] engine vs learner {', '.join(f'{a:.2e}' for a in agree)}; swapping the "
          f"second image moves engine {moved_second[0]:.3e} learner {moved_second[1]:.3e}, the first "
          f"{moved_first[0]:.3e} / {moved_first[1]:.3e}")
    assert max(agree) <= FP32_TOL
    assert min(moved_second + moved_first) > 10 * FP32_TOL


def params_by_part(learner) -> dict[str, float]:
    """Sum of |w| of the vision tower, the projector and the routed experts."""
    parts = {"vision_tower": 0.0, "mm_projector": 0.0, "experts": 0.0}
    for name, p in learner.engine.module.named_parameters():
        for part in parts:
            if f".{part}." in f".{name}":
                parts[part] += float(p.detach().double().abs().sum())
    return parts


@pytest.mark.integration
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weight_sync_after_a_real_update_covers_tower_projector_and_experts(engines, learners, requests, dtype):
    engine, learner = engines[dtype], learners[dtype]
    seqs, plens, ims = probe(requests)
    assert len(ims[0]) == 2
    before = engine.score(seqs, plens, ims)[0]
    agree_before = mean_abs(before, learner.token_logprobs(seqs, plens, ims)[0])
    assert agree_before <= TOL[dtype]
    parts_before = params_by_part(learner)

    eps = real_episodes(engine, requests, seed=1)
    mbs = [[e for e in eps if e.group < 2], [e for e in eps if e.group >= 2]]
    stats = learner.train_iteration(mbs, [2, 2], 0.1, "mean", False, True)
    assert stats["steps"] == 2 and stats["skipped_steps"] == 0
    parts_after = params_by_part(learner)
    assert all(parts_after[k] != parts_before[k] for k in parts_before), (parts_before, parts_after)

    buckets = learner.export_weights(dtype=dtype)
    names = {e[0] for b in buckets for e in b.entries}
    assert any(n.startswith("vision_tower.") for n in names) and any(n.startswith("mm_projector.") for n in names)
    assert "language_model.model.layers.1.mlp.experts.3.down_proj.weight" in names  # per-expert, Hub names
    sync = engine.load_weights(buckets)
    after_engine = engine.score(seqs, plens, ims)[0]
    after_learner = learner.token_logprobs(seqs, plens, ims)[0]
    moved, agree = mean_abs(after_engine, before), mean_abs(after_engine, after_learner)
    gap, by_images, _ = sampled_gap(engine, learner, requests, seed=7)
    print(f"\n[VLM weight sync {dtype}] {sync['tensors']:.0f} tensors in {sync['seconds']:.3f}s; 2-image probe "
          f"moved {moved:.3e}; engine vs learner on it {agree_before:.2e} before sync, {agree:.2e} after; "
          f"sampled after sync {gap:.2e} (1-image {by_images[1]:.2e}, 2-image {by_images[2]:.2e})")
    assert agree <= TOL[dtype] and moved > 10 * TOL[dtype]
    assert gap <= TOL[dtype] and by_images[1] <= TOL[dtype] and by_images[2] <= TOL[dtype]


@pytest.mark.integration
def test_frozen_vision_tower_is_not_trained_or_sent(ckpt, engines, requests):
    """fp32 engine (synced by the test above to another learner) gets the original weights back
    from a fresh frozen-tower learner, then that learner's update: the tower is not in the
    buckets, and the engine still agrees with the learner, whose tower never moved."""
    engine = engines["float32"]
    learner = make_learner(ckpt, "float32", freeze_vision=True)
    engine.load_weights(make_learner(ckpt, "float32").export_weights(dtype="float32"))  # back to the init
    tower = params_by_part(learner)["vision_tower"]
    eps = real_episodes(engine, requests, seed=2)
    stats = learner.train_iteration([eps], [len(requests)], 0.1, "mean", False, True)
    assert stats["steps"] == 1
    after = params_by_part(learner)
    assert after["vision_tower"] == tower and after["mm_projector"] != 0
    buckets = learner.export_weights(dtype="float32")
    names = {e[0] for b in buckets for e in b.entries}
    assert not any(n.startswith("vision_tower.") for n in names) and any(n.startswith("mm_projector.") for n in names)
    engine.load_weights(buckets)
    seqs, plens, ims = probe(requests)
    assert mean_abs(engine.score(seqs, plens, ims)[0], learner.token_logprobs(seqs, plens, ims)[0]) <= FP32_TOL


@pytest.mark.integration
def test_checkpoint_round_trip_keeps_hub_names_processor_and_logprobs(ckpt, learners, requests, tmp_path):
    """The learner's HF save of the VLM loads back (transformers, no missing keys) to the same
    log-probs, with the Hub key names vLLM loads, vLLM's architecture name and the processor files."""
    import json

    import torch
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    learner = learners["float32"]
    learner.save(str(tmp_path / "ck"), save_deepspeed=False)
    out = tmp_path / "ck" / "policy"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys_init = set(f.keys())
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == keys_init
    assert json.loads((out / "config.json").read_text())["architectures"] == ["KimiK25ForConditionalGeneration"]
    assert (out / "preprocessor_config.json").read_text() == (ckpt / "preprocessor_config.json").read_text()
    model, info = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info
    seqs, plens, ims = probe(requests)
    vision = load_vision(out)
    full = vision.expand(seqs[0], ims[0])
    start = plens[0] + len(full) - len(seqs[0])
    sample = Sample(full, [j >= start for j in range(len(full))], 0, ims[0])
    with torch.no_grad():
        lp, _ = packed_token_logprobs(model.eval(), pack([[sample]]), vision=vision)
    # Saved in bf16 (the checkpoint dtype), so equal to the fp32 learner up to bf16 rounding.
    assert mean_abs(lp[lp != 0].tolist(), learner.token_logprobs(seqs, plens, ims)[0]) < 0.05


def test_sft_image_rows_expand_placeholders_and_mask_only_the_response(ckpt, vision, tokenizer, tmp_path):
    """cot_sft on image rows: the prompt's placeholder is expanded as the engine would, the loss
    mask covers exactly the response, the sample keeps the image source, and a text-only policy
    is refused by name."""
    from PIL import Image

    from cot_sft.data import load_sft_rows, tokenize_examples
    from prompts.chat import encode_sft_example
    from prompts.schema import DataError, write_jsonl

    Image.new("RGB", (28 * 5, 28), "white").save(tmp_path / "a.png")
    write_jsonl(tmp_path / "sft.jsonl", [{
        "id": "r0", "answer": "5", "response": "<think>2+3=5</think>\\boxed{5}",
        "prompt": [{"role": "user", "content": [{"type": "image", "image": "a.png"},
                                                 {"type": "text", "text": "Compute the expression in the image."}]}],
    }])
    examples = load_sft_rows(tmp_path / "sft.jsonl")
    [sample], dropped = tokenize_examples(tokenizer, examples, 512, vision)
    ids, mask = encode_sft_example(tokenizer, examples[0].row.chat(), examples[0].response)
    assert dropped == 0 and sample.images == [str(tmp_path / "a.png")]
    assert sample.ids.count(vision.image_token_id) == 5 == len(sample.ids) - len(ids) + 1
    assert sum(sample.target_mask) == sum(mask) and sample.target_mask[-sum(mask):] == [True] * sum(mask)
    assert sample.ids[-sum(mask):] == ids[-sum(mask):]
    with pytest.raises(DataError, match="r0.*text-only"):
        tokenize_examples(tokenizer, examples, 512, None)


@pytest.mark.integration
def test_train_py_runs_the_vlm_on_image_prompts(ckpt, tmp_path):
    """rl/train.py end to end on image rows with the tiny VLM (local Ray, 1 engine, 1 learner):
    images reach vLLM and the learner, the MoE router load is logged, the summary says image."""
    import json

    import ray

    from experiments.arith_image import generate_image_task, write_images
    from prompts.schema import write_jsonl
    from rl.train import main

    data = tmp_path / "data"
    for name, rows in generate_image_task(0, 0, 8, 4).items():
        if rows:
            write_images(rows, data, 0)
            write_jsonl(data / f"{name}.jsonl", rows)
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(f"""
run_name: vlm
output_dir: {tmp_path / 'runs'}
policy: {ckpt}
iterations: 1
prompts_per_iteration: 4
tensorboard: false
data: {{train_file: {data / 'train.jsonl'}, eval_file: {data / 'eval.jsonl'}, max_prompt_tokens: 128}}
rollout:
  engine: {{model: "<policy>", kv_cache_gib: 0.1, max_model_len: 512, cpu_threads: 1}}
  sampling: {{n: 2, temperature: 1.0, max_tokens: 16}}
learner: {{threads: 1, tokens_per_microbatch: 2048, row_tokens: 512, deepspeed: {{lr: 1.0e-3}}}}
objective: {{ref_logprobs: engine}}
reward: {{num_workers: 1}}
eval: {{num_prompts: 4, max_tokens: 16}}
ray: {{num_cpus: 2}}
""")
    try:
        summary = main(["--config", str(cfg)])
    finally:
        ray.shutdown()
    assert summary["modality"] == "image" and summary["iterations"] == 1
    [row] = [json.loads(line) for line in (tmp_path / "runs" / "vlm" / "metrics.jsonl").read_text().splitlines()]
    assert row["num_samples"] == 8 and row["optimizer_steps"] == 2 and row["prompts_too_long"] == 0
    # Engine and learner scored the same image sequences (bf16 both sides: ~1e-2 per token, x 16 tokens).
    assert row["engine_learner_logp_abs_diff"] < 1.0
    assert sorted(row["moe_expert_load"]) == ["1", "2"] and 1.0 <= row["moe_load_max"] <= 4.0
