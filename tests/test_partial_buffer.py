"""The replay buffer of partial rollouts (rl/partial/buffer.py): segment bookkeeping, group
completion, truncation at max_segments and at the response cap, the batch it leaves for fresh
prompts, and a state that round-trips exactly through a checkpoint, so that a resumed run continues
every partial trajectory and trains none twice."""

from __future__ import annotations

import json

import pytest

from rl.partial import PartialSettings, RepeatRule, ReplayBuffer, Trajectory, released_metrics, restore_buffer

# k = 2 samples per prompt, segments of 4 tokens, at most 3 segments, responses of at most 10 tokens.
SETTINGS = PartialSettings(group_size=2, segment_tokens=4, max_segments=3, max_response_tokens=10)


def buffer(**changes) -> ReplayBuffer:
    return ReplayBuffer(PartialSettings(**{**SETTINGS.to_dict(), **changes}))


def test_segments_are_recorded_with_their_iteration_and_log_probs():
    buf = buffer()
    gid = buf.start_group("p7", [1, 2])
    assert gid == 0 and len(buf) == 2 and buf.num_groups == 1
    t = buf.add_segment((gid, 0), [10, 11, 12, 13], [-0.5, -0.25, -1.0, -0.25], "length", iteration=3, text="ab")
    assert not t.final and t.num_segments == 1
    t = buf.add_segment((gid, 0), [14, 15], [-2.0, -0.125], "stop", iteration=4, text="c")
    assert t is buf.get((0, 0))
    assert t.response_ids == [10, 11, 12, 13, 14, 15]
    assert t.segment_ends == [4, 6] and t.segment_iterations == [3, 4]
    # each segment's log-probs, under its own iteration's weights, in order (rl.mirror_descent.segments cuts them)
    assert t.logprobs == [-0.5, -0.25, -1.0, -0.25, -2.0, -0.125]
    assert (t.text, t.final, t.finish_reason, t.truncated) == ("abc", True, "stop", False)
    assert t.continuation_prompt() == [1, 2, 10, 11, 12, 13, 14, 15]
    assert (t.prompt_id, t.group_id, t.sample_index, t.key) == ("p7", 0, 0, (0, 0))


def test_a_group_is_released_only_when_all_its_samples_are_final():
    buf = buffer()
    gid = buf.start_group("p", [1])
    a = buf.add_segment((gid, 0), [5, 6], [-1.0, -1.0], "stop", iteration=0)
    b = buf.add_segment((gid, 1), [5, 6, 7, 8], [-1.0] * 4, "length", iteration=0)
    # a is finished but waits for b: nothing is released; b is continued, a takes no slot.
    assert buf.pop_complete() == []
    assert buf.running() == [b] and buf.waiting() == [a]
    assert buf.fresh_slots(capacity=4) == 3
    buf.add_segment((gid, 1), [9], [-1.0], "stop", iteration=1)
    groups = buf.pop_complete()
    assert [[t.key for t in g] for g in groups] == [[(0, 0), (0, 1)]]
    assert groups[0] == [a, b] and a.segment_iterations == [0] and b.segment_iterations == [0, 1]
    # Released once: the buffer no longer holds the group.
    assert len(buf) == 0 and buf.pop_complete() == []


def test_a_trajectory_is_cut_after_max_segments():
    buf = buffer(max_response_tokens=100)
    gid = buf.start_group("p", [1])
    for it in range(3):
        t = buf.add_segment((gid, 0), [it] * 4, [-0.5] * 4, "length", iteration=it)
        # final only after its third segment (max_segments 3), and then cut: the truncated reward
        assert t.final == (it == 2)
    assert (t.finish_reason, t.truncated, t.repeat_stop, t.num_segments) == ("length", True, False, 3)
    with pytest.raises(ValueError, match=r"is final \(length\)"):
        buf.add_segment((gid, 0), [1], [-0.5], "length", iteration=3)


def test_the_last_segment_is_budgeted_to_the_response_cap():
    buf = buffer(max_segments=10)  # the 10-token cap binds first
    gid = buf.start_group("p", [1])
    t = buf.get((gid, 0))
    assert buf.segment_budget(t) == 4
    buf.add_segment((gid, 0), [1] * 4, [-0.5] * 4, "length", iteration=0)
    buf.add_segment((gid, 0), [1] * 4, [-0.5] * 4, "length", iteration=1)
    assert buf.segment_budget(t) == 2  # min(4, 10 - 8)
    with pytest.raises(ValueError, match="over its budget of 2"):
        buf.add_segment((gid, 0), [1] * 3, [-0.5] * 3, "length", iteration=2)
    buf.add_segment((gid, 0), [1] * 2, [-0.5] * 2, "length", iteration=2)
    assert (len(t.response_ids), t.finish_reason) == (10, "length")


