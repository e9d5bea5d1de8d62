"""FC1, RS3 and RS4 as a report prints them: every verdict's status, whole evidence text and
record indices, on crafted traces (nox -s mutation -- oracle found these unpinned)."""

from __future__ import annotations

import pytest
from test_oracle import abandoned_run, verdict
from test_oracle_traces import Run, healthy_start


def judged(run: Run, inv: str, delivery=None, **exp):
    v = verdict(run, inv, delivery, **exp)
    return v.status, v.evidence, v.record_indices


# FC1 ------------------------------------------------------------------------------------------


def fatal_closes(reconnect: bool) -> Run:
    """Conn 1 opens first but is closed (4014) after conn 2 (4004): the first fatal close in the
    trace is conn 2's."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).ready(1, 0.1, "s1")
    run.open(2, 0.5).hello(2, 0.51).identify(2, 0.55, shard=[1, 2]).close(2, 1.0, "server", 4004)
    run.close(1, 2.0, "server", 4014)
    if reconnect:
        run.open(3, 3.0).hello(3, 3.01)
    return run.rec("note", 8.0, text="end")


def test_fc1_judges_from_the_first_fatal_close_in_the_trace():
    assert judged(fatal_closes(False), "FC1") == (
        "pass",
        "server closed conn 2 with fatal 4004 at 1.00 s; no connection in the 7.00 s after",
        (7,),
    )
    assert judged(fatal_closes(True), "FC1") == (
        "fail",
        "server closed conn 2 with fatal 4004 at 1.00 s; the client reconnected anyway (conn 3 "
        "at 3.00 s, 1 in all)",
        (7, 9),
    )


def test_fc1_not_judged_without_a_fatal_close():
    assert judged(healthy_start().rec("note", 3.0, text="end"), "FC1") == (
        "not_judged", "no fatal close code (4004, 4010-4014) in the run", ())


# RS3 ------------------------------------------------------------------------------------------


def rs3(*log: dict):
    return judged(healthy_start().rec("note", 3.0, text="end"), "RS3", list(log))


def md(s, sid=None, t="MESSAGE_CREATE"):
    return {"t": t, "s": s} | ({"session_id": sid} if sid else {})


def test_rs3_not_judged_without_a_log_or_without_dispatches():
    assert judged(healthy_start().rec("note", 3.0, text="end"), "RS3") == (
        "not_judged", "the client gave no delivery log", ())
    assert rs3(md(1, t="READY")) == ("not_judged", "the delivery log holds no dispatches", ())


def test_rs3_counts_sessions_by_ready_when_the_log_has_no_session_ids():
    assert rs3(md(1, t="READY"), md(2), md(1, t="READY"), md(2), md(3, t="RESUMED"), md(3)) == (
        "pass",
        "3 dispatch(es) in 2 session(s) delivered once each, in order, with no gap below the "
        "highest delivered seq",
        (),
    )


def test_rs3_names_a_segment_by_its_ready_and_the_log_line_from_one():
    assert rs3(md(1, t="READY"), md(2), md(1, t="READY"), md(2), md(2)) == (
        "fail", "session segment 2: s=2 delivered twice (delivery line 5)", ())
    assert rs3(md(2, "sess-a"), md(2, "sess-a")) == (
        "fail", "session sess-a: s=2 delivered twice (delivery line 2)", ())


def test_rs3_names_the_first_failure_and_counts_the_others():
    assert rs3(md("x"), md(3)) == ("fail", "delivery line 1 has s='x'", ())
    assert rs3(md("x"), md(3), md(2)) == ("fail", "delivery line 1 has s='x' (+1 more)", ())


def test_rs3_names_at_most_five_seqs_the_gateway_sent_and_the_client_never_delivered():
    run = healthy_start()
    for i in range(6):
        run.dispatch(1, 0.4 + i / 10)
    run.rec("note", 3.0, text="end")
    assert judged(run, "RS3", [md(9, "sess-a")]) == (
        "fail",
        "session sess-a: s=[2, 3, 4, 5, 6] sent by the gateway but never delivered, while s=9 "
        "was",
        (),
    )


def test_rs3_a_session_the_gateway_never_showed_is_judged_by_its_log_alone():
    assert rs3(md(5, "other")) == (
        "pass",
        "1 dispatch(es) in 1 session(s) delivered once each, in order, with no gap below the "
        "highest delivered seq",
        (),
    )


# RS4 ------------------------------------------------------------------------------------------


def rs4_run(op7_code: int, resume_code: int, zombie_code: int | None = None,
            zombie_close_at: float = 8.6) -> Run:
    """Conn 1 gets op 7 and the client closes it; conn 2 resumes, the client closes it and
    resumes on conn 3; conn 3's last beat (8.0 s) gets no ACK and the client may close it."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.server_op(1, 2.1, 7).close(1, 2.2, "client", op7_code)
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3).resumed(2, 2.7)
    run.beats(2, 3.0, 5.0, d=4).close(2, 5.2, "client", resume_code)
    run.open(3, 5.5, "resume").hello(3, 5.51).resume(3, 5.6, "sess-a", 4).resumed(3, 5.7)
    run.beats(3, 6.0, 8.0, d=5).beat(3, 8.0, 5, ack=False)
    if zombie_code is not None:
        run.close(3, zombie_close_at, "client", zombie_code)
    return run.rec("note", 12.0, text="end")


