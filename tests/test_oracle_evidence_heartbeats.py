"""HB1 and HB4 as a report prints them: every verdict's status, whole evidence text and record
indices, on crafted traces at the rules' edges (nox -s mutation -- oracle found these
unpinned)."""

from __future__ import annotations

import pytest
from test_oracle import verdict
from test_oracle_traces import Run, healthy_start

TOL_HB1 = "tolerance heartbeat_slack=0.25"
TOL_HB4 = "tolerance op1_reply_within=1.0 s"


def judged(run: Run, inv: str, **exp):
    v = verdict(run, inv, **exp)
    return v.status, v.evidence, v.record_indices


def hello_at_half(first_beat: float | None = None, close_at: float | None = None,
                  conn2: bool = False) -> Run:
    """Conn 1 gets HELLO (1 s) at 0.5 s, so its first beat is due by 1.75 s; conn 2 (optional)
    beats on time."""
    run = Run().open(1, 0.0).hello(1, 0.5)
    if first_beat is not None:
        run.beat(1, first_beat, None)
    if close_at is not None:
        run.close(1, close_at, "server", 4000)
    if conn2:
        run.open(2, 3.0).hello(2, 3.01).beat(2, 3.5, None)
    return run.rec("note", 5.0, text="end")


def test_hb1_a_first_beat_exactly_at_the_bound_passes_and_every_connection_counts():
    assert judged(hello_at_half(1.75, conn2=True), "HB1") == (
        "pass",
        f"2 connection(s): first heartbeat after HELLO within interval x 1.25; {TOL_HB1}",
        (1, 2),
    )


def test_hb1_a_late_first_beat_names_its_delay_after_hello():
    assert judged(hello_at_half(2.0), "HB1") == (
        "fail",
        f"conn 1: first heartbeat at 2.00 s, 1.50 s after HELLO at 0.50 s "
        f"(bound 1.25 s); {TOL_HB1}",
        (1, 2),
    )


def test_hb1_a_connection_open_exactly_until_the_bound_without_a_beat_fails():
    assert judged(hello_at_half(close_at=1.75), "HB1") == (
        "fail",
        "conn 1: no heartbeat in the 1.25 s after HELLO at 0.50 s (bound 1.25 s; closed by server "
        f"at 1.75 s with code 4000 (close_frame)); {TOL_HB1}",
        (1, 2),
    )
    assert judged(hello_at_half(close_at=1.7), "HB1") == (
        "not_judged", "no connection lived long enough after HELLO to need a heartbeat", ())


def test_hb1_names_the_first_early_beat_of_each_connection():
    run = Run().open(1, 0.0).beat(1, 0.2, None).beat(1, 0.4, None).hello(1, 0.5)
    run.open(2, 1.0).beat(2, 1.1, None).hello(2, 1.2).rec("note", 3.0, text="end")
    assert judged(run, "HB1") == (
        "fail", f"conn 1: op 1 at 0.20 s before HELLO at 0.50 s (+1 more); {TOL_HB1}", (1, 5))
    run = Run().open(1, 0.0).beat(1, 0.2, None).beat(1, 0.4, None).rec("note", 3.0, text="end")
    assert judged(run, "HB1") == (
        "fail", f"conn 1: op 1 at 0.20 s but HELLO was never sent; {TOL_HB1}", (1,))


def test_hb1_skips_a_connection_whose_hello_has_no_interval():
    run = Run().open(1, 0.0)
    run.rec("frame_out", 0.01, conn=1, op=10, s=None, t=None, size=40, compressed=False)
    run.beat(1, 5.0, None).open(2, 1.0).hello(2, 1.0).beat(2, 3.0, None)
    assert judged(run.rec("note", 6.0, text="end"), "HB1") == (
        "fail",
        f"conn 2: first heartbeat at 3.00 s, 2.00 s after HELLO at 1.00 s "
        f"(bound 1.25 s); {TOL_HB1}",
        (5, 6),
    )


def test_hb1_a_silent_connection_names_the_missed_ack_before_it():
    run = Run().open(1, 0.0).hello(1, 0.01).beat(1, 0.5, None, ack=False)
    run.close(1, 1.5, "client", 4000).open(2, 2.0).hello(2, 2.01).close(2, 4.0, "server", 4000)
    assert judged(run.rec("note", 6.0, text="end"), "HB1") == (
        "fail",
        "conn 2: no heartbeat in the 1.99 s after HELLO at 2.01 s (bound 1.25 s; closed by server "
        "at 4.00 s with code 4000 (close_frame)); before it, the heartbeat at 0.50 s on conn 1 "
        f"got no ACK; {TOL_HB1}",
        (2, 5, 6),
    )


