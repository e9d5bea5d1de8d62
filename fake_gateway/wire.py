"""Wire-level faults of the fake gateway: what goes wrong below the gateway protocol.

Sans-I/O, like the core it belongs to (`GatewayCore.wire`): the control actions of
`gateway_common.facts.CONTROLS` that act on the wire come here from `fake_gateway.controls`;
each queues what it writes on the connection (`Send` for a well-formed WebSocket message with a
bad payload, `WriteRaw` for bytes that are no well-formed WebSocket frame) and records a
`wire_fault` trace record naming the connection, what was written and why a client chokes on it.

- ``corrupt_compression`` (one-shot): one bad block in the connection's zlib-stream (a deflate
  block of the reserved type 3, then the 00 00 ff ff flush suffix, so a client inflates it at
  once: "zlib error -3: invalid block type") or zstd-stream (a block of the reserved type:
  "Data corruption detected"), as a binary message of its own; nothing else is lost. A correct
  client gives up the connection's decoder with the connection: it closes (not with 1000/1001)
  and RESUMEs on a new connection with a fresh inflater. It checks a client that crashes, hangs
  or keeps reading a dead inflater on a decode error. Connections without transport compression
  are left alone (a `note` says so).
- ``reuse_compressor`` (switch): a new compressed connection continues the compressor of the
  most recent earlier connection that asked for the same compress and encoding, instead of
  starting a fresh one as Discord does. Its first message (HELLO) then has no zlib header (a
  fresh inflater: "incorrect header check"; zstd: "Unknown frame descriptor"), so a correct
  client (a fresh inflater per connection) cannot decode it: it must close, back off and
  reconnect, and be live again once the switch is off. It checks what a client does when a
  connection's first frame cannot be decoded (a crash, a hang waiting for HELLO, a reconnect
  storm), not the eris #1364 bug: a client that keeps one inflater across reconnects (eris
  #1364) decodes this stream, and is caught by the honest server instead, whose every new
  connection starts a fresh context (`fake_gateway.codec.Encoder`).
- ``malformed_frame`` (one-shot): bytes that break RFC 6455, between the frames sent before and
  after: ``fragmented_control`` (a ping without FIN, section 5.5), ``bad_opcode`` (reserved
  opcode 0x3, section 5.2) or ``bad_utf8`` (a text frame that is not UTF-8, section 8.1). A
  correct client fails the connection (close 1002, or 1007 for bad UTF-8) and RESUMEs on a new
  one (DisnakeDev/disnake #1159: "received fragmented control frame").
- ``delay_hello`` with ``never`` or ``connections`` (its plain form is the core's): accept the
  upgrade and never send HELLO, or hold it on the next N connections only. A correct client
  gives up on a connection that sends no HELLO and reconnects (DSharpPlus/DSharpPlus #279).
- ``recommended_shards`` (one-shot): what `/gateway/bot` recommends from now on, and how much
  it changes after every answer (``per_call``), as Discord's count grows with the bot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from fake_gateway.codec import Encoder, corrupt_block
from fake_gateway.config import GatewayConfig
from gateway_common.errors import UserError
from gateway_common.facts import MALFORMED_FRAMES, MAX_SHARDS
from gateway_common.trace import KIND_NOTE, KIND_WIRE_FAULT, Trace


# What this module needs of the core's connections and gateway (`fake_gateway.protocol`, which
# imports this module: it is written against these shapes, not against its classes).
class ConnectionCore(Protocol):
    conn_id: int
    closed: bool
    listener: str
    encoder: Encoder
    hello_delay: float | None

    def push_wire(self, data: bytes, raw: bool) -> None: ...


class GatewayCore(Protocol):
    config: GatewayConfig
    trace: Trace

    @property
    def connections(self) -> Mapping[int, ConnectionCore]: ...


# Each malformed frame (server frames are unmasked): its bytes, and what a client does.
FRAMES: Mapping[str, tuple[bytes, str]] = {
    "fragmented_control": (b"\x09\x00", "a ping frame without FIN (RFC 6455 5.5); "
                                        "a client fails the connection with 1002"),
    "bad_opcode": (b"\x83\x00", "a frame with the reserved opcode 0x3 (RFC 6455 5.2); "
                                "a client fails the connection with 1002"),
    "bad_utf8": (b"\x81\x02\xc3\x28", "a text frame whose payload is not UTF-8 (RFC 6455 8.1); "
                                      "a client fails the connection with 1007"),
}
assert tuple(FRAMES) == MALFORMED_FRAMES

# The actions `fake_gateway.controls` hands to `WireFaults.apply`.
ACTIONS = frozenset({"corrupt_compression", "reuse_compressor", "malformed_frame",
                     "recommended_shards"})
_PER_CONNECTION = frozenset({"corrupt_compression", "malformed_frame"})


class WireFaults:
    """The wire-level faults of one gateway: what is switched on, and what waits for the next
    connections to open."""

    def __init__(self, gateway: GatewayCore) -> None:
        self.gw = gateway
        self.reuse_for_all = False
        self.reuse_next = 0  # connections still to open that continue an earlier compressor
        # The latest connection per (compress, encoding) and its encoder: what a new connection
        # continues while reuse_compressor is on (at most one per kind is kept).
        self.latest: dict[tuple[str, str], tuple[int, Encoder]] = {}
        self.next_connection: list[tuple[str, dict[str, Any]]] = []
        self.hello_next: list[tuple[str | None, float]] = []  # (listener, delay) per connection
        self.shards: int | None = None  # what /gateway/bot recommends (None: the knob)
        self.shards_per_call = 0
        self.shards_answers = 0

    # ---- controls ------------------------------------------------------------------------

    def apply(self, action: str, target: int | str, params: dict[str, Any],
              now: float) -> list[int]:
        """Apply one validated action; the ids of the connections it acted on."""
        if action == "recommended_shards":
            if isinstance(target, int):
                raise UserError("control recommended_shards: /gateway/bot's answer belongs to "
                                "no connection; aim it at 'all'")
            self.shards, self.shards_per_call = params["shards"], params["per_call"]
            self.shards_answers = 0
            return []
        if action == "reuse_compressor":
            if isinstance(target, int):
                raise UserError("control reuse_compressor: an open connection's stream has "
                                "begun; aim it at 'all' or 'next'")
            if target == "all":
                self.reuse_for_all = params["on"]
            elif params["on"]:
                self.reuse_next += 1
            else:
                self.reuse_next = 0
            return []
        if target == "next":
            self.next_connection.append((action, params))
            return []
        if isinstance(target, int):
            conn = self.gw.connections.get(target)
            if conn is None:
                raise UserError(f"control {action}: no open connection {target}")
            targets = [conn]
        else:
            targets = list(self.gw.connections.values())
        done = []
        for conn in targets:
            if not conn.closed:
                self._act(conn, action, params, now)
                done.append(conn.conn_id)
        return done

    def delay_hello(self, target: int | str, params: dict[str, Any]) -> bool:
        """delay_hello aimed at the next connections (target "next", or ``connections``): held
        here until they open. False: not for here (the core's gateway-wide or per-connection
        delay)."""
        if isinstance(target, int) or (target == "all" and params["connections"] is None):
            return False
        listener = params["listener"]
        if params["on"]:
            self.hello_next.extend([(listener, hello_delay(params))] * (params["connections"] or 1))
        else:
            self.hello_next = [(only, delay) for only, delay in self.hello_next
                               if listener not in (None, only)]
        return True

    # ---- connections -----------------------------------------------------------------------

    def connection_opened(self, conn: ConnectionCore, now: float) -> None:
        """A connection has just opened (nothing sent yet): what waits for it."""
        for index, (only, delay) in enumerate(self.hello_next):
            if only in (None, conn.listener):
                del self.hello_next[index]
                conn.hello_delay = delay
                break
        encoder = conn.encoder
        if encoder.compress is not None:
            key = (encoder.compress, encoder.encoding)
            reuse = self.reuse_for_all or self.reuse_next > 0
            if reuse:
                self.reuse_next = max(0, self.reuse_next - 1)
                earlier = self.latest.get(key)
                if earlier is not None:
                    from_conn, old = earlier
                    conn.encoder = old.continued()
                    self._record(conn, "reuse_compressor", now, compress=encoder.compress,
                                 from_conn=from_conn,
                                 detail=f"continues the {encoder.compress} compressor of "
                                        f"connection {from_conn}: a fresh decoder cannot read "
                                        f"this connection's first message")
            self.latest[key] = (conn.conn_id, conn.encoder)
        pending, self.next_connection = self.next_connection, []
        for action, params in pending:
            self._act(conn, action, params, now)

    def hello_withheld(self, conn: ConnectionCore, now: float) -> None:
        self._record(conn, "delay_hello", now, detail="WebSocket upgrade accepted; HELLO is "
                                                      "never sent on this connection")

    def _act(self, conn: ConnectionCore, action: str, params: dict[str, Any],
             now: float) -> None:
        assert action in _PER_CONNECTION
        if action == "malformed_frame":
            data, why = FRAMES[params["frame"]]
            self._record(conn, action, now, frame=params["frame"], bytes=data.hex(), detail=why)
            conn.push_wire(data, raw=True)
            return
        compress = conn.encoder.compress
        if compress is None:
            self.gw.trace.record(KIND_NOTE, ts=now, conn=conn.conn_id,
                                 text="corrupt_compression: no transport compression on this "
                                      "connection; nothing corrupted")
            return
        data = corrupt_block(compress)
        self._record(conn, action, now, compress=compress, bytes=data.hex(),
                     detail=f"a {compress} block of the reserved type, as a binary message "
                            "of its own: the client's decoder fails on it")
        conn.push_wire(data, raw=False)

    def _record(self, conn: ConnectionCore, action: str, now: float, **fields: Any) -> None:
        self.gw.trace.record(KIND_WIRE_FAULT, ts=now, conn=conn.conn_id, action=action, **fields)

    # ---- REST ------------------------------------------------------------------------------

    def recommended_shards(self, now: float) -> int:
        """What /gateway/bot recommends in this answer (the knob, unless a control says)."""
        if self.shards is None and self.shards_per_call == 0:
            return self.gw.config.recommended_shards
        shards = self.gw.config.recommended_shards if self.shards is None else self.shards
        self.shards_answers += 1
        self.gw.trace.record(KIND_WIRE_FAULT, ts=now, action="recommended_shards",
                             shards=shards, answer=self.shards_answers,
                             detail=f"/gateway/bot recommends {shards} shard(s)")
        self.shards = min(max(1, shards + self.shards_per_call), MAX_SHARDS)
        return shards


def hello_delay(params: dict[str, Any]) -> float:
    """A delay_hello's delay in seconds (math.inf: never)."""
    return math.inf if params["never"] else params["ms"] / 1000.0
