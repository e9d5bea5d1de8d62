"""An in-memory network for simulation mode: listeners and byte streams addressed like TCP.

``MemoryNetwork.listen("gateway:443")`` returns a ``trio.abc.Listener``; ``await
network.connect("gateway:443")`` returns the client end of a new connection, or raises
``ConnectionRefusedError`` when nothing listens there. Streams model the TCP behaviour the harness
cares about and nothing else:

- bounded per-direction buffers, so a slow reader backs up the writer (like socket buffers);
- ``send_eof()`` is a FIN: the peer reads the buffered bytes, then ``b""``; ``aclose()`` is a FIN
  in our direction and a close of our receiving side (the peer's later sends raise
  ``trio.BrokenResourceError``, as EPIPE/RST would);
- ``abort()`` is a TCP RST: the peer reads what was already delivered, then its next receive
  raises ``trio.BrokenResourceError`` (later receives return ``b""``, as after ECONNRESET on
  Linux); all its sends raise ``trio.BrokenResourceError``.

Nothing here reads a clock or sleeps, so it runs under
``trio.testing.MockClock(autojump_threshold=0)``.
``abort_stream(stream)`` resets any stream the harness uses: a memnet stream, a trio
``SocketStream`` (SO_LINGER 0 then close, a real RST) or a ``trio.SSLStream`` over either.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from collections.abc import Callable

import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

DEFAULT_BUFFER_SIZE = 256 * 1024
DEFAULT_BACKLOG = 128
FIRST_EPHEMERAL_PORT = 40000


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"``, ``"[::1]:port"`` or ``(host, port)`` -> ``(host, port)``.

    Raises ValueError (message like Go's ``missing port in address``) when it cannot be parsed.
    """
    if isinstance(address, tuple):
        host, port = address
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.removeprefix("-").isdigit():
            raise ValueError(f"address {address}: missing port in address")
        port = int(port_text)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"address {port}: invalid port")  # Go names only the port here
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normalize_host(host: str) -> str:
    host = host.lower()
    return "127.0.0.1" if host in ("localhost", "") else host


class _Waiters:
    """The tasks waiting on one side of a pipe: ``trio.lowlevel.ParkingLot``'s ``park`` and
    ``unpark_all`` (first parked, first rescheduled), with less per call. Every hop of every
    simulated frame wakes a reader through one of these, and it is almost always one task."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[Task, None] = {}

    def __bool__(self) -> bool:
        return bool(self._tasks)

    async def park(self) -> None:
        task = current_task()
        tasks = self._tasks
        tasks[task] = None

        def abort(_: object) -> Abort:
            del tasks[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def unpark_all(self) -> None:
        tasks = self._tasks
        if tasks:
            self._tasks = {}
            for task in tasks:
                reschedule(task)


class _Pipe:
    """One direction of a connection: bytes written by one end and read by the other."""

    def __init__(self, capacity: int) -> None:
        self.buffer = bytearray()
        self.capacity = capacity
        self.eof = False  # the writer sent FIN
        self.reset = False  # RST: the reader's next receive raises, later ones see EOF
        self.reset_reported = False
        self.reader_gone = False  # the reader closed its end; further writes break
        self.readable = _Waiters()
        self.writable = _Waiters()

    def wake_all(self) -> None:
        self.readable.unpark_all()
        self.writable.unpark_all()

    def take(self, max_bytes: int | None) -> bytes | None:
        """What a read gets now: up to ``max_bytes`` buffered bytes, or b"" at EOF (and after
        the reset was reported); None if it must wait. Raises the reset once."""
        buffer = self.buffer
        if buffer:
            if max_bytes is None or max_bytes >= len(buffer):
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[:max_bytes])
                del buffer[:max_bytes]
            if self.writable:
                self.writable.unpark_all()
            return data
        if self.reset:
            if not self.reset_reported:
                self.reset_reported = True
                raise trio.BrokenResourceError("connection reset by peer")
            return b""
        return b"" if self.eof else None


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection. ``abort()`` resets it (the peer sees a RST)."""

    def __init__(
        self, outgoing: _Pipe, incoming: _Pipe, local_address: str, peer_address: str
    ) -> None:
        self._out = outgoing
        self._in = incoming
        self.local_address = local_address
        self.peer_address = peer_address
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False

    # -- sending ---------------------------------------------------------------------------------
    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("stream is closed for sending")
        if self._out.reset or self._out.reader_gone:
            raise trio.BrokenResourceError("connection reset by peer")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            # As trio's SocketStream: write first, then yield (the peer can read in the very
            # next scheduling round); wait only when the buffer is full.
            await checkpoint_if_cancelled()
            out = self._out
            self._check_send()
            if not isinstance(data, memoryview) and 0 < len(data) <= out.capacity - len(out.buffer):
                out.buffer += data  # it all fits: the common case, no view and no loop
                if out.readable:
                    out.readable.unpark_all()
                await cancel_shielded_checkpoint()
                return
            view = memoryview(data).cast("B")
            sent = 0
            waited = False
            while True:
                self._check_send()
                if sent >= len(view):
                    break
                room = out.capacity - len(out.buffer)
                if room > 0:
                    piece = view[sent : sent + room]
                    out.buffer += piece
                    sent += len(piece)
                    if out.readable:
                        out.readable.unpark_all()
                    continue
                waited = True
                await out.writable.park()
            if not waited:
                await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await checkpoint()
        while True:
            self._check_send()
            if len(self._out.buffer) < self._out.capacity:
                return
            await self._out.writable.park()

    async def send_eof(self) -> None:
        await checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if not self._eof_sent:
            self._eof_sent = True
            self._out.eof = True
            self._out.wake_all()

    # -- receiving -------------------------------------------------------------------------------
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            # As trio's SocketStream: take what is there, then yield; or wait for it (the
            # wait is the checkpoint), rather than yield and then wait too.
            await checkpoint_if_cancelled()
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream is closed")
                got = self._in.take(max_bytes)
                if got is not None:
                    break
                waited = True
                await self._in.readable.park()
            if not waited:
                await cancel_shielded_checkpoint()
            return got
        finally:
            self._receiving = False

    # -- closing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Synchronous graceful close: FIN to the peer, our receiving side goes away."""
        if self._closed:
            return
        self._closed = True
        self._out.eof = True
        self._in.reader_gone = True
        self._in.buffer.clear()
        self._out.wake_all()
        self._in.wake_all()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()

    def abort(self) -> None:
        """Reset the connection (TCP RST): once the peer has read what was already delivered,
        its next receive raises ``trio.BrokenResourceError``; its sends raise it at once."""
        if self._closed:
            return  # already closed or reset: nothing left to reset
        self._closed = True
        # Bytes already delivered to the peer stay readable before the reset (as on Linux);
        # whatever the peer sent us and we did not read is gone.
        self._in.buffer.clear()
        for pipe in (self._out, self._in):
            pipe.wake_all()
        self._out.reset = True
        self._in.reader_gone = True
        self._in.reset = True
        self._in.reset_reported = True  # we are the one resetting; nothing to report to us

    @property
    def closed(self) -> bool:
        return self._closed



