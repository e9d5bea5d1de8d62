"""Verdict rules the mutation run (nox -s mutation -- oracle) found unpinned: each test is a
trace a user could hand the oracle, and checks the verdict and the evidence text a report prints
(record indices included: reports cite them as trace lines)."""

from __future__ import annotations

import pytest
from test_oracle_traces import Run, healthy_start

from harness.oracle import Expectations, Tolerances, Verdict, judge


def verdict(run: Run, inv: str, **exp) -> Verdict:
    return {v.invariant: v for v in judge(run.records, None, Expectations(**exp))}[inv]


def lost_at_two(fault: str = "reset") -> Run:
    """A session on conn 1 (beats cite d=3 at 0.5 and 1.5 s), reset by the network at 2.0 s under
    a fault that clears at 3.0 s (record 12)."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault(fault, 2.0, "on", target="both").close(1, 2.0, "network", None, how="reset")
    return run.fault(fault, 3.0, "off")


# LV1: what the last attempt ended on, and the missed ACK before a silent session -------------


def test_lv1_names_the_last_attempts_resume_the_op9_answer_and_the_clients_close_reason():
    run = lost_at_two()
    run.open(2, 3.5, "resume")
    run.rec("ws_upgrade", 3.5, conn=2, listener="resume", query={"compress": "zlib-stream"})
    run.rec("frame_out", 3.51, conn=2, op=10, s=None, t=None, size=40, compressed=True,
            heartbeat_interval=1000)
    run.resume(2, 3.6, "sess-a", 3)
    run.rec("frame_out", 3.7, conn=2, op=9, s=None, t=None, size=20, compressed=True, d=False)
    run.rec("conn_close", 3.8, conn=2, by="client", code=4000, reason="giving up after op 9",
            how="close_frame")
    run.rec("note", 12.0, text="end")
    v = verdict(run, "LV1", recovery_bound=5.0)
    assert (v.status, v.evidence, v.record_indices) == (
        "fail",
        "the last fault ('reset') switched off at 3.00 s; no live session (READY/RESUMED sent, "
        "connection open) by 8.00 s (bound 5.0 s); it never became live again; last heartbeat "
        "at 1.50 s (conn 1); 1 connection(s) after it; the last, conn 2 (resume): RESUME at "
        "3.60 s, op 9 Invalid Session (d=false, zlib-stream) at 3.70 s, closed by client at "
        "3.80 s with code 4000 (close_frame) saying 'giving up after op 9'",
        (8, 12, 16, 17, 18),
    )


def test_lv1_names_a_last_attempt_that_got_hello_and_sent_nothing():
    run = lost_at_two()
    run.open(2, 3.5, "resume").hello(2, 3.51).close(2, 3.52, "server", None, how="eof")
    run.open(3, 4.5, "resume").hello(3, 4.51)
    run.rec("frame_out", 4.55, conn=3, op=0, s=9, t="GUILD_CREATE", size=9, compressed=False)
    run.close(3, 4.6, "client", 1000, how="close_frame").rec("note", 12.0, text="end")
    v = verdict(run, "LV1", recovery_bound=5.0)
    assert v.status == "fail"
    assert v.evidence.endswith(
        "; 2 connection(s) after it; the last, conn 3 (resume): op 10 Hello at 4.51 s, no "
        "IDENTIFY or RESUME, closed by client at 4.60 s with code 1000 (close_frame)"
    )
    assert v.record_indices == (8, 12, 17, 19)


def test_lv1_on_a_silent_session_names_the_heartbeat_that_got_no_ack_and_its_fault():
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("hold", 1.8, "on", kind="control", action="withhold_acks")
    run.beat(1, 2.5, 3, ack=False).close(1, 3.8, "client", 4000)
    run.fault("hold", 3.8, "off", kind="control", action="withhold_acks")
    run.open(2, 4.0, "resume").hello(2, 4.01).resume(2, 4.05, "sess-a", 3).resumed(2, 4.1)
    run.close(2, 6.5, "server", 4000).rec("note", 12.0, text="end")
    v = verdict(run, "LV1", recovery_bound=5.0)
    assert (v.status, v.evidence, v.record_indices) == (
        "fail",
        "the last fault ('hold') switched off at 3.80 s; conn 2 got RESUMED at 4.10 s but sent "
        "no heartbeat until it was closed by server at 6.50 s with code 4000 (close_frame); "
        "before it, the heartbeat at 2.50 s on conn 1 got no ACK (fault 'hold', withhold_acks, "
        "on at 1.80 s)",
        (10, 11, 13, 17, 18),
    )


def test_lv1_on_a_silent_session_blames_no_heartbeat_that_was_acked_or_closed_on_at_once():
    # Every beat ACKed; the client closed its first connection right after its last beat: no
    # missed ACK to name.
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("cut", 1.6, "on").close(1, 1.6, "client", 4000).fault("cut", 3.0, "off")
    run.open(2, 4.0, "resume").hello(2, 4.01).resume(2, 4.05, "sess-a", 3).resumed(2, 4.1)
    run.close(2, 6.5, "server", 4000).rec("note", 12.0, text="end")
    v = verdict(run, "LV1", recovery_bound=5.0)
    assert v.status == "fail"
    assert v.evidence.endswith("with code 4000 (close_frame)"), v.evidence
    assert "no ACK" not in v.evidence


# RS1: an IDENTIFY after a resumable loss is fine only once the resume path failed --------------


def identify_after(between) -> Run:
    """The network resets conn 1 at 2.0 s (no fault stated), ``between(run)`` adds what happened
    next, then the client IDENTIFYs on the discovery URL (conn 9) at 6.0 s."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    between(run)
    run.open(9, 6.0).hello(9, 6.01).identify(9, 6.05).ready(9, 6.1, "sess-b")
    return run.beats(9, 6.5, 10.0, d=1).rec("note", 10.0, text="end")


