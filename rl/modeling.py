"""Policy loading/saving and the one forward pass the learners need.

The model class comes from the checkpoint's config: `AutoModelForCausalLM` for text policies
(Qwen2, MoE decoders such as DeepSeek-V3), `AutoModelForImageTextToText` when the config has a
`vision_config` (Kimi-K2.5: MoonViT + DeepSeek-V3 MoE).

Checkpoint format: transformers 5 keeps some weights in a runtime layout (MoE experts fused into
one [E, ...] tensor, renamed prefixes) and converts back on `save_pretrained`.
`checkpoint_state_dict` applies the same reverse conversion, plus the fixes where transformers'
reverse mapping is wrong for a family, so saved checkpoints and weight-sync buckets carry the
names and shapes vLLM's loaders expect.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from prompts.images import open_image
from rl.mirror_descent import entropy_from_logits
from rl.packed_attention import PACKED_SDPA
from rl.packed_attention import register as register_packed_sdpa
from rl.packing import IGNORE, PackedBatch


# transformers 5.19's reverse conversion vs the Hub names vLLM loads, per model_type.
_KEY_FIXES: dict[str, list[tuple[re.Pattern, str]]] = {
    "kimi_k25": [
        (re.compile(r"^language_model\.model\.blocks\."), "language_model.model.layers."),
        (re.compile(r"^vision_tower\.encoder\.patch_embed\."), "vision_tower.patch_embed."),
        (re.compile(r"^model\.mm_projector\."), "mm_projector."),
    ],
}
# transformers writes its class name; vLLM's registry wants the Hub's.
_VLLM_ARCHITECTURES = {"kimi_k25": "KimiK25ForConditionalGeneration"}
# Files of a checkpoint that describe inputs, copied along when a policy is saved.
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32, *, for_generate: bool = False):
    """Load an HF policy for training, its class from the checkpoint's config. Master weights stay
    fp32 (DeepSpeed's bf16 mode keeps an fp32 copy anyway); compute runs in bf16 through
    DeepSpeed or autocast.

    The causal decoder attends with `PACKED_SDPA` (rl.packed_attention: each packed sample at its
    own cost); a vision-language policy's tower keeps SDPA, its attention being bidirectional.
    `for_generate=True` loads SDPA throughout, for transformers' `generate` (PACKED_SDPA has no KV
    cache)."""
    # transformers takes seconds to import
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(str(path))
    decoder = "sdpa" if for_generate else register_packed_sdpa()
    if hasattr(config, "vision_config"):  # keys: the sub-configs, "" the top-level model
        attn = {"text_config": decoder, "vision_config": "sdpa", "": "sdpa"}
        return AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, attn_implementation=attn)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation=decoder)


def decoder_attention(model: torch.nn.Module) -> str | None:
    """The attention implementation of a policy's causal decoder (its text config's, for a VLM)."""
    config = getattr(model, "module", model).config  # `module`: a DeepSpeed engine's model
    return getattr(config.get_text_config(), "_attn_implementation", None)


def _fix_key(model_type: str, name: str) -> str:
    for pat, rep in _KEY_FIXES.get(model_type, []):
        name = pat.sub(rep, name)
    return name


def checkpoint_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """`state` (default: the model's state dict) in checkpoint format: reverse weight conversion
    (e.g. fused MoE experts split back into experts.N.{gate,up,down}_proj) and Hub key names."""
    from transformers.core_model_loading import revert_weight_conversion  # transformers takes seconds to import

    state = dict(model.state_dict() if state is None else state)
    out = revert_weight_conversion(model, state)
    model_type = getattr(model.config, "model_type", "")
    return {_fix_key(model_type, k): v for k, v in out.items()}


def _fix_saved_checkpoint(out: Path, model_type: str) -> None:
    """Apply `_KEY_FIXES` to the safetensors files save_pretrained wrote (shards and index) and
    the vLLM architecture name to config.json."""
    if model_type in _KEY_FIXES:
        for f in sorted(out.glob("model*.safetensors")):
            with safe_open(str(f), "pt") as h:
                meta = h.metadata() or {"format": "pt"}
                tensors = {_fix_key(model_type, k): h.get_tensor(k) for k in h.keys()}
            save_file(tensors, str(f), metadata=meta)
        index = out / "model.safetensors.index.json"
        if index.exists():
            idx = json.loads(index.read_text())
            idx["weight_map"] = {_fix_key(model_type, k): v for k, v in idx["weight_map"].items()}
            index.write_text(json.dumps(idx, indent=2) + "\n")
    if model_type in _VLLM_ARCHITECTURES:
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["architectures"] = [_VLLM_ARCHITECTURES[model_type]]
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer  # transformers takes seconds to import

    return AutoTokenizer.from_pretrained(str(path))


def save_hf(model: torch.nn.Module, tokenizer, out_dir: str | Path, dtype: torch.dtype = torch.bfloat16,
            source: str | Path | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write an ordinary HF checkpoint (config, safetensors, tokenizer, generation config, and
    the image-processor files of `source`) that vLLM and transformers load. Weights are cast to
    `dtype` on the way out only. `state_dict`: full tensors to write instead of the model's own
    (e.g. gathered from ZeRO-3 partitions)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = model.state_dict() if state_dict is None else state_dict
    state = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.cpu() for k, v in full.items()}
    model.save_pretrained(out, state_dict=state)
    _fix_saved_checkpoint(out, getattr(model.config, "model_type", ""))
    tokenizer.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    if source is not None and Path(source).resolve() != out.resolve():
        for name in _PROCESSOR_FILES:
            if (Path(source) / name).exists():
                shutil.copy2(Path(source) / name, out / name)
    return out


def model_inputs(batch: PackedBatch, vision: Any | None, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Forward kwargs of a packed batch: ids, restarting positions, and for image samples the
    pixel inputs of `batch.images` (in placeholder order, floats in the model's `dtype`), after
    checking the placeholder count. The batch must already be on the model's `device` (packed
    there, `rl.packing.pack(device=)`); pixel inputs are decoded on the host here and this is
    where they cross to the device."""
    if batch.input_ids.device != device:
        raise ValueError(f"packed batch on {batch.input_ids.device} but the model on {device}: pack it with "
                         "device= the rank's device (rl.dist.init_distributed)")
    kw: dict[str, Any] = {
        "input_ids": batch.input_ids, "position_ids": batch.position_ids, "attention_mask": None, "use_cache": False,
    }
    if batch.images:
        if vision is None:
            raise ValueError("a packed batch with images needs a vision-language policy (rl.vision.load_vision)")
        # Decoded images (RL episodes) or sources (SFT samples, decoded per step).
        images = [im if isinstance(im, Image.Image) else open_image(im) for im in batch.images]
        vision.check_expanded(batch.input_ids.view(-1).tolist(), images, "packed batch: ")
        for k, v in vision.pixel_inputs(images).items():
            kw[k] = v.to(device, dtype) if v.is_floating_point() else v.to(device)
    return kw


def packed_logits(model: torch.nn.Module, batch: PackedBatch, *, autocast_bf16: bool = False,
                  vision: Any | None = None) -> torch.Tensor:
    """The forward of a packed batch: fp32 logits, one row per position (T, vocab)."""
    param = next(model.parameters())
    kw = model_inputs(batch, vision, param.device, param.dtype)
    if decoder_attention(model) == PACKED_SDPA and batch.segments:
        kw["packed_segments"] = batch.segments  # known at packing: no host sync per layer
    with torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        logits = model(**kw).logits
    return logits.float().reshape(-1, logits.shape[-1])


def packed_token_logprobs(
    model: torch.nn.Module, batch: PackedBatch, *, with_entropy: bool = False, autocast_bf16: bool = False,
    vision: Any | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of every target token of a packed row: `logp_T` (0 where untrained), and the
    per-position entropy of the predictive distribution when asked (detached; for metrics).
    `vision` (rl.vision.load_vision of the policy) turns the batch's images into pixel inputs.

    The log-softmax is taken in fp32 whatever the compute dtype: bf16 log-probs lose ~2 digits,
    which would swamp the log-ratio in the mirror-descent loss.
    """
    logits = packed_logits(model, batch, autocast_bf16=autocast_bf16, vision=vision)
    targets = batch.targets
    valid = targets != IGNORE
    logp_all = torch.log_softmax(logits, dim=-1)
    logp_T = logp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    entropy_T = entropy_from_logits(logits) * valid if with_entropy else None
    return logp_T, entropy_T


def packed_ce_sum(model: torch.nn.Module, batch: PackedBatch, autocast_bf16: bool = False,
                  vision: Any | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy over the trained targets of a packed row (SFT)."""
    logp_T, _ = packed_token_logprobs(model, batch, autocast_bf16=autocast_bf16, vision=vision)
    return -logp_T.sum()

