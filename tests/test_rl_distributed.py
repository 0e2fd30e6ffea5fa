"""The RL loop on a real two-node Ray cluster on 127.0.0.1 (issue 5):

- data-parallel invariance: learner world size 2 vs 1 (Ray actors, gloo, fp32) on the same
  episodes split by whole groups as the driver splits them: equal loss and equal updated weights,
  for ZeRO stages 1 and 0, with ranks running different numbers of micro-batches and a
  mini-batch that leaves one rank without any group. ZeRO-2 on two ranks is refused (DeepSpeed
  0.19.8 gets rank 1's gradient partition wrong when a step has several backward passes);
- the driver (`rl/train.py`) runs two vLLM engines and a two-rank learner for two iterations with
  its actors spread over both nodes.

The two nodes are two `ray start --block` processes with their own temp dir and ports
(tests/ray_local.py); teardown ends exactly those (never `ray stop`, which ends every Ray process
on the machine).

    pytest tests/test_rl_distributed.py -m integration -q
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from ray_local import RayNode, enable_token_auth_here, free_port, http_up, port_open, wait_for

from rl.dist import DeepSpeedConfig
from rl.learner import Episode, Learner, shard_groups, split_minibatches
from rl.ray_loopback import allow_other_nodes

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs, dashboard for the state API) + one worker node (2 CPUs), both 127.0.0.1."""
    import ray

    logs = tmp_path_factory.mktemp("ray_logs")
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live under it
    dash = free_port()
    # Two nodes cannot share loopback (Ray refuses a second node under RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).
    head = RayNode(temp_dir, logs / "head.log", head=True, num_cpus=2, dashboard_port=dash, loopback_only=False)
    nodes = [head]
    try:
        wait_for(lambda: port_open(head.gcs_port), 120, "the head's GCS", nodes)
        nodes.append(RayNode(temp_dir, logs / "worker.log", head=False, num_cpus=2, gcs_port=head.gcs_port,
                             loopback_only=False))
        enable_token_auth_here()
        allow_other_nodes()  # an earlier test's local cluster may have kept this process on loopback
        ray.init(address=head.address, log_to_driver=False)
        wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 120, "two alive nodes", nodes)
        wait_for(lambda: http_up(f"http://127.0.0.1:{dash}/api/version"), 120, "the dashboard", nodes)
        ray.shutdown()
        yield head.address
    finally:
        ray.shutdown()
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from experiments.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_dist"), seed=0)


def make_episodes(num_groups: int, k: int, seed: int) -> list[Episode]:
    rng = random.Random(seed)
    out = []
    for g in range(num_groups):
        prompt = [rng.randrange(32, 127) for _ in range(rng.randint(6, 16))]
        for j in range(k):
            resp = [rng.randrange(32, 127) for _ in range(rng.randint(4, 60))]
            out.append(Episode(g, prompt, resp, float(rng.random() < 0.5) + 0.1 * j, 0.0))
    return out


def rl_config(path: Path, policy: Path, data: Path, out: Path, address: str) -> Path:
    """Two engines + two learner ranks, 4 prompts x 2 samples x 32 tokens per iteration."""
    path.write_text(f"""
run_name: two-node
output_dir: {out}
policy: {policy}
iterations: 2
prompts_per_iteration: 4
tensorboard: false
samples_to_log: 2
data: {{train_file: {data / 'train.jsonl'}, max_prompt_tokens: 128}}
rollout:
  num_engines: 2
  actor_num_cpus: 1
  timeout_s: 600
  engine: {{model: "<policy>", kv_cache_gib: 0.25, max_model_len: 512, cpu_threads: 1}}
  sampling: {{n: 2, temperature: 1.0, max_tokens: 32}}
learner:
  num_ranks: 2
  actor_num_cpus: 1
  threads: 1
  minibatches_per_iteration: 2
  tokens_per_microbatch: 2048
  row_tokens: 512
  timeout_s: 600
  deepspeed: {{zero_stage: 1, lr: 1.0e-4}}
reward: {{num_workers: 1}}
ray: {{address: "{address}"}}
""")
    return path