def _resumed_then_server_closes(code: int):
    def between(run: Run) -> None:
        run.open(2, 3.5, "resume").hello(2, 3.51).resume(2, 3.6, "sess-a", 3).resumed(2, 3.65)
        run.beats(2, 3.7, 4.5, d=4).close(2, 4.5, "server", code)
    return between


def _resume_conn(listener: str, resume: bool):
    def between(run: Run) -> None:
        run.open(2, 3.5, listener).hello(2, 3.51)
        if resume:
            run.resume(2, 3.6, "sess-a", 3)
        run.close(2, 3.7, "network", None, how="reset")
    return between


def _op9(d: bool):
    def between(run: Run) -> None:
        run.open(2, 3.5, "resume").hello(2, 3.51).resume(2, 3.6, "sess-a", 3).resumed(2, 3.65)
        run.server_op(2, 4.0, 9, d=d).close(2, 4.1, "client", 4000)
    return between


def _fault(target: str, start: float = 4.0):
    def between(run: Run) -> None:
        run.fault("down", start, "on", target=target).fault("down", start + 1.0, "off")
    return between


@pytest.mark.parametrize(
    "between, status",
    [
        # The server told the client to start over (4009), or only closed (4000) a resumed
        # session: a new session after the first, RS1's failure after the second.
        (_resumed_then_server_closes(4009), "pass"),
        (_resumed_then_server_closes(4007), "pass"),
        (_resumed_then_server_closes(4000), "fail"),
        # A reconnect to the resume URL that never got a session failed; a bare connection to
        # the discovery URL says nothing about resuming.
        (_resume_conn("resume", resume=False), "pass"),
        (_resume_conn("discovery", resume=False), "fail"),
        # op 9 d=false ends the session; d=true does not.
        (_op9(False), "pass"),
        (_op9(True), "fail"),
        # A fault on the resume URL (or both URLs) while the client tried; not one on the
        # discovery URL, nor one that was over before the loss.
        (_fault("resume"), "pass"),
        (_fault("both"), "pass"),
        (_fault("discovery"), "fail"),
        (_fault("resume", start=0.2), "fail"),
    ],
)
def test_rs1_accepts_an_identify_only_after_the_resume_path_failed(between, status):
    v = verdict(identify_after(between), "RS1")
    assert v.status == status, v.evidence
    if status == "fail":
        assert "instead of RESUMing" in v.evidence


def test_rs1_ignores_a_failed_resume_connection_opened_after_the_identify():
    def between(run: Run) -> None:
        run.open(2, 7.0, "resume").close(2, 7.1, "network", None, how="reset")
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    run.open(9, 6.0).hello(9, 6.01).identify(9, 6.05).ready(9, 6.1, "sess-b")
    between(run)
    run.beats(9, 6.5, 10.0, d=1).rec("note", 10.0, text="end")
    assert verdict(run, "RS1").status == "fail"


# BO1 / RL1: the limits' edges ---------------------------------------------------------------


def attempts(times: list[float], end: float = 30.0) -> Run:
    """Connections that open, get HELLO and are reset by the network at once."""
    run = Run()
    for i, t in enumerate(times, start=1):
        run.open(i, t, "resume").hello(i, t + 0.001).close(i, t + 0.002, "network", None, "reset")
    return run.rec("note", end, text="end")


@pytest.mark.parametrize(
    "times, status",
    [
        # Waits that grow, so only the count can fail.
        ([0.0, 0.1, 0.3, 0.7], "pass"),  # 4 attempts in 1 s: the limit
        ([0.0, 0.05, 0.15, 0.35, 0.75], "fail"),  # 5: a storm
        ([0.0, 0.06, 0.18, 0.42, 1.0], "fail"),  # the window's edge counts
        ([0.0, 0.06, 0.18, 0.42, 1.01], "pass"),
    ],
)
def test_bo1_storm_is_more_than_four_attempts_in_one_second(times, status):
    v = verdict(attempts(times), "BO1")
    assert v.status == status, v.evidence
    if status == "fail":
        assert v.evidence.startswith(
            f"storm: 5 connection attempts between 0.00 s and {times[-1]:.2f} s (conns 1..5)"
        )
    assert "storm_max_attempts=4 per 1.0 s" in v.evidence


