"""A read-only view of one trace (connections, frames, fault windows), built once per ``judge()``
call; every check reads the run through it."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway_common.facts import (
    ONE_SHOT_CONTROLS,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_RESUME,
    OPCODES,
    POLICY_CONTROLS,
)
from harness.oracle.model import (
    Record,
    fmt,
)

# The runner's note that ends the observed run (harness/world.py writes it before stopping the
# client); what follows it is the harness's shutdown, not the client's behaviour.
SHUTDOWN_NOTE = "world: run over"


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
    compress: str | None = None  # the transport compression it asked for (zlib-stream ...)
    frames_in: list[Frame] = field(default_factory=list)
    frames_out: list[Frame] = field(default_factory=list)
    frame_faults: list[Frame] = field(default_factory=list)  # the gateway's frame_fault records
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

    @property
    def open_order(self) -> int:
        """Its conn_open record's index (-1 when none: it counts as opened before everything)."""
        return -1 if self.open_idx is None else self.open_idx

    def beats(self) -> list[Frame]:
        """The client's heartbeats on this connection (computed once; the view is read-only)."""
        if self._beats is None:
            self._beats = [f for f in self.frames_in if f.op == OP_HEARTBEAT]
        return self._beats

    def acks(self) -> list[Frame]:
        if self._acks is None:
            self._acks = [f for f in self.frames_out if f.op == OP_HEARTBEAT_ACK]
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
    """Connections, fault windows and frames of one trace, indexed for the invariants, with the
    client's delivery log (None: the client gave none; RS1 and RS3 read it)."""

    def __init__(self, records: Sequence[Record], delivery_log: Sequence[Record] | None = None):
        self.records = list(records)
        self.delivery_log = None if delivery_log is None else list(delivery_log)
        self.shutdown_idx = shutdown_index(self.records)
        if self.shutdown_idx is not None:  # the harness's shutdown is not judged (package doc)
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
        frame_faults: dict[tuple[Any, ...], list[tuple[int, Record]]] = {}
        for idx, rec in enumerate(self.records):
            kind = rec.get("kind")
            conn_id = rec.get("conn")
            conn = self._conn(conn_id) if isinstance(conn_id, int) else None
            if kind == "conn_open" and conn is not None:
                conn.open_idx, conn.open_ts = idx, float(rec["ts"])
                conn.listener = rec.get("listener")
            elif kind == "ws_upgrade" and conn is not None:
                conn.listener = conn.listener or rec.get("listener")
                compress = (rec.get("query") or {}).get("compress")
                conn.compress = compress if isinstance(compress, str) else None
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
            elif kind == "frame_fault" and conn is not None:
                conn.frame_faults.append(Frame(idx, rec))
                on_for = rec.get("on_for")
                since = float(rec["ts"]) - (on_for if isinstance(on_for, int | float) else 0.0)
                group = (rec.get("action"), conn_id, round(since, 3))
                frame_faults.setdefault(group, []).append((idx, rec))
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
        self.windows.extend(_frame_fault_windows(frame_faults))
        # The connections are all known now: their order and the first interval any HELLO
        # gave are computed once (per connection they made judging quadratic in a client that
        # opened thousands).
        self._ordered = sorted(self.conns.values(), key=lambda c: (c.start_ts, c.id))
        self._first_interval = next(
            (c.interval for c in self._ordered if c.interval is not None), None)
        counts: dict[str | None, int] = {}
        for conn in self._ordered:
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
        """The connections by start time (then id); a copy the caller may change."""
        return list(self._ordered)

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

    def data_fault_active(self, a: float, b: float, conn: Connection) -> FaultWindow | None:
        """Like ``fault_active`` with ``conn``, but only faults that can delay or drop the bytes
        themselves: a toxic that only holds back the TCP end (slow_close) delivers every frame
        as sent, so a frame sent under it reached the client."""
        self.fault_active(a, b, conn)  # builds this connection's windows
        return next((w for w in self._conn_windows[conn.id]
                     if w.overlaps(a, b) and w.params.get("type") not in END_ONLY_TOXICS), None)

    def interval_for(self, conn: Connection) -> float | None:
        return conn.interval if conn.interval is not None else self._first_interval


CONTROL_RECORD = "_from_control_record"
# Toxics that touch only the connection's end, never its bytes (Toxiproxy's slow_close).
END_ONLY_TOXICS = frozenset({"slow_close"})


def _frame_fault_windows(
    groups: dict[tuple[Any, ...], list[tuple[int, Record]]]
) -> list[FaultWindow]:
    """A fault window per frame-level fault that acted on a connection: from when it was
    switched on or armed (``on_for`` before an act) to its last act there (a delayed frame:
    until it went out). The fault was on all that time, so an armed one-shot (drop_mid_guilds),
    or a switch that outlasts itself (a frame still held when it went off), is a window too."""
    windows = []
    for (action, conn_id, since), recs in groups.items():
        first_idx, first = recs[0]
        last_idx = recs[-1][0]
        start = float(since)
        end = max(float(r["ts"]) + float(r.get("held") or 0.0) for _, r in recs)
        end = max(end, start + 1e-6)  # a window has length (fault_active ignores instants)
        what = str(action)
        if first.get("mode"):
            what += f" {first['mode']}"
            if first.get("op") is not None:
                what += f" op {first['op']}"
        params = {"action": action, "target": conn_id, "mode": first.get("mode")}
        windows.append(FaultWindow(f"{what} (conn {conn_id})", "control", start, end,
                                   first_idx, last_idx, params))
    return windows


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