# HB4 ------------------------------------------------------------------------------------------


def op1_run(replies: list[tuple[float, float | None]], close_at: float | None = None,
            fault: bool = False) -> Run:
    """A session on conn 1 (a beat at 0.5 s); a server op 1 at each request time, answered by a
    beat at the reply time (None: not answered)."""
    run = healthy_start().beats(1, 0.5, 1.0, d=3)
    if fault:
        run.fault("lag", 0.9, "on", target="both", type="latency")
        run.fault("lag", 1.5, "off", target="both", type="latency")
    for req, rep in replies:
        run.server_op(1, req, 1)
        if rep is not None:
            run.beat(1, rep, 3)
    if close_at is not None:
        run.close(1, close_at, "server", 4000)
    return run.rec("note", 6.0, text="end")


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (op1_run([(1.0, 1.2), (2.0, 2.5)]), "pass",
         f"2 server op 1 answered within 1.0 s; {TOL_HB4}", (8, 9)),
        (op1_run([(1.0, 2.0)]), "pass", f"1 server op 1 answered within 1.0 s; {TOL_HB4}", (8, 9)),
        (op1_run([(1.0, 2.5)]), "fail",
         f"conn 1: server op 1 at 1.00 s, next op 1 at 2.50 s; {TOL_HB4}", (8, 9)),
        (op1_run([(1.0, None)]), "fail",
         "conn 1: server op 1 at 1.00 s, no op 1 by the end of the run at 6.00 s (still open); "
         f"{TOL_HB4}", (8,)),
        (op1_run([(1.0, None), (3.0, None)]), "fail",
         "conn 1: server op 1 at 1.00 s, no op 1 by the end of the run at 6.00 s (still open) "
         f"(+1 more); {TOL_HB4}", (8,)),
        (op1_run([(1.0, None)], close_at=2.0), "fail",
         "conn 1: server op 1 at 1.00 s, no op 1 before the connection was closed by server at "
         "2.00 s with code 4000 "
         f"(close_frame); {TOL_HB4}", (8,)),
        (op1_run([(1.0, None)], close_at=1.5), "not_judged",
         "every server op 1 fell in a fault window or at the end", ()),
        (op1_run([(1.0, None)], fault=True), "not_judged",
         "every server op 1 fell in a fault window or at the end", ()),
        # one op 1 in a fault window does not excuse the next
        (op1_run([(1.0, None), (3.0, None)], fault=True), "fail",
         "conn 1: server op 1 at 3.00 s, no op 1 by the end of the run at 6.00 s (still open); "
         f"{TOL_HB4}", (11,)),
        (healthy_start().rec("note", 3.0, text="end"), "not_judged",
         "no server op 1 in the trace", ()),
    ],
)
def test_hb4_evidence(run, status, evidence, indices):
    assert judged(run, "HB4") == (status, evidence, indices)


# HB2 ------------------------------------------------------------------------------------------

FAULTS_HB2 = "gap(s) overlapping a fault window not judged"


def beats_on_one(beats: list[float], close_at: float | None = None, end: float = 6.0,
                 faults: tuple[tuple[float, float, dict], ...] = (), interval_ms: int = 1000
                 ) -> Run:
    run = Run().open(1, 0.0).hello(1, 0.01, interval_ms=interval_ms)
    for i, (on, off, params) in enumerate(faults):
        run.fault(f"f{i}", on, "on", **params).fault(f"f{i}", off, "off", **params)
    for t in beats:
        run.beat(1, t, None)
    if close_at is not None:
        run.close(1, close_at, "client", 4000)
    return run.rec("note", end, text="end")


