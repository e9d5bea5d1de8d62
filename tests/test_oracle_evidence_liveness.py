"""LV1 as a report prints it: every verdict's status, whole evidence text and record indices,
for each outcome class and each way a run can end (nox -s mutation -- oracle found these
unpinned)."""

from __future__ import annotations

import pytest
from test_oracle import verdict
from test_oracle_traces import Run, healthy_start

from harness.oracle.liveness import lv1_judged_by
from harness.oracle.model import Expectations
from harness.oracle.view import RunView

LAG = {"target": "both", "type": "latency"}
NO_FAULTS = "no faults: judged from the start of the run"
CLEARED = "the last fault ('reset') switched off at 3.00 s"
TOL = "tolerance heartbeat_slack=0.25"


def lv1(run: Run, **exp):
    v = verdict(run, "LV1", **exp)
    return v.status, v.evidence, v.record_indices


def fatal_close(*later: float, fault: str | None = None) -> Run:
    """A session on conn 1 that the server closes with 4014 at 1.0 s; connections opened at the
    ``later`` times; ``fault``: "cleared" (a toxic 0.5-1.5 s) or "never" (a proxy down from
    0.5 s)."""
    run = healthy_start()
    if fault == "cleared":
        run.fault("f", 0.5, "on", **LAG)
    elif fault == "never":
        run.fault("f", 0.5, "on", kind="proxy", target="both")
    run.close(1, 1.0, "server", 4014)
    if fault == "cleared":
        run.fault("f", 1.5, "off", **LAG)
    for n, t in enumerate(later, start=2):
        run.open(n, t)
    return run.rec("note", 5.0, text="end")


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (fatal_close(), "pass",
         f"expected the client to stop: {NO_FAULTS}; no connection after it", ()),
        (fatal_close(2.0), "fail",
         f"expected the client to stop; {NO_FAULTS}, but conn 2 opened at 2.00 s", (7,)),
        # A connection opened while the fault was still on is not held against it.
        (fatal_close(1.2, 2.0, fault="cleared"), "fail",
         "expected the client to stop; the last fault ('f') switched off at 1.50 s, but conn 3 "
         "opened at 2.00 s", (10,)),
        (fatal_close(1.2, fault="never"), "fail",
         "expected the client to stop; fault 'f' switched on at 0.50 s never switched off, but "
         "conn 2 opened at 1.20 s", (8,)),
        (healthy_start().beats(1, 0.5, 3.0, d=3).rec("note", 3.0, text="end"), "not_judged",
         "expected the client to stop, but no fatal close happened", ()),
        (Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).rec("note", 5.0, text="end"),
         "fail", "expected a fatal close and then silence, but the client never got a session "
         "(no READY or RESUMED), so the fatal close never came", ()),
    ],
)
def test_lv1_when_the_client_is_expected_to_stop(run, status, evidence, indices):
    assert lv1(run, outcome="stop") == (status, evidence, indices)


