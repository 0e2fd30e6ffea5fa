"""Causal attention within each sample of a packed row, at the cost of the samples alone.

The learners lay several samples end to end in one row (`rl.packing`). With transformers' "sdpa"
attention such a row gets a block-diagonal causal mask of row x row entries, and the CPU flash
kernel (like the GPU's memory-efficient one) computes every block of it, masked or not: for rows
of 640 tokens holding three ~200-token samples that is ~7x the attention work the samples need,
and attention was 45 % of the RL learner's time on the arithmetic demo (torch.profiler,
BENCHMARKS.md, issue 17 item 6).

`packed_sdpa_attention` is registered with transformers (`register`) as the attention
implementation `PACKED_SDPA`: it runs one `scaled_dot_product_attention(is_causal=True)` per sample (the
segments of the row, padding included as a segment of its own), so no mask is built and the
kernel skips the upper triangle. The segments come with the forward call (`packed_segments`, from
`PackedBatch.segments`); without them they are read off `position_ids`, which restart at 0 at each
sample (one host sync per layer). Its mask function (`no_mask`) builds nothing and refuses a
padding mask, which transformers would otherwise drop without a word.

Only causal decoders use it (`rl.modeling.load_policy` picks it for a text policy, and for a
vision-language policy's decoder): a vision tower's bidirectional attention must not be made
causal. Sliding-window layers are refused.
On GPUs with flash-attn installed, transformers' `flash_attention_2` does the same from
`position_ids` in one varlen kernel and would be the better choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED_SDPA = "thinkrl_packed_sdpa"

Segments = list[list[tuple[int, int]]]  # per row: (start, end) of each sample, covering the row


def segments_from_positions(position_ids: torch.Tensor) -> Segments:
    """(start, end) of each run of positions 0, 1, 2, ... in each row of `position_ids` [R, L]."""
    out: Segments = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if p == 0 or i == 0]
        out.append(list(zip(starts, starts[1:] + [len(row)])))
    return out


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          sliding_window: int | None = None, packed_segments: Segments | None = None,
                          position_ids: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [R, H, L, D], key/value [R, H_kv, L, D(v)];
    returns [R, L, H, Dv] and no weights."""
    if attention_mask is not None:
        raise ValueError(f"{PACKED_SDPA} takes packed rows without an attention mask (positions restart per sample)")
    if key.shape[2] != query.shape[2]:
        raise ValueError(f"{PACKED_SDPA} is for training forwards, without a KV cache; generate with vLLM, or "
                         "load the policy with attn_implementation='sdpa'")
    if sliding_window is not None:
        raise ValueError(f"{PACKED_SDPA} has no sliding window; load this policy with attn_implementation='sdpa'")
    if packed_segments is None:
        if position_ids is None:
            raise ValueError(f"{PACKED_SDPA} needs packed_segments or position_ids")
        # [1, L] when transformers made them (one arange for the whole batch)
        packed_segments = segments_from_positions(position_ids.expand(query.shape[0], -1))
    gqa = query.shape[1] != key.shape[1]
    rows = []
    # torch.split, not slicing: the backward of a split is one concatenation of the gradients,
    # where each slice's backward would zero-fill a tensor of the whole row.
    for segs, q, k, v in zip(packed_segments, query.split(1), key.split(1), value.split(1)):
        sizes = [e - s for s, e in segs]
        if sum(sizes) != query.shape[2]:
            raise ValueError(f"packed_segments cover {sum(sizes)} positions of a {query.shape[2]}-token row")
        parts = [F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, is_causal=True, scale=scaling,
                                                enable_gqa=gqa)
                 for qs, ks, vs in zip(q.split(sizes, dim=2), k.split(sizes, dim=2), v.split(sizes, dim=2))]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def no_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs) -> None:
    """The mask function transformers calls for `PACKED_SDPA`: there is none to build. A padding
    mask with zeros in it is refused rather than dropped (packed rows carry no padding mask)."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(f"{PACKED_SDPA} does not take a padding mask: pack the samples (rl.packing) instead")
    return None


def register() -> str:
    """Make `PACKED_SDPA` known to transformers (idempotent); returns the name for
    `from_pretrained(attn_implementation=...)`."""
    # transformers takes seconds to import: only where a policy is loaded
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, no_mask)
    return PACKED_SDPA