LAG = {"target": "both", "type": "latency"}
LAG_ON_CONN_2 = {"target": "both", "type": "latency", "only_connection": 2}


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (beats_on_one([0.5, 1.75, 2.5, 3.0], close_at=4.0), "pass",
         "4 gap(s) judged, longest 1.25 x interval (conn 1 0.50 s .. 1.75 s); "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (2, 4)),
        # Equal gaps: the first is named.
        (beats_on_one([0.5, 1.5, 2.5], end=3.5), "pass",
         "3 gap(s) judged, longest 1.00 x interval (conn 1 0.50 s .. 1.50 s); "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (2, 4)),
        # A 2 s interval: the ratio is the gap over it.
        (beats_on_one([0.5, 2.5, 5.0], end=6.0, interval_ms=2000), "pass",
         "3 gap(s) judged, longest 1.25 x interval (conn 1 2.50 s .. 5.00 s); "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (4, 6)),
        (beats_on_one([0.5, 1.8, 2.5], close_at=3.0), "fail",
         "conn 1: 1.30 s between heartbeats (0.50 s .. 1.80 s), bound 1.25 s; "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (2, 4)),
        (beats_on_one([0.5], close_at=2.0), "fail",
         "conn 1: 1.50 s between last heartbeat and the close (0.50 s .. 2.00 s), bound 1.25 s; "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (2, 4)),
        (beats_on_one([0.5, 1.5, 2.5]), "fail",
         "conn 1: 3.50 s between last heartbeat and the end of the trace (2.50 s .. 6.00 s), "
         f"bound 1.25 s; tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (6,)),
        (beats_on_one([0.5, 3.0, 6.0], end=6.5), "fail",
         "conn 1: 2.50 s between heartbeats (0.50 s .. 3.00 s), bound 1.25 s (+1 more); "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (2, 4)),
        (beats_on_one([0.5, 1.5, 3.5, 5.5, 6.5], end=7.0,
                      faults=((1.6, 2.4, LAG), (3.6, 4.4, LAG))), "pass",
         "3 gap(s) judged, longest 1.00 x interval (conn 1 0.50 s .. 1.50 s); "
         f"tolerance heartbeat_slack=0.25; 2 {FAULTS_HB2}", (6, 8)),
        (beats_on_one([0.5], faults=((0.6, 5.0, LAG),)), "not_judged",
         f"no heartbeat gap outside fault windows to judge; tolerance heartbeat_slack=0.25; "
         f"1 {FAULTS_HB2}", ()),
        # A fault on another connection excuses nothing here.
        (beats_on_one([0.5, 3.0], close_at=3.5, faults=((0.6, 2.9, LAG_ON_CONN_2),)), "fail",
         "conn 1: 2.50 s between heartbeats (0.50 s .. 3.00 s), bound 1.25 s; "
         f"tolerance heartbeat_slack=0.25; 0 {FAULTS_HB2}", (4, 6)),
    ],
)
def test_hb2_evidence(run, status, evidence, indices):
    assert judged(run, "HB2") == (status, evidence, indices)


# HB3 ------------------------------------------------------------------------------------------

TOL_HB3 = ("tolerance seq_staleness=1.0 s; {} beat(s) during fault windows not held to the lower "
           "bound")


