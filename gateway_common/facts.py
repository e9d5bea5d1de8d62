"""Protocol facts the fake gateway, the reference client, the scenario loader and the oracle share,
each written once: a table per kind of fact, and the sets the code uses derived from it (as h11
writes its state machine as a table). Section numbers are those of
``shared/reference/gateway-protocol.md``.

- ``OPCODES``: every gateway opcode, its name and who sends it (section 2.2);
- ``CLOSE_CODES``: every close code with its class: what a client does after a server close with
  it (section 13), whether the session survives a server close with it (section 7.1), whether it
  ends the session when the client sends it (section 5), and the reason the fake gateway sends;
- ``CONTROLS``: every control action of the fake gateway (protocol-level faults), its kind and its
  parameters with their types and defaults; the control endpoint, ``GatewayControls.apply`` and
  a scenario's ``kind = "control"`` steps all accept exactly these;
- a few numbers both sides of the protocol rely on (``SESSION_TTL``, ``MAX_PAYLOAD_BYTES``, ...).

The gateway's knobs are the other table, ``fake_gateway.config.GatewayConfig``. Imports nothing of
ours (gateway_common sits below fake_gateway and harness).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CLIENT_OPS",
    "CLOSE_CODES",
    "COMPRESSIONS",
    "CONTROLS",
    "ENCODINGS",
    "FATAL_CLOSE_CODES",
    "FRAME_MODES",
    "IDENTIFY_WINDOW",
    "JSON_TYPES",
    "LISTENERS",
    "MALFORMED_FRAMES",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_SHARDS",
    "NON_RESUMABLE_SERVER_CLOSE_CODES",
    "ONE_SHOT_CONTROLS",
    "OPCODES",
    "OP_CHANNEL_INFO",
    "OP_DISPATCH",
    "OP_HEARTBEAT",
    "OP_HEARTBEAT_ACK",
    "OP_HELLO",
    "OP_IDENTIFY",
    "OP_INVALID_SESSION",
    "OP_PRESENCE",
    "OP_RECONNECT",
    "OP_REQUEST_MEMBERS",
    "OP_RESUME",
    "OP_SOUNDBOARD",
    "OP_VOICE",
    "ON",
    "POLICY_CONTROLS",
    "RATE_LIMIT_FRAMES",
    "RATE_LIMIT_WINDOW",
    "REIDENTIFY_CLOSE_CODES",
    "RESUMABLE_SERVER_CLOSE_CODES",
    "SESSION_KILLING_CLIENT_CODES",
    "SERVER_OPS",
    "SESSION_TTL",
    "SWITCH_CONTROLS",
    "UNLISTED_CLOSE",
    "ClientAction",
    "CloseCode",
    "Control",
    "ControlKind",
    "Opcode",
    "Param",
    "SessionAfter",
    "close_code",
]

# ------------------------------------------------------------------------------------------------
# Numbers (sections 3, 5, 8)

# The interval the real gateway advertises in HELLO; clients that ignore HELLO beat on about it.
DISCORD_HEARTBEAT_INTERVAL_MS = 41_250
MAX_PAYLOAD_BYTES = 4096  # the largest frame a client may send; a larger one gets close 4002
RATE_LIMIT_FRAMES, RATE_LIMIT_WINDOW = 120, 60.0  # frames a client may send per window (4008)
IDENTIFY_WINDOW = 5.0  # seconds one max_concurrency bucket allows one IDENTIFY in
# How long a session whose connection was lost stays resumable. Discord says "a few minutes"; about
# 90 s was observed (section 14.6). The fake gateway's session_ttl default, and the reference
# client's resumable_window default: the client never gives up a session the server still holds.
SESSION_TTL = 120.0
# What a client may ask for in its gateway URL (sections 1.2-1.4): ?encoding= and ?compress=.
ENCODINGS = ("json", "etf")
COMPRESSIONS = ("zlib-stream", "zstd-stream")
# The most shards a bot may have (what /gateway/bot may recommend).
MAX_SHARDS = 65_536
# The malformed WebSocket frames the gateway can write (fake_gateway.wire has their bytes).
MALFORMED_FRAMES = ("fragmented_control", "bad_opcode", "bad_utf8")
# The fake gateway's two WebSocket listeners: discovery (what /gateway announces) and resume
# (READY's resume_gateway_url).
LISTENERS = ("discovery", "resume")

# ------------------------------------------------------------------------------------------------
# Opcodes (section 2.2)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_VOICE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
OP_SOUNDBOARD = 31
OP_CHANNEL_INFO = 43


@dataclass(frozen=True)
class Opcode:
    name: str
    client_sends: bool
    server_sends: bool


OPCODES: Mapping[int, Opcode] = {
    OP_DISPATCH: Opcode("Dispatch", client_sends=False, server_sends=True),
    OP_HEARTBEAT: Opcode("Heartbeat", client_sends=True, server_sends=True),  # server: beat now
    OP_IDENTIFY: Opcode("Identify", client_sends=True, server_sends=False),
    OP_PRESENCE: Opcode("Presence Update", client_sends=True, server_sends=False),
    OP_VOICE: Opcode("Voice State Update", client_sends=True, server_sends=False),
    OP_RESUME: Opcode("Resume", client_sends=True, server_sends=False),
    OP_RECONNECT: Opcode("Reconnect", client_sends=False, server_sends=True),
    OP_REQUEST_MEMBERS: Opcode("Request Guild Members", client_sends=True, server_sends=False),
    OP_INVALID_SESSION: Opcode("Invalid Session", client_sends=False, server_sends=True),
    OP_HELLO: Opcode("Hello", client_sends=False, server_sends=True),
    OP_HEARTBEAT_ACK: Opcode("Heartbeat ACK", client_sends=False, server_sends=True),
    OP_SOUNDBOARD: Opcode("Request Soundboard Sounds", client_sends=True, server_sends=False),
    OP_CHANNEL_INFO: Opcode("Request Channel Info", client_sends=True, server_sends=False),
}
# What a client may send; any other op gets close 4001.
CLIENT_OPS = frozenset(op for op, spec in OPCODES.items() if spec.client_sends)
# What the server sends (what the server_frames control can pick).
SERVER_OPS = tuple(sorted(op for op, spec in OPCODES.items() if spec.server_sends))

# ------------------------------------------------------------------------------------------------
# Close codes (sections 5, 7, 13)

# What a client does after the server closes with a code (section 13): resume the session (and
# fall back to IDENTIFY if the server answers op 9), start a new one, or stop and report.
ClientAction = Literal["resume", "new_session", "fatal"]
# Whether the session survives the server closing with a code: "kept" (a RESUME works), "ended",
# or "unsure" (ambiguous: the fake keeps it, but a client cannot count on it, so the oracle does
# not either).
SessionAfter = Literal["kept", "ended", "unsure"]


@dataclass(frozen=True)
class CloseCode:
    name: str
    client: ClientAction
    session: SessionAfter
    reason: str = ""  # what the fake gateway sends with it when it closes on its own
    ends_session_from_client: bool = False  # sent by the client, it ends the session (section 5)


CLOSE_CODES: Mapping[int | None, CloseCode] = {
    None: CloseCode("no close code (empty close frame)", "resume", "kept"),
    # A server 1000 is ambiguous (section 7.2): the heartbeat deadline's code in field reports,
    # after which the session was gone. The fake keeps the session unless told otherwise.
    1000: CloseCode("normal closure", "resume", "unsure", ends_session_from_client=True),
    1001: CloseCode("going away", "resume", "kept", ends_session_from_client=True),
    1006: CloseCode("abnormal closure (no close frame)", "resume", "kept"),
    4000: CloseCode("Unknown error", "resume", "kept"),
    # Listed as reconnectable, never resumable (section 14.3): a RESUME gets op 9.
    4001: CloseCode("Unknown opcode", "resume", "ended", "Invalid payload."),
    4002: CloseCode("Decode error", "resume", "kept", "Decode error"),
    4003: CloseCode("Not authenticated", "new_session", "ended", "Not authenticated."),
    4004: CloseCode("Authentication failed", "fatal", "ended", "Authentication failed."),
    4005: CloseCode("Already authenticated", "new_session", "ended", "Already authenticated."),
    4007: CloseCode("Invalid seq", "new_session", "ended", "Invalid seq."),
    4008: CloseCode("Rate limited", "resume", "kept", "Rate limited."),
    4009: CloseCode("Session timed out", "new_session", "ended", "Session timed out."),
    4010: CloseCode("Invalid shard", "fatal", "ended", "Invalid shard."),
    4011: CloseCode("Sharding required", "fatal", "ended", "Sharding required."),
    4012: CloseCode("Invalid API version", "fatal", "ended", "Invalid API version."),
    4013: CloseCode("Invalid intent(s)", "fatal", "ended", "Invalid intent(s)."),
    4014: CloseCode("Disallowed intent(s)", "fatal", "ended", "Disallowed intent(s)."),
}
# Any other code (4006, 3000, ...): reconnect and try to resume (section 7.1's note); the fake
# keeps the session, the oracle does not count on it.
UNLISTED_CLOSE = CloseCode("unlisted", "resume", "unsure")


def close_code(code: int | None) -> CloseCode:
    """The table's row for ``code`` (an unlisted code gets ``UNLISTED_CLOSE``)."""
    return CLOSE_CODES.get(code, UNLISTED_CLOSE)