@pytest.mark.parametrize(
    ("codes", "status", "evidence", "indices"),
    [
        ((4000, 4000), "pass",
         "2 client close(s) meant to resume used codes other than 1000/1001", ()),
        ((4000, 4000, 4000), "pass",
         "3 client close(s) meant to resume used codes other than 1000/1001", ()),
        ((1000, 4000), "fail",
         "conn 1: client closed with 1000 at 2.20 s after op 7 at 2.10 s; 2 client close(s) "
         "with intent to resume judged", (10, 11, 14)),
        ((4000, 1001), "fail",
         "conn 2: client closed with 1001 at 5.20 s then RESUMEd at 5.60 s; 2 client close(s) "
         "with intent to resume judged", (20, 23)),
        ((4000, 4000, 1000), "fail",
         "conn 3: client closed with 1000 at 8.60 s after an unACKed heartbeat; 3 client "
         "close(s) with intent to resume judged", (30,)),
        ((1000, 1001, 1000), "fail",
         "conn 1: client closed with 1000 at 2.20 s after op 7 at 2.10 s (+2 more); 3 client "
         "close(s) with intent to resume judged", (10, 11, 14)),
    ],
)
def test_rs4_evidence(codes, status, evidence, indices):
    assert judged(rs4_run(*codes), "RS4") == (status, evidence, indices)


def test_rs4_a_close_half_an_interval_after_an_unacked_beat_is_a_zombie_close():
    assert judged(rs4_run(4000, 4000, 1000, zombie_close_at=8.5), "RS4")[:2] == (
        "fail",
        "conn 3: client closed with 1000 at 8.50 s after an unACKed heartbeat; 3 client "
        "close(s) with intent to resume judged",
    )


def test_rs4_judges_a_client_close_after_a_connection_the_network_ended():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3).resumed(2, 2.7)
    run.server_op(2, 3.0, 7).close(2, 3.1, "client", 1000).rec("note", 6.0, text="end")
    assert judged(run, "RS4")[:2] == (
        "fail",
        "conn 2: client closed with 1000 at 3.10 s after op 7 at 3.00 s; 1 client close(s) "
        "with intent to resume judged",
    )


def test_rs4_not_judged_when_the_client_closes_for_good():
    run = healthy_start().beats(1, 0.5, 3.0, d=3).close(1, 3.0, "client", 1000)
    assert judged(run.rec("note", 5.0, text="end"), "RS4") == (
        "not_judged", "the client never closed a connection it meant to resume", ())


# RS5 ------------------------------------------------------------------------------------------

TOL_RS5 = ("tolerances reidentify_delay_min=1.0 s, reidentify_delay_max=5.0 s + "
           "reidentify_slack=1.5 s")


def op9_then(identify_after: float | None = None, end: float = 12.0, early_fault: bool = False,
             d: bool = False) -> Run:
    """Op 9 (d=false by default) on live conn 1 at 2.0 s; an IDENTIFY on conn 2 that many s
    later, if any; optionally a fault that came and went long before it."""
    run = healthy_start()
    if early_fault:
        run.fault("blip", 0.35, "on", target="both").fault("blip", 0.4, "off", target="both")
    run.beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 9, d=d).close(1, 2.05, "client", 4000)
    if identify_after is not None:
        t = 2.0 + identify_after
        run.open(2, t - 0.1).hello(2, t - 0.09).identify(2, t).ready(2, t + 0.1, "sess-b")
    return run.rec("note", end, text="end")


@pytest.mark.parametrize("after", [1.0, 5.0, 6.5])
def test_rs5_an_identify_one_to_six_and_a_half_seconds_after_op9_passes(after):
    assert judged(op9_then(after), "RS5") == (
        "pass",
        "1 invalidation(s) followed by an IDENTIFY on the discovery URL; last: op 9 d=false on "
        f"conn 1 at 2.00 s: IDENTIFY on conn 2 after {after:.2f} s; {TOL_RS5}",
        (10, 14),
    )


def test_rs5_an_identify_later_than_the_bound_fails_outside_fault_windows():
    assert judged(op9_then(7.0, early_fault=True), "RS5") == (
        "fail",
        f"op 9 d=false on conn 1 at 2.00 s: IDENTIFY only after 7.00 s (bound 6.50 s); {TOL_RS5}",
        (12, 16),
    )


def test_rs5_no_identify_after_op9_fails_once_the_bound_ran_out():
    assert judged(op9_then(), "RS5") == (
        "fail",
        f"op 9 d=false on conn 1 at 2.00 s: no IDENTIFY in the 10.00 s that followed; {TOL_RS5}",
        (10,),
    )
    assert judged(op9_then(end=8.5), "RS5")[0] == "not_judged"  # exactly at the bound
    assert judged(op9_then(), "RS5", outcome="stop")[0] == "not_judged"


def test_rs5_op9_that_allows_a_resume_is_no_trigger():
    assert judged(op9_then(d=True), "RS5") == (
        "not_judged", "no op 9 d=false and no server close 4003/4005/4007/4009 in the run", ())


def test_rs5_not_judged_names_the_op9_the_run_ended_too_soon_to_judge():
    assert judged(op9_then(end=8.5), "RS5") == (
        "not_judged",
        "op 9 d=false on conn 1 at 2.00 s: no IDENTIFY before the run ended 6.50 s later, "
        f"within the 6.50 s bound; {TOL_RS5}",
        (),
    )
    assert judged(op9_then(), "RS5", outcome="stop") == (
        "not_judged",
        "op 9 d=false on conn 1 at 2.00 s: no IDENTIFY before the run ended 10.00 s later (the "
        f"scenario expects the client to stop); {TOL_RS5}",
        (),
    )
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 9, d=False)
    run.close(1, 2.05, "server", 4009).rec("note", 5.0, text="end")
    assert judged(run, "RS5")[:2] == (
        "not_judged",
        "op 9 d=false on conn 1 at 2.00 s: no IDENTIFY before the run ended 3.00 s later, within "
        f"the 6.50 s bound (+1 more); {TOL_RS5}",
    )


