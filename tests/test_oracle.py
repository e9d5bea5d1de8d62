"""Each invariant on small hand-made traces: ones that must pass, must fail, cannot be judged."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from test_oracle_traces import Run, healthy_run, healthy_start, seed_failure_run

from harness.oracle import INVARIANTS, Expectations, RunView, Tolerances, Verdict, judge
from harness.scenario import parse_scenario


def verdict(run: Run, inv: str, delivery=None, **exp) -> Verdict:
    found = {v.invariant: v for v in judge(run.records, delivery, Expectations(**exp))}
    return found[inv]


def assert_status(v: Verdict, status: str, *words: str) -> None:
    assert v.status == status, f"{v.invariant}: expected {status}, got {v.status}: {v.evidence}"
    for word in words:
        assert word in v.evidence, f"{word!r} not in {v.evidence!r}"


def test_judge_returns_one_verdict_per_invariant_of_the_table_in_order():
    verdicts = judge(healthy_run().records, None, Expectations())
    assert [v.invariant for v in verdicts] == [i.code for i in INVARIANTS if i.check is not None]
    assert all(v.status in ("pass", "fail", "not_judged") for v in verdicts)


def test_the_table_holds_every_invariant_once_with_a_title_and_one_check_signature():
    codes = [i.code for i in INVARIANTS]
    assert len(codes) == len(set(codes)) and all(i.title for i in INVARIANTS)
    # PR1 is the runner's (the client process, not the trace): a row without a check.
    assert [i.code for i in INVARIANTS if i.check is None] == ["PR1"]
    # Every check takes (view, expectations), the delivery log inside the view, and answers for
    # its own row.
    log = [{"s": 2, "t": "MESSAGE_CREATE", "session_id": "sess-a", "ts": 0.1}]
    view = RunView(seed_failure_run(recovers=True).records, log)
    for inv in INVARIANTS:
        if inv.check is not None:
            assert inv.check(view, Expectations()).invariant == inv.code


def test_loading_a_scenario_loads_no_check():
    # A fresh interpreter: this one has long imported every check.
    code = (
        "import sys, harness.scenario as s\n"
        "s.load_scenarios([s.builtin_scenarios_dir()])\n"
        "print(sorted(m for m, mod in sys.modules.items() if m.startswith('harness')\n"
        "             and any(n.startswith('check_') for n in vars(mod))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SCENARIO = """\
name = "expects"
source = "F9"
description = "Op 9 then an IDENTIFY on the discovery URL after a wait."

[gateway]
max_concurrency = 2