def _codes(keep: Any) -> frozenset[int | None]:
    return frozenset(code for code, row in CLOSE_CODES.items() if keep(row))


FATAL_CLOSE_CODES = _codes(lambda row: row.client == "fatal")
# Server closes after which the client should start a new session.
REIDENTIFY_CLOSE_CODES = _codes(lambda row: row.client == "new_session")
# Server closes (or none) after which a client holding a session should resume.
RESUMABLE_SERVER_CLOSE_CODES = _codes(lambda row: row.session == "kept")
# Server closes that end the session (the fake invalidates it unless a control says otherwise).
NON_RESUMABLE_SERVER_CLOSE_CODES = _codes(lambda row: row.session == "ended")
SESSION_KILLING_CLIENT_CODES = _codes(lambda row: row.ends_session_from_client)

# ------------------------------------------------------------------------------------------------
# Control actions (the fake gateway's protocol-level faults)

# one_shot: happens once (a step has no duration or stop; the oracle draws no fault window);
# switch: a persistent fault switched on and off with `on` (a fault window while on);
# policy: a persistent setting switched with `on` that is not a fault (never a fault window).
ControlKind = Literal["one_shot", "switch", "policy"]
JSON_TYPES: tuple[type, ...] = (int, float, str, bool, list, dict)