def test_rs5_names_what_an_op9_answered_and_counts_every_invalidation():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    run.server_op(2, 2.7, 9, d=False).close(2, 2.8, "client", 4000)
    run.open(3, 4.5).hello(3, 4.51).identify(3, 4.6).rec("note", 10.0, text="end")
    assert judged(run, "RS5") == (
        "pass",
        "1 invalidation(s) followed by an IDENTIFY on the discovery URL; last: op 9 d=false on "
        "conn 2 at 2.70 s in answer to RESUME at 2.60 s: IDENTIFY on conn 3 after 1.90 s; "
        f"{TOL_RS5}",
        (14, 18),
    )
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).server_op(1, 0.1, 9, d=False)
    run.close(1, 0.2, "client", 4000).open(2, 2.0).hello(2, 2.01).identify(2, 2.1)
    run.ready(2, 2.2, "sess-b").server_op(2, 5.0, 9, d=False).close(2, 5.05, "client", 4000)
    run.open(3, 7.5).hello(3, 7.51).identify(3, 7.6).rec("note", 10.0, text="end")
    assert judged(run, "RS5")[:2] == (
        "pass",
        "2 invalidation(s) followed by an IDENTIFY on the discovery URL; last: op 9 d=false on "
        f"conn 2 at 5.00 s: IDENTIFY on conn 3 after 2.60 s; {TOL_RS5}",
    )
    assert verdict(run, "RS5").record_indices == (3, 7)  # the first one judged


def test_rs5_failures_come_in_trace_order():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "server", 4009)
    run.open(2, 2.4).hello(2, 2.41).identify(2, 2.5).ready(2, 2.6, "sess-b")
    run.server_op(2, 4.0, 9, d=False).rec("note", 12.0, text="end")
    assert judged(run, "RS5") == (
        "fail",
        "server close 4009 on conn 1 at 2.00 s: IDENTIFY after only 0.50 s (wait at least 1.0 s) "
        f"(+1 more); {TOL_RS5}",
        (10, 13),
    )


def test_rs5_judges_only_the_last_of_two_invalidations_before_the_client_acted():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 9, d=False)
    run.server_op(1, 2.5, 9, d=False).close(1, 2.6, "client", 4000)
    run.open(2, 4.4).hello(2, 4.41).identify(2, 4.5).rec("note", 10.0, text="end")
    assert judged(run, "RS5") == (
        "pass",
        "1 invalidation(s) followed by an IDENTIFY on the discovery URL; last: op 9 d=false on "
        f"conn 1 at 2.50 s: IDENTIFY on conn 2 after 2.00 s; {TOL_RS5}",
        (11, 15),
    )


def test_rs5_a_resume_crossing_op9_on_the_wire_is_not_judged_and_says_so():
    run = Run().open(1, 0.0).hello(1, 0.0).server_op(1, 0.0, 9, d=False)
    run.resume(1, 0.1, "sess-a", 3).rec("note", 3.0, text="end")
    assert judged(run, "RS5") == (
        "not_judged",
        f"{TOL_RS5}; 1 RESUME after an invalidation not judged, it may not have reached the "
        "client: op 9 d=false on conn 1 at 0.00 s (the RESUME on the same connection 0.100 s "
        "later crossed it; crossing_window=0.1 s)",
        (),
    )


def test_rs5_a_resume_while_a_fault_held_the_op9_is_not_judged_and_names_the_fault():
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("lag", 1.9, "on", target="both", type="latency").server_op(1, 2.0, 9, d=False)
    run.close(1, 2.5, "network", None, "reset")
    run.fault("lag", 2.6, "off", target="both", type="latency")
    run.open(2, 3.0, "resume").hello(2, 3.01).resume(2, 3.1, "sess-a", 3)
    assert judged(run.rec("note", 10.0, text="end"), "RS5") == (
        "not_judged",
        f"{TOL_RS5}; 1 RESUME after an invalidation not judged, it may not have reached the "
        "client: op 9 d=false on conn 1 at 2.00 s (fault 'lag' on that connection)",
        (),
    )


# RS2 ------------------------------------------------------------------------------------------


def resumed_after_loss(seq: int, token_ok: bool = True, ready_only: bool = False) -> Run:
    """Conn 1 carries sess-a (READY s=1, then, unless ``ready_only``, s=2 and 3 with beats
    citing d=3 at 0.5 and 1.5 s) until a reset at 2.0 s; conn 2 RESUMEs it at 2.6 s."""
    if ready_only:
        run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).ready(1, 0.1)
    else:
        run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.close(1, 2.0, "network", None, "reset").open(2, 2.5, "resume").hello(2, 2.51)
    run.rec("frame_in", 2.6, conn=2, op=6, session_id="sess-a", seq=seq, token_ok=token_ok,
            size=120)
    return run.rec("note", 5.0, text="end")


@pytest.mark.parametrize(
    ("run", "status", "evidence", "indices"),
    [
        (resumed_after_loss(3), "pass",
         "1 RESUME(s) carried the current session_id and a seq between the last one the client "
         "proved it had and the last sent (last: seq=3 at 2.60 s)", (13,)),
        (resumed_after_loss(5), "fail",
         "RESUME at 2.60 s carries seq=5, beyond the last sent s=3; 1 RESUME(s) judged", (13,)),
        (resumed_after_loss(2), "fail",
         "RESUME at 2.60 s carries seq=2, but the client's heartbeat at 1.50 s showed it had "
         "s=3; 1 RESUME(s) judged", (8, 13)),
        (resumed_after_loss(3, token_ok=False), "fail",
         "RESUME at 2.60 s carried a wrong token; 1 RESUME(s) judged", (13,)),
        # READY's own s is the last sent until a dispatch follows.
        (resumed_after_loss(2, ready_only=True), "fail",
         "RESUME at 2.60 s carries seq=2, beyond the last sent s=1; 1 RESUME(s) judged", (7,)),
        (resumed_after_loss(1, ready_only=True), "pass",
         "1 RESUME(s) carried the current session_id and a seq between the last one the client "
         "proved it had and the last sent (last: seq=1 at 2.60 s)", (7,)),
    ],
)
def test_rs2_evidence(run, status, evidence, indices):
    assert judged(run, "RS2") == (status, evidence, indices)