[expect]
outcome = "reidentify"
recovery_bound = 3.0
duration = 8.0
"""


def test_a_scenario_file_loads_into_the_oracles_expectations():
    scenario = parse_scenario(SCENARIO, "expects.toml")
    assert scenario.expect == Expectations(
        outcome="reidentify", recovery_bound=3.0, duration=8.0, max_concurrency=2
    )
    # BO2 judges against the gateway's max_concurrency, however the scenario was built.
    gateway = replace(scenario.gateway, config=replace(scenario.gateway.config, max_concurrency=4))
    more = replace(scenario, gateway=gateway)
    assert more.expect.max_concurrency == 4
    assert_status(
        {v.invariant: v for v in judge(op9_run(6.0).records, None, more.expect)}["BO2"],
        "pass",
        "max_concurrency=4",
    )


# What the healthy run has nothing to judge by, and what each invariant then says.
HEALTHY_NOT_JUDGED = {
    "HB4": "no server op 1",
    "ZB1": "unACKed heartbeat",
    "RS1": "no resumable loss",
    "RS2": "RESUME",
    "RS3": "no delivery log",
    "RS4": "",
    "RS5": "",
    "FC1": "no fatal close",
    "BO1": "",
}


def test_healthy_run_fails_nothing_and_says_what_it_could_not_judge():
    by_id = {v.invariant: v for v in judge(healthy_run().records, None, Expectations())}
    assert not [v for v in by_id.values() if v.status == "fail"]
    for inv in ("HB1", "HB2", "HB3", "BO2", "RL1", "LV1"):
        assert by_id[inv].status == "pass", by_id[inv]
    # Nothing happened that these look at: never reported as passed.
    for inv, words in HEALTHY_NOT_JUDGED.items():
        assert_status(by_id[inv], "not_judged", words)
        assert by_id[inv].evidence


@pytest.mark.parametrize(
    "inv, run",
    [
        # Connections close right after HELLO.
        ("HB1", lambda: Run().open(1, 0.0).hello(1, 0.0).close(1, 0.3, "network", None, "reset")),
        ("HB2", lambda: Run().open(1, 0.0).hello(1, 0.0).close(1, 0.5, "client", 4000)),
        ("HB3", lambda: Run().open(1, 0.0).hello(1, 0.0)),
        ("BO2", lambda: Run().open(1, 0.0).hello(1, 0.0)),
        ("RL1", lambda: Run().open(1, 0.0).hello(1, 0.0)),
    ],
)
def test_an_invariant_without_anything_to_judge_is_not_judged(inv: str, run) -> None:
    assert_status(verdict(run(), inv), "not_judged")


# HB1 -------------------------------------------------------------------------------------------


def test_hb1_fails_on_a_heartbeat_before_hello():
    run = Run().open(1, 0.0).beat(1, 0.05, None).hello(1, 0.1).beats(1, 0.5, 3.0, None)
    assert_status(verdict(run, "HB1"), "fail", "before HELLO", "conn 1")


@pytest.mark.parametrize(
    "slack, status, words",
    [
        (0.25, "fail", ("1.60 s after HELLO", "bound 1.25 s", "heartbeat_slack=0.25")),
        (0.7, "pass", ()),  # a wider tolerance
    ],
)
def test_hb1_fails_a_late_first_heartbeat(slack: float, status: str, words: tuple[str, ...]):
    run = Run().open(1, 0.0).hello(1, 0.0).beats(1, 1.6, 4.0, None)
    v = verdict(run, "HB1", tolerances=Tolerances(heartbeat_slack=slack))
    assert_status(v, status, *words)
    assert v.record_indices  # the late beat (failing) or the first beats (passing)


# HB2 -------------------------------------------------------------------------------------------


def test_hb2_fails_on_a_gap_and_on_a_heartbeat_log_that_stops():
    run = healthy_start().beats(1, 0.5, 3.0, d=3).beat(1, 4.5, 3).rec("note", 5.0, text="end")
    assert_status(verdict(run, "HB2"), "fail", "2.00 s between heartbeats", "bound 1.25 s")
    stopped = healthy_start().beats(1, 0.5, 3.0, d=3).rec("note", 9.0, text="end")
    assert_status(verdict(stopped, "HB2"), "fail", "end of the trace")


def test_hb2_does_not_judge_gaps_inside_fault_windows():
    run = healthy_start().beats(1, 0.5, 3.0, d=3)
    run.fault("latency", 2.8, "on", latency=2000).fault("latency", 4.0, "off")
    run.beats(1, 4.5, 7.0, d=3)
    assert_status(verdict(run, "HB2"), "pass", "1 gap(s) overlapping a fault window not judged")


# HB3 -------------------------------------------------------------------------------------------


def test_hb3_fails_on_a_seq_never_sent_and_on_a_stale_seq():
    run = healthy_start().beats(1, 0.5, 3.0, d=0)
    assert_status(verdict(run, "HB3"), "fail", "d=0", "never sent")
    stale = healthy_start().beats(1, 0.5, 3.0, d=1)
    assert_status(verdict(stale, "HB3"), "fail", "d=1", "s=3 was sent")
    null_after = healthy_start().beats(1, 2.0, 4.0, d=None)
    assert_status(verdict(null_after, "HB3"), "fail", "d=None")


def test_hb3_accepts_null_before_any_dispatch_and_a_seq_still_in_flight():
    run = Run().open(1, 0.0).hello(1, 0.0).beat(1, 0.4, None).identify(1, 0.5).ready(1, 0.6)
    run.beat(1, 1.1, 1)  # READY was sent 0.5 s ago: fine
    run.dispatch(1, 1.9).beat(1, 2.1, 1)  # s=2 still in flight 0.2 s later: fine
    run.beat(1, 3.1, 2)
    assert_status(verdict(run, "HB3"), "pass", "seq_staleness=1.0")


# HB4 -------------------------------------------------------------------------------------------


def test_hb4_passes_on_a_prompt_answer_and_fails_on_none():
    run = (
        healthy_start()
        .beats(1, 0.5, 2.0, d=3)
        .server_op(1, 2.1, 1)
        .beat(1, 2.15, 3)
        .beats(1, 2.5, 5.0, 3)
    )
    assert_status(verdict(run, "HB4"), "pass", "op1_reply_within=1.0")
    late = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.1, 1).beats(1, 2.5 + 0.9, 5.0, 3)
    assert_status(verdict(late, "HB4"), "fail", "server op 1 at 2.10 s", "next op 1 at 3.40 s")


# ZB1 -------------------------------------------------------------------------------------------


def zombie_run(close_code: int | None, close_at: float, reconnect_at: float | None) -> Run:
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("withhold_acks", 2.2, "on", kind="control")
    run.beat(1, 2.5, 3, ack=False)
    run.close(1, close_at, "client", close_code)
    run.fault("withhold_acks", close_at, "off", kind="control")
    if reconnect_at is not None:
        run.open(2, reconnect_at, "resume").hello(2, reconnect_at + 0.01).resume(
            2, reconnect_at + 0.05, "sess-a", 3
        )
        run.resumed(2, reconnect_at + 0.1).beats(2, reconnect_at + 0.5, reconnect_at + 4.0, d=4)
    run.rec("note", 12.0, text="end")
    return run


def test_zb1_passes_when_the_client_closes_and_reconnects():
    v = verdict(zombie_run(4000, 3.5, 3.8), "ZB1")
    assert_status(v, "pass", "unACKed", "code 4000", "conn 2 opened at 3.80 s")


def test_zb1_fails_on_a_client_that_keeps_the_zombie_open():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).beats(1, 2.5, 9.0, d=3, ack=False)
    assert_status(verdict(run, "ZB1"), "fail", "got no ACK", "still open")


def test_zb1_fails_on_close_1000_and_on_no_reconnect():
    assert_status(verdict(zombie_run(1000, 3.5, 3.8), "ZB1"), "fail", "code 1000")
    assert_status(verdict(zombie_run(4000, 3.5, None), "ZB1"), "fail", "no later connection")


def test_zb1_counts_a_reconnect_opened_before_the_zombie_close_was_recorded():
    # Found by a wall-clock fuzz campaign (issue 12.3): the server was silent (go_silent), so
    # the client's close 4000 was recorded only when TCP ended, 4 ms after its reconnect opened.
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("go_silent", 2.2, "on", kind="control")
    run.beat(1, 2.5, 3, ack=False)
    run.open(2, 3.496, "resume")
    run.close(1, 3.5, "client", 4000)
    run.fault("go_silent", 5.0, "off", kind="control")
    run.hello(2, 5.01).resume(2, 5.05, "sess-a", 3).resumed(2, 5.1).beats(2, 5.5, 9.0, d=4)
    run.rec("note", 12.0, text="end")
    assert_status(verdict(run, "ZB1"), "pass", "conn 2 opened at 3.50 s")


# RS1 / RS2 / RS4 --------------------------------------------------------------------------------


def test_seed_failure_recovered_passes_rs1_rs2_lv1():
    run = seed_failure_run(recovers=True)
    assert_status(verdict(run, "RS1"), "pass")
    assert_status(verdict(run, "RS2"), "pass", "seq=3")
    assert_status(
        verdict(run, "LV1", outcome="resume", recovery_bound=5.0), "pass", "RESUMED", "bound 5.0 s"
    )


def test_seed_failure_unrecovered_fails_lv1_citing_the_last_heartbeat():
    v = verdict(seed_failure_run(recovers=False), "LV1", outcome="resume", recovery_bound=5.0)
    assert_status(v, "fail", "never became live again", "last heartbeat at 1.50 s")
    assert v.record_indices


def test_rs1_fails_when_the_client_identifies_after_a_resumable_loss():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "server", 4000)
    run.open(2, 2.5, "discovery").hello(2, 2.51).identify(2, 2.6).ready(2, 2.7, "sess-b")
    run.beats(2, 3.0, 6.0, d=1)
    assert_status(verdict(run, "RS1"), "fail", "server closed with 4000", "IDENTIFYd on conn 2")


def test_rs1_fails_when_resume_goes_to_the_discovery_url():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "discovery").hello(2, 2.51).resume(2, 2.6, "sess-a", 3).resumed(2, 2.7)
    assert_status(verdict(run, "RS1"), "fail", "'discovery' URL")


def test_rs1_without_session_records_accepts_identify_after_the_resume_url_kept_failing():
    # Nothing in this trace says whether the server still held the session: benefit of doubt.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").close(2, 2.51, "network", None, "reset")
    run.open(3, 3.5, "discovery").hello(3, 3.51).identify(3, 3.6).ready(3, 3.7, "sess-b")
    assert_status(verdict(run, "RS1"), "pass")


def abandoned_run(between: str = "", identify_at: float = 7.3, expires_at: float = 122.0) -> Run:
    """Issue 10, as the gateway records it: session sess-a (READY s=1, dispatches up to s=5; the
    client's heartbeats cite 3) is lost at 2.0 s; the reconnect to the resume URL is reset in its
    handshake; ``between`` is what happens on a reconnect next; the client then IDENTIFYs on the
    discovery URL at ``identify_at``; sess-a expires at ``expires_at`` with seq 59."""
    run = Run().open(1, 0.0).hello(1, 0.01).identify(1, 0.05)
    run.session("sess-a", 0.1, "created", conn=1).session("sess-a", 0.1, "attached", conn=1)
    run.ready(1, 0.1).dispatch(1, 0.2).dispatch(1, 0.3).beats(1, 0.5, 2.0, d=3)
    run.dispatch(1, 1.9).dispatch(1, 1.95)
    run.close(1, 2.0, "network", None, "reset").session("sess-a", 2.0, "detached", conn=1, seq=5)
    run.open(2, 2.5, "resume").close(2, 2.51, "network", None, "reset")
    if between:
        run.open(3, 4.0, "resume").hello(3, 4.0).resume(3, 4.05, "sess-a", 3)
        if between == "op9":
            run.server_op(3, 4.06, 9, d=False).close(3, 4.1, "client", 4000)
        elif between == "4009":
            run.session("sess-a", 4.06, "invalidated", conn=None, seq=5)
            run.close(3, 4.06, "server", 4009)
    run.open(4, identify_at, "discovery").hello(4, identify_at).identify(4, identify_at + 0.01)
    run.session("sess-b", identify_at + 0.02, "created", conn=4)
    run.session("sess-b", identify_at + 0.02, "attached", conn=4)
    run.ready(4, identify_at + 0.02, "sess-b").beats(4, identify_at + 0.5, identify_at + 4.0, d=1)
    if expires_at < identify_at + 4.0 or expires_at == 122.0:
        run.session("sess-a", expires_at, "expired", seq=59)
    return run


def test_rs1_fails_an_identify_while_the_server_still_held_the_session():
    """Issue 10: the resume path failed, so the old oracle let the IDENTIFY pass; the server
    still held the session (until 122 s), so every event after the client's seq was lost."""
    v = verdict(abandoned_run(), "RS1")
    assert_status(
        v,
        "fail",
        "IDENTIFY on conn 4 at 7.31 s while session sess-a (lost at 2.00 s, resumable until it "
        "expired at 122.00 s) held seqs 4-59 beyond the client's seq 3 (its heartbeat at 0.50 s)",
        "nothing told the client",
    )
    assert v.record_indices
    # With the delivery log, the client's last seq is what the application got.
    log = [{"s": s, "t": "X", "session_id": "sess-a", "rx": 0.1} for s in (1, 2, 3, 4)]
    v = verdict(abandoned_run(), "RS1", delivery=log)
    assert_status(v, "fail", "held seqs 5-59 beyond the client's seq 4 (its delivery log)")


@pytest.mark.parametrize(
    "case",
    ["op9", "4009", "expired", "expiring"],
)
def test_rs1_passes_an_identify_once_the_session_was_gone_or_the_client_was_told(case: str):
    if case in ("op9", "4009"):
        run = abandoned_run(between=case)
    elif case == "expired":  # the TTL ran out while the whole gateway was down
        run = abandoned_run(identify_at=130.0, expires_at=122.0)
    else:  # within expiry_slack of the server's expiry: the client's window started earlier
        run = abandoned_run(identify_at=121.0, expires_at=122.0)
    assert_status(verdict(run, "RS1"), "pass", "1 IDENTIFY(s) after a session the client held")


def test_rs1_accepts_a_resume_on_the_discovery_url_after_the_resume_url_failed():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    run.open(2, 2.5, "resume").close(2, 2.51, "network", None, "reset")
    run.open(3, 3.5, "discovery").hello(3, 3.51).resume(3, 3.6, "sess-a", 3).resumed(3, 3.7)
    assert_status(verdict(run, "RS1"), "pass", "or on the discovery URL")


def test_rs1_judges_each_shard_by_its_own_session():
    # Shard 0 abandons its resumable session; shard 1 IDENTIFYs after op 9 d=false, rightly.
    run = Run()
    for conn, shard, sid in ((1, [0, 2], "sess-a"), (2, [1, 2], "sess-b")):
        run.open(conn, 0.0).hello(conn, 0.0).identify(conn, 0.01, shard=shard)
        run.session(sid, 0.02, "created", conn=conn).session(sid, 0.02, "attached", conn=conn)
        run.ready(conn, 0.02, sid).dispatch(conn, 0.03, sid).beats(conn, 0.3, 2.0, 2)
    run.close(1, 2.0, "network", None, "reset").session("sess-a", 2.0, "detached", conn=1, seq=2)
    run.open(3, 2.5, "resume").close(3, 2.51, "network", None, "reset")
    run.open(4, 8.0).hello(4, 8.0).identify(4, 8.0, shard=[0, 2])
    run.server_op(2, 9.0, 9, d=False).session("sess-b", 9.0, "invalidated", conn=2, seq=2)
    run.close(2, 9.0, "client", 4000)
    run.open(5, 11.0).hello(5, 11.0).identify(5, 11.0, shard=[1, 2])
    v = verdict(run, "RS1")
    assert_status(v, "fail", "IDENTIFY on conn 4 at 8.00 s while session sess-a", "2 IDENTIFY(s)")
    assert "more)" not in v.evidence and "sess-b" not in v.evidence


def test_rs2_fails_on_an_old_session_id_and_on_a_seq_regression():
    # F9: a new session after op 9, then a resume that still cites the old session.
    run = (
        healthy_start()
        .beats(1, 0.5, 2.0, d=3)
        .server_op(1, 2.0, 9, d=False)
        .close(1, 2.1, "client", 4000)
    )
    run.open(2, 4.0).hello(2, 4.01).identify(2, 4.1).ready(2, 4.2, "sess-b").beat(2, 4.5, 1)
    run.close(2, 5.0, "network", None, "reset")
    run.open(3, 5.5, "resume").hello(3, 5.51).resume(3, 5.6, "sess-a", 3)
    assert_status(verdict(run, "RS2"), "fail", "session_id 'sess-a'", "'sess-b'")
    regress = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, "reset")
    regress.open(2, 2.5, "resume").hello(2, 2.51).resume(2, 2.6, "sess-a", 1)
    assert_status(verdict(regress, "RS2"), "fail", "seq=1", "had s=3")


