"""The run view every verdict reads (``harness.oracle.RunView``, also the timeline's input): the
fault windows it draws from fault, control and frame_fault records, the connections' listener,
compression, rejection and interval, and which fault window covers a span (nox -s mutation --
oracle found these unpinned)."""

from __future__ import annotations

import pytest
from test_oracle import verdict
from test_oracle_traces import Run, healthy_start

from harness.oracle import FaultWindow, RunView

LAG = {"target": "both", "type": "latency"}


def test_windows_from_frame_faults_controls_and_fault_records():
    run = Run().open(1, 0.0).hello(1, 0.01)
    run.rec("frame_fault", 1.0, conn=1, action="server_frames", mode="drop", op=11,
            detail="dropped an ACK", on_for=0.5)
    run.rec("frame_fault", 1.5, conn=1, action="server_frames", mode="drop", op=11,
            detail="dropped an ACK", on_for=1.0)
    run.rec("frame_fault", 2.0, conn=1, action="server_frames", mode="delay", op=0,
            detail="held", held=0.75)
    run.rec("frame_fault", 3.0, conn=1, action="drop_mid_guilds", detail="dropped")
    run.control("reconnect", 4.0, target=1)
    run.control("withhold_acks", 4.5, target=1, on=True)
    run.control("withhold_acks", 5.0, target=1, on=False)
    # A policy is no fault, whether the gateway or the runner records it.
    run.control("heartbeat_deadline", 5.5, target="all", on=True)
    run.fault("hb", 5.5, "on", kind="control", action="heartbeat_deadline")
    run.fault("lag", 6.0, "on", target="resume", type="latency")
    run.fault("lag", 6.5, "off", target="resume", type="latency")
    run.fault("down", 7.0, "on", kind="proxy", target="discovery")
    run.rec("note", 8.0, text="end")
    control = {"_from_control_record": True}
    assert RunView(run.records).windows == [
        FaultWindow("server_frames drop op 11 (conn 1)", "control", 0.5, 1.5, 2, 3,
                    {"action": "server_frames", "target": 1, "mode": "drop"}),
        FaultWindow("server_frames delay op 0 (conn 1)", "control", 2.0, 2.75, 4, 4,
                    {"action": "server_frames", "target": 1, "mode": "delay"}),
        FaultWindow("drop_mid_guilds (conn 1)", "control", 3.0, 3.000001, 5, 5,
                    {"action": "drop_mid_guilds", "target": 1, "mode": None}),
        FaultWindow("reconnect", "control", 4.0, 4.0, 6, 6, {"action": "reconnect", **control}),
        FaultWindow("control withhold_acks -> 1", "control", 4.5, 5.0, 7, 8,
                    {"on": True, "action": "withhold_acks", **control}),
        FaultWindow("lag", "toxic", 6.0, 6.5, 11, 12, {"target": "resume", "type": "latency"}),
        FaultWindow("down", "proxy", 7.0, None, 13, None, {"target": "discovery"}),
    ]


def test_a_control_record_echoing_a_fault_record_within_a_quarter_second_is_dropped():
    run = Run().open(1, 0.0).hello(1, 0.01)
    run.fault("op7", 4.0, "on", kind="control", action="reconnect")  # one-shot, never off
    run.control("reconnect", 4.25, target=1)  # its echo
    run.control("invalid_session", 4.3, target=1)  # stands alone
    run.fault("lag", 5.0, "on", **LAG).fault("lag", 5.5, "on", **LAG)
    run.fault("lag", 6.0, "off", **LAG)
    run.rec("note", 8.0, text="end")
    assert RunView(run.records).windows == [
        FaultWindow("op7", "control", 4.0, 4.0, 2, 2, {"action": "reconnect"}),
        FaultWindow("invalid_session", "control", 4.3, 4.3, 4, 4,
                    {"action": "invalid_session", "_from_control_record": True}),
        # Two "on" records of one name: the first "off" closes the first.
        FaultWindow("lag", "toxic", 5.0, 6.0, 5, 7, LAG),
        FaultWindow("lag", "toxic", 5.5, None, 6, None, LAG),
    ]
    run = Run().open(1, 0.0).fault("op7", 4.0, "on", kind="control", action="reconnect")
    run.control("reconnect", 4.3, target=1).rec("note", 8.0, text="end")
    assert [w.name for w in RunView(run.records).windows] == ["op7", "reconnect"]


def test_connections_listener_compression_rejection_and_interval():
    run = Run()
    run.rec("conn_open", 0.0, conn=1, peer="127.0.0.1:1")  # no listener: the upgrade's
    run.rec("ws_upgrade", 0.01, conn=1, listener="resume", query={"compress": True})
    run.rec("conn_open", 1.0, conn=2, listener="discovery", peer="127.0.0.1:2")
    run.rec("ws_upgrade", 1.01, conn=2, listener="resume", query={"compress": "zlib-stream"})
    run.rec("ws_rejected", 1.02, conn=2, status=400)
    run.hello(2, 1.05, interval_ms=0).hello(2, 1.06)  # no interval; only the first HELLO counts
    run.open(3, 2.0).hello(3, 2.01, interval_ms=2000).hello(3, 2.02, interval_ms=1000)
    view = RunView(run.records)
    got = [(c.id, c.listener, c.compress, c.rejected, c.interval, c.hello and c.hello.idx,
            view.interval_for(c)) for c in view.conns.values()]
    assert got == [
        (1, "resume", None, False, None, None, 2.0),
        (2, "discovery", "zlib-stream", True, None, 5, 2.0),
        (3, "discovery", None, False, 2.0, 8, 2.0),
    ]
    assert (view.start_ts, view.end_ts) == (0.0, 2.02)
    assert (RunView([]).start_ts, RunView([]).end_ts, RunView([]).windows) == (0.0, 0.0, [])