def test_rs2_not_judged_without_resume_and_fails_one_without_ready():
    assert judged(healthy_start().rec("note", 3.0, text="end"), "RS2") == (
        "not_judged", "the client sent no RESUME", ())
    run = Run().open(1, 0.0).hello(1, 0.01).beat(1, 0.5, None).resume(1, 0.6, "sess-a", 3)
    assert judged(run.rec("note", 3.0, text="end"), "RS2") == (
        "fail", "RESUME at 0.60 s on conn 1 but no READY was ever sent; 1 RESUME(s) judged", (4,))


def test_rs2_heartbeats_sent_before_a_resume_prove_the_seq_once_it_resumed():
    run = healthy_start().dispatch(1, 0.35).dispatch(1, 0.4).beats(1, 0.5, 2.0, d=3)
    run.close(1, 2.0, "network", None, "reset").open(2, 2.5, "resume").hello(2, 2.51)
    run.beat(2, 2.52, 5, ack=False).beat(2, 2.55, 5, ack=False).resume(2, 2.6, "sess-a", 4)
    run.resumed(2, 2.7).close(2, 3.0, "network", None, "reset")
    run.open(3, 3.5, "resume").hello(3, 3.51).resume(3, 3.6, "sess-a", 4)
    assert judged(run.rec("note", 6.0, text="end"), "RS2") == (
        "fail",
        "RESUME at 3.60 s carries seq=4, but the client's heartbeat at 2.55 s showed it had s=5; "
        "2 RESUME(s) judged",
        (16, 22),
    )


def test_rs3_counts_what_was_sent_on_the_ready_and_the_resume_connection_alike():
    run = healthy_start().close(1, 1.0, "network", None, "reset")
    run.open(2, 1.5, "resume").hello(2, 1.51).resume(2, 1.6, "sess-a", 3).resumed(2, 1.7)
    run.dispatch(2, 1.8).dispatch(2, 1.9).rec("note", 3.0, text="end")
    log = [md(3, "sess-a"), md(6, "sess-a")]
    assert judged(run, "RS3", log) == (
        "fail",
        "session sess-a: s=[2, 5] sent by the gateway but never delivered, while s=6 was",
        (),
    )


# RS1: what each loss is called -----------------------------------------------------------------