@pytest.mark.parametrize(
    "code, status, words", [(1000, "fail", ("closed with 1000", "after op 7")), (4000, "pass", ())]
)
def test_rs4_fails_on_close_1000_after_op7_and_passes_on_4000(
    code: int, status: str, words: tuple[str, ...]
):
    run = (
        healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 7).close(1, 2.05, "client", code)
    )
    run.open(2, 2.2, "resume").hello(2, 2.21).resume(2, 2.3, "sess-a", 3)
    assert_status(verdict(run, "RS4"), status, *words)


# RS3 --------------------------------------------------------------------------------------------


def resume_with_replay() -> Run:
    run = (
        healthy_start()
        .beats(1, 0.5, 1.0, d=3)
        .dispatch(1, 1.1)
        .close(1, 1.2, "network", None, "reset")
    )
    run.open(2, 1.5, "resume").hello(2, 1.51).resume(2, 1.6, "sess-a", 3)
    run.rec("frame_out", 1.65, conn=2, op=0, s=4, t="MESSAGE_CREATE", size=300, compressed=False)
    run.seq["sess-a"] = 4
    run.resumed(2, 1.7, replayed=1).dispatch(2, 2.0)
    return run


def log(*seqs: int) -> list[dict]:
    return [
        {"s": s, "t": "MESSAGE_CREATE", "session_id": "sess-a", "ts": 0.1 * i}
        for i, s in enumerate(seqs)
    ]


