"""The oracle: invariants over a trace, each returning a verdict with evidence.

Every invariant is a pure function of the trace records the fake gateway wrote (see
``harness/trace.py``), the client's delivery log where one exists, and the scenario's
``Expectations`` (which carry explicit ``Tolerances``). Nothing here knows which client ran.

The trace is recorded by the gateway: client frames are ``frame_in``, server frames ``frame_out``.
What the gateway *sent* is not always what the client *received* (a toxic may delay or drop it), so
the checks that depend on reception skip the spans where a fault window was active and say so.

An invariant with nothing to judge in a run is ``not_judged`` with the reason, never ``pass``.

The run ends where the runner writes its note "world: run over, stopping the client"
(``SHUTDOWN_NOTE``): everything after it is the harness shutting the client down (a client
closing with 1000 because it was told to stop, a connection cut as the world goes away), so the
oracle judges the trace up to that note and no further. A connection still open there is open at
the end of the run.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gateway_common.facts import (
    FATAL_CLOSE_CODES,
    ONE_SHOT_CONTROLS,
    POLICY_CONTROLS,
    REIDENTIFY_CLOSE_CODES,
    RESUMABLE_SERVER_CLOSE_CODES,
    SESSION_KILLING_CLIENT_CODES,
)

Record = dict[str, Any]
Status = Literal["pass", "fail", "not_judged"]
Outcome = Literal["resume", "reidentify", "stop"]

INVARIANTS: tuple[str, ...] = (
    "HB1",
    "HB2",
    "HB3",
    "HB4",
    "ZB1",
    "RS1",
    "RS2",
    "RS3",
    "RS4",
    "RS5",
    "FC1",
    "BO1",
    "BO2",
    "RL1",
    "LV1",
)

INVARIANT_TITLES: dict[str, str] = {
    "HB1": "first heartbeat after HELLO, within one interval",
    "HB2": "no heartbeat gap longer than the interval (+ tolerance)",
    "HB3": "heartbeat d is the last seq the client could have received",
    "HB4": "a server op 1 is answered promptly",
    "ZB1": "with ACKs withheld, the client closes (not 1000/1001) and reconnects",
    "RS1": "after a resumable loss the client RESUMEs on resume_gateway_url",
    "RS2": "RESUME carries the current session_id and last seq",
    "RS3": "exactly-once, in-order delivery across reconnects",
    "RS4": "no 1000/1001 close when the client means to resume",
    "RS5": "after op 9 false / 4007 / 4009 the client IDENTIFYs on discovery after 1-5 s",
    "FC1": "no reconnect after a fatal close code",
    "BO1": "reconnect attempts back off; no storms",
    "BO2": "IDENTIFYs respect max_concurrency per 5 s and the start budget",
    "RL1": "at most 120 client frames per 60 s per connection, payloads <= 4096 bytes",
    "LV1": "live again (READY/RESUMED, heartbeats flowing) within the recovery bound",
    # Judged by the runner from the client process, not from the trace (harness/world.py).
    "PR1": "the client keeps running until the harness stops it (no crash, no hang)",
}

# The runner's note that ends the observed run (harness/world.py writes it before stopping the
# client); what follows it is the harness's shutdown, not the client's behaviour.
SHUTDOWN_NOTE = "world: run over"
# BO1: how many equal wait ratios prove backoff without jitter (see check_bo1).
NO_JITTER_MIN_RATIOS = 3

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_RECONNECT, OP_INVALID_SESSION, OP_HELLO, OP_ACK = 7, 9, 10, 11


@dataclass(frozen=True)
class Tolerances:
    """Slack the invariants allow. Every verdict that uses one names it and its value."""

    heartbeat_slack: float = 0.25
    """HB1/HB2/ZB1/LV1: a gap may reach interval x (1 + heartbeat_slack)."""
    seq_staleness: float = 1.0
    """HB3: seconds a dispatch may take to reach the client before its heartbeat must cite it."""
    crossing_window: float = 0.1
    """RS5: a RESUME on the connection that got op 9 d=false, this soon after it, crossed it on
    the wire (the client sent it before it could have read the op 9)."""
    op1_reply_within: float = 1.0
    """HB4: seconds to answer a server op 1."""
    ack_wait: float = 0.5
    """ZB1/RS4: a heartbeat counts as unACKed only if its connection stayed open this fraction of
    the interval after it without an ACK (a client closing right after a beat is not a zombie)."""
    zombie_close_grace: float = 0.5
    """ZB1: seconds beyond one (slackened) interval after an unACKed beat to close the socket."""
    reconnect_within: float = 5.0
    """ZB1: seconds from the zombie close to the next connection ..."""
    reconnect_backoff_factor: float = 2.0
    """ZB1: ... or up to this many times the longest wait the client took earlier in the run
    between a connection ending and the next one opening (capped at backoff_cap): a client still
    backing off from earlier failures (attempts against a proxy that is down never reach the
    trace) may wait one doubling longer, but a client that never reconnects still fails."""
    reidentify_delay_min: float = 1.0
    reidentify_delay_max: float = 5.0
    reidentify_slack: float = 1.5
    """RS5: the IDENTIFY comes reidentify_delay_min .. max (+ slack for reconnecting) s after."""
    backoff_growth: float = 1.5
    """BO1: within a run of >= 4 failed attempts the gaps must grow by this factor ..."""
    backoff_flat_ok: float = 2.0
    """BO1: ... unless every gap after the first is at least this many seconds (a reached cap)."""
    backoff_cap: float = 120.0
    """BO1: no gap between attempts above this (the backoff is capped)."""
    storm_window: float = 1.0
    storm_max_attempts: int = 4
    """BO1: more than storm_max_attempts connection attempts in storm_window seconds is a storm."""
    identify_window: float = 5.0
    """BO2: the max_concurrency window in seconds."""
    expiry_slack: float = 2.0
    """RS1: an IDENTIFY this soon before the server expired the old session counts as after it
    (the client starts its resumable-window clock when it sees the loss, the server when it
    does)."""
    teardown_window: float = 1.0
    """LV1/RS1: closes in the trace's last this-many seconds, after every fault cleared, are the
    run ending, not a loss (for traces without the runner's SHUTDOWN_NOTE, which marks it)."""
    rate_window: float = 60.0
    rate_max_frames: int = 120
    max_payload: int = 4096
    """RL1: the gateway's send limits."""


@dataclass(frozen=True)
class Expectations:
    """What a scenario expects of the client; the oracle's third input."""

    outcome: Outcome | None = None
    """resume: it ends on the session it started; reidentify: on a new one; stop: not connected."""
    recovery_bound: float = 10.0
    """LV1: seconds after the last fault clears by which the client must be live again."""
    run_duration: float | None = None
    """How long the run lasted (trace times start at 0 with the run). A trace whose last record is
    earlier (a client that never connected leaves next to nothing) still covers the whole run."""
    max_concurrency: int = 1
    max_identifies: int | None = None
    """BO2: total IDENTIFYs allowed in the run (F3: 1; F19: a small number)."""
    max_resumes: int | None = None
    """BO1: total RESUMEs allowed in the run (F20: a capped number of resumes)."""
    tolerances: Tolerances = field(default_factory=Tolerances)


@dataclass(frozen=True)
class Verdict:
    invariant: str
    status: Status
    evidence: str
    record_indices: tuple[int, ...] = ()
    """0-based positions in the trace records (= line number - 1 of the JSON-lines file)."""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["record_indices"] = list(self.record_indices)
        return d


# ------------------------------------------------------------------------------------------------
# A read-only view of the trace, built once per judge() call.


@dataclass
class Frame:
    idx: int
    rec: Record

    @property
    def ts(self) -> float:
        return float(self.rec["ts"])

    @property
    def op(self) -> int | None:
        return self.rec.get("op")


@dataclass
class Connection:
    id: int
    open_idx: int | None = None
    open_ts: float | None = None
    listener: str | None = None
    hello: Frame | None = None
    interval: float | None = None  # seconds, from HELLO
    close_idx: int | None = None
    close: Record | None = None
    rejected: bool = False
    frames_in: list[Frame] = field(default_factory=list)
    frames_out: list[Frame] = field(default_factory=list)
    live: Frame | None = None  # first READY or RESUMED sent on this connection
    _beats: list[Frame] | None = field(default=None, repr=False)
    _acks: list[Frame] | None = field(default=None, repr=False)
    _ack_positions: list[int] | None = field(default=None, repr=False)

    @property
    def start_ts(self) -> float:
        if self.open_ts is not None:
            return self.open_ts
        frames = self.frames_in + self.frames_out
        return min((f.ts for f in frames), default=0.0)

    @property
    def close_ts(self) -> float | None:
        return None if self.close is None else float(self.close["ts"])

    def beats(self) -> list[Frame]:
        """The client's heartbeats on this connection (computed once; the view is read-only)."""
        if self._beats is None:
            self._beats = [f for f in self.frames_in if f.op == OP_HEARTBEAT]
        return self._beats

    def acks(self) -> list[Frame]:
        if self._acks is None:
            self._acks = [f for f in self.frames_out if f.op == OP_ACK]
        return self._acks

    def ack_after(self, idx: int) -> Frame | None:
        """The first ACK sent after trace record ``idx``."""
        acks = self.acks()
        if self._ack_positions is None:
            self._ack_positions = [a.idx for a in acks]
        i = bisect.bisect_right(self._ack_positions, idx)
        return acks[i] if i < len(acks) else None

    def describe_close(self) -> str:
        if self.close is None:
            return "still open"
        c = self.close
        code = c.get("code")
        return (
            f"closed by {c.get('by')} at {fmt(c['ts'])} with "
            f"{'code ' + str(code) if code is not None else 'no code'} ({c.get('how')})"
        )


@dataclass(frozen=True)
class FaultWindow:
    name: str
    kind: str
    start: float
    end: float | None  # None: never switched off
    start_idx: int
    end_idx: int | None
    params: dict[str, Any]

    def overlaps(self, a: float, b: float) -> bool:
        end = float("inf") if self.end is None else self.end
        return self.start <= b and end >= a and end > self.start

    def affects(self, conn: Connection, rank: int) -> bool:
        """Whether this fault can touch ``conn``, the ``rank``-th connection on its listener.

        Toxics and proxy actions aimed at one URL touch only that listener's connections, and
        ``only_connection`` / ``from_connection`` pick that proxy's Nth accepted connection (the
        proxy opens one upstream connection per accepted one, so its Nth is the listener's Nth);
        a control aimed at a connection id touches only that connection.
        """
        target = self.params.get("target")
        if self.kind in ("toxic", "proxy"):
            if target in ("discovery", "resume") and conn.listener not in (target, None):
                return False
            only, start = self.params.get("only_connection"), self.params.get("from_connection")
            if isinstance(only, int) and rank != only:
                return False
            return not (isinstance(start, int) and rank < start)
        if isinstance(target, int) and not isinstance(target, bool):
            return conn.id == target
        return True


class RunView:
    """Connections, fault windows and frames of one trace, indexed for the invariants."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)
        self.shutdown_idx = shutdown_index(self.records)
        if self.shutdown_idx is not None:  # the harness's shutdown is not judged (module doc)
            del self.records[self.shutdown_idx + 1 :]
        times = [float(r["ts"]) for r in self.records if isinstance(r.get("ts"), int | float)]
        self.start_ts = min(times, default=0.0)  # the run's start (0 once a trace is rebased)
        self.end_ts = max(times, default=0.0)
        self.conns: dict[int, Connection] = {}
        self.frames_in: list[Frame] = []
        self.frames_out: list[Frame] = []
        self.windows: list[FaultWindow] = []
        self._spans: tuple[list[float], list[tuple[float, FaultWindow]]] | None = None
        self._conn_windows: dict[int, list[FaultWindow]] = {}
        self.listener_rank: dict[int, int] = {}
        open_faults: dict[str, list[tuple[int, Record]]] = {}
        for idx, rec in enumerate(self.records):
            kind = rec.get("kind")
            conn_id = rec.get("conn")
            conn = self._conn(conn_id) if isinstance(conn_id, int) else None
            if kind == "conn_open" and conn is not None:
                conn.open_idx, conn.open_ts = idx, float(rec["ts"])
                conn.listener = rec.get("listener")
            elif kind == "ws_upgrade" and conn is not None and conn.listener is None:
                conn.listener = rec.get("listener")
            elif kind == "ws_rejected" and conn is not None:
                conn.rejected = True
            elif kind == "conn_close" and conn is not None and conn.close is None:
                conn.close_idx, conn.close = idx, rec
            elif kind == "frame_in" and conn is not None:
                frame = Frame(idx, rec)
                conn.frames_in.append(frame)
                self.frames_in.append(frame)
            elif kind == "frame_out" and conn is not None:
                frame = Frame(idx, rec)
                conn.frames_out.append(frame)
                self.frames_out.append(frame)
                if rec.get("op") == OP_HELLO and conn.hello is None:
                    conn.hello = frame
                    hb = rec.get("heartbeat_interval")
                    if isinstance(hb, int | float) and hb > 0:
                        conn.interval = float(hb) / 1000.0
                if is_live_frame(rec) and conn.live is None:
                    conn.live = frame
            elif kind == "fault":
                if (rec.get("params") or {}).get("action") not in POLICY_CONTROLS:
                    self._switch(open_faults, idx, rec)
            elif kind == "control":
                action = str(rec.get("action"))
                params = dict(rec.get("params") or {})
                if action in ONE_SHOT_CONTROLS:
                    ts = float(rec["ts"])
                    params = {**params, "action": action, CONTROL_RECORD: True}
                    self.windows.append(FaultWindow(action, "control", ts, ts, idx, idx, params))
                elif action not in POLICY_CONTROLS and isinstance(params.get("on"), bool):
                    # A persistent switch applied directly (the runner also writes fault records).
                    key = f"control {action} -> {rec.get('target')}"
                    state = "on" if params["on"] else "off"
                    switch = {
                        **rec,
                        "name": key,
                        "state": state,
                        "fault_kind": "control",
                        "params": {**params, "action": action, CONTROL_RECORD: True},
                    }
                    self._switch(open_faults, idx, switch)
        for pending in open_faults.values():
            for on_idx, on in pending:
                name = str(on.get("name"))
                params = on.get("params") or {}
                one_shot = name in ONE_SHOT_CONTROLS or params.get("action") in ONE_SHOT_CONTROLS
                ts = float(on["ts"])
                self.windows.append(
                    FaultWindow(
                        name,
                        str(on.get("fault_kind")),
                        ts,
                        ts if one_shot else None,
                        on_idx,
                        on_idx if one_shot else None,
                        dict(on.get("params") or {}),
                    )
                )
        counts: dict[str | None, int] = {}
        for conn in self.ordered_conns():
            counts[conn.listener] = counts.get(conn.listener, 0) + 1
            self.listener_rank[conn.id] = counts[conn.listener]
        self.session_frames = [f for f in self.frames_in if f.op in (OP_IDENTIFY, OP_RESUME)]
        self.session_positions = [f.idx for f in self.session_frames]
        self.windows = _without_echoes(self.windows)
        self.windows.sort(key=lambda w: w.start)

    def _switch(
        self, open_faults: dict[str, list[tuple[int, Record]]], idx: int, rec: Record
    ) -> None:
        """Pair a fault's on and off records (by name, first on with first off) into a window."""
        name = str(rec.get("name"))
        if rec.get("state") == "on":
            open_faults.setdefault(name, []).append((idx, rec))
        elif rec.get("state") == "off" and open_faults.get(name):
            on_idx, on = open_faults[name].pop(0)
            self.windows.append(
                FaultWindow(
                    name,
                    str(on.get("fault_kind")),
                    float(on["ts"]),
                    float(rec["ts"]),
                    on_idx,
                    idx,
                    dict(on.get("params") or {}),
                )
            )

    def _conn(self, conn_id: int) -> Connection:
        if conn_id not in self.conns:
            self.conns[conn_id] = Connection(conn_id)
        return self.conns[conn_id]

    def ordered_conns(self) -> list[Connection]:
        return sorted(self.conns.values(), key=lambda c: (c.start_ts, c.id))

    def fault_active(
        self, a: float, b: float, conn: Connection | None = None
    ) -> FaultWindow | None:
        """A fault window with length that overlaps [a, b] (one-shot controls do not count);
        with ``conn``, only faults that can touch that connection."""
        if conn is not None:
            if conn.id not in self._conn_windows:
                rank = self.listener_rank.get(conn.id, 0)
                self._conn_windows[conn.id] = [
                    w
                    for w in self.windows
                    if (w.end is None or w.end > w.start) and w.affects(conn, rank)
                ]
            return next((w for w in self._conn_windows[conn.id] if w.overlaps(a, b)), None)
        if self._spans is None:
            spans = sorted(
                (w for w in self.windows if w.end is None or w.end > w.start),
                key=lambda w: w.start,
            )
            reach: list[tuple[float, FaultWindow]] = []  # the latest-ending window so far
            for w in spans:
                end = float("inf") if w.end is None else w.end
                reach.append((end, w) if not reach or end > reach[-1][0] else reach[-1])
            self._spans = ([w.start for w in spans], reach)
        starts, reach = self._spans
        k = bisect.bisect_right(starts, b)
        if k and reach[k - 1][0] >= a:
            return reach[k - 1][1]
        return None

    def interval_for(self, conn: Connection) -> float | None:
        if conn.interval is not None:
            return conn.interval
        intervals = [c.interval for c in self.ordered_conns() if c.interval is not None]
        return intervals[0] if intervals else None


CONTROL_RECORD = "_from_control_record"


def _without_echoes(windows: list[FaultWindow]) -> list[FaultWindow]:
    """Drop windows read from the gateway's control records that echo a runner fault record.

    The runner writes a fault record for a control step and the gateway a control record when it
    applies it: the same fault, seen twice. Each still counts when it stands alone.
    """
    stated = [w for w in windows if not w.params.get(CONTROL_RECORD)]
    kept = list(stated)
    for w in windows:
        if not w.params.get(CONTROL_RECORD):
            continue
        echoed = any(
            s.params.get("action") == w.params.get("action") and abs(s.start - w.start) <= 0.25
            for s in stated
        )
        if not echoed:
            kept.append(w)
    return kept


def shutdown_index(records: Sequence[Record]) -> int | None:
    """The index of the runner's note that ends the observed run (``SHUTDOWN_NOTE``), if any."""
    for idx, rec in enumerate(records):
        if rec.get("kind") == "note" and str(rec.get("text", "")).startswith(SHUTDOWN_NOTE):
            return idx
    return None


def is_live_frame(rec: Record) -> bool:
    return rec.get("op") == OP_DISPATCH and rec.get("t") in ("READY", "RESUMED")


def fmt(ts: float) -> str:
    return f"{float(ts):.2f} s"


def _pass(inv: str, text: str, idx: Iterable[int] = ()) -> Verdict:
    return Verdict(inv, "pass", text, tuple(sorted(set(idx))))


def _fail(inv: str, text: str, idx: Iterable[int] = ()) -> Verdict:
    return Verdict(inv, "fail", text, tuple(sorted(set(idx))))


def _skip(inv: str, text: str) -> Verdict:
    return Verdict(inv, "not_judged", text)


def _first_failure(inv: str, failures: list[tuple[str, list[int]]], suffix: str) -> Verdict:
    text, idx = failures[0]
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return _fail(inv, f"{text}{more}; {suffix}", idx)


# ------------------------------------------------------------------------------------------------
# Heartbeats


def check_hb1(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    judged = 0
    failures: list[tuple[str, list[int]]] = []
    proof: list[int] = []
    for conn in view.ordered_conns():
        beats = conn.beats()
        if conn.hello is None:
            if beats:
                b = beats[0]
                failures.append(
                    (f"conn {conn.id}: op 1 at {fmt(b.ts)} but HELLO was never sent", [b.idx])
                )
            continue
        early = [b for b in beats if b.idx < conn.hello.idx]
        if early:
            b = early[0]
            failures.append(
                (
                    f"conn {conn.id}: op 1 at {fmt(b.ts)} before HELLO at {fmt(conn.hello.ts)}",
                    [b.idx, conn.hello.idx],
                )
            )
            continue
        interval = conn.interval
        if interval is None:
            continue
        deadline = conn.hello.ts + interval * (1 + slack)
        if beats:
            b = beats[0]
            judged += 1
            if b.ts > deadline + 1e-9:
                failures.append(
                    (
                        f"conn {conn.id}: first heartbeat at {fmt(b.ts)}, "
                        f"{b.ts - conn.hello.ts:.2f} s "
                        f"after HELLO at {fmt(conn.hello.ts)} (bound {interval * (1 + slack):.2f} "
                        "s)",
                        [conn.hello.idx, b.idx],
                    )
                )
            else:
                proof += [conn.hello.idx, b.idx]
        else:
            end = conn.close_ts if conn.close_ts is not None else view.end_ts
            if end >= deadline - 1e-9 and not view.fault_active(conn.hello.ts, deadline, conn):
                judged += 1
                failures.append(
                    (
                        f"conn {conn.id}: no heartbeat in the {end - conn.hello.ts:.2f} s after "
                        "HELLO at "
                        f"{fmt(conn.hello.ts)} (bound {interval * (1 + slack):.2f} s; "
                        f"{conn.describe_close()})",
                        [conn.hello.idx] + ([conn.close_idx] if conn.close_idx is not None else []),
                    )
                )
    tol = f"tolerance heartbeat_slack={slack}"
    if failures:
        return _first_failure("HB1", failures, tol)
    if not judged:
        return _skip("HB1", "no connection lived long enough after HELLO to need a heartbeat")
    return _pass(
        "HB1",
        f"{judged} connection(s): first heartbeat after HELLO within interval x {1 + slack}; {tol}",
        proof[:2],
    )


def _beat_gaps(view: RunView, conn: Connection) -> list[tuple[float, float, int, int | None, str]]:
    """(start, end, start_idx, end_idx, what) for each gap between this connection's heartbeats,
    including the trailing gap to its close (or the end of the trace)."""
    beats = conn.beats()
    gaps: list[tuple[float, float, int, int | None, str]] = [
        (a.ts, b.ts, a.idx, b.idx, "heartbeats") for a, b in zip(beats, beats[1:], strict=False)
    ]
    if beats:
        last = beats[-1]
        if conn.close is not None:
            gaps.append(
                (
                    last.ts,
                    float(conn.close["ts"]),
                    last.idx,
                    conn.close_idx,
                    "last heartbeat and the close",
                )
            )
        else:
            gaps.append(
                (last.ts, view.end_ts, last.idx, None, "last heartbeat and the end of the trace")
            )
    return gaps


def check_hb2(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    judged = excluded = 0
    worst: tuple[float, str, list[int]] | None = None
    failures: list[tuple[str, list[int]]] = []
    for conn in view.ordered_conns():
        interval = view.interval_for(conn)
        if interval is None:
            continue
        bound = interval * (1 + slack)
        for a, b, ia, ib, what in _beat_gaps(view, conn):
            window = view.fault_active(a, b, conn)
            if window is not None:
                excluded += 1
                continue
            judged += 1
            gap = b - a
            idx = [ia] + ([ib] if ib is not None else [])
            if gap > bound + 1e-9:
                failures.append(
                    (
                        f"conn {conn.id}: {gap:.2f} s between {what} ({fmt(a)} .. {fmt(b)}), bound "
                        f"{bound:.2f} s",
                        idx,
                    )
                )
            elif worst is None or gap / interval > worst[0]:
                worst = (gap / interval, f"conn {conn.id} {fmt(a)} .. {fmt(b)}", idx)
    tol = (
        f"tolerance heartbeat_slack={slack}; {excluded} gap(s) overlapping a fault window "
        "not judged"
    )
    if failures:
        return _first_failure("HB2", failures, tol)
    if not judged or worst is None:
        return _skip("HB2", f"no heartbeat gap outside fault windows to judge; {tol}")
    return _pass(
        "HB2",
        f"{judged} gap(s) judged, longest {worst[0]:.2f} x interval ({worst[1]}); {tol}",
        worst[2],
    )


def _session_of_conns(view: RunView) -> dict[int, str | None]:
    """The session each connection carried: from READY (session_id) or RESUME (session_id)."""
    out: dict[int, str | None] = {}
    for conn in view.conns.values():
        sid: str | None = None
        for f in conn.frames_out:
            if f.op == OP_DISPATCH and f.rec.get("t") == "READY" and f.rec.get("session_id"):
                sid = str(f.rec["session_id"])
                break
        if sid is None:
            for f in conn.frames_in:
                if f.op == OP_RESUME and f.rec.get("session_id"):
                    sid = str(f.rec["session_id"])
                    break
        out[conn.id] = sid
    return out


def check_hb3(view: RunView, exp: Expectations) -> Verdict:
    staleness = exp.tolerances.seq_staleness
    first_sent: dict[int, int] = {}  # seq -> the first trace record that sent it
    for f in view.frames_out:
        s = f.rec.get("s")
        if f.op == OP_DISPATCH and isinstance(s, int) and s not in first_sent:
            first_sent[s] = f.idx
    failures: list[tuple[str, list[int]]] = []
    judged = skipped = 0
    for conn in view.ordered_conns():
        dispatched = [
            f for f in conn.frames_out if f.op == OP_DISPATCH and isinstance(f.rec.get("s"), int)
        ]
        floor: Frame | None = None
        next_dispatch = 0
        for beat in conn.beats():
            d = beat.rec.get("d")
            judged += 1
            # Upper bound: a seq the gateway has sent by then, anywhere in the run.
            if d is not None:
                if not isinstance(d, int) or isinstance(d, bool):
                    failures.append(
                        (
                            f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d!r}, not a "
                            "seq",
                            [beat.idx],
                        )
                    )
                    continue
                if first_sent.get(d, beat.idx) >= beat.idx:
                    failures.append(
                        (
                            f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d}, a seq the "
                            "gateway "
                            f"never sent before it",
                            [beat.idx],
                        )
                    )
                    continue
            # Lower bound: dispatches sent on this connection well before the beat must show.
            while (
                next_dispatch < len(dispatched)
                and dispatched[next_dispatch].idx < beat.idx
                and dispatched[next_dispatch].ts <= beat.ts - staleness
            ):
                floor = dispatched[next_dispatch]
                next_dispatch += 1
            if floor is None:
                continue
            if view.fault_active(floor.ts, beat.ts, conn):
                skipped += 1
                continue
            s_floor = int(floor.rec["s"])
            if d is None or d < s_floor:
                failures.append(
                    (
                        f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d}, but "
                        f"s={s_floor} was sent "
                        f"at {fmt(floor.ts)}",
                        [floor.idx, beat.idx],
                    )
                )
    tol = (
        f"tolerance seq_staleness={staleness} s; {skipped} beat(s) during fault windows not "
        "held to the lower bound"
    )
    if failures:
        return _first_failure("HB3", failures, tol)
    if not judged:
        return _skip("HB3", "no client heartbeats in the trace")
    return _pass(
        "HB3",
        f"{judged} heartbeat(s) carried a seq the client had (or null before any dispatch); {tol}",
    )


