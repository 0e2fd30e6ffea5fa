"""Segment reductions over prompt groups, shared by the loss and the length penalty.

A batch is flat: one row per sampled response, and `group_ids_N` says which prompt it answers.
Group ids are arbitrary integer labels (e.g. global prompt indices); they need not be
contiguous or sorted, and groups may have different sizes. Everything here is pure tensor code
with no Python loop over groups, so it runs unchanged on GPU, and every tensor it makes is on
its input's device.

Two ways to the dense index: `group_index(tensor)` asks `torch.unique`, which synchronises with
the host once to learn the number of groups (and cannot run on `meta` tensors, which have no
values); `GroupIndex.from_labels(ints, device)` builds it from labels the caller already holds
in Python (the learner's episodes), with no device round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class GroupIndex:
    """Dense re-indexing of the group labels of a flat batch.

    index_N   (N,) int64 in [0, G): dense group of each row
    counts_G  (G,) int64: rows per group (k_g), all >= 1
    """

    index_N: Tensor
    counts_G: Tensor

    @property
    def num_groups(self) -> int:
        return int(self.counts_G.numel())

    @property
    def device(self) -> torch.device:
        return self.index_N.device

    @classmethod
    def from_labels(cls, labels: Sequence[int], device: torch.device | str | None = None) -> GroupIndex:
        """The same dense index as `group_index(torch.tensor(labels))`, computed in Python and
        made on `device` (any device, `meta` included)."""
        if len(labels) == 0:
            raise ValueError("empty batch: no group labels")
        dense = {g: i for i, g in enumerate(sorted(set(labels)))}
        counts = [0] * len(dense)
        for g in labels:
            counts[dense[g]] += 1
        return cls(index_N=torch.tensor([dense[g] for g in labels], dtype=torch.int64, device=device),
                   counts_G=torch.tensor(counts, dtype=torch.int64, device=device))


def group_index(group_ids_N: Tensor | GroupIndex) -> GroupIndex:
    """Map arbitrary integer group labels to dense indices 0..G-1 (in sorted label order). A
    `GroupIndex` (e.g. from `GroupIndex.from_labels`) is returned as it is."""
    if isinstance(group_ids_N, GroupIndex):
        return group_ids_N
    if group_ids_N.dim() != 1:
        raise ValueError(f"group_ids_N must be 1-D, got shape {tuple(group_ids_N.shape)}")
    if group_ids_N.numel() == 0:
        raise ValueError("empty batch: group_ids_N has no rows")
    if group_ids_N.dtype.is_floating_point or group_ids_N.dtype.is_complex or group_ids_N.dtype == torch.bool:
        # Float labels invite silent merges (1.0000001 vs 1.0); prompts are identified by integers.
        raise ValueError(f"group_ids_N must be an integer tensor, got {group_ids_N.dtype}")
    _, inverse, counts = torch.unique(group_ids_N, sorted=True, return_inverse=True, return_counts=True)
    return GroupIndex(index_N=inverse.to(torch.int64), counts_G=counts.to(torch.int64))


def segment_sum(values_N: Tensor, groups: GroupIndex) -> Tensor:
    """(G,) per-group sum. Differentiable w.r.t. values_N."""
    out = values_N.new_zeros(groups.num_groups)
    return out.index_add(0, groups.index_N, values_N)


def segment_mean(values_N: Tensor, groups: GroupIndex) -> Tensor:
    """(G,) per-group mean (every group has >= 1 row, so no division by zero)."""
    return segment_sum(values_N, groups) / groups.counts_G.to(values_N.dtype)


def segment_amax(values_N: Tensor, groups: GroupIndex) -> Tensor:
    """(G,) per-group max. NaN in a group propagates to that group's max."""
    out = values_N.new_zeros(groups.num_groups)
    # include_self=False: the zeros only fix the shape, they never take part in the max.
    return out.scatter_reduce(0, groups.index_N, values_N, reduce="amax", include_self=False)


def segment_amin(values_N: Tensor, groups: GroupIndex) -> Tensor:
    """(G,) per-group min. NaN in a group propagates to that group's min."""
    out = values_N.new_zeros(groups.num_groups)
    return out.scatter_reduce(0, groups.index_N, values_N, reduce="amin", include_self=False)



def has_values(t: Tensor) -> bool:
    """False for `meta` tensors, which have shapes but no values: the value checks of this
    package (finite lengths, in-range indices) are skipped there, so a shape-only run on `meta`
    can prove that no function makes a tensor off its inputs' device."""
    return t.device.type != "meta"
