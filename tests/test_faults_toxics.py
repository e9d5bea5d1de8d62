"""Toxic behaviour through the proxy, on memnet under a MockClock (virtual time, exact timings)
and on real loopback TCP (resets observed as ECONNRESET).

Checklist numbers (toxiproxy-spec.md section 9) are given in comments.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from harness.faults.memnet import MemoryNetwork, MemoryStream
from harness.faults.proxy import (
    MemoryTransport,
    Proxy,
    ProxyCollection,
    ProxySpec,
    TcpTransport,
)
from harness.faults.toxics import Forward, LimitDataCore, SlicerCore, Step


def forwarded(steps: list[Step]) -> list[bytes]:
    return [step.data for step in steps if isinstance(step, Forward)]


UPSTREAM = "server:9000"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@dataclass
class Recorder:
    """An upstream that records what arrives (with virtual time) and echoes it back."""

    echo: bool = True
    connections: int = 0
    received: list[tuple[float, bytes]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)  # "eof" | "reset" per connection

    async def serve(self, listener: trio.abc.Listener[MemoryStream]) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return
                self.connections += 1
                nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            while data := await stream.receive_some():
                self.received.append((trio.current_time(), bytes(data)))
                if self.echo:
                    await stream.send_all(data)
            self.ends.append("eof")
        except trio.BrokenResourceError:
            self.ends.append("reset")
        finally:
            await stream.aclose()

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.received)


@dataclass
class World:
    net: MemoryNetwork
    proxy: Proxy
    upstream: Recorder

    async def connect(self) -> MemoryStream:
        return await self.net.connect(self.proxy.listen)


@pytest.fixture
async def world(autojump_clock: trio.testing.MockClock) -> AsyncIterator[World]:
    net = MemoryNetwork()
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.serve, net.listen(UPSTREAM))
        collection = ProxyCollection(nursery, MemoryTransport(net), seed=42)
        proxy = await collection.create(ProxySpec("gw", UPSTREAM, "proxy:0"))
        yield World(net, proxy, recorder)
        await collection.close()
        nursery.cancel_scope.cancel()


async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


async def read_to_end(stream: trio.abc.Stream) -> tuple[bytes, str]:
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trio.BrokenResourceError:
        return data, "reset"
    return data, "eof"


# -- latency -------------------------------------------------------------------------------------


async def test_latency_each_direction_and_both(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 45
    client = await world.connect()
    await client.send_all(b"warm")
    await read_exactly(client, 4)
    world.proxy.add_toxic({"type": "latency", "stream": "upstream", "attributes": {"latency": 100}})
    start = trio.current_time()
    await client.send_all(b"a" * 40000)
    await read_exactly(client, 40000)
    assert world.upstream.received[-1][0] - start == pytest.approx(0.1)
    world.proxy.add_toxic({"type": "latency", "attributes": {"latency": 100}})
    start = trio.current_time()
    await client.send_all(b"ping")
    await read_exactly(client, 4)
    assert trio.current_time() - start == pytest.approx(0.2)


@pytest.mark.parametrize("up_ms,down_ms", [(100, 0), (0, 100), (1000, 100), (100, 1000)])
async def test_latency_bias(
    world: World, autojump_clock: trio.testing.MockClock, up_ms: int, down_ms: int
) -> None:  # 45
    for stream, ms in (("upstream", up_ms), ("downstream", down_ms)):
        if ms:
            world.proxy.add_toxic(
                {"type": "latency", "stream": stream, "attributes": {"latency": ms}}
            )
    client = await world.connect()
    start = trio.current_time()
    await client.send_all(b"line of 32 KiB " * 2200)
    await read_exactly(client, 15 * 2200)
    assert world.upstream.received[0][0] - start == pytest.approx(up_ms / 1000)
    assert trio.current_time() - start == pytest.approx((up_ms + down_ms) / 1000)


async def test_two_latency_toxics_add_up(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 46
    for name in ("one", "two"):
        world.proxy.add_toxic(
            {"name": name, "type": "latency", "stream": "upstream", "attributes": {"latency": 500}}
        )
    client = await world.connect()
    start = trio.current_time()
    await client.send_all(b"x")
    await read_exactly(client, 1)
    assert world.upstream.received[0][0] - start == pytest.approx(1.0)


async def test_latency_does_not_throttle_a_stream(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 47
    world.proxy.add_toxic({"type": "latency", "attributes": {"latency": 100}})
    client = await world.connect()
    total = 1_200_000
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"z" * total)
        await read_exactly(client, total)
    # every chunk is delayed 100 ms from when it was read, concurrently: not 100 ms per chunk
    assert trio.current_time() - start < 0.15


async def test_same_seed_same_jitter(autojump_clock: trio.testing.MockClock) -> None:
    async def delays(seed: int) -> list[float]:
        net = MemoryNetwork()
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.serve, net.listen(UPSTREAM))
            collection = ProxyCollection(nursery, MemoryTransport(net), seed=seed)
            proxy = await collection.create(ProxySpec("gw", UPSTREAM, "proxy:0"))
            proxy.add_toxic({"type": "latency", "attributes": {"latency": 100, "jitter": 50}})
            measured = []
            for _ in range(3):
                client = await net.connect(proxy.listen)
                for _ in range(5):
                    start = trio.current_time()
                    await client.send_all(b"x")
                    await read_exactly(client, 1)
                    measured.append(round(trio.current_time() - start, 6))
                await client.aclose()
            await collection.close()
            nursery.cancel_scope.cancel()
        return measured

    first = await delays(1)
    assert first == await delays(1)
    assert first != await delays(2)
    assert all(0.05 <= d < 0.15 for d in first) and len(set(first)) > 1


# -- bandwidth, slicer, limit_data -------------------------------------------------------------


async def test_bandwidth_paces_and_keeps_data(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 48
    world.proxy.add_toxic({"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 1000}})
    world.upstream.echo = False
    client = await world.connect()
    payload = random.Random(5).randbytes(480_000)
    start = trio.current_time()
    await client.send_all(payload)
    with trio.fail_after(10):
        while len(world.upstream.data) < len(payload):
            await trio.sleep(0.001)
    assert world.upstream.data == payload
    assert world.upstream.received[-1][0] - start == pytest.approx(0.48, abs=0.01)


def test_slicer_core_piece_counts() -> None:  # 49, 50
    data = random.Random(1).randbytes(480_000)
    core = SlicerCore({"average_size": 1024, "size_variation": 512, "delay": 10}, random.Random(1))
    pieces = forwarded(core.on_chunk(data, 0.0, 0.0))
    assert 240 <= len(pieces) <= 720 and b"".join(pieces) == data
    ones = SlicerCore({"average_size": 1, "size_variation": 0, "delay": 10}, random.Random(1))
    one_pieces = forwarded(ones.on_chunk(b"x" * 24, 0.0, 0.0))
    assert one_pieces == [b"x"] * 24


async def test_slicer_delivers_small_pieces(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic(
        {"type": "slicer", "attributes": {"average_size": 4, "size_variation": 2, "delay": 1000}}
    )
    client = await world.connect()
    await client.send_all(b"0123456789abcdefghij" * 5)
    pieces = []
    got = b""
    while len(got) < 100:
        piece = await client.receive_some()
        pieces.append(piece)
        got += piece
    assert got == b"0123456789abcdefghij" * 5
    assert max(len(p) for p in pieces) <= 6 and len(pieces) >= 15


def test_limit_data_core_cases() -> None:  # 51, 52, 53
    def run(limit: int, writes: list[int]) -> tuple[int, bool]:
        core = LimitDataCore({"bytes": limit}, random.Random(0))
        passed, closed = 0, False
        for n in writes:
            steps = core.on_chunk(b"x" * n, 0.0, 0.0)
            passed += sum(len(piece) for piece in forwarded(steps))
            closed = closed or len(forwarded(steps)) < len(steps)
            if closed:
                break
        return passed, closed

    assert run(100, [50]) == (50, False)
    assert run(100, [100]) == (100, True)
    assert run(100, [150]) == (100, True)
    assert run(100, [25, 25, 25, 25]) == (100, True)
    assert run(100, [90, 20]) == (100, True)
    assert run(0, [1]) == (0, True)
    core = LimitDataCore({"bytes": 100}, random.Random(0))
    core.on_chunk(b"x" * 90, 0.0, 0.0)
    core.update({"bytes": 100})  # the count survives an update
    assert forwarded(core.on_chunk(b"y" * 20, 0.0, 0.0)) == [b"y" * 10]


async def test_limit_data_closes_connection(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic({"type": "limit_data", "attributes": {"bytes": 10}})
    client = await world.connect()
    await client.send_all(b"0123456789ABCDEF")
    data, end = await read_to_end(client)
    assert (data, end) == (b"0123456789", "eof")


# -- timeout, reset_peer, slow_close ----------------------------------------------------------


async def test_timeout_swallows_then_closes(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic({"type": "timeout", "stream": "upstream", "attributes": {"timeout": 100}})
    client = await world.connect()
    start = trio.current_time()
    await client.send_all(b"lost")
    data, end = await read_to_end(client)
    assert (data, end) == (b"", "eof")
    assert world.upstream.received == []
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_removing_timeout_zero_closes_connection(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 54, 55
    proxy = world.proxy
    proxy.add_toxic({"type": "latency", "stream": "upstream", "attributes": {"latency": 10}})
    proxy.add_toxic({"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}})
    client = await world.connect()
    for _ in range(5):
        await client.send_all(b"hello")
    await trio.sleep(60)  # timeout 0: nothing happens, ever
    assert world.upstream.received == []
    proxy.remove_toxic("latency_upstream")  # must not hang
    proxy.remove_toxic("timeout_upstream")
    with trio.fail_after(1):
        assert await read_to_end(client) == (b"", "eof")
        while not world.upstream.ends:
            await trio.sleep(0.01)
    assert world.upstream.ends == ["eof"]


async def test_toxicity_zero_then_update(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 56
    world.proxy.add_toxic({"type": "timeout", "toxicity": 0, "attributes": {"timeout": 0}})
    client = await world.connect()
    await client.send_all(b"passes")
    assert await read_exactly(client, 6) == b"passes"
    world.proxy.update_toxic("timeout_downstream", {"toxicity": 1, "attributes": {"timeout": 100}})
    start = trio.current_time()
    await client.send_all(b"swallowed")
    assert await read_to_end(client) == (b"", "eof")
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_reset_peer_resets_client(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 57, 58
    world.proxy.add_toxic({"type": "reset_peer", "stream": "upstream"})
    client = await world.connect()
    await client.send_all(b"hello\n")
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    assert await client.receive_some() == b""
    world.proxy.update_toxic("reset_peer_upstream", {"attributes": {"timeout": 100}})
    second = await world.connect()
    start = trio.current_time()
    await second.send_all(b"x")
    assert (await read_to_end(second))[1] == "reset"
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_reset_peer_downstream_with_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 58
    world.proxy.add_toxic({"type": "reset_peer", "attributes": {"timeout": 100}})
    client = await world.connect()
    start = trio.current_time()
    await client.send_all(b"echo me")  # the echo is the first downstream chunk: it fires
    assert await read_to_end(client) == (b"", "reset")
    assert trio.current_time() - start == pytest.approx(0.1)


async def test_message_then_eof_reaches_upstream(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 37
    world.upstream.echo = False
    client = await world.connect()
    await client.send_all(b"hello ")
    await client.send_all(b"world")
    await client.send_eof()
    with trio.fail_after(1):
        while not world.upstream.ends:
            await trio.sleep(0.01)
    assert (world.upstream.data, world.upstream.ends) == (b"hello world", ["eof"])
    assert await read_to_end(client) == (b"", "eof")


async def test_slow_close_delays_the_close(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic({"type": "slow_close", "attributes": {"delay": 250}})
    world.upstream.echo = False
    client = await world.connect()
    await client.send_all(b"x")
    await trio.sleep(0.01)
    start = trio.current_time()
    await client.send_eof()  # upstream sees EOF, closes; the close reaches us 250 ms later
    assert await read_to_end(client) == (b"", "eof")
    assert trio.current_time() - start == pytest.approx(0.25, abs=0.01)


# -- toxicity rolls and live chain changes ---------------------------------------------------


async def test_toxicity_rolls_are_per_connection_and_seeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def affected(seed: int) -> list[bool]:
        net = MemoryNetwork()
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.serve, net.listen(UPSTREAM))
            collection = ProxyCollection(nursery, MemoryTransport(net), seed=seed)
            proxy = await collection.create(ProxySpec("gw", UPSTREAM, "proxy:0"))
            proxy.add_toxic({"type": "latency", "toxicity": 0.5, "attributes": {"latency": 1000}})
            result = []
            for _ in range(16):
                client = await net.connect(proxy.listen)
                start = trio.current_time()
                await client.send_all(b"x")
                await read_exactly(client, 1)
                result.append(trio.current_time() - start > 0.5)
                await client.aclose()
            await collection.close()
            nursery.cancel_scope.cancel()
        return result

    first = await affected(11)
    assert first == await affected(11)
    assert 0 < sum(first) < 16
    assert first != await affected(12)


async def test_live_add_remove_drops_nothing(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 43, TestNoDataDropped
    client = await world.connect()
    count = 2000
    payload = b"".join(i.to_bytes(2, "big") for i in range(count))

    async def churn() -> None:
        for i in range(40):
            world.proxy.add_toxic(
                {"name": "lat", "type": "latency", "attributes": {"latency": 5 + i % 3}}
            )
            world.proxy.add_toxic(
                {
                    "name": "up",
                    "type": "slicer",
                    "stream": "upstream",
                    "attributes": {"average_size": 3, "delay": 10},
                }
            )
            await trio.sleep(0.003)
            world.proxy.remove_toxic("lat")
            world.proxy.remove_toxic("up")
            await trio.sleep(0.002)

    async def writer() -> None:
        for i in range(count):
            await client.send_all(payload[2 * i : 2 * i + 2])
            if i % 50 == 0:
                await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(churn)
        nursery.start_soon(writer)
        assert await read_exactly(client, len(payload)) == payload


async def test_disable_closes_connections_and_refuses(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:  # 42
    client = await world.connect()
    await client.send_all(b"x")
    await read_exactly(client, 1)
    await world.proxy.stop()
    assert await read_to_end(client) == (b"", "eof")
    with pytest.raises(ConnectionRefusedError):
        await world.connect()


# -- extensions ----------------------------------------------------------------------------------


async def test_reset_after_first_bytes_on_second_connection_only(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic({"type": "reset_after", "attributes": {"bytes": 1, "only_connection": 2}})
    first = await world.connect()
    await first.send_all(b"conn1")
    assert await read_exactly(first, 5) == b"conn1"
    second = await world.connect()
    await second.send_all(b"CLIENT HELLO")
    assert await read_to_end(second) == (b"", "reset")
    with trio.fail_after(1):
        while len(world.upstream.ends) < 1:
            await trio.sleep(0.01)
    assert world.upstream.data.endswith(b"CLIENT HELLO")  # forwarded, then reset
    assert world.upstream.ends == ["reset"]
    third = await world.connect()
    await third.send_all(b"conn3")
    assert await read_exactly(third, 5) == b"conn3"
    assert await read_exactly(first, 0) == b""


async def test_reset_after_zero_bytes_added_live_resets_open_connections_now(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    idle = await world.connect()
    await idle.send_all(b"hi")
    await read_exactly(idle, 2)
    world.proxy.add_toxic({"name": "now", "type": "reset_after", "attributes": {"bytes": 0}})
    with trio.fail_after(1):  # no traffic needed (unlike reset_peer, which waits for a chunk)
        assert await read_to_end(idle) == (b"", "reset")
    world.proxy.remove_toxic("now")
    fresh = await world.connect()
    await fresh.send_all(b"ok")
    assert await read_exactly(fresh, 2) == b"ok"


async def test_reset_after_without_forward_and_fin_mode(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic(
        {"type": "reset_after", "attributes": {"bytes": 4, "mode": "fin", "forward": False}}
    )
    client = await world.connect()
    await client.send_all(b"ab")
    assert await read_exactly(client, 2) == b"ab"
    await client.send_all(b"cdef")  # reaches 4 bytes: dropped, then FIN
    assert await read_to_end(client) == (b"", "eof")
    assert world.upstream.data == b"ab"


async def test_from_connection_targets_later_connections(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    world.proxy.add_toxic({"type": "latency", "attributes": {"latency": 300, "from_connection": 2}})
    timings = []
    for _ in range(3):
        client = await world.connect()
        start = trio.current_time()
        await client.send_all(b"x")
        await read_exactly(client, 1)
        timings.append(round(trio.current_time() - start, 3))
    assert timings == [0.0, 0.3, 0.3]
    assert world.proxy.accepted == 3


async def test_blackhole_is_half_open(world: World, autojump_clock: trio.testing.MockClock) -> None:
    world.proxy.add_toxic({"type": "blackhole", "attributes": {"only_connection": 1}})
    client = await world.connect()
    await client.send_all(b"anyone there?")
    with trio.move_on_after(3600) as waited:
        await client.receive_some()
    assert waited.cancelled_caught  # no answer and no close, for an hour of virtual time
    await client.send_eof()
    with trio.move_on_after(60) as waited_after_fin:
        await client.receive_some()
    assert waited_after_fin.cancelled_caught
    assert world.upstream.connections == 0  # never dialled
    world.proxy.remove_toxic("blackhole_downstream")
    assert await read_to_end(client) == (b"", "eof")
    second = await world.connect()
    await second.send_all(b"ok")
    assert await read_exactly(second, 2) == b"ok"


async def test_blackhole_added_live_silences_both_ways(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    client = await world.connect()
    await client.send_all(b"1")
    await read_exactly(client, 1)
    world.proxy.add_toxic({"type": "blackhole"})
    await client.send_all(b"2")
    with trio.move_on_after(60) as waited:
        await client.receive_some()
    assert waited.cancelled_caught and world.upstream.data == b"1"
    world.proxy.remove_toxic("blackhole_downstream")
    await client.send_all(b"3")
    # What it held goes on first: no hole in the byte stream, as after TCP retransmission.
    with trio.fail_after(60):
        assert await read_exactly(client, 2) == b"23"
    assert world.upstream.data == b"123"


async def test_blackhole_holds_both_directions_and_releases_them_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that talks on its own (like gateway dispatches) while the path is black."""
    net = MemoryNetwork()
    heard: list[bytes] = []

    async def ticker(stream: trio.abc.Stream) -> None:
        async def listen() -> None:
            while data := await stream.receive_some():
                heard.append(bytes(data))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            for tick in range(20):
                await stream.send_all(b"%d," % tick)
                await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, ticker, [net.listen(UPSTREAM)])
        collection = ProxyCollection(nursery, MemoryTransport(net), seed=42)
        proxy = await collection.create(ProxySpec("gw", UPSTREAM, "proxy:0"))
        client = await net.connect(proxy.listen)
        assert await read_exactly(client, 2) == b"0,"
        proxy.add_toxic({"type": "blackhole", "stream": "upstream"})
        await client.send_all(b"heartbeat")
        with trio.move_on_after(0.8) as waited:
            await client.receive_some()
        assert waited.cancelled_caught and heard == []  # nothing either way while present
        proxy.remove_toxic("blackhole_upstream")
        ticks = b"".join(b"%d," % t for t in range(1, 15))
        with trio.fail_after(60):
            received = await read_exactly(client, len(ticks))
        assert received == ticks  # every tick, in order
        with trio.fail_after(1):
            while b"".join(heard) != b"heartbeat":
                await trio.sleep(0.01)
        await collection.close()
        nursery.cancel_scope.cancel()