def test_a_segment_cut_short_by_the_context_is_final():
    # "length" with fewer tokens than the budget: the engine's max_model_len is full, so the
    # trajectory cannot be continued.
    buf = buffer()
    gid = buf.start_group("p", [1])
    t = buf.add_segment((gid, 0), [1, 2], [-0.5, -0.5], "length", iteration=0)
    assert (t.final, t.finish_reason) == (True, "length")


def test_bad_segments_are_refused():
    buf = buffer()
    gid = buf.start_group("p", [1])
    with pytest.raises(ValueError, match="2 log-probs for 3 tokens"):
        buf.add_segment((gid, 0), [1, 2, 3], [-0.5, -0.5], "length", iteration=0)
    buf.add_segment((gid, 0), [1, 2, 3, 4], [-0.5] * 4, "length", iteration=5)
    with pytest.raises(ValueError, match="already has a segment from iteration 5"):
        buf.add_segment((gid, 0), [1, 2, 3, 4], [-0.5] * 4, "length", iteration=5)
    with pytest.raises(KeyError):
        buf.add_segment((gid, 2), [1], [-0.5], "stop", iteration=6)  # k = 2: samples 0 and 1
    with pytest.raises(KeyError):
        buf.get((gid + 1, 0))


def test_continuations_come_first_and_fresh_prompts_fill_the_rest():
    buf = buffer()
    g0, g1, g2 = (buf.start_group(p, [1]) for p in ("a", "b", "c"))
    buf.add_segment((g1, 1), [1] * 4, [-0.5] * 4, "length", iteration=0)  # running
    buf.add_segment((g1, 0), [1], [-0.5], "stop", iteration=0)  # waits for (g1, 1)
    buf.add_segment((g2, 0), [1] * 4, [-0.5] * 4, "length", iteration=0)  # running
    buf.add_segment((g2, 1), [1] * 4, [-0.5] * 4, "length", iteration=0)  # running
    buf.add_segment((g0, 0), [1] * 4, [-0.5] * 4, "length", iteration=0)  # running
    buf.add_segment((g0, 1), [1], [-0.5], "stop", iteration=0)  # waits for (g0, 0)
    # Oldest group first, sample order within a group: seeds and request order are deterministic.
    assert [t.key for t in buf.running()] == [(0, 0), (1, 1), (2, 0), (2, 1)]
    assert buf.prompts_in_flight() == {"a", "b", "c"}
    # A batch of 5 prompts x k=2 = 10 sequences: the 4 running ones take 4 slots, 6 are left,
    # which is 3 fresh prompts of 2 samples. A batch of 4 sequences has no room for a fresh prompt.
    assert (buf.fresh_slots(10), buf.fresh_prompts(10)) == (6, 3)
    assert (buf.fresh_slots(4), buf.fresh_prompts(4)) == (0, 0)
    assert buf.fresh_slots(3) == 0  # never negative
    # Group ids keep counting: a new group never reuses one.
    assert buf.start_group("d", [1]) == 3


def test_next_requests_continue_first_then_start_fresh_groups():
    from rollout.engine import Generation

    buf = buffer()
    g0 = buf.start_group("a", [1, 2])
    buf.add_segment((g0, 0), [10, 11, 12, 13], [-0.5] * 4, "length", iteration=0)  # running
    buf.add_segment((g0, 1), [20], [-0.5], "stop", iteration=0)  # waiting: no request
    reqs = buf.next_requests([("b", [3]), ("c", [4, 5])])
    # The continuation: prompt + earlier segment as the prompt, budget min(4, 10 - 4) = 4, one
    # sample; then each fresh prompt as a new group of k = 2 samples.
    assert [(r.prompt_ids, r.max_tokens, r.keys, r.n) for r in reqs] == [
        ([1, 2, 10, 11, 12, 13], 4, [(0, 0)], 1),
        ([3], 4, [(1, 0), (1, 1)], 2),
        ([4, 5], 4, [(2, 0), (2, 1)], 2),
    ]
    gens = [[Generation(0, [14], [-1.0], "stop", "x")],
            [Generation(1, [30, 31, 32, 33], [-0.25] * 4, "length"), Generation(1, [34], [-0.25], "stop")],
            [Generation(2, [40], [-0.25], "stop"), Generation(2, [41], [-0.25], "stop")]]
    with pytest.raises(ValueError, match="0 outputs for 3 requests"):
        buf.record(reqs, [], iteration=1)
    buf.record(reqs, gens, iteration=1)
    a0 = buf.get((0, 0))
    assert (a0.response_ids, a0.segment_iterations, a0.text) == ([10, 11, 12, 13, 14], [0, 1], "x")
    # Groups a and c are complete; b waits for its sample 0, which runs on.
    assert [[t.key for t in g] for g in buf.pop_complete()] == [[(0, 0), (0, 1)], [(2, 0), (2, 1)]]
    assert [t.key for t in buf.running()] == [(1, 0)]
    with pytest.raises(ValueError, match="1 generations for a request of n = 2"):
        buf.record(buf.next_requests([("d", [6])])[1:], [[gens[0][0]]], iteration=2)