def lost_then(by: str, code: int | None, op7: bool = False, how: str = "close_frame",
              identify: bool = True) -> Run:
    """A session on conn 1 (its beats cite d=3, so the client had it) ends at 2.0 s (``by``,
    ``code``, after an op 7 at 1.9 s if ``op7``); the client IDENTIFYs on conn 2 at 3.05 s."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    if op7:
        run.server_op(1, 1.9, 7)
    run.close(1, 2.0, by, code, how=how).open(2, 3.0).hello(2, 3.01)
    if identify:
        run.identify(2, 3.05).ready(2, 3.1, "sess-b").beats(2, 3.5, 6.0, d=1)
    return run.rec("note", 6.0, text="end")


@pytest.mark.parametrize(
    ("run", "why", "indices"),
    [
        (lost_then("client", 4000), "client closed with 4000", (10, 13)),
        (lost_then("client", None), "client closed with no code", (10, 13)),
        (lost_then("server", 4000), "server closed with 4000", (10, 13)),
        (lost_then("server", None), "server closed with no code", (10, 13)),
        (lost_then("network", None, how="reset"), "network ended it (reset)", (10, 13)),
        (lost_then("client", 1000, op7=True), "op 7, then client closed with 1000", (11, 14)),
        (lost_then("server", 4000, op7=True), "op 7, then server closed with 4000", (11, 14)),
    ],
)
def test_rs1_names_how_the_resumable_session_was_lost(run, why, indices):
    assert judged(run, "RS1") == (
        "fail",
        f"conn 1 lost at 2.00 s ({why}) while resumable and the client had the session (its "
        "heartbeat at 0.50 s cited d=3, sent only after READY); the client then IDENTIFYd on "
        "conn 2 at 3.05 s instead of RESUMing; 1 resumable loss(es), 0 IDENTIFY(s) after a "
        "session the client held judged",
        indices,
    )


@pytest.mark.parametrize(("by", "code"), [("client", 1000), ("server", 4004), ("server", 4009)])
def test_rs1_a_session_the_close_ended_is_no_resumable_loss(by, code):
    assert judged(lost_then(by, code), "RS1") == ("not_judged", "no resumable loss in the run", ())


def test_rs1_a_session_the_client_ended_stays_ended_through_a_failed_resume():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "client", 1000)
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.55, "sess-a", 3)
    run.close(2, 2.6, "network", None, how="reset")
    run.open(3, 3.0).hello(3, 3.01).identify(3, 3.05).ready(3, 3.1, "sess-b")
    run.beats(3, 3.5, 6.0, d=1).rec("note", 6.0, text="end")
    assert judged(run, "RS1") == ("not_judged", "no resumable loss in the run", ())


def test_rs1_names_the_loss_the_client_never_came_back_from():
    run = lost_then("network", None, how="reset", identify=False)
    assert judged(run, "RS1", outcome="resume", recovery_bound=1.0) == (
        "fail",
        "conn 1 lost at 2.00 s (network ended it (reset)); the client never sent RESUME or "
        "IDENTIFY afterwards",
        (10,),
    )


# RS1: an IDENTIFY while the server still held the session ----------------------------------------

HELD_TAIL = (
    ", and every later event; nothing told the client the session was gone (no op 9 d=false, "
    "no close 4003/4005/4007/4009 or fatal close): a new session instead of a RESUME lost those "
    "events to the application; 0 resumable loss(es), 1 IDENTIFY(s) after a session the client "
    "held judged"
)
TOLD = (
    "1 resumable loss(es), each followed by a RESUME on the resume URL (or on the discovery URL, "
    "or an IDENTIFY, after the resume path failed); 1 IDENTIFY(s) after a session the client "
    "held, each once the server had ended it or told the client so"
)


def test_rs1_an_abandoned_session_names_the_seqs_the_server_held_beyond_the_clients():
    assert judged(abandoned_run(), "RS1") == (
        "fail",
        "IDENTIFY on conn 4 at 7.31 s while session sess-a (lost at 2.00 s, resumable until it "
        "expired at 122.00 s) held seqs 4-59 beyond the client's seq 3 (its heartbeat at "
        f"0.50 s){HELD_TAIL}",
        (20,),
    )
    # The delivery log's highest seq of that session; entries without a seq or session ignored.
    log = [{"s": 4, "t": "X", "session_id": "sess-a"}, {"s": 2, "t": "X", "session_id": "sess-a"},
           {"s": "x", "t": "X", "session_id": "sess-a"}, {"s": 9, "t": "X"}]
    assert judged(abandoned_run(), "RS1", log) == (
        "fail",
        "IDENTIFY on conn 4 at 7.31 s while session sess-a (lost at 2.00 s, resumable until it "
        "expired at 122.00 s) held seqs 5-59 beyond the client's seq 4 (its delivery log)"
        f"{HELD_TAIL}",
        (20,),
    )


@pytest.mark.parametrize("between", ["op9", "4009"])
def test_rs1_an_identify_after_the_server_told_the_client_passes(between):
    assert judged(abandoned_run(between=between), "RS1") == ("pass", TOLD, (14, 20))


@pytest.mark.parametrize(("identify_at", "status"), [(119.99, "pass"), (119.98, "fail")])
def test_rs1_an_identify_two_seconds_before_the_server_expired_the_session_passes(
        identify_at, status):
    assert judged(abandoned_run(identify_at=identify_at), "RS1")[0] == status


def dropped_at_two(end_event: str | None) -> Run:
    """sess-a (the client's beats cite s=3) is lost at 2.0 s with nothing on the resume path;
    the client IDENTIFYs on conn 4 at 3.01 s; the server ends sess-a at 3.02 s (``end_event``,
    seq 7) or never."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05)
    run.session("sess-a", 0.1, "created", conn=1).ready(1, 0.1).dispatch(1, 0.2)
    run.dispatch(1, 0.3).beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.session("sess-a", 2.0, "detached", conn=1, seq=3)
    run.open(4, 3.0).hello(4, 3.0).identify(4, 3.01)
    if end_event:
        run.session("sess-a", 3.02, end_event, seq=7)
    run.session("sess-b", 3.02, "created", conn=4).ready(4, 3.02, "sess-b")
    return run.beats(4, 3.5, 7.0, d=1).rec("note", 7.0, text="end")


ABANDONED = ("nothing told the client the session was gone (no op 9 d=false, no close "
             "4003/4005/4007/4009 or fatal close): a new session instead of a RESUME lost those "
             "events to the application; 0 resumable loss(es), 1 IDENTIFY(s) after a session the "
             "client held judged")


def test_rs1_names_when_the_server_ended_the_abandoned_session_if_it_did():
    assert judged(dropped_at_two("invalidated"), "RS1") == (
        "fail",
        "IDENTIFY on conn 4 at 3.01 s while session sess-a (lost at 2.00 s, resumable until it "
        "invalidated at 3.02 s) held seqs 4-7 beyond the client's seq 3 (its heartbeat at "
        f"0.50 s), and every later event; {ABANDONED}",
        (15,),
    )
    assert judged(dropped_at_two(None), "RS1") == (
        "fail",
        "IDENTIFY on conn 4 at 3.01 s while session sess-a (lost at 2.00 s, still resumable at "
        "the end of the run, 7.00 s) held every event after the client's seq 3 (its heartbeat "
        f"at 0.50 s); {ABANDONED}",
        (15,),
    )


def test_rs1_an_identify_just_before_the_server_expired_the_session_passes():
    # Both RS1 rules take the expiry from one place: the loss rule does not judge it again.
    assert judged(dropped_at_two("expired"), "RS1") == (
        "pass",
        "1 IDENTIFY(s) after a session the client held, each once the server had ended it or "
        "told the client so",
        (),
    )


def test_rs1_a_session_the_client_resumed_on_the_lost_connection_was_the_clients():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.55, "sess-a", 3).resumed(2, 2.6)
    run.beats(2, 3.0, 4.0, d=4).close(2, 4.0, "network", None, how="reset")
    run.open(3, 5.0).hello(3, 5.01).identify(3, 5.05).ready(3, 5.1, "sess-b")
    assert judged(run.beats(3, 5.5, 8.0, d=1).rec("note", 8.0, text="end"), "RS1") == (
        "fail",
        "conn 2 lost at 4.00 s (network ended it (reset)) while resumable and the client had the "
        "session (it sent RESUME on that connection); the client then IDENTIFYd on conn 3 at "
        "5.05 s instead of RESUMing; 2 resumable loss(es), 0 IDENTIFY(s) after a session the "
        "client held judged",
        (17, 20),
    )