@dataclass(frozen=True)
class Param:
    """One parameter of a control action: its types, its default (None: optional; JSON null
    means "not given") and, where the values are limited, the ranges or choices allowed."""

    types: tuple[type, ...]
    default: Any = None
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive
    choices: tuple[str, ...] = ()
    max_bytes: int | None = None  # a string's limit, in UTF-8 bytes

    def accepts_type(self, value: Any) -> bool:
        """Whether ``value`` has one of the types (an int is a number; a bool is not an int)."""
        if value is None:
            return self.default is None
        if isinstance(value, bool) and bool not in self.types:
            return False
        if isinstance(value, int) and float in self.types:
            return True
        return isinstance(value, self.types)

    def problem(self, value: Any) -> str | None:
        """Why a value of the right type is refused (None: it is fine)."""
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if isinstance(value, str):
            try:
                size = len(value.encode())
            except UnicodeEncodeError:
                return "must be Unicode text (it has a lone surrogate)"
            if self.max_bytes is not None and size > self.max_bytes:
                return f"must be at most {self.max_bytes} bytes (UTF-8), got {size}"
        if self.ranges and not any(low <= value <= high for low, high in self.ranges):
            spans = " or ".join(f"{low}-{high}" if low != high else f"{low}"
                                for low, high in self.ranges)
            return f"must be {spans}, got {value}"
        if self.choices and value not in self.choices:
            return f"must be {' or '.join(map(repr, self.choices))}, got {value!r}"
        return None


ON = Param((bool,), True)  # every switch and policy takes it; the runner sets it, scenarios don't
_LISTENER = Param((str,), choices=LISTENERS)
# What a close frame can carry (RFC 6455 7.4: the registered codes but 1004-1006, which are never
# sent, and 3000-4999 for applications).
_CLOSE_FRAME_CODE = Param((int,), ranges=((1000, 1003), (1007, 1014), (3000, 4999)))

# A close frame holds 125 bytes of payload: a 2-byte code and the reason (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES = 123
_CLOSE_REASON = Param((str,), "", max_bytes=MAX_CLOSE_REASON_BYTES)
# A delay in ms: at most a day (a huge number used to overflow, or crash the timer loop).
_MILLISECONDS = Param((int, float), ranges=((0, 86_400_000),))
_MILLISECONDS_5000 = Param((int, float), 5000, ranges=((0, 86_400_000),))
_MILLISECONDS_1000 = Param((int, float), 1000, ranges=((0, 86_400_000),))
# What server_frames does to the frames it picks (fake_gateway.frames).
FRAME_MODES = ("drop", "delay", "duplicate", "reorder")
# A dispatch's size in bytes of JSON, padded up to (null: as it comes); 1 MB stays under the
# 1 MiB message limit of websockets' default client.
_DISPATCH_SIZE = Param((int,), ranges=((0, 1_000_000),))
_COUNT = Param((int,), ranges=((1, 100_000),))


