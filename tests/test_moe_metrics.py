"""MoE router load metrics (rl/moe_metrics.py): hooks count the experts the real DeepSeek-V3
router picks, and the load summary is checked against hand-worked numbers."""

from __future__ import annotations

import pytest
import torch

from rl.moe_metrics import RouterLoad, load_metrics


def test_load_metrics_hand_worked():
    # Layer 1: 10, 30, 40, 20 tokens of 100 -> shares .1 .3 .4 .2, max load 4 * .4 = 1.6,
    # CV = std / mean = sqrt(((15)^2 + 5^2 + 15^2 + 5^2) / 4) / 25 = sqrt(125) / 25 = 0.4472.
    # Layer 2: perfectly balanced -> load 1.0, CV 0.
    stats = {f"moe_tokens/L1/E{e}": n for e, n in enumerate([10, 30, 40, 20])}
    stats.update({f"moe_tokens/L2/E{e}": 25.0 for e in range(4)})
    stats["loss"] = 1.0  # other stats are ignored
    m = load_metrics(stats)
    assert m["moe_expert_load"] == {"1": [0.1, 0.3, 0.4, 0.2], "2": [0.25] * 4}
    assert m["moe_load_max"] == pytest.approx(1.6)
    assert m["moe_load_cv"] == pytest.approx((125 ** 0.5 / 25 + 0.0) / 2)
    assert load_metrics({"loss": 1.0}) == {}  # a dense policy logs nothing


def test_router_hooks_count_the_routed_experts_of_a_real_deepseek_v3(tmp_path):
    from experiments.tiny_vlm import build_tiny_moe_checkpoint
    from rl.modeling import load_policy

    model = load_policy(build_tiny_moe_checkpoint(tmp_path / "moe", seed=0)).eval()
    load = RouterLoad.attach(model)
    assert sorted(load.counts) == [1, 2]  # layer 0 is dense (first_k_dense_replace=1)
    x = torch.randint(0, 250, (2, 50))
    picked = {}

    def record(layer):
        def hook(module, args, output):
            picked[layer] = output[2].reshape(-1)
        return hook

    handles = [model.model.layers[i].mlp.gate.register_forward_hook(record(i)) for i in (1, 2)]
    with torch.no_grad():
        model(input_ids=x)
    for h in handles:
        h.remove()
    stats = load.stats()
    for layer in (1, 2):
        want = torch.bincount(picked[layer], minlength=4).tolist()
        assert [stats[f"moe_tokens/L{layer}/E{e}"] for e in range(4)] == want
        assert sum(want) == 2 * 50 * 2  # every token to top-2 experts: dropless
    load.reset()
    assert sum(load.stats().values()) == 0