@pytest.mark.parametrize(
    "seqs, status, word",
    [
        ((2, 3, 4, 6), "pass", "once each"),
        ((2, 3, 4, 4, 6), "fail", "delivered twice"),
        ((2, 4, 3, 6), "fail", "delivered after"),
        ((2, 3, 6), "fail", "never delivered"),
        (None, "not_judged", "no delivery log"),
    ],
)
def test_rs3_passes_on_exactly_once_and_fails_on_dupes_order_and_gaps(
    seqs: tuple[int, ...] | None, status: str, word: str
):
    delivery = None if seqs is None else log(*seqs)
    assert_status(verdict(resume_with_replay(), "RS3", delivery=delivery), status, word)


# RS5 --------------------------------------------------------------------------------------------


def op9_run(identify_at: float, listener: str = "discovery", resume_instead: bool = False) -> Run:
    run = (
        healthy_start()
        .beats(1, 0.5, 2.0, d=3)
        .server_op(1, 2.0, 9, d=False)
        .close(1, 2.05, "client", 4000)
    )
    run.open(2, identify_at - 0.1, listener).hello(2, identify_at - 0.09)
    if resume_instead:
        run.resume(2, identify_at, "sess-a", 3)
    else:
        run.identify(2, identify_at).ready(2, identify_at + 0.1, "sess-b")
    return run.beats(2, identify_at + 0.5, identify_at + 3.0, d=1)


@pytest.mark.parametrize(
    "run, status, word",
    [
        (dict(identify_at=4.5), "pass", "after 2.50 s"),  # after a random wait
        (dict(identify_at=2.4), "fail", "after only 0.40 s"),  # too eager
        (dict(identify_at=4.5, resume_instead=True), "fail", "RESUMEd"),
        (dict(identify_at=4.5, listener="resume"), "fail", "resume URL"),
    ],
)
def test_rs5_wants_an_identify_on_the_discovery_url_after_a_wait(run: dict, status: str, word: str):
    assert_status(verdict(op9_run(**run), "RS5"), status, word)


# FC1 --------------------------------------------------------------------------------------------


def test_fc1_passes_when_the_client_stops_and_fails_when_it_reconnects():
    run = (
        healthy_start()
        .beats(1, 0.5, 2.0, d=3)
        .close(1, 2.0, "server", 4014)
        .rec("note", 8.0, text="end")
    )
    assert_status(verdict(run, "FC1"), "pass", "fatal 4014")
    assert_status(verdict(run, "LV1", outcome="stop"), "pass")
    run.open(2, 3.0).hello(2, 3.01).identify(2, 3.1)
    assert_status(verdict(run, "FC1"), "fail", "reconnected anyway", "conn 2")
    assert_status(verdict(run, "LV1", outcome="stop"), "fail", "expected the client to stop")


# BO1 / BO2 --------------------------------------------------------------------------------------


def attempts(times: list[float]) -> Run:
    run = healthy_start().beats(1, 0.5, 1.0, d=3).close(1, 1.0, "network", None, "reset")
    for i, t in enumerate(times, start=2):
        run.open(i, t, "resume").rec("ws_rejected", t + 0.01, conn=i, status=503, reason="fault")
        run.close(i, t + 0.02, "server", None, "no_close_frame")
    return run


def test_bo1_fails_on_a_flat_retry_loop_and_a_storm():
    flat = attempts([1.5 + 0.5 * i for i in range(8)])
    assert_status(verdict(flat, "BO1"), "fail", "no backoff")
    storm = attempts([1.5 + 0.1 * i for i in range(8)])
    assert_status(verdict(storm, "BO1"), "fail", "storm")


def test_bo1_passes_on_jittered_exponential_backoff():
    times, t, gap = [], 1.5, 0.3
    for jitter in (1.0, 1.1, 0.9, 1.05, 0.95):
        times.append(t)
        t += gap * jitter
        gap *= 2
    assert_status(
        verdict(attempts(times), "BO1"),
        "pass",
        "backed off",
        "conns 1..6",
        "waits 0.50, 0.28, 0.64",
    )


def test_bo1_fails_over_max_resumes():
    assert_status(verdict(seed_failure_run(True), "BO1", max_resumes=0), "fail", "1 RESUMEs")


@pytest.mark.parametrize(
    "identify_at, exp, status, words",
    [
        (2.4, {}, "fail", ("2.35 s apart", "window 5.0 s")),
        (6.0, {}, "pass", ()),
        (6.0, dict(max_identifies=1), "fail", ("2 IDENTIFYs",)),
    ],
)
def test_bo2_fails_on_identifies_too_close_and_over_the_allowed_count(
    identify_at: float, exp: dict, status: str, words: tuple[str, ...]
):
    assert_status(verdict(op9_run(identify_at), "BO2", **exp), status, *words)


