"""The trio driver for toxics: a proxied connection between two trio streams.

A ``ProxiedConnection`` joins a client stream and an upstream stream with two ``Link``s
(upstream: client -> server, downstream: server -> client). Each link is a chain

    reader -> stage 1 -> ... -> stage N -> writer

where every stage runs one toxic core (``harness.faults.toxics``) in its own task and stages
are joined by small queues (1024 chunks in front of ``latency`` so it never throttles, one
chunk elsewhere, as in Toxiproxy). Stages can be added, updated and removed while data flows:
those changes are synchronous (no await), so no chunk is lost or reordered.

The same code runs between TCP sockets (the proxy) and between memnet streams (simulation):
time only through trio, randomness only from the ``random.Random`` each stage is given.

Termination follows Toxiproxy: when a link's output ends with a FIN, the writer closes its
destination fully; that makes the other link's reader fail, the other direction drains and
closes the other stream. An ``End("rst")`` resets both streams at once (TCP RST / memnet abort).
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio
from trio.lowlevel import ParkingLot, checkpoint

from harness.faults.memnet import MemoryIO, MemoryStream, abort_stream, close_stream
from harness.faults.toxics import (
    BLACKHOLE_HOLD_LIMIT,
    FIN,
    RST,
    End,
    Forward,
    SilencePeer,
    Sleep,
    Step,
    Toxic,
    ToxicCore,
    WaitUntil,
)

READ_SIZE = 32 * 1024
LATENCY_QUEUE = 1024
UPSTREAM = "upstream"
DOWNSTREAM = "downstream"


@dataclass(frozen=True)
class Chunk:
    data: bytes
    ts: float  # trio time the bytes were read from the source (or became due in a latency toxic)


@dataclass(frozen=True)
class EndOfStream:
    mode: str  # FIN | RST


Item = Chunk | EndOfStream


class ChunkQueue:
    """A FIFO between two pipeline tasks; ``capacity`` only limits producers that wait for room
    (chunks moved by a live chain change are appended regardless)."""

    def __init__(self, capacity: int) -> None:
        self.items: deque[Item] = deque()
        self.capacity = capacity
        self.not_empty = ParkingLot()
        self.not_full = ParkingLot()

    def has_room(self) -> bool:
        return len(self.items) < self.capacity

    def push(self, item: Item) -> None:
        self.items.append(item)
        if self.not_empty:  # (unpark_all with nobody parked still costs a call chain)
            self.not_empty.unpark_all()

    def extend(self, items: Iterable[Item]) -> None:
        self.items.extend(items)
        if self.not_empty:
            self.not_empty.unpark_all()

    def pop(self) -> Item:
        item = self.items.popleft()
        if self.not_full:
            self.not_full.unpark_all()
        return item


def stage_rng(seed: int | str, connection_number: int, toxic_name: str, key: str) -> random.Random:
    """The random source of one toxic on one connection and direction.

    Derived from the proxy seed and stable names (not from a shared stream consumed by
    concurrently scheduled tasks), so the same seed gives the same rolls whatever order trio
    happens to run tasks in.
    """
    return random.Random(f"{seed}/{connection_number}/{toxic_name}/{key}")


def roll_applies(toxic: Toxic, seed: int | str, connection_number: int, key: str) -> bool:
    """The first toxicity roll of a stage (also used to decide a blackhole at accept time)."""
    if not toxic.targets(connection_number):
        return False
    return stage_rng(seed, connection_number, toxic.name, key).random() < toxic.toxicity


class Stage:
    """One toxic on one link: its core, its toxicity roll, its input queue and pending steps."""

    def __init__(
        self, toxic: Toxic, seed: int | str, connection_number: int, direction: str
    ) -> None:
        self.toxic = toxic
        self.connection_number = connection_number
        self.rng = stage_rng(seed, connection_number, toxic.name, toxic.roll_key(direction))
        self.core: ToxicCore = toxic.make_core(self.rng)
        self.active = False
        self.inq = ChunkQueue(LATENCY_QUEUE if toxic.type.name == "latency" else 1)
        self.pending: deque[Step] = deque()
        self.ended = False  # emitted End: drops whatever else arrives
        self.saw_end = False  # end-of-stream reached this stage (a blackhole swallows it)
        self.removed = False
        self.scope: trio.CancelScope | None = None

    @property
    def targeted(self) -> bool:
        return self.toxic.targets(self.connection_number)

    def restart(self, now: float) -> None:
        """(Re)start: roll toxicity (only for targeted connections) and let the core start."""
        roll = self.rng.random()
        self.active = self.targeted and roll < self.toxic.toxicity
        if self.active:
            self.pending.extend(self.core.on_start(now))

    def interrupt(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


_READER = object()  # position of the reader in a link (before stage 1)


class SocketIO:
    """Direct non-blocking reads and writes on a trio ``SocketStream``'s descriptor.

    trio's stream methods cost several scheduler passes per call (checkpoint, try, wait, retry,
    checkpoint); the proxy's hot path only needs one wait when nothing is ready, which roughly
    halves its added latency (bench/bench_proxy.py). Closing the socket from another task wakes
    a waiter with ``trio.ClosedResourceError``, exactly as with the stream methods.
    """

    YIELD_EVERY = 8  # reads that found data at once before we yield anyway (fairness)

    def __init__(self, stream: trio.SocketStream) -> None:
        self.sock = stream.socket
        self._eager_reads = 0

    def _fd(self) -> int:
        fd = self.sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was closed")
        return fd

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._eager_reads >= self.YIELD_EVERY:
            self._eager_reads = 0
            await checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = os.read(self._fd(), max_bytes)
            except BlockingIOError:
                self._eager_reads = 0
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            self._eager_reads += 1
            return data

    def send_now(self, data: bytes | bytearray) -> int:
        """Write what the socket takes without waiting; the number of bytes written."""
        try:
            return os.write(self._fd(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fd(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            view = view[sent:]


class _StreamIO:
    """The generic path: any other trio stream (TLS, ...)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.receive_some = stream.receive_some
        self.send_all = stream.send_all

    def send_now(self, data: bytes | bytearray) -> int:
        """Nothing is written without a coroutine here: ``send_all`` writes it all."""
        return 0


