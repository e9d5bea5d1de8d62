"""Sans-I/O core of the fake gateway: the per-connection state machine and the gateway around it.

Nothing here reads a clock, sleeps, touches a socket or uses global randomness. Drivers feed in
client messages, connection losses and the current time; the core records the trace (with the
times it was given) and queues `Action`s per connection (messages to send, a close, a reset) for
the driver to carry out. `GatewayCore.notify(conn_id)` tells the driver a connection has work.

Rules follow gateway-protocol.md sections 1-12; knobs live in `GatewayConfig`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from fake_gateway import frames, payloads, wire
from fake_gateway.codec import DecodeError, Encoder, decode_client
from fake_gateway.config import DEFINED_INTENTS, PRIVILEGED_INTENTS, GatewayConfig
from fake_gateway.sessions import (
    EXPIRED,
    INVALIDATED,
    Dispatch,
    IdentifyLimiter,
    Session,
    SessionStartLimit,
    SessionStore,
    shard_for_guild,
)
from gateway_common.facts import (
    CLIENT_OPS,
    COMPRESSIONS,
    ENCODINGS,
    NON_RESUMABLE_SERVER_CLOSE_CODES,
    OP_CHANNEL_INFO,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE,
    OP_RECONNECT,
    OP_REQUEST_MEMBERS,
    OP_RESUME,
    OP_SOUNDBOARD,
    OP_VOICE,
    SESSION_KILLING_CLIENT_CODES,
    close_code,
)
from gateway_common.trace import (
    KIND_CONN_CLOSE,
    KIND_FRAME_BAD,
    KIND_FRAME_IN,
    KIND_FRAME_OUT,
    KIND_IDENTIFY_BUDGET,
    KIND_NOTE,
    KIND_SESSION,
    KIND_WS_UPGRADE,
    Trace,
)

MEMBERS_ALL_COOLDOWN = 30.0


@dataclass(frozen=True)
class Send:
    """WebSocket messages to send, in order (several when a zlib message is split)."""

    messages: tuple[str | bytes, ...]


@dataclass(frozen=True)
class Close:
    """Send a close frame. `code` None sends an empty close frame (the peer sees 1005)."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class Reset:
    """Abort the TCP connection so the peer sees a reset."""


@dataclass(frozen=True)
class WriteRaw:
    """Write these bytes onto the connection as they are, not as a WebSocket frame (a wire
    fault: `fake_gateway.wire`)."""

    data: bytes


Action = Send | Close | Reset | WriteRaw


def redact_token(token: object) -> str:
    """A token as traces and reports show it: its first 6 characters (never more than half of
    it) and its length."""
    if not isinstance(token, str):
        return repr(token)
    return f"{token[:min(6, len(token) // 2)]!r}... ({len(token)} chars)"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _query_version(text: str) -> int | None:
    """The `v` of the gateway URL; None unless it is ASCII digits (int() raised on "²" and on
    5,000 digits: a 500 for the upgrade)."""
    digits = text.lstrip("0")
    return int(digits or "0") if text.isascii() and text.isdigit() and len(digits) < 10 else None