def test_bo2_fails_when_the_start_budget_is_spent():
    run = (
        Run()
        .open(1, 0.0)
        .hello(1, 0.0)
        .rec("identify_budget", 0.01, remaining=0, total=1000, bucket=0)
    )
    run.identify(1, 0.1)
    assert_status(verdict(run, "BO2"), "fail", "budget")


# RL1 --------------------------------------------------------------------------------------------


def test_rl1_fails_on_a_flood_and_on_a_big_payload():
    run = healthy_start()
    for i in range(130):
        run.rec("frame_in", 0.5 + i * 0.01, conn=1, op=3, size=80)
    assert_status(verdict(run, "RL1"), "fail", "frames in 60 s")
    big = healthy_start().rec("frame_in", 0.5, conn=1, op=3, size=5000)
    assert_status(verdict(big, "RL1"), "fail", "5000 bytes")
    assert_status(verdict(healthy_run(), "RL1"), "pass", "120 frames per 60 s")


# LV1 --------------------------------------------------------------------------------------------


def test_lv1_not_judged_when_a_fault_never_clears_or_the_trace_is_too_short():
    run = healthy_run().fault("blackhole", 6.0, "on", target="both")
    assert_status(verdict(run, "LV1"), "not_judged", "never switched off")
    short = Run()
    short.trace.records.extend(
        r for r in seed_failure_run(recovers=False).records if r["ts"] <= 4.0
    )
    assert_status(
        verdict(short, "LV1", recovery_bound=5.0), "not_judged", "before the 5.0 s recovery bound"
    )
    # Live by the end of a short trace is enough.
    live = (
        healthy_start()
        .fault("latency", 1.0, "on")
        .fault("latency", 2.0, "off")
        .beats(1, 0.5, 4.0, 3)
    )
    assert_status(verdict(live, "LV1", recovery_bound=5.0), "pass")


def test_lv1_fails_on_a_live_session_whose_heartbeats_stop():
    run = seed_failure_run(recovers=True)
    stopped = Run()
    for rec in run.records:
        if not (
            rec["kind"] in ("frame_in", "frame_out") and rec.get("conn") == 3 and rec["ts"] > 6.0
        ):
            stopped.trace.records.append(rec)
    v = verdict(stopped, "LV1", recovery_bound=5.0)
    assert_status(v, "fail", "heartbeats stopped")


@pytest.mark.parametrize(
    "outcome, status, word",
    [
        ("reidentify", "pass", "outcome reidentify"),
        ("resume", "fail", "expected the client to resume"),
    ],
)
def test_lv1_checks_the_outcome_class(outcome: str, status: str, word: str):
    run = op9_run(4.5).rec("note", 12.0, text="end")
    run.beats(2, 7.5, 12.0, d=1)
    assert_status(verdict(run, "LV1", outcome=outcome, recovery_bound=5.0), status, word)


def test_verdicts_serialize_with_their_record_indices():
    v = verdict(seed_failure_run(recovers=False), "LV1", recovery_bound=5.0)
    d = v.to_dict()
    assert (
        d["invariant"] == "LV1" and d["status"] == "fail" and isinstance(d["record_indices"], list)
    )


def test_the_run_ending_is_not_a_zombie_a_loss_or_an_outage():
    # The runner stops the client right after a heartbeat: it closes with 1000, then the trace ends.
    run = (
        healthy_start()
        .beats(1, 0.5, 5.0, d=3)
        .beat(1, 5.5, 3, ack=False)
        .close(1, 5.6, "client", 1000)
    )
    run.rec("note", 5.7, text="end")
    for inv in ("ZB1", "RS4"):
        assert_status(verdict(run, inv, outcome="resume"), "not_judged")
    assert_status(verdict(run, "LV1", outcome="resume", recovery_bound=3.0), "pass")
    # The client process is killed instead: the gateway sees the network end the connection.
    killed = healthy_start().beats(1, 0.5, 5.0, d=3).close(1, 5.1, "network", None, "eof")
    killed.rec("note", 5.2, text="end")
    assert_status(verdict(killed, "RS1", outcome="resume"), "not_judged")
    assert_status(verdict(killed, "LV1", outcome="resume", recovery_bound=3.0), "pass")


def test_gateway_control_records_count_alone_and_do_not_double_the_runners_fault_records():
    run = healthy_start().beats(1, 0.5, 6.0, d=3)
    run.control("withhold_acks", 1.0, on=True).control("withhold_acks", 2.0, on=False)
    run.control("reset", 3.0)
    alone = RunView(run.records).windows
    assert [(w.start, w.end) for w in alone] == [(1.0, 2.0), (3.0, 3.0)]
    run.fault("withhold-acks", 1.0, "on", kind="control", action="withhold_acks")
    run.fault("withhold-acks", 2.0, "off", kind="control", action="withhold_acks")
    run.fault("drop", 3.0, "on", kind="control", action="reset")
    both = RunView(run.records).windows
    assert [(w.name, w.start, w.end) for w in both] == [
        ("withhold-acks", 1.0, 2.0),
        ("drop", 3.0, 3.0),
    ]


def test_a_client_that_never_connects_fails_liveness_even_with_an_empty_trace():
    # The runner's start note is all a client that crashed at start-up leaves behind.
    run = Run().rec("note", 0.002, text="world: real mode")
    v = verdict(run, "LV1", recovery_bound=2.0, duration=5.0)
    assert_status(v, "fail", "never became live again")
    # Without knowing how long the run lasted the oracle cannot tell.
    assert_status(verdict(run, "LV1", recovery_bound=2.0), "not_judged", "the run ends at 0.00 s")


def test_stop_scenarios_need_the_client_to_get_as_far_as_the_fatal_close():
    never = Run().rec("note", 0.0, text="world: real mode")
    assert_status(
        verdict(never, "LV1", outcome="stop", duration=4.0), "fail", "never got a session"
    )
    live = healthy_run()
    assert_status(verdict(live, "LV1", outcome="stop"), "not_judged", "no fatal close happened")


def test_traces_need_not_start_at_zero():
    # During a run, run_settled judges with the raw trio clock; traces are rebased afterwards.
    shifted = Run()
    for rec in healthy_run().records:
        shifted.trace.records.append({**rec, "ts": rec["ts"] + 5000.0})
    assert_status(verdict(shifted, "LV1", recovery_bound=2.0, duration=6.0), "pass")
    assert_status(verdict(shifted, "HB2"), "pass")