def cited(ds: list, sent: tuple[float, ...] = (0.2, 0.3),
          at: tuple[float, ...] = (1.0, 2.0, 3.0), fault: dict | None = None) -> Run:
    """READY s=1 at 0.1 s, a dispatch at each ``sent`` time (s=2, 3 ...), then beats citing
    ``ds`` at the ``at`` times."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).ready(1, 0.1)
    for t in sent:
        run.dispatch(1, t)
    if fault is not None:
        run.fault("lag", 0.25, "on", **fault).fault("lag", 1.5, "off", **fault)
    for t, d in zip(at, ds, strict=False):
        run.beat(1, t, d)
    return run.rec("note", 5.0, text="end")


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (cited([3, 3, 3]), "pass",
         "3 heartbeat(s) carried a seq the client had (or null before any dispatch); "
         + TOL_HB3.format(0), ()),
        (cited(["x", True, 3]), "fail",
         "conn 1: heartbeat at 1.00 s carries d='x', not a seq (+1 more); " + TOL_HB3.format(0),
         (6,)),
        (cited([9, 9, 3]), "fail",
         "conn 1: heartbeat at 1.00 s carries d=9, a seq the gateway never sent before it "
         "(+1 more); " + TOL_HB3.format(0), (6,)),
        (cited([1, 3, 3], at=(1.3, 2.0, 3.0)), "fail",
         "conn 1: heartbeat at 1.30 s carries d=1, but s=3 was sent at 0.30 s; "
         + TOL_HB3.format(0), (5, 6)),
        # A dispatch exactly seq_staleness before the beat must show in it.
        (cited([2], sent=(0.2, 0.5), at=(1.5,)), "fail",
         "conn 1: heartbeat at 1.50 s carries d=2, but s=3 was sent at 0.50 s; "
         + TOL_HB3.format(0), (5, 6)),
        # READY's s counts too.
        (cited([None], sent=(), at=(1.3,)), "fail",
         "conn 1: heartbeat at 1.30 s carries d=None, but s=1 was sent at 0.10 s; "
         + TOL_HB3.format(0), (3, 4)),
        (cited([1, 2, 3], at=(1.3, 2.0, 3.0), fault=LAG), "pass",
         "3 heartbeat(s) carried a seq the client had (or null before any dispatch); "
         + TOL_HB3.format(3), ()),
        (cited([1], at=(1.3,), fault=LAG_ON_CONN_2), "fail",
         "conn 1: heartbeat at 1.30 s carries d=1, but s=3 was sent at 0.30 s; "
         + TOL_HB3.format(0), (5, 8)),
        (Run().open(1, 0.0).hello(1, 0.01).rec("note", 3.0, text="end"), "not_judged",
         "no client heartbeats in the trace", ()),
    ],
)
def test_hb3_evidence(run, status, evidence, indices):
    assert judged(run, "HB3") == (status, evidence, indices)


# ZB1 ------------------------------------------------------------------------------------------

TOL_ZB1 = ("tolerances heartbeat_slack=0.25, zombie_close_grace=0.5 s, reconnect_within=5.0 s, "
           "reconnect_backoff_factor=2.0")


def zombies(steps: list[tuple[str, int, float, float]], end: float = 30.0) -> Run:
    """One live session per step (by, code, close_after, gap): its beat 1.5 s after it opens gets
    no ACK; ``by`` closes it ``close_after`` s after that beat; the next opens ``gap`` s later
    (a zombie close is due 1.75 s after the beat)."""
    run, t = Run(), 0.0
    for n, (by, code, after, gap) in enumerate(steps, start=1):
        run.open(n, t, "resume" if n > 1 else "discovery").hello(n, t + 0.01)
        if n == 1:
            run.identify(n, t + 0.05).ready(n, t + 0.1)
        else:
            run.resume(n, t + 0.05, "sess-a", 1).resumed(n, t + 0.1)
        run.beat(n, t + 0.5, 1).beat(n, t + 1.5, 1, ack=False).close(n, t + 1.5 + after, by, code)
        t += 1.5 + after + gap
    return run.rec("note", end, text="end")


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        # The server ends the first in time; the second kills the session; the third never
        # reconnects.
        (zombies([("server", 4000, 1.0, 1.0), ("client", 1000, 1.0, 1.0),
                  ("client", 4000, 1.0, 1.0)]), "fail",
         "conn 2: zombie close at 6.00 s used code 1000, which kills the session (+1 more); "
         + TOL_ZB1, (14, 15)),
        (zombies([("client", 4000, 1.0, 6.0), ("client", 4000, 2.0, 1.0)], end=40.0), "fail",
         "conn 1: zombie closed at 2.50 s but next connection at 8.50 s (bound 5.00 s: "
         f"reconnect_within=5.0 s) (+1 more); {TOL_ZB1}", (6, 7)),
        (zombies([("client", 4000, 2.0, 1.0), ("client", 4000, 2.0, 1.0)]), "fail",
         "conn 1: heartbeat at 1.50 s got no ACK; connection closed by client at 3.50 s with "
         "code 4000 (close_frame) (the client should have closed it by 3.25 s) (+1 more); "
         + TOL_ZB1, (6, 7)),
        # The second zombie's reconnect is not due yet when the run ends: the first is judged.
        (zombies([("client", 4000, 1.0, 1.0), ("client", 4000, 1.0, 1.0)], end=9.0), "pass",
         "conn 1: heartbeat at 1.50 s unACKed, client closed at 2.50 s with code 4000, conn 2 "
         f"opened at 3.50 s (bound 5.00 s: reconnect_within=5.0 s); {TOL_ZB1}", (6, 7, 8)),
        # The run ends exactly when the reconnect was due.
        (zombies([("client", 4000, 1.0, 1.0)], end=7.5), "fail",
         "conn 1: zombie closed at 2.50 s but no later connection by the end of the run at "
         f"7.50 s (bound 5.00 s: reconnect_within=5.0 s); {TOL_ZB1}", (6, 7)),
    ],
)
def test_zb1_evidence(run, status, evidence, indices):
    assert judged(run, "ZB1") == (status, evidence, indices)


def unacked_then_closed(close_at: float) -> Run:
    """A beat at 1.5 s gets no ACK; the client closes at ``close_at`` and resumes 0.5 s later."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).ready(1, 0.1)
    run.beat(1, 0.5, 1).beat(1, 1.5, 1, ack=False).close(1, close_at, "client", 4000)
    t = close_at + 0.5
    run.open(2, t, "resume").hello(2, t + 0.01).resume(2, t + 0.05, "sess-a", 1)
    run.resumed(2, t + 0.1).beats(2, t + 0.5, t + 5.0, d=2)
    return run.rec("note", t + 5.0, text="end")


