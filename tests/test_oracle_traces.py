"""Hand-made gateway traces for the oracle and report tests.

``Run`` writes records through the real ``gateway_common.trace.Trace`` with explicit times, the
way the fake gateway records a run: client frames are ``frame_in``, server frames ``frame_out``.
"""

from __future__ import annotations

from typing import Any

from gateway_common.trace import Record, Trace


class Run:
    def __init__(self) -> None:
        self.trace = Trace()
        self.seq: dict[str, int] = {}

    @property
    def records(self) -> list[Record]:
        return self.trace.records

    def rec(self, kind: str, ts: float, **fields: Any) -> Run:
        self.trace.record(kind, ts=ts, **fields)
        return self

    def open(self, conn: int, ts: float, listener: str = "discovery") -> Run:
        return self.rec("conn_open", ts, conn=conn, listener=listener, peer="127.0.0.1:40000")

    def hello(self, conn: int, ts: float, interval_ms: int = 1000) -> Run:
        return self.rec(
            "frame_out",
            ts,
            conn=conn,
            op=10,
            s=None,
            t=None,
            size=40,
            compressed=False,
            heartbeat_interval=interval_ms,
        )

    def beat(self, conn: int, ts: float, d: int | None, ack: bool = True) -> Run:
        self.rec("frame_in", ts, conn=conn, op=1, d=d, size=16)
        if ack:
            self.rec(
                "frame_out", ts + 0.005, conn=conn, op=11, s=None, t=None, size=10, compressed=False
            )
        return self

    def identify(self, conn: int, ts: float, shard: list[int] | None = None) -> Run:
        return self.rec(
            "frame_in", ts, conn=conn, op=2, shard=shard, intents=513, token_ok=True, size=200
        )

    def resume(self, conn: int, ts: float, session_id: str, seq: int | None) -> Run:
        return self.rec(
            "frame_in", ts, conn=conn, op=6, session_id=session_id, seq=seq, token_ok=True, size=120
        )

    def ready(self, conn: int, ts: float, session_id: str = "sess-a") -> Run:
        self.seq[session_id] = 1
        return self.rec(
            "frame_out",
            ts,
            conn=conn,
            op=0,
            s=1,
            t="READY",
            size=500,
            compressed=False,
            session_id=session_id,
            resume_gateway_url="ws://127.0.0.1:9001",
        )

    def dispatch(
        self, conn: int, ts: float, session_id: str = "sess-a", t: str = "MESSAGE_CREATE"
    ) -> Run:
        self.seq[session_id] += 1
        return self.rec(
            "frame_out",
            ts,
            conn=conn,
            op=0,
            s=self.seq[session_id],
            t=t,
            size=300,
            compressed=False,
        )

    def resumed(self, conn: int, ts: float, session_id: str = "sess-a", replayed: int = 0) -> Run:
        self.seq[session_id] += 1
        return self.rec(
            "frame_out",
            ts,
            conn=conn,
            op=0,
            s=self.seq[session_id],
            t="RESUMED",
            size=50,
            compressed=False,
            replayed=replayed,
        )

    def server_op(self, conn: int, ts: float, op: int, **fields: Any) -> Run:
        return self.rec(
            "frame_out", ts, conn=conn, op=op, s=None, t=None, size=20, compressed=False, **fields
        )

    def close(
        self, conn: int, ts: float, by: str, code: int | None, how: str = "close_frame"
    ) -> Run:
        return self.rec("conn_close", ts, conn=conn, by=by, code=code, reason="", how=how)

    def session(
        self, session_id: str, ts: float, event: str, conn: int | None = None, seq: int = 0
    ) -> Run:
        """The gateway's view of a session: created, attached, detached, invalidated, expired."""
        return self.rec(
            "session", ts, session_id=session_id, event=event, reason="", conn=conn, seq=seq
        )

    def fault(self, name: str, ts: float, state: str, kind: str = "toxic", **params: Any) -> Run:
        return self.rec("fault", ts, name=name, state=state, fault_kind=kind, params=params)

    def control(self, action: str, ts: float, target: Any = "all", **params: Any) -> Run:
        return self.rec("control", ts, action=action, target=target, params=params)

    def beats(
        self,
        conn: int,
        start: float,
        stop: float,
        d: int | None,
        every: float = 1.0,
        ack: bool = True,
    ) -> Run:
        t = start
        while t < stop - 1e-9:
            self.beat(conn, round(t, 6), d, ack=ack)
            t += every
        return self


def healthy_start(
    run: Run | None = None, conn: int = 1, t0: float = 0.0, session_id: str = "sess-a"
) -> Run:
    """conn opens, HELLO (1 s interval), IDENTIFY, READY s=1, two dispatches (s=2, 3)."""
    run = run or Run()
    run.open(conn, t0).hello(conn, t0 + 0.01).identify(conn, t0 + 0.05).ready(
        conn, t0 + 0.1, session_id
    )
    run.dispatch(conn, t0 + 0.2, session_id).dispatch(conn, t0 + 0.3, session_id)
    return run


def healthy_run(duration: float = 6.0) -> Run:
    """One connection, heartbeats every second from 0.5 s with d=3, all ACKed."""
    run = healthy_start()
    run.beats(1, 0.5, duration, d=3)
    run.rec("note", duration, text="end")
    return run


def seed_failure_run(recovers: bool) -> Run:
    """The seed: the network resets conn 1 after READY; the reconnect's handshake is reset (conn 2);
    a client that recovers resumes on conn 3, one that does not stays silent."""
    run = healthy_start()
    run.beats(1, 0.5, 2.0, d=3)
    run.fault("drop-after-ready", 2.0, "on", kind="toxic", target="both")
    run.close(1, 2.0, "network", None, how="reset")
    run.fault("drop-after-ready", 2.0, "off", kind="toxic", target="both")
    run.fault("tls-reset", 2.0, "on", kind="toxic", target="resume", type="reset_after")
    run.open(2, 2.3, listener="resume").close(2, 2.31, "network", None, how="reset")
    run.fault("tls-reset", 3.0, "off", kind="toxic", target="resume", type="reset_after")
    if recovers:
        run.open(3, 3.5, listener="resume").hello(3, 3.51).resume(3, 3.6, "sess-a", 3)
        run.resumed(3, 3.65)
        run.beats(3, 4.0, 12.0, d=4)
    run.rec("note", 12.0, text="end")
    return run
