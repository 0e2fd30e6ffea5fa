"""Pure tensor helpers between the learner's packed forward pass and the §2.3.2 loss.

The learner packs several (prompt + response) sequences into one row to avoid padding, runs the
model, and gets one log-prob per token. The mirror descent loss needs one number per response:
log pi(y, z | x) = sum of the response-token log-probs. `sequence_logprob_sums` does that
reduction; `entropy_from_logits` gives the per-token policy entropy for logging.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rl.mirror_descent.groups import has_values


def sequence_logprob_sums(
    token_logp_T: Tensor,
    seq_idx_T: Tensor,
    num_sequences: int,
    *,
    response_mask_T: Tensor | None = None,
) -> Tensor:
    """(S,) per-sequence sum of token log-probs of a packed batch, S = num_sequences.

    token_logp_T     log-prob of each token under the policy (any shape, e.g. (T,) or (B, T);
                     flattened), float. Gradients flow back to it.
    seq_idx_T        same shape, int: which sequence (0 .. S-1) each token belongs to.
    response_mask_T  optional, same shape, bool: True for response tokens. Tokens with False
                     (prompt, padding) are left out, and their seq_idx may be anything, e.g. -1.

    Sums accumulate in float32 (float64 if the input is float64): a bf16 running sum over
    thousands of tokens would lose the precision the tau * (log pi_theta - log pi_theta_i) term
    needs. A sequence with no kept token gets 0. Non-finite token log-probs are not masked: they
    make their sequence's sum non-finite. Raises ValueError for a kept token whose seq_idx is
    outside [0, S) (on GPU an out-of-range index_add would be a device assert, not an error).
    """
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, int) or num_sequences < 0:
        raise ValueError(f"num_sequences must be an int >= 0, got {num_sequences!r}")
    if not token_logp_T.dtype.is_floating_point:
        raise ValueError(f"token_logp_T must be floating, got {token_logp_T.dtype}")
    if seq_idx_T.shape != token_logp_T.shape:
        raise ValueError(f"seq_idx_T shape {tuple(seq_idx_T.shape)} != token_logp_T shape {tuple(token_logp_T.shape)}")
    if seq_idx_T.dtype.is_floating_point or seq_idx_T.dtype == torch.bool:
        raise ValueError(f"seq_idx_T must be an integer tensor, got {seq_idx_T.dtype}")
    if seq_idx_T.device != token_logp_T.device:  # the learner once passed a CPU index here (issue 17)
        raise ValueError(f"seq_idx_T is on {seq_idx_T.device} but token_logp_T on {token_logp_T.device}")
    dtype = torch.promote_types(token_logp_T.dtype, torch.float32)
    values = token_logp_T.reshape(-1).to(dtype)
    idx = seq_idx_T.reshape(-1).to(torch.int64)
    if response_mask_T is not None:
        if (response_mask_T.shape != token_logp_T.shape or response_mask_T.dtype != torch.bool
                or response_mask_T.device != token_logp_T.device):
            raise ValueError("response_mask_T must be a bool tensor with the shape and device of token_logp_T")
        keep = response_mask_T.reshape(-1)
        # torch.where rather than boolean indexing: no data-dependent shape, and a -inf log-prob
        # on a dropped prompt token cannot leak in (where's backward sends it a zero gradient).
        values = torch.where(keep, values, torch.zeros((), dtype=dtype, device=values.device))
        idx = torch.where(keep, idx, torch.zeros((), dtype=torch.int64, device=idx.device))
        bad = keep & ((seq_idx_T.reshape(-1) < 0) | (seq_idx_T.reshape(-1) >= num_sequences))
    else:
        bad = (idx < 0) | (idx >= num_sequences)
    if has_values(bad) and bool(bad.any()):
        raise ValueError(f"seq_idx_T has kept tokens outside [0, {num_sequences})")
    return values.new_zeros(num_sequences).index_add(0, idx, values)


@torch.no_grad()
def entropy_from_logits(logits_TV: Tensor, *, chunk_size: int = 1024) -> Tensor:
    """Per-token entropy H = -sum_v p_v log p_v of softmax(logits), shape logits_TV.shape[:-1].

    For logging only (k1.5 has no entropy bonus), so it runs under no_grad and returns a detached
    float32 tensor (float64 for float64 logits). Tokens are processed `chunk_size` at a time, so
    the float32 temporaries are chunk_size x V instead of T x V (T x 150k vocab in float32 is
    gigabytes). Pass logits already divided by the sampling temperature if that is the
    distribution you want the entropy of.

    Vocabulary entries masked with -inf have p = 0 and contribute 0 (0 log 0 = 0, not NaN).
    A row that contains NaN, or whose entries are all -inf, gives NaN: not masked.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if logits_TV.dim() < 1 or logits_TV.shape[-1] == 0:
        raise ValueError(f"logits_TV needs a non-empty last (vocabulary) dimension, got {tuple(logits_TV.shape)}")
    dtype = torch.promote_types(logits_TV.dtype, torch.float32)
    flat = logits_TV.reshape(-1, logits_TV.shape[-1])
    out = torch.empty(flat.shape[0], dtype=dtype, device=logits_TV.device)
    for start in range(0, flat.shape[0], chunk_size):
        z = flat[start : start + chunk_size].to(dtype)
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        # p * logp is 0 * -inf = NaN where a logit is -inf; those entries contribute 0 by definition.
        # Test logp == -inf (not p > 0) so that a NaN row still yields NaN instead of a quiet 0.
        out[start : start + chunk_size] = -torch.where(torch.isneginf(logp), 0.0, p * logp).sum(dim=-1)
    return out.reshape(logits_TV.shape[:-1])