def lost_and_back(back_at: float = 3.5, end: float = 12.0, new_session: bool = False) -> Run:
    """Conn 1 is reset at 2.0 s under a fault that clears at 3.0 s; conn 2 RESUMEs (or, with
    ``new_session``, IDENTIFYs) at ``back_at`` and beats every second after."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("reset", 2.0, "on", target="both").close(1, 2.0, "network", None, how="reset")
    run.fault("reset", 3.0, "off").open(2, back_at, "resume").hello(2, back_at + 0.01)
    if new_session:
        run.identify(2, back_at + 0.05).ready(2, back_at + 0.1, "sess-b")
    else:
        run.resume(2, back_at + 0.05, "sess-a", 3).resumed(2, back_at + 0.1)
    return run.beats(2, back_at + 0.5, end, d=4).rec("note", end, text="end")


BACK = f"{CLEARED}; conn 2 got {{}} at 3.60 s (0.60 s later, bound 10.0 s); 8 ACKed heartbeat(s) "
BACK += "after it, last at 11.00 s"


@pytest.mark.parametrize(
    ("new_session", "outcome", "status", "evidence", "indices"),
    [
        (False, None, "pass", BACK.format("RESUMED") + f"; {TOL}", (12, 16, 31)),
        (False, "resume", "pass",
         BACK.format("RESUMED") + f"; outcome resume as expected; {TOL}", (12, 16, 31)),
        (True, "reidentify", "pass",
         BACK.format("READY") + f"; outcome reidentify as expected; {TOL}", (12, 16, 31)),
        (True, "resume", "fail",
         "expected the client to resume; conn 2 got READY at 3.60 s, but it started 2 sessions "
         "(a new READY at 3.60 s)", (12, 16)),
        (False, "reidentify", "fail",
         "expected the client to start a new session; conn 2 got RESUMED at 3.60 s, still on "
         "the first session 'sess-a'", (12, 16)),
    ],
)
def test_lv1_checks_which_session_the_client_ends_on(new_session, outcome, status, evidence,
                                                     indices):
    assert lv1(lost_and_back(new_session=new_session), outcome=outcome) == (
        status, evidence, indices)


def test_lv1_with_a_short_bound_and_one_acked_beat():
    assert lv1(lost_and_back(end=4.5), recovery_bound=5.0) == (
        "pass",
        f"{CLEARED}; conn 2 got RESUMED at 3.60 s (0.60 s later, bound 5.0 s); 1 ACKed "
        f"heartbeat(s) after it, last at 4.00 s; {TOL}",
        (12, 16, 17),
    )


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (healthy_start().beats(1, 0.5, 6.0, d=3).rec("note", 6.0, text="end"), "pass",
         f"{NO_FAULTS}; conn 1 got READY at 0.10 s (0.10 s later, bound 10.0 s); 6 ACKed "
         f"heartbeat(s) after it, last at 5.50 s; {TOL}", (3, 16)),
        (healthy_start().beats(1, 0.5, 3.0, d=3).rec("note", 8.0, text="end"), "fail",
         f"{NO_FAULTS}; conn 1 got READY at 0.10 s, but its heartbeats stopped at 2.50 s (5.50 s "
         "before the end; interval 1.00 s)", (3, 10)),
        (healthy_start().beats(1, 0.5, 3.0, d=3, ack=False).rec("note", 8.0, text="end"), "fail",
         f"{NO_FAULTS}; conn 1 got READY at 0.10 s but no ACKed heartbeat followed on it "
         "(heartbeats have stopped; still open)", (3,)),
        (healthy_start().rec("note", 1.0, text="end"), "not_judged",
         f"{NO_FAULTS}; conn 1 got READY at 0.10 s, but the run ends before a heartbeat was due",
         ()),
    ],
)
def test_lv1_a_live_session_must_keep_its_heartbeats_acked(run, status, evidence, indices):
    assert lv1(run) == (status, evidence, indices)


def test_lv1_a_session_is_live_at_resumed_not_at_the_events_replayed_before_it():
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("reset", 2.0, "on", target="both").close(1, 2.0, "network", None, how="reset")
    run.fault("reset", 3.0, "off").open(2, 3.5, "resume").hello(2, 3.51)
    run.resume(2, 3.55, "sess-a", 2).dispatch(2, 3.57).resumed(2, 3.6)
    assert lv1(run.beats(2, 4.0, 8.0, d=4).rec("note", 8.0, text="end")) == (
        "pass",
        f"{CLEARED}; conn 2 got RESUMED at 3.60 s (0.60 s later, bound 10.0 s); 4 ACKed "
        f"heartbeat(s) after it, last at 7.00 s; {TOL}",
        (12, 17, 24),
    )


# The backoff allowance through a proxy outage: the seconds both URLs were down ---------------


def outage(*windows: tuple[str, float, float, str, str], reset_at: float | None = None) -> Run:
    """Live on conn 1 until the network ends it at 0.523 s; proxy ``windows`` (name, on, off,
    target, action) in trace order; the client never live again (``reset_at``: an attempt then,
    reset at once); the run ends at 30 s."""
    events: list[tuple[float, int, tuple]] = [(0.523, 0, ("close",))]
    for n, (name, on, off, target, action) in enumerate(windows, start=1):
        events += [(on, n, (name, "on", target, action)), (off, n, (name, "off", target, action))]
    if reset_at is not None:
        events.append((reset_at, 99, ("reset",)))
    run = healthy_start().beats(1, 0.5, 0.5, d=3)
    for ts, _, what in sorted(events):
        if what[0] == "close":
            run.close(1, ts, "network", None, how="eof")
        elif what[0] == "reset":
            run.open(2, ts, "resume").close(2, ts + 0.001, "network", None, how="reset")
        else:
            name, state, target, action = what
            run.fault(name, ts, state, kind="proxy", action=action, target=target)
    return run.rec("note", 30.0, text="end")


def never_back(cleared: str, name: str, by: str, allowance: str) -> str:
    return (
        f"the last fault ({name!r}) switched off at {cleared} s; no live session (READY/RESUMED "
        f"sent, connection open) by {by} s (bound 3.0 s{allowance}); it never became live again"
    )


def down_for(down: float) -> str:
    return (
        f" + {4 * down:.2f} s backoff allowance: 2 x 2 x the {down:.2f} s both URLs were down "
        "since conn 1's end at 0.52 s, the client's backoff through the outage, cap 120 s"
    )


@pytest.mark.parametrize(
    ("windows", "cleared", "name", "down", "clear_idx"),
    [
        # each URL down on its own: only the overlap (1.00-2.52 s) kept every attempt out
        ([("d", 0.52, 2.52, "discovery", "down"), ("r", 1.0, 3.0, "resume", "down")],
         "3.00", "r", 1.52, 10),
        # a down window before the loss, one aimed at "all" that ends before the clear, a
        # latency (not down) window between, then both down again: 0.98 + 1.00 s
        ([("early", 0.2, 0.3, "both", "down"), ("all", 0.52, 1.5, "all", "down"),
          ("slow", 1.6, 1.8, "both", "latency"), ("both", 2.0, 3.0, "both", "down")],
         "3.00", "both", 1.977, 14),
        # a later outage: only its 3 s count (each span judged at its midpoint)
        ([("late", 6.0, 9.0, "both", "down")], "9.00", "late", 3.0, 8),
    ],
)
def test_lv1_allowance_counts_only_the_time_both_urls_were_down(windows, cleared, name, down,
                                                                clear_idx):
    by = float(cleared) + 3.0 + 4 * down
    assert lv1(outage(*windows), outcome="resume", recovery_bound=3.0) == (
        "fail", never_back(cleared, name, f"{by:.2f}", down_for(down)), (clear_idx,),
    )


def test_lv1_allowance_runs_until_the_first_attempt_after_the_clear_not_one_at_it():
    down = [("d", 0.52, 2.52, "both", "down")]
    after = (
        "it never became live again; 1 connection(s) after it; the last, conn 2 (resume): closed "
        "by network at {} s with no code (reset)"
    )
    # An attempt at the very instant of the clear was made while the proxy was down: a wait
    # of the backoff, not its end.
    assert lv1(outage(*down, reset_at=2.52), outcome="resume", recovery_bound=3.0) == (
        "fail",
        "the last fault ('d') switched off at 2.52 s; no live session (READY/RESUMED sent, "
        "connection open) by 13.51 s (bound 3.0 s + 7.99 s backoff allowance: the client's wait "
        "of 2.00 s from conn 1's end at 0.52 s to conn 2 at 2.52 s x 2 (a random wait is about "
        "half its ceiling) x 2^1 (a step per failed attempt since), cap 120 s); "
        + after.format("2.52"),
        (8, 10),
    )
    run = outage(*down, reset_at=4.0)
    assert lv1(run, outcome="resume", recovery_bound=3.0) == (
        "fail",
        "the last fault ('d') switched off at 2.52 s; no live session (READY/RESUMED sent, "
        "connection open) by 7.00 s (bound 3.0 s + 1.48 s (until its first attempt after the "
        "clear) of a 7.99 s backoff allowance: 2 x 2 x the 2.00 s both URLs were down since "
        "conn 1's end at 0.52 s, the client's backoff through the outage, cap 120 s); "
        + after.format("4.00"),
        (8, 10),
    )
    # The runner keeps the run going until then; a client expected to stop sets no such time.
    assert lv1_judged_by(RunView(run.records), Expectations(outcome="resume",
                                                            recovery_bound=3.0)) == 7.0
    assert lv1_judged_by(RunView(run.records), Expectations(outcome="stop")) is None


def silent_then_closed(after: float) -> Run:
    """A first attempt reset before HELLO; conn 2 live at 0.60 s sends no heartbeat and the
    server closes it ``after`` s later; conn 3 live at 1.10 s + ``after`` heartbeats on."""
    run = Run().open(1, 0.0).hello(1, 0.01).close(1, 0.4, "network", None, how="reset")
    healthy_start(run, conn=2, t0=0.5).close(2, 0.6 + after, "server", 4000)
    t = 0.6 + after + 0.5
    healthy_start(run, conn=3, t0=t, session_id="sess-b").beats(3, t + 0.5, t + 6.0, d=3)
    return run.rec("note", t + 6.0, text="end")


def test_lv1_a_session_silent_until_closed_fails_only_past_one_interval_and_its_slack():
    # 1 s of silence is within one 1 s interval + 25 %: the next session counts.
    assert lv1(silent_then_closed(1.0), recovery_bound=3.0) == (
        "pass",
        f"{NO_FAULTS}; conn 3 got READY at 2.20 s (2.20 s later, bound 3.0 s); 6 ACKed "
        f"heartbeat(s) after it, last at 7.60 s; {TOL}",
        (13, 26),
    )
    assert lv1(silent_then_closed(2.0), recovery_bound=3.0) == (
        "fail",
        f"{NO_FAULTS}; conn 2 got READY at 0.60 s but sent no heartbeat until it was closed by "
        "server at 2.60 s with code 4000 (close_frame)",
        (6, 9),
    )


def attempts_and_faults(extra: list[tuple[float, float]],
                        windows: list[tuple[str, float, float, str, str]],
                        end: float = 30.0) -> Run:
    """conn 1 live from 0.10 s until the network ends it at 0.523 s; ``extra`` attempts (open,
    close) as conns 2.. on the resume URL, each reset; proxy ``windows`` (name, on, off, target,
    action); never live again; the run ends at ``end``."""
    events: list[tuple[float, int, tuple]] = [(0.523, 0, ("close", 1))]
    for n, (opened, closed) in enumerate(extra, start=2):
        events += [(opened, 1, ("open", n)), (closed, 1, ("reset", n))]
    for name, on, off, target, action in windows:
        events += [(on, 2, ("fault", name, "on", target, action)),
                   (off, 2, ("fault", name, "off", target, action))]
    run = healthy_start()
    for ts, _, what in sorted(events):
        if what[0] == "close":
            run.close(1, ts, "network", None, how="eof")
        elif what[0] == "open":
            run.open(what[1], ts, "resume")
        elif what[0] == "reset":
            run.close(what[1], ts, "network", None, how="reset")
        else:
            run.fault(what[1], ts, what[2], kind="proxy", action=what[4], target=what[3])
    return run.rec("note", end, text="end")


def ceiling_of(wait: str, before: str, to: str, at: str, steps: int) -> str:
    return (f"the client's wait of {wait} s from conn {before}'s end at {at} s to conn {to} s x 2 "
            f"(a random wait is about half its ceiling) x 2^{steps} (a step per failed attempt "
            "since), cap 120 s")


@pytest.mark.parametrize(
    ("extra", "windows", "evidence"),
    [
        # an attempt that opened and ended while conn 1 was still up: the backoff runs from
        # the last connection to end (conn 1), not the last to open
        ([(0.3, 0.35)], [("d", 0.2, 3.0, "both", "down")],
         "the last fault ('d') switched off at 3.00 s; no live session (READY/RESUMED sent, "
         "connection open) by 15.91 s (bound 3.0 s + 9.91 s backoff allowance: 2 x 2 x the "
         "2.48 s both URLs were down since conn 1's end at 0.52 s, the client's backoff through "
         "the outage, cap 120 s); it never became live again"),
        # three failed attempts after the longest wait: a doubling each (2^3)
        ([(3.6, 3.61), (3.71, 3.72), (3.82, 3.83)], [("r", 0.5, 4.0, "both", "reset")],
         "the last fault ('r') switched off at 4.00 s; no live session (READY/RESUMED sent, "
         "connection open) by 30.00 s (bound 3.0 s + 49.23 s backoff allowance: "
         + ceiling_of("3.08", "1", "2 at 3.60", "0.52", 3)
         + "); the run ended at 30.00 s, before the allowance ran out at 56.23 s; it never "
         "became live again"),
        # the outage (4 x 1.00 s) outweighs the wait that showed (0.80 s: 3.20 s)
        ([(1.32, 1.33)], [("d", 1.33, 2.33, "both", "down")],
         "the last fault ('d') switched off at 2.33 s; no live session (READY/RESUMED sent, "
         "connection open) by 9.33 s (bound 3.0 s + 4.00 s backoff allowance: 2 x 2 x the "
         "1.00 s both URLs were down since conn 2's end at 1.33 s, the client's backoff through "
         "the outage, cap 120 s); it never became live again"),
        # an allowance under a second is still an allowance
        ([(0.723, 0.724)], [("r", 0.5, 1.0, "both", "reset")],
         "the last fault ('r') switched off at 1.00 s; no live session (READY/RESUMED sent, "
         "connection open) by 4.80 s (bound 3.0 s + 0.80 s backoff allowance: "
         + ceiling_of("0.20", "1", "2 at 0.72", "0.52", 1) + "); it never became live again"),
    ],
)
def test_lv1_allowance_picks_the_largest_ceiling_the_trace_shows(extra, windows, evidence):
    status, text, _ = lv1(attempts_and_faults(extra, windows), recovery_bound=3.0)
    assert (status, text) == ("fail", evidence)


def test_lv1_of_two_faults_switched_off_at_once_names_the_later_record():
    run = healthy_start().fault("a", 0.5, "on", **LAG).fault("b", 0.6, "on", **LAG)
    run.fault("a", 1.0, "off", **LAG).fault("b", 1.0, "off", **LAG).beats(1, 0.5, 6.0, d=3)
    assert lv1(run.rec("note", 6.0, text="end"), recovery_bound=3.0) == (
        "pass",
        "the last fault ('b') switched off at 1.00 s; conn 1 got READY at 0.10 s and stayed up "
        f"through it; 6 ACKed heartbeat(s) after it, last at 5.50 s; {TOL}",
        (3, 9, 20),
    )


def test_lv1_says_when_the_run_ended_before_the_allowance_ran_out():
    run = attempts_and_faults([(1.32, 1.33)], [("d", 1.33, 2.33, "both", "down")], end=6.0)
    assert lv1(run, recovery_bound=3.0) == (
        "fail",
        "the last fault ('d') switched off at 2.33 s; no live session (READY/RESUMED sent, "
        "connection open) by 6.00 s (bound 3.0 s + 4.00 s backoff allowance: 2 x 2 x the 1.00 s "
        "both URLs were down since conn 2's end at 1.33 s, the client's backoff through the "
        "outage, cap 120 s); the run ended at 6.00 s, before the allowance ran out at 9.33 s; it "
        "never became live again",
        (10,),
    )


@pytest.mark.parametrize(
    ("close", "before"), [(True, "4.40 s before its close"), (False, "4.50 s before the end")]
)
def test_lv1_heartbeats_that_stop_are_timed_to_the_close_or_the_end(close, before):
    run = healthy_start().beats(1, 0.5, 3.0, d=3)
    if close:
        run.close(1, 6.9, "client", 1000)
    assert lv1(run.rec("note", 7.0, text="end"), recovery_bound=3.0) == (
        "fail",
        f"{NO_FAULTS}; conn 1 got READY at 0.10 s, but its heartbeats stopped at 2.50 s "
        f"({before}; interval 1.00 s)",
        (3, 10),
    )


def test_lv1_stop_does_not_count_a_reconnect_before_the_fatal_close():
    run = Run().open(1, 0.0).hello(1, 0.01).close(1, 0.3, "network", None, how="reset")
    healthy_start(run, conn=2, t0=0.5).close(2, 0.8, "server", 4004)
    assert lv1(run.rec("note", 5.0, text="end"), outcome="stop") == (
        "pass", f"expected the client to stop: {NO_FAULTS}; no connection after it", ()
    )


def test_lv1_judges_a_client_that_looped_through_two_thousand_attempts():
    # 2**2000 overflows a float: the allowance saturates at the cap instead of the judging
    # crashing (disnake 2.12.2 made 14,139 attempts in a 15 s outage of resets).
    run = healthy_start().beats(1, 0.5, 0.5, d=3)
    run.fault("t", 0.5, "on", target="both", type="reset_peer")
    run.close(1, 0.523, "network", None, how="reset")
    for n in range(2, 2002):
        t = 0.53 + (n - 2) * 0.0075
        run.open(n, t, "resume").close(n, t + 0.0005, "network", None, how="reset")
    run.fault("t", 16.0, "off", target="both", type="reset_peer")
    run.rec("note", 30.0, text="end")
    status, evidence, _ = lv1(run, outcome="resume", recovery_bound=3.0)
    assert status == "fail"
    assert ("no live session (READY/RESUMED sent, connection open) by 30.00 s (bound 3.0 s + "
            "120.00 s backoff allowance: the client's wait of ") in evidence
    assert "x 2^2000 (a step per failed attempt since), cap 120 s)" in evidence