@pytest.mark.parametrize(
    "waits, status",
    [
        # Issue 13: growth between waits proves nothing (decorrelated jitter grows ~1.1x per
        # wait at the median); "no backoff" needs proof: six waits below backoff_flat_ok
        # stepping by one amount (a fixed wait, a linear ramp), or backoff_hammer_waits (20)
        # waits from the run's start all below backoff_hammer_below (1 s).
        ([1.0, 1.4, 1.4, 1.4, 1.4, 1.4], "pass"),  # a typical decorrelated draw
        ([1.0, 1.4, 1.4, 1.4, 1.4, 1.4, 1.4], "fail"),  # six equal waits: a fixed 1.4 s wait
        ([1.0, 1.4, 1.4, 1.4, 1.4, 1.41, 1.4], "pass"),  # one step off by 0.01 s: jitter
        ([1.0, 1.4, 1.4, 1.4, 1.4, 1.402, 1.4], "fail"),  # steps 0.004 s apart: the same
        ([1.51, 1.61, 1.71, 1.81, 1.91, 2.01], "pass"),  # a ramp reaching backoff_flat_ok
        ([1.49, 1.59, 1.69, 1.79, 1.89, 1.99], "fail"),  # a linear ramp below it
        ([0.99] * 3 + [0.5] * 3 + [0.1, 0.9] * 7, "fail"),  # 20 waits below 1 s: hammering
        ([0.99] * 3 + [0.5] * 3 + [0.1, 0.9] * 6 + [1.0, 0.1], "pass"),  # the 19th reached it
    ],
)
def test_bo1_no_backoff_needs_a_fixed_step_or_twenty_waits_under_a_second(waits, status):
    times = [0.0]
    for w in waits:
        times.append(times[-1] + 0.002 + w)
    v = verdict(attempts(times), "BO1")
    assert v.status == status, v.evidence
    if status == "fail":
        assert v.evidence.startswith(
            f"no backoff: {len(waits) + 1} failed attempts from 0.00 s with waits"
        )


def test_bo1_a_wait_beyond_the_cap_is_uncapped():
    v = verdict(attempts([0.0, 1.0, 3.0, 7.0, 130.0], end=140.0), "BO1")
    assert v.status == "fail"
    assert "uncapped: a wait of 123.0 s between attempts (cap 120.0 s)" in v.evidence


def frames_in_window(count: int, span: float) -> Run:
    run = Run().open(1, 0.0).hello(1, 0.0)
    for i in range(count):
        run.beat(1, round(0.5 + span * i / max(1, count - 1), 6), None, ack=False)
    return run.rec("note", 70.0, text="end")


@pytest.mark.parametrize(
    "count, span, status",
    [
        (120, 59.0, "pass"),
        (121, 59.0, "fail"),
        (121, 60.0, "pass"),  # the 121st frame falls just outside the first one's 60 s
    ],
)
def test_rl1_allows_120_client_frames_per_60_seconds(count, span, status):
    v = verdict(frames_in_window(count, span), "RL1")
    assert v.status == status, v.evidence
    if status == "fail":
        assert v.evidence.startswith("conn 1: 121 client frames in 60 s from 0.50 s")
    else:
        assert "limits 120 frames per 60 s, 4096 bytes" in v.evidence


def test_rl1_fails_a_payload_over_4096_bytes_and_names_it():
    run = Run().open(1, 0.0).hello(1, 0.0)
    run.rec("frame_in", 0.5, conn=1, op=2, size=4096)
    assert verdict(run, "RL1").status == "pass"
    run.rec("frame_in", 0.6, conn=1, op=3, size=4097)
    v = verdict(run, "RL1")
    assert v.status == "fail"
    assert v.evidence.startswith("conn 1: op 3 at 0.60 s is 4097 bytes")
    bad = Run().open(1, 0.0).hello(1, 0.0).beat(1, 0.5, None, ack=False)
    bad.rec("frame_bad", 0.7, conn=1, size=5000, reason="too big")
    v = verdict(bad, "RL1")
    assert v.status == "fail"
    assert v.evidence.startswith("conn 1: a 5000-byte frame at 0.70 s (too big)")


def test_tolerances_reach_the_rules():
    # A wider storm limit lets five attempts through.
    exp = Tolerances(storm_max_attempts=5)
    v = verdict(attempts([0.0, 0.05, 0.15, 0.35, 0.75]), "BO1", tolerances=exp)
    assert v.status == "pass", v.evidence


# LV1: which closes at the end of a trace are the run ending (no SHUTDOWN_NOTE in the trace) ----


def closed_at_the_end(by: str, code: int | None, at: float = 5.6) -> Run:
    """Live from 0.1 s, a fault from 1.0 to 1.5 s, beats to 5.5 s, then ``by`` closes conn 1 at
    ``at`` in a trace ending at 6.0 s: with recovery_bound 4.5 LV1 checks at the very end."""
    run = healthy_start().beats(1, 0.5, 1.0, d=3)
    run.fault("lag", 1.0, "on", latency=100).fault("lag", 1.5, "off")
    return run.beats(1, 1.5, 5.55, d=3).close(1, at, by, code).rec("note", 6.0, text="end")