def ended_before_the_identify(event: str) -> Run:
    """dropped_at_two, but the server ends sess-a (``event``) at 2.90 s, before the IDENTIFY."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05)
    run.session("sess-a", 0.1, "created", conn=1).ready(1, 0.1).dispatch(1, 0.2)
    run.dispatch(1, 0.3).beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.session("sess-a", 2.0, "detached", conn=1, seq=3).session("sess-a", 2.9, event, seq=7)
    run.open(4, 3.0).hello(4, 3.0).identify(4, 3.01)
    run.session("sess-b", 3.02, "created", conn=4).ready(4, 3.02, "sess-b")
    return run.beats(4, 3.5, 7.0, d=1).rec("note", 7.0, text="end")


def test_rs1_an_expiry_before_the_identify_excuses_it_an_untold_invalidation_does_not():
    # The resume window ran out (the client may keep the same clock): a new session is right.
    assert judged(ended_before_the_identify("expired"), "RS1") == (
        "pass",
        "1 IDENTIFY(s) after a session the client held, each once the server had ended it or "
        "told the client so",
        (),
    )
    # Invalidated with nothing sent to the client: it should still have tried RESUME (and
    # been told by op 9); the session rule is content, the loss rule is not.
    assert judged(ended_before_the_identify("invalidated"), "RS1") == (
        "fail",
        "conn 1 lost at 2.00 s (network ended it (reset)) while resumable and the client had the "
        "session (its heartbeat at 0.50 s cited d=3, sent only after READY); the client then "
        "IDENTIFYd on conn 4 at 3.01 s instead of RESUMing; 1 resumable loss(es), 1 IDENTIFY(s) "
        "after a session the client held judged",
        (11, 16),
    )


def told_on_resume(answer: str, value: bool | int) -> Run:
    """sess-a lost at 2.00 s; the client RESUMEs it on conn 2 (resume URL) and the server answers
    (``answer`` "op9" with d=``value``, or a server close with code ``value``) with no session
    record; the client IDENTIFYs on conn 3 at 4.60 s."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05)
    run.session("sess-a", 0.1, "created", conn=1).ready(1, 0.1).dispatch(1, 0.2)
    run.dispatch(1, 0.3).beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.session("sess-a", 2.0, "detached", conn=1, seq=3)
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    if answer == "op9":
        run.server_op(2, 2.7, 9, d=value).close(2, 2.8, "client", 4000)
    else:
        run.close(2, 2.7, "server", value)
    run.open(3, 4.5).hello(3, 4.51).identify(3, 4.6)
    run.session("sess-b", 4.62, "created", conn=3).ready(3, 4.62, "sess-b")
    return run.beats(3, 5.0, 9.0, d=1).rec("note", 9.0, text="end")


TOLD = ("1 resumable loss(es), each followed by a RESUME on the resume URL (or on the discovery "
        "URL, or an IDENTIFY, after the resume path failed); 1 IDENTIFY(s) after a session the "
        "client held, each once the server had ended it or told the client so")
NOT_TOLD = ("IDENTIFY on conn 3 at 4.60 s while session sess-a (lost at 2.00 s, still resumable "
            "at the end of the run, 9.00 s) held every event after the client's seq 3 (its RESUME "
            f"at 2.60 s); {ABANDONED.replace('0 resumable', '1 resumable')}")


@pytest.mark.parametrize(
    ("answer", "value", "expected"),
    [
        ("op9", False, ("pass", TOLD, (11, 15))),
        ("close", 4009, ("pass", TOLD, (11, 15))),  # start a new session
        ("close", 4004, ("pass", TOLD, (11, 15))),  # fatal
        ("op9", True, ("fail", NOT_TOLD, (20,))),  # may resume: no word that it is gone
        ("close", 4000, ("fail", NOT_TOLD, (19,))),  # resumable close
    ],
)
def test_rs1_an_identify_is_right_once_the_answer_to_a_resume_said_the_session_was_gone(
    answer, value, expected
):
    # The gateway's session records say nothing here: what the client was told decides.
    assert judged(told_on_resume(answer, value), "RS1") == expected


def test_rs1_an_op9_answering_one_shards_resume_tells_no_other_shard():
    run = Run()
    for conn, shard, sid in ((1, [0, 2], "sess-a"), (2, [1, 2], "sess-b")):
        run.open(conn, 0.0).hello(conn, 0.0).identify(conn, 0.01, shard=shard)
        run.session(sid, 0.02, "created", conn=conn)
        run.ready(conn, 0.02, sid).dispatch(conn, 0.03, sid).beats(conn, 0.3, 2.0, 2)
    run.close(1, 2.0, "network", None, "reset").session("sess-a", 2.0, "detached", conn=1, seq=2)
    run.close(2, 2.0, "network", None, "reset").session("sess-b", 2.0, "detached", conn=2, seq=2)
    run.open(3, 2.5, "resume").close(3, 2.51, "network", None, "reset")
    run.open(4, 2.5, "resume").hello(4, 2.51).resume(4, 2.6, "sess-b", 2)  # shard 1's
    run.server_op(4, 2.7, 9, d=False).close(4, 2.8, "client", 4000)
    run.open(5, 4.5).hello(5, 4.51).identify(5, 4.6, shard=[1, 2])  # rightly
    run.open(6, 5.0).hello(6, 5.01).identify(6, 5.1, shard=[0, 2])  # shard 0 was told nothing
    assert judged(run.rec("note", 9.0, text="end"), "RS1") == (
        "fail",
        "IDENTIFY on conn 6 at 5.10 s while session sess-a (lost at 2.00 s, still resumable at "
        "the end of the run, 9.00 s) held every event after the client's seq 2 (its heartbeat "
        "at 0.30 s); "
        + ABANDONED.replace("0 resumable", "2 resumable").replace("1 IDENTIFY", "2 IDENTIFY"),
        (36,),
    )