def test_zb1_a_beat_counts_as_unacked_once_its_connection_stayed_half_an_interval():
    assert judged(unacked_then_closed(1.6), "ZB1") == (
        "not_judged", "no connection had an unACKed heartbeat the client was due to detect", ())
    assert judged(unacked_then_closed(2.0), "ZB1") == (
        "pass",
        "conn 1: heartbeat at 1.50 s unACKed, client closed at 2.00 s with code 4000, conn 2 "
        f"opened at 2.50 s (bound 5.00 s: reconnect_within=5.0 s); {TOL_ZB1}",
        (6, 7, 8),
    )


def test_zb1_an_ack_after_the_next_beat_answers_neither_and_the_run_ends_at_the_deadline():
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).ready(1, 0.1)
    run.rec("frame_in", 0.5, conn=1, op=1, d=1, size=16)
    run.rec("frame_in", 1.5, conn=1, op=1, d=1, size=16)
    run.rec("frame_out", 1.55, conn=1, op=11, s=None, t=None, size=10, compressed=False)
    assert judged(run.rec("note", 2.25, text="end"), "ZB1") == (
        "fail",
        "conn 1: heartbeat at 0.50 s got no ACK; connection still open (the client should have "
        f"closed it by 2.25 s); {TOL_ZB1}",
        (4,),
    )


def after_attempts(attempts: tuple[float, ...], session_at: float, reconnect_after: float,
                   end: float = 40.0) -> Run:
    """Failed attempts (opened and reset at once) at the given times, a session at
    ``session_at`` whose beat 1.5 s in gets no ACK, closed by the client 1 s later, and a
    resume ``reconnect_after`` s after that."""
    run, n = Run(), 0
    for t in attempts:
        n += 1
        run.open(n, t, "resume").close(n, t, "network", None, "reset")
    n, t = n + 1, session_at
    run.open(n, t).hello(n, t + 0.01).identify(n, t + 0.05).ready(n, t + 0.1)
    run.beat(n, t + 0.5, 1).beat(n, t + 1.5, 1, ack=False).close(n, t + 2.5, "client", 4000)
    r = t + 2.5 + reconnect_after
    run.open(n + 1, r, "resume").hello(n + 1, r + 0.01).resume(n + 1, r + 0.05, "sess-a", 1)
    run.resumed(n + 1, r + 0.1).beats(n + 1, r + 0.5, end, d=2)
    return run.rec("note", end, text="end")


def test_zb1_names_the_first_of_the_clients_longest_earlier_waits():
    assert judged(after_attempts((1.0, 4.0, 7.0), 10.0, 5.5), "ZB1") == (
        "pass",
        "conn 4: heartbeat at 11.50 s unACKed, client closed at 12.50 s with code 4000, conn 5 "
        "opened at 18.00 s (bound 6.00 s: 2 x the client's earlier wait of 3.00 s (conn 1 ended "
        f"at 1.00 s, conn 2 opened at 4.00 s)); {TOL_ZB1}",
        (12, 13, 14),
    )


def test_zb1_an_earlier_wait_doubled_to_exactly_five_seconds_keeps_reconnect_within():
    assert judged(after_attempts((1.0, 3.5), 6.0, 4.0), "ZB1") == (
        "pass",
        "conn 3: heartbeat at 7.50 s unACKed, client closed at 8.50 s with code 4000, conn 4 "
        f"opened at 12.50 s (bound 5.00 s: reconnect_within=5.0 s); {TOL_ZB1}",
        (10, 11, 12),
    )
