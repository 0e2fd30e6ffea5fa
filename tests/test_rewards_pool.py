"""VerifierPool: deadlines that hold, crashes that cost one item, adversarial inputs.

Each adversarial input must come back within two deadlines + 1 s with score 0 (a timed-out item
is retried once on a fresh worker, issue 20), and the next batch must be scored normally (the
killed worker was replaced)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rl.rewards import VerifierPool, VerifyItem, close_default_pool, verify

DEADLINE = 2.0
NORMAL = [
    VerifyItem("<think>7*6</think>\nThe answer is \\boxed{42}.", "42"),
    VerifyItem("\\boxed{\\frac{1}{2}}", "0.5"),
    VerifyItem("\\boxed{41}", "42"),
]
NORMAL_SCORES = [1.0, 1.0, 0.0]

ADVERSARIAL = {
    # sympy evaluates the tower inside C code: only killing the worker stops it
    "power_tower": "<think>big</think>\\boxed{10^{10^{10^{10}}}}",
    "one_megabyte": "1 + {[ \\boxed " * ((1 << 20) // 14),
    "one_megabyte_open_boxes": "\\boxed{" * ((1 << 20) // 7),
    "nested_braces_500": "\\boxed{" + "{" * 500 + "7" + "}" * 500 + "}",
    "nested_braces_450_parsed": "\\boxed{" + "{" * 450 + "x" + "}" * 450 + "}",
    "fifty_distinct_boxes": " ".join(f"\\boxed{{{i}}}" for i in range(50)),
    "factorial_1e9": "\\boxed{1000000000!}",
    "factorial_10_pow_9": "\\boxed{(10^9)!}",
    "lone_surrogates": "\ud800\udfff The answer is \\boxed{\ud800 7\udfff}",
    "invalid_utf8_bytes": b"\xff\xfe\\boxed{\xed\xa0\x80 7}".decode("utf-8", "surrogateescape"),
}


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=DEADLINE) as p:
        yield p


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_scores_zero_within_deadline_then_pool_recovers(pool, name):
    # The reference is "7" where the input contains a 7, so a zero is not for lack of a match.
    t0 = time.monotonic()
    (res,) = pool.map([VerifyItem(ADVERSARIAL[name], "7")])
    elapsed = time.monotonic() - t0
    assert res.score == 0.0, res
    assert elapsed < 2 * DEADLINE + 1.0, (name, elapsed, res.reason)
    assert [r.score for r in pool.map(NORMAL)] == NORMAL_SCORES


def test_power_tower_is_a_timeout_and_the_worker_is_replaced(pool):
    before, restarts = set(pool.worker_pids()), pool.stats["restarts"]
    (res,) = pool.map([VerifyItem(ADVERSARIAL["power_tower"], "1")])
    assert (res.score, res.reason, res.metrics["timeout"], res.metrics["retried"]) == (0.0, "timeout", True, True)
    # The deadline is the worker's CPU time (the wall clock can only be longer), per attempt.
    assert DEADLINE <= res.metrics["cpu_s"] < DEADLINE + 0.5
    assert DEADLINE <= res.metrics["elapsed_s"] < DEADLINE + 1.0
    assert pool.stats["restarts"] == restarts + 2 and set(pool.worker_pids()) != before


def test_mixed_batch_keeps_order_and_other_items_finish(pool):
    hang = VerifyItem(ADVERSARIAL["power_tower"], "1")
    items = [NORMAL[0], hang, NORMAL[1], hang, NORMAL[2]] + NORMAL * 10
    t0 = time.monotonic()
    res = pool.map(items)
    # Two hangs on two workers run in parallel, each tried twice: about two deadlines, not four.
    assert time.monotonic() - t0 < 3 * DEADLINE
    assert [r.reason for r in res[:5]] == ["correct", "timeout", "correct", "timeout", "wrong"]
    assert [r.score for r in res[5:]] == NORMAL_SCORES * 10


def test_long_but_honest_response_is_scored(pool):
    resp = "<think>" + "carry the one. " * 70_000 + "</think>\nThe answer is \\boxed{1234}."
    assert len(resp) > 1_000_000
    (res,) = pool.map([VerifyItem(resp, "1234")])
    assert (res.score, res.reason) == (1.0, "correct")


def test_per_call_deadline_overrides_the_pool_default(pool):
    t0 = time.monotonic()
    (res,) = pool.map([VerifyItem(ADVERSARIAL["factorial_1e9"], "1")], timeout_s=0.5)
    assert res.reason == "timeout" and time.monotonic() - t0 < 2.0  # 2 x 0.5 s: tried twice


def test_killed_worker_costs_only_its_item():
    with VerifierPool(num_workers=2, timeout_s=30.0) as p:
        def kill_busy_workers() -> None:
            time.sleep(1.0)  # the hanging item is being worked on by now
            for pid in p.worker_pids():
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_busy_workers)
        killer.start()
        t0 = time.monotonic()
        res = p.map([VerifyItem(ADVERSARIAL["power_tower"], "1")])
        killer.join()
        assert time.monotonic() - t0 < 5.0  # far below the 30 s deadline
        assert (res[0].score, res[0].reason) == (0.0, "worker_crashed")
        assert res[0].metrics["exitcode"] == -signal.SIGKILL
        assert p.stats["crashes"] == 1
        assert [r.score for r in p.map(NORMAL)] == NORMAL_SCORES


def test_workers_run_under_the_address_space_cap():
    # A runaway expansion should hit MemoryError in its worker, not page the machine.
    with VerifierPool(num_workers=1, timeout_s=DEADLINE, max_memory_mb=1536) as p:
        assert [r.score for r in p.map(NORMAL)] == NORMAL_SCORES  # ready, and working under the cap
        limits = open(f"/proc/{p.worker_pids()[0]}/limits").read()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))
    assert line.split()[3:5] == [str(1536 << 20)] * 2, line


def test_deadline_counts_the_workers_cpu_time_not_time_spent_waiting_for_a_core():
    # A stopped worker is what a starved one looks like to the clock: wall time passes, no work
    # is done. The item must survive 2.5 deadlines of that and still be scored (issue 20).
    with VerifierPool(num_workers=1, timeout_s=1.0) as p:
        p.map(NORMAL[:1])
        (pid,) = p.worker_pids()
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(2.5, os.kill, (pid, signal.SIGCONT)).start()
        t0 = time.monotonic()
        (res,) = p.map([NORMAL[0]])
        assert time.monotonic() - t0 >= 2.4
        assert (res.score, res.reason) == (1.0, "correct")
        assert p.stats["timeouts"] == 0


def test_a_timeout_is_retried_once_and_logged(caplog):
    with VerifierPool(num_workers=1, timeout_s=0.5) as p, caplog.at_level("WARNING", logger="rl.rewards.pool"):
        (res,) = p.map([VerifyItem(ADVERSARIAL["factorial_1e9"], "1", item_id="row-7")])
        assert (res.reason, res.metrics["retried"]) == ("timeout", True)
        assert p.stats["timeouts"] == 2 and p.stats["retries"] == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert any("row-7" in m and "retrying" in m for m in msgs), msgs
    assert any("row-7" in m and "scores 0" in m for m in msgs), msgs
    with VerifierPool(num_workers=1, timeout_s=0.5, timeout_retries=0) as p:
        (res,) = p.map([VerifyItem(ADVERSARIAL["factorial_1e9"], "1")])
        assert (res.reason, res.metrics["retried"], p.stats["timeouts"]) == ("timeout", False, 1)


def test_workers_that_cannot_start_are_an_error_not_a_hang():
    # 1 MiB of address space cannot even import Python modules: every worker dies at start-up.
    t0 = time.monotonic()
    with VerifierPool(num_workers=1, max_memory_mb=1, start_method="spawn") as p:
        with pytest.raises(RuntimeError, match="die at start-up"):
            p.map(NORMAL)
        with pytest.raises(RuntimeError, match="closed"):
            p.map(NORMAL)
    assert time.monotonic() - t0 < 10.0


def test_closed_pool_refuses_work():
    p = VerifierPool(num_workers=1)
    pids = p.worker_pids()
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.map(NORMAL)
    time.sleep(0.2)
    for pid in pids:  # the workers are gone, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_off_verify_uses_a_default_pool_started_on_demand():
    import rl.rewards.api as api

    assert api._default is None  # importing the package started nothing
    try:
        r = verify("<think>...</think>\nThe answer is \\boxed{303}.", "303")
        assert (r.score, r.reason) == (1.0, "correct")
        t0 = time.monotonic()
        r = verify(ADVERSARIAL["power_tower"], "1", timeout_s=1.0)
        assert r.reason == "timeout" and time.monotonic() - t0 < 3.0  # tried twice
    finally:
        close_default_pool()
    assert api._default is None


def test_start_up_deadline_counts_from_the_call_not_from_a_long_wait_before_it():
    # A pool made before a long generation (the SFT eval builds it, then vLLM samples for minutes)
    # must not fail its first map for the time spent generating: the long-CoT SFT eval did.
    with VerifierPool(1, 5.0, start_method="forkserver", startup_timeout_s=2.0) as p:
        time.sleep(3.0)  # longer than startup_timeout_s, doing other work
        res = p.map([VerifyItem("\\boxed{4}", "4")])
    assert [r.score for r in res] == [1.0]