async def test_blackhole_reads_up_to_its_bound_then_backs_the_sender_up(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    client = await world.connect()
    await client.send_all(b"hi")
    assert await read_exactly(client, 2) == b"hi"  # connected through to the upstream
    world.upstream.echo = False
    world.proxy.add_toxic({"type": "blackhole"})
    # More than the memnet socket buffer (256 KiB): only completes because the blackhole reads.
    first = bytes(range(256)) * 2400  # 600 KiB
    with trio.move_on_after(60) as sending:
        await client.send_all(first)
    assert not sending.cancelled_caught
    rest = b"z" * (3 * 1024 * 1024)
    finished = trio.Event()

    async def send_rest() -> None:
        await client.send_all(rest)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_rest)
        with trio.move_on_after(3600):
            await finished.wait()
        assert not finished.is_set()  # held bytes are bounded: the sender is stalled
        assert world.upstream.data == b"hi"
        world.proxy.remove_toxic("blackhole_downstream")
        with trio.fail_after(3600):
            await finished.wait()
        with trio.fail_after(3600):
            while len(world.upstream.data) < 2 + len(first) + len(rest):
                await trio.sleep(0.1)
    assert world.upstream.data == b"hi" + first + rest


# -- real TCP ------------------------------------------------------------------------------------


async def tcp_echo(listener: trio.SocketListener) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, [listener])