def test_released_metrics():
    buf = buffer()
    g = buf.start_group("p", [1])
    buf.add_segment((g, 0), [1] * 4, [-0.5] * 4, "length", iteration=0)
    buf.add_segment((g, 0), [1], [-0.5], "stop", iteration=1)  # 2 segments, last from iteration 1
    buf.add_segment((g, 1), [1] * 4, [-0.5] * 4, "length", iteration=0)
    buf.add_segment((g, 1), [1] * 4, [-0.5] * 4, "length", iteration=1)
    buf.add_segment((g, 1), [1] * 2, [-0.5] * 2, "length", iteration=2)  # 3 segments: cut
    m = released_metrics(buf.pop_complete(), iteration=2)
    # segments (2 + 3) / 2 = 2.5; one of two cut; last segments from iterations 1 and 2 trained in
    # iteration 2: (1 + 0) / 2 = 0.5 iterations stale on average
    assert m == {"partial_released_trajectories": 2.0, "partial_segments_mean": 2.5, "partial_segments_max": 3.0,
                 "partial_multi_segment_frac": 1.0, "partial_truncated_frac": 0.5, "partial_repeat_stops": 0.0,
                 "partial_stale_iterations_mean": 0.5}
    assert released_metrics([], iteration=3) == {"partial_released_trajectories": 0.0}


def test_buffer_metrics():
    buf = buffer()
    g = buf.start_group("p", [1])
    buf.add_segment((g, 0), [1] * 4, [-0.5] * 4, "length", iteration=0)
    buf.add_segment((g, 1), [1, 2], [-0.5] * 2, "stop", iteration=0)
    assert buf.metrics() == {"partial_buffer_groups": 1.0, "partial_buffer_trajectories": 2.0,
                             "partial_buffer_running": 1.0, "partial_buffer_waiting": 1.0,
                             "partial_buffer_tokens": 6.0}


# -- exact resume ------------------------------------------------------------------------------


def fake_segment(key: tuple[int, int], iteration: int, budget: int) -> tuple[list[int], list[float], str, str]:
    """What a seeded engine would return for trajectory `key` in `iteration`: a pure function of
    both, as the rollout seeds make it (rl.checkpoint.rollout_seed). Some segments stop, some run
    to their budget; log-probs are inexact binary fractions on purpose (0.1 * ...)."""
    gid, j = key
    h = (gid * 7 + j * 3 + iteration * 5) % 11
    n = budget if h < 7 else max(1, h % budget)
    tokens = [(gid * 100 + j * 10 + iteration + i) % 97 for i in range(n)]
    logprobs = [-0.1 * (1 + (h + i) % 5) for i in range(n)]
    return tokens, logprobs, ("length" if h < 7 else "stop"), f"<{gid}.{j}@{iteration}>"


def run_iterations(buf: ReplayBuffer, iterations: range, prompts_per_iteration: int = 3) -> list[list[Trajectory]]:
    """The driver's loop with a fake engine: continue running trajectories, start fresh prompts in
    the slots left, release complete groups. Returns the groups released, in order."""
    from rollout.engine import Generation

    released = []
    for it in iterations:
        n_new = buf.fresh_prompts(prompts_per_iteration * buf.settings.group_size)
        requests = buf.next_requests([(f"prompt-{it}-{n}", [1, 2, 3]) for n in range(n_new)])
        outputs = [[Generation(i, *fake_segment(key, it, req.max_tokens)) for key in req.keys]
                   for i, req in enumerate(requests)]
        buf.record(requests, outputs, it)
        released += buf.pop_complete()
    return released


def test_state_round_trips_exactly_through_json():
    buf = buffer(repeat=RepeatRule(max_ngram=4, min_count=4, min_tokens=8))
    run_iterations(buf, range(3))
    assert buf.running() and buf.waiting()  # a state worth saving: running and waiting members
    state = buf.state_dict()
    text = json.dumps(state)
    back = ReplayBuffer.from_state_dict(json.loads(text))
    assert back.state_dict() == state and json.dumps(back.state_dict()) == text
    assert back.settings == buf.settings
    assert list(back.trajectories()) == list(buf.trajectories())
    # Floats survive exactly: -0.1 * 3 is -0.30000000000000004, not -0.3, and is restored as such.
    assert -0.1 * 3 != -0.3 and -0.1 * 3 in [x for t in back.trajectories() for x in t.logprobs]


