"""The in-memory network: refusal, FIN, RST, backpressure, all under a MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from harness.faults.memnet import MemoryNetwork, abort_stream, close_stream


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_connect_refused_when_nothing_listens(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    with pytest.raises(ConnectionRefusedError):
        await net.connect("gateway:443")
    listener = net.listen("gateway:443")
    await listener.aclose()
    with pytest.raises(ConnectionRefusedError):
        await net.connect("gateway:443")


async def test_echo_and_fin(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    listener = net.listen("localhost:0")
    assert listener.port != 0 and listener.address == f"127.0.0.1:{listener.port}"

    async def echo_once() -> None:
        server = await listener.accept()
        data = b""
        while chunk := await server.receive_some(5):
            data += chunk
        await server.send_all(data.upper())
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_once)
        client = await net.connect(listener.address)
        await client.send_all(b"hello world")
        await client.send_eof()
        got = b""
        while chunk := await client.receive_some():
            got += chunk
        assert got == b"HELLO WORLD"
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")  # we sent EOF
        await client.aclose()


async def test_abort_is_seen_as_reset_then_eof(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    listener = net.listen("gw:1")
    client = await net.connect("gw:1")
    server = await listener.accept()
    await client.send_all(b"unread")
    results: list[object] = []

    async def read_blocked() -> None:
        try:
            await server.receive_some()
            await server.receive_some()
        except trio.BrokenResourceError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        # drain the unread bytes first so the reader is blocked when the reset arrives
        assert await server.receive_some() == b"unread"
        nursery.start_soon(read_blocked)
        await trio.sleep(1)
        abort_stream(client)
    assert len(results) == 1
    assert await server.receive_some() == b""  # after ECONNRESET, EOF
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"late")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()
    await close_stream(client, reset=True)  # idempotent


async def test_delivered_bytes_are_readable_before_the_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    listener = net.listen("gw:6")
    client = await net.connect("gw:6")
    server = await listener.accept()
    await client.send_all(b"CLIENT HELLO")
    client.abort()
    assert await server.receive_some() == b"CLIENT HELLO"  # as Linux does
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()


async def test_backpressure_blocks_writer_until_reader_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(buffer_size=1024)
    listener = net.listen("gw:2")
    client = await net.connect("gw:2")
    server = await listener.accept()
    done = trio.Event()

    async def write_big() -> None:
        await client.send_all(b"x" * 5000)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_big)
        await trio.sleep(10)
        assert not done.is_set()  # 5000 bytes do not fit a 1024-byte buffer
        received = 0
        while received < 5000:
            received += len(await server.receive_some(700))
        await done.wait()


async def test_close_breaks_peer_sends_and_wakes_local_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    listener = net.listen("gw:3")
    client = await net.connect("gw:3")
    server = await listener.accept()
    seen: list[type[BaseException]] = []

    async def blocked_receive() -> None:
        try:
            await client.receive_some()
        except trio.ClosedResourceError as exc:
            seen.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_receive)
        await trio.sleep(1)
        await client.aclose()
    assert seen == [trio.ClosedResourceError]
    assert await server.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"to nobody")


async def test_listener_close_resets_unaccepted_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    listener = net.listen("gw:4")
    client = await net.connect("gw:4")
    await listener.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    net.listen("gw:5")
    with pytest.raises(OSError):
        net.listen("gw:5")  # address in use


async def test_abort_stream_sends_rst_on_tcp() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        abort_stream(server)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some()
        assert isinstance(info.value.__cause__, ConnectionResetError)
        await client.aclose()
    await listeners[0].aclose()


class _Steps(trio.abc.Instrument):
    """Counts the scheduling rounds (task steps) of one task: a yield is a new step."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task, self.steps = task, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_memory_io_reads_what_is_there_without_yielding_and_writes_what_fits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """MemoryIO, the proxy's direct I/O on a memory stream (as SocketIO on a socket): a read
    that finds bytes takes no scheduling round (but every YIELD_EVERY+1-th in a row does), and
    send_now writes what the buffer takes and wakes the reader."""
    from harness.faults.memnet import MemoryIO

    net = MemoryNetwork(buffer_size=8)
    listener = net.listen("gw:1")
    client = await net.connect("gw:1")
    server = MemoryIO(await listener.accept())
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    for i in range(MemoryIO.YIELD_EVERY):
        await client.send_all(b"x%d" % i)
        before = steps.steps
        assert await server.receive_some(100) == b"x%d" % i
        assert steps.steps == before  # the read did not yield
    await client.send_all(b"more")
    before = steps.steps
    assert await server.receive_some(100) == b"more"
    assert steps.steps == before + 1  # the YIELD_EVERY+1-th read in a row yielded once
    trio.lowlevel.remove_instrument(steps)
    # A read that finds nothing waits; send_now wakes it without a coroutine.
    back = MemoryIO(client)
    got: list[bytes] = []

    async def read_later() -> None:
        got.append(await back.receive_some(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_later)
        await trio.testing.wait_all_tasks_blocked()
        assert server.send_now(b"pong-pong") == 8  # what the 8-byte buffer takes
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"pong-pon"]


async def test_memory_io_sees_reset_then_eof_and_refuses_writes_after_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from harness.faults.memnet import MemoryIO

    net = MemoryNetwork()
    listener = net.listen("gw:1")
    client = await net.connect("gw:1")
    server = MemoryIO(await listener.accept())
    await client.send_all(b"unread")
    client.abort()
    assert await server.receive_some(100) == b"unread"  # delivered before the reset
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some(100)
    assert await server.receive_some(100) == b""
    with pytest.raises(trio.BrokenResourceError):
        server.send_now(b"x")