class MemoryIO:
    """The proxy's direct I/O on a ``MemoryStream``, as ``harness.faults.link.SocketIO`` is on
    a socket (for ``harness.faults.link.stream_io``): a read that finds bytes takes them
    without yielding (and yields anyway after ``YIELD_EVERY`` such reads in a row, for
    fairness), a read that finds none waits, and ``send_now`` writes what the buffer takes
    without a coroutine. ``MemoryStream``'s own methods yield after every read and write, as
    trio's ``SocketStream`` does; the proxy's socket path does not, so in simulation it took
    two scheduling rounds per chunk where on sockets it takes one."""

    YIELD_EVERY = 8

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream
        self.send_all = stream.send_all
        self._eager_reads = 0

    async def receive_some(self, max_bytes: int) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        stream = self.stream
        if self._eager_reads >= self.YIELD_EVERY:
            self._eager_reads = 0
            await checkpoint()
        else:
            await checkpoint_if_cancelled()
        if stream._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        stream._receiving = True
        try:
            while True:
                if stream._closed:
                    raise trio.ClosedResourceError("stream is closed")
                got = stream._in.take(max_bytes)
                if got:
                    self._eager_reads += 1
                if got is not None:
                    return got
                self._eager_reads = 0
                await stream._in.readable.park()
        finally:
            stream._receiving = False

    def send_now(self, data: bytes | bytearray) -> int:
        """Write what the buffer takes without waiting; the number of bytes written."""
        stream = self.stream
        if stream._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        stream._check_send()
        out = stream._out
        n = min(len(data), out.capacity - len(out.buffer))
        if n > 0:
            out.buffer += data if n == len(data) else memoryview(data)[:n]
            if out.readable:
                out.readable.unpark_all()
        return n


class MemoryListener(trio.abc.Listener[MemoryStream]):
    """Accepts connections made with ``MemoryNetwork.connect`` to its address."""

    def __init__(self, network: MemoryNetwork, host: str, port: int, backlog: int) -> None:
        self._network = network
        self.host = host
        self.port = port
        self.address = format_address(host, port)
        self._pending: deque[MemoryStream] = deque()
        self._backlog = backlog
        self._arrived = ParkingLot()
        self._closed = False
        self._accepting = False

    def _enqueue(self, stream: MemoryStream) -> bool:
        if self._closed or len(self._pending) >= self._backlog:
            return False
        self._pending.append(stream)
        self._arrived.unpark_all()
        return True

    async def accept(self) -> MemoryStream:
        if self._accepting:
            raise trio.BusyResourceError("another task is accepting on this listener")
        self._accepting = True
        try:
            await checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("listener is closed")
                if self._pending:
                    return self._pending.popleft()
                await self._arrived.park()
        finally:
            self._accepting = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network._unregister(self)
        # Like a TCP listening socket closed with connections still in its backlog: reset them.
        while self._pending:
            self._pending.popleft().abort()
        self._arrived.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed


