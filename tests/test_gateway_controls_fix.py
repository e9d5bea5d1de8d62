"""The invalid_session control when op 9 races the client's RESUME (fuzz seed 207210633).

op 9 d=false means the session is gone (gateway-protocol.md section 6). When the control fires on a
fresh connection after HELLO but before the client's RESUME arrives, the RESUME that follows must
get op 9 d=false too, not RESUMED; with d=true the session stays resumable.
"""

from __future__ import annotations

import random
from typing import Any

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.trace import Trace

TOKEN = GatewayConfig().token


async def _detached_session(nursery: trio.Nursery) -> tuple[FakeGateway, OpenedGateway, str]:
    """A gateway over loopback TCP with one session whose client just left with 4000 (resumable)."""
    config = GatewayConfig(heartbeat_interval_ms=300, heartbeat_deadline=False,
                           identify_window=0.0, guilds=1)
    gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(7))
    urls: OpenedGateway = await nursery.start(open_gateway, gateway)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        ready: dict[str, Any] = await client.identify(TOKEN)
        await client.close(4000)
    session_id: str = ready["d"]["session_id"]
    with trio.fail_after(5):
        while gateway.sessions[session_id].conn_id is not None:
            await trio.sleep(0.01)
    return gateway, urls, session_id


def _newest_connection(gateway: FakeGateway) -> int:
    return max(gateway.connections)


async def test_op9_false_before_resume_ends_the_session(nursery: trio.Nursery) -> None:
    gateway, urls, session_id = await _detached_session(nursery)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("invalid_session", _newest_connection(gateway), resumable=False)
        assert (await client.recv_op(9))["d"] is False
        await client.resume(TOKEN, session_id, 1)  # already on its way when op 9 went out
        assert (await client.recv_op(9))["d"] is False
    assert not gateway.sessions[session_id].alive
    # Gone for good: a RESUME on a new connection is refused as well.
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_op(9))["d"] is False


async def test_op9_true_before_resume_keeps_the_session(nursery: trio.Nursery) -> None:
    gateway, urls, session_id = await _detached_session(nursery)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("invalid_session", _newest_connection(gateway), resumable=True)
        assert (await client.recv_op(9))["d"] is True
        await client.resume(TOKEN, session_id, 1)
        await client.recv_dispatch("RESUMED")
        assert gateway.sessions[session_id].alive


async def test_op9_false_before_identify_does_not_touch_other_sessions(
        nursery: trio.Nursery) -> None:
    """The connection had no session: only a RESUME on it names one, so IDENTIFY just works."""
    gateway, urls, session_id = await _detached_session(nursery)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("invalid_session", _newest_connection(gateway), resumable=False)
        assert (await client.recv_op(9))["d"] is False
        ready = await client.identify(TOKEN)
        assert ready["t"] == "READY"
        assert gateway.sessions[session_id].alive


async def test_go_silent_delays_dispatches_and_never_loses_them(nursery: trio.Nursery) -> None:
    """A silent spell is a stalled path: what the gateway emits meanwhile arrives afterwards, in
    order, on the same connection (fuzz seed 270: s=2,3 were lost while s=4 arrived)."""
    config = GatewayConfig(heartbeat_interval_ms=5000, heartbeat_deadline=False, guilds=1)
    gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(7))
    urls: OpenedGateway = await nursery.start(open_gateway, gateway)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.identify(TOKEN)
        await client.recv_dispatch("GUILD_CREATE")
        gateway.controls.apply("go_silent", "all")
        gateway.controls.apply("burst", "all", count=3)
        with trio.move_on_after(0.3) as quiet:
            await client.recv()
        assert quiet.cancelled_caught  # nothing arrives while silent
        gateway.controls.apply("go_silent", "all", on=False)
        gateway.controls.apply("burst", "all", count=1)
        seqs = [(await client.recv_op(0))["s"] for _ in range(4)]
    assert seqs == [3, 4, 5, 6]