@pytest.mark.parametrize(
    "by, code, status",
    [
        # A client told to stop (1000/1001/no code), the network going away, a server shutting
        # down (1001): the run ending, judged as still live.
        ("client", 1000, "pass"),
        ("client", 1001, "pass"),
        ("client", None, "pass"),
        ("network", None, "pass"),
        ("server", 1001, "pass"),
        # A client closing to reconnect, a server closing a client: not the run ending.
        ("client", 4000, "fail"),
        ("server", 1000, "fail"),
        ("server", 4000, "fail"),
    ],
)
def test_lv1_counts_a_close_in_the_last_second_as_the_run_ending_only_if_a_runner_makes_it(
    by, code, status
):
    v = verdict(closed_at_the_end(by, code), "LV1", recovery_bound=4.5)
    assert v.status == status, v.evidence
    if status == "pass":
        assert v.evidence == (
            "the last fault ('lag') switched off at 1.50 s; conn 1 got READY at 0.10 s and "
            "stayed up through it; 6 ACKed heartbeat(s) after it, last at 5.50 s; tolerance "
            "heartbeat_slack=0.25"
        )
    else:
        assert "no live session (READY/RESUMED sent, connection open) by 6.00 s" in v.evidence


def test_lv1_a_close_earlier_than_the_last_second_is_not_the_run_ending():
    v = verdict(closed_at_the_end("client", 1000, at=4.4), "LV1", recovery_bound=4.5)
    assert v.status == "fail", v.evidence


def test_lv1_says_a_one_shot_control_was_applied_and_judges_a_faultless_run_from_its_start():
    run = healthy_start().beats(1, 0.5, 6.0, d=3).control("reconnect", 2.0)
    v = verdict(run.rec("note", 6.0, text="end"), "LV1", recovery_bound=3)
    assert v.status == "pass"
    assert v.evidence.startswith("the last fault ('reconnect') applied at 2.00 s; conn 1 got READY")
    v = verdict(healthy_start().beats(1, 0.5, 6.0, d=3), "LV1", recovery_bound=3)
    assert v.evidence.startswith("no faults: judged from the start of the run; conn 1 got READY")


def test_bo1_names_the_longest_run_of_failed_attempts_it_passed():
    v = verdict(attempts([0.0, 0.1, 0.3, 0.7, 1.5]), "BO1")
    assert v.status == "pass"
    assert v.evidence.startswith(
        "1 run(s) of failed attempts backed off without a storm (longest: conns 1..5: 5 failed "
        "attempts from 0.00 s, waits 0.10, 0.20, 0.40, 0.80 s); tolerances storm_max_attempts=4"
    )


def resumed_three_times() -> Run:
    """A session lost three times to the network, each time RESUMEd and live for 1.4 s."""
    run = healthy_start().beats(1, 0.5, 1.0, d=3).close(1, 1.0, "network", None, "reset")
    for conn, t in ((2, 2.0), (3, 5.0), (4, 8.0)):
        run.open(conn, t, "resume").hello(conn, t + 0.01).resume(conn, t + 0.02, "sess-a", 3)
        run.resumed(conn, t + 0.03).beats(conn, t + 0.5, t + 1.4, d=3)
        run.close(conn, t + 1.4, "network", None, "reset")
    return run.rec("note", 10.0, text="end")


def test_bo1_holds_the_client_to_the_scenarios_resume_budget():
    assert verdict(resumed_three_times(), "BO1", max_resumes=3).status == "pass"
    v = verdict(resumed_three_times(), "BO1", max_resumes=2)
    assert v.status == "fail"
    assert v.evidence.startswith("3 RESUMEs (the scenario allows 2); RESUME #3 at 8.02 s;")


# Evidence: how a server frame is named, and what the last attempt's text holds -----------------


@pytest.mark.parametrize(
    "rec, compress, text",
    [
        ({"op": 0, "t": "READY", "s": 1}, None, "op 0 READY (s=1)"),
        ({"op": 0, "t": "GUILD_CREATE", "s": None}, None, "op 0 GUILD_CREATE"),
        ({"op": 7, "s": 5, "t": None}, None, "op 7 Reconnect"),  # s only on dispatches
        ({"op": 9, "d": True, "compressed": True}, None,
         "op 9 Invalid Session (d=true, compressed)"),
        ({"op": 10, "compressed": True}, "zstd-stream", "op 10 Hello (zstd-stream)"),
        ({"op": 10, "compressed": False}, "zstd-stream", "op 10 Hello"),
        ({"op": 99}, None, "op 99 unknown op"),
    ],
)
def test_evidence_names_a_server_frame_by_op_name_type_seq_and_compression(rec, compress, text):
    from harness.oracle.view import describe_server_frame

    assert describe_server_frame(rec, compress) == text


