"""MoE router metrics: how evenly the learner's forward passes spread tokens over the experts.

`RouterLoad.attach(model)` puts a forward hook on the router of every MoE block of a
transformers model (DeepSeek-V3 / Kimi-K2 style: an `mlp.gate` module returning
(router_logits, topk_weights, topk_indices), as DeepSeek-V3 and Kimi-K2.5's decoder do in
transformers 5) and counts, per layer and expert, the tokens routed there during the learner's
forwards. The counts go into the learner's stats as
flat numbers (`moe_tokens/L<layer>/E<expert>`, summed over ranks by the driver like every other
stat), and `load_metrics` turns them into what a dashboard shows:

    moe_load_max     max over layers and experts of E * (share of routed tokens): 1.0 is
                     perfectly balanced, E means one expert got everything
    moe_load_cv      mean over layers of the coefficient of variation of expert loads
    moe_expert_load  {layer: [share of each expert]}

Those MoE implementations are dropless (no capacity factor), so no token is ever dropped and
there is no dropped-token count to report. Padding tokens of packed rows are routed too and are
counted: they are a few percent of a micro-batch.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_KEY = re.compile(r"^moe_tokens/L(\d+)/E(\d+)$")


class RouterLoad:
    """Token counts per (MoE layer, expert) over the forwards since the last `reset`."""

    def __init__(self, gates: list[tuple[int, torch.nn.Module, int]]):
        self.counts = {layer: torch.zeros(n_experts, dtype=torch.long) for layer, _, n_experts in gates}
        self.handles = [gate.register_forward_hook(self._hook(layer, n)) for layer, gate, n in gates]

    @classmethod
    def attach(cls, model: torch.nn.Module) -> RouterLoad | None:
        """Hook every MoE router of `model`; None if it has none (a dense policy)."""
        gates = []
        for name, module in model.named_modules():
            m = re.search(r"layers\.(\d+)\.mlp\.gate$", name)
            weight = getattr(module, "weight", None)
            if m and weight is not None and type(module).__name__.endswith("Router"):
                gates.append((int(m.group(1)), module, int(weight.shape[0])))
        return cls(gates) if gates else None

    def _hook(self, layer: int, n_experts: int):
        counts = self.counts[layer]

        def hook(module, args, output):
            if isinstance(output, tuple) and len(output) == 3 and not output[2].is_floating_point():
                counts.add_(torch.bincount(output[2].detach().reshape(-1).cpu(), minlength=n_experts)[:n_experts])

        return hook

    def reset(self) -> None:
        for c in self.counts.values():
            c.zero_()

    def stats(self) -> dict[str, float]:
        return {f"moe_tokens/L{layer}/E{e}": float(n) for layer, c in self.counts.items() for e, n in enumerate(c.tolist())}


def load_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """Dashboard metrics from (rank-summed) `moe_tokens/...` counts; {} for a dense policy."""
    per_layer: dict[int, dict[int, float]] = {}
    for k, v in stats.items():
        m = _KEY.match(k)
        if m:
            per_layer.setdefault(int(m.group(1)), {})[int(m.group(2))] = float(v)
    if not per_layer:
        return {}
    shares, load_max, cvs = {}, 0.0, []
    for layer, by_expert in sorted(per_layer.items()):
        counts = torch.tensor([by_expert[e] for e in sorted(by_expert)], dtype=torch.float64)
        total = float(counts.sum())
        if total <= 0:
            continue
        share = counts / total
        shares[str(layer)] = [round(float(s), 5) for s in share]
        load_max = max(load_max, float(share.max()) * len(share))
        cvs.append(float(counts.std(unbiased=False) / counts.mean()))
    if not shares:
        return {}
    return {"moe_load_max": load_max, "moe_load_cv": sum(cvs) / len(cvs), "moe_expert_load": shares}
