"""Device correctness by construction (issue 17), checked on the CPU.

The learner once built per-token metadata and loss inputs on the CPU and handed them to CUDA
tensors and NCCL collectives. The pure parts (loss, length penalty, log-prob sums, packing, the
learner's loss inputs) are run here on `meta` tensors under a dispatch mode that records the
device of every tensor every ATen op returns: one stray CPU tensor (a `torch.tensor(...)` or
`torch.zeros(...)` without `device=`) shows up as a CPU entry and fails the test. `meta` has
shapes but no values, so the functions' value checks are skipped there (`groups.has_values`);
their numbers are checked on the CPU in the other tests of this package.

    pytest tests/test_device.py -q
"""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from rl.dist import NcclConfig, rank_device
from rl.learner import Episode, loss_inputs, pack_groups
from rl.mirror_descent import (
    GroupIndex,
    MirrorDescentLossInputs,
    entropy_from_logits,
    length_penalty,
    mirror_descent_loss,
    sequence_logprob_sums,
)
from rl.mirror_descent.groups import group_index
from rl.modeling import packed_token_logprobs
from rl.packing import Sample, pack, pack_by_budget

META = torch.device("meta")


class OutputDevices(TorchDispatchMode):
    """Records (op, device) for every tensor an ATen op returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, torch.device]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen += [(str(func), t.device) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out

    def off(self, device: torch.device) -> list[tuple[str, torch.device]]:
        return [(op, d) for op, d in self.seen if d != device]


def meta_loss_inputs(n_groups: int = 3, k: int = 4) -> MirrorDescentLossInputs:
    n = n_groups * k
    return MirrorDescentLossInputs(
        logp_N=torch.empty(n, device=META, requires_grad=True),
        ref_logp_N=torch.empty(n, device=META),
        rewards_N=torch.empty(n, device=META),
        group_ids_N=GroupIndex.from_labels([g for g in range(n_groups) for _ in range(k)], META),
    )


# -- the recorder itself can fail --------------------------------------------------------------


def test_recorder_catches_a_tensor_made_without_device():
    x = torch.empty(4, device=META)
    with OutputDevices() as rec:
        _ = x * 2.0
        _ = torch.tensor([1.0, 2.0])  # the bug of issue 17: no device=
        _ = torch.zeros(3)
    assert [d.type for _, d in rec.off(META)] == ["cpu", "cpu"]


def test_tensor_labels_cannot_run_on_meta_so_the_learner_passes_a_group_index():
    """torch.unique has no meta kernel (it needs the values to know the output size); this is why
    the loss accepts a `GroupIndex` built from Python labels."""
    with pytest.raises(NotImplementedError):
        group_index(torch.empty(4, dtype=torch.long, device=META))


# -- pure functions on meta ----------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["mean", "logsumexp"])
def test_loss_and_its_gradient_make_no_tensor_off_the_inputs_device(baseline):
    inputs = meta_loss_inputs()
    with OutputDevices() as rec:
        out = mirror_descent_loss(inputs, tau=0.1, num_groups_total=5, baseline=baseline)
        (grad,) = torch.autograd.grad(out.loss, inputs.logp_N)
    assert rec.seen, "nothing was recorded"
    assert rec.off(META) == []
    assert out.loss.device == META and out.loss.shape == ()
    assert grad.device == META and grad.shape == (12,)
    assert out.advantages_N.device == META and out.log_ratio_N.device == META
    assert {m.device for m in out.metrics.values()} == {META}
    assert out.num_groups == 3 and out.num_sequences == 12


def test_length_penalty_makes_no_tensor_off_the_inputs_device():
    groups = GroupIndex.from_labels([7, 7, 3, 3, 3], META)
    with OutputDevices() as rec:
        r = length_penalty(torch.empty(5, device=META), torch.empty(5, dtype=torch.bool, device=META), groups)
    assert rec.seen and rec.off(META) == []
    assert r.device == META and r.shape == (5,) and r.dtype == torch.float32


def test_logprob_sums_and_entropy_make_no_tensor_off_the_inputs_device():
    logp = torch.empty(2, 9, device=META, requires_grad=True)
    seq = torch.empty(2, 9, dtype=torch.long, device=META)
    with OutputDevices() as rec:
        sums = sequence_logprob_sums(logp, seq, 4, response_mask_T=torch.empty(2, 9, dtype=torch.bool, device=META))
        ent = entropy_from_logits(torch.empty(9, 11, device=META), chunk_size=4)
    assert rec.seen and rec.off(META) == []
    assert sums.device == META and sums.shape == (4,) and ent.device == META and ent.shape == (9,)


def test_learner_loss_inputs_are_made_on_the_logprobs_device():
    eps = [Episode(g, [1, 2], [3], float(j), -1.5) for g in (4, 9) for j in range(3)]
    logp = torch.empty(6, device=META, requires_grad=True)
    with OutputDevices() as rec:
        own = loss_inputs(logp, eps, None)
        given = loss_inputs(logp, eps, [-1.0] * 6)
        mirror_descent_loss(given, tau=0.1, num_groups_total=2)
    assert rec.off(META) == []
    for inputs in (own, given):
        assert inputs.ref_logp_N.device == inputs.rewards_N.device == inputs.group_ids_N.device == META
        assert not inputs.ref_logp_N.requires_grad
    assert own.group_ids_N.num_groups == 2


def test_packed_batches_are_made_on_the_requested_device():
    samples = [Sample(list(range(n)), [i >= 2 for i in range(n)], n) for n in (5, 7, 3, 9)]
    batches = [pack([samples[:2], samples[2:]], device=META), *pack_by_budget(samples, 20, 10, device=META)]
    eps = [Episode(g, [1, 2, 3], [4, 5], 0.0, 0.0) for g in range(3)]
    batches += pack_groups(eps, 64, 16, device=META)
    for b in batches:
        assert {t.device for t in (b.input_ids, b.position_ids, b.targets, b.seq)} == {META}


# -- values and errors on the CPU ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_group_index_from_labels_equals_the_tensor_path(seed):
    rng = random.Random(seed)
    labels = [rng.choice([-3, 0, 2, 17, 1000]) for _ in range(rng.randint(1, 20))]
    a = GroupIndex.from_labels(labels)
    b = group_index(torch.tensor(labels))
    assert a.index_N.tolist() == b.index_N.tolist() and a.counts_G.tolist() == b.counts_G.tolist()
    assert a.index_N.dtype == a.counts_G.dtype == torch.int64


def test_loss_with_a_group_index_equals_the_loss_with_labels():
    """Two groups of 2: rewards (1, 0) and (1, 1); delta = 0, so the loss is
    ((0.5^2 + 0.5^2)/2 + 0)/2 = 0.125 with either form of the groups."""
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    common = dict(logp_N=logp, ref_logp_N=logp.clone(), rewards_N=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    a = mirror_descent_loss(MirrorDescentLossInputs(**common, group_ids_N=torch.tensor([5, 5, 8, 8])),
                            tau=0.1, num_groups_total=2)
    b = mirror_descent_loss(MirrorDescentLossInputs(**common, group_ids_N=GroupIndex.from_labels([5, 5, 8, 8])),
                            tau=0.1, num_groups_total=2)
    assert float(a.loss) == float(b.loss) == pytest.approx(0.125)


@pytest.mark.parametrize("field", ["ref_logp_N", "rewards_N", "group_ids_N"])
def test_loss_inputs_on_two_devices_are_an_error_naming_the_input(field):
    inputs = MirrorDescentLossInputs(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.tensor([0, 0]))
    moved = getattr(inputs, field).to(META)
    setattr(inputs, field, moved)
    with pytest.raises(ValueError, match=f"{field} is on meta but logp_N on cpu"):
        mirror_descent_loss(inputs, tau=0.1, num_groups_total=1)


def test_length_penalty_inputs_on_two_devices_are_an_error():
    with pytest.raises(ValueError, match="group_ids_N is on meta but lengths_N on cpu"):
        length_penalty(torch.ones(2), torch.ones(2), GroupIndex.from_labels([0, 0], META))


def test_logprob_sums_reject_a_seq_index_on_another_device():
    """The exact fault of issue 17 (learner.py passed the CPU `mb.seq` with CUDA log-probs)."""
    with pytest.raises(ValueError, match="seq_idx_T is on cpu but token_logp_T on meta"):
        sequence_logprob_sums(torch.empty(4, device=META), torch.zeros(4, dtype=torch.long), 1)


def test_forward_refuses_a_batch_packed_off_the_models_device():
    model = torch.nn.Linear(1, 1)  # never called: the check comes first
    batch = pack([[Sample([1, 2, 3], [False, True, True], 0)]], device=META)
    with pytest.raises(ValueError, match="packed batch on meta but the model on cpu"):
        packed_token_logprobs(model, batch)


# -- the rank's device (rl.dist) ---------------------------------------------------------------


def test_rank_device_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device(3) == torch.device("cpu")


def test_rank_device_picks_one_visible_gpu_per_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert [rank_device(r) for r in range(4)] == [torch.device("cuda", i) for i in (0, 1, 0, 1)]
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device(0) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(RuntimeError, match="LOCAL_RANK=2 but only 2 GPU"):
        rank_device(0)


def test_nccl_env_takes_only_nccl_variables():
    assert NcclConfig(env={"NCCL_SOCKET_IFNAME": "eth0"}).env == {"NCCL_SOCKET_IFNAME": "eth0"}
    with pytest.raises(ValueError, match="only NCCL_"):
        NcclConfig(env={"CUDA_VISIBLE_DEVICES": "0"})