def chain(*ends: str) -> Run:
    """Session k (sess-k, k+2 events, lost at 4k+2 s) on its own connection, ended before the
    next IDENTIFY (at 4k+4.05 s) as ``ends[k]`` says: "expired" at the server, "told" (op 9
    d=false answering a RESUME on the resume URL) or "abandoned" (nothing)."""
    run = Run()
    conn = 1
    for k, how in enumerate(ends):
        t, sid = 4.0 * k, f"sess-{k}"
        run.open(conn, t).hello(conn, t + 0.01).identify(conn, t + 0.05)
        run.session(sid, t + 0.1, "created", conn=conn).ready(conn, t + 0.1, sid)
        for j in range(k + 1):
            run.dispatch(conn, t + 0.2 + 0.01 * j, sid)
        run.beats(conn, t + 0.5, t + 2.0, d=k + 2).close(conn, t + 2.0, "network", None, "reset")
        run.session(sid, t + 2.0, "detached", conn=conn, seq=k + 2)
        conn += 1
        if how == "expired":
            run.session(sid, t + 2.5, "expired", seq=k + 2)
        elif how == "told":
            run.open(conn, t + 2.5, "resume").hello(conn, t + 2.51)
            run.resume(conn, t + 2.6, sid, k + 2)
            run.server_op(conn, t + 2.7, 9, d=False).close(conn, t + 2.8, "client", 4000)
            conn += 1
    t = 4.0 * len(ends)
    run.open(conn, t).hello(conn, t + 0.01).identify(conn, t + 0.05)
    return run.rec("note", t + 1.0, text="end")


RESUMED_ONCE = ("1 resumable loss(es), each followed by a RESUME on the resume URL (or on the "
                "discovery URL, or an IDENTIFY, after the resume path failed); ")


def abandoned_at(conn: int, ts: str, sid: str, lost: str, seq: int, beat: str, losses: int) -> str:
    return (
        f"IDENTIFY on conn {conn} at {ts} s while session {sid} (lost at {lost} s, still "
        f"resumable at the end of the run, 9.00 s) held every event after the client's seq {seq} "
        f"(its heartbeat at {beat} s); "
        + ABANDONED.replace("0 resumable", f"{losses} resumable")
        .replace("1 IDENTIFY", "2 IDENTIFY")
    )


@pytest.mark.parametrize(
    ("ends", "expected"),
    [
        (("expired", "told"), ("pass", RESUMED_ONCE + TOLD.split("); ")[1].replace("1 I", "2 I"),
                               (24, 28))),
        (("told", "expired"), ("pass", RESUMED_ONCE + TOLD.split("); ")[1].replace("1 I", "2 I"),
                               (10, 14))),
        (("told", "abandoned"),
         ("fail", abandoned_at(4, "8.05", "sess-1", "6.00", 3, "4.50", 1), (32,))),
        (("expired", "abandoned"),
         ("fail", abandoned_at(3, "8.05", "sess-1", "6.00", 3, "4.50", 0), (28,))),
        (("abandoned", "told"),
         ("fail", abandoned_at(2, "4.05", "sess-0", "2.00", 2, "0.50", 1), (14,))),
        (("abandoned", "expired"),
         ("fail", abandoned_at(2, "4.05", "sess-0", "2.00", 2, "0.50", 0), (14,))),
    ],
)
def test_rs1_counts_every_identify_after_a_session_the_client_held(ends, expected):
    assert judged(chain(*ends), "RS1") == expected