def spans() -> RunView:
    """A: toxic on both URLs 1-2 s; B: proxy on discovery 3-4 s; C: a one-shot control at 5 s;
    D: a toxic from the second resume connection on, 6-6.9 s; E: slow_close 7-8 s; F: a switch
    aimed at conn 2, 9-10 s; G: a proxy on discovery, from 11 s to the end. Conn 1 and 2 are on
    the resume URL."""
    run = Run().open(1, 0.0, "resume").open(2, 0.5, "resume")
    run.fault("A", 1.0, "on", **LAG).fault("A", 2.0, "off", **LAG)
    run.fault("B", 3.0, "on", kind="proxy", target="discovery")
    run.fault("B", 4.0, "off", kind="proxy", target="discovery")
    run.control("invalid_session", 5.0, target=1)
    run.fault("D", 6.0, "on", target="resume", type="latency", from_connection=2)
    run.fault("D", 6.9, "off", target="resume", type="latency", from_connection=2)
    run.fault("E", 7.0, "on", target="both", type="slow_close")
    run.fault("E", 8.0, "off", target="both", type="slow_close")
    run.fault("F", 9.0, "on", kind="control", action="withhold_acks", target=2)
    run.fault("F", 10.0, "off", kind="control", action="withhold_acks", target=2)
    run.fault("G", 11.0, "on", kind="proxy", target="discovery")
    return RunView(run.rec("note", 12.0, text="end").records)


@pytest.mark.parametrize(
    ("a", "b", "name"),
    [
        (0.0, 0.9, None),
        (0.0, 1.0, "A"),  # touching its start
        (1.2, 3.5, "B"),  # the latest-ending window that started by b
        (4.0, 4.5, "B"),  # touching its end
        (4.01, 4.5, None),
        (4.5, 5.5, None),  # a one-shot control has no length
        (100.0, 200.0, "G"),  # never switched off
    ],
)
def test_fault_active_over_the_whole_run(a, b, name):
    w = spans().fault_active(a, b)
    assert (w.name if w else None) == name


@pytest.mark.parametrize(
    ("conn", "a", "b", "name"),
    [
        (1, 0.0, 1.0, "A"),
        (1, 2.0, 2.2, "A"),  # touching its end
        (1, 3.2, 3.5, None),  # a proxy on the discovery URL: not this resume connection
        (1, 4.5, 5.5, None),
        (1, 6.5, 6.6, None),  # from the second connection on
        (2, 6.5, 6.6, "D"),
        (1, 9.2, 9.5, None),  # aimed at conn 2
        (2, 9.2, 9.5, "F"),
        (2, 100.0, 200.0, None),
    ],
)
def test_fault_active_for_one_connection(conn, a, b, name):
    view = spans()
    w = view.fault_active(a, b, view.conns[conn])
    assert (w.name if w else None) == name


@pytest.mark.parametrize(("a", "b", "name"), [(1.5, 1.6, "A"), (6.5, 6.6, "D"), (7.2, 7.5, None)])
def test_data_faults_leave_out_a_toxic_that_only_holds_the_close(a, b, name):
    view = spans()
    w = view.data_fault_active(a, b, view.conns[2])
    assert (w.name if w else None) == name


def test_lv1_names_a_control_switch_the_gateway_recorded_alone():
    run = healthy_start().beats(1, 0.5, 2.0, d=3)
    run.control("withhold_acks", 2.2, target=1, on=True)
    run.control("withhold_acks", 2.4, target=1, on=False)
    run.beats(1, 2.5, 6.0, d=3).rec("note", 6.0, text="end")
    v = verdict(run, "LV1")
    assert v.status == "pass"
    assert v.evidence.startswith("the last fault ('control withhold_acks -> 1') switched off at "
                                 "2.40 s; conn 1 got READY at 0.10 s and stayed up through it")
    assert v.record_indices == (3, 11, 18)  # READY, the switch off, the last ACKed beat


def test_the_run_ends_at_the_shutdown_note_and_keeps_the_note():
    run = healthy_start().beats(1, 0.5, 4.0, d=3)
    run.rec("note", 4.0, text="world: run over, stopping the client")
    run.close(1, 4.1, "client", 1000).rec("note", 9.0, text="end")
    view = RunView(run.records)
    assert (view.shutdown_idx, len(view.records), view.end_ts) == (14, 15, 4.0)
    assert view.conns[1].close is None
    assert RunView(run.records[:14]).shutdown_idx is None