def check_hb4(view: RunView, exp: Expectations) -> Verdict:
    within = exp.tolerances.op1_reply_within
    failures: list[tuple[str, list[int]]] = []
    judged = skipped = 0
    proof: list[int] = []
    for conn in view.ordered_conns():
        for req in (f for f in conn.frames_out if f.op == OP_HEARTBEAT):
            deadline = req.ts + within
            beats = conn.beats()
            i = bisect.bisect_right([b.idx for b in beats], req.idx) if beats else 0
            reply = beats[i] if i < len(beats) else None
            end = conn.close_ts if conn.close_ts is not None else view.end_ts
            if reply is not None and reply.ts <= deadline + 1e-9:
                judged += 1
                proof = proof or [req.idx, reply.idx]
                continue
            if end < deadline or view.fault_active(req.ts, deadline, conn):
                skipped += 1
                continue
            judged += 1
            idx = [req.idx] + ([reply.idx] if reply else [])
            answer = (
                f"next op 1 at {fmt(reply.ts)}"
                if reply
                else f"no op 1 before {conn.describe_close()}"
            )
            failures.append((f"conn {conn.id}: server op 1 at {fmt(req.ts)}, {answer}", idx))
    tol = f"tolerance op1_reply_within={within} s"
    if failures:
        return _first_failure("HB4", failures, tol)
    if not judged:
        reason = (
            "no server op 1 in the trace"
            if not skipped
            else "every server op 1 fell in a fault window or at the end"
        )
        return _skip("HB4", reason)
    return _pass("HB4", f"{judged} server op 1 answered within {within} s; {tol}", proof)