def never_live_again(last_conn) -> Run:
    """Lost at 2.0 s under 'reset' (off at 3.0 s, record 12); ``last_conn(run)`` adds what came
    next; the trace ends at 12 s."""
    run = lost_at_two()
    last_conn(run)
    return run.rec("note", 12.0, text="end")


def test_lv1_names_only_the_last_identify_or_resume_of_the_last_attempt():
    def last_conn(run: Run) -> None:
        run.open(2, 3.5, "resume").hello(2, 3.51).resume(2, 3.6, "sess-a", 3)
        run.server_op(2, 3.7, 9, d=False).identify(2, 3.8).server_op(2, 3.9, 9, d=False)
        run.close(2, 4.0, "server", 4000)
    v = verdict(never_live_again(last_conn), "LV1", recovery_bound=5.0)
    assert v.status == "fail"
    assert v.evidence.endswith(
        "the last, conn 2 (resume): IDENTIFY at 3.80 s, op 9 Invalid Session (d=false) at "
        "3.90 s, closed by server at 4.00 s with code 4000 (close_frame)"
    ), v.evidence


def test_lv1_quotes_at_most_120_characters_of_the_clients_close_reason():
    reason = "x" * 119 + "yz"
    def last_conn(run: Run) -> None:
        run.open(2, 3.5, "resume").hello(2, 3.51)
        run.rec("conn_close", 3.6, conn=2, by="client", code=4000, reason=reason,
                how="close_frame")
    v = verdict(never_live_again(last_conn), "LV1", recovery_bound=5.0)
    assert v.evidence.endswith(f"saying '{'x' * 119}y'"), v.evidence


def test_lv1_with_no_connection_after_the_fault_names_no_attempt():
    v = verdict(never_live_again(lambda run: None), "LV1", recovery_bound=5.0)
    assert v.evidence.endswith("it never became live again; last heartbeat at 1.50 s (conn 1)")


def test_lv1_does_not_quote_a_servers_close_reason_as_the_clients():
    def last_conn(run: Run) -> None:
        run.open(2, 3.5, "resume").hello(2, 3.51)
        run.rec("conn_close", 3.6, conn=2, by="server", code=4000, reason="bye",
                how="close_frame")
    v = verdict(never_live_again(last_conn), "LV1", recovery_bound=5.0)
    assert v.evidence.endswith("closed by server at 3.60 s with code 4000 (close_frame)")


def test_lv1_names_the_last_attempt_of_a_faultless_run_whose_trace_starts_with_it():
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05).close(1, 0.5, "server", 4000)
    v = verdict(run.rec("note", 10.0, text="end"), "LV1", recovery_bound=3)
    assert v.evidence.endswith("IDENTIFY at 0.05 s, closed by server at 0.50 s with code 4000 "
                               "(close_frame)"), v.evidence


# RS1: what excuses an IDENTIFY after a loss, each against its near miss ----------------------


def _server_closes_bare_conn(code: int, by: str = "server", at: float = 3.7):
    """Conn 2 to the discovery URL gets HELLO, sends no IDENTIFY/RESUME, and is closed."""
    def between(run: Run) -> None:
        run.open(2, 3.5).hello(2, 3.51).close(2, at, by, code)
    return between


def _bare_conn_with_op9(d: bool):
    def between(run: Run) -> None:
        run.open(2, 3.5).hello(2, 3.51).server_op(2, 3.6, 9, d=d).close(2, 3.7, "client", 4000)
    return between


def _discovery_conn_that_beat():
    def between(run: Run) -> None:
        run.open(2, 3.5).hello(2, 3.51).beat(2, 3.6, None).close(2, 3.7, "network", None, "reset")
    return between


def _fault_params(kind: str = "toxic", **params):
    def between(run: Run) -> None:
        run.fault("down", 4.0, "on", kind=kind, **params).fault("down", 5.0, "off")
    return between


@pytest.mark.parametrize(
    "between, status",
    [
        # The server closed a connection that sent nothing with a start-over code (4003) before
        # the IDENTIFY; not with 4000, not the client closing with it.
        (_server_closes_bare_conn(4003), "pass"),
        (_server_closes_bare_conn(4000), "fail"),
        (_server_closes_bare_conn(4003, by="client"), "fail"),
        # op 9 d=false on a connection in between ends the session; d=true does not.
        (_bare_conn_with_op9(False), "pass"),
        (_bare_conn_with_op9(True), "fail"),
        # A connection to the discovery URL that only heartbeated says nothing about resuming.
        (_discovery_conn_that_beat(), "fail"),
        # A fault naming the resume URL by `url`, or naming no URL, or a proxy fault on it;
        # not one naming the discovery URL by `url`, nor a control.
        (_fault_params(url="resume"), "pass"),
        (_fault_params(), "pass"),
        (_fault_params(kind="proxy", target="resume"), "pass"),
        (_fault_params(url="discovery"), "fail"),
        (_fault_params(kind="control", action="withhold_acks"), "fail"),
    ],
)
def test_rs1_excuses_an_identify_only_for_what_failed_the_resume_path(between, status):
    v = verdict(identify_after(between), "RS1")
    assert v.status == status, v.evidence