def resumed_on_discovery(answer: str | None) -> Run:
    """sess-a lost at 2.00 s; the client RESUMEs it on the discovery URL (conn 2) at 2.60 s and
    the server answers ``answer``: RESUMED (with or without its replay count), op 9 or nothing."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "discovery").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    if answer == "replayed":
        run.resumed(2, 2.7, replayed=2)
    elif answer == "resumed":
        run.rec("frame_out", 2.7, conn=2, op=0, s=4, t="RESUMED")
    elif answer == "op9":
        run.server_op(2, 2.7, 9, d=False)
    return run.beats(2, 3.0, 5.0, d=4).rec("note", 5.0, text="end")


WRONG_URL = "conn 1 lost at 2.00 s; RESUME at 2.60 s went to conn 2 on the 'discovery' URL, not " \
    "resume_gateway_url"
COUNTS = "; 1 resumable loss(es), 0 IDENTIFY(s) after a session the client held judged"
FASTER = ("): no events lost, but Discord disconnects clients that resume on the discovery URL "
          "significantly faster than normal")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("replayed", (f"{WRONG_URL}; the resume itself succeeded (RESUMED at 2.70 s, 2 event(s) "
                      f"replayed{FASTER}{COUNTS}", (10, 13, 14))),
        ("resumed", (f"{WRONG_URL}; the resume itself succeeded (RESUMED at 2.70 s{FASTER}{COUNTS}",
                     (10, 13, 14))),
        ("op9", (WRONG_URL + COUNTS, (10, 13))),
        (None, (WRONG_URL + COUNTS, (10, 13))),
    ],
)
def test_rs1_a_resume_on_the_discovery_url_says_whether_it_succeeded(answer, expected):
    assert judged(resumed_on_discovery(answer), "RS1") == ("fail", *expected)


def identified_after_losses(n: int) -> Run:
    """n losses, each of a session whose READY nothing shows reached the client (no heartbeat
    cites its seq), each followed by an IDENTIFY."""
    run = healthy_start()
    t = 2.0
    for k in range(n):
        run.close(k + 1, t, "network", None, "reset").open(k + 2, t + 0.5).hello(k + 2, t + 0.51)
        run.identify(k + 2, t + 0.6).ready(k + 2, t + 0.7, f"sess-{k}")
        t += 2
    return run.rec("note", t + 1, text="end")


UNSEEN_READY = ("conn 1 lost at 2.00 s: READY on conn 1 at 0.10 s may never have reached the "
                "client (no heartbeat after it cited s>0, no delivery-log entry of its session)")


@pytest.mark.parametrize(
    ("run", "evidence"),
    [
        (healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
         .rec("note", 4.0, text="end"), "no IDENTIFY/RESUME followed the resumable loss"),
        (identified_after_losses(1), "no resumable loss judged; 1 IDENTIFY after a loss not "
         f"judged, the client may not have had the session ({UNSEEN_READY})"),
        (identified_after_losses(2), "no resumable loss judged; 2 IDENTIFY after a loss not "
         f"judged, the client may not have had the session ({UNSEEN_READY} ...)"),
    ],
)
def test_rs1_not_judged_says_why(run, evidence):
    assert judged(run, "RS1") == ("not_judged", evidence, ())


def test_rs5_names_a_resume_that_crossed_the_op9_and_an_op9_answering_an_identify():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).server_op(2, 2.6, 9, d=False)
    run.resume(2, 2.61, "sess-a", 3).close(2, 2.7, "client", 4000).rec("note", 4.0, text="end")
    assert judged(run, "RS5") == (
        "not_judged",
        f"{TOL_RS5}; 1 RESUME after an invalidation not judged, it may not have reached the "
        "client: op 9 d=false on conn 2 at 2.60 s (the RESUME on the same connection 0.010 s "
        "later crossed it; crossing_window=0.1 s)",
        (),
    )
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).server_op(1, 0.1, 9, d=False)
    run.close(1, 0.2, "client", 4000).open(2, 2.0).hello(2, 2.01).identify(2, 2.1)
    run.ready(2, 2.2, "sess-b").rec("note", 10.0, text="end")
    assert judged(run, "RS5") == (
        "pass",
        "1 invalidation(s) followed by an IDENTIFY on the discovery URL; last: op 9 d=false on "
        "conn 1 at 0.10 s in answer to IDENTIFY at 0.05 s: IDENTIFY on conn 2 after 2.00 s; "
        f"{TOL_RS5}",
        (3, 7),
    )


def test_rs1_an_identify_right_after_a_resume_attempt_that_failed_passes():
    # The RESUME on the resume URL was cut before its answer: that lost attempt is the path
    # failing, so the IDENTIFY after it is the fallback.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    run.close(2, 2.7, "network", None, "reset").open(3, 3.5).hello(3, 3.51).identify(3, 3.6)
    run.ready(3, 3.7, "sess-b").beats(3, 4.0, 6.0, d=1).rec("note", 6.0, text="end")
    passed = ("2 resumable loss(es), each followed by a RESUME on the resume URL (or on the "
              "discovery URL, or an IDENTIFY, after the resume path failed)")
    assert judged(run, "RS1") == ("pass", passed, (10, 13))
    # The same after the resume URL failed and a RESUME on the discovery URL failed too.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").close(2, 2.51, "network", None, "reset")
    run.open(3, 3.0, "discovery").hello(3, 3.01).resume(3, 3.1, "sess-a", 3)
    run.close(3, 3.2, "network", None, "reset").open(4, 4.0).hello(4, 4.01).identify(4, 4.1)
    run.ready(4, 4.2, "sess-b").beats(4, 4.5, 6.0, d=1).rec("note", 6.0, text="end")
    assert judged(run, "RS1") == ("pass", passed, (10, 15))


def test_rs1_a_client_close_1000_after_op7_ends_the_session_the_client_held():
    # Closing with 1000 kills the session even after op 7: the RESUME attempt cut after it
    # lost nothing the client still held, so only conn 1 counts as a resumable loss.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 7)
    run.close(1, 2.05, "client", 1000).open(2, 2.5, "resume").hello(2, 2.51)
    run.resume(2, 2.6, "sess-a", 3).close(2, 2.7, "network", None, "reset")
    run.open(3, 3.5).hello(3, 3.51).identify(3, 3.6).ready(3, 3.7, "sess-b")
    assert judged(run.beats(3, 4.0, 6.0, d=1).rec("note", 6.0, text="end"), "RS1") == (
        "pass",
        "1 resumable loss(es), each followed by a RESUME on the resume URL (or on the discovery "
        "URL, or an IDENTIFY, after the resume path failed)",
        (11, 14),
    )


def test_rs4_a_zombie_close_with_1000_is_named_as_such_when_an_identify_follows():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
    run.close(1, 4.0, "client", 1000).open(2, 4.5).hello(2, 4.51).identify(2, 4.6)
    run.ready(2, 4.7, "sess-b").beats(2, 5.0, 7.0, d=1).rec("note", 7.0, text="end")
    assert judged(run, "RS4") == (
        "fail",
        "conn 1: client closed with 1000 at 4.00 s after an unACKed heartbeat; 1 client close(s) "
        "with intent to resume judged",
        (11, 14),
    )


def test_rs2_counts_what_a_resumed_connection_sent_toward_the_next_resume():
    # seq=6 was sent on conn 2, the connection the first RESUME moved the session to.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 3).resumed(2, 2.7)
    run.dispatch(2, 2.8).dispatch(2, 2.9).beats(2, 3.0, 4.0, d=6)
    run.close(2, 4.0, "network", None, "reset").open(3, 4.5, "resume").hello(3, 4.51)
    run.resume(3, 4.6, "sess-a", 6).resumed(3, 4.7).beats(3, 5.0, 7.0, d=7)
    assert judged(run.rec("note", 7.0, text="end"), "RS2") == (
        "pass",
        "2 RESUME(s) carried the current session_id and a seq between the last one the client "
        "proved it had and the last sent (last: seq=6 at 4.60 s)",
        (22,),
    )


def test_rs1_a_connection_that_only_heartbeat_before_it_was_cut_is_no_loss():
    # conn 2 never resumed (no RESUME, never live): losing it lost nothing.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").hello(2, 2.51).beat(2, 2.55, 3, ack=False)
    run.close(2, 2.6, "network", None, "reset").open(3, 3.0, "resume").hello(3, 3.01)
    run.resume(3, 3.1, "sess-a", 3).resumed(3, 3.2).beats(3, 3.5, 6.0, d=4)
    assert judged(run.rec("note", 6.0, text="end"), "RS1") == (
        "pass",
        "1 resumable loss(es), each followed by a RESUME on the resume URL (or on the discovery "
        "URL, or an IDENTIFY, after the resume path failed)",
        (10, 17),
    )
