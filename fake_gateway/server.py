"""trio driver for the fake gateway: websockets.trio server, TLS, timers, trace hooks.

`FakeGateway` owns a sans-I/O `GatewayCore` and moves bytes for it. It serves any
`trio.abc.Listener`s (`serve_listeners`): TCP in wall-clock mode, in-memory streams in
simulation; `fake_gateway.opened.open_gateway` opens those listeners (and REST) and says where
they are. Every wait goes through trio, so the whole gateway runs under `trio.testing.MockClock`.
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import secrets
import socket
import ssl
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import trio
from trio.lowlevel import ParkingLot
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close as CloseFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.trio.server import ServerConnection, serve

from fake_gateway.config import GatewayConfig
from fake_gateway.controls import GatewayControls
from fake_gateway.protocol import Close, ConnectionCore, GatewayCore, Reset, Send, WriteRaw
from fake_gateway.sessions import Session
from gateway_common.eager_lock import EagerLock
from gateway_common.trace import (
    KIND_CONN_CLOSE,
    KIND_CONN_OPEN,
    KIND_TLS_DONE,
    KIND_WS_REJECTED,
    Trace,
)


def tune_gc_for_a_server_process() -> None:
    """For a process that is only a gateway (`gateway-harness serve`, the benchmark).

    CPython's full and middle-generation collections scan every live object; with ~1,000
    connections they pause the event loop for 40-400 ms, longer than a compressed heartbeat's
    grace. Start-up objects are frozen out of the scans and the older generations collect
    rarely: steady-state traffic makes almost no cyclic garbage, and a closed connection is
    freed by reference counting (`_connection_ended`, `GatewayWSConnection._break_cycles`), so
    nothing per connection waits for those collections. Not called by the library.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 1000, 1000)


class _ListenerName:
    """Stands in for `listener.socket` so websockets can log in-memory listeners."""

    family = socket.AF_UNIX

    def __init__(self, label: str) -> None:
        self._label = label

    def getsockname(self) -> str:
        return self._label