def _reconnect_bound(
    conns: Sequence[Connection], zombie: Connection, tol: Tolerances
) -> tuple[float, str]:
    """How long after closing ``zombie`` the client may take to open its next connection, and why.

    ``reconnect_within``, or ``reconnect_backoff_factor`` times the longest wait the client took
    before ``zombie`` opened (from a connection's end to the next connection's start; capped at
    ``backoff_cap``): a client whose backoff has not reset since earlier failures waits one step
    longer. Attempts refused by a proxy that is down never reach the trace, but their waits add up
    to the gap between the connections on either side of the outage.
    """
    starts = [c.start_ts for c in conns]
    limit = zombie.start_ts
    longest: tuple[float, Connection, Connection] | None = None
    for i, conn in enumerate(conns):
        if conn.id == zombie.id or conn.close_ts is None or conn.close_ts > limit:
            continue
        j = max(bisect.bisect_left(starts, conn.close_ts), i + 1)
        if j < len(conns) and conns[j].start_ts <= limit:
            wait = conns[j].start_ts - conn.close_ts
            if longest is None or wait > longest[0]:
                longest = (wait, conn, conns[j])
    text = f"reconnect_within={tol.reconnect_within} s"
    if longest is None:
        return tol.reconnect_within, text
    backoff = min(tol.backoff_cap, tol.reconnect_backoff_factor * longest[0])
    if backoff <= tol.reconnect_within:
        return tol.reconnect_within, text
    wait, before, after = longest
    return backoff, (
        f"{tol.reconnect_backoff_factor:g} x the client's earlier wait of {wait:.2f} s "
        f"(conn {before.id} ended at {fmt(before.close_ts or 0.0)}, conn {after.id} opened at "
        f"{fmt(after.start_ts)})"
    )