async def _tcp_proxy(nursery: trio.Nursery) -> Proxy:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(tcp_echo, listeners[0])
    collection = ProxyCollection(nursery, TcpTransport(), seed=1)
    return await collection.create(ProxySpec("tcp", f"localhost:{port}", "127.0.0.1:0"))


def _blocking_exchange(listen: str, payload: bytes) -> tuple[bytes, BaseException | None]:
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        try:
            return sock.recv(1000), None
        except OSError as exc:
            return b"", exc


async def test_reset_peer_is_a_real_rst_on_tcp() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            proxy = await _tcp_proxy(nursery)
            proxy.add_toxic({"type": "reset_peer", "stream": "upstream"})
            data, exc = await trio.to_thread.run_sync(_blocking_exchange, proxy.listen, b"hi\n")
            assert isinstance(exc, ConnectionResetError), (data, exc)
            nursery.cancel_scope.cancel()


async def test_reset_after_on_tcp_targets_only_the_reconnect() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            proxy = await _tcp_proxy(nursery)
            proxy.add_toxic(
                {"type": "reset_after", "attributes": {"bytes": 1, "only_connection": 2}}
            )
            first = await trio.to_thread.run_sync(_blocking_exchange, proxy.listen, b"one")
            assert first == (b"one", None)
            _, exc = await trio.to_thread.run_sync(_blocking_exchange, proxy.listen, b"hello")
            assert isinstance(exc, ConnectionResetError)
            third = await trio.to_thread.run_sync(_blocking_exchange, proxy.listen, b"three")
            assert third == (b"three", None)
            nursery.cancel_scope.cancel()