# Runs before the learner-actor tests below: the driver connects to the cluster itself.
def test_two_node_cluster_runs_two_engines_and_a_two_rank_learner(cluster, tiny, arith_data, tmp_path):
    import ray
    from ray.util.state import list_actors

    from rl.train import main

    cfg = rl_config(tmp_path / "rl.yaml", tiny, arith_data, tmp_path / "runs", cluster)
    try:
        main(["--config", str(cfg)])
        # The run's actors (dead by now: their handles went out of scope with main) and their nodes.
        job = ray.get_runtime_context().get_job_id()
        everything = list_actors(filters=[("job_id", "=", job)], limit=1000)
        actors = [a for a in everything if a.class_name in ("VLLMEngine", "Learner")]
    finally:
        ray.shutdown()
    kinds = sorted(a.class_name for a in actors)
    assert kinds == ["Learner", "Learner", "VLLMEngine", "VLLMEngine"], everything
    per_node = {}
    for a in actors:
        per_node.setdefault(a.node_id, []).append(a.class_name)
    assert len(per_node) == 2 and all(len(v) == 2 for v in per_node.values()), per_node

    rows = [json.loads(line) for line in (tmp_path / "runs" / "two-node" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    for r in rows:
        assert r["num_samples"] == 8 and r["optimizer_steps"] == 2 and r["skipped_steps"] == 0
        assert r["weight_sync_s"] > 0 and r["loss"] is not None
    assert (tmp_path / "runs" / "two-node" / "checkpoints" / "iter_00001" / "policy" / "config.json").exists()


@pytest.fixture(scope="module")
def learner_actors(cluster):
    """A world-size-1 learner and a world-size-2 learner (process groups made once; each test
    rebuilds the DeepSpeed engines with its own ZeRO stage)."""
    import ray

    ray.init(address=cluster, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(Learner)
        single, pair = actor.remote(1), [actor.remote(1), actor.remote(1)]
        # every rank runs on this one machine: rendezvous on 127.0.0.1
        masters = ray.get([single.address.remote(True), pair[0].address.remote(True)], timeout=300)
        yield single, pair, masters
    finally:
        for a in [single, *pair]:
            ray.kill(a)
        ray.shutdown()


@pytest.mark.parametrize("zero_stage", [1, 0])
def test_data_parallel_invariance(learner_actors, tiny, zero_stage):
    import ray
    import torch

    single, pair, (m1, m2) = learner_actors
    ds = DeepSpeedConfig(zero_stage=zero_stage, bf16=False, lr=1e-3, grad_clip=1.0).model_dump()
    # Small micro-batches, so ranks run different numbers of backward passes.
    setup = dict(tokens_per_microbatch=256, row_tokens=128, seed=0)
    ray.get([single.setup.remote(str(tiny), ds, 0, 1, m1, *setup.values()),
             *[r.setup.remote(str(tiny), ds, i, 2, m2, *setup.values()) for i, r in enumerate(pair)]], timeout=300)

    eps = make_episodes(5, 3, seed=zero_stage + 1)
    by_group = {}
    for e in eps:
        by_group.setdefault(e.group, []).append(e)
    minibatches = split_minibatches(list(by_group), 3)  # [[0, 1], [2], [3, 4]]: rank 1 idles in step 2
    assert [len(m) for m in minibatches] == [2, 1, 2]
    num_groups = [len(m) for m in minibatches]
    args = (num_groups, 0.1, "mean", False, True)

    w0 = unpack(ray.get(single.export_weights.remote(dtype="float32")))
    (s1,) = ray.get([single.train_iteration.remote(shard_groups(minibatches, by_group, 1)[0], *args)], timeout=300)
    shards = shard_groups(minibatches, by_group, 2)
    assert shards[1][1] == []
    s2 = ray.get([r.train_iteration.remote(shards[i], *args) for i, r in enumerate(pair)], timeout=300)

    loss1, loss2 = s1["loss"], s2[0]["loss"] + s2[1]["loss"]
    w1, w2a, w2b = (unpack(b) for b in ray.get([a.export_weights.remote(dtype="float32") for a in [single, *pair]]))
    update = max(float((w1[k] - w0[k]).abs().max()) for k in w0)
    diff = max(float((w1[k] - w2a[k]).abs().max()) for k in w0)
    rel = (sum(float((w1[k] - w2a[k]).square().sum()) for k in w0)
           / sum(float((w1[k] - w0[k]).square().sum()) for k in w0)) ** 0.5
    print(f"\n[ZeRO stage {zero_stage}] loss world 1 {loss1:.8f}  world 2 {loss2:.8f}  grad norm "
          f"{s1['grad_norm']:.6f} vs {s2[0]['grad_norm']:.6f}; weights: max update {update:.2e}, "
          f"max |w1 - w2| {diff:.2e}, relative L2 {rel:.2e}")
    assert s1["steps"] == s2[0]["steps"] == s2[1]["steps"] == 3
    assert loss1 > 0.01 and abs(loss1 - loss2) <= 1e-5
    assert s1["sequences"] == s2[0]["sequences"] + s2[1]["sequences"] == len(eps)
    if zero_stage:  # (stage 0 reports no global grad norm)
        assert s1["grad_norm"] > 0 and s2[0]["grad_norm"] == pytest.approx(s1["grad_norm"], rel=1e-4)
    assert all(torch.equal(w2a[k], w2b[k]) for k in w0)  # the two ranks hold the same weights
    assert update > 1e-3  # three AdamW steps at lr 1e-3 really moved the weights
    assert diff <= 1e-4 and rel <= 1e-3


def unpack(buckets) -> dict:
    return {name: t.clone() for b in buckets for name, t in b.tensors()}


def test_zero2_with_two_ranks_is_refused(learner_actors, tiny):
    import ray

    single, pair, (m1, m2) = learner_actors
    ds = DeepSpeedConfig(zero_stage=2, bf16=False).model_dump()
    with pytest.raises(ray.exceptions.RayTaskError, match="ZeRO-2 with several learner ranks"):
        ray.get(pair[0].setup.remote(str(tiny), ds, 0, 2, m2, 256, 128, 0), timeout=300)