def check_zb1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    proof: list[int] = []
    proof_text = ""
    conns = view.ordered_conns()
    for conn in conns:
        interval = view.interval_for(conn)
        if interval is None:
            continue
        beats = conn.beats()
        unacked: Frame | None = None
        open_until = conn.close_ts if conn.close_ts is not None else view.end_ts
        for i, beat in enumerate(beats):
            nxt = beats[i + 1].idx if i + 1 < len(beats) else None
            ack = conn.ack_after(beat.idx)
            answered = ack is not None and (nxt is None or ack.idx < nxt)
            if not answered and open_until - beat.ts >= interval * tol.ack_wait:
                unacked = beat
                break
        if unacked is None:
            continue
        deadline = unacked.ts + interval * (1 + tol.heartbeat_slack) + tol.zombie_close_grace
        close = conn.close
        if close is not None and close.get("by") != "client" and float(close["ts"]) <= deadline:
            continue  # the server or the network ended it first: nothing for the client to detect
        if close is None and view.end_ts < deadline:
            continue  # the run ended too soon to tell
        judged += 1
        bound = f"the client should have closed it by {fmt(deadline)}"
        if close is None or close.get("by") != "client" or float(close["ts"]) > deadline:
            failures.append(
                (
                    f"conn {conn.id}: heartbeat at {fmt(unacked.ts)} got no ACK; connection "
                    f"{conn.describe_close()} ({bound})",
                    [unacked.idx] + ([conn.close_idx] if conn.close_idx is not None else []),
                )
            )
            continue
        code = close.get("code")
        if code in SESSION_KILLING_CLIENT_CODES:
            failures.append(
                (
                    f"conn {conn.id}: zombie close at {fmt(close['ts'])} used code {code}, which "
                    "kills the session",
                    [unacked.idx, conn.close_idx or 0],
                )
            )
            continue
        close_ts = float(close["ts"])
        nxt_conn = next((c for c in conns if c.start_ts >= close_ts and c.id != conn.id), None)
        within, within_text = _reconnect_bound(conns, conn, tol)
        if nxt_conn is None and view.end_ts < close_ts + within:
            judged -= 1  # the run ended before the client was due to reconnect
            continue
        if nxt_conn is None or nxt_conn.start_ts > close_ts + within:
            when = (
                f"next connection at {fmt(nxt_conn.start_ts)}"
                if nxt_conn
                else f"no later connection by the end of the run at {fmt(view.end_ts)}"
            )
            failures.append(
                (
                    f"conn {conn.id}: zombie closed at {fmt(close_ts)} but {when} (bound "
                    f"{within:.2f} s: {within_text})",
                    [unacked.idx, conn.close_idx or 0],
                )
            )
            continue
        proof = proof or [unacked.idx, conn.close_idx or 0, nxt_conn.open_idx or 0]
        proof_text = (
            f"conn {conn.id}: heartbeat at {fmt(unacked.ts)} unACKed, client closed at "
            f"{fmt(close_ts)} "
            f"with {'code ' + str(code) if code is not None else 'no code'}, conn {nxt_conn.id} "
            "opened at "
            f"{fmt(nxt_conn.start_ts)} (bound {within:.2f} s: {within_text})"
        )
    tol_text = (
        f"tolerances heartbeat_slack={tol.heartbeat_slack}, "
        f"zombie_close_grace={tol.zombie_close_grace} s, "
        f"reconnect_within={tol.reconnect_within} s, "
        f"reconnect_backoff_factor={tol.reconnect_backoff_factor}"
    )
    if failures:
        return _first_failure("ZB1", failures, tol_text)
    if not judged:
        return _skip("ZB1", "no connection had an unACKed heartbeat the client was due to detect")
    return _pass("ZB1", f"{proof_text}; {tol_text}", proof)


# ------------------------------------------------------------------------------------------------
# Sessions and resuming


@dataclass
class Loss:
    """A connection ended while the client held a resumable session."""

    conn: Connection
    ts: float
    idx: int
    why: str


def _first_session_frame_after(view: RunView, ts: float, idx: int) -> Frame | None:
    """The client's first IDENTIFY or RESUME after trace record ``idx``."""
    frames = view.session_frames
    i = bisect.bisect_right(view.session_positions, idx)
    return frames[i] if i < len(frames) else None


def _resumable_losses(view: RunView) -> list[Loss]:
    """Walk the trace keeping "does the client hold a resumable session?" and note each loss."""
    losses: list[Loss] = []
    holding = False
    reconnect_asked: set[int] = set()
    for idx, rec in enumerate(view.records):
        kind = rec.get("kind")
        conn_id = rec.get("conn")
        if kind == "frame_out":
            if is_live_frame(rec):
                holding = True
            elif rec.get("op") == OP_INVALID_SESSION:
                holding = bool(rec.get("d"))
            elif rec.get("op") == OP_RECONNECT and isinstance(conn_id, int):
                reconnect_asked.add(conn_id)
        elif kind == "conn_close" and isinstance(conn_id, int):
            by, code = rec.get("by"), rec.get("code")
            conn = view.conns[conn_id]
            resumable = False
            why = ""
            if by == "client":
                resumable = code not in SESSION_KILLING_CLIENT_CODES
                why = f"client closed with {code if code is not None else 'no code'}"
                if not resumable and conn_id in reconnect_asked:
                    resumable, why = True, f"op 7, then client closed with {code}"
            elif by == "server":
                resumable = code in RESUMABLE_SERVER_CLOSE_CODES
                why = f"server closed with {code if code is not None else 'no code'}"
            else:
                resumable = True
                why = f"network ended it ({rec.get('how')})"
            if conn_id in reconnect_asked and by != "client":
                resumable, why = True, f"op 7, then {why}"
            if holding and (resumable or conn_id in reconnect_asked):
                if conn.live is not None or any(f.op == OP_RESUME for f in conn.frames_in):
                    losses.append(Loss(conn, float(rec["ts"]), idx, why))
            if not resumable:
                holding = False
            if by == "client" and code in SESSION_KILLING_CLIENT_CODES:
                holding = False
    return losses


def _resume_path_failing(view: RunView, loss: Loss, nxt: Frame) -> str | None:
    """Why the IDENTIFY ``nxt`` after ``loss`` may be a legitimate fallback from resuming."""
    a, b, a_idx, b_idx = loss.ts, nxt.ts, loss.idx, nxt.idx
    for conn in view.ordered_conns():
        # A reconnect may open before the lost connection's close is recorded (op 7: the client
        # opens the new socket, then closes the old one at the same instant).
        opened = (conn.open_idx or -1) > a_idx or conn.start_ts >= a - 1e-9
        if conn.id == loss.conn.id or not opened or (conn.open_idx or -1) >= b_idx:
            continue
        close = conn.close
        if (
            close is not None
            and close.get("by") == "server"
            and close.get("code") in REIDENTIFY_CLOSE_CODES
            and (conn.close_idx or -1) < b_idx
        ):
            code = close.get("code")
            return f"the server closed conn {conn.id} with {code} (start a new session)"
        if conn.live is None:
            resumed = any(f.op == OP_RESUME for f in conn.frames_in)
            if conn.listener == "resume" or resumed:
                return f"conn {conn.id} to the resume URL failed ({conn.describe_close()})"
    for f in view.frames_out:
        if a_idx < f.idx < b_idx and f.op == OP_INVALID_SESSION and not f.rec.get("d"):
            return f"op 9 d=false at {fmt(f.ts)}"
    for w in view.windows:
        target = str(w.params.get("url", w.params.get("target", "")))
        if w.overlaps(a, b) and (w.kind in ("toxic", "proxy") and target in ("resume", "both", "")):
            return f"fault {w.name!r} on the resume URL from {fmt(w.start)}"
    return None


def _highest_seq_before(view: RunView) -> Callable[[int], int]:
    """A function: the highest dispatch seq the gateway sent before trace record ``idx`` (0)."""
    positions: list[int] = []
    highest: list[int] = []
    for f in view.frames_out:
        s = f.rec.get("s")
        if f.op == OP_DISPATCH and isinstance(s, int):
            positions.append(f.idx)
            highest.append(max(s, highest[-1]) if highest else s)

    def before(idx: int) -> int:
        i = bisect.bisect_left(positions, idx)
        return highest[i - 1] if i else 0

    return before


def _session_known(
    loss: Loss, delivered_sessions: set[str], seq_before: Callable[[int], int]
) -> tuple[bool, str]:
    """Whether the trace (or the delivery log) proves the client had the session it lost.

    The gateway recording READY only says it was sent: a fault may cut it in flight, and then the
    client rightly IDENTIFYs again. Proof that it arrived: the client RESUMEd on that connection
    (it knew a session), its delivery log holds the session, or a heartbeat on that connection
    after READY carried a seq the client could only have had from READY or a later dispatch
    (``d`` at least READY's ``s`` and above every seq sent to it before that READY).
    """
    conn = loss.conn
    if any(f.op == OP_RESUME and f.idx < loss.idx for f in conn.frames_in):
        return True, "it sent RESUME on that connection"
    readies = [f for f in conn.frames_out if f.rec.get("t") == "READY" and f.idx < loss.idx]
    if not readies:
        return False, f"conn {conn.id} carried no READY"
    ready = readies[-1]
    sid = ready.rec.get("session_id")
    if sid is not None and str(sid) in delivered_sessions:
        return True, f"its delivery log holds session {sid}"
    beat = _beat_cites_ready(conn, ready, loss.idx, seq_before)
    if beat is not None:
        d = beat.rec["d"]
        return True, f"its heartbeat at {fmt(beat.ts)} cited d={d}, sent only after READY"
    floor = _ready_floor(ready, seq_before)
    return False, (
        f"READY on conn {conn.id} at {fmt(ready.ts)} may never have reached the client (no "
        f"heartbeat after it cited s>{floor}, no delivery-log entry of its session)"
    )


@dataclass
class _ServerSession:
    """One session as the gateway's ``session`` records and frames show it."""

    sid: str
    shard: tuple[int, ...] | None
    conns: set[int] = field(default_factory=set)
    attached: int | None = None  # the connection it is attached to now
    detached_at: float | None = None
    gone: Record | None = None  # its "invalidated" / "expired" record
    seq: int = 0  # the highest seq the server gave it (records and frames seen so far)
    ready: Frame | None = None


def _shard_key(value: Any) -> tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list | tuple) else None


def _ready_floor(ready: Frame, seq_before: Callable[[int], int]) -> int:
    """A heartbeat citing a seq above this had READY (or a later dispatch of its session)."""
    ready_s = ready.rec["s"] if isinstance(ready.rec.get("s"), int) else 1
    return max(ready_s - 1, seq_before(ready.idx))


def _beat_cites_ready(
    conn: Connection, ready: Frame, before_idx: int, seq_before: Callable[[int], int]
) -> Frame | None:
    """A heartbeat on ``conn`` after ``ready`` whose seq the client could only have had from that
    READY on (at least READY's ``s`` and above every seq sent before it)."""
    floor = _ready_floor(ready, seq_before)
    for beat in conn.beats():
        d = beat.rec.get("d")
        if ready.idx < beat.idx < before_idx and isinstance(d, int) and d > floor:
            return beat
    return None


