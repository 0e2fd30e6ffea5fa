"""Weight sync learner -> vLLM engines, through vLLM's public in-place reload API.

The learner packs its state dict into a few flat byte buckets (`pack_buckets`), ships each bucket
to every engine (Ray object store, one transfer per bucket per engine, never one call per
tensor), and the engine's worker rebuilds the tensors and calls the worker's
`reload_weights(weights_iterator=...)`. That API takes checkpoint-format names, so the learner
sends `model.state_dict()` names unchanged and vLLM does its own fusing (qkv, gate/up).

On a GPU cluster with a large model the same two calls map onto vLLM's NCCL weight-transfer
engine (`vllm.distributed.weight_transfer`); the bucket format stays the contract.

`WeightSyncExtension` is passed to vLLM as `worker_extension_cls`, which is how vLLM lets us
add methods to its workers without `VLLM_ALLOW_INSECURE_SERIALIZATION` (docs/INSTALL.md,
"Weight sync without insecure serialization").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from rollout.vllm_compat import repack_cpu_moe

_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float32, torch.bfloat16, torch.float16)}


@dataclass
class WeightBucket:
    """Tensors laid end to end in one byte buffer. `entries`: (name, dtype, shape, offset, nbytes)."""

    data: bytes
    entries: list[tuple[str, str, tuple[int, ...], int, int]]

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        buf = torch.frombuffer(bytearray(self.data), dtype=torch.uint8)
        for name, dtype, shape, offset, nbytes in self.entries:
            yield name, buf[offset : offset + nbytes].view(_DTYPES[dtype]).view(shape)


def pack_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = 256 << 20, dtype: torch.dtype | None = None
) -> list[WeightBucket]:
    """Pack (name, tensor) pairs into buckets of about `bucket_bytes` each (a tensor larger than
    a bucket gets a bucket of its own). `dtype` casts floating tensors (e.g. to the engine's bf16)."""
    buckets: list[WeightBucket] = []
    chunks: list[bytes] = []
    entries: list[tuple[str, str, tuple[int, ...], int, int]] = []
    size = 0

    def flush() -> None:
        nonlocal chunks, entries, size
        if entries:
            buckets.append(WeightBucket(b"".join(chunks), entries))
        chunks, entries, size = [], [], 0

    for name, t in named_tensors:
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)  # on the learner's device first: fp32 -> bf16 halves the bytes copied off it
        t = t.to("cpu")  # bytes are host memory (the Ray object store); the engine copies them onto its GPU
        raw = t.contiguous().view(torch.uint8).numpy().tobytes()
        if size and size + len(raw) > bucket_bytes:
            flush()
        entries.append((name, str(t.dtype).removeprefix("torch."), tuple(t.shape), size, len(raw)))
        chunks.append(raw)
        size += len(raw)
    flush()
    return buckets


class WeightSyncExtension:
    """Mixed into vLLM's worker class. Buckets are staged, then loaded in one reload call
    (vLLM's layerwise reload expects the whole set of weights at once)."""

    def thinkrl_stage_bucket(self, bucket: WeightBucket | dict) -> int:
        if isinstance(bucket, dict):  # msgpack may hand a dataclass back as a dict
            bucket = WeightBucket(bucket["data"], [tuple(e) for e in bucket["entries"]])
        staged = getattr(self, "_thinkrl_staged", [])
        staged.append(bucket)
        self._thinkrl_staged = staged
        return len(bucket.entries)

    def thinkrl_commit_weights(self) -> int:
        staged: list[WeightBucket] = getattr(self, "_thinkrl_staged", [])
        self._thinkrl_staged = []

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for b in staged:
                yield from b.tensors()

        self.reload_weights(weights_iterator=tensors(), is_checkpoint_format=True)  # type: ignore[attr-defined]
        sent = [e[0] for b in staged for e in b.entries]
        repack_cpu_moe(self.model_runner.model, sent)  # type: ignore[attr-defined]
        return len(sent)