async def test_no_data_dropped_on_tcp_while_toxics_change() -> None:  # TestNoDataDropped
    count = 5000
    payload = b"".join(i.to_bytes(2, "big") for i in range(count))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proxy = await _tcp_proxy(nursery)
            host, port = proxy.listen.rsplit(":", 1)
            client = await trio.open_tcp_stream(host, int(port))

            async def write() -> None:
                for i in range(count):
                    await client.send_all(payload[2 * i : 2 * i + 2])

            async def churn(done: trio.Event) -> None:
                while not done.is_set():
                    proxy.add_toxic(
                        {"name": "lat", "type": "latency", "attributes": {"latency": 2}}
                    )
                    await trio.sleep(0.002)
                    proxy.remove_toxic("lat")
                    await trio.sleep(0.001)

            done = trio.Event()
            nursery.start_soon(write)
            nursery.start_soon(churn, done)
            received = b""
            while len(received) < len(payload):
                chunk = await client.receive_some()
                assert chunk
                received += chunk
            done.set()
            assert received == payload
            nursery.cancel_scope.cancel()


async def test_toxics_between_two_plain_streams(autojump_clock: trio.testing.MockClock) -> None:
    """The transformer on its own: no proxy, no listener, just two stream pairs."""
    from harness.faults.link import ProxiedConnection
    from harness.faults.toxics import build_toxic

    net = MemoryNetwork()
    client_side = net.listen("a:1")
    server_side = net.listen("b:1")
    client = await net.connect("a:1")
    near = await client_side.accept()  # what the client talks to
    far = await net.connect("b:1")  # what the server is reached through
    server = await server_side.accept()
    toxics = [build_toxic({"type": "latency", "attributes": {"latency": 40}})]
    connection = ProxiedConnection(1, near, seed="plain", toxics=lambda: toxics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve, far)
        await client.send_all(b"up")
        assert await server.receive_some() == b"up"
        start = trio.current_time()
        await server.send_all(b"down")
        assert await client.receive_some() == b"down"
        assert trio.current_time() - start == pytest.approx(0.04)
        connection.abort()
    assert (await read_to_end(client))[1] == "reset"
    assert (await read_to_end(server))[1] == "reset"
