"""Pass-rate tracker, sampler API, checkpoint state and bad-input handling (rl/sampling).

Statistical checks of the draw distributions are in test_sampling_stats.py; the kill-and-resume
check is in test_sampling_resume.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from prompts.schema import PromptRow
from rl.sampling import (
    PassRateTracker,
    TrackerConfig,
    build_sampler,
    filter_groups,
    parse_sampler_config,
)


def row(pid: str, difficulty: int | None = None, pass_rate: float | None = None) -> PromptRow:
    return PromptRow(
        id=pid,
        prompt=[{"role": "user", "content": f"question {pid}"}],
        answer="1",
        difficulty=difficulty,
        pass_rate=pass_rate,
    )


def labelled_rows(n: int = 12) -> list[PromptRow]:
    return [row(f"p{i}", difficulty=i % 3 + 1) for i in range(n)]


CURRICULUM = {"kind": "curriculum", "schedule": [{"iteration": 0}, {"iteration": 5, "only": [3]}]}
ALL_KINDS = [
    {"kind": "uniform"},
    {"kind": "prioritized", "floor": 0.1},
    CURRICULUM,
    {"kind": "mix", "components": [
        {"weight": 1, "sampler": {"kind": "uniform"}},
        {"weight": 2, "sampler": {"kind": "prioritized"}},
    ]},
]


# -- tracker -----------------------------------------------------------------------------------


def test_tracker_counts_ewma_and_tag_seed():
    tr = PassRateTracker(["a", "b"], [1, 2], TrackerConfig(decay=0.5), [None, 0.2])
    assert tr.get("a").rate is None and tr.get("b").rate == 0.2
    tr.update(1, [("a", [1, 1, 0, 0]), ("b", [1, 1, 1, 1])])
    # a: first observation sets the rate; b: the tag counts as the earlier value.
    assert tr.get("a") == type(tr.get("a"))(count=4, successes=2, rate=0.5, last_seen=1)
    assert tr.get("b").rate == pytest.approx(0.5 * 0.2 + 0.5 * 1.0)
    tr.update(3, [("a", [1, 1, 1, 1])])
    a = tr.get("a")
    assert (a.count, a.successes, a.last_seen) == (8, 6, 3)
    assert a.rate == pytest.approx(0.75)
    assert tr.get("b").last_seen == 1


def test_tracker_threshold_merge_and_tag_switch():
    tr = PassRateTracker(["a", "b"], [None, None], TrackerConfig(decay=0.0, success_threshold=0.5), [None, 0.9])
    tr.update(0, [("a", [0.5, 0.49])])  # with threshold 0.5: 0.5 counts as a success, 0.49 does not
    assert (tr.get("a").successes, tr.get("a").rate) == (1, 0.5)
    # two entries for one id in one update = one group of 4, one EWMA step
    tr.update(1, [("a", [1, 0]), ("a", [1, 1])])
    assert (tr.get("a").count, tr.get("a").successes, tr.get("a").rate) == (6, 4, 0.75)
    hi = PassRateTracker(["a"], [None], TrackerConfig(success_threshold=0.8))
    hi.update(0, [("a", [0.5, 0.9])])
    assert hi.get("a").successes == 1
    off = PassRateTracker(["a", "b"], [None, None], TrackerConfig(use_tagged_pass_rate=False), [None, 0.9])
    assert off.get("b").rate is None
    assert off.estimates().tolist() == [0.5, 0.5]  # unseen prior


@pytest.mark.parametrize(
    "results, match",
    [
        ([("a", [1]), ("zzz", [1])], "zzz"),
        ([("a", [1]), ("b", [1.5])], r"\[0, 1\]"),
        ([("a", [1]), ("b", [float("nan")])], r"\[0, 1\]"),
        ([("a", [1]), ("b", [])], "empty"),
    ],
)
def test_tracker_rejects_bad_updates_atomically(results, match):
    tr = PassRateTracker(["a", "b"], [1, 1], TrackerConfig())
    with pytest.raises(ValueError, match=match):
        tr.update(0, results)
    assert tr.get("a").count == 0  # the valid group before the bad one was not applied


def test_tracker_summary_by_difficulty():
    tr = PassRateTracker(["a", "b", "c", "d"], [1, 1, 2, None], TrackerConfig(decay=0.0), [None, None, 0.3, None])
    tr.update(0, [("a", [1, 1, 1, 0]), ("b", [0, 0])])
    s = tr.summary_by_difficulty()
    assert s["1"] == {"num_prompts": 2, "num_seen": 2, "num_with_estimate": 2,
                      "mean_rate": pytest.approx((0.75 + 0.0) / 2), "pooled_pass_rate": pytest.approx(3 / 6)}
    assert s["2"] == {"num_prompts": 1, "num_seen": 0, "num_with_estimate": 1,
                      "mean_rate": pytest.approx(0.3), "pooled_pass_rate": None}
    assert s["none"]["mean_rate"] is None
    assert tr.pass_rate_by_difficulty() == {"1": pytest.approx(0.375), "2": pytest.approx(0.3)}
    assert list(s) == ["1", "2", "none"]


# -- dynamic filtering -------------------------------------------------------------------------


def test_filter_groups_drops_all_correct_and_all_wrong():
    res = [("a", [1, 1]), ("b", [0, 0.2]), ("c", [1, 0]), ("d", [0.6, 0.4])]
    kept, n = filter_groups(res, success_threshold=0.5)
    assert (kept, n) == ([("c", [1, 0]), ("d", [0.6, 0.4])], 2)
    # the default is the one definition of correct: partial credit is not a success
    assert filter_groups(res) == ([("c", [1, 0])], 3)
    with pytest.raises(ValueError, match="at least 2 samples.*'a' has 1"):
        filter_groups([("a", [1])])


def test_sampler_filter_groups_follows_config_and_counts():
    rows = labelled_rows()
    res = [("p0", [1, 1]), ("p1", [0, 1]), ("p2", [0, 0])]
    off = build_sampler({"kind": "uniform"}, rows, seed=0)
    assert off.filter_groups(res) == (res, 0)
    on = build_sampler({"kind": "uniform", "dynamic_filtering": True}, rows, seed=0)
    on.sample(3, iteration=4)
    assert on.filter_groups(res) == ([("p1", [0, 1])], 2)
    assert on.filter_groups([("p3", [1, 1])]) == ([], 1)  # a replacement round
    assert on.metrics([])["sampler_filtered"] == 3
    on.sample(3, iteration=5)  # a new iteration resets the per-iteration counts
    assert on.metrics([])["sampler_filtered"] == 0


# -- sample / update / metrics -----------------------------------------------------------------


@pytest.mark.parametrize("cfg", ALL_KINDS, ids=lambda c: c["kind"])
def test_sample_distinct_excludes_and_is_seeded(cfg):
    rows = labelled_rows(30)
    a, b, c = (build_sampler(cfg, rows, seed=s) for s in (7, 7, 8))
    runs = [[s.sample(8, it) for it in range(4)] for s in (a, b, c)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    for ids in runs[0]:
        assert len(set(ids)) == 8 and set(ids) <= {r.id for r in rows}
    first = a.sample(10, 4)
    more = a.sample(10, 4, exclude=first)
    assert not set(first) & set(more)
    assert a.sample(0, 4) == []


def test_sample_errors_name_the_problem():
    s = build_sampler(CURRICULUM, labelled_rows(12), seed=0)  # 4 prompts of difficulty 3
    with pytest.raises(ValueError, match="asked for 5 prompts at iteration 5, but only 4 are eligible"):
        s.sample(5, 5)
    with pytest.raises(ValueError, match="only 2 are eligible.*2 excluded"):
        s.sample(3, 5, exclude=["p2", "p5"])
    with pytest.raises(ValueError, match="nope"):
        s.sample(1, 0, exclude=["nope"])
    with pytest.raises(ValueError, match="no available prompt"):
        s.sample(1, 6, exclude=["p2", "p5", "p8", "p11"])


def test_metrics_use_rates_from_before_the_update():
    rows = [row("a", 1), row("b", 1), row("c", 2), row("d", 3, pass_rate=0.8)]
    s = build_sampler({"kind": "uniform", "tracker": {"decay": 0.0, "unseen_prior": 0.4}}, rows, seed=3)
    s.update(0, [("a", [1, 0, 0, 0]), ("b", [1, 1, 1, 1])])
    ids = s.sample(4, 1)
    s.update(1, [(p, [0, 0]) for p in ids])  # every rate drops to 0 after the draw
    m = s.metrics(ids)
    assert m["sampler_difficulty_hist"] == {"1": 2, "2": 1, "3": 1}
    assert m["sampler_prior_pass_rate"] == pytest.approx((0.25 + 1.0 + 0.4 + 0.8) / 4)
    assert m["sampler_unseen_frac"] == pytest.approx(1 / 4)  # only c had no estimate
    assert m["sampler_drawn"] == 4 and m["sampler_filtered"] == 0
    assert m["pass_rate_by_difficulty"] == {"1": 0.0, "2": 0.0, "3": 0.0}
    json.dumps(m)  # goes to metrics.jsonl as is


def test_curriculum_metrics_report_the_mix_in_force():
    s = build_sampler(CURRICULUM, labelled_rows(12), seed=0)
    s.sample(2, 0)
    assert s.metrics([])["sampler_curriculum_mix"] == {"1": 1 / 3, "2": 1 / 3, "3": 1 / 3}
    s.sample(2, 5)
    assert s.metrics([])["sampler_curriculum_mix"] == {"1": 0.0, "2": 0.0, "3": 1.0}


# -- checkpoint state --------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", ALL_KINDS, ids=lambda c: c["kind"])
def test_state_roundtrip_through_json_continues_identically(cfg):
    rows = labelled_rows(30)
    a = build_sampler(cfg, rows, seed=11)
    for it in range(3):
        ids = a.sample(6, it)
        a.update(it, [(p, [float(j % 2), 1.0, 0.0]) for j, p in enumerate(ids)])
    text = json.dumps(a.state_dict())
    assert isinstance(json.loads(text)["rng"]["state"], str)  # 128-bit word kept exact
    b = build_sampler(cfg, rows, seed=11)
    b.load_state_dict(json.loads(text))
    assert [a.sample(6, it) for it in range(3, 8)] == [b.sample(6, it) for it in range(3, 8)]
    assert a.tracker.state_dict() == b.tracker.state_dict()


def test_load_refuses_a_different_prompt_set_by_id():
    a = build_sampler({"kind": "prioritized"}, labelled_rows(6), seed=0)
    a.update(0, [("p0", [1, 0]), ("p5", [1, 1])])
    state = json.loads(json.dumps(a.state_dict()))
    other_rows = labelled_rows(5) + [row("q9", 1)]
    b = build_sampler({"kind": "prioritized"}, other_rows, seed=0)
    twin = build_sampler({"kind": "prioritized"}, other_rows, seed=0)
    with pytest.raises(ValueError, match=r"1 saved ids are not in the current set \(p5\).*\(q9\)"):
        b.load_state_dict(state)
    assert b.sample(3, 1) == twin.sample(3, 1)  # the failed load changed nothing
    report = b.load_state_dict(state, strict=False)
    assert report == {"restored": 5, "dropped": 1, "new": 1}
    assert b.tracker.get("p0").rate == 0.5 and b.tracker.get("q9").count == 0


def test_load_refuses_a_different_config_or_seed_naming_it():
    rows = labelled_rows(6)
    state = build_sampler({"kind": "prioritized", "floor": 0.05}, rows, seed=0).state_dict()
    b = build_sampler({"kind": "prioritized", "floor": 0.2}, rows, seed=0)
    with pytest.raises(ValueError, match="floor: saved 0.05, current 0.2"):
        b.load_state_dict(state)
    c = build_sampler({"kind": "prioritized", "floor": 0.05}, rows, seed=1)
    with pytest.raises(ValueError, match="seed: saved 0, current 1"):
        c.load_state_dict(state)
    b.load_state_dict(state, strict=False)  # deliberate change of settings is allowed
    with pytest.raises(ValueError, match="not a sampler state"):
        b.load_state_dict({"format": "something else"})


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", ALL_KINDS, ids=lambda c: c["kind"])
def test_duplicate_ids_are_refused_by_name(cfg):
    rows = labelled_rows(6) + [row("p4", 2), row("p1", 2), row("p1", 2)]
    with pytest.raises(ValueError, match=r"duplicate prompt ids \(2\): p1, p4"):
        build_sampler(cfg, rows, seed=0)


def test_curriculum_without_difficulty_fails_at_start_naming_the_field():
    rows = [row(f"u{i}") for i in range(5)]
    with pytest.raises(ValueError, match="field 'difficulty'.*no prompt has it.*by: pass_rate"):
        build_sampler(CURRICULUM, rows, seed=0)
    mixed = labelled_rows(4) + [row("u1")]
    with pytest.raises(ValueError, match="'difficulty'.*1 of 5 prompts lack it.*u1"):
        build_sampler({"kind": "mix", "components": [{"weight": 1, "sampler": CURRICULUM}]}, mixed, seed=0)
    bands = {"kind": "curriculum", "by": "pass_rate",
             "bands": {"hard": [0, 0.5], "easy": [0.5, 1]},
             "schedule": [{"iteration": 0, "mix": {"hard": 1, "easy": 1}}]}
    assert len(build_sampler(bands, rows, seed=0).sample(3, 0)) == 3


def test_schedule_label_absent_from_the_set_is_an_error():
    cfg = {"kind": "curriculum", "schedule": [{"iteration": 0, "mix": {"1": 1, "7": 1}}]}
    with pytest.raises(ValueError, match=r"difficulty \['7'\].*difficulties \['1', '2', '3'\]"):
        build_sampler(cfg, labelled_rows(), seed=0)


@pytest.mark.parametrize(
    "cfg, loc",
    [
        ({"kind": "prioritized", "flor": 0.1}, "prioritized.flor"),
        ({"kind": "uniform", "tracker": {"decay": 0.5, "decya": 1}}, "uniform.tracker.decya"),
        ({"kind": "mix", "components": [{"weight": 1, "sampler": {"kind": "uniform", "tracker": {}}}]},
         "mix.components.0.sampler.uniform.tracker"),
        ({"kind": "curriculum", "schedule": [{"iteration": 0, "mixx": {}}]}, "curriculum.schedule.0.mixx"),
    ],
)
def test_unknown_config_keys_are_named(cfg, loc):
    with pytest.raises(ValidationError) as e:
        parse_sampler_config(cfg)
    assert loc in str(e.value) and "Extra inputs are not permitted" in str(e.value)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"kind": "bogus"}, "'uniform', 'curriculum', 'prioritized', 'mix'"),
        ({"kind": "prioritized", "floor": 0}, "greater than 0"),
        ({"kind": "uniform", "tracker": {"decay": 1.0}}, "less than 1"),
        ({"kind": "curriculum", "schedule": [{"iteration": 3}, {"iteration": 3}]}, "strictly increasing"),
        ({"kind": "curriculum", "by": "pass_rate", "schedule": [{"iteration": 0}]}, "needs `bands`"),
        ({"kind": "curriculum", "by": "pass_rate", "bands": {"a": [0, 0.4], "b": [0.5, 1]},
          "schedule": [{"iteration": 0}]}, "tile"),
        ({"kind": "curriculum", "by": "pass_rate", "bands": {"a": [0, 1]},
          "schedule": [{"iteration": 0, "only": ["b"]}]}, r"names bands \['b'\]"),
        ({"kind": "curriculum", "schedule": [{"iteration": 0, "mix": {"1": 1}, "only": [1]}]}, "either"),
        ({"kind": "mix", "components": []}, "at least 1"),
    ],
)
def test_invalid_config_values_are_explained(cfg, match):
    with pytest.raises(ValidationError, match=match):
        parse_sampler_config(cfg)


def test_config_dump_roundtrips_and_accepts_int_labels():
    cfg = parse_sampler_config({"kind": "curriculum", "interpolation": "linear",
                                "schedule": [{"iteration": 0, "mix": {1: 2, 3: 1}}, {"iteration": 9, "only": [3]}]})
    assert cfg.schedule[0].mix == {"1": 2.0, "3": 1.0} and cfg.schedule[1].only == ["3"]
    assert parse_sampler_config(json.loads(json.dumps(cfg.model_dump(mode="json")))) == cfg
    assert np.isclose(sum(build_sampler(cfg, labelled_rows(), 0).metrics([])["sampler_curriculum_mix"].values()), 1)


def test_mix_skips_a_component_whose_bands_emptied_but_a_lone_curriculum_fails():
    rows = [row(f"u{i}") for i in range(6)]
    hard_only = {"kind": "curriculum", "by": "pass_rate", "bands": {"hard": [0, 0.5], "easy": [0.5, 1]},
                 "schedule": [{"iteration": 0, "only": ["hard"]}]}
    mix = build_sampler({"kind": "mix", "tracker": {"decay": 0.0}, "components": [
        {"weight": 1, "sampler": {"kind": "uniform"}}, {"weight": 1, "sampler": hard_only}]}, rows, seed=0)
    lone = build_sampler({**hard_only, "tracker": {"decay": 0.0}}, rows, seed=0)
    solved = [(p, [1, 1]) for p in mix.ids]  # every prompt moves to the easy band
    mix.update(0, solved)
    lone.update(0, solved)
    assert sorted(mix.sample(6, 1)) == sorted(mix.ids)  # the uniform member carries on
    assert mix.metrics([])["sampler_curriculum_mix/1"] == {}
    with pytest.raises(ValueError, match="allows no available prompt.*easy"):
        lone.sample(1, 1)