@dataclass(frozen=True)
class Control:
    kind: ControlKind
    params: Mapping[str, Param] = field(default_factory=dict)  # besides `on`

    @property
    def all_params(self) -> dict[str, Param]:
        """What the control endpoint takes: ``on`` first for switches and policies."""
        return {"on": ON, **self.params} if self.kind != "one_shot" else dict(self.params)


CONTROLS: Mapping[str, Control] = {
    "withhold_acks": Control("switch"),
    "withhold_ready": Control("switch"),
    "withhold_resumed": Control("switch"),
    "go_silent": Control("switch"),
    "ignore_client_close": Control("switch"),
    "delay_hello": Control("switch", {
        "ms": _MILLISECONDS_5000, "listener": _LISTENER,
        "never": Param((bool,), False),  # no HELLO at all on those connections (ms unused)
        # How many of the connections that open next it holds (null: every one while on).
        "connections": Param((int,), ranges=((1, 100_000),)),
    }),
    "reject_upgrade": Control(
        "switch", {"status": Param((int,), 503, ranges=((400, 599),)), "listener": _LISTENER}
    ),
    "heartbeat_deadline": Control(
        "policy", {"code": _CLOSE_FRAME_CODE, "resumable": Param((bool,))}
    ),
    "reconnect": Control("one_shot", {"close_after_ms": _MILLISECONDS}),
    "invalid_session": Control(
        "one_shot", {"resumable": Param((bool,), False), "close": Param((bool,))}
    ),
    "close": Control(
        "one_shot",
        {"code": _CLOSE_FRAME_CODE, "reason": _CLOSE_REASON, "resumable": Param((bool,))},
    ),
    "reset": Control("one_shot"),
    "expire_session": Control("one_shot", {"session_id": Param((str,))}),
    "invalidate_session": Control("one_shot", {"session_id": Param((str,))}),
    "burst": Control("one_shot", {
        "count": Param((int,), 10, ranges=((1, 100_000),)), "size": _DISPATCH_SIZE,
        # null: the gateway's synthetic event; GUILD_CREATE: the session's guilds again (a storm)
        "t": Param((str,), choices=("GUILD_CREATE",)),
    }),
    "heartbeat_request": Control("one_shot", {"d": Param(JSON_TYPES)}),
    "session_start_remaining": Control("one_shot", {"remaining": Param((int,))}),
    # Wire-level faults (fake_gateway.wire): a bad block in the compressed stream, a new
    # connection continuing an earlier one's compressor, a frame breaking RFC 6455, and what
    # /gateway/bot recommends.
    "corrupt_compression": Control("one_shot"),
    "reuse_compressor": Control("switch"),
    "malformed_frame": Control(
        "one_shot", {"frame": Param((str,), MALFORMED_FRAMES[0], choices=MALFORMED_FRAMES)}
    ),
    "recommended_shards": Control("one_shot", {
        "shards": Param((int,), ranges=((1, MAX_SHARDS),)),  # null: the knob's
        "per_call": Param((int,), 0, ranges=((-MAX_SHARDS, MAX_SHARDS),)),
    }),
    # Frame-level faults (fake_gateway.frames): server frames picked by op and/or dispatch type
    # dropped, delayed, duplicated or reordered while on (at most `count` of them); a sustained
    # dispatch flood; READY then part of its GUILD_CREATE stream, then a reset; a close in answer
    # to every RESUME; op 9 d=false in answer to every IDENTIFY and RESUME (an op 9 loop).
    "server_frames": Control("switch", {
        "mode": Param((str,), FRAME_MODES[0], choices=FRAME_MODES),
        "op": Param((int,), ranges=tuple((op, op) for op in SERVER_OPS)),  # null: any
        "t": Param((str,), max_bytes=64),  # a dispatch type (op 0); null: any
        "count": _COUNT,  # null: every matching frame while on
        "ms": _MILLISECONDS_1000,  # delay: how long; reorder: the longest a frame waits
    }),
    "flood": Control("switch", {
        "rate": Param((int, float), 100, ranges=((1, 10_000),)), "size": _DISPATCH_SIZE}),
    "drop_mid_guilds": Control("one_shot", {"guilds": Param((int,), 1, ranges=((0, 100_000),))}),
    "close_on_resume": Control("switch", {
        "code": _CLOSE_FRAME_CODE, "reason": _CLOSE_REASON, "resumable": Param((bool,))}),
    "invalid_session_loop": Control("switch"),
}
ONE_SHOT_CONTROLS = frozenset(name for name, c in CONTROLS.items() if c.kind == "one_shot")
SWITCH_CONTROLS = frozenset(name for name, c in CONTROLS.items() if c.kind == "switch")
POLICY_CONTROLS = frozenset(name for name, c in CONTROLS.items() if c.kind == "policy")
