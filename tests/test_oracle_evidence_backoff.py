"""BO1, BO2 and RL1 as a report prints them: every verdict's status, whole evidence text and
record indices, on crafted traces at the rules' edges (nox -s mutation -- oracle found these
unpinned)."""

from __future__ import annotations

import pytest
from test_oracle_mutation_rules import attempts, verdict
from test_oracle_traces import Run, healthy_start

TOL_BO1 = ("tolerances storm_max_attempts=4 per 1.0 s, backoff_hammer_waits=20 below 1.0 s, "
           "backoff_flat_ok=2.0 s, backoff_cap=120.0 s")
TOO_FEW = ("; too few waits to tell: a run's 1 wait(s) all stayed below 1 s, and 20 are needed to "
           "tell hammering from a slow jittered start (it fails no rule)")
TOL_BO2 = "max_concurrency=1, tolerance identify_window=5.0 s"
TOL_RL1 = "limits 120 frames per 60 s, 4096 bytes"


def waits_run(waits: list[float], first: float = 0.0, end: float | None = None) -> Run:
    """Failed attempts (opened and reset by the network at the same instant, so a wait is
    exactly the time from one to the next), the first at ``first``, then one after each wait."""
    times = [first]
    for w in waits:
        times.append(times[-1] + w)
    run = Run()
    for i, t in enumerate(times, start=1):
        run.open(i, t, "resume").close(i, t, "network", None, "reset")
    return run.rec("note", end if end is not None else times[-1] + 1.0, text="end")


def bo1(run: Run, **exp):
    v = verdict(run, "BO1", **exp)
    return v.status, v.evidence, v.record_indices


def test_bo1_storm_names_the_attempts_and_cites_each_open():
    assert bo1(attempts([0.0, 0.1, 0.3, 0.7, 0.9])) == (
        "fail",
        f"storm: 5 connection attempts between 0.00 s and 0.90 s (conns 1..5); {TOL_BO1}",
        (0, 3, 6, 9, 12),
    )


def test_bo1_not_judged_without_a_run_of_failed_attempts():
    assert bo1(attempts([0.0])) == (
        "not_judged",
        "no run of two or more failed connection attempts reached the gateway (attempts "
        "against a proxy that is down never do)",
        (),
    )


def live_sessions(count: int, by: str = "client", after: float = 0.05, hello: bool = True,
                  every: float = 10.0) -> Run:
    """``count`` connections that each get READY and are closed ``after`` s later."""
    run = Run()
    for i in range(1, count + 1):
        t = (i - 1) * every
        run.open(i, t)
        if hello:
            run.hello(i, t + 0.25)
        run.identify(i, t + 0.3).ready(i, t + 0.5, f"s{i}")
        run.close(i, t + 0.5 + after, by, 4000)
    return run.rec("note", count * every, text="end")


def test_bo1_a_client_closing_its_live_sessions_is_no_run_of_failed_attempts():
    assert bo1(live_sessions(3))[0] == "not_judged"
    assert bo1(live_sessions(4))[0] == "not_judged"  # four attempts: not more than the limit
    assert bo1(live_sessions(5)) == (
        "pass",
        "5 connection attempts, never more than 4 in 1.0 s; no run of failed attempts; "
        f"{TOL_BO1}",
        (),
    )


def test_bo1_a_session_the_server_ends_within_one_interval_is_a_failed_attempt():
    # A live session the server closes less than one interval (1 s) after READY failed.
    assert bo1(live_sessions(2, by="server", after=0.5))[0] == "pass"
    # Exactly one interval after READY: it did not.
    assert bo1(live_sessions(2, by="server", after=1.0))[0] == "not_judged"
    # Without any HELLO there is no interval: a session the server ends is no failed attempt.
    assert bo1(live_sessions(2, by="server", after=0.5, hello=False))[0] == "not_judged"


def test_bo1_two_failed_attempts_are_a_run_also_before_a_good_session():
    run = attempts([0.0, 1.0], end=3.0)
    healthy_start(run, conn=3, t0=3.0).beats(3, 3.5, 6.0, d=3).rec("note", 6.0, text="end")
    assert bo1(run) == (
        "pass",
        "1 run(s) of failed attempts backed off without a storm (longest: conns 1..2: 2 failed "
        f"attempts from 0.00 s, waits 1.00 s); {TOL_BO1}{TOO_FEW}",
        (),
    )


