"""A recorded learner call (learner.record_iterations) reads back as the call the driver made, and
the learner benchmark replays it as one rank's share (issue 17 item 6)."""

from __future__ import annotations

import json

import pytest

from experiments.bench_learner import forward_flops, one_rank, synthetic_call
from rl.config import RLConfig
from rl.learner import Episode, LearnerCall, timed
from rl.metrics import is_clock_key
from rl.steps import learner_record


def _call() -> LearnerCall:
    e = [Episode(group=g, prompt_ids=[1, 2], response_ids=[3, 4, 5][: g + 1], reward=0.5 * g,
                 sample_logprob_sum=-1.25 * g, trained_from=g % 2) for g in range(4)]
    # 2 ranks x 2 mini-batches: rank 0 holds groups 0 and 2, rank 1 groups 1 and 3
    return LearnerCall(per_rank=[[[e[0]], [e[2]]], [[e[1]], [e[3]]]], num_groups=[2, 2], tau=0.1,
                       baseline="mean", ref_from_engine=False, reset_optimizer=True)


def test_a_saved_call_loads_as_the_same_call(tmp_path):
    call = _call()
    call.save(tmp_path / "b" / "iter_00003.json")
    back = LearnerCall.load(tmp_path / "b" / "iter_00003.json")
    assert back == call
    assert back.args(1) == ([[call.per_rank[1][0][0]], [call.per_rank[1][1][0]]], [2, 2], 0.1, "mean", False, True)
    assert back.per_rank[1][1][0].response_ids == [3, 4, 5] and back.per_rank[1][1][0].trained_from == 1


def test_a_call_with_images_is_saved_without_them_and_refused_on_load(tmp_path):
    call = _call()
    call.per_rank[0][0][0].images = ["<a decoded image>"]
    call.save(tmp_path / "c.json")
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["per_rank"][0][0][0]["images"] == 1
    with pytest.raises(ValueError, match="c.json.*image"):
        LearnerCall.load(tmp_path / "c.json")


def test_one_rank_merges_every_ranks_share_per_minibatch():
    call = _call()
    assert [[e.group for e in mb] for mb in one_rank(call)] == [[0, 1], [2, 3]]


def test_learner_record_names_the_first_n_iterations_only(tmp_path):
    cfg = RLConfig.model_validate({"policy": "p", "data": {"train_file": "t.jsonl"},
                                   "learner": {"record_iterations": 2}})
    assert learner_record(tmp_path, cfg, 1) == tmp_path / "learner_batches" / "iter_00001.json"
    assert learner_record(tmp_path, cfg, 2) is None
    assert learner_record(tmp_path, cfg.model_copy(update={"learner": cfg.learner.model_copy(
        update={"record_iterations": 0})}), 0) is None


def test_timed_adds_up_wall_time_per_key_even_when_the_block_raises(monkeypatch):
    clock = iter([10.0, 10.5, 20.0, 21.25, 30.0, 30.125])
    monkeypatch.setattr("rl.learner.time.perf_counter", lambda: next(clock))
    seconds: dict[str, float] = {}
    with timed(seconds, "forward"):
        pass
    with timed(seconds, "forward"):
        pass
    with pytest.raises(RuntimeError):
        with timed(seconds, "step"):
            raise RuntimeError("boom")
    assert seconds == {"forward": 1.75, "step": 0.125}


def test_clock_keys_are_the_times_and_rates_a_seeded_rerun_may_change():
    clock = ["time_learn_s", "learner_forward_s", "learner_ref_s", "learner_tokens_per_s", "wall_s", "iteration_s",
             "weight_sync_s", "rollout_tokens_per_s"]
    kept = ["loss", "learner_restarts", "learner_restarts_total", "response_len_p95", "kl_k1", "eval_pass_at_1"]
    assert [k for k in clock + kept if is_clock_key(k)] == clock


def test_a_synthetic_call_has_the_asked_shape_and_the_configs_minibatches():
    cfg = RLConfig.model_validate({"policy": "p", "data": {"train_file": "t.jsonl", "max_prompt_tokens": 300},
                                   "rollout": {"sampling": {"n": 4, "max_tokens": 2000}},
                                   "learner": {"minibatches_per_iteration": 2}})
    call = synthetic_call(cfg, groups=6, k=4, vocab=100, seed=3)
    mbs = one_rank(call)
    assert call.num_groups == [3, 3] and [sorted({e.group for e in m}) for m in mbs] == [[0, 1, 2], [3, 4, 5]]
    eps = [e for m in mbs for e in m]
    assert len(eps) == 24 and all(len(e.response_ids) in range(128, 2001) for e in eps)
    assert all(64 <= len(e.prompt_ids) <= 300 and max(e.prompt_ids + e.response_ids) < 100 for e in eps)
    assert {e.reward for e in eps} == {0.0, 1.0}
    # one prompt per group, lengths spread within it (what long CoT looks like)
    assert all(len({tuple(e.prompt_ids) for e in eps if e.group == g}) == 1 for g in range(6))
    assert max(len(e.response_ids) for e in eps) > 4 * min(len(e.response_ids) for e in eps)
    assert call == synthetic_call(cfg, groups=6, k=4, vocab=100, seed=3)


def test_forward_flops_count_matmul_parameters_and_causal_attention():
    # untied: the input embedding (10 x 4) is a lookup, not a matmul; tied, it is the LM head too
    config = {"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 3, "tie_word_embeddings": False}
    # 2 x (1000 - 40) x (5 + 7) + 2 x 3 layers x 4 hidden x (5^2 + 7^2)
    assert forward_flops(config, 1000, [5, 7]) == 2 * 960 * 12 + 24 * 74
    assert forward_flops({**config, "tie_word_embeddings": True}, 1000, [5, 7]) == 2 * 1000 * 12 + 24 * 74
    assert forward_flops({"text_config": config}, 1000, [5]) == 2 * 960 * 5 + 24 * 25
