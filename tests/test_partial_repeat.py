"""Repeat detection of partial rollouts (rl/partial/repeat.py): a generation whose tail loops is
caught, one that does not loop is left alone, and the replay buffer cuts a looping trajectory."""

from __future__ import annotations

import random

import pytest

from rl.partial import PartialSettings, RepeatRule, ReplayBuffer, TailRepeat, tail_repeat


def words_to_ids(text: str, vocab: dict[str, int]) -> list[int]:
    """A toy tokenizer: one id per whitespace-separated word, ids handed out in order of first use."""
    return [vocab.setdefault(w, len(vocab)) for w in text.split()]


# A long-CoT response that falls into a loop: after the answer it keeps "checking" the same line.
PREFIX = "<think> 17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391 </think> so the answer is 391 ."
UNIT = "Wait , let me check again : 391 / 17 = 23 , correct ."  # 15 words


def test_crafted_looping_generation_is_caught():
    vocab: dict[str, int] = {}
    ids = words_to_ids(PREFIX + " " + " ".join([UNIT] * 6), vocab)
    unit = len(UNIT.split())
    assert unit == 15
    rule = RepeatRule(max_ngram=32, min_count=4, min_tokens=32)
    found = rule.find(ids)
    # The tail is 6 copies of the 15-word unit. The word before the loop is "." (the end of PREFIX),
    # which is also the unit's last word, so the periodic tail reaches one word further back (the
    # word before it, "391", is not "correct"): span = 6 * 15 + 1 = 91, copies = 91 // 15 = 6. No
    # shorter period fits: "." occurs only at the unit's end.
    assert found == TailRepeat(period=15, copies=6, span=91)


@pytest.mark.parametrize("copies, fires", [(3, False), (4, True)])
def test_min_count_is_the_threshold(copies, fires):
    # Unit of 10 distinct ids after a prefix of distinct ids: min_count 4 needs 4 whole copies
    # (min_tokens 8 < 40 does not bind).
    ids = list(range(100, 120)) + list(range(10)) * copies
    assert (tail_repeat(ids, max_ngram=16, min_count=4, min_tokens=8) is not None) == fires


def test_min_tokens_keeps_short_natural_runs_from_firing():
    # "1000000 " as tokens: seven '0's at the end is a period-1 run of 7 copies, fine for min_count 4,
    # but shorter than min_tokens 32.
    ids = [5, 9, 2, 1, 0, 0, 0, 0, 0, 0, 0]
    assert tail_repeat(ids, max_ngram=8, min_count=4, min_tokens=32) is None
    # The same token 40 times is a loop by both counts: period 1, 40 copies.
    assert tail_repeat([5, 9] + [0] * 40, max_ngram=8, min_count=4, min_tokens=32) == TailRepeat(1, 40, 40)


def test_shortest_period_is_reported():
    # "a b a b ..." is also periodic with period 4 ("a b a b"); the unit reported is the shortest.
    ids = [7, 8] * 20
    assert tail_repeat(ids, max_ngram=8, min_count=4, min_tokens=8) == TailRepeat(2, 20, 40)


def test_units_longer_than_max_ngram_are_not_looked_for():
    ids = list(range(100, 110)) + list(range(20)) * 5  # a 20-token unit, 5 copies
    assert tail_repeat(ids, max_ngram=19, min_count=4, min_tokens=8) is None
    assert tail_repeat(ids, max_ngram=20, min_count=4, min_tokens=8) == TailRepeat(20, 5, 100)


def test_non_looping_generations_do_not_fire():
    rule = RepeatRule(max_ngram=64, min_count=4, min_tokens=32)
    vocab: dict[str, int] = {}
    # Counting: every number token repeats (", " between them too) but the tail never does.
    counting = words_to_ids(" ".join(f"{i} ," for i in range(300)), vocab)
    assert rule.find(counting) is None
    # Ordinary CoT with repeated phrases scattered through it.
    steps = " ".join(f"step {i} : 17 * {i} = {17 * i} , carry the 1 ." for i in range(1, 30))
    assert rule.find(words_to_ids(PREFIX + " " + steps, vocab)) is None
    # A loop the generation has already left: only the tail counts.
    escaped = words_to_ids(" ".join([UNIT] * 6) + " " + PREFIX, vocab)
    assert rule.find(escaped) is None
    # Random tokens.
    rng = random.Random(0)
    assert rule.find([rng.randrange(50) for _ in range(4000)]) is None
    # Too short to hold min_tokens at all.
    assert rule.find([1] * 31) is None and rule.find([]) is None


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="min_count >= 2"):
        RepeatRule(max_ngram=8, min_count=1, min_tokens=8)
    with pytest.raises(ValueError, match="max_ngram >= 1"):
        tail_repeat([1, 1], max_ngram=0, min_count=2, min_tokens=1)


def test_buffer_cuts_a_looping_trajectory_between_segments():
    # k = 2, segments of 40 tokens, up to 5 segments; repeat detection on.
    settings = PartialSettings(group_size=2, segment_tokens=40, max_segments=5, max_response_tokens=200,
                               repeat=RepeatRule(max_ngram=16, min_count=4, min_tokens=32))
    buf = ReplayBuffer(settings)
    gid = buf.start_group("p", [1, 2, 3])
    loop = list(range(100, 110)) * 4  # 40 tokens: 4 copies of a 10-token unit
    fine = list(range(200, 240))  # 40 distinct tokens
    a = buf.add_segment((gid, 0), loop, [-0.5] * 40, "length", iteration=0)
    b = buf.add_segment((gid, 1), fine, [-0.5] * 40, "length", iteration=0)
    # The looping one is final after its first segment: cut ("length", the truncated reward) and
    # marked; the other one goes on.
    assert (a.final, a.finish_reason, a.repeat_stop) == (True, "length", True)
    assert (b.final, b.repeat_stop) == (False, False)
    assert buf.running() == [b]
    # A response that ends itself is never checked: EOS after a loop is a finished response.
    c = buf.add_segment((buf.start_group("q", [1]), 0), loop, [-0.5] * 40, "stop", iteration=0)
    assert (c.finish_reason, c.repeat_stop) == ("stop", False)