def test_bo1_counts_sessions_the_server_ends_at_once_and_wants_jitter():
    # Each RESUME succeeds and is reset at once; the client reconnects without waiting (a storm).
    run = healthy_start().beats(1, 0.5, 0.9, d=3).close(1, 0.9, "server", None, "reset")
    t = 0.91
    for conn in range(2, 7):
        run.open(conn, t, "resume").hello(conn, t + 0.002).resume(conn, t + 0.004, "sess-a", 3)
        run.resumed(conn, t + 0.005).close(conn, t + 0.006, "server", None, "reset")
        t += 0.02
    assert_status(verdict(run, "BO1"), "fail", "storm: 6 connection attempts")
    # Waits that double exactly: backed off, but in lock-step with every other client.
    exact, t, wait = Run(), 0.0, 0.25
    for conn in range(1, 7):
        exact.open(conn, t, "resume").close(conn, t + 0.01, "network", None, "reset")
        t += 0.01 + wait
        wait *= 2
    assert_status(verdict(exact, "BO1"), "fail", "no jitter")


def test_hb3_catches_a_reply_that_parrots_the_servers_op1():
    # F10: the server's op 1 carries garbage; the reply must carry the client's own seq.
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.1, 1, d=999)
    run.beat(1, 2.12, 999).beats(1, 2.5, 4.0, d=3)
    assert_status(verdict(run, "HB3"), "fail", "d=999", "never sent")
    assert_status(verdict(run, "HB4"), "pass")


def test_rs2_does_not_hold_an_old_sessions_seq_against_a_new_session():
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 9, d=False)
    # The client keeps heartbeating with the old session's seq until the new READY arrives.
    run.beat(1, 2.5, 3).identify(1, 3.0).ready(1, 3.1, "sess-b").dispatch(1, 3.2, "sess-b")
    run.beat(1, 3.5, 2).close(1, 3.6, "network", None, "reset")
    run.open(2, 3.8, "resume").hello(2, 3.81).resume(2, 3.9, "sess-b", 2)
    assert_status(verdict(run, "RS2"), "pass")


def seed_mutant_run() -> Run:
    """The seed's client as the fault proxy and the gateway see it under simulation: it resumes
    after the handshake reset but never heartbeats again; the gateway closes it at each deadline,
    exactly one interval x 1.25 after HELLO."""
    run = Run().open(1, 0.0).hello(1, 0.0).identify(1, 0.0).ready(1, 0.0)
    run.fault("tls-handshake-reset", 0.0, "on", target="resume", only_connection=1)
    run.close(1, 0.5, "server", None, "reset")
    run.fault("drop-after-ready", 0.5, "on", kind="control", action="reset", target="all")
    run.fault("drop-after-ready", 0.5, "off", kind="control", action="reset", target="all")
    run.open(2, 0.775, "resume").close(2, 0.775, "network", None, "reset")
    run.open(3, 1.381, "resume").hello(3, 1.381).resume(3, 1.381, "sess-a", 1).resumed(3, 1.381)
    run.fault("tls-handshake-reset", 2.0, "off", target="resume", only_connection=1)
    run.close(3, 2.631, "server", 1000)
    run.open(4, 4.108, "resume").hello(4, 4.108).resume(4, 4.108, "sess-a", 2).resumed(4, 4.108)
    run.close(4, 5.358, "server", 1000)
    return run


def test_the_seed_client_fails_even_when_the_gateway_closes_it_exactly_at_the_deadline():
    run = seed_mutant_run()
    # The toxic only touched the resume proxy's first connection: conn 3 is judged.
    assert_status(verdict(run, "HB1"), "fail", "conn 3: no heartbeat")
    v = verdict(run, "LV1", outcome="resume", recovery_bound=3.0, duration=6.0)
    assert_status(v, "fail", "conn 4 got RESUMED", "closed by server")


def test_faults_aimed_at_one_connection_excuse_only_that_connection():
    view = RunView(seed_mutant_run().records)
    conns = view.conns
    assert view.fault_active(1.5, 1.9, conns[2]) is not None  # the resume proxy's 1st connection
    assert view.fault_active(1.5, 1.9, conns[3]) is None  # its 2nd
    assert view.fault_active(1.5, 1.9, conns[1]) is None  # the discovery URL
    assert view.fault_active(1.5, 1.9) is not None  # without a connection: any fault counts


def test_lv1_fails_a_silent_session_after_recovery_even_if_a_newer_one_is_too_young():
    run = healthy_start().fault("resume-resets", 0.0, "on", target="resume")
    run.close(1, 0.5, "server", None, "reset").fault("resume-resets", 3.0, "off", target="resume")
    run.open(4, 3.2, "resume").hello(4, 3.2).resume(4, 3.21, "sess-a", 3).resumed(4, 3.22)
    run.close(4, 4.47, "server", 1000)  # the gateway's heartbeat deadline
    run.open(5, 7.8, "resume").hello(5, 7.8).resume(5, 7.81, "sess-a", 4).resumed(5, 7.82)
    run.close(5, 9.0, "client", 1000)  # the run ends
    v = verdict(run, "LV1", recovery_bound=5.0, duration=9.0)
    assert_status(v, "fail", "conn 4 got RESUMED at 3.22 s but sent no heartbeat")


# False alarms and a blind spot found by fuzzing the reference client -----------------------------


def test_the_gateway_deadline_is_past_the_oracles_so_a_silent_client_is_caught():
    from harness.scenario import GatewayKnobs

    # The scenario default closes a silent client at HELLO + 1.5 intervals, past HB1's 1.25.
    grace = GatewayKnobs().config.heartbeat_grace
    assert grace > Tolerances().heartbeat_slack
    silent = Run().open(1, 0.0).hello(1, 0.0).identify(1, 0.05).ready(1, 0.1)
    silent.close(1, 1.0 + grace, "server", 1000)
    assert_status(verdict(silent, "HB1"), "fail", "conn 1: no heartbeat", "closed by server")
    # A client whose first beat comes late but inside the slack is fine.
    ok = Run().open(1, 0.0).hello(1, 0.0).identify(1, 0.05).ready(1, 0.1).beats(1, 1.2, 4.0, d=1)
    assert_status(verdict(ok, "HB1"), "pass")


