"""Policy loading/saving and the one forward pass the learners need.

The model class comes from the checkpoint's config (`AutoModelForCausalLM`), so Qwen2, MoE
decoders (DeepSeek-V3, Qwen3-MoE) or, later, a VLM's language model load the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rl.mirror_descent import entropy_from_logits
from rl.packing import IGNORE, PackedBatch


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load an HF causal LM for training. Master weights stay fp32 (DeepSpeed's bf16 mode keeps
    an fp32 copy anyway); compute runs in bf16 through DeepSpeed or autocast."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def save_hf(model: torch.nn.Module, tokenizer, out_dir: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write an ordinary HF checkpoint (config, safetensors, tokenizer, generation config) that
    vLLM and transformers load. Weights are cast to `dtype` on the way out only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    model.save_pretrained(out, state_dict=state)
    tokenizer.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    return out


def packed_token_logprobs(
    model: torch.nn.Module, batch: PackedBatch, *, with_entropy: bool = False, autocast_bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of every target token of a packed row: `logp_T` (0 where untrained), and the
    per-position entropy of the predictive distribution when asked (detached; for metrics).

    The log-softmax is taken in fp32 whatever the compute dtype: bf16 log-probs lose ~2 digits,
    which would swamp the log-ratio in the mirror-descent loss.
    """
    device = next(model.parameters()).device
    ids = batch.input_ids.to(device)
    pos = batch.position_ids.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        logits = model(input_ids=ids, position_ids=pos, attention_mask=None, use_cache=False).logits
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = batch.targets.to(device)
    valid = targets != IGNORE
    logp_all = torch.log_softmax(logits, dim=-1)
    logp_T = logp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    entropy_T = entropy_from_logits(logits) * valid if with_entropy else None
    return logp_T, entropy_T


def packed_ce_sum(model: torch.nn.Module, batch: PackedBatch, autocast_bf16: bool = False) -> torch.Tensor:
    """Summed next-token cross-entropy over the trained targets of a packed row (SFT)."""
    logp_T, _ = packed_token_logprobs(model, batch, autocast_bf16=autocast_bf16)
    return -logp_T.sum()