def _abandoned_sessions(
    view: RunView, delivery_log: Sequence[Record] | None, tol: Tolerances
) -> tuple[list[tuple[str, list[int]]], set[int], int, list[str]]:
    """IDENTIFYs sent while the client's previous session was still resumable at the server.

    Judged from the gateway's ``session`` records (a trace without them judges nothing here):
    for each IDENTIFY, the last session an IDENTIFY of the same shard created, if the client
    provably had it (it RESUMEd it, its delivery log holds it, or a heartbeat cited a seq only
    that session's READY could have given it). The IDENTIFY is fine once the server invalidated
    or expired that session, or after it told the client so: op 9 d=false, a close with
    4003/4005/4007/4009 or a fatal code. Otherwise the client threw away a session it could
    resume, and with it every event the session held.

    Returns (failures, indices of the IDENTIFYs that failed, IDENTIFYs judged, not judged).
    """
    seq_before = _highest_seq_before(view)
    delivered: dict[str, int] = {}
    for e in delivery_log or ():
        sid, s = e.get("session_id"), e.get("s")
        if sid is not None and isinstance(s, int):
            delivered[str(sid)] = max(delivered.get(str(sid), 0), s)
    sessions: dict[str, _ServerSession] = {}
    latest: dict[tuple[int, ...] | None, str] = {}  # shard -> its last session's id
    told: dict[tuple[int, ...] | None, str] = {}  # shard -> what told it the session was gone
    conn_sid: dict[int, str] = {}
    conn_shard: dict[int, tuple[int, ...] | None] = {}
    failures: list[tuple[str, list[int]]] = []
    failed: set[int] = set()
    unknown: list[str] = []
    judged = 0

    def tell(conn_id: int, what: str) -> None:
        if conn_id in conn_shard:
            told[conn_shard[conn_id]] = what
        else:  # a connection that never said whose it is: it may be any client's
            for key in latest:
                told[key] = what

    for idx, rec in enumerate(view.records):
        kind, conn_id = rec.get("kind"), rec.get("conn")
        if kind == "session":
            sid, event = str(rec.get("session_id")), rec.get("event")
            session = sessions.get(sid)
            if event == "created" and session is None and isinstance(conn_id, int):
                session = sessions[sid] = _ServerSession(sid, conn_shard.get(conn_id))
                latest[session.shard] = sid
                told.pop(session.shard, None)
            if session is None:
                continue
            if isinstance(rec.get("seq"), int):
                session.seq = max(session.seq, rec["seq"])
            if event in ("created", "attached") and isinstance(conn_id, int):
                session.conns.add(conn_id)
                session.attached, session.detached_at = conn_id, None
                conn_sid[conn_id] = sid
                conn_shard[conn_id] = session.shard
            elif event == "detached":
                session.attached, session.detached_at = None, float(rec["ts"])
            elif event in ("invalidated", "expired") and session.gone is None:
                session.attached, session.gone = None, rec
            continue
        if not isinstance(conn_id, int):
            continue
        op = rec.get("op")
        if kind == "frame_out":
            owner = sessions.get(conn_sid.get(conn_id, ""))
            if op == OP_DISPATCH and owner is not None and isinstance(rec.get("s"), int):
                owner.seq = max(owner.seq, rec["s"])
                if rec.get("t") == "READY" and owner.ready is None:
                    owner.ready = Frame(idx, rec)
            elif op == OP_INVALID_SESSION and not rec.get("d"):
                tell(conn_id, f"op 9 d=false on conn {conn_id} at {fmt(rec['ts'])}")
        elif kind == "conn_close" and rec.get("by") == "server":
            code = rec.get("code")
            if code in REIDENTIFY_CLOSE_CODES or code in FATAL_CLOSE_CODES:
                tell(conn_id, f"close {code} on conn {conn_id} at {fmt(rec['ts'])}")
        elif kind == "frame_in" and op == OP_RESUME:
            resumed = sessions.get(str(rec.get("session_id")))
            if resumed is not None:
                conn_shard.setdefault(conn_id, resumed.shard)
        elif kind == "frame_in" and op == OP_IDENTIFY:
            key = _shard_key(rec.get("shard"))
            conn_shard.setdefault(conn_id, key)
            prev = sessions.get(latest.get(key, ""))
            if prev is None or prev.attached == conn_id or prev.ready is None:
                continue
            ts = float(rec["ts"])
            if prev.gone is not None:
                judged += 1
                continue
            if key in told:
                judged += 1
                continue
            later = _session_end_after(view, prev.sid, idx)
            if (
                later is not None
                and later.get("event") == "expired"
                and float(later["ts"]) - ts <= tol.expiry_slack
            ):
                judged += 1
                continue
            # Did the client have it? (A READY cut in flight leaves it nothing to resume.)
            proof = _client_had_session(view, prev, idx, delivered, seq_before)
            if proof is None:
                unknown.append(
                    f"IDENTIFY at {fmt(ts)}: session {prev.sid}'s READY may never have reached "
                    "the client"
                )
                continue
            judged += 1
            last, how = proof
            first_lost = last + 1
            if later is not None:
                until = f"resumable until it {later.get('event')} at {fmt(later['ts'])}"
                held = max(prev.seq, int(later.get("seq") or 0))
            else:
                until = f"still resumable at the end of the run, {fmt(view.end_ts)}"
                held = prev.seq
            where = (
                f"lost at {fmt(prev.detached_at)}"
                if prev.detached_at is not None
                else f"still attached to conn {prev.attached}"
            )
            # What the server had for the session beyond the client's last seq; the events it
            # buffered while detached reach the trace only with its next record.
            mine = f"the client's seq {last} ({how})"
            lost = (
                f"held seqs {first_lost}-{held} beyond {mine}, and every later event"
                if held >= first_lost
                else f"held every event after {mine}"
            )
            failures.append(
                (
                    f"IDENTIFY on conn {conn_id} at {fmt(ts)} while session {prev.sid} ({where}, "
                    f"{until}) {lost}; nothing told the client the session was gone (no op 9 "
                    "d=false, no close 4003/4005/4007/4009 or fatal close): a new session "
                    "instead of a RESUME lost those events to the application",
                    [idx],
                )
            )
            failed.add(idx)
    return failures, failed, judged, unknown


def _session_end_after(view: RunView, sid: str, idx: int) -> Record | None:
    """The session's "invalidated"/"expired" record after trace record ``idx``, if any."""
    for rec in view.records[idx + 1 :]:
        if (
            rec.get("kind") == "session"
            and str(rec.get("session_id")) == sid
            and rec.get("event") in ("invalidated", "expired")
        ):
            return rec
    return None


def _client_had_session(
    view: RunView,
    session: _ServerSession,
    before_idx: int,
    delivered: dict[str, int],
    seq_before: Callable[[int], int],
) -> tuple[int, str] | None:
    """The last seq of ``session`` the client showed it had before ``before_idx``, and how it
    showed it; None when nothing proves it ever had the session."""
    if session.sid in delivered:
        return delivered[session.sid], "its delivery log"
    best: tuple[int, str] | None = None
    for f in view.frames_in:
        if f.idx >= before_idx:
            break
        seq = f.rec.get("seq")
        if f.op == OP_RESUME and str(f.rec.get("session_id")) == session.sid:
            seq = seq if isinstance(seq, int) else 0
            if best is None or seq >= best[0]:
                best = (seq, f"its RESUME at {fmt(f.ts)}")
    assert session.ready is not None
    ready_conn = view.conns[session.ready.rec["conn"]]
    cited = _beat_cites_ready(ready_conn, session.ready, before_idx, seq_before)
    if cited is None and best is None:
        return None
    for conn_id in sorted(session.conns):
        for beat in view.conns[conn_id].beats():
            d = beat.rec.get("d")
            if beat.idx < before_idx and session.ready.idx < beat.idx and isinstance(d, int):
                if best is None or d > best[0]:
                    best = (d, f"its heartbeat at {fmt(beat.ts)}")
    return best


def check_rs1(
    view: RunView, exp: Expectations, delivery_log: Sequence[Record] | None = None
) -> Verdict:
    cleared, _, _ = last_fault_cleared(view)
    last_open = max((c.open_idx for c in view.conns.values() if c.open_idx is not None), default=-1)
    delivered_sessions = {
        str(e["session_id"]) for e in delivery_log or () if e.get("session_id") is not None
    }
    # A loss that is the run ending (see _is_teardown), with no connection after it, is no loss.
    losses = [
        loss
        for loss in _resumable_losses(view)
        if cleared is None
        or last_open > loss.idx
        or not _is_teardown(view, loss.conn, cleared, exp.tolerances)
    ]
    seq_before = _highest_seq_before(view)
    # The server's word first: an IDENTIFY while the old session was still resumable there.
    failures, abandoned, identifies_judged, _ = _abandoned_sessions(
        view, delivery_log, exp.tolerances
    )
    unknown: list[str] = []
    judged = 0
    proof: list[int] = []
    for loss in losses:
        nxt = _first_session_frame_after(view, loss.ts, loss.idx)
        if nxt is None or nxt.idx in abandoned:
            continue
        conn = view.conns[nxt.rec["conn"]]
        if nxt.op == OP_IDENTIFY:
            # A session the client may never have received (READY cut in flight) is not judged:
            # a new IDENTIFY is then the right move. (A RESUME shows it had one.)
            known, why = _session_known(loss, delivered_sessions, seq_before)
            if not known:
                unknown.append(f"conn {loss.conn.id} lost at {fmt(loss.ts)}: {why}")
                continue
        judged += 1
        if nxt.op == OP_IDENTIFY:
            excuse = _resume_path_failing(view, loss, nxt)
            if excuse is None:
                failures.append(
                    (
                        f"conn {loss.conn.id} lost at {fmt(loss.ts)} ({loss.why}) while resumable "
                        f"and the client had the session ({why}); the client then IDENTIFYd on "
                        f"conn {conn.id} at {fmt(nxt.ts)} instead of RESUMing",
                        [loss.idx, nxt.idx],
                    )
                )
            continue
        same_socket = conn.id == loss.conn.id
        if (
            conn.listener not in ("resume", None)
            and not same_socket
            # RESUME on the discovery URL is the fallback while resume_gateway_url fails.
            and _resume_path_failing(view, loss, nxt) is None
        ):
            failures.append(
                (
                    f"conn {loss.conn.id} lost at {fmt(loss.ts)}; RESUME at {fmt(nxt.ts)} went to "
                    f"conn {conn.id} "
                    f"on the {conn.listener!r} URL, not resume_gateway_url",
                    [loss.idx, nxt.idx],
                )
            )
            continue
        proof = proof or [loss.idx, nxt.idx]
    unknown_text = (
        f"; {len(unknown)} IDENTIFY after a loss not judged, the client may not have had the "
        f"session ({unknown[0]}{' ...' if len(unknown) > 1 else ''})"
        if unknown
        else ""
    )
    if failures:
        return _first_failure(
            "RS1",
            failures,
            f"{judged} resumable loss(es), {identifies_judged} IDENTIFY(s) after a session the "
            f"client held judged{unknown_text}",
        )
    identified = (
        f"; {identifies_judged} IDENTIFY(s) after a session the client held, each once the "
        "server had ended it or told the client so"
        if identifies_judged
        else ""
    )
    if not judged and identifies_judged:
        return _pass("RS1", identified.removeprefix("; ") + unknown_text)
    if not judged:
        why = (
            "no resumable loss in the run"
            if not losses
            else "no IDENTIFY/RESUME followed the resumable loss"
            if not unknown
            else "no resumable loss judged"
        ) + unknown_text
        due = [
            loss
            for loss in losses
            if view.end_ts - loss.ts > max(exp.recovery_bound, exp.tolerances.teardown_window)
            and _first_session_frame_after(view, loss.ts, loss.idx) is None
        ]
        if due and exp.outcome == "resume":
            loss = due[-1]
            return _fail(
                "RS1",
                f"conn {loss.conn.id} lost at {fmt(loss.ts)} ({loss.why}); the client never "
                f"sent RESUME or IDENTIFY afterwards",
                [loss.idx],
            )
        return _skip("RS1", why)
    return _pass(
        "RS1",
        f"{judged} resumable loss(es), each followed by a RESUME on the resume URL "
        f"(or on the discovery URL, or an IDENTIFY, after the resume path failed)"
        f"{identified}{unknown_text}",
        proof,
    )


