"""A long-running gateway holds what it needs, not what it served (issue 17 item 7).

`gateway-harness serve` ran for hours and grew with every closed connection: each one's
WebSocket connection, stream, socket and buffers waited for a full cyclic garbage collection
(which a server process runs rarely), and every session it ever made stayed in its store. These
tests count what the gateway still holds after many closed connections over real loopback TCP
(plain and TLS): never a wall-clock bound or an RSS figure (bench/bench_serve_memory.py
measures RSS).
"""

from __future__ import annotations

import gc
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway
from fake_gateway.protocol import ConnectionCore
from fake_gateway.server import FakeGateway, GatewayWSConnection, TappedStream
from fake_gateway.sessions import Session
from fake_gateway.testing import raw_client, start_gateway

TOKEN = GatewayConfig().token
ROUNDS = 3
PER_ROUND = 8  # connections of each kind per round
PER_CONNECTION = (GatewayWSConnection, TappedStream, ServerProtocol, ConnectionCore)


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """What a server process does most of the time: its full collections are rare
    (`tune_gc_for_a_server_process`). Whatever is freed here is freed by reference counting."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def held() -> Counter[str]:
    """The gateway-side objects of a connection (open, or closed and not yet freed) and the
    sessions, alive or only waiting for a collection (gc.get_objects lists both)."""
    kinds = {*PER_CONNECTION, Session}  # exact types (isinstance fails on a dead weak proxy)
    return Counter(type(o).__name__ for o in gc.get_objects() if type(o) in kinds)


async def settled(gateway: FakeGateway) -> Counter[str]:
    """Wait until no connection is open and none is still being taken down; what is held then.
    A closed connection's objects go as its tasks end, a few scheduling rounds after TCP."""
    while gateway.connections or gateway._links:
        await trio.sleep(0.01)
    for _ in range(500):  # typically 1-3 rounds; on the old code it never settled
        now = held()
        if not now["GatewayWSConnection"] and not now["ServerProtocol"]:
            break
        await trio.sleep(0.01)
    return now


async def one_of_each(gateway: FakeGateway, urls: OpenedGateway, ca: str | None) -> None:
    """Six connections, each ending a different way."""
    url = urls.gateway_url
    async with raw_client(url, ca_file=ca) as client:  # a session, left resumable
        await client.recv_op(10)
        await client.identify(TOKEN)
        await client.close(4000)
    async with raw_client(url, ca_file=ca) as client:  # a heartbeat, then a clean close
        await client.recv_op(10)
        await client.heartbeat(None)
        await client.close(1000)
    async with raw_client(url, ca_file=ca) as client:  # not JSON: the server closes, 4002
        await client.recv_op(10)
        await client.send("not json")
        assert await client.expect_close() == 4002
    async with raw_client(url, ca_file=ca) as client:  # TCP ends with no close frame
        await client.recv_op(10)
        await trio.aclose_forcefully(client.ws.stream)
        with pytest.raises(ConnectionClosed):
            await client.ws.recv()
    async with raw_client(url, ca_file=ca) as client:  # the client resets TCP
        await client.recv_op(10)
        stream = client.ws.stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        assert isinstance(tcp, trio.SocketStream)
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(tcp)
        with pytest.raises(ConnectionClosed):
            await client.ws.recv()
    async with raw_client(url, ca_file=ca) as client:  # the gateway resets TCP (a control)
        await client.recv_op(10)
        gateway.controls.apply("reset", max(gateway.connections))
        with pytest.raises(ConnectionClosed):
            await client.ws.recv()


Start = Callable[..., Awaitable[tuple[FakeGateway, OpenedGateway]]]


@pytest.fixture
async def start(nursery: trio.Nursery) -> AsyncIterator[Start]:
    async def start(**overrides: Any) -> tuple[FakeGateway, OpenedGateway]:
        return await start_gateway(nursery, **{
            "heartbeat_interval_ms": 1000, "max_concurrency": 1, "identify_window": 0.0,
            "guilds": 2, **overrides})

    yield start


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_closed_connections_are_freed_without_a_cyclic_collection(
        start: Start, tls: bool) -> None:
    """Each closed connection's gateway-side objects go as it closes (they waited for a full
    collection: about 80 objects per connection with its socket and buffers), round after
    round: what is held returns to the same count."""
    gateway, urls = await start(tls=tls, session_ttl=3600.0)
    ca = str(urls.tls.ca_file) if urls.tls is not None else None
    rounds = []
    with no_cyclic_gc():
        for _ in range(ROUNDS):
            for _ in range(PER_ROUND):
                await one_of_each(gateway, urls, ca)
            rounds.append(await settled(gateway))
    per_connection = [{t.__name__: counted[t.__name__] for t in PER_CONNECTION}
                      for counted in rounds]
    assert per_connection == [per_connection[0]] * ROUNDS, rounds
    # At most the last stream each listener accepted (trio's accept loop holds it until the
    # next one), and not its WebSocket connection.
    assert all(n <= len(urls.listeners) for n in per_connection[0].values()), rounds
    assert per_connection[0]["GatewayWSConnection"] == 0, rounds
    # The sessions left resumable (TTL an hour) are all still there: nothing was dropped early.
    assert [counted["Session"] for counted in rounds] == [
        PER_ROUND * (r + 1) for r in range(ROUNDS)]
    assert all(s.alive and s.conn_id is None for s in gateway.sessions.values())


async def resume_answer(urls: OpenedGateway, session_id: str, seq: int) -> Any:
    """What a RESUME of this session gets: op 9's d, or the close code."""
    async with raw_client(urls.listeners["resume"].url(urls.scheme)) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, seq)
        try:
            payload = await client.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        assert payload["op"] == 9, payload
        return ("op 9", payload["d"])


async def test_ended_sessions_are_forgotten_beyond_a_fixed_number(start: Start) -> None:
    """Sessions that can no longer be resumed (expired after the TTL, or ended by a 1000
    close) are kept only up to `ended_kept`, the latest; before, every session the gateway ever
    made stayed. The latest expired one still answers a RESUME as it ended (4009 here); a
    forgotten one gets op 9, as an unknown session does."""
    gateway, urls = await start(session_ttl=0.05, expired_resume_response="close_4009")
    store = gateway.core.sessions
    kept = store.ended_kept = 5
    made: list[str] = []
    sizes = []
    for _ in range(ROUNDS):
        for index in range(PER_ROUND):
            async with raw_client(urls.gateway_url) as client:
                await client.recv_op(10)
                ready = await client.identify(TOKEN)
                made.append(ready["d"]["session_id"])
                await client.close(4000 if index % 2 else 1000)  # expires later / ends now
        while gateway.connections or any(s.alive for s in gateway.sessions.values()):
            await trio.sleep(0.02)
        sizes.append({"sessions": len(gateway.sessions), "connections": len(gateway.connections),
                      "links": len(gateway._links)})
    assert sizes == [{"sessions": kept, "connections": 0, "links": 0}] * ROUNDS
    ended = [r["session_id"] for r in gateway.trace.records
             if r["kind"] == "session" and r["event"] in ("expired", "invalidated")]
    assert sorted(ended) == sorted(made)
    assert set(gateway.sessions) == set(ended[-kept:])  # the latest to end are the ones kept
    assert all(not s.alive and not s.buffer for s in gateway.sessions.values())
    latest_expired = next(s for s in reversed(made) if s in gateway.sessions
                          and gateway.sessions[s].state == "expired")
    assert await resume_answer(urls, latest_expired, 1) == 4009
    assert await resume_answer(urls, made[0], 1) == ("op 9", False)