def test_resumed_run_continues_every_trajectory_and_trains_none_twice(tmp_path):
    from rl.checkpoint import TrainerState, load_trainer_state, save_trainer_state

    # Uninterrupted: 8 iterations.
    straight = buffer()
    released_straight = run_iterations(straight, range(8))
    # Interrupted after iteration 3: the buffer goes into the checkpoint's trainer state, a new
    # process reads it back and runs iterations 4..7.
    first = buffer()
    released_first = run_iterations(first, range(4))
    assert len(first) > 0  # the checkpoint holds partial trajectories
    save_trainer_state(tmp_path, TrainerState(3, 0, {}, 1.0, replay_buffer=first.state_dict()))
    resumed = ReplayBuffer.from_state_dict(load_trainer_state(tmp_path).replay_buffer, SETTINGS)
    released_resumed = run_iterations(resumed, range(4, 8))

    # Same groups released, in the same order, with the same tokens, log-probs and segments.
    assert released_first + released_resumed == released_straight
    assert resumed.state_dict() == straight.state_dict()
    # Every group started was released exactly once or is still in the buffer.
    keys = [g[0].group_id for g in released_first + released_resumed]
    assert len(keys) == len(set(keys))
    assert sorted(keys + [g for g in {t.group_id for t in resumed.trajectories()}]) == list(range(resumed._next_group_id))
    # Some trajectory was continued across the checkpoint (its segments straddle iteration 3/4).
    assert any(t.segment_iterations[0] <= 3 < t.segment_iterations[-1] for g in released_resumed for t in g)


def test_restore_refuses_another_group_size_and_a_bad_state():
    state = buffer().state_dict()
    with pytest.raises(ValueError, match="groups of 2 samples; rollout.sampling.n is now 4"):
        ReplayBuffer.from_state_dict(state, PartialSettings(4, 4, 3, 10))
    with pytest.raises(ValueError, match="format"):
        ReplayBuffer.from_state_dict({**state, "format": 99})
    buf = buffer()
    g = buf.start_group("p", [1])
    buf.add_segment((g, 0), [1, 2, 3, 4], [-0.5] * 4, "length", iteration=0)
    bad = buf.state_dict()
    bad["groups"][0][0]["segment_ends"] = [3]  # does not cover the 4 response tokens
    with pytest.raises(ValueError, match="do not tile 4 tokens"):
        ReplayBuffer.from_state_dict(bad)
    bad = buf.state_dict()
    bad["groups"][0][0]["segment_iterations"] = [0, 1]  # two iterations for one segment
    with pytest.raises(ValueError, match=r"segment iterations \[0, 1\] for 1 segments"):
        ReplayBuffer.from_state_dict(bad)
    bad = buf.state_dict()
    bad["groups"][0] = bad["groups"][0][:1]  # a group with one of its k = 2 samples
    with pytest.raises(ValueError, match="group 0 is malformed"):
        ReplayBuffer.from_state_dict(bad)
    # Other limits may change on resume: they apply from the next segment on.
    moved = ReplayBuffer.from_state_dict(buf.state_dict(), PartialSettings(2, 8, 5, 40))
    assert moved.segment_budget(moved.get((g, 0))) == 8


def test_restore_buffer_at_run_start():
    # A new run, a checkpoint from before partial rollouts, or partial rollouts off.
    assert len(restore_buffer(None, SETTINGS)) == 0
    assert restore_buffer(None, None) is None
    assert restore_buffer(buffer().state_dict(), None) is None  # an empty buffer loses nothing
    buf = buffer()
    buf.add_segment((buf.start_group("p", [1]), 0), [1] * 4, [-0.5] * 4, "length", iteration=0)
    back = restore_buffer(buf.state_dict(), SETTINGS)
    assert back.state_dict() == buf.state_dict()
    # Turning partial rollouts off on resume would drop the 2 trajectories held: refused.
    with pytest.raises(ValueError, match="holds 2 trajectories of partial rollouts, but rollout.partial.enabled"):
        restore_buffer(buf.state_dict(), None)


def test_settings_from_config():
    from rl.config import RLConfig

    cfg = RLConfig.model_validate({
        "policy": "ckpt", "data": {"train_file": "t.jsonl"},
        "rollout": {"sampling": {"n": 4, "max_tokens": 1000},
                    "partial": {"enabled": True, "segment_tokens": 300, "repeat_ngram": 16}},
    })
    s = PartialSettings.from_config(cfg)
    # max_segments None -> ceil(1000 / 300) = 4; repeat defaults min_count 4, min_tokens 64
    assert s == PartialSettings(4, 300, 4, 1000, RepeatRule(16, 4, 64))
    off = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(
        update={"partial": cfg.rollout.partial.model_copy(update={"enabled": False})})})
    assert PartialSettings.from_config(off) is None