def check_rs2(view: RunView, exp: Expectations) -> Verdict:
    """One pass over the trace, keeping the current session (the last READY), the connections
    that carried it, the last seq sent on them and the highest seq the client's own heartbeats
    proved it had."""
    resumes: list[Frame] = []
    failures: list[tuple[str, list[int]]] = []
    session: str | None = None
    session_idx = -1
    conns: set[Any] = set()
    last_sent: int | None = None
    proven: tuple[int, Record] | None = None
    beat_by_conn: dict[Any, tuple[int, Record]] = {}  # highest heartbeat d on each connection

    def judge_resume(idx: int, rec: Record) -> None:
        ts = float(rec["ts"])
        sid, seq = rec.get("session_id"), rec.get("seq")
        if session is None:
            failures.append(
                (f"RESUME at {fmt(ts)} on conn {rec.get('conn')} but no READY was ever sent", [idx])
            )
        elif sid != session:
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries session_id {sid!r}, but the current session "
                    f"(READY at {fmt(view.records[session_idx]['ts'])}) is {session!r}",
                    [session_idx, idx],
                )
            )
        elif not isinstance(seq, int) or isinstance(seq, bool):
            failures.append((f"RESUME at {fmt(ts)} carries seq={seq!r}, not a number", [idx]))
        elif last_sent is not None and seq > last_sent:
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries seq={seq}, beyond the last sent s={last_sent}",
                    [idx],
                )
            )
        elif proven is not None and seq < int(proven[1]["d"]):
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries seq={seq}, but the client's heartbeat at "
                    f"{fmt(proven[1]['ts'])} showed it had s={proven[1]['d']}",
                    [proven[0], idx],
                )
            )
        elif rec.get("token_ok") is False:
            failures.append((f"RESUME at {fmt(ts)} carried a wrong token", [idx]))

    for idx, rec in enumerate(view.records):
        kind, conn, op = rec.get("kind"), rec.get("conn"), rec.get("op")
        if kind == "frame_out" and rec.get("t") == "READY" and rec.get("session_id"):
            session, session_idx = str(rec["session_id"]), idx
            conns = {conn}
            last_sent = rec["s"] if isinstance(rec.get("s"), int) else None
            proven = None  # beats before READY carried the previous session's seq
            beat_by_conn.pop(conn, None)
            continue
        if kind == "frame_in" and op == OP_RESUME:
            resumes.append(Frame(idx, rec))
            judge_resume(idx, rec)
            if session is not None and rec.get("session_id") == session and conn not in conns:
                conns.add(conn)
                earlier = beat_by_conn.get(conn)
                if earlier is not None and (proven is None or earlier[1]["d"] > proven[1]["d"]):
                    proven = earlier
            continue
        if kind == "frame_in" and op == OP_HEARTBEAT and isinstance(rec.get("d"), int):
            best = beat_by_conn.get(conn)
            if best is None or rec["d"] >= best[1]["d"]:
                beat_by_conn[conn] = (idx, rec)
            if conn in conns and (proven is None or rec["d"] >= proven[1]["d"]):
                proven = (idx, rec)
        elif kind == "frame_out" and op == OP_DISPATCH and conn in conns:
            s = rec.get("s")
            if isinstance(s, int) and (last_sent is None or s > last_sent):
                last_sent = s
    if not resumes:
        return _skip("RS2", "the client sent no RESUME")
    if failures:
        return _first_failure("RS2", failures, f"{len(resumes)} RESUME(s) judged")
    r = resumes[-1]
    return _pass(
        "RS2",
        f"{len(resumes)} RESUME(s) carried the current session_id and a seq between the last one "
        f"the client proved it had and the last sent (last: seq={r.rec.get('seq')} at {fmt(r.ts)})",
        [r.idx],
    )


def check_rs3(view: RunView, exp: Expectations, delivery_log: Sequence[Record] | None) -> Verdict:
    if delivery_log is None:
        return _skip("RS3", "the client gave no delivery log")
    conn_session = _session_of_conns(view)
    sent: dict[str, set[int]] = {}
    for f in view.frames_out:
        sid = conn_session.get(f.rec.get("conn"))  # type: ignore[arg-type]
        if (
            f.op == OP_DISPATCH
            and isinstance(f.rec.get("s"), int)
            and sid
            and f.rec.get("t") not in ("READY", "RESUMED")
        ):
            sent.setdefault(sid, set()).add(int(f.rec["s"]))
    # Group delivered dispatches by session (or by READY boundaries if the log has no session ids).
    groups: dict[str, list[tuple[int, Record]]] = {}
    segment = 0
    for line, entry in enumerate(delivery_log, 1):
        t = entry.get("t")
        if t == "READY" and not entry.get("session_id"):
            segment += 1
        if t in ("READY", "RESUMED"):
            continue
        key = str(entry.get("session_id") or f"segment {segment}")
        groups.setdefault(key, []).append((line, entry))
    delivered = sum(len(g) for g in groups.values())
    if not delivered:
        return _skip("RS3", "the delivery log holds no dispatches")
    failures: list[str] = []
    for key, entries in groups.items():
        prev: tuple[int, Record] | None = None
        seen: set[int] = set()
        for line, entry in entries:
            s = entry.get("s")
            if not isinstance(s, int):
                failures.append(f"delivery line {line} has s={s!r}")
                continue
            if s in seen:
                failures.append(f"session {key}: s={s} delivered twice (delivery line {line})")
            elif prev is not None and s < int(prev[1]["s"]):
                failures.append(
                    f"session {key}: s={s} delivered after s={prev[1]['s']} (delivery line {line})"
                )
            seen.add(s)
            prev = (line, entry)
        if key in sent and seen:
            top = max(seen)
            missing = sorted(s for s in sent[key] if s < top and s not in seen)
            if missing:
                failures.append(
                    f"session {key}: s={missing[:5]} sent by the gateway but never delivered, "
                    f"while s={top} was"
                )
    if failures:
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        return _fail("RS3", failures[0] + more)
    return _pass(
        "RS3",
        f"{delivered} dispatch(es) in {len(groups)} session(s) delivered once each, in order, "
        f"with no gap below the highest delivered seq",
    )


def check_rs4(view: RunView, exp: Expectations) -> Verdict:
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    for conn in view.ordered_conns():
        close = conn.close
        if close is None or close.get("by") != "client":
            continue
        op7 = next((f for f in conn.frames_out if f.op == OP_RECONNECT), None)
        nxt = _first_session_frame_after(view, float(close["ts"]), conn.close_idx or 0)
        resuming = nxt is not None and nxt.op == OP_RESUME
        beats, acks = conn.beats(), conn.acks()
        # A zombie close: the session was live and the last heartbeat went unanswered.
        interval = view.interval_for(conn) or 0.0
        zombie = (
            conn.live is not None
            and bool(beats)
            and not any(a.idx > beats[-1].idx for a in acks)
            and float(close["ts"]) - beats[-1].ts >= interval * exp.tolerances.ack_wait
        )
        if not (op7 or resuming or zombie):
            continue
        judged += 1
        code = close.get("code")
        if code in SESSION_KILLING_CLIENT_CODES:
            reason = (
                f"after op 7 at {fmt(op7.ts)}"
                if op7
                else f"then RESUMEd at {fmt(nxt.ts)}"
                if resuming and nxt
                else "after an unACKed heartbeat"
            )
            idx = [conn.close_idx or 0] + ([op7.idx] if op7 else []) + ([nxt.idx] if nxt else [])
            failures.append(
                (f"conn {conn.id}: client closed with {code} at {fmt(close['ts'])} {reason}", idx)
            )
    if failures:
        return _first_failure(
            "RS4", failures, f"{judged} client close(s) with intent to resume judged"
        )
    if not judged:
        return _skip("RS4", "the client never closed a connection it meant to resume")
    return _pass("RS4", f"{judged} client close(s) meant to resume used codes other than 1000/1001")