def stream_io(stream: trio.abc.Stream) -> SocketIO | MemoryIO | _StreamIO:
    if type(stream) is trio.SocketStream:
        return SocketIO(stream)
    if type(stream) is MemoryStream:  # the simulation's network
        return MemoryIO(stream)
    return _StreamIO(stream)


class Link:
    """One direction of a proxied connection."""

    def __init__(
        self,
        connection: ProxiedConnection,
        direction: str,
        source: trio.abc.Stream,
        dest: trio.abc.Stream,
    ) -> None:
        self.connection = connection
        self.direction = direction
        self.source = source
        self.dest = dest
        self._source_io = stream_io(source)
        self._dest_io = stream_io(dest)
        self.stages: list[Stage] = []
        self.out = ChunkQueue(1)
        self.finished = False
        self.silenced = False  # deliver nothing more (see SilencePeer)
        self.received_bytes = 0  # read from the source
        self.sent_bytes = 0  # written to the destination
        self.write_failed = False
        self._sending = False  # someone (writer, or the reader on the fast path) is writing
        self._send_done = ParkingLot()
        self._nursery: trio.Nursery | None = None

    # -- wiring ----------------------------------------------------------------------------------
    def _queue_after(self, position: object) -> ChunkQueue:
        if position is _READER:
            index = 0
        else:
            assert isinstance(position, Stage)
            index = self.stages.index(position) + 1
        return self.stages[index].inq if index < len(self.stages) else self.out

    async def _wait_room_after(self, position: object) -> ChunkQueue:
        """Wait until the queue after ``position`` has room; returns it (use it before awaiting)."""
        while True:
            queue = self._queue_after(position)
            if queue.has_room():
                return queue
            await queue.not_full.park()

    def _flush_pending(self, stage: Stage, *, include_end: bool = True) -> list[Item]:
        """Take a stage's pending output now, skipping its waits (Toxiproxy's interrupt)."""
        items: list[Item] = []
        for step in stage.pending:
            if isinstance(step, Forward):
                items.append(Chunk(step.data, step.ts))
            elif isinstance(step, End) and include_end:
                items.append(EndOfStream(step.mode))
        stage.pending.clear()
        return items

    # -- live chain changes (synchronous) --------------------------------------------------------
    def add_stage(self, stage: Stage) -> None:
        if self.finished or self._nursery is None:
            return
        self.stages.append(stage)
        stage.restart(trio.current_time())
        self.out.not_full.unpark_all()  # the previous last producer now feeds the new stage
        self._nursery.start_soon(self._run_stage, stage)

    def update_stage(self, toxic: Toxic) -> None:
        for stage in self.stages:
            if stage.toxic is toxic:
                self._queue_after(stage).extend(self._flush_pending(stage))
                stage.core.update(dict(toxic.attributes))
                stage.restart(trio.current_time())
                stage.interrupt()

    def remove_stage(self, toxic: Toxic) -> None:
        for stage in list(self.stages):
            if stage.toxic is not toxic:
                continue
            after = self._queue_after(stage)
            if toxic.type.closes_on_removal and stage.targeted and not stage.ended:
                moved: list[Item] = [EndOfStream(FIN)]  # Toxiproxy's timeout cleanup
                stage.pending.clear()
            else:
                stage.pending.extendleft(reversed(stage.core.release()))
                moved = self._flush_pending(stage) + list(stage.inq.items)
                if (
                    stage.saw_end
                    and not stage.ended
                    and not any(isinstance(item, EndOfStream) for item in moved)
                ):
                    moved.append(EndOfStream(FIN))  # it swallowed end-of-stream: pass it on
            stage.inq.items.clear()
            self.stages.remove(stage)
            stage.removed = True
            stage.interrupt()
            after.extend(moved)
            stage.inq.not_full.unpark_all()  # producers re-resolve their target queue
            after.not_full.unpark_all()

    # -- tasks -----------------------------------------------------------------------------------
    async def run(self, stages: list[Stage]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                now = trio.current_time()
                for stage in stages:
                    self.stages.append(stage)
                    stage.restart(now)
                    nursery.start_soon(self._run_stage, stage)
                nursery.start_soon(self._run_reader)
                await self._run_writer()
            finally:
                self._nursery = None  # closing: live toxic changes no longer apply here
                self.finished = True
                self.connection.link_done(self)
            nursery.cancel_scope.cancel()

    async def _push(self, position: object, item: Item) -> None:
        queue = await self._wait_room_after(position)
        queue.push(item)

    async def _run_reader(self) -> None:
        try:
            while True:
                data = await self._source_io.receive_some(READ_SIZE)
                if not data:
                    break
                self.received_bytes += len(data)
                if self.silenced:
                    continue
                if self.stages or self.out.items or self._sending or self.finished:
                    await self._push(_READER, Chunk(bytes(data), trio.current_time()))
                elif not await self._send_directly(data):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await self._push(_READER, EndOfStream(FIN))

    async def _send_directly(self, data: bytes | bytearray) -> bool:
        """Fast path with no toxics and nothing queued: the reader writes itself, saving two
        task switches per chunk. The writer waits for it (``_sending``), so order is kept when
        a toxic is added meanwhile. False if the destination is gone."""
        self._sending = True
        try:
            io = self._dest_io
            # Most chunks fit the socket at once: written here, without a coroutine for it.
            sent = io.send_now(data)
            if sent < len(data):
                await io.send_all(memoryview(data)[sent:])
            self.sent_bytes += len(data)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.write_failed = True
            return False
        finally:
            self._sending = False
            if self._send_done:  # (the writer waits here only when a toxic came meanwhile)
                self._send_done.unpark_all()

    async def _run_stage(self, stage: Stage) -> None:
        while not stage.removed:
            with trio.CancelScope() as stage.scope:
                await self._advance(stage)
            stage.scope = None

    async def _advance(self, stage: Stage) -> None:
        """Do one step of a stage's work; interruptible at every await."""
        await checkpoint()
        if stage.removed:
            return
        if not stage.pending:
            item = await self._take_input(stage)
            if stage.removed or item is None or stage.ended:
                return
            if isinstance(item, EndOfStream):
                stage.saw_end = True
            now = trio.current_time()
            if not stage.active:
                stage.pending.append(
                    Forward(item.data, item.ts) if isinstance(item, Chunk) else End(item.mode)
                )
            elif isinstance(item, Chunk):
                stage.pending.extend(stage.core.on_chunk(item.data, item.ts, now))
            else:
                stage.pending.extend(stage.core.on_end(item.mode, now))
            return
        step = stage.pending[0]
        if isinstance(step, SilencePeer):
            stage.pending.popleft()
            self.connection.silence_other(self)
            return
        if isinstance(step, Sleep):
            # Relative waits start when the step is reached.
            step = stage.pending[0] = WaitUntil(trio.current_time() + step.seconds)
        if isinstance(step, WaitUntil):
            await trio.sleep_until(step.deadline)
            if stage.pending and stage.pending[0] is step:
                stage.pending.popleft()
            return
        queue = await self._wait_room_after(stage)
        if stage.removed or not stage.pending or stage.pending[0] is not step:
            return  # interrupted while waiting: the pending steps were taken care of
        stage.pending.popleft()
        if isinstance(step, Forward):
            queue.push(Chunk(step.data, step.ts))
        else:
            queue.push(EndOfStream(step.mode))
            stage.ended = True
            stage.pending.clear()

    async def _take_input(self, stage: Stage) -> Item | None:
        """The next input item, or None when the core's idle deadline passed (then it is told)."""
        deadline = stage.core.idle_deadline() if stage.active and not stage.ended else None
        with trio.move_on_at(deadline if deadline is not None else float("inf")):
            while not stage.inq.items:
                await stage.inq.not_empty.park()
            return stage.inq.pop()
        if not stage.removed:
            stage.pending.extend(stage.core.on_idle(trio.current_time()))
        return None

    async def _run_writer(self) -> None:
        mode = FIN
        while True:
            while not self.out.items or self._sending:
                await (self._send_done if self._sending else self.out.not_empty).park()
            item = self.out.pop()
            if isinstance(item, EndOfStream):
                mode = item.mode
                break
            if self.silenced:
                continue
            self._sending = True
            try:
                await self.dest.send_all(item.data)
                self.sent_bytes += len(item.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.write_failed = True
                break
            finally:
                self._sending = False
        self.finished = True
        await self.connection.link_ended(self, mode)


class ProxiedConnection:
    """A client connection and its upstream, joined by two links with the proxy's toxics.

    ``number`` is the proxy's 1-based accept counter (``only_connection``/``from_connection``).
    """

    def __init__(
        self,
        number: int,
        client: trio.abc.Stream,
        seed: int | str,
        toxics: Callable[[], list[Toxic]],
        on_link_done: Callable[[Link], None] | None = None,
    ) -> None:
        self.number = number
        self._on_link_done = on_link_done
        self.client = client
        self.upstream: trio.abc.Stream | None = None
        self.seed = seed
        self._toxics = toxics
        self.links: dict[str, Link] = {}
        self.reset = False
        self.closed = trio.Event()
        self._scope = trio.CancelScope()

    def _stages_for(self, direction: str) -> list[Stage]:
        return [
            Stage(toxic, self.seed, self.number, direction)
            for toxic in self._toxics()
            if toxic.applies_to_direction(direction)
        ]

    def blackholed(self) -> bool:
        """A blackhole toxic applies to this connection from its start: never dial upstream."""
        return any(
            toxic.type.name == "blackhole" and roll_applies(toxic, self.seed, self.number, "both")
            for toxic in self._toxics()
        )

    async def serve(self, upstream: trio.abc.Stream | None) -> None:
        """Pump both directions until the connection ends or ``close()`` is called.

        ``upstream=None`` is a blackholed connection: the client's bytes are read and dropped,
        nothing is answered, and it stays open until closed.
        """
        self.upstream = upstream
        try:
            with self._scope:
                if upstream is None:
                    await self._drain_client_forever()
                    return
                up = Link(self, UPSTREAM, self.client, upstream)
                down = Link(self, DOWNSTREAM, upstream, self.client)
                self.links = {UPSTREAM: up, DOWNSTREAM: down}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(up.run, self._stages_for(UPSTREAM))
                    nursery.start_soon(down.run, self._stages_for(DOWNSTREAM))
        finally:
            with trio.CancelScope(shield=True):
                await close_stream(self.client, reset=self.reset)
                if upstream is not None:
                    await close_stream(upstream, reset=self.reset)
            self.closed.set()

    async def _drain_client_forever(self) -> None:
        """Read (as the blackhole core does, up to its hold limit, then the client backs up)."""
        read = 0
        try:
            while read < BLACKHOLE_HOLD_LIMIT:
                data = await self.client.receive_some(READ_SIZE)
                if not data:
                    break
                read += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.sleep_forever()

    async def link_ended(self, link: Link, mode: str) -> None:
        if mode == RST or self.reset:
            self.abort()
            return
        await close_stream(link.dest)
        if all(other.finished for other in self.links.values()):
            self._scope.cancel()

    def link_done(self, link: Link) -> None:
        """A link stopped (its byte counts are final): tell whoever counts them."""
        if self._on_link_done is not None:
            self._on_link_done(link)

    def silence_other(self, link: Link) -> None:
        for other in self.links.values():
            if other is not link:
                other.silenced = True

    def abort(self) -> None:
        """Reset both sides now (RST on TCP, abort on memnet) and stop pumping."""
        self.reset = True
        abort_stream(self.client)
        if self.upstream is not None:
            abort_stream(self.upstream)
        self._scope.cancel()

    def close(self) -> None:
        """Close both sides (FIN) and stop pumping; ``closed`` is set once done."""
        self._scope.cancel()

    # -- live toxic changes ----------------------------------------------------------------------
    def toxic_added(self, toxic: Toxic) -> None:
        for direction, link in self.links.items():
            if toxic.applies_to_direction(direction):
                link.add_stage(Stage(toxic, self.seed, self.number, direction))

    def toxic_updated(self, toxic: Toxic) -> None:
        for link in self.links.values():
            link.update_stage(toxic)

    def toxic_removed(self, toxic: Toxic) -> None:
        if self.upstream is None and toxic.type.name == "blackhole":
            self.close()  # no upstream was ever dialled: nothing to resume, so close it
            return
        for link in self.links.values():
            link.remove_stage(toxic)
