"""Sequence packing by token budget, shared by the SFT and RL learners.

Several samples are laid end to end in one row (batch size 1) and `position_ids` restart at 0 at
each sample start. With `attention_mask=None`, transformers detects the restarts and builds a
block-diagonal causal mask (`masking_utils.find_packed_sequence_indices`), so no token attends
across samples; tests/test_packing.py checks this numerically.

Rows are `row_tokens` long (about the longest sample) and several rows are stacked per forward
pass: attention under the block-diagonal mask still costs O(row_tokens^2) per row, so one very
long row would spend most of its FLOPs on masked-out pairs (measured: 8k-token rows ran SFT at
~640 tok/s on this CPU; see BENCHMARKS.md for the row-packed number).

Targets are aligned to logits: `targets_T[t]` is the token predicted at position t (that is,
token t+1 of the same sample) or -100 where nothing is trained, and `seq_T[t]` says which sample
that target belongs to (-1 for none) so per-sequence log-prob sums are one `index_add_`.

Device: a batch's tensors are built on the `device` the caller passes (the learner rank's, from
`rl.dist`), so nothing downstream has to move them (issue 17).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

IGNORE = -100


@dataclass
class Sample:
    """One sequence: all token ids, and a mask that is True where the token is a training target
    (assistant/response tokens). `index` is the caller's id for the sample (e.g. rollout index)."""

    ids: list[int]
    target_mask: list[bool]
    index: int
    images: list[Any] = field(default_factory=list)  # PIL images of a VLM prompt (ids hold their expanded placeholders)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [R, L] long (R rows of L tokens; padding is its own segment)
    position_ids: torch.Tensor  # [R, L] long, restarting at each sample
    targets: torch.Tensor  # [R*L] long, IGNORE where untrained
    seq: torch.Tensor  # [R*L] long, sample slot in `indices` for each target, -1 for none
    indices: list[int]  # Sample.index of each slot
    real_tokens: int = 0  # tokens that are not padding
    images: list[Any] = field(default_factory=list)  # every sample's images, in placeholder order (row-major)
    # per row: (start, end) of each sample, and of the padding, covering the row (rl.packed_attention)
    segments: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.real_tokens

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


def plan_bins(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """First-fit-decreasing assignment of sample positions to bins of at most `max_tokens`.
    A sample longer than the budget is an error (callers drop over-long samples first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        if lengths[i] > max_tokens:
            raise ValueError(f"sample {i} has {lengths[i]} tokens, more than the budget {max_tokens}")
        for b, r in enumerate(room):
            if lengths[i] <= r:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(max_tokens - lengths[i])
    return [sorted(b) for b in bins]


def pack(rows: list[list[Sample]], pad_id: int = 0, device: torch.device | str | None = None) -> PackedBatch:
    """Pack samples into rows (each inner list is one row), right-padded to the longest row.
    Padding gets positions 0.. of its own, so it forms a separate segment nothing attends into.
    The tensors are made on `device` (default: the CPU); images stay host objects."""
    width = max(sum(len(s.ids) for s in row) for row in rows)
    ids: list[int] = []
    pos: list[int] = []
    targets: list[int] = []
    seq: list[int] = []
    indices: list[int] = []
    images: list[Any] = []
    segments: list[list[tuple[int, int]]] = []
    real = 0
    for row in rows:
        used = 0
        segments.append([])
        for s in row:
            if len(s.ids) != len(s.target_mask):
                raise ValueError(f"sample {s.index}: ids and target_mask differ in length")
            slot = len(indices)
            indices.append(s.index)
            images.extend(s.images)
            n = len(s.ids)
            ids.extend(s.ids)
            pos.extend(range(n))
            for t in range(n):
                trained = t + 1 < n and s.target_mask[t + 1]
                targets.append(s.ids[t + 1] if trained else IGNORE)
                seq.append(slot if trained else -1)
            segments[-1].append((used, used + n))
            used += n
        real += used
        pad = width - used
        if pad:
            segments[-1].append((used, width))
        ids.extend([pad_id] * pad)
        pos.extend(range(pad))
        targets.extend([IGNORE] * pad)
        seq.extend([-1] * pad)
    def long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return PackedBatch(
        input_ids=long(ids).view(len(rows), width),
        position_ids=long(pos).view(len(rows), width),
        targets=long(targets),
        seq=long(seq),
        indices=indices,
        real_tokens=real,
        images=images,
        segments=segments,
    )


def plan_rows(lengths: list[int], row_tokens: int, short_row_tokens: int | None = None) -> list[list[int]]:
    """Rows of sample positions. Without `short_row_tokens`: first-fit-decreasing into rows of
    `row_tokens`. With it (long-CoT batches, where a rare 3k-token response sets `row_tokens`):
    samples up to `short_row_tokens` share rows of that size, and each longer sample gets a row
    of its own, longest first -- so the rare long sample does not make every row cost
    O(row_tokens^2) attention (measured: 3,072-token rows train at about half the speed of
    1,024-token rows on this CPU)."""
    if short_row_tokens is None or short_row_tokens >= row_tokens:
        return plan_bins(lengths, row_tokens)
    for i, n in enumerate(lengths):
        if n > row_tokens:
            raise ValueError(f"sample {i} has {n} tokens, more than the budget {row_tokens}")
    long = sorted((i for i, n in enumerate(lengths) if n > short_row_tokens), key=lambda i: -lengths[i])
    short = [i for i, n in enumerate(lengths) if n <= short_row_tokens]
    return [[i] for i in long] + [[short[k] for k in b] for b in plan_bins([lengths[i] for i in short], short_row_tokens)]


def padded_tokens(rows: list[list[int]], lengths: list[int]) -> int:
    """Tokens a forward pass over these rows costs once they are padded to the widest row."""
    return len(rows) * max((sum(lengths[i] for i in r) for r in rows), default=0)


def pack_by_budget(samples: list[Sample], max_tokens: int, row_tokens: int | None = None,
                   short_row_tokens: int | None = None, *,
                   device: torch.device | str | None = None) -> list[PackedBatch]:
    """Micro-batches of about `max_tokens` tokens each, made of rows of at most `row_tokens`
    tokens (default: one row per micro-batch), on `device`. Groups of rows are contiguous in
    bin order.
    With `short_row_tokens` (see `plan_rows`), consecutive rows share a micro-batch while their
    padded size fits `max_tokens`."""
    row_tokens = row_tokens or max_tokens
    if row_tokens > max_tokens:
        raise ValueError(f"row_tokens {row_tokens} > max_tokens {max_tokens}")
    lengths = [len(s.ids) for s in samples]
    bins = plan_rows(lengths, row_tokens, short_row_tokens)
    if short_row_tokens is None or short_row_tokens >= row_tokens:
        per_mb = max(1, max_tokens // row_tokens)
        groups = [bins[j : j + per_mb] for j in range(0, len(bins), per_mb)]
    else:
        # A sample longer than short_row_tokens is a micro-batch of its own: one row, no padding,
        # so attention takes SDPA's causal fast path instead of a block-diagonal mask (measured on
        # this CPU: 4.7k tok/s for a lone 2,400-token row, 2.8k when padded next to a 1,600 one).
        groups: list[list[list[int]]] = []
        open_group = False  # may the last group take more rows?
        for b in bins:
            alone = len(b) == 1 and lengths[b[0]] > short_row_tokens
            if open_group and not alone and padded_tokens(groups[-1] + [b], lengths) <= max_tokens:
                groups[-1].append(b)
            else:
                groups.append([b])
                open_group = not alone
    return [pack([[samples[i] for i in b] for b in g], device=device) for g in groups]