def check_rs5(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    triggers: list[tuple[Record, int, str]] = []
    for f in view.frames_out:
        if f.op == OP_INVALID_SESSION and not f.rec.get("d"):
            triggers.append(
                (f.rec, f.idx, f"op 9 d=false on conn {f.rec.get('conn')} at {fmt(f.ts)}")
            )
    for conn in view.conns.values():
        c = conn.close
        if c is not None and c.get("by") == "server" and c.get("code") in REIDENTIFY_CLOSE_CODES:
            triggers.append(
                (
                    c,
                    conn.close_idx or 0,
                    f"server close {c.get('code')} on conn {conn.id} at {fmt(c['ts'])}",
                )
            )
    triggers.sort(key=lambda t: t[1])
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    unseen: list[str] = []  # invalidations a fault may have kept from the client
    lo, hi = tol.reidentify_delay_min, tol.reidentify_delay_max + tol.reidentify_slack
    proof: list[int] = []
    last_ok = ""
    for rec, idx, what in triggers:
        ts = float(rec["ts"])
        nxt = _first_session_frame_after(view, ts, idx)
        if nxt is None:
            if view.end_ts - ts > hi and exp.outcome != "stop":
                judged += 1
                failures.append(
                    (f"{what}: no IDENTIFY in the {view.end_ts - ts:.2f} s that followed", [idx])
                )
            continue
        # A second trigger before the client acted restarts the clock; judge only the last one.
        if any(idx < other < nxt.idx for _, other, _ in triggers):
            continue
        judged += 1
        conn = view.conns[nxt.rec["conn"]]
        delay = nxt.ts - ts
        carrier = view.conns.get(rec.get("conn"))  # type: ignore[arg-type]
        in_flight = (
            view.fault_active(ts, nxt.ts, carrier) if carrier is not None else None
        )
        crossed = (nxt.op == OP_RESUME and nxt.rec.get("conn") == rec.get("conn")
                   and nxt.ts - ts <= tol.crossing_window)
        if crossed:
            judged -= 1
            unseen.append(f"{what} (the RESUME on the same connection {nxt.ts - ts:.3f} s "
                          f"later crossed it; crossing_window={tol.crossing_window} s)")
        elif nxt.op == OP_RESUME and in_flight is not None:
            # What the gateway sent is not what a faulted client received: the invalidation may
            # still have been in flight when the client resumed for a reason of its own.
            judged -= 1
            unseen.append(f"{what} (fault {in_flight.name!r} on that connection)")
        elif nxt.op == OP_RESUME:
            failures.append(
                (
                    f"{what}: the client RESUMEd at {fmt(nxt.ts)} instead of IDENTIFYing",
                    [idx, nxt.idx],
                )
            )
        elif conn.listener == "resume":
            failures.append(
                (
                    f"{what}: IDENTIFY at {fmt(nxt.ts)} went to the resume URL (conn {conn.id})",
                    [idx, nxt.idx],
                )
            )
        elif delay < lo - 1e-9:
            failures.append(
                (
                    f"{what}: IDENTIFY after only {delay:.2f} s (wait at least {lo} s)",
                    [idx, nxt.idx],
                )
            )
        elif delay > hi + 1e-9 and not view.fault_active(ts, nxt.ts):
            failures.append(
                (f"{what}: IDENTIFY only after {delay:.2f} s (bound {hi:.2f} s)", [idx, nxt.idx])
            )
        else:
            proof = proof or [idx, nxt.idx]
            last_ok = f"{what}: IDENTIFY on conn {conn.id} after {delay:.2f} s"
    tol_text = (
        f"tolerances reidentify_delay_min={lo} s, reidentify_delay_max={tol.reidentify_delay_max} "
        "s "
        f"+ reidentify_slack={tol.reidentify_slack} s"
    )
    if unseen:
        tol_text += (
            f"; {len(unseen)} RESUME after an invalidation not judged, it may not have reached "
            f"the client: {unseen[0]}"
        )
    if failures:
        return _first_failure("RS5", failures, tol_text)
    if not judged:
        if unseen:
            return _skip("RS5", tol_text)
        return _skip("RS5", "no op 9 d=false and no server close 4003/4005/4007/4009 in the run")
    return _pass(
        "RS5",
        f"{judged} invalidation(s) followed by an IDENTIFY on the discovery URL; last: {last_ok}; "
        f"{tol_text}",
        proof,
    )


def check_fc1(view: RunView, exp: Expectations) -> Verdict:
    fatal = [
        c
        for c in view.ordered_conns()
        if c.close is not None
        and c.close.get("by") == "server"
        and c.close.get("code") in FATAL_CLOSE_CODES
    ]
    if not fatal:
        return _skip("FC1", "no fatal close code (4004, 4010-4014) in the run")
    first = min(fatal, key=lambda c: c.close_idx or 0)
    close_idx = first.close_idx or 0
    later = [c for c in view.ordered_conns() if (c.open_idx or -1) > close_idx]
    code = first.close["code"] if first.close else None
    if later:
        c = later[0]
        return _fail(
            "FC1",
            f"server closed conn {first.id} with fatal {code} at {fmt(first.close_ts or 0)}; the "
            f"client reconnected anyway (conn {c.id} at {fmt(c.start_ts)}, {len(later)} in all)",
            [close_idx, c.open_idx or 0],
        )
    return _pass(
        "FC1",
        f"server closed conn {first.id} with fatal {code} at {fmt(first.close_ts or 0)}; no "
        f"connection in the {view.end_ts - (first.close_ts or 0):.2f} s after",
        [close_idx],
    )


# ------------------------------------------------------------------------------------------------
# Backoff, budgets, rate limits


def check_bo1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    conns = view.ordered_conns()
    failures: list[tuple[str, list[int]]] = []
    resumes = [f for f in view.frames_in if f.op == OP_RESUME]
    if exp.max_resumes is not None and len(resumes) > exp.max_resumes:
        r = resumes[exp.max_resumes]
        failures.append(
            (
                f"{len(resumes)} RESUMEs (the scenario allows {exp.max_resumes}); "
                f"RESUME #{exp.max_resumes + 1} at {fmt(r.ts)}",
                [r.idx],
            )
        )
    # A storm is too many connection attempts in a short window, whatever became of them.
    opens = [c for c in conns if c.open_idx is not None]
    open_times = [c.start_ts for c in opens]
    for i in range(len(opens)):
        j = bisect.bisect_right(open_times, open_times[i] + tol.storm_window)
        if j - i > tol.storm_max_attempts:
            failures.append(
                (
                    f"storm: {j - i} connection attempts between {fmt(open_times[i])} and "
                    f"{fmt(open_times[j - 1])} (conns {opens[i].id}..{opens[j - 1].id})",
                    [c.open_idx or 0 for c in opens[i:j]],
                )
            )
            break

    def failed(conn: Connection) -> bool:
        """Never got a session, or the server or network ended it within one interval."""
        if conn.live is None:
            return True
        if conn.close is None or conn.close.get("by") == "client":
            return False
        interval = view.interval_for(conn) or 0.0
        return float(conn.close["ts"]) - conn.live.ts < interval

    runs: list[list[Connection]] = []
    current: list[Connection] = []
    for conn in conns:
        if failed(conn):
            current.append(conn)
        else:
            if len(current) >= 2:
                runs.append(current)
            current = []
    if len(current) >= 2:
        runs.append(current)
    judged_runs = 0
    longest_run = 0
    run_text = ""
    for run in runs:
        starts = [c.start_ts for c in run]
        idx = [c.open_idx or 0 for c in run]
        # The client's waits: from one attempt ending to the next starting.
        ends = [c.close_ts if c.close_ts is not None else c.start_ts for c in run]
        gaps = [max(0.0, b - a) for a, b in zip(ends, starts[1:], strict=False)]
        judged_runs += 1
        longest_run = max(longest_run, len(run))
        if len(run) == longest_run:
            run_text = (
                f"conns {run[0].id}..{run[-1].id}: {len(run)} failed attempts from "
                f"{fmt(starts[0])}, waits {', '.join(f'{g:.2f}' for g in gaps[:8])} s"
            )
        # An immediate first retry is fine; the backoff shows in the waits after it.
        waits = gaps[1:] if gaps and gaps[0] < 0.05 else gaps
        if len(waits) >= 3:
            grew = max(waits[1:]) >= tol.backoff_growth * waits[0]
            flat_ok = min(waits[1:]) >= tol.backoff_flat_ok
            if not (grew or flat_ok):
                failures.append(
                    (
                        f"no backoff: {len(run)} failed attempts from {fmt(starts[0])} with waits "
                        f"{', '.join(f'{g:.2f}' for g in gaps[:6])} s",
                        idx,
                    )
                )
            ratios = [b / a for a, b in zip(waits, waits[1:], strict=False) if a > 0]
            # Two jittered ratios fall within 0.01 of each other by chance about once in 50
            # runs (a fuzz campaign hit it); three about once in 10,000. A verdict must not be
            # a coin toss, so "no jitter" needs three equal ratios (four waits after the first).
            if (
                len(ratios) >= NO_JITTER_MIN_RATIOS
                and max(ratios) - min(ratios) < 0.01
                and max(waits) < tol.backoff_cap
            ):
                failures.append(
                    (
                        f"no jitter: waits {', '.join(f'{g:.3f}' for g in waits[:6])} s follow "
                        "one exact ratio",
                        idx,
                    )
                )
        big = [g for g in gaps if g > tol.backoff_cap]
        if big:
            failures.append(
                (
                    f"uncapped: a wait of {max(big):.1f} s between attempts (cap "
                    f"{tol.backoff_cap} s)",
                    idx,
                )
            )
    tol_text = (
        f"tolerances storm_max_attempts={tol.storm_max_attempts} per {tol.storm_window} s, "
        f"backoff_growth={tol.backoff_growth}, backoff_flat_ok={tol.backoff_flat_ok} s, "
        f"backoff_cap={tol.backoff_cap} s"
    )
    if failures:
        return _first_failure("BO1", failures, tol_text)
    if not judged_runs:
        if len(opens) > tol.storm_max_attempts:
            return _pass(
                "BO1",
                f"{len(opens)} connection attempts, never more than {tol.storm_max_attempts} in "
                f"{tol.storm_window} s; no run of failed attempts; {tol_text}",
            )
        if exp.max_resumes is not None:
            return _pass(
                "BO1",
                f"{len(resumes)} RESUME(s), within the {exp.max_resumes} allowed; no run of "
                f"failed attempts reached the gateway",
            )
        return _skip(
            "BO1",
            "no run of two or more failed connection attempts reached the gateway "
            "(attempts against a proxy that is down never do)",
        )
    return _pass(
        "BO1",
        f"{judged_runs} run(s) of failed attempts backed off without a storm (longest: "
        f"{run_text}); {tol_text}",
    )


def check_bo2(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    identifies = [f for f in view.frames_in if f.op == OP_IDENTIFY]
    if not identifies:
        return _skip("BO2", "the client sent no IDENTIFY")
    failures: list[tuple[str, list[int]]] = []
    mc = max(1, exp.max_concurrency)
    by_bucket: dict[int, list[Frame]] = {}
    for f in identifies:
        shard = f.rec.get("shard")
        shard_id = int(shard[0]) if isinstance(shard, list | tuple) and shard else 0
        by_bucket.setdefault(shard_id % mc, []).append(f)
    for bucket, frames in sorted(by_bucket.items()):
        for a, b in zip(frames, frames[1:], strict=False):
            if b.ts - a.ts < tol.identify_window - 1e-9:
                failures.append(
                    (
                        f"bucket {bucket}: IDENTIFYs at {fmt(a.ts)} and {fmt(b.ts)}, "
                        f"{b.ts - a.ts:.2f} s apart (window {tol.identify_window} s)",
                        [a.idx, b.idx],
                    )
                )
                break
    budget = [(i, r) for i, r in enumerate(view.records) if r.get("kind") == "identify_budget"]
    for f in identifies:
        before = [(i, r) for i, r in budget if i < f.idx]
        if (
            before
            and isinstance(before[-1][1].get("remaining"), int)
            and before[-1][1]["remaining"] <= 0
        ):
            failures.append(
                (
                    f"IDENTIFY at {fmt(f.ts)} with the session start budget at "
                    f"{before[-1][1]['remaining']}",
                    [before[-1][0], f.idx],
                )
            )
            break
    if exp.max_identifies is not None and len(identifies) > exp.max_identifies:
        f = identifies[exp.max_identifies]
        failures.append(
            (
                f"{len(identifies)} IDENTIFYs (the scenario allows {exp.max_identifies}); "
                f"IDENTIFY #{exp.max_identifies + 1} at {fmt(f.ts)}",
                [f.idx],
            )
        )
    tol_text = f"max_concurrency={mc}, tolerance identify_window={tol.identify_window} s"
    if exp.max_identifies is not None:
        tol_text += f", max_identifies={exp.max_identifies}"
    if failures:
        return _first_failure("BO2", failures, tol_text)
    return _pass(
        "BO2",
        f"{len(identifies)} IDENTIFY(s), none too close in its bucket, none over budget; "
        f"{tol_text}",
        [identifies[0].idx],
    )


def check_rl1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    failures: list[tuple[str, list[int]]] = []
    total = 0
    busiest = 0
    for conn in view.ordered_conns():
        frames = conn.frames_in
        total += len(frames)
        times = [f.ts for f in frames]
        for i in range(len(times)):
            j = bisect.bisect_right(times, times[i] + tol.rate_window - 1e-9)
            busiest = max(busiest, j - i)
            if j - i > tol.rate_max_frames:
                failures.append(
                    (
                        f"conn {conn.id}: {j - i} client frames in {tol.rate_window:.0f} s from "
                        f"{fmt(times[i])}",
                        [frames[i].idx, frames[j - 1].idx],
                    )
                )
                break
        for f in frames:
            if isinstance(f.rec.get("size"), int) and f.rec["size"] > tol.max_payload:
                failures.append(
                    (f"conn {conn.id}: op {f.op} at {fmt(f.ts)} is {f.rec['size']} bytes", [f.idx])
                )
                break
    for idx, rec in enumerate(view.records):
        if (
            rec.get("kind") == "frame_bad"
            and isinstance(rec.get("size"), int)
            and rec["size"] > tol.max_payload
        ):
            failures.append(
                (
                    f"conn {rec.get('conn')}: a {rec['size']}-byte frame at {fmt(rec['ts'])} "
                    f"({rec.get('reason')})",
                    [idx],
                )
            )
    tol_text = (
        f"limits {tol.rate_max_frames} frames per {tol.rate_window:.0f} s, {tol.max_payload} bytes"
    )
    if failures:
        return _first_failure("RL1", failures, tol_text)
    if not total:
        return _skip("RL1", "the client sent no frames")
    return _pass("RL1", f"{total} client frame(s); busiest window held {busiest}; {tol_text}")


# ------------------------------------------------------------------------------------------------
# Liveness


def _is_teardown(view: RunView, conn: Connection, cleared: float, tol: Tolerances) -> bool:
    """Whether ``conn``'s close is the run ending: in the trace's last moments, after every fault
    cleared, and the kind of close a runner stopping the client or the gateway makes (the client
    closing with 1000/1001 or none, the network, or the server going away with 1001) rather than a
    server closing a silent client."""
    close = conn.close
    if close is None or conn.close_ts is None:
        return False
    if conn.close_ts < max(cleared, view.end_ts - tol.teardown_window):
        return False
    by, code = close.get("by"), close.get("code")
    if by == "client":
        return code in (1000, 1001, None)
    if by == "server":
        return code == 1001
    return True


def last_fault_cleared(view: RunView) -> tuple[float | None, str, int | None]:
    """(time, description, record index) of the moment the last fault cleared.

    (None, reason, None) if a fault never switched off; the start of the trace if there were none.
    """
    if not view.windows:
        return view.start_ts, "no faults: judged from the start of the run", None
    never = [w for w in view.windows if w.end is None]
    if never:
        w = never[0]
        return (
            None,
            f"fault {w.name!r} switched on at {fmt(w.start)} never switched off",
            w.start_idx,
        )
    last = max(view.windows, key=lambda w: (w.end or 0.0, w.end_idx or 0))
    assert last.end is not None
    what = "switched off" if last.end > last.start else "applied"
    return last.end, f"the last fault ({last.name!r}) {what} at {fmt(last.end)}", last.end_idx


def check_lv1(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    cleared, cleared_text, cleared_idx = last_fault_cleared(view)
    conns = view.ordered_conns()
    if exp.outcome == "stop":
        fatal = [
            c
            for c in conns
            if c.close is not None
            and c.close.get("by") == "server"
            and c.close.get("code") in FATAL_CLOSE_CODES
        ]
        if not fatal:
            if not any(c.live is not None for c in conns):
                return _fail(
                    "LV1",
                    "expected a fatal close and then silence, but the client never got a session "
                    "(no READY or RESUMED), so the fatal close never came",
                )
            return _skip("LV1", "expected the client to stop, but no fatal close happened")
        after = [
            c
            for c in conns
            if cleared is not None
            and (c.open_idx or -1) > (cleared_idx or -1)
            and c.start_ts > (cleared or 0.0)
        ]
        if cleared is None:
            ref = max((w.start_idx for w in view.windows), default=-1)
            after = [c for c in conns if (c.open_idx or -1) > ref]
        if after:
            c = after[0]
            return _fail(
                "LV1",
                f"expected the client to stop; {cleared_text}, but conn {c.id} opened at "
                f"{fmt(c.start_ts)}",
                [c.open_idx or 0],
            )
        return _pass("LV1", f"expected the client to stop: {cleared_text}; no connection after it")
    if cleared is None:
        return _skip("LV1", cleared_text)
    bound = exp.recovery_bound
    run_end = max(view.end_ts, view.start_ts + (exp.run_duration or 0.0))
    check_at = min(cleared + bound, run_end)
    too_short = run_end < cleared + bound
    idx_base = [cleared_idx] if cleared_idx is not None else []
    # Once the faults are gone, every session the client gets must heartbeat: a connection that
    # went live and then sat silent until the server closed it is the seed's failure, even if a
    # later connection is still too young to tell.
    for conn in conns:
        if conn.live is None or conn.live.ts < cleared or conn.live.ts > check_at:
            continue
        if conn.close is None or _is_teardown(view, conn, cleared, exp.tolerances):
            continue
        interval = view.interval_for(conn) or 0.0
        silent = not any(b.idx > conn.live.idx for b in conn.beats())
        if silent and (conn.close_ts or 0.0) - conn.live.ts >= interval * (1 + slack) - 1e-6:
            return _fail(
                "LV1",
                f"{cleared_text}; conn {conn.id} got {conn.live.rec.get('t')} at "
                f"{fmt(conn.live.ts)} but sent no heartbeat until it was {conn.describe_close()}",
                idx_base
                + [conn.live.idx]
                + ([conn.close_idx] if conn.close_idx is not None else []),
            )
    candidates = []
    for conn in conns:
        if conn.live is None or conn.live.ts > check_at:
            continue
        if conn.close_ts is not None and conn.close_ts < check_at:
            if not _is_teardown(view, conn, cleared, exp.tolerances):
                continue
        candidates.append(conn)
    if not candidates and too_short:
        return _skip(
            "LV1",
            f"{cleared_text}; the run ends at {fmt(run_end)}, before the "
            f"{bound} s recovery bound ran out and before the client was live",
        )
    if not candidates:
        late = next((c for c in conns if c.live is not None and c.live.ts > check_at), None)
        tail = (
            f"; the client was live again only at {fmt(late.live.ts)} (conn {late.id})"
            if late is not None and late.live is not None
            else "; it never became live again"
        )
        last_beat = max(
            (f for f in view.frames_in if f.op == OP_HEARTBEAT), key=lambda f: f.idx, default=None
        )
        beat_text = (
            f"; last heartbeat at {fmt(last_beat.ts)} (conn {last_beat.rec.get('conn')})"
            if last_beat and late is None
            else ""
        )
        return _fail(
            "LV1",
            f"{cleared_text}; no live session (READY/RESUMED sent, connection open) by "
            f"{fmt(check_at)} (bound {bound} s){tail}{beat_text}",
            idx_base
            + (
                [late.live.idx]
                if late is not None and late.live is not None
                else [last_beat.idx]
                if last_beat
                else []
            ),
        )
    conn = candidates[-1]
    assert conn.live is not None
    interval = view.interval_for(conn) or 0.0
    beats = [b for b in conn.beats() if b.idx > conn.live.idx]
    acked = [b for b in beats if conn.ack_after(b.idx) is not None]
    how = conn.live.rec.get("t")
    end = conn.close_ts if conn.close_ts is not None else view.end_ts
    live_text = f"conn {conn.id} got {how} at {fmt(conn.live.ts)}"
    if not acked:
        ended_by_run = conn.close is None or _is_teardown(view, conn, cleared, exp.tolerances)
        if ended_by_run and end - max(conn.live.ts, cleared) <= interval * (1 + slack):
            return _skip(
                "LV1", f"{cleared_text}; {live_text}, but the run ends before a heartbeat was due"
            )
        return _fail(
            "LV1",
            f"{cleared_text}; {live_text} but no ACKed heartbeat followed on it "
            f"(heartbeats have stopped; {conn.describe_close()})",
            idx_base + [conn.live.idx],
        )
    last = acked[-1]
    if end - last.ts > interval * (1 + slack) + 1e-9 and not view.fault_active(last.ts, end, conn):
        return _fail(
            "LV1",
            f"{cleared_text}; {live_text}, but its heartbeats stopped at {fmt(last.ts)} "
            f"({end - last.ts:.2f} s before {'its close' if conn.close else 'the end'}; "
            f"interval {interval:.2f} s)",
            idx_base + [conn.live.idx, last.idx],
        )
    # The outcome class: which session the client ends on.
    sessions = [f for f in view.frames_out if f.rec.get("t") == "READY"]
    first_sid = sessions[0].rec.get("session_id") if sessions else None
    current = _session_of_conns(view).get(conn.id)
    if exp.outcome == "resume" and len(sessions) > 1:
        return _fail(
            "LV1",
            f"expected the client to resume; {live_text}, but it started {len(sessions)} "
            f"sessions (a new READY at {fmt(sessions[1].ts)})",
            idx_base + [sessions[1].idx],
        )
    if exp.outcome == "reidentify" and (len(sessions) < 2 or current == first_sid):
        return _fail(
            "LV1",
            f"expected the client to start a new session; {live_text}, still on the first "
            f"session {first_sid!r}",
            idx_base + [conn.live.idx],
        )
    outcome = f"; outcome {exp.outcome} as expected" if exp.outcome else ""
    if conn.live.ts <= cleared:
        when = "and stayed up through it"
    else:
        when = f"({conn.live.ts - cleared:.2f} s later, bound {bound} s)"
    return _pass(
        "LV1",
        f"{cleared_text}; {live_text} {when}; "
        f"{len(acked)} ACKed heartbeat(s) after it, last at {fmt(last.ts)}{outcome}; "
        f"tolerance heartbeat_slack={slack}",
        idx_base + [conn.live.idx, last.idx],
    )


# ------------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[RunView, Expectations], Verdict]] = {
    "HB1": check_hb1,
    "HB2": check_hb2,
    "HB3": check_hb3,
    "HB4": check_hb4,
    "ZB1": check_zb1,
    "RS1": check_rs1,
    "RS2": check_rs2,
    "RS4": check_rs4,
    "RS5": check_rs5,
    "FC1": check_fc1,
    "BO1": check_bo1,
    "BO2": check_bo2,
    "RL1": check_rl1,
    "LV1": check_lv1,
}


def judge(
    records: Sequence[Record],
    delivery_log: Sequence[Record] | None = None,
    expectations: Expectations | None = None,
) -> list[Verdict]:
    """Judge one run: every invariant in INVARIANTS order, one verdict each."""
    exp = expectations or Expectations()
    view = RunView(records)
    verdicts: list[Verdict] = []
    for inv in INVARIANTS:
        if inv == "RS3":
            verdicts.append(check_rs3(view, exp, delivery_log))
        elif inv == "RS1":
            verdicts.append(check_rs1(view, exp, delivery_log))
        else:
            verdicts.append(CHECKS[inv](view, exp))
    return verdicts


def all_passed(verdicts: Iterable[Verdict]) -> bool:
    return all(v.status != "fail" for v in verdicts)
