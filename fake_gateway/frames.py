"""Frame-level faults of the fake gateway: what a gateway gets wrong in the frames it sends.

Sans-I/O, like the core it belongs to (`GatewayCore.frames`): `fake_gateway.controls` hands the
control actions here, the core asks at a few points what they want (one hook where it queues a
server frame, one where a READY's GUILD_CREATE stream goes out, one each where a RESUME and an
IDENTIFY are answered), and every time a fault acts it records a ``frame_fault`` trace record
naming the connection, the frame and ``on_for`` (how long the fault had been switched on or
armed): the oracle's fault window runs from then to the act (`harness.oracle.view`). Times are
durations, not clock readings, so a runner that rebases the trace's times keeps them true.

- ``server_frames`` (switch): while on, the server frames it picks (by ``op`` and/or dispatch
  type ``t``; neither: every frame), at most ``count`` of them, are dropped, delayed by ``ms``,
  sent twice, or sent after the frame that follows them (``reorder``; at the latest after
  ``ms``). The pick happens before encoding, so a zlib-stream or zstd-stream stays intact. A
  dropped dispatch is still in the session's history, as a dispatch lost with a connection is:
  a client that RESUMEs from before it gets it replayed; it has no ``frame_out`` record, so the
  oracle never expects the client to have had it. A delayed frame's ``frame_out`` is written
  when it goes out, and dispatches queue behind a delayed dispatch (a stalled path delays, it
  does not reorder): only ``reorder`` breaks seq order, on purpose.
- ``drop_mid_guilds`` (one-shot, armed): the next READY on the target goes out with only the
  first ``guilds`` of its GUILD_CREATEs, then the connection is reset; the rest stay in the
  session's history, for a RESUME to replay.
- ``close_on_resume`` (switch): every RESUME is answered with a close frame with ``code`` (none:
  an empty close frame, which the client sees as 1005); the session survives it unless
  ``resumable`` (or, when null, the code's row of `gateway_common.facts.CLOSE_CODES`) says
  otherwise.
- ``invalid_session_loop`` (switch): every IDENTIFY and RESUME is answered with op 9 d=false
  (a RESUME's session ends with it), an op 9 loop. One RESUME answered with op 9 d=false is the
  ``expire_session`` control (or ``invalidate_session``) followed by a reconnect.

Targets, as for every control: a connection id, "all" (open connections and later ones) or
"next" (the next connection to open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway_common.facts import OP_DISPATCH, OPCODES
from gateway_common.trace import KIND_FRAME_FAULT, Trace

# The control actions `fake_gateway.controls` hands to `FrameFaults.apply`.
ACTIONS = frozenset({"server_frames", "drop_mid_guilds", "close_on_resume",
                     "invalid_session_loop"})

Payload = dict[str, Any]
Fields = dict[str, Any]
Out = list[tuple[Payload, Fields]]


@dataclass
class Armed:
    """One fault switched on (or a one-shot armed): what it does, where, since when."""

    action: str
    target: int | str  # a connection id, "all", or "next" until the next connection opens
    params: dict[str, Any]
    since: float
    left: int | None = None  # acts this many more times (None: every time while on)

    def aims_at(self, conn_id: int) -> bool:
        return self.target == "all" or self.target == conn_id

    def picks(self, payload: Payload) -> bool:
        """server_frames: whether this frame is one it picks."""
        op, t = self.params.get("op"), self.params.get("t")
        if t is not None and (payload.get("op") != OP_DISPATCH or payload.get("t") != t):
            return False
        return op is None or payload.get("op") == op


@dataclass
class _Held:
    payload: Payload
    fields: Fields
    release: float | None  # delay: when it goes out; reorder: None (after the next frame)
    deadline: float  # the latest it goes out


@dataclass
class _Queue:
    frames: list[_Held] = field(default_factory=list)

    def delayed_dispatch_tail(self) -> float | None:
        """When the last delayed dispatch held here goes out (dispatches queue behind it)."""
        for held in reversed(self.frames):
            if held.release is not None and held.payload.get("op") == OP_DISPATCH:
                return held.release
        return None


def describe(payload: Payload) -> str:
    """A server frame as a frame_fault's detail names it: ``op 11 Heartbeat ACK``,
    ``op 0 GUILD_CREATE (s=4)``."""
    op = payload.get("op")
    if op == OP_DISPATCH:
        return f"op 0 {payload.get('t')} (s={payload.get('s')})"
    spec = OPCODES.get(op) if isinstance(op, int) else None
    return f"op {op} {spec.name if spec else 'unknown'}"


class FrameFaults:
    """The frame-level faults of one gateway: what is switched on or armed, and the frames held
    back per connection."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.armed: list[Armed] = []
        self._queues: dict[int, _Queue] = {}

    # ---- controls ------------------------------------------------------------------------

    def apply(self, action: str, target: int | str, params: dict[str, Any], now: float) -> None:
        """Switch one validated action on or off, or arm a one-shot."""
        if action == "drop_mid_guilds":
            self.armed.append(Armed(action, target, dict(params), now, left=1))
            return
        if params.get("on", True):
            left = params.get("count") if action == "server_frames" else None
            self.armed.append(Armed(action, target, dict(params), now, left))
            return
        same = [a for a in self.armed if a.action == action and a.target == target]
        # The runner switches a step off with the params it switched it on with: that one goes;
        # an "off" that names no such step switches off every one of the action on that target.
        exact = [a for a in same if {**a.params, "on": False} == params][:1]
        for gone in exact or same:
            self.armed.remove(gone)

    def connection_opened(self, conn_id: int) -> None:
        """Faults aimed at "next" now aim at this connection."""
        for armed in self.armed:
            if armed.target == "next":
                armed.target = conn_id

    def forget(self, conn_id: int) -> None:
        """The connection is gone: what it held goes with it (a dispatch stays in the session's
        history), and so do faults aimed at it alone."""
        self._queues.pop(conn_id, None)
        self.armed = [a for a in self.armed if a.target != conn_id]

    def _first(self, action: str, conn_id: int) -> Armed | None:
        return next((a for a in self.armed if a.action == action and a.aims_at(conn_id)), None)

    def _spend(self, armed: Armed) -> None:
        if armed.left is not None:
            armed.left -= 1
            if armed.left <= 0:
                self.armed.remove(armed)

    def record(self, armed: Armed, conn_id: int, now: float, detail: str,
               **fields: Any) -> None:
        self.trace.record(KIND_FRAME_FAULT, ts=now, conn=conn_id, action=armed.action,
                          on_for=round(now - armed.since, 6), detail=detail, **fields)

    # ---- the core's hooks ----------------------------------------------------------------

    def outgoing(self, conn_id: int, payload: Payload, fields: Fields, now: float) -> Out:
        """A server frame the core is about to send: the frames to encode and send now, in
        order (none, this one, it twice, or it after frames held for reorder)."""
        queue = self._queues.get(conn_id)
        armed = next((a for a in self.armed if a.action == "server_frames"
                      and a.aims_at(conn_id) and a.picks(payload)), None)
        tail = queue.delayed_dispatch_tail() if queue else None
        is_dispatch = payload.get("op") == OP_DISPATCH
        if armed is None:
            if is_dispatch and tail is not None:
                self._hold(conn_id, payload, fields, tail, tail)  # stays behind it, in order
                return []
            return [(payload, fields), *self._after_next(conn_id)]
        self._spend(armed)
        mode = armed.params["mode"]
        ms = float(armed.params["ms"]) / 1000.0
        what = describe(payload)
        info = {"mode": mode, "op": payload.get("op"), "t": payload.get("t"),
                "s": payload.get("s")}
        if mode == "drop":
            self.record(armed, conn_id, now, f"dropped {what} (never sent)", **info)
            return []
        if mode == "duplicate":
            self.record(armed, conn_id, now, f"sent {what} twice", **info)
            return [(payload, fields), (payload, fields), *self._after_next(conn_id)]
        if mode == "delay":
            until = now + ms
            if is_dispatch and tail is not None:
                until = max(until, tail)
            self.record(armed, conn_id, now, f"held {what} back for {until - now:.3f} s",
                        held=round(until - now, 6), **info)
            self._hold(conn_id, payload, fields, until, until)
            return []
        self.record(armed, conn_id, now, f"held {what} back until the frame after it has gone "
                    f"(at most {ms:.3f} s)", **info)
        self._hold(conn_id, payload, fields, None, now + ms)
        return []

    def _hold(self, conn_id: int, payload: Payload, fields: Fields, release: float | None,
              deadline: float) -> None:
        self._queues.setdefault(conn_id, _Queue()).frames.append(
            _Held(payload, fields, release, deadline))

    def _after_next(self, conn_id: int) -> Out:
        """Frames held for reorder: they go right after the frame going out now."""
        queue = self._queues.get(conn_id)
        if queue is None:
            return []
        out = [(h.payload, h.fields) for h in queue.frames if h.release is None]
        if out:
            queue.frames = [h for h in queue.frames if h.release is not None]
        return out

    def next_release(self, conn_id: int) -> float | None:
        """When the next held frame of this connection is due (None: nothing held)."""
        queue = self._queues.get(conn_id)
        if queue is None or not queue.frames:
            return None
        return min(h.deadline for h in queue.frames)

    def due(self, conn_id: int, now: float) -> Out:
        """Held frames that go out now, in order."""
        queue = self._queues.get(conn_id)
        if queue is None:
            return []
        out = [h for h in queue.frames if h.deadline <= now]
        if not out:
            return []
        queue.frames = [h for h in queue.frames if h.deadline > now]
        out.sort(key=lambda h: h.deadline)  # stable: equal times keep their order
        return [(h.payload, h.fields) for h in out]

    def take_cut(self, conn_id: int) -> Armed | None:
        """drop_mid_guilds armed for this connection's READY: it is used up now."""
        armed = self._first("drop_mid_guilds", conn_id)
        if armed is not None:
            self._spend(armed)
        return armed

    def resume_close(self, conn_id: int) -> Armed | None:
        """close_on_resume, if on for this connection."""
        return self._first("close_on_resume", conn_id)

    def op9_loop(self, conn_id: int) -> Armed | None:
        """invalid_session_loop, if on for this connection."""
        return self._first("invalid_session_loop", conn_id)