class ConnectionCore:
    """One WebSocket connection to the gateway, from upgrade to close."""

    def __init__(
        self, gateway: GatewayCore, conn_id: int, listener: str, query: dict[str, str], now: float
    ) -> None:
        self.gw = gateway
        self.conn_id = conn_id
        self.listener = listener
        self.query = query
        self.opened_at = now
        config = gateway.config
        compress = query.get("compress")
        encoding = query.get("encoding", "json")
        self.encoder = Encoder(
            compress if compress in COMPRESSIONS else None, config.zlib_split,
            encoding if encoding in ENCODINGS else "json",
        )
        self.version = _query_version(query.get("v", "")) or 10
        self.actions: list[Action] = []
        self.closed = False
        self.session: Session | None = None
        self.hello_sent_at: float | None = None
        self.hello_due: float | None = None
        self.last_heartbeat_at: float | None = None
        self.heartbeats = 0
        self.frame_times: deque[float] = deque()
        self.pre_hello: list[dict[str, Any]] = []
        self.held: list[dict[str, Any]] = []
        self.pending_close: tuple[float, int | None, str, bool] | None = None
        self.members_requested: dict[str, float] = {}
        # Persistent faults (controls switch them on and off).
        self.withhold_acks = False
        self.withhold_ready = False
        self.withhold_resumed = False
        self.silent = False
        # Dispatches generated while silent: a stalled path delays them, it never loses them
        # (TCP retransmits), so they go out in order when the silence ends.
        self.silenced: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.ignore_client_close = False
        self.deadline_enforced = config.heartbeat_deadline
        self.deadline_code = config.heartbeat_deadline_close_code
        self.deadline_resumable = config.heartbeat_deadline_resumable
        self._holding = False  # READY/RESUMED withheld: later dispatches queue behind it
        self.hello_delay: float | None = None  # set by a delay_hello aimed at this connection
        # The invalid_session control sent op 9 d=false before this connection had a session:
        # the session a later RESUME here names is the one that op 9 ended.
        self.session_ended_by_op9 = False

    # ---- output -------------------------------------------------------------------------

    def push_wire(self, data: bytes, raw: bool) -> None:
        """A wire fault's bytes: one binary message, or (raw) bytes that are no frame at all."""
        self._push(WriteRaw(data) if raw else Send((data,)))

    def _push(self, action: Action) -> None:
        self.actions.append(action)
        self.gw.notify(self.conn_id)

    def take_actions(self) -> list[Action]:
        actions, self.actions = self.actions, []
        return actions

    def _send(self, payload: dict[str, Any], now: float, *, before_hello: bool = False,
              **fields: Any) -> None:
        """Encode, record and queue one payload (nothing while closed; while silent only
        dispatches are kept, for `end_silence`)."""
        if self.closed:
            return
        if self.silent:
            if payload["op"] == OP_DISPATCH:
                self.silenced.append((payload, fields))
            return
        if self.hello_sent_at is None and not before_hello and payload["op"] != OP_HELLO:
            self.pre_hello.append(payload)
            return
        # The frame-level faults' hook (fake_gateway.frames): before encoding, so a frame they
        # drop or hold leaves the compressed stream intact.
        going = self.gw.frames.outgoing(self.conn_id, payload, fields, now)
        for out, out_fields in going:
            self._write(out, now, out_fields)
        if not going:
            self.gw.notify(self.conn_id)  # held back: the driver's timer must wake for it

    def _write(self, payload: dict[str, Any], now: float, fields: dict[str, Any]) -> None:
        """Encode, record and queue one payload as it goes on the wire."""
        if self.closed:
            return
        messages, size = self.encoder.encode(payload)
        self.gw.trace.record(
            KIND_FRAME_OUT, ts=now, conn=self.conn_id, op=payload["op"], s=payload.get("s"),
            t=payload.get("t"), size=size, compressed=self.encoder.compressed, **fields,
        )
        self._push(Send(tuple(messages)))

    def end_silence(self, now: float) -> None:
        """The silence is over: send the dispatches it held back, in order."""
        self.silent = False
        queued, self.silenced = self.silenced, []
        for payload, fields in queued:
            self._send(payload, now, **fields)

    def send_dispatch(self, dispatch: Dispatch, now: float, **fields: Any) -> None:
        if self._holding:
            self.held.append(dispatch.payload() | {"_fields": fields})
            return
        self._send(dispatch.payload(), now, **fields)

    def send_hello(self, now: float) -> None:
        if self.hello_sent_at is not None or self.closed:
            return
        self.hello_due = None
        self._send(
            payloads.hello_payload(self.gw.config.heartbeat_interval_ms, self.gw.config.extra_keys),
            now, heartbeat_interval=self.gw.config.heartbeat_interval_ms,
        )
        if self.silent:
            return
        self.hello_sent_at = now
        queued, self.pre_hello = self.pre_hello, []
        for payload in queued:
            self._send(payload, now)

    def send_reconnect(self, now: float) -> None:
        self._send({"op": OP_RECONNECT, "d": None, "s": None, "t": None}, now, before_hello=True)

    def send_heartbeat_request(self, now: float, d: Any = None) -> None:
        self._send({"op": OP_HEARTBEAT, "d": d, "s": None, "t": None}, now)

    def send_invalid_session(self, now: float, resumable: bool, close: bool | None = None) -> None:
        if self.closed:
            return
        self._send({"op": OP_INVALID_SESSION, "d": resumable, "s": None, "t": None}, now,
                   d=resumable)
        if self.session is not None:
            if resumable:
                # d:true: the client may RESUME, on this socket (discord.js) or a new one.
                self.gw.detach(self.session, now, "invalid_session (resumable)")
            else:
                self.gw.invalidate(self.session, now, "invalid_session")
            self.session = None
        if self.gw.config.close_after_invalid_session if close is None else close:
            self.schedule_close(now + self.gw.config.invalid_session_close_delay,
                                self.gw.config.invalid_session_close_code, "invalid session",
                                resumable)

    def schedule_close(self, at: float, code: int | None, reason: str, resumable: bool) -> None:
        if self.pending_close is None or at < self.pending_close[0]:
            self.pending_close = (at, code, reason, resumable)
            self.gw.notify(self.conn_id)

    def close(self, now: float, code: int | None, reason: str | None = None,
              resumable: bool | None = None) -> None:
        """Server-initiated close; the session survives it only if `resumable` (None: as the
        code says, `gateway_common.facts.CLOSE_CODES`). `reason` None: the code's own."""
        if self.closed:
            return
        if reason is None:
            reason = close_code(code).reason
        if resumable is None:
            resumable = code not in NON_RESUMABLE_SERVER_CLOSE_CODES
        self.gw.trace.record(KIND_CONN_CLOSE, ts=now, conn=self.conn_id, by="server", code=code,
                             reason=reason, how="close_frame")
        self._lose_session(now, resumable, f"server close {code}")
        self.closed = True
        self.silent = False
        self._push(Close(code, reason))

    def reset(self, now: float) -> None:
        if self.closed:
            return
        self.gw.trace.record(KIND_CONN_CLOSE, ts=now, conn=self.conn_id, by="server", code=None,
                             reason="reset", how="reset")
        self._lose_session(now, True, "server reset")
        self.closed = True
        self._push(Reset())

    def release_held(self, now: float) -> None:
        self._holding = False
        held, self.held = self.held, []
        for payload in held:
            fields = payload.pop("_fields")
            self._send(payload, now, **fields)

    # ---- controls (fake_gateway.controls validates them and picks the connections) ---------

    # Switches that set one flag of a connection: the attribute each sets.
    FLAG_SWITCHES: ClassVar[dict[str, str]] = {
        "withhold_acks": "withhold_acks", "withhold_ready": "withhold_ready",
        "withhold_resumed": "withhold_resumed", "go_silent": "silent",
        "ignore_client_close": "ignore_client_close"}

    @classmethod
    def control_settings(cls, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """The attributes a flag switch or the heartbeat_deadline policy sets on a connection
        (`GatewayCore.remember_for_all` sets them on later connections too)."""
        if action == "heartbeat_deadline":
            attrs = {"deadline_enforced": params["on"]}
            if params["code"] is not None:
                attrs["deadline_code"] = params["code"]
            if params["resumable"] is not None:
                attrs["deadline_resumable"] = params["resumable"]
            return attrs
        return {cls.FLAG_SWITCHES[action]: params["on"]}

    def apply_control(self, action: str, params: dict[str, Any], now: float) -> None:
        """Apply one validated control action (`gateway_common.facts.CONTROLS`, defaults filled
        in) to this connection. Queues what it sends, as the input methods do."""
        gw = self.gw
        if action in self.FLAG_SWITCHES or action == "heartbeat_deadline":
            for name, value in self.control_settings(action, params).items():
                setattr(self, name, value)
            if action in ("withhold_ready", "withhold_resumed") and not params["on"]:
                self.release_held(now)
            if action == "go_silent" and not params["on"]:
                self.end_silence(now)
                if self.hello_sent_at is None:
                    self.send_hello(now)
            gw.notify(self.conn_id)
            return
        if action == "delay_hello":
            if self.hello_sent_at is None:
                if params["on"]:
                    self.hello_delay = wire.hello_delay(params)
                    if self.hello_due is not None:
                        self.hello_due = self.opened_at + self.hello_delay
                        if self.hello_due == math.inf:  # never
                            self.hello_due = None
                            gw.wire.hello_withheld(self, now)
                        gw.notify(self.conn_id)
                else:
                    self.send_hello(now)
            return
        if action == "reconnect":
            self.send_reconnect(now)
            if params["close_after_ms"] is not None:
                self.schedule_close(now + params["close_after_ms"] / 1000.0, 4000, "reconnect",
                                    True)
            return
        if action == "invalid_session":
            if self.session is None and not params["resumable"]:
                # Not yet resumed (op 9 raced the client's RESUME): d=false still ends the session.
                self.session_ended_by_op9 = True
            self.send_invalid_session(now, params["resumable"], params["close"])
            return
        if action == "close":
            self.close(now, params["code"], params["reason"], params["resumable"])
            return
        if action == "reset":
            self.reset(now)
            return
        if action == "heartbeat_request":
            self.send_heartbeat_request(now, params["d"])
            return
        if action == "burst":
            if self.session is not None:
                gw.burst(params, now, [self.session])
            return
        if action in ("expire_session", "invalidate_session"):
            if self.session is not None:
                gw.end_session(self.session.session_id, action, now)
            return

    # ---- input ----------------------------------------------------------------------------

    def client_closed(self, now: float, code: int | None, reason: str) -> None:
        """The client sent a close frame (code None: an empty one)."""
        if self.closed:
            return
        self.gw.trace.record(KIND_CONN_CLOSE, ts=now, conn=self.conn_id, by="client", code=code,
                             reason=reason, how="close_frame")
        # A client 1000/1001 ends the session; any other code, or none, keeps it (section 5).
        self._lose_session(now, code not in SESSION_KILLING_CLIENT_CODES, f"client close {code}")
        self.closed = True

    def connection_lost(self, now: float, how: str) -> None:
        """TCP ended without a close frame from either side (eof, reset, timeout)."""
        if self.closed:
            return
        self.gw.trace.record(KIND_CONN_CLOSE, ts=now, conn=self.conn_id, by="network", code=None,
                             reason="", how=how)
        self._lose_session(now, True, f"connection lost ({how})")
        self.closed = True

    def _lose_session(self, now: float, resumable: bool, reason: str) -> None:
        session, self.session = self.session, None
        if session is None or session.conn_id != self.conn_id:
            return
        if resumable:
            self.gw.detach(session, now, reason)
        else:
            self.gw.invalidate(session, now, reason)

    def receive(self, message: str | bytes, now: float) -> None:
        if self.closed:
            return
        # UTF-8 byte count; an ASCII str (nearly every frame) has one byte per char, and
        # str.isascii() is a flag check, so only non-ASCII text is encoded to measure it.
        if isinstance(message, str):
            size = len(message) if message.isascii() else len(message.encode())
        else:
            size = len(message)
        config = self.gw.config
        if size > config.max_payload_bytes:
            return self._bad(now, f"payload of {size} bytes exceeds {config.max_payload_bytes}",
                             size, 4002)
        try:
            payload = decode_client(message, self.encoder.encoding)
        except DecodeError as exc:
            return self._bad(now, str(exc), size, 4002)
        op = payload.get("op")
        if not _is_int(op) or op not in CLIENT_OPS:
            return self._bad(now, f"unknown opcode {op!r}", size, 4001, "Unknown opcode")
        d = payload.get("d")
        self._record_in(op, d, size, now)
        if self.silent:
            return
        if self._rate_limited(now):
            return self.close(now, 4008)
        if op == OP_HEARTBEAT:
            return self._on_heartbeat(d, now)
        if op == OP_IDENTIFY:
            return self._on_identify(d, now)
        if op == OP_RESUME:
            return self._on_resume(d, now)
        if self.session is None:
            return self.close(now, 4003)
        self._on_session_op(op, d, now)

    def _record_in(self, op: int, d: Any, size: int, now: float) -> None:
        fields: dict[str, Any] = {}
        token = d.get("token") if isinstance(d, dict) else None
        if op in (OP_IDENTIFY, OP_RESUME) and isinstance(d, dict):
            fields["token_ok"] = self.gw.token_ok(token, now, self.conn_id)
            if self.gw.config.accept_any_token:
                fields["token_seen"] = redact_token(token)
        if op == OP_HEARTBEAT:
            fields["d"] = d if _is_int(d) or d is None else repr(d)
        elif op == OP_IDENTIFY and isinstance(d, dict):
            fields.update(shard=d.get("shard"), intents=d.get("intents"))
        elif op == OP_RESUME and isinstance(d, dict):
            fields.update(session_id=d.get("session_id"), seq=d.get("seq"))
        self.gw.trace.record(KIND_FRAME_IN, ts=now, conn=self.conn_id, op=op, size=size, **fields)

    def _bad(self, now: float, reason: str, size: int, code: int,
             close_reason: str | None = None) -> None:
        self.gw.trace.record(KIND_FRAME_BAD, ts=now, conn=self.conn_id, reason=reason, size=size)
        if not self.silent:
            self.close(now, code, close_reason)

    def _rate_limited(self, now: float) -> bool:
        window = self.gw.config.rate_limit_window
        times = self.frame_times
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        return len(times) > self.gw.config.rate_limit_frames

    def _on_heartbeat(self, d: Any, now: float) -> None:
        if not (_is_int(d) or d is None):
            return self.close(now, 4001, "Invalid heartbeat payload.")
        self.last_heartbeat_at = now
        self.heartbeats += 1
        if not self.withhold_acks:
            self._send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None}, now)

    def _on_identify(self, d: Any, now: float) -> None:
        config = self.gw.config
        if self.session is not None or self._holding:
            return self.close(now, 4005)
        if not isinstance(d, dict) or not isinstance(d.get("token"), str) or not isinstance(
            d.get("properties"), dict
        ):
            return self.close(now, 4001, "Invalid identify payload.")
        if not self.gw.token_accepted(d["token"]):
            return self.close(now, 4004)
        if self.listener == "resume":
            self.gw.trace.record(KIND_NOTE, ts=now, conn=self.conn_id,
                                 text="IDENTIFY on the resume URL instead of the discovery URL")
        intents = d.get("intents")
        if intents is None and _is_int(d.get("capabilities")):
            # A user-account IDENTIFY (the `midjourney` npm client) sends capabilities, no intents.
            intents = 0
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or (
                intents & ~DEFINED_INTENTS):
            return self.close(now, 4013)
        if intents & PRIVILEGED_INTENTS & ~config.allowed_privileged_intents:
            return self.close(now, 4014)
        shard = d.get("shard")
        if shard is not None:
            if not (isinstance(shard, list) and len(shard) == 2 and all(map(_is_int, shard))
                    and shard[1] >= 1 and 0 <= shard[0] < shard[1]):
                return self.close(now, 4010)
        if self._op9_loop("IDENTIFY", now):
            return None
        shard_pair = (shard[0], shard[1]) if shard is not None else None
        guild_ids = self.gw.guilds_for(shard_pair)
        if len(guild_ids) > config.max_guilds_per_shard:
            return self.close(now, 4011)
        shard_id = shard_pair[0] if shard_pair else 0
        if not self.gw.identify_limiter.try_acquire(shard_id, now):
            self.gw.trace.record(KIND_NOTE, ts=now, conn=self.conn_id,
                                 text=f"IDENTIFY over max_concurrency (bucket "
                                      f"{self.gw.identify_limiter.bucket(shard_id)}): op 9")
            return self.send_invalid_session(now, False)
        limit = self.gw.start_limit
        if not limit.consume(now):
            self.gw.trace.record(KIND_NOTE, ts=now, conn=self.conn_id,
                                 text="session_start_limit used up; Discord would reset the token")
            return self.close(now, 4004, resumable=False)
        self.gw.trace.record(KIND_IDENTIFY_BUDGET, ts=now, conn=self.conn_id,
                             remaining=limit.remaining(now), total=limit.total,
                             bucket=self.gw.identify_limiter.bucket(shard_id))
        session = self.gw.sessions.create(shard_pair, intents, guild_ids)
        self.gw.trace.record(KIND_SESSION, ts=now, session_id=session.session_id, event="created",
                             reason="identify", conn=self.conn_id, seq=0)
        self.gw.attach(session, self, now)
        resume_url = self.gw.resume_url
        ready = session.next_dispatch(
            "READY",
            payloads.ready_data(config, session.session_id, resume_url, guild_ids, shard_pair,
                                self.version),
        )
        self._holding = self.withhold_ready
        self.send_dispatch(ready, now, session_id=session.session_id,
                           resume_gateway_url=resume_url)
        cut = self.gw.frames.take_cut(self.conn_id)
        for index, guild_id in enumerate(guild_ids):
            if cut is not None and index == cut.params["guilds"]:
                self._cut_guild_stream(cut, index, len(guild_ids), now)
            create = session.next_dispatch(
                "GUILD_CREATE", payloads.guild_create_data(config, guild_id, index))
            self.send_dispatch(create, now)  # after a cut: into the session's history only
        if cut is not None and not self.closed:
            self._cut_guild_stream(cut, len(guild_ids), len(guild_ids), now)

    def _cut_guild_stream(self, cut: frames.Armed, sent: int, total: int, now: float) -> None:
        """drop_mid_guilds: the connection drops after ``sent`` of ``total`` GUILD_CREATEs."""
        self.gw.frames.record(cut, self.conn_id, now,
                              f"READY and {sent} of {total} GUILD_CREATEs sent, then a reset; "
                              f"the other {total - sent} wait in the session's history",
                              guilds=sent, withheld=total - sent)
        self.reset(now)

    def _op9_loop(self, what: str, now: float, session: Session | None = None) -> bool:
        """invalid_session_loop: answer this IDENTIFY or RESUME with op 9 d=false (the session
        a RESUME names ends with it)."""
        armed = self.gw.frames.op9_loop(self.conn_id)
        if armed is None:
            return False
        self.gw.frames.record(armed, self.conn_id, now,
                              f"{what} answered with op 9 d=false (an op 9 loop)",
                              answered=OP_IDENTIFY if what == "IDENTIFY" else OP_RESUME)
        if session is not None:
            self.gw.invalidate(session, now, "invalid_session_loop")
        self.send_invalid_session(now, False)
        return True

    def _on_resume(self, d: Any, now: float) -> None:
        config = self.gw.config
        if self.session is not None or self._holding:
            return self.close(now, 4005)
        if not (isinstance(d, dict) and isinstance(d.get("token"), str)
                and isinstance(d.get("session_id"), str)
                and (_is_int(d.get("seq")) or d.get("seq") is None)):
            return self.close(now, 4001, "Invalid resume payload.")
        if not self.gw.token_accepted(d["token"]):
            return self.close(now, 4004)
        seq = d["seq"] or 0
        session = self.gw.sessions.get(d["session_id"])
        if self.listener == "discovery":
            self.gw.trace.record(KIND_NOTE, ts=now, conn=self.conn_id,
                                 text="RESUME on the discovery URL instead of resume_gateway_url")
            if config.resume_on_discovery == "reject":
                # op 9 d=false tells the client the session is gone: make it so.
                if session is not None:
                    self.gw.invalidate(session, now, "RESUME on the discovery URL rejected")
                return self.send_invalid_session(now, False)
        closing = self.gw.frames.resume_close(self.conn_id)
        if closing is not None:
            code = closing.params["code"]
            resumable = closing.params["resumable"]
            if resumable is None:
                resumable = code not in NON_RESUMABLE_SERVER_CLOSE_CODES
            answer = f"close {code}" if code is not None else "an empty close frame (1005)"
            self.gw.frames.record(closing, self.conn_id, now, f"RESUME answered with {answer}",
                                  code=code)
            if session is not None and not resumable:
                self.gw.invalidate(session, now, f"close_on_resume {code}")
            return self.close(now, code, closing.params["reason"], resumable)
        if self._op9_loop("RESUME", now, session):
            return None
        if session is not None and self.session_ended_by_op9:
            self.gw.invalidate(session, now, "invalid_session sent before its RESUME")
        if session is None or session.state == INVALIDATED:
            return self.send_invalid_session(now, False)
        if session.state == EXPIRED:
            if config.expired_resume_response == "close_4009":
                return self.close(now, 4009)
            return self.send_invalid_session(now, False)
        replay = session.replay_after(seq)
        if replay is None:
            self.gw.invalidate(session, now, f"resume with bad seq {seq} (last {session.seq})")
            if config.bad_seq_response == "op9":
                return self.send_invalid_session(now, False)
            return self.close(now, 4007)
        if session.conn_id is not None:
            old = self.gw.connections.get(session.conn_id)
            if old is not None:
                old.session = None  # the session moves; closing the old socket must not detach it
                old.close(now, config.takeover_close_code, "session resumed elsewhere",
                          resumable=True)
        session.resumes += 1
        self.gw.attach(session, self, now)
        for dispatch in replay:
            self.send_dispatch(dispatch, now)
        resumed = session.next_dispatch("RESUMED", {"_trace": ["gateway-harness-fake"]}
                                        if config.extra_keys else {})
        self._holding = self.withhold_resumed
        self.send_dispatch(resumed, now, replayed=len(replay))

    def _on_session_op(self, op: int, d: Any, now: float) -> None:
        session = self.session
        assert session is not None
        if not isinstance(d, dict):
            return self.close(now, 4001)
        if op == OP_PRESENCE:
            return
        if op == OP_VOICE:
            guild_id = d.get("guild_id")
            if not isinstance(guild_id, str | int):
                return self.close(now, 4001)
            self.gw.emit_to(session, "VOICE_STATE_UPDATE", {
                "guild_id": str(guild_id), "channel_id": d.get("channel_id"),
                "user_id": str(self.gw.config.resolved_bot_id()),
                "session_id": session.session_id, "deaf": False, "mute": False,
                "self_deaf": bool(d.get("self_deaf")), "self_mute": bool(d.get("self_mute")),
                "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
            }, now)
            if d.get("channel_id") is not None:
                self.gw.emit_to(session, "VOICE_SERVER_UPDATE", {
                    "token": "fake-voice-token", "guild_id": str(guild_id),
                    "endpoint": "voice.invalid:443"}, now)
            return
        if op == OP_REQUEST_MEMBERS:
            return self._on_request_members(session, d, now)
        if op == OP_SOUNDBOARD:
            guild_ids = d.get("guild_ids")
            if not isinstance(guild_ids, list):
                return self.close(now, 4001)
            for guild_id in guild_ids:
                self.gw.emit_to(session, "SOUNDBOARD_SOUNDS",
                                {"soundboard_sounds": [], "guild_id": str(guild_id)}, now)
            return
        if op == OP_CHANNEL_INFO:
            self.gw.emit_to(session, "CHANNEL_INFO",
                            {"guild_id": str(d.get("guild_id")), "channels": []}, now)

    def _on_request_members(self, session: Session, d: dict[str, Any], now: float) -> None:
        guild_id = d.get("guild_id")
        if not isinstance(guild_id, str | int) or isinstance(guild_id, bool):
            return self.close(now, 4001)
        guild = str(guild_id)
        nonce = d.get("nonce") if isinstance(d.get("nonce"), str) else None
        if nonce is not None and len(nonce.encode()) > 32:
            nonce = None
        if d.get("query") == "" and d.get("limit") == 0:
            last = self.members_requested.get(guild)
            if last is not None and now < last + MEMBERS_ALL_COOLDOWN:
                meta: dict[str, Any] = {"guild_id": guild}
                if nonce is not None:
                    meta["nonce"] = nonce
                self.gw.emit_to(session, "RATE_LIMITED", {
                    "opcode": OP_REQUEST_MEMBERS,
                    "retry_after": round(last + MEMBERS_ALL_COOLDOWN - now, 3), "meta": meta}, now)
                return
            self.members_requested[guild] = now
        bot = payloads.user_object(self.gw.config)
        chunk: dict[str, Any] = {
            "guild_id": guild,
            "members": [{"user": bot, "nick": None, "roles": [], "joined_at": payloads.iso_time(0),
                         "deaf": False, "mute": False, "flags": 0}],
            "chunk_index": 0, "chunk_count": 1,
        }
        user_ids = d.get("user_ids")
        if isinstance(user_ids, list):
            chunk["not_found"] = [u for u in user_ids if str(u) != bot["id"]][:100]
        if d.get("presences"):
            chunk["presences"] = []
        if nonce is not None:
            chunk["nonce"] = nonce
        self.gw.emit_to(session, "GUILD_MEMBERS_CHUNK", chunk, now)

    # ---- time -----------------------------------------------------------------------------

    def heartbeat_deadline(self) -> float | None:
        if not self.deadline_enforced or self.silent or self.hello_sent_at is None:
            return None
        anchor = self.last_heartbeat_at
        if anchor is None:
            anchor = self.hello_sent_at
        return anchor + self.gw.config.heartbeat_interval * (1 + self.gw.config.heartbeat_grace)

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        # Called on every frame: take the earliest without building a list.
        best = self.hello_due
        for t in (self.heartbeat_deadline(),
                  self.pending_close[0] if self.pending_close else None,
                  self.gw.frames.next_release(self.conn_id)):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_time(self, now: float) -> None:
        if self.closed:
            return
        if self.hello_due is not None and now >= self.hello_due:
            self.send_hello(now)
        for payload, fields in self.gw.frames.due(self.conn_id, now):
            self._write(payload, now, fields)  # held back by server_frames: its time has come
        if self.pending_close is not None and now >= self.pending_close[0]:
            _, code, reason, resumable = self.pending_close
            self.pending_close = None
            self.close(now, code, reason, resumable)
        deadline = self.heartbeat_deadline()
        if deadline is not None and now >= deadline:
            self.close(now, self.deadline_code, "Heartbeat deadline missed.",
                       self.deadline_resumable)