def test_rs1_a_start_over_close_after_the_identify_excuses_nothing():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    run.open(2, 3.5).hello(2, 3.51)
    run.open(9, 6.0).hello(9, 6.01).identify(9, 6.05).ready(9, 6.1, "sess-b")
    run.close(2, 6.2, "server", 4003).beats(9, 6.5, 10.0, d=1).rec("note", 10.0, text="end")
    assert verdict(run, "RS1").status == "fail"


def test_rs1_a_resume_connection_that_failed_before_the_loss_excuses_nothing():
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.open(2, 1.5, "resume").hello(2, 1.51).close(2, 1.6, "network", None, how="reset")
    run.close(1, 2.0, "network", None, how="reset")
    run.open(9, 6.0).hello(9, 6.01).identify(9, 6.05).ready(9, 6.1, "sess-b")
    run.beats(9, 6.5, 10.0, d=1).rec("note", 10.0, text="end")
    assert verdict(run, "RS1").status == "fail"


# RS1 from the gateway's session records: the proof that the client had the session it dropped --


def abandoned(seq, *, resume_twice: bool = False, other_resume: bool = False,
              beat_on_2: int | None = None) -> Run:
    """sess-a (IDENTIFY on conn 1, s 1-3) is lost at 1.0 s, RESUMEd (seq ``seq``) on conn 2 at
    2.05 s (RESUMED s=4), and, with ``resume_twice``, on conn 3 at 3.05 s too; the client then
    IDENTIFYs on conn 9 at 6.05 s while sess-a is still resumable. ``beat_on_2``: conn 2 stays
    open, heartbeating that seq at 2.3 s and seq 9 at 6.5 s (after the IDENTIFY)."""
    run = Run().open(1, 0.0).hello(1, 0.01).beat(1, 0.02, None).identify(1, 0.05)
    run.session("sess-a", 0.06, "created", conn=1)
    run.ready(1, 0.1).dispatch(1, 0.2).dispatch(1, 0.3)
    run.close(1, 1.0, "network", None, how="reset").session("sess-a", 1.0, "detached", seq=3)
    if other_resume:  # another session's RESUME, with a far higher seq, proves nothing here
        run.open(4, 1.5, "resume").hello(4, 1.51).resume(4, 1.55, "sess-z", 99)
        run.close(4, 1.6, "network", None, how="reset")
    run.open(2, 2.0, "resume").hello(2, 2.01).resume(2, 2.05, "sess-a", seq)
    run.session("sess-a", 2.06, "attached", conn=2, seq=3).resumed(2, 2.1)
    if beat_on_2 is not None:
        run.beat(2, 2.3, beat_on_2)
    else:
        run.close(2, 2.5, "network", None, how="reset").session("sess-a", 2.5, "detached", seq=4)
    if resume_twice:
        run.open(3, 3.0, "resume").hello(3, 3.01).resume(3, 3.05, "sess-a", seq)
        run.session("sess-a", 3.06, "attached", conn=3, seq=4)
        run.close(3, 3.5, "network", None, how="reset").session("sess-a", 3.5, "detached", seq=4)
    run.open(9, 6.0).hello(9, 6.01).identify(9, 6.05)
    run.session("sess-b", 6.06, "created", conn=9).ready(9, 6.1, "sess-b")
    if beat_on_2 is not None:
        run.beat(2, 6.5, 9)
    return run.rec("note", 10.0, text="end")


@pytest.mark.parametrize(
    "run, lost",
    [
        (abandoned(3), "lost at 2.50 s, still resumable at the end of the run, 10.00 s) held "
         "seqs 4-4 beyond the client's seq 3 (its RESUME at 2.05 s)"),
        # A RESUME with no seq proves the session, from seq 0.
        (abandoned(None), "held seqs 1-4 beyond the client's seq 0 (its RESUME at 2.05 s)"),
        # Of two RESUMEs with the same seq, the later is named.
        (abandoned(3, resume_twice=True), "lost at 3.50 s, still resumable at the end of the "
         "run, 10.00 s) held seqs 4-4 beyond the client's seq 3 (its RESUME at 3.05 s)"),
        (abandoned(3, other_resume=True), "beyond the client's seq 3 (its RESUME at 2.05 s)"),
        # A heartbeat citing a higher seq beats the RESUME; one after the IDENTIFY does not count.
        (abandoned(3, beat_on_2=4), "(still attached to conn 2, still resumable at the end of "
         "the run, 10.00 s) held every event after the client's seq 4 (its heartbeat at 2.30 s)"),
    ],
)
def test_rs1_names_the_last_seq_the_client_showed_for_the_session_it_dropped(run, lost):
    v = verdict(run, "RS1")
    assert v.status == "fail"
    assert v.evidence.startswith("IDENTIFY on conn 9 at 6.05 s while session sess-a ("), v.evidence
    assert lost in v.evidence, v.evidence
    assert "a new session instead of a RESUME lost those events to the application" in v.evidence


# LV1 on a silent session: which missed ACK it names, and how ------------------------------------