def describe_server_frame(rec: Record, compress: str | None = None) -> str:
    """A server frame as evidence names it: ``op 9 Invalid Session (d=false)``, ``op 10 Hello
    (zlib-stream)`` (``compress``: the connection's transport compression), ``op 0 READY
    (s=1)``."""
    op = rec.get("op")
    spec = OPCODES.get(op) if isinstance(op, int) else None
    name = rec.get("t") if op == OP_DISPATCH else (spec.name if spec else "unknown op")
    bits = []
    if op == OP_INVALID_SESSION:
        bits.append(f"d={json.dumps(rec.get('d'))}")
    if op == OP_DISPATCH and rec.get("s") is not None:
        bits.append(f"s={rec.get('s')}")
    if rec.get("compressed"):
        bits.append(compress or "compressed")
    return f"op {op} {name}" + (f" ({', '.join(bits)})" if bits else "")


def last_attempt(view: RunView, after_idx: int) -> tuple[str, list[int]]:
    """How the client's last connection opened after trace record ``after_idx`` went: what the
    client sent to start a session, the gateway's last frame that was no dispatch or ACK (what
    it answered with: HELLO, op 9, op 7 ...), and how it closed, with the client's own close
    reason. ("", []) when no connection opened after it."""
    conns = [c for c in view.ordered_conns() if c.open_order > after_idx]
    if not conns:
        return "", []
    conn = conns[-1]
    events: list[Frame] = [f for f in conn.frames_in if f.op in (OP_IDENTIFY, OP_RESUME)][-1:]
    answer = [f for f in conn.frames_out if f.op not in (OP_DISPATCH, OP_HEARTBEAT_ACK)][-1:]
    text = f"{len(conns)} connection(s) after it; the last, conn {conn.id} ({conn.listener}):"
    steps = sorted(events + answer, key=lambda f: f.idx)
    for f in steps:
        what = (OPCODES[f.op].name.upper() if f in events and isinstance(f.op, int)
                else describe_server_frame(f.rec, conn.compress))
        text += f" {what} at {fmt(f.ts)},"
    if not events and conn.hello is not None:
        text += " no IDENTIFY or RESUME,"
    text += f" {conn.describe_close()}"
    reason = str((conn.close or {}).get("reason") or "")
    if reason and (conn.close or {}).get("by") == "client":
        text += f" saying {reason[:120]!r}"
    idx = [f.idx for f in steps] + ([conn.close_idx] if conn.close_idx is not None else [])
    return text, idx


def missed_ack_before(view: RunView, before_idx: int, ack_wait: float) -> tuple[str, list[int]]:
    """The client's last heartbeat before trace record ``before_idx`` that got no ACK before its
    next beat (or its connection's close, ``ack_wait`` intervals or more after it), named with
    the fault window that withheld or dropped the ACK: the missed ACK a client that then went
    silent stumbled on. ("", []) if none."""
    found: tuple[Frame, Connection] | None = None
    for conn in view.conns.values():
        beats = [b for b in conn.beats() if b.idx < before_idx]
        wait = ack_wait * (view.interval_for(conn) or 0.0)
        nexts: list[Frame | None] = [*beats[1:], None] if beats else []
        for b, nxt in zip(beats, nexts, strict=True):
            ack = conn.ack_after(b.idx)
            limit = nxt.idx if nxt is not None else (conn.close_idx or before_idx)
            end_ts = nxt.ts if nxt is not None else (conn.close_ts or view.end_ts)
            if ((ack is None or ack.idx > limit) and end_ts - b.ts >= wait
                    and (found is None or b.idx > found[0].idx)):
                found = (b, conn)
    if found is None:
        return "", []
    beat, conn = found
    text = f"the heartbeat at {fmt(beat.ts)} on conn {conn.id} got no ACK"
    idx = [beat.idx]
    nxt_beat = next((b for b in conn.beats() if b.idx > beat.idx), None)
    picked = next((f for f in conn.frame_faults if f.idx > beat.idx
                   and (nxt_beat is None or f.idx < nxt_beat.idx)
                   and f.rec.get("op") == OP_HEARTBEAT_ACK), None)
    if picked is not None:  # the gateway dropped or held back that very ACK, on purpose
        on_for = picked.rec.get("on_for")
        since = picked.ts - (on_for if isinstance(on_for, int | float) else 0.0)
        text += (f": the gateway {picked.rec.get('detail')} at {fmt(picked.ts)} "
                 f"({picked.rec.get('action')}, on since {fmt(since)})")
        return text, idx + [picked.idx]
    window = view.fault_active(beat.ts, beat.ts + (view.interval_for(conn) or 0.0), conn)
    if window is not None:
        action = window.params.get("action") or window.params.get("type") or window.kind
        text += f" (fault {window.name!r}, {action}, on at {fmt(window.start)})"
        idx.append(window.start_idx)
    return text, idx


def is_live_frame(rec: Record) -> bool:
    return rec.get("op") == OP_DISPATCH and rec.get("t") in ("READY", "RESUMED")


def session_of_conns(view: RunView) -> dict[int, str | None]:
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