class GatewayCore:
    """All connections and sessions of one fake gateway, plus the synthetic event source."""

    def __init__(self, config: GatewayConfig, trace: Trace, rng: random.Random) -> None:
        self.config = config
        self.trace = trace
        self.rng = rng
        self.sessions = SessionStore(rng, config.replay_buffer)
        self.identify_limiter = IdentifyLimiter(config.max_concurrency, config.identify_window)
        self.start_limit = SessionStartLimit(config.session_start_total,
                                             config.session_start_window)
        self.connections: dict[int, ConnectionCore] = {}
        self.guild_ids = [payloads.snowflake(rng) for _ in range(config.guilds)]
        self._guilds_by_shard: dict[int, dict[int, list[int]]] = {}  # guilds_for's index
        self.discovery_url = config.advertise_url or "wss://gateway.invalid"
        self.resume_url = config.resume_url or self.discovery_url
        self.presented_token: str | None = None  # accept_any_token: the first one seen
        self.notify: Callable[[int], None] = lambda conn_id: None
        self.notify_timer: Callable[[], None] = lambda: None  # gateway deadlines moved
        self._last_conn_id = 0
        self.event_count = 0
        self._next_event_at: float | None = None
        self._event_rng = random.Random(rng.getrandbits(64))
        # Gateway-wide persistent faults and those waiting for the next connection.
        self.reject_upgrade: dict[str | None, int] = {}  # listener (None = any) -> HTTP status
        self.reject_next: list[tuple[str | None, int]] = []  # one upgrade each
        self.hello_delay: dict[str | None, float] = {}
        self.switches_for_all: dict[str, Any] = {}
        self.pending_for_next: list[tuple[str, dict[str, Any]]] = []
        self.wire = wire.WireFaults(self)  # wire-level faults (fake_gateway.wire)
        self.frames = frames.FrameFaults(trace)  # frame-level faults (fake_gateway.frames)
        # The flood control: (synthetic dispatches per second, padded size) while on.
        self.flood: tuple[float, int | None] | None = None
        self._flood_next_at: float | None = None

    def token_accepted(self, token: str) -> bool:
        """IDENTIFY/RESUME/REST go on with this token (else 4004 or 401)."""
        return bool(token) if self.config.accept_any_token else token == self.config.token

    def token_ok(self, token: Any, now: float, conn: int) -> bool:
        """The trace's ``token_ok``: the configured token, or with ``accept_any_token`` the
        first one an app presented (later ones are accepted too, but not "ok": a RESUME with
        another token is RS2's to judge). The first is noted, redacted."""
        if not self.config.accept_any_token:
            return token == self.config.token
        if self.presented_token is None and isinstance(token, str) and token:
            self.presented_token = token
            self.trace.record(KIND_NOTE, ts=now, conn=conn,
                              text=f"accepting the app's own token {redact_token(token)}")
        return token == self.presented_token

    def set_urls(self, discovery: str, resume: str | None = None) -> None:
        """Announce these URLs (bare). Config overrides win, so a proxy can stand in front."""
        self.discovery_url = self.config.advertise_url or discovery
        self.resume_url = self.config.resume_url or resume or self.discovery_url

    def start(self, now: float) -> None:
        if self.config.dispatch_rate > 0 and self._next_event_at is None:
            self._next_event_at = now + 1.0 / self.config.dispatch_rate
            self.notify_timer()

    # ---- connections ----------------------------------------------------------------------

    def new_conn_id(self) -> int:
        self._last_conn_id += 1
        return self._last_conn_id

    def upgrade_rejection(self, listener: str) -> int | None:
        """HTTP status to refuse this listener's WebSocket upgrades with, if a fault says so."""
        for index, (only, status) in enumerate(self.reject_next):
            if only in (None, listener):
                del self.reject_next[index]
                return status
        return self.reject_upgrade.get(listener) or self.reject_upgrade.get(None)

    def open_connection(self, conn_id: int, listener: str, path: str, query: dict[str, str],
                        now: float) -> ConnectionCore:
        """The WebSocket upgrade succeeded: validate the query, send HELLO (or schedule it)."""
        self.trace.record(KIND_WS_UPGRADE, ts=now, conn=conn_id, path=path, query=query,
                          listener=listener)
        conn = ConnectionCore(self, conn_id, listener, query, now)
        self.connections[conn_id] = conn
        for name, value in self.switches_for_all.items():
            setattr(conn, name, value)
        pending, self.pending_for_next = self.pending_for_next, []
        for action, params in pending:
            conn.apply_control(action, params, now)
        self.wire.connection_opened(conn, now)
        self.frames.connection_opened(conn_id)
        version = query.get("v")
        if version is not None and _query_version(version) not in self.config.allowed_versions:
            conn.close(now, 4012)
            return conn
        if query.get("encoding", "json") not in ENCODINGS:
            self.trace.record(KIND_NOTE, ts=now, conn=conn_id,
                              text=f"unsupported encoding {query.get('encoding')!r}")
            conn.close(now, 4002, "Unsupported encoding.")
            return conn
        compress = query.get("compress")
        if compress is not None and compress not in COMPRESSIONS:
            self.trace.record(KIND_NOTE, ts=now, conn=conn_id,
                              text=f"unsupported compress={compress!r}: sending uncompressed")
        delay = conn.hello_delay
        if delay is None:
            delay = self.hello_delay.get(listener, self.hello_delay.get(None, 0.0))
        if delay == math.inf:
            self.wire.hello_withheld(conn, now)  # delay_hello never: no deadline at all
        elif delay > 0:
            conn.hello_due = now + delay
            self.notify(conn_id)
        else:
            conn.send_hello(now)
        return conn

    def forget_connection(self, conn_id: int) -> None:
        conn = self.connections.pop(conn_id, None)
        self.frames.forget(conn_id)
        if conn is not None:
            conn.encoder = Encoder(None)  # let go of the compression context (zlib: ~256 KiB)

    # ---- sessions -------------------------------------------------------------------------

    def attach(self, session: Session, conn: ConnectionCore, now: float) -> None:
        session.conn_id = conn.conn_id
        session.detached_at = None
        conn.session = session
        self.trace.record(KIND_SESSION, ts=now, session_id=session.session_id, event="attached",
                          reason="resume" if session.resumes else "identify", conn=conn.conn_id,
                          seq=session.seq)

    def detach(self, session: Session, now: float, reason: str) -> None:
        if not session.alive:
            return
        conn_id, session.conn_id = session.conn_id, None
        session.detached_at = now
        self.sessions.note_detached(session)
        self.notify_timer()
        self.trace.record(KIND_SESSION, ts=now, session_id=session.session_id, event="detached",
                          reason=reason, conn=conn_id, seq=session.seq)

    def invalidate(self, session: Session, now: float, reason: str,
                   state: str = INVALIDATED) -> None:
        if not session.alive:
            return
        conn_id, session.conn_id = session.conn_id, None
        session.state = state
        self.sessions.ended(session)  # it can never be resumed now: its memory goes
        if conn_id is not None and conn_id in self.connections:
            conn = self.connections[conn_id]
            if conn.session is session:
                conn.session = None
        self.trace.record(KIND_SESSION, ts=now, session_id=session.session_id,
                          event="expired" if state == EXPIRED else "invalidated", reason=reason,
                          conn=conn_id, seq=session.seq)

    def end_session(self, session_id: str, action: str, now: float) -> bool:
        """The expire_session or invalidate_session control: a later RESUME gets op 9. False
        if there is no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        self.invalidate(session, now, f"control {action}",
                        EXPIRED if action == "expire_session" else INVALIDATED)
        return True

    def remember_for_all(self, action: str, params: dict[str, Any]) -> None:
        """A flag switch or the heartbeat_deadline policy aimed at "all": later connections
        open with it too."""
        for name, value in ConnectionCore.control_settings(action, params).items():
            # A flag switched off is a connection's default again; the policy's False values
            # (deadline_enforced, deadline_resumable) are settings to keep.
            if value is False and action in ConnectionCore.FLAG_SWITCHES:
                self.switches_for_all.pop(name, None)
            else:
                self.switches_for_all[name] = value

    def guilds_for(self, shard: tuple[int, int] | None) -> list[int]:
        """The shard's guilds, in ``guild_ids`` order. Indexed once per shard count (the guilds
        are fixed at start), so an IDENTIFY costs its own guilds, not every guild's."""
        if shard is None:
            return list(self.guild_ids)
        index = self._guilds_by_shard.get(shard[1])
        if index is None:
            index = self._guilds_by_shard[shard[1]] = {}
            for g in self.guild_ids:
                index.setdefault(shard_for_guild(g, shard[1]), []).append(g)
        return list(index.get(shard[0], ()))

    def emit_to(self, session: Session, t: str, d: Any, now: float) -> Dispatch:
        """Give a dispatch the session's next seq; send it if the session is attached."""
        dispatch = session.next_dispatch(t, d)
        if session.conn_id is not None:
            conn = self.connections.get(session.conn_id)
            if conn is not None:
                conn.send_dispatch(dispatch, now)
        return dispatch

    def burst(self, params: dict[str, Any], now: float,
              sessions: list[Session] | None = None) -> None:
        """The burst control: ``count`` synthetic dispatches (to ``sessions``, or routed to every
        live one), or with ``t`` GUILD_CREATE each session's guilds again, padded to ``size``."""
        count, size = params["count"], params["size"]
        if params["t"] != "GUILD_CREATE":
            for _ in range(count):
                self.emit_synthetic(now, sessions, size)
            return
        for session in list(sessions if sessions is not None else self.sessions.live()):
            guild_ids = session.guild_ids or [self.config.resolved_bot_id()]
            for index in range(count):
                guild_id = guild_ids[index % len(guild_ids)]
                d = payloads.guild_create_data(self.config, guild_id, index % len(guild_ids))
                self.emit_to(session, "GUILD_CREATE", payloads.pad_members(d, size), now)

    def set_flood(self, params: dict[str, Any], now: float) -> None:
        """The flood control: synthetic dispatches at ``rate`` per second while on."""
        if params["on"]:
            self.flood = (float(params["rate"]), params["size"])
            self._flood_next_at = now + 1.0 / self.flood[0]
        else:
            self.flood = self._flood_next_at = None
        self.notify_timer()

    def emit_synthetic(self, now: float, sessions: list[Session] | None = None,
                       size: int | None = None) -> int:
        """One synthetic event, routed by guild to every live session that should see it
        (padded to about ``size`` bytes of JSON)."""
        self.event_count += 1
        n = self.event_count
        rng = self._event_rng
        guild_id: int | None
        if not self.guild_ids or rng.random() < self.config.dm_fraction:
            guild_id = None
        else:
            guild_id = rng.choice(self.guild_ids)
        d = payloads.synthetic_event_data(self.config.synthetic_event, n, guild_id,
                                          self.config.resolved_bot_id())
        if size:
            d = payloads.pad_event(d, size)
        delivered = 0
        for session in sessions if sessions is not None else self.sessions.live():
            if session.alive and (sessions is not None or session.routes(guild_id)):
                self.emit_to(session, self.config.synthetic_event, d, now)
                delivered += 1
        return delivered

    # ---- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self.sessions.next_expiry(self.config.session_ttl),
                             self._next_event_at, self._flood_next_at) if t is not None]
        return min(times) if times else None

    def on_time(self, now: float) -> None:
        for session in self.sessions.due_expiry(now, self.config.session_ttl):
            self.invalidate(session, now, f"not resumed within {self.config.session_ttl}s",
                            EXPIRED)
        if self._next_event_at is not None and self.config.dispatch_rate > 0:
            step = 1.0 / self.config.dispatch_rate
            while self._next_event_at <= now:
                self.emit_synthetic(now)
                self._next_event_at += step
        if self.flood is not None and self._flood_next_at is not None:
            rate, size = self.flood
            while self._flood_next_at <= now:
                self.emit_synthetic(now, size=size)
                self._flood_next_at += 1.0 / rate