class TappedStream(trio.abc.HalfCloseableStream):
    """One accepted connection: TLS (done here, so its time is traced), fault switches
    (swallow writes while silent or ignoring the client's close) and reset."""

    def __init__(self, gateway: FakeGateway, raw: trio.abc.Stream, conn_id: int, listener: str,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.gateway = gateway
        self.raw = raw
        self.conn_id = conn_id
        self.listener = listener
        self.core: ConnectionCore | None = None
        self.ws: ServerConnection | None = None
        self.lost_how: str | None = None
        self.close_frame_seen = False
        self._closed = False
        self._tls: trio.SSLStream[trio.abc.Stream] | None = None
        self._stream: trio.abc.Stream = raw
        if ssl_context is not None:
            self._tls = trio.SSLStream(raw, ssl_context, server_side=True,
                                       https_compatible=True)
            self._stream = self._tls
        self._tls_done = ssl_context is None
        self._held: list[bytes] = []

    async def _handshake(self) -> None:
        if self._tls_done or self._tls is None:
            return
        try:
            await self._tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.lost_how = self.lost_how or "reset"
            raise
        if not self._tls_done:
            self._tls_done = True
            self.gateway.trace.record(KIND_TLS_DONE, ts=trio.current_time(), conn=self.conn_id)

    def _swallow(self) -> bool:
        core = self.core
        if core is None or not core.ignore_client_close:
            return False
        # close_rcvd is set while parsing, before websockets writes its echo of the close.
        received = self.ws is not None and self.ws.protocol.close_rcvd is not None
        return self.close_frame_seen or received

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._tls_done:  # (every frame passes here: no coroutine once TLS is up)
            await self._handshake()
        if self._swallow():
            return
        if self.core is not None and self.core.silent:
            # Bytes written just before the silence began: held, as a stalled path holds
            # them, and sent first when it ends (never dropped: that is no TCP stream).
            self._held.append(bytes(data))
            return
        if self._held:
            held, self._held = b"".join(self._held), []
            await self._stream.send_all(held)
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._tls_done:
            await self._handshake()
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError:
            self.lost_how = self.lost_how or "reset"
            raise
        if not data:
            self.lost_how = self.lost_how or "eof"
        return data

    async def send_eof(self) -> None:
        if self._swallow():
            return
        if self._tls is None and isinstance(self.raw, trio.abc.HalfCloseableStream):
            await self.raw.send_eof()
        else:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self.gateway._connection_ended(self)

    async def abort(self) -> None:
        """Close the TCP connection with a RST (or the in-memory equivalent)."""
        if self._closed:
            return
        abort = getattr(self.raw, "abort", None)
        if callable(abort):
            result = abort()
            if hasattr(result, "__await__"):
                await result
        else:
            sock = getattr(self.raw, "socket", None)
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.aclose_forcefully(self.raw)
        self._closed = True
        self.gateway._connection_ended(self)


class GatewayListener(trio.abc.Listener[TappedStream]):
    """Wraps any trio Listener: numbers connections and records `conn_open`."""

    def __init__(self, gateway: FakeGateway, inner: trio.abc.Listener[Any], label: str,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.gateway = gateway
        self.inner = inner
        self.label = label
        self.ssl_context = ssl_context
        self.socket = getattr(inner, "socket", None) or _ListenerName(label)

    async def accept(self) -> TappedStream:
        raw = await self.inner.accept()
        conn_id = self.gateway.core.new_conn_id()
        self.gateway.trace.record(KIND_CONN_OPEN, ts=trio.current_time(), conn=conn_id,
                                  listener=self.label, peer=_peer(raw))
        return TappedStream(self.gateway, raw, conn_id, self.label, self.ssl_context)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            host, port = sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"
    return str(getattr(stream, "peer_address", "memory"))


class GatewayWSConnection(ServerConnection):
    """Notices the client's close frame as it arrives (recv() only reports it once TCP ends)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_lock = EagerLock()  # type: ignore[assignment]  # no yield when free

    def process_event(self, event: Any) -> None:
        if self.request is not None and getattr(event, "opcode", None) is Opcode.CLOSE:
            stream = self.stream
            if isinstance(stream, TappedStream):
                stream.close_frame_seen = True
                core = stream.core
                if core is not None and not core.closed:
                    close = CloseFrame.parse(bytes(event.data)) if event.data else None
                    code = close.code if close is not None else None
                    core.client_closed(trio.current_time(), code,
                                       close.reason if close is not None else "")
        super().process_event(event)

    async def recv_events(self) -> None:
        try:
            await super().recv_events()
        finally:
            self._break_cycles()

    def _break_cycles(self) -> None:
        """Reading has ended for good: break the reference cycles websockets leaves, so the
        connection (request, response, buffers, socket) is freed by reference counting as its
        tasks end, not by a full collection, which a server process runs rarely
        (`tune_gc_for_a_server_process`): about 80 objects per closed connection stayed."""
        protocol = self.protocol
        if protocol.state is not State.CLOSED:
            return  # (cancelled before the stream closed: leave it to the collector)
        # The parser is a generator, suspended for good, whose frame holds the protocol. Once
        # CLOSED nothing steps it again: receive_eof is a no-op and every send refuses.
        protocol.parser.close()
        # The exception that ended the parser (EOF, a protocol error) or the connection (a
        # reset) keeps a traceback whose frames hold the protocol or this connection.
        for exc in (protocol.parser_exc, self.connection_exc):
            if exc is not None:
                exc.__traceback__ = None


class _DrainLock:
    """Held while one task carries out a connection's queued actions (`FakeGateway._drain`),
    so the handler and the sender never interleave their frames. Every frame takes it, so a
    free lock is taken with no await at all (a `trio.Lock`, or `async with` on any lock, costs
    a coroutine or two and trio's ownership bookkeeping per frame); a held one is waited for
    in order and handed over on release, as `trio.Lock` does."""

    __slots__ = ("held", "_waiting")

    def __init__(self) -> None:
        self.held = False
        self._waiting = ParkingLot()

    def try_acquire(self) -> bool:
        if self.held:
            return False
        self.held = True
        return True

    async def wait_acquire(self) -> None:
        """Take it once free (the caller's try_acquire failed)."""
        if self.held:
            await self._waiting.park()  # on return it is ours: release handed it over
        else:
            self.held = True

    def release(self) -> None:
        if self._waiting:
            self._waiting.unpark()
        else:
            self.held = False


@dataclass
class _Link:
    """What the driver keeps per WebSocket connection."""

    ws: ServerConnection
    stream: TappedStream
    conn: ConnectionCore
    wake: trio.Event = field(default_factory=trio.Event)
    lock: _DrainLock = field(default_factory=_DrainLock)
    scheduled: float | None = None  # the deadline the timer heap holds for it
    tasks: trio.Nursery | None = None  # the handler's nursery (the closing handshake runs here)
    ending: bool = False  # the core closed it: a task ends TCP if the close gets stuck


class FakeGateway:
    """The fake Discord gateway: two WebSocket listeners ("discovery", "resume") and REST."""

    def __init__(self, config: GatewayConfig, trace: Trace, rng: random.Random) -> None:
        self.config = config
        self.trace = trace
        self.core = GatewayCore(config, trace, rng)
        self.controls = GatewayControls(self.core, trio.current_time)
        # What /_harness/control and /_harness/state require (Authorization: Bearer ...).
        self.control_token = secrets.token_urlsafe(24)
        self._links: dict[int, _Link] = {}
        # The timer task sleeps in this scope until the earliest deadline; a new earlier one
        # moves the scope's deadline instead of waking the task (one wakeup per deadline due).
        self._timer_scope: trio.CancelScope | None = None
        # (deadline, conn_id); stale entries are skipped (a link keeps its one live deadline)
        self._deadlines: list[tuple[float, int]] = []
        self._receiving: int | None = None  # the connection whose frame is being handled
        self.core.notify = self._notify
        self.core.notify_timer = self._notify_timer

    # ---- state for tests and the runner ---------------------------------------------------

    @property
    def connections(self) -> dict[int, ConnectionCore]:
        """Open connections by id."""
        return self.core.connections

    @property
    def sessions(self) -> dict[str, Session]:
        return self.core.sessions.sessions

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot (also served at GET /_harness/state)."""
        return {
            "connections": [
                {"conn": c.conn_id, "listener": c.listener,
                 "session_id": c.session.session_id if c.session else None,
                 "heartbeats": c.heartbeats, "silent": c.silent,
                 "withhold_acks": c.withhold_acks}
                for c in self.core.connections.values()
            ],
            "sessions": [
                {"session_id": s.session_id, "state": s.state, "seq": s.seq, "conn": s.conn_id,
                 "shard": list(s.shard) if s.shard else None, "resumes": s.resumes}
                for s in self.core.sessions.sessions.values()
            ],
            "session_start_remaining": self.core.start_limit.remaining(trio.current_time()),
            "events_emitted": self.core.event_count,
        }

    # ---- wakeups from the core ------------------------------------------------------------

    def _notify(self, conn_id: int) -> None:
        link = self._links.get(conn_id)
        if link is None:
            return
        if link.conn.closed:
            self._watch_close(link)
        if conn_id == self._receiving:
            return  # the handler drains and reschedules this one itself
        link.wake.set()
        self._schedule(link)

    def _watch_close(self, link: _Link) -> None:
        """The core has just queued a close or a reset: make sure TCP ends within
        close_timeout, even when the frames queued before it never go out (a peer that stopped
        reading fills the send buffer), so neither would the close frame."""
        actions = link.conn.actions
        if link.ending or link.tasks is None or not actions:
            return
        if isinstance(actions[-1], Close | Reset):
            link.ending = True
            link.tasks.start_soon(self._end_closed, link, isinstance(actions[-1], Reset))

    async def _end_closed(self, link: _Link, reset: bool) -> None:
        await trio.sleep(self.config.close_timeout)  # cancelled when the connection ends
        if reset:
            await link.stream.abort()
        else:
            await trio.aclose_forcefully(link.stream)

    def _notify_timer(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            scope.deadline = self._timer_target()

    def _deadline_of(self, link: _Link) -> float | None:
        deadline = link.conn.next_deadline()
        resolution = self.config.timer_resolution
        if deadline is not None and resolution > 0:
            # Round up to a grid so many connections' timers share one wakeup.
            deadline = math.ceil(deadline / resolution) * resolution
        return deadline

    def _schedule(self, link: _Link) -> None:
        """Make sure the timer task wakes by the connection's next deadline."""
        deadline = self._deadline_of(link)
        scope = self._timer_scope
        if deadline is None or (link.scheduled is not None and link.scheduled <= deadline):
            # A later deadline is found when the earlier entry pops; but if that entry is what
            # the timer task sleeps until (a heartbeat moved it on), sleep on past it instead.
            if scope is not None and link.scheduled == scope.deadline:
                # (With many connections this is nearly every heartbeat: the one whose entry
                # is on top is the one that beats next. Its new deadline is known, so its entry
                # moves now, and trio's deadline is set only if the earliest one changed.)
                heap = self._deadlines
                conn_id = link.conn.conn_id
                if deadline is not None and heap and heap[0] == (link.scheduled, conn_id):
                    link.scheduled = deadline
                    heapq.heapreplace(heap, (deadline, conn_id))
                target = self._timer_target()
                if target != scope.deadline:
                    scope.deadline = target
            return
        link.scheduled = deadline
        heapq.heappush(self._deadlines, (deadline, link.conn.conn_id))
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _timer_target(self) -> float:
        """The earliest deadline still meant: heap entries whose connection is gone, or whose
        deadline has moved later, are dropped or moved from the top first."""
        heap = self._deadlines
        while heap:
            deadline, conn_id = heap[0]
            link = self._links.get(conn_id)
            if link is None or link.scheduled != deadline:
                heapq.heappop(heap)  # a connection's older entry, or a closed connection's
                continue
            actual = self._deadline_of(link)
            if actual is None or actual > deadline:
                link.scheduled = actual
                if actual is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (actual, conn_id))
                continue
            break
        gateway_deadline = self.core.next_deadline()
        return min(heap[0][0] if heap else math.inf,
                   gateway_deadline if gateway_deadline is not None else math.inf)

    # ---- serving --------------------------------------------------------------------------

    async def serve_listeners(
        self,
        listeners: dict[str, trio.abc.Listener[Any]],
        ssl_context: ssl.SSLContext | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve WebSocket connections from any trio Listeners, labelled by key ("discovery",
        "resume"). `fake_gateway.opened.open_gateway` opens them and announces their URLs."""
        wrapped = [GatewayListener(self, inner, label, ssl_context)
                   for label, inner in listeners.items()]
        async with trio.open_nursery() as nursery:
            await nursery.start(self._timer_loop)
            await nursery.start(
                lambda task_status: serve(
                    self._handle, listeners=wrapped,  # type: ignore[arg-type]
                    process_request=self._process_request, compression=None,
                    ping_interval=None, ping_timeout=None,
                    close_timeout=self.config.close_timeout, max_size=2**20,
                    server_header=None, create_connection=GatewayWSConnection,
                    task_status=task_status,
                )
            )
            task_status.started()

    async def _timer_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Gateway-wide timers: session expiry and the synthetic event source."""
        self.core.start(trio.current_time())
        task_status.started()
        # One task for every timer: per-connection deadlines (HELLO delay, heartbeat deadline,
        # delayed closes) come off a heap, so a heartbeat costs no cancel scope of its own. It
        # wakes only when a deadline is due: a heartbeat that moves its connection's deadline
        # on moves the sleep on too (_schedule), rather than waking the task to find nothing.
        heap = self._deadlines
        while True:
            with trio.CancelScope(deadline=self._timer_target()) as scope:
                self._timer_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._timer_scope = None
            now = trio.current_time()
            if self._timer_target() > now:
                continue
            expiry = self.core.sessions.next_expiry(self.config.session_ttl)
            if (heap and heap[0][0] <= now) or (expiry is not None and expiry <= now):
                # Let frames that are already here be handled first, so a stall of the whole
                # process (GC, a busy machine) or a heartbeat or RESUME sent at the deadline
                # instant does not count as missed: the sender's wakeup, the reader and the
                # handler each take one scheduling round (trio shuffles tasks within a round).
                # No time passes. (A synthetic dispatch alone needs no such wait.)
                for _ in range(3):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                now = trio.current_time()
            gateway_deadline = self.core.next_deadline()
            if gateway_deadline is not None and now >= gateway_deadline:
                self.core.on_time(now)
            while heap and heap[0][0] <= now:
                deadline, conn_id = heapq.heappop(heap)
                link = self._links.get(conn_id)
                if link is None or link.scheduled != deadline:
                    continue
                link.scheduled = None
                link.conn.on_time(now)
                self._schedule(link)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        stream = ws.stream
        assert isinstance(stream, TappedStream)
        now = trio.current_time()
        status = self.core.upgrade_rejection(stream.listener)
        if status is not None:
            self.trace.record(KIND_WS_REJECTED, ts=now, conn=stream.conn_id, status=status,
                              reason="reject_upgrade fault")
            stream.lost_how = "rejected"
            return ws.respond(status, "Service Unavailable\n" if status == 503 else "Error\n")
        parsed = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        stream.ws = ws
        self._receiving = stream.conn_id  # actions queued while opening are drained by _handle
        try:
            stream.core = self.core.open_connection(stream.conn_id, stream.listener,
                                                    parsed.path, query, now)
        finally:
            self._receiving = None
        self._links[stream.conn_id] = _Link(ws, stream, stream.core)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        stream = ws.stream
        assert isinstance(stream, TappedStream) and stream.core is not None
        link = self._links[stream.conn_id]
        conn = link.conn
        self._schedule(link)
        async with trio.open_nursery() as nursery:
            link.tasks = nursery
            if conn.closed:  # closed while opening (bad query, or a control in between)
                self._watch_close(link)
            nursery.start_soon(self._sender, link)
            try:
                if not await self._drain(link):
                    while True:
                        message = await ws.recv()
                        self._receiving = conn.conn_id
                        try:
                            conn.receive(message, trio.current_time())
                        finally:
                            self._receiving = None
                        self._schedule(link)
                        if await self._drain(link):
                            break
                # Closed by the server: keep reading (and dropping) what the client still
                # sends, so its close frame, queued behind those frames, gets through.
                while True:
                    await ws.recv()
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

    async def _sender(self, link: _Link) -> None:
        """Sends what other tasks queued for this connection (timers, controls, dispatches)."""
        try:
            while True:
                await link.wake.wait()
                link.wake = trio.Event()
                if await self._drain(link):
                    return
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _drain(self, link: _Link) -> bool:
        """Carry out the connection's queued actions in order; True once it is finished."""
        lock = link.lock
        if not lock.try_acquire():
            await lock.wait_acquire()
        try:
            while link.conn.actions:
                for action in link.conn.take_actions():
                    if isinstance(action, Send):
                        for message in action.messages:
                            await link.ws.send(message)
                    elif isinstance(action, Close):
                        # Not awaited here: the handshake waits for the client's close frame,
                        # and only the handler, reading on, can take it in (websockets stops
                        # reading once 16 unread frames are queued).
                        assert link.tasks is not None
                        link.tasks.start_soon(_send_close, link.ws, action.code, action.reason)
                        return True
                    elif isinstance(action, Reset):
                        await link.stream.abort()
                        return True
                    elif isinstance(action, WriteRaw):
                        # Bytes that are no well-formed frame (a wire fault): written in
                        # order with websockets' own writes, which know nothing of them.
                        async with link.ws.send_context():
                            link.ws.protocol.writes.append(action.data)
            return link.conn.closed
        finally:
            lock.release()

    def _connection_ended(self, stream: TappedStream) -> None:
        """The TCP connection is gone: record it if nothing else has."""
        now = trio.current_time()
        self._links.pop(stream.conn_id, None)
        core = stream.core
        if core is not None:
            # The client's close frame may be processed after TLS already closed the stream.
            received = stream.ws.protocol.close_rcvd if stream.ws is not None else None
            if received is not None and not core.closed:
                core.client_closed(now, None if received.code == 1005 else received.code,
                                   received.reason)
            core.connection_lost(now, stream.lost_how or "eof")
            self.core.forget_connection(stream.conn_id)
        elif stream.lost_how != "rejected":
            self.trace.record(KIND_CONN_CLOSE, ts=now, conn=stream.conn_id, by="network",
                              code=None, reason="before WebSocket upgrade",
                              how=stream.lost_how or "timeout")
        else:
            self.trace.record(KIND_CONN_CLOSE, ts=now, conn=stream.conn_id, by="server",
                              code=None, reason="upgrade rejected", how="no_close_frame")
        # The WebSocket connection and its stream refer to each other: a cycle that only the
        # cyclic GC frees, and a server process runs its full collections rarely
        # (tune_gc_for_a_server_process), so every closed connection's ~80 objects (socket,
        # buffers, parser) stayed. Broken here, the connection is freed as its tasks end.
        stream.ws = None  # (websockets' own cycles: GatewayWSConnection.recv_events)


async def _send_close(ws: ServerConnection, code: int | None, reason: str) -> None:
    """Send the close frame, then wait for the closing handshake (at most close_timeout)."""
    if code is not None:
        await ws.aclose(code, reason)
        return
    try:
        async with ws.send_context():
            ws.protocol.send_close()
    except ConnectionClosed:
        pass