def test_bo1_counts_every_run_and_names_the_longest():
    run = attempts([0.0, 1.0], end=3.0)
    healthy_start(run, conn=3, t0=3.0).beats(3, 3.5, 6.0, d=3)
    run.close(3, 6.0, "client", 4000)
    for i, t in enumerate([7.0, 8.0, 10.0], start=4):
        run.open(i, t, "resume").hello(i, t + 0.001).close(i, t + 0.002, "network", None, "reset")
    run.rec("note", 12.0, text="end")
    assert bo1(run) == (
        "pass",
        "2 run(s) of failed attempts backed off without a storm (longest: conns 4..6: 3 failed "
        f"attempts from 7.00 s, waits 1.00, 2.00 s); {TOL_BO1}{TOO_FEW}",
        (),
    )


def test_bo1_names_at_most_eight_waits_of_the_longest_run():
    waits = [0.5, 1.1, 2.0, 4.5, 8.0, 17.0, 30.0, 65.0, 100.0]
    assert bo1(waits_run(waits)) == (
        "pass",
        "1 run(s) of failed attempts backed off without a storm (longest: conns 1..10: 10 "
        "failed attempts from 0.00 s, waits 0.50, 1.10, 2.00, 4.50, 8.00, 17.00, 30.00, 65.00 "
        f"s); {TOL_BO1}",
        (),
    )


@pytest.mark.parametrize(
    "waits",
    [
        [1.0, 0.0, 2.0, 2.5],  # a zero wait has no ratio
        [15.0, 30.0, 60.0, 120.0],  # exact ratios, but at the cap: no jitter needed
    ],
)
def test_bo1_backoff_edges_that_pass(waits):
    v = verdict(waits_run(waits), "BO1")
    assert v.status == "pass", v.evidence


def test_bo1_no_backoff_names_eight_waits_and_the_six_that_step_by_one_amount():
    assert bo1(waits_run([1.0] * 8)) == (
        "fail",
        "no backoff: 9 failed attempts from 0.00 s with waits 1.00, 1.00, 1.00, 1.00, 1.00, "
        "1.00, 1.00, 1.00 s; waits 1-6 (1.00, 1.00, 1.00, 1.00, 1.00, 1.00 s) step by one fixed "
        "amount (+0.00 s), below 2 s (+1 more); "
        f"{TOL_BO1}",
        tuple(range(0, 18, 2)),
    )


def test_bo1_no_jitter_names_the_first_six_waits():
    assert bo1(waits_run([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]))[:2] == (
        "fail",
        "no jitter: waits 1.000, 2.000, 4.000, 8.000, 16.000, 32.000 s follow one exact ratio; "
        f"{TOL_BO1}",
    )


def test_bo1_within_the_resume_budget_without_failed_attempts():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3).resumed(2, 2.7)
    run.beats(2, 3.0, 5.0, d=4).rec("note", 5.0, text="end")
    assert bo1(run, max_resumes=1) == (
        "pass",
        "1 RESUME(s), within the 1 allowed; no run of failed attempts reached the gateway",
        (),
    )


# BO2 ------------------------------------------------------------------------------------------


def identifies(specs: list[tuple[float, list[int] | None]]) -> Run:
    run = Run()
    for i, (t, shard) in enumerate(specs, start=1):
        run.open(i, t).hello(i, t + 0.01).identify(i, t + 0.05, shard=shard)
    return run.rec("note", 20.0, text="end")


def bo2(run: Run, **exp):
    v = verdict(run, "BO2", **exp)
    return v.status, v.evidence, v.record_indices


def test_bo2_not_judged_without_identify():
    run = Run().open(1, 0.0).hello(1, 0.01).rec("note", 5.0, text="end")
    assert bo2(run) == ("not_judged", "the client sent no IDENTIFY", ())


@pytest.mark.parametrize(
    ("specs", "mc", "bucket"),
    [
        ([(0.0, [1, 2]), (0.5, [3, 2])], 2, 1),  # shard 1 and 3 share bucket 1
        ([(0.0, None), (0.5, None)], 2, 0),  # no shard: shard 0
        ([(0.0, []), (0.5, [])], 2, 0),  # an empty shard too
        ([(0.0, [0, 2]), (0.5, [1, 2])], 1, 0),  # max_concurrency 1: one bucket
    ],
)
def test_bo2_names_the_bucket_of_two_identifies_too_close(specs, mc, bucket):
    assert bo2(identifies(specs), max_concurrency=mc) == (
        "fail",
        f"bucket {bucket}: IDENTIFYs at 0.05 s and 0.55 s, 0.50 s apart (window 5.0 s); "
        f"max_concurrency={mc}, tolerance identify_window=5.0 s",
        (2, 5),
    )


