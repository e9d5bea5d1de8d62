"""Planted-bug variants of the reference client's decision core, for proving the harness finds bugs.

Each mutant is a subclass of :class:`~harness.client.core.GatewayClientCore` that reintroduces one
real-world gateway-client bug (the seed failure, or a row of the failure-mode table F1-F22 in
``shared/reference/gateway-protocol.md`` section 15). ``MUTANTS`` maps the name users pass to
``--client`` to a factory with the core's constructor signature, ``factory(config, rng)``; the
world hands it to the client driver as ``core_factory``.

A fuzz campaign against each must find a failing schedule, shrink it to a few faults and name
the invariant it breaks (``gateway-harness fuzz --client NAME``); ``EXPECTED_INVARIANTS`` says
which invariants each bug is expected to break.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from gateway_common.facts import OP_HEARTBEAT, OP_INVALID_SESSION, OP_RECONNECT, OP_RESUME
from harness.client.core import (
    Action,
    CancelTimer,
    ClientConfig,
    CloseConnection,
    CloseHow,
    GatewayClientCore,
    Purpose,
    Stage,
    StartTimer,
    _Connection,
    classify_close,
)


class HeartbeatDiesOnTlsReset(GatewayClientCore):
    """The seed: a connection reset during a TLS handshake kills the heartbeat task.

    The bot reconnects and even RESUMEs, but never heartbeats again: the gateway drops it after
    every deadline and it never recovers until restarted ("Client network socket disconnected
    before secure TLS connection was established", then silence).
    """

    heartbeat_dead = False

    def connect_failed(self, gen: int, stage: Stage, error: str, now: float) -> list[Action]:
        if stage == "tls" and self._live(gen) is not None:
            self.heartbeat_dead = True
        return super().connect_failed(gen, stage, error, now)

    def connection_closed(
        self, gen: int, code: int | None, reason: str, how: CloseHow, now: float
    ) -> list[Action]:
        conn = self._live(gen)
        if conn is not None and conn.stage == "tls":
            self.heartbeat_dead = True
        return super().connection_closed(gen, code, reason, how, now)

    def _start_timer(self, name: str, gen: int | None, deadline: float) -> None:
        if name == "heartbeat" and self.heartbeat_dead:
            return  # the task that would have run this timer died with the handshake
        super()._start_timer(name, gen, deadline)


class StaleResumeSeq(GatewayClientCore):
    """RESUME carries the seq the session had when it started (a snapshot taken at READY and
    never updated), not the last seq received."""

    _seq_at_live: int | None = None

    def _established(self, conn: _Connection, what: str, now: float) -> None:
        super()._established(conn, what, now)
        if self.session is not None and self._seq_at_live is None:
            self._seq_at_live = self.session.seq

    def _forget_session(self) -> None:
        super()._forget_session()
        self._seq_at_live = None

    def _send(self, conn: _Connection, op: int, payload: Mapping[str, Any], now: float) -> None:
        if op == OP_RESUME and self._seq_at_live is not None:
            d = dict(payload["d"])
            d["seq"] = self._seq_at_live
            payload = {**payload, "d": d}
        super()._send(conn, op, payload, now)


class Close1000OnReconnect(GatewayClientCore):
    """On op 7 the client closes with 1000, which ends the session it means to resume (F16)."""

    _op7 = False

    def frame_received(self, gen: int, frame: Mapping[str, Any], now: float) -> list[Action]:
        self._op7 = frame.get("op") == OP_RECONNECT
        try:
            return super().frame_received(gen, frame, now)
        finally:
            self._op7 = False

    def _emit(self, action: Action) -> None:
        if self._op7 and isinstance(action, CloseConnection):
            action = replace(action, code=1000)
        super()._emit(action)


class NoZombieDetection(GatewayClientCore):
    """Missing heartbeat ACKs are never noticed: the client keeps beating into a dead connection
    (F11, F18: "Missed 2 heartbeats" for hours while the status said CONNECTED)."""

    def _heartbeat_due(self, conn: _Connection, now: float) -> None:
        conn.acked = True
        super()._heartbeat_due(conn, now)


class IdentifyStormAfterInvalidSession(GatewayClientCore):
    """After op 9 the client re-IDENTIFYs at once, with no 1-5 s wait and no identify slot (F1,
    F19: identify storms that burn the daily session budget)."""

    def __init__(self, config: ClientConfig, rng: random.Random):
        super().__init__(replace(config, invalid_session_wait=(0.0, 0.0)), rng)
        self._after_op9 = False

    def frame_received(self, gen: int, frame: Mapping[str, Any], now: float) -> list[Action]:
        self._after_op9 = frame.get("op") == OP_INVALID_SESSION
        try:
            return super().frame_received(gen, frame, now)
        finally:
            self._after_op9 = False

    def _backoff_delay(self, attempt: int | None = None) -> float:
        return 0.0 if self._after_op9 else super()._backoff_delay(attempt)

    def _next_identify_slot(self) -> float:
        return -math.inf


class StaleHeartbeatTimer(GatewayClientCore):
    """The heartbeat loop is not tied to its socket: after a reconnect the old connection's loop
    keeps beating, on the new socket too, even before its HELLO (F8, twilight PR #1974; F6:
    callbacks from earlier socket generations, overlapping heartbeat timers)."""

    LOOSE = "heartbeat_loose"

    def __init__(self, config: ClientConfig, rng: random.Random):
        super().__init__(config, rng)
        self._loop_interval: dict[int | None, float] = {}

    def _start_timer(self, name: str, gen: int | None, deadline: float) -> None:
        if name != "heartbeat":
            super()._start_timer(name, gen, deadline)
            return
        for tid, entry in list(self._timers.items()):
            if entry == (self.LOOSE, gen):
                del self._timers[tid]
                self._emit(CancelTimer(tid))
        if self._conn is not None and self._conn.gen == gen:
            self._loop_interval[gen] = self._conn.interval
        self._next_timer_id += 1
        tid = self._next_timer_id
        self._timers[tid] = (self.LOOSE, gen)
        # The bug: the timer belongs to no connection, so nothing cancels it with its socket.
        self._emit(StartTimer(tid, "heartbeat", None, deadline))

    def _cancel_timers(self, *, gen: int | None = None, name: str | None = None) -> None:
        loose = {tid: e for tid, e in self._timers.items() if e[0] == self.LOOSE}
        for tid in loose:
            del self._timers[tid]
        try:
            super()._cancel_timers(gen=gen, name=name)
        finally:
            self._timers.update(loose)  # survives its connection

    def timer_expired(self, timer_id: int, now: float) -> list[Action]:
        entry = self._timers.get(timer_id)
        if entry is None or entry[0] != self.LOOSE or self.stopped:
            return super().timer_expired(timer_id, now)
        del self._timers[timer_id]
        conn, gen = self._conn, entry[1]
        if conn is not None and conn.gen == gen:
            self._heartbeat_due(conn, now)
            return self._flush()
        # An old connection's loop: beat on whatever socket is open now, and go on looping.
        if conn is not None and conn.stage in ("hello", "session") and not conn.closing:
            self._send(conn, OP_HEARTBEAT, {"op": OP_HEARTBEAT, "d": self.seq}, now)
        interval = self._loop_interval.get(gen) or 1.0
        self._next_timer_id += 1
        tid = self._next_timer_id
        self._timers[tid] = (self.LOOSE, gen)
        self._emit(StartTimer(tid, "heartbeat", None, now + interval))
        return self._flush()


class StuckOnStaleResumeUrl(GatewayClientCore):
    """The resume_gateway_url is used for everything once known: failed resumes never fall back to
    the discovery URL, and even a new IDENTIFY goes to the stale resume host (F12: 41 shards
    stuck on a dead resume URL)."""

    def __init__(self, config: ClientConfig, rng: random.Random):
        super().__init__(replace(config, max_failed_resumes=10**9), rng)
        self._stale_resume_url: str | None = None

    def _established(self, conn: _Connection, what: str, now: float) -> None:
        super()._established(conn, what, now)
        if self.session is not None and self.session.resume_url:
            self._stale_resume_url = self.session.resume_url

    def _connect(self, purpose: Purpose, now: float) -> None:
        if purpose == "identify" and self._stale_resume_url is not None:
            saved = self.discovery_url
            self.discovery_url = self._stale_resume_url
            try:
                super()._connect(purpose, now)
            finally:
                self.discovery_url = saved
            return
        super()._connect(purpose, now)


class NewSessionIdNotStored(GatewayClientCore):
    """After re-IDENTIFYing into a new session the old session_id is kept, so the next RESUME
    names a dead session and every other resume fails (F9, twilight #95)."""

    _first_session_id: str | None = None

    def _established(self, conn: _Connection, what: str, now: float) -> None:
        super()._established(conn, what, now)
        if self.session is None:
            return
        if self._first_session_id is None:
            self._first_session_id = self.session.session_id
        else:
            self.session.session_id = self._first_session_id


class ForgetsSessionOnSecondDrop(GatewayClientCore):
    """A drop that comes within a few seconds of a successful RESUMED makes the client forget its
    session: it IDENTIFYs instead of resuming, and the application loses what was sent meanwhile.

    A planted two-fault bug: one drop, or two drops far apart, are handled right, so the
    validation suite passes; only a second drop soon after a resume shows it (the server still
    holds the session: RS1).
    """

    WINDOW = 5.0  # s after RESUMED in which a second drop makes it forget

    _resumed_at: float | None = None

    def _established(self, conn: _Connection, what: str, now: float) -> None:
        super()._established(conn, what, now)
        self._resumed_at = now if what == "RESUMED" else None

    def _connection_lost(self, reason: str, code: int | None, now: float) -> None:
        conn = self._conn
        if (conn is not None and conn.established and self._resumed_at is not None
                and now - self._resumed_at <= self.WINDOW and classify_close(code) != "fatal"):
            self._forget_session()  # the bug: a session that just came back is given up
        super()._connection_lost(reason, code, now)


class Op9AfterResumeFatal(GatewayClientCore):
    """After sending RESUME the client expects READY or RESUMED and nothing else: op 9 in answer
    is an "unexpected packet" and it gives up for good (bwmarrin/discordgo #544), where op 9 there
    means what it means anywhere else (wait 1-5 s, then IDENTIFY)."""

    def frame_received(self, gen: int, frame: Mapping[str, Any], now: float) -> list[Action]:
        conn = self._live(gen)
        if (conn is not None and not conn.closing and frame.get("op") == OP_INVALID_SESSION
                and conn.purpose == "resume" and not conn.established):
            self._stop("expected READY or RESUMED after RESUME, got op 9 Invalid Session",
                       fatal=True, now=now)
            return self._flush()
        return super().frame_received(gen, frame, now)


class HeartbeatsStopAfterMissedAck(GatewayClientCore):
    """The first missed heartbeat ACK kills the heartbeat task: the client still closes the zombie
    and RESUMEs, but never beats again, so the gateway drops every later connection at its
    deadline (a stale "missed ACK" state carried onto the new socket: Swiftcord #14, nostrum #155;
    twilight #1964: a zombie right after RESUMED took the shard down)."""

    heartbeat_dead = False

    def _heartbeat_due(self, conn: _Connection, now: float) -> None:
        if not conn.acked:
            self.heartbeat_dead = True
        super()._heartbeat_due(conn, now)

    def _start_timer(self, name: str, gen: int | None, deadline: float) -> None:
        if name == "heartbeat" and self.heartbeat_dead:
            return  # the task that ran this timer ended with the missed ACK
        super()._start_timer(name, gen, deadline)


class ReusesZlibInflater(GatewayClientCore):
    """One zlib inflater for the client's whole life: a new connection's zlib-stream (a fresh
    context at the server, as the protocol says) is fed to the old connection's inflater, and
    the first frame fails with "zlib error -3: data error" (abalabahaha/eris #1364); every later
    connection fails the same way. The driver keeps one decoder when this flag is off."""

    fresh_transport_context = False


class ReconnectLoopNoBackoff(GatewayClientCore):
    """While the gateway is unreachable the client retries in a loop: each failed attempt is
    followed by a random wait under a second that never grows (discordjs/discord.js #9510:
    hundreds of reconnect attempts a minute while offline; #11626, F4: a flat 500 ms loop for
    38 minutes). The waits are jittered, so no two differ by the same amount: only their count,
    all short, shows there is no backoff."""

    def _backoff_delay(self, attempt: int | None = None) -> float:
        return self.rng.uniform(0.05, 0.95)


CoreFactory = Callable[[ClientConfig, random.Random], GatewayClientCore]

MUTANTS: dict[str, CoreFactory] = {
    "heartbeat-dies-on-tls-reset": HeartbeatDiesOnTlsReset,
    "stale-resume-seq": StaleResumeSeq,
    "close-1000-on-op7": Close1000OnReconnect,
    "no-zombie-detection": NoZombieDetection,
    "identify-storm-after-op9": IdentifyStormAfterInvalidSession,
    "stale-heartbeat-timer": StaleHeartbeatTimer,
    "stuck-on-stale-resume-url": StuckOnStaleResumeUrl,
    "new-session-id-not-stored": NewSessionIdNotStored,
    "forgets-session-on-second-drop": ForgetsSessionOnSecondDrop,
    "op9-after-resume-fatal": Op9AfterResumeFatal,
    "heartbeats-stop-after-missed-ack": HeartbeatsStopAfterMissedAck,
    "reuses-zlib-inflater": ReusesZlibInflater,
    "reconnect-loop-no-backoff": ReconnectLoopNoBackoff,
}

# The invariants each planted bug is expected to break (any one of them counts as found).
EXPECTED_INVARIANTS: dict[str, frozenset[str]] = {
    "heartbeat-dies-on-tls-reset": frozenset({"HB1", "HB2", "LV1"}),
    "stale-resume-seq": frozenset({"RS2"}),
    "close-1000-on-op7": frozenset({"RS4"}),
    "no-zombie-detection": frozenset({"ZB1"}),
    "identify-storm-after-op9": frozenset({"RS5", "BO2"}),
    "stale-heartbeat-timer": frozenset({"HB1"}),
    "stuck-on-stale-resume-url": frozenset({"RS5", "RS1", "LV1"}),
    "new-session-id-not-stored": frozenset({"RS2"}),
    "forgets-session-on-second-drop": frozenset({"RS1", "RS3"}),
    "op9-after-resume-fatal": frozenset({"RS5", "LV1"}),
    "heartbeats-stop-after-missed-ack": frozenset({"HB1", "LV1"}),
    "reuses-zlib-inflater": frozenset({"RS1", "LV1"}),
    "reconnect-loop-no-backoff": frozenset({"BO1", "BO2"}),
}