def ready_cut_run(beat: bool = False, d: int | None = None) -> Run:
    """READY goes out on conn 1, then the discovery proxy cuts the connection; the client comes
    back 5 s later and IDENTIFYs. ``beat``: a heartbeat carrying ``d`` on conn 1 after READY."""
    run = Run().open(1, 0.0).hello(1, 0.0).identify(1, 0.0).ready(1, 0.0)
    run.dispatch(1, 0.0).dispatch(1, 0.0)
    if beat:
        run.beat(1, 0.3, d)
    run.fault("f1", 0.4, "on", kind="proxy", action="down", target="discovery")
    run.close(1, 0.4, "network", None, "eof")
    run.fault("f1", 1.1, "off", kind="proxy", action="down", target="discovery")
    run.open(2, 5.0).hello(2, 5.0).identify(2, 5.0).ready(2, 5.0, "sess-b").beats(2, 5.5, 8.0, d=1)
    return run


@pytest.mark.parametrize(
    "run, delivery, status, words",
    [
        # READY may never have arrived: no proof the client had the session.
        (dict(), None, "not_judged", ("may never have reached the client",)),
        # A heartbeat with d=null after READY shows the client had no seq yet: no proof either.
        (dict(beat=True), None, "not_judged", ("cited s>0",)),
        # Its heartbeat cited s=3, which only READY's stream could have given it.
        (dict(beat=True, d=3), None, "fail", ("IDENTIFYd on conn 2", "cited d=3")),
        # Its delivery log says it had the session.
        (
            dict(),
            [{"s": 1, "t": "READY", "session_id": "sess-a", "rx": 0.0}],
            "fail",
            ("IDENTIFYd on conn 2", "delivery log holds session sess-a"),
        ),
    ],
)
def test_rs1_holds_an_identify_against_the_client_only_when_it_had_the_session(
    run: dict, delivery: list | None, status: str, words: tuple[str, ...]
):
    assert_status(verdict(ready_cut_run(**run), "RS1", delivery=delivery), status, *words)


@pytest.mark.parametrize(
    "d, status, words",
    [
        # d=3 may still be sess-a's last seq (sess-b's READY in flight): not judged.
        (3, "not_judged", ("cited s>3",)),
        # Only a seq above every seq sent before that READY proves the client had sess-b.
        (4, "fail", ("IDENTIFYd on conn 2", "cited d=4")),
    ],
)
def test_rs1_a_stale_seq_from_an_earlier_session_is_no_proof_of_the_new_one(
    d: int, status: str, words: tuple[str, ...]
):
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 9, d=False)
    run.identify(1, 3.5).ready(1, 3.6, "sess-b")
    run.dispatch(1, 3.7, "sess-b").dispatch(1, 3.71, "sess-b").dispatch(1, 3.72, "sess-b")
    run.beat(1, 3.8, d).close(1, 4.0, "network", None, "reset")
    run.open(2, 6.0).hello(2, 6.0).identify(2, 6.1).ready(2, 6.2, "sess-c")
    assert_status(verdict(run, "RS1"), status, *words)


def shutdown_run(unacked_at: float, note_at: float, close_code: int = 1000) -> Run:
    """ACKs are withheld around one heartbeat; later beats are ACKed; the runner then writes its
    shutdown note and stops the client, which closes with ``close_code``."""
    run = healthy_start().beats(1, 0.5, unacked_at, d=3)
    run.fault("f1", unacked_at - 0.2, "on", kind="control", action="withhold_acks")
    run.beat(1, unacked_at, 3, ack=False)
    run.fault("f1", unacked_at + 0.1, "off", kind="control", action="withhold_acks")
    run.beats(1, unacked_at + 0.4, note_at, d=3)
    run.rec("note", note_at, text="world: run over, stopping the client")
    run.close(1, note_at, "client", close_code, "close_frame")
    return run


def test_the_harness_stopping_the_client_is_not_judged_as_the_clients_behaviour():
    # The unACKed beat's zombie deadline (9.8 + 1.25 + 0.5) falls after the shutdown at 11.5.
    run = shutdown_run(unacked_at=9.8, note_at=11.5)
    for inv in ("ZB1", "RS4"):
        assert verdict(run, inv, outcome="resume").status == "not_judged"
    assert_status(verdict(run, "LV1", outcome="resume", recovery_bound=3.0), "pass")
    # A server close after the note is the world going away, not a failed attempt; nor are
    # attempts after it (the same six before the note are a storm: BO1 fails).
    run.close(2, 11.6, "server", 1001)
    for i in range(6):
        run.open(3 + i, 11.7 + 0.05 * i).close(3 + i, 11.72 + 0.05 * i, "server", 1001)
    assert_status(verdict(run, "BO1"), "not_judged", "no run of two or more failed")


def test_a_zombie_left_open_until_the_shutdown_still_fails():
    # The deadline (3.8 + 1.75 = 5.55) passed long before the shutdown at 11.5.
    run = healthy_start().beats(1, 0.5, 3.0, d=3).beats(1, 3.8, 11.5, d=3, ack=False)
    run.rec("note", 11.5, text="world: run over, stopping the client")
    run.close(1, 11.5, "client", 1000)
    assert_status(verdict(run, "ZB1"), "fail", "got no ACK", "still open")
    # A 1000 close before the shutdown is still the client's own.
    early = zombie_run(1000, 3.5, None)
    early.rec("note", 12.0, text="world: run over, stopping the client")
    assert_status(verdict(early, "RS4"), "fail", "closed with 1000")
    assert_status(verdict(early, "ZB1"), "fail", "code 1000")


def backoff_then_zombie(reconnect_after: float | None, end: float = 25.0) -> Run:
    """Both proxies are down 0.9-3.4 s (the client's attempts never reach the gateway; it is back
    at 5.0 s), then ACKs stop; the client closes the zombie at 8.3 s and reconnects
    ``reconnect_after`` s later (None: never)."""
    run = healthy_start().beats(1, 0.5, 0.9, d=3)
    run.fault("f1", 0.9, "on", kind="proxy", action="down", target="both")
    run.close(1, 0.9, "network", None, "eof")
    run.fault("f1", 3.4, "off", kind="proxy", action="down", target="both")
    run.open(2, 5.0, "resume").hello(2, 5.0).resume(2, 5.0, "sess-a", 3).resumed(2, 5.0)
    run.beats(2, 5.3, 7.0, d=4)
    run.fault("f2", 6.8, "on", kind="control", action="go_silent")
    run.beat(2, 7.3, 4, ack=False).close(2, 8.3, "client", 4000)
    run.fault("f2", 9.1, "off", kind="control", action="go_silent")
    if reconnect_after is not None:
        t = 8.3 + reconnect_after
        run.open(3, t, "resume").hello(3, t).resume(3, t, "sess-a", 4).resumed(3, t)
        run.beats(3, t + 0.3, end, d=5)
    run.rec("note", end, text="end")
    return run