def test_bo2_identifies_in_different_buckets_may_come_together():
    assert bo2(identifies([(0.0, [0, 2]), (0.5, [1, 2])]), max_concurrency=2) == (
        "pass",
        "2 IDENTIFY(s), none too close in its bucket, none over budget; max_concurrency=2, "
        "tolerance identify_window=5.0 s",
        (2,),
    )


@pytest.mark.parametrize(("later", "status"), [(3.0, "fail"), (4.5, "fail"), (5.0, "pass")])
def test_bo2_identifies_exactly_one_window_apart_pass(later, status):
    assert bo2(identifies([(3.0, None), (3.0 + later, None)]))[0] == status


def budget_run(remaining: int) -> Run:
    run = Run().open(1, 0.0).hello(1, 0.01)
    run.rec("identify_budget", 0.02, remaining=remaining, total=1000, bucket=0)
    return run.identify(1, 0.05).rec("note", 3.0, text="end")


def test_bo2_an_identify_with_the_start_budget_spent_fails():
    assert bo2(budget_run(1)) == (
        "pass",
        f"1 IDENTIFY(s), none too close in its bucket, none over budget; {TOL_BO2}",
        (3,),
    )
    assert bo2(budget_run(0)) == (
        "fail",
        f"IDENTIFY at 0.05 s with the session start budget at 0; {TOL_BO2}",
        (2, 3),
    )


def test_bo2_holds_the_client_to_the_scenarios_identify_count():
    run = identifies([(0.0, None), (5.0, None), (10.0, None)])
    assert bo2(run, max_identifies=2) == (
        "fail",
        f"3 IDENTIFYs (the scenario allows 2); IDENTIFY #3 at 10.05 s; {TOL_BO2}, "
        "max_identifies=2",
        (8,),
    )
    assert bo2(run, max_identifies=3) == (
        "pass",
        f"3 IDENTIFY(s), none too close in its bucket, none over budget; {TOL_BO2}, "
        "max_identifies=3",
        (2,),
    )


# RL1 ------------------------------------------------------------------------------------------


def rl1(run: Run):
    v = verdict(run, "RL1")
    return v.status, v.evidence, v.record_indices


def test_rl1_not_judged_without_client_frames():
    run = Run().open(1, 0.0).hello(1, 0.01).rec("note", 3.0, text="end")
    assert rl1(run) == ("not_judged", "the client sent no frames", ())


def test_rl1_counts_every_connections_frames_and_names_the_busiest_window():
    run = healthy_start().beats(1, 0.5, 3.0, d=3)
    run.open(2, 3.0).hello(2, 3.01).beat(2, 3.5, 3).rec("note", 5.0, text="end")
    assert rl1(run) == (
        "pass",
        f"5 client frame(s); busiest window held 4; {TOL_RL1}",
        (),
    )


def test_rl1_cites_the_first_and_last_frame_of_a_flood():
    run = Run().open(1, 0.0).hello(1, 0.0)
    for i in range(121):
        run.beat(1, round(0.5 + i * 0.25, 6), None, ack=False)
    run.rec("note", 70.0, text="end")
    assert rl1(run) == (
        "fail",
        f"conn 1: 121 client frames in 60 s from 0.50 s; {TOL_RL1}",
        (2, 122),
    )


def test_rl1_a_bad_frame_over_the_payload_limit_fails_and_one_at_it_does_not():
    run = Run().open(1, 0.0).hello(1, 0.01)
    run.rec("frame_bad", 0.5, conn=1, size=4096, reason="at the limit")
    run.rec("frame_bad", 0.6, conn=1, size=4097, reason="too big").rec("note", 3.0, text="end")
    assert rl1(run) == (
        "fail",
        f"conn 1: a 4097-byte frame at 0.60 s (too big); {TOL_RL1}",
        (3,),
    )


def test_rl1_names_a_big_client_frame_once():
    run = Run().open(1, 0.0).hello(1, 0.01)
    run.rec("frame_in", 0.5, conn=1, op=2, size=5000).rec("note", 3.0, text="end")
    assert rl1(run) == ("fail", f"conn 1: op 2 at 0.50 s is 5000 bytes; {TOL_RL1}", (2,))
