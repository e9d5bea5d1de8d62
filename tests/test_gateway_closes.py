"""Server-initiated closes reach a client that is still sending (issue 10, part 1).

A close the gateway decides must reach the client as a close frame with its code, and the
closing handshake must finish, even when the client's frames are still arriving: the client's
answering close frame is queued behind them. Real loopback TCP, a raw websockets client.

The gateway waits `close_timeout` (here 60 s) for that answer before it drops TCP; a client
only sees its close code once TCP ends, so a stalled handshake shows as a client that sees no
close within PATIENCE. A handshake that works takes milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.trio.client import connect

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import RawGatewayClient, raw_client, start_gateway

Start = Callable[..., Awaitable[tuple[FakeGateway, OpenedGateway]]]
TOKEN = GatewayConfig().token
CLOSE_TIMEOUT = 60.0
PATIENCE = 10.0  # well under CLOSE_TIMEOUT, far over a working handshake
STILL_SENDING = 30  # frames behind the close: more than websockets queues before it stops reading


@pytest.fixture
def start(nursery: trio.Nursery) -> Start:
    async def start(**overrides: Any) -> tuple[FakeGateway, OpenedGateway]:
        return await start_gateway(nursery, **{
            "heartbeat_interval_ms": 1000, "heartbeat_deadline": False, "max_concurrency": 16,
            "identify_window": 0.0, "guilds": 2, "close_timeout": CLOSE_TIMEOUT, **overrides})

    return start


def identify(**fields: Any) -> dict[str, Any]:
    return {"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}} | fields}


async def ready_session(client: RawGatewayClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """HELLO, IDENTIFY, READY and the two GUILD_CREATEs after it."""
    await client.recv_op(10)
    ready = await client.identify(TOKEN)
    return ready, [await client.recv_op(0) for _ in range(2)]


async def send_at_once(client: RawGatewayClient, frames: list[Any]) -> None:
    """These frames in one TCP write, as a fast client's kernel hands over a burst: all of them
    are at the gateway before it has handled the first."""
    ws = client.ws
    assert ws.protocol.state is State.OPEN  # the client has not taken in a close yet
    async with ws.send_context():
        for frame in frames:
            text = frame if isinstance(frame, str) else json.dumps(frame)
            ws.protocol.send_text(text.encode())


async def read_until_closed(client: RawGatewayClient) -> tuple[list[dict[str, Any]], int | None]:
    """Everything the gateway sends until the connection ends, and the close code it sent."""
    received: list[dict[str, Any]] = []
    try:
        with trio.fail_after(PATIENCE):
            while True:
                received.append(await client.recv(PATIENCE))
    except ConnectionClosed as exc:
        return received, exc.rcvd.code if exc.rcvd is not None else None


def heartbeats(count: int) -> list[dict[str, Any]]:
    return [{"op": 1, "d": None}] * count


# ---- 4008: the reproduction ----------------------------------------------------------


async def test_rate_limit_close_reaches_a_client_still_sending_and_the_session_resumes(
        start: Start) -> None:
    gateway, urls = await start()
    limit = gateway.config.rate_limit_frames
    async with raw_client(urls.gateway_url) as client:
        ready, seen = await ready_session(client)  # IDENTIFY was frame 1 of the budget
        await send_at_once(client, heartbeats(limit + STILL_SENDING))
        received, code = await read_until_closed(client)
    assert code == 4008
    # an ACK for every heartbeat within the budget, nothing after the one that broke it
    assert [p["op"] for p in received] == [11] * (limit - 1)
    # 4008 is resumable: RESUME from READY's seq replays exactly what came after it
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], ready["s"])
        replay = [await client.recv_op(0) for _ in range(len(seen) + 1)]
    assert replay[:-1] == seen
    assert replay[-1]["t"] == "RESUMED" and replay[-1]["s"] == seen[-1]["s"] + 1


# ---- a close decided on a client frame, with more frames behind it ---------------------------


@dataclass(frozen=True)
class FrameCase:
    frame: Callable[[str], Any]  # session_id (of an earlier connection) -> the frame to send
    code: int
    identified: bool = False  # IDENTIFY on this connection first
    resume: bool = False  # connect to the resume listener, with a resumable session elsewhere
    expire: bool = False  # ... expired by the control endpoint first
    overrides: dict[str, Any] = field(default_factory=dict)


FRAME_CASES = [
    pytest.param(FrameCase(lambda _: {"op": 99, "d": None}, 4001), id="4001-unknown-opcode"),
    pytest.param(FrameCase(lambda _: {"op": 1, "d": "x"}, 4001), id="4001-bad-heartbeat"),
    pytest.param(FrameCase(lambda _: "not json", 4002), id="4002-decode-error"),
    pytest.param(FrameCase(lambda _: "x" * 5000, 4002), id="4002-too-big"),
    pytest.param(FrameCase(lambda _: {"op": 3, "d": {}}, 4003), id="4003-not-authenticated"),
    pytest.param(FrameCase(lambda _: identify(token="wrong"), 4004), id="4004-bad-token"),
    pytest.param(FrameCase(lambda _: identify(), 4005, identified=True),
                 id="4005-second-identify"),
    pytest.param(FrameCase(lambda sid: {"op": 6, "d": {"token": TOKEN, "session_id": sid,
                                                       "seq": 999}}, 4007, resume=True),
                 id="4007-bad-seq"),
    pytest.param(FrameCase(lambda sid: {"op": 6, "d": {"token": TOKEN, "session_id": sid,
                                                       "seq": 1}}, 4009, resume=True,
                           expire=True, overrides={"expired_resume_response": "close_4009"}),
                 id="4009-expired"),
    pytest.param(FrameCase(lambda _: identify(shard=[2, 2]), 4010), id="4010-invalid-shard"),
    pytest.param(FrameCase(lambda _: identify(), 4011, overrides={"max_guilds_per_shard": 1}),
                 id="4011-sharding-required"),
    pytest.param(FrameCase(lambda _: identify(intents=1 << 17), 4013), id="4013-invalid-intents"),
    pytest.param(FrameCase(lambda _: identify(intents=1 << 15), 4014,
                           overrides={"allowed_privileged_intents": 0}),
                 id="4014-disallowed-intents"),
]


@pytest.mark.parametrize("case", FRAME_CASES)
async def test_close_for_a_frame_reaches_a_client_still_sending(start: Start,
                                                                 case: FrameCase) -> None:
    gateway, urls = await start(**case.overrides)
    session_id = ""
    if case.resume:
        async with raw_client(urls.gateway_url) as first:
            ready, _ = await ready_session(first)
            await first.close(4000)  # resumable
        session_id = ready["d"]["session_id"]
        with trio.fail_after(PATIENCE):
            while gateway.sessions[session_id].conn_id is not None:
                await trio.sleep(0.01)
        if case.expire:
            gateway.controls.apply("expire_session", "all", session_id=session_id)
    async with raw_client(urls.resume_listener_url if case.resume else urls.gateway_url
                          ) as client:
        if case.identified:
            await ready_session(client)
        else:
            await client.recv_op(10)
        await send_at_once(client, [case.frame(session_id), *heartbeats(STILL_SENDING)])
        received, code = await read_until_closed(client)
    assert code == case.code
    assert all(p["op"] != 11 for p in received)  # nothing answered after the closing frame


# ---- a close decided by a timer, a control or another connection, while the client sends -----


async def _wait_server_close(gateway: FakeGateway, conn_id: int) -> None:
    with trio.fail_after(PATIENCE):
        while not any(r["conn"] == conn_id and r["by"] == "server"
                      for r in gateway.trace.of_kind("conn_close")):
            await trio.sleep(0.01)


async def _control_close(gateway: FakeGateway, urls: OpenedGateway, conn_id: int,
                         **params: Any) -> None:
    gateway.controls.apply("close", conn_id, **params)


async def _reconnect_close_after(gateway: FakeGateway, urls: OpenedGateway, conn_id: int) -> None:
    gateway.controls.apply("reconnect", conn_id, close_after_ms=100)


async def _invalid_session_close(gateway: FakeGateway, urls: OpenedGateway, conn_id: int) -> None:
    gateway.controls.apply("invalid_session", conn_id, resumable=True, close=True)


async def _heartbeat_deadline(gateway: FakeGateway, urls: OpenedGateway, conn_id: int) -> None:
    pass  # the client sends no heartbeat: the deadline passes


async def _resumed_elsewhere(gateway: FakeGateway, urls: OpenedGateway, conn_id: int) -> None:
    session = gateway.connections[conn_id].session
    assert session is not None
    async with raw_client(urls.resume_listener_url) as other:
        await other.recv_op(10)
        await other.resume(TOKEN, session.session_id, session.seq)
        await other.recv_dispatch("RESUMED")


ELSEWHERE_CASES = [
    pytest.param(lambda g, u, c: _control_close(g, u, c, code=4000), {}, 4000,
                 id="control-close-4000"),
    pytest.param(lambda g, u, c: _control_close(g, u, c, code=None), {}, 1005,
                 id="control-close-empty-frame"),
    pytest.param(_reconnect_close_after, {}, 4000, id="op7-close-after"),
    pytest.param(_invalid_session_close, {}, 4000, id="op9-then-close"),
    pytest.param(_heartbeat_deadline, {"heartbeat_deadline": True}, 1000,
                 id="heartbeat-deadline"),
    pytest.param(_resumed_elsewhere, {}, 4000, id="session-resumed-elsewhere"),
]


@pytest.mark.parametrize(("decide", "overrides", "code"), ELSEWHERE_CASES)
async def test_close_decided_elsewhere_reaches_a_client_still_sending(
        start: Start, decide: Callable[[FakeGateway, OpenedGateway, int], Awaitable[None]],
        overrides: dict[str, Any], code: int) -> None:
    gateway, urls = await start(**overrides)
    # max_queue=0: the client stops reading its socket while a message waits unread, so the
    # gateway's close frame stays unseen and the client keeps sending after the close.
    async with connect(f"{urls.gateway_url}/?v=10&encoding=json", compression=None,
                       ping_interval=None, close_timeout=2, max_queue=0) as ws:
        client = RawGatewayClient(ws, None)
        await client.recv_op(10)
        await client.send(identify())
        await client.recv_dispatch("READY")  # the GUILD_CREATEs after it stay unread
        conn_id = max(gateway.connections)
        await decide(gateway, urls, conn_id)
        await _wait_server_close(gateway, conn_id)
        await send_at_once(client, heartbeats(STILL_SENDING))
        _, got = await read_until_closed(client)
    assert got == code


# ---- a close decided behind frames a client does not read --------------------------------------


@pytest.mark.parametrize(("decide", "overrides"), [
    pytest.param(lambda g, c: g.controls.apply("close", c, code=4000), {}, id="control-close"),
    pytest.param(lambda g, c: None, {"heartbeat_deadline": True, "heartbeat_interval_ms": 3000},
                 id="heartbeat-deadline"),
])
async def test_close_behind_frames_a_client_never_reads_still_ends_the_connection(
        start: Start, decide: Callable[[FakeGateway, int], None],
        overrides: dict[str, Any]) -> None:
    """A zombie that stopped reading: the gateway's frames fill the socket buffers, so its close
    frame can never go out; the gateway still drops the connection after close_timeout."""
    gateway, urls = await start(close_timeout=0.5, **overrides)
    async with connect(f"{urls.gateway_url}/?v=10&encoding=json", compression=None,
                       ping_interval=None, close_timeout=2, max_queue=0) as ws:
        client = RawGatewayClient(ws, None)
        await client.recv_op(10)
        await client.send(identify())
        await client.recv_dispatch("READY")  # from here on the client reads nothing
        conn_id = max(gateway.connections)
        conn = gateway.connections[conn_id]
        with trio.fail_after(PATIENCE):
            while not conn.actions:  # until frames queue up behind a send that cannot finish
                gateway.controls.apply("burst", conn_id, count=5000)
                await trio.sleep(0.2)
        decide(gateway, conn_id)
        with trio.move_on_after(PATIENCE):
            while any(c["conn"] == conn_id for c in gateway.state()["connections"]):
                await trio.sleep(0.05)
        dropped = not any(c["conn"] == conn_id for c in gateway.state()["connections"])
        # Reading again (which also lets a stuck gateway finish), the client finds the
        # connection ended without a close frame: the gateway gave up on it.
        _, code = await read_until_closed(client)
    assert dropped
    assert code is None