class MemoryNetwork:
    """A set of in-memory listeners addressed by ``host:port``; ``connect`` opens streams to them.

    ``localhost`` means ``127.0.0.1``. Port 0 in ``listen`` picks a free port (see
    ``listener.address`` / ``listener.port``). ``buffer_size`` is the per-direction buffer
    (socket-buffer analogue) of every connection.
    """

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        self.buffer_size = buffer_size
        self._listeners: dict[tuple[str, int], MemoryListener] = {}
        self._next_port = FIRST_EPHEMERAL_PORT
        self._used_ports: set[tuple[str, int]] = set()
        self._on_connect: list[Callable[[MemoryStream, MemoryStream], None]] = []

    def _allocate_port(self, host: str) -> int:
        while (host, self._next_port) in self._listeners or (
            host,
            self._next_port,
        ) in self._used_ports:
            self._next_port += 1
        port = self._next_port
        self._next_port += 1
        return port

    def listen(
        self, address: str | tuple[str, int], *, backlog: int = DEFAULT_BACKLOG
    ) -> MemoryListener:
        """Listen on ``address``; OSError(EADDRINUSE) if something already listens there."""
        host, port = parse_address(address)
        host = _normalize_host(host)
        if port == 0:
            port = self._allocate_port(host)
        key = (host, port)
        if key in self._listeners:
            raise OSError(errno.EADDRINUSE, f"listen {format_address(host, port)}: address in use")
        listener = MemoryListener(self, host, port, backlog)
        self._listeners[key] = listener
        return listener

    def _unregister(self, listener: MemoryListener) -> None:
        key = (listener.host, listener.port)
        if self._listeners.get(key) is listener:
            del self._listeners[key]

    def is_listening(self, address: str | tuple[str, int]) -> bool:
        host, port = parse_address(address)
        return (_normalize_host(host), port) in self._listeners

    async def connect(self, address: str | tuple[str, int]) -> MemoryStream:
        """Open a connection; ``ConnectionRefusedError`` when nothing listens at ``address``."""
        await checkpoint()
        host, port = parse_address(address)
        host = _normalize_host(host)
        listener = self._listeners.get((host, port))
        if listener is None:
            raise ConnectionRefusedError(
                111, f"connect {format_address(host, port)}: connection refused"
            )
        client_port = self._allocate_port("127.0.0.1")
        client_address = format_address("127.0.0.1", client_port)
        up = _Pipe(self.buffer_size)  # client -> server
        down = _Pipe(self.buffer_size)  # server -> client
        client = MemoryStream(up, down, client_address, listener.address)
        server = MemoryStream(down, up, listener.address, client_address)
        if not listener._enqueue(server):
            raise ConnectionRefusedError(
                111, f"connect {listener.address}: connection refused (backlog full)"
            )
        for hook in self._on_connect:
            hook(client, server)
        return client

    async def open_stream(self, host: str, port: int) -> MemoryStream:
        """``open_stream(host, port)`` form of ``connect`` (what the reference client injects)."""
        return await self.connect((host, port))

    def on_connect(self, hook: Callable[[MemoryStream, MemoryStream], None]) -> None:
        """Call ``hook(client_end, server_end)`` for every new connection (for observers)."""
        self._on_connect.append(hook)


def _underlying_socket_stream(stream: trio.abc.Stream) -> trio.abc.Stream:
    """Walk down through SSLStream-style wrappers to the transport stream."""
    seen = 0
    while isinstance(stream, trio.SSLStream) and seen < 8:
        stream = stream.transport_stream
        seen += 1
    return stream


def abort_stream(stream: trio.abc.Stream) -> None:
    """Reset a connection now (TCP RST on sockets, ``abort()`` on memnet streams).

    Synchronous and idempotent; safe to call while other tasks are blocked on the stream (they
    get ``trio.ClosedResourceError``).
    """
    inner = _underlying_socket_stream(stream)
    if isinstance(inner, MemoryStream):
        inner.abort()
        return
    if isinstance(inner, trio.SocketStream):
        sock = inner.socket
        try:
            if sock.fileno() != -1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # SocketStream.aclose is close() + a checkpoint; close the socket synchronously.
        sock.close()
        return
    abort = getattr(inner, "abort", None)
    if callable(abort):
        abort()
        return
    raise TypeError(f"cannot reset a {type(inner).__name__}")


async def close_stream(stream: trio.abc.Stream, *, reset: bool = False) -> None:
    """Close a stream: a FIN, or with ``reset=True`` an RST. Never raises for a dead peer."""
    if reset:
        abort_stream(stream)
        await checkpoint()
        return
    try:
        await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
