"""GPU layouts in the RL config (issue 17): the shipped GPU examples load, and layouts that cannot
run fail at load with a message naming the config keys (rl/config.py: check_gpu_layout,
check_tensor_parallel). No GPU needed: the cluster is the one the config declares."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rl.config import RLConfig
from rl.configio import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
ONE_NODE = REPO / "experiments/configs/gpu/rl_1node_8gpu.yaml"
TWO_NODES = REPO / "experiments/configs/gpu/rl_2node_16gpu.yaml"


def policy_dir(tmp_path: Path, config: dict) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


QWEN7B = {"num_attention_heads": 28, "num_key_value_heads": 4}  # Qwen2.5-7B
QWEN14B = {"num_attention_heads": 40, "num_key_value_heads": 8}  # Qwen2.5-14B


def test_one_node_example_is_4_engine_gpus_and_4_learner_gpus(tmp_path):
    cfg = load_config(RLConfig, ONE_NODE, [f"policy={policy_dir(tmp_path, QWEN7B)}"])
    rc, lc = cfg.rollout, cfg.learner
    assert rc.num_engines * rc.actor_num_gpus == 4 and lc.num_ranks * lc.actor_num_gpus == 4
    assert cfg.ray.num_gpus == cfg.ray.gpus_per_node == 8
    assert rc.engine.tensor_parallel_size == 1 and not rc.engine.enforce_eager and rc.engine.enable_prefix_caching
    assert lc.deepspeed.zero_stage == 3 and lc.deepspeed.nccl.timeout_s == 1800


def test_two_node_example_uses_tensor_parallel_engines(tmp_path):
    cfg = load_config(RLConfig, TWO_NODES, [f"policy={policy_dir(tmp_path, QWEN14B)}"])
    rc, lc = cfg.rollout, cfg.learner
    assert rc.engine.tensor_parallel_size == rc.actor_num_gpus == 2
    assert rc.num_engines * rc.actor_num_gpus + lc.num_ranks * lc.actor_num_gpus == cfg.ray.num_gpus == 16
    assert cfg.ray.gpus_per_node == 8
    assert lc.deepspeed.nccl.env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_examples_load_before_their_policy_exists():
    """The SFT output a config points at may not exist yet: the head check is left to vLLM then."""
    for path in (ONE_NODE, TWO_NODES):
        assert load_config(RLConfig, path).policy.startswith("runs/")


@pytest.mark.parametrize(
    "path, overrides, match",
    [
        (ONE_NODE, ["learner.actor_num_gpus=0.5"],
         "learner.actor_num_gpus (0.5) must be 0 (CPU) or 1"),
        (ONE_NODE, ["learner.num_ranks=5"],
         "rollout.num_engines x rollout.actor_num_gpus + learner.num_ranks x learner.actor_num_gpus = "
         "4 x 1 + 5 x 1 = 9 GPUs > ray.num_gpus (8)"),
        (ONE_NODE, ["ray.num_gpus=null"], "ray.num_gpus is not set"),
        (ONE_NODE, ["rollout.actor_num_gpus=2"],
         "rollout.actor_num_gpus (2.0) > 1 with rollout.engine.tensor_parallel_size 1"),
        (ONE_NODE, ["rollout.actor_num_gpus=0.5", "rollout.num_engines=8"],
         "rollout.engine.gpu_memory_utilization (0.85) > rollout.actor_num_gpus (0.5)"),
        (TWO_NODES, ["rollout.actor_num_gpus=1"],
         "rollout.actor_num_gpus (1.0) must equal rollout.engine.tensor_parallel_size (2)"),
        # one engine over 16 GPUs would have to span both 8-GPU nodes
        (TWO_NODES, ["rollout.num_engines=1", "rollout.actor_num_gpus=16", "rollout.engine.tensor_parallel_size=16",
                     "ray.num_gpus=32"],
         "rollout.num_engines (1) engines of rollout.actor_num_gpus (16) GPUs: only 0 fit in ray.num_gpus (32) "
         "on nodes of ray.gpus_per_node (8)"),
        (REPO / "experiments/configs/rl_demo.yaml", ["learner.deepspeed.nccl.env={NCCL_DEBUG: WARN}"],
         "learner.deepspeed.nccl.env is set but learner.actor_num_gpus is 0"),
        (TWO_NODES, ["learner.deepspeed.nccl.env={CUDA_VISIBLE_DEVICES: '0'}"],
         "key 'learner.deepspeed.nccl.env' (from --set)"),
    ],
)
def test_impossible_layouts_fail_at_load_naming_the_key(path, overrides, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(RLConfig, path, overrides)


@pytest.mark.parametrize(
    "heads, tp, match",
    [
        (QWEN7B, 8, "rollout.engine.tensor_parallel_size (8) does not divide the policy's num_attention_heads (28"),
        ({"num_attention_heads": 32, "num_key_value_heads": 6}, 4,
         "rollout.engine.tensor_parallel_size (4) and the policy's num_key_value_heads (6"),
        ({"vision_config": {}, "text_config": QWEN7B}, 8, "num_attention_heads (28"),  # a VLM: its decoder's heads
    ],
)
def test_tensor_parallel_must_split_the_policys_heads(tmp_path, heads, tp, match):
    sizes = ["rollout.num_engines=1", f"rollout.actor_num_gpus={tp}", f"rollout.engine.tensor_parallel_size={tp}"]
    policy = f"policy={policy_dir(tmp_path, heads)}"
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(RLConfig, TWO_NODES, [policy, *sizes])
    # the same layout with heads it divides loads
    ok = {"num_attention_heads": 8 * tp, "num_key_value_heads": tp}
    assert load_config(RLConfig, TWO_NODES, [f"policy={policy_dir(tmp_path, ok)}", *sizes])