def silent_after(first_conn) -> Run:
    """``first_conn(run)`` writes conn 1's life up to its close; conn 2 then RESUMEs at 4.05 s,
    gets RESUMED and sends no heartbeat until the server closes it at 6.5 s."""
    run = Run()
    first_conn(run)
    run.open(2, 4.0, "resume").hello(2, 4.01).resume(2, 4.05, "sess-a", 3).resumed(2, 4.1)
    return run.close(2, 6.5, "server", 4000).rec("note", 12.0, text="end")


def test_lv1_names_the_frame_fault_that_dropped_the_missed_ack():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.rec("frame_fault", 2.505, conn=1, action="server_frames", on_for=0.705,
                detail="dropped op 11 Heartbeat ACK", mode="drop", op=11)
        run.close(1, 3.8, "client", 4000)
    v = verdict(silent_after(first_conn), "LV1", recovery_bound=5.0)
    assert v.status == "fail"
    assert v.evidence.endswith(
        "before it, the heartbeat at 2.50 s on conn 1 got no ACK: the gateway dropped op 11 "
        "Heartbeat ACK at 2.50 s (server_frames, on since 1.80 s)"), v.evidence
    assert v.record_indices == (10, 11, 16, 17)


def test_lv1_does_not_blame_a_frame_fault_on_another_op_for_a_missed_ack():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.rec("frame_fault", 2.6, conn=1, action="server_frames", on_for=0.8,
                detail="dropped op 0 MESSAGE_CREATE", mode="drop", op=0)
        run.close(1, 3.8, "client", 4000)
    v = verdict(silent_after(first_conn), "LV1", recovery_bound=5.0)
    assert v.evidence.endswith("the heartbeat at 2.50 s on conn 1 got no ACK (fault "
                               "'server_frames drop op 0 (conn 1)', server_frames, on at "
                               "1.80 s)"), v.evidence


def test_lv1_names_a_toxic_by_its_type_when_it_has_no_action():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3)
        run.fault("blackhole", 2.2, "on", type="timeout", target="both")
        run.beat(1, 2.5, 3, ack=False).close(1, 3.8, "client", 4000)
        run.fault("blackhole", 3.9, "off")
    v = verdict(silent_after(first_conn), "LV1", recovery_bound=5.0)
    assert v.evidence.endswith("got no ACK (fault 'blackhole', timeout, on at 2.20 s)"), v.evidence


def test_lv1_an_ack_late_by_less_than_half_an_interval_is_no_missed_ack():
    def first_conn(run: Run) -> None:
        run.open(1, 0.0).hello(1, 0.01, interval_ms=2000).identify(1, 0.05).ready(1, 0.1)
        run.dispatch(1, 0.2).dispatch(1, 0.3).beat(1, 0.5, 3).beat(1, 2.5, 3, ack=False)
        run.beat(1, 3.4, 3).close(1, 3.8, "client", 4000)  # 0.9 s later: under 0.5 x 2 s
    v = verdict(silent_after(first_conn), "LV1", recovery_bound=5.0)
    assert v.status == "fail" and "no ACK" not in v.evidence, v.evidence


def _silent_lv1(first_conn) -> Verdict:
    return verdict(silent_after(first_conn), "LV1", recovery_bound=5.0)


def test_lv1_an_ack_that_came_only_after_the_next_beat_is_a_missed_ack():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.beat(1, 3.5, 3).close(1, 3.8, "client", 4000)
    assert "the heartbeat at 2.50 s on conn 1 got no ACK" in _silent_lv1(first_conn).evidence


def test_lv1_the_last_beat_closed_on_at_once_is_no_missed_ack():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.close(1, 2.6, "client", 4000)
    v = _silent_lv1(first_conn)
    assert v.status == "fail" and "no ACK" not in v.evidence, v.evidence


def test_lv1_a_next_beat_exactly_half_an_interval_later_leaves_the_ack_missed():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.beat(1, 3.0, 3).close(1, 3.8, "client", 4000)
    assert "the heartbeat at 2.50 s on conn 1 got no ACK" in _silent_lv1(first_conn).evidence


def test_lv1_names_the_latest_of_two_missed_acks_and_only_its_own_frame_fault():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.beat(1, 3.0, 3, ack=False)
        run.rec("frame_fault", 3.1, conn=1, action="server_frames", on_for=1.0,
                detail="dropped op 11 Heartbeat ACK", mode="drop", op=11)
        run.close(1, 3.8, "client", 4000)
    v = _silent_lv1(first_conn)
    assert "the heartbeat at 3.00 s on conn 1 got no ACK: the gateway dropped op 11 Heartbeat " \
           "ACK at 3.10 s (server_frames, on since 2.10 s)" in v.evidence, v.evidence

    def earlier_drop(run: Run) -> None:  # that drop came after the next beat: not this ACK's
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.beat(1, 3.0, 3)
        run.rec("frame_fault", 3.1, conn=1, action="server_frames", on_for=1.0,
                detail="dropped op 11 Heartbeat ACK", mode="drop", op=11)
        run.close(1, 3.8, "client", 4000)
    v = _silent_lv1(earlier_drop)
    assert "the heartbeat at 2.50 s on conn 1 got no ACK" in v.evidence, v.evidence
    assert "the gateway dropped" not in v.evidence