def test_zb1_allows_a_client_still_backing_off_from_earlier_failures():
    v = verdict(backoff_then_zombie(5.5), "ZB1")
    assert_status(v, "pass", "conn 3 opened at 13.80 s", "2 x the client's earlier wait of 4.10 s")


def test_zb1_still_fails_a_client_that_never_reconnects_or_takes_too_long():
    never = verdict(backoff_then_zombie(None), "ZB1")
    assert_status(never, "fail", "no later connection", "bound 8.20 s")
    slow = verdict(backoff_then_zombie(9.0), "ZB1")
    assert_status(slow, "fail", "next connection at 17.30 s", "bound 8.20 s")
    # Without earlier failures the plain bound holds.
    assert_status(verdict(zombie_run(4000, 3.5, 9.0), "ZB1"), "fail", "bound 5.00 s")
    # A run that ends before the client was due to reconnect cannot tell.
    assert verdict(backoff_then_zombie(None, end=12.0), "ZB1").status == "not_judged"


def op7_then(second_listener: str, server_close: int | None) -> Run:
    """op 7 on conn 1: the client opens conn 2 first, then closes conn 1 (same instant); conn 2 is
    closed by the server with ``server_close`` before the client says anything (or, with None,
    IDENTIFYs at once); the client then IDENTIFYs on conn 3 after 2 s."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3).server_op(1, 2.0, 7)
    run.open(2, 2.0, second_listener).close(1, 2.0, "client", 4000)
    if server_close is not None:
        run.hello(2, 2.0).close(2, 2.0, "server", server_close)
        run.open(3, 4.1).hello(3, 4.1).identify(3, 4.1).ready(3, 4.1, "sess-b")
        return run.beats(3, 4.5, 7.0, d=1)
    run.hello(2, 2.0).identify(2, 2.01).ready(2, 2.02, "sess-b")
    return run.beats(2, 2.5, 7.0, d=1)


@pytest.mark.parametrize(
    "listener, server_close, status, words",
    [
        # The reconnect opened before the old close was recorded and got 4007 (a bad seq).
        ("resume", 4007, "pass", ()),
        # An IDENTIFY straight after op 7.
        ("discovery", None, "fail", ("client closed with 4000", "IDENTIFYd on conn 2")),
    ],
)
def test_rs1_only_a_new_session_demanded_on_the_reconnect_excuses_the_identify(
    listener: str, server_close: int | None, status: str, words: tuple[str, ...]
):
    assert_status(verdict(op7_then(listener, server_close), "RS1"), status, *words)


def test_rs5_accepts_the_identify_after_a_4007_on_the_reconnect():
    assert_status(verdict(op7_then("resume", 4007), "RS5"), "pass", "server close 4007")


def op9_in_flight_run(toxic_target: str) -> Run:
    """op 9 d=false goes out on conn 1 (discovery) while a latency toxic on ``toxic_target`` is on;
    the client, seeing ACKs late, closes the connection as a zombie and RESUMEs; the gateway then
    answers with op 9 d=false and the client IDENTIFYs 1.4 s later."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.fault("lag", 1.9, "on", kind="toxic", type="latency", target=toxic_target)
    run.server_op(1, 3.8, 9, d=False).close(1, 4.3, "client", 4000)
    run.open(2, 4.3, "resume").hello(2, 4.3).resume(2, 4.3, "sess-a", 3)
    run.server_op(2, 4.3, 9, d=False).close(2, 4.31, "client", 4000)
    run.fault("lag", 4.7, "off", kind="toxic", type="latency", target=toxic_target)
    run.open(3, 5.7).hello(3, 5.7).identify(3, 5.7).ready(3, 5.7, "sess-b")
    return run.beats(3, 6.0, 9.0, d=1)


@pytest.mark.parametrize(
    "toxic_target, status, words",
    [
        (
            "discovery",
            "pass",
            ("IDENTIFY on conn 3 after 1.40 s", "may not have reached the client"),
        ),
        # The toxic sits on the resume URL: it cannot touch conn 1, so the op 9 arrived.
        ("resume", "fail", ("RESUMEd at 4.30 s instead of IDENTIFYing",)),
    ],
)
def test_rs5_does_not_judge_a_resume_only_while_the_op9_may_still_have_been_in_flight(
    toxic_target: str, status: str, words: tuple[str, ...]
):
    assert_status(verdict(op9_in_flight_run(toxic_target), "RS5"), status, *words)


def op9_crossing_run(resume_delay: float) -> Run:
    """op 7, then the reconnect's RESUME and the gateway's op 9 d=false on that new connection
    at (almost) the same instant: the two crossed on the wire."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.server_op(1, 2.5, 7).close(1, 2.55, "client", 4000)
    run.open(2, 2.6, "resume").hello(2, 2.6).server_op(2, 2.6, 9, d=False)
    run.resume(2, 2.6 + resume_delay, "sess-a", 3)
    run.server_op(2, 2.62 + resume_delay, 9, d=False).close(2, 2.7 + resume_delay, "client", 4000)
    run.open(3, 5.0).hello(3, 5.0).identify(3, 5.0).ready(3, 5.1, "sess-b")
    return run.beats(3, 5.5, 8.0, d=1)


@pytest.mark.parametrize(
    "resume_delay, status, word",
    [
        (0.0, "pass", "crossed it"),  # crossed the op 9 on the wire: not judged
        (0.5, "fail", "RESUMEd"),  # sent well after the op 9 on the same connection
    ],
)
def test_rs5_does_not_judge_a_resume_that_crossed_the_op9_on_the_wire(
    resume_delay: float, status: str, word: str
):
    assert_status(verdict(op9_crossing_run(resume_delay), "RS5"), status, word)


def test_bo1_does_not_call_three_jittered_waits_lock_step():
    # The reference client's equal-jitter waits from a fuzz run (seed 2498264730): two ratios
    # within 0.01 by chance. Three waits cannot tell jitter from none; four in lock-step can.
    def run_with(waits):
        run, t = Run(), 0.0
        for conn, wait in enumerate([0.0, *waits], start=1):
            t += wait
            run.open(conn, t, "discovery").close(conn, t + 0.002, "server", None, "no_close_frame")
            t += 0.002
        return run

    assert_status(verdict(run_with([0.343, 0.613, 1.0955]), "BO1"), "pass")
    assert_status(verdict(run_with([0.25, 0.45, 0.81, 1.458]), "BO1"), "fail", "no jitter")