def test_lv1_a_frame_fault_with_no_on_for_is_on_since_its_act():
    def first_conn(run: Run) -> None:
        healthy_start(run).beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
        run.rec("frame_fault", 2.6, conn=1, action="server_frames",
                detail="dropped op 11 Heartbeat ACK", mode="drop", op=11)
        run.close(1, 3.8, "client", 4000)
    assert "(server_frames, on since 2.60 s)" in _silent_lv1(first_conn).evidence


# ZB1: the zombie rule's whole evidence, and its edges -------------------------------------------

ZB1_TOL = ("tolerances heartbeat_slack=0.25, zombie_close_grace=0.5 s, reconnect_within=5.0 s, "
           "reconnect_backoff_factor=2.0")


@pytest.mark.parametrize(
    "code, close_at, reconnect_at, status, evidence, indices",
    [
        (None, 3.5, 3.8, "pass", "conn 1: heartbeat at 2.50 s unACKed, client closed at 3.50 s "
         "with no code, conn 2 opened at 3.80 s (bound 5.00 s: reconnect_within=5.0 s)",
         (11, 12, 14)),
        # Deadline 2.5 + 1 s x 1.25 + 0.5 s = 4.25 s; reconnect bound 5 s after the close.
        (4000, 4.25, 9.25, "pass", "conn 1: heartbeat at 2.50 s unACKed, client closed at 4.25 s "
         "with code 4000, conn 2 opened at 9.25 s (bound 5.00 s: reconnect_within=5.0 s)",
         (11, 12, 14)),
        (4000, 4.26, 4.5, "fail", "conn 1: heartbeat at 2.50 s got no ACK; connection closed by "
         "client at 4.26 s with code 4000 (close_frame) (the client should have closed it by "
         "4.25 s)", (11, 12)),
        (1000, 3.5, 3.8, "fail", "conn 1: zombie close at 3.50 s used code 1000, which kills the "
         "session", (11, 12)),
        (4000, 3.5, None, "fail", "conn 1: zombie closed at 3.50 s but no later connection by the "
         "end of the run at 12.00 s (bound 5.00 s: reconnect_within=5.0 s)", (11, 12)),
    ],
)
def test_zb1_evidence_and_edges(code, close_at, reconnect_at, status, evidence, indices):
    from test_oracle import zombie_run

    v = verdict(zombie_run(code, close_at, reconnect_at), "ZB1")
    assert (v.status, v.evidence, v.record_indices) == (status, f"{evidence}; {ZB1_TOL}", indices)


def test_zb1_with_every_beat_acked_is_not_judged_and_says_so():
    v = verdict(healthy_start().beats(1, 0.5, 6.0, d=3).rec("note", 6.0, text="end"), "ZB1")
    assert (v.status, v.evidence) == (
        "not_judged", "no connection had an unACKed heartbeat the client was due to detect")


def test_zb1_a_server_close_before_the_deadline_leaves_nothing_to_detect():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
    run.close(1, 4.25, "server", 4000).rec("note", 12.0, text="end")
    assert verdict(run, "ZB1").status == "not_judged"
    run = healthy_start().beats(1, 0.5, 2.0, d=3).beat(1, 2.5, 3, ack=False)
    run.close(1, 4.3, "server", 4000).rec("note", 12.0, text="end")
    assert verdict(run, "ZB1").status == "fail"


# RS1: "never sent RESUME or IDENTIFY" counts from the later of the loss and the fault clearing ---


def test_rs1_fails_a_client_that_never_tries_again_once_the_fault_cleared():
    run = lost_at_two()  # lost at 2.0 s, the fault off at 3.0 s; nothing after it
    run.rec("note", 12.0, text="end")
    v = verdict(run, "RS1", recovery_bound=5.0, outcome="resume")
    assert (v.status, v.evidence) == (
        "fail", "conn 1 lost at 2.00 s (network ended it (reset)); the client never sent RESUME "
                "or IDENTIFY afterwards")


def test_rs1_does_not_say_never_while_the_fault_is_still_on_or_just_cleared():
    # the same loss, but the fault (a proxy down: attempts never reach the gateway) lasts until
    # 8.0 s: by the end at 12.0 s the client has had 4 s, less than the 5 s bound
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("down", 2.0, "on", target="both").close(1, 2.0, "network", None, how="reset")
    run.fault("down", 8.0, "off").rec("note", 12.0, text="end")
    assert verdict(run, "RS1", recovery_bound=5.0, outcome="resume").status == "not_judged"
    # and a fault that never switches off leaves it not judged as well
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("down", 2.0, "on", target="both").close(1, 2.0, "network", None, how="reset")
    run.rec("note", 12.0, text="end")
    assert verdict(run, "RS1", recovery_bound=5.0, outcome="resume").status == "not_judged"
