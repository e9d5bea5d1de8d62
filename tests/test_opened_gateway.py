"""`open_gateway`: the one way to put the fake gateway on a transport (loopback TCP or an
in-memory network, TLS or not), and the handle that says where it is."""

from __future__ import annotations

import random
import ssl
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.tls import make_tls
from gateway_common.trace import Trace
from harness.client.testing import wait_until
from harness.client_env import ClientEnv
from harness.faults.memnet import MemoryNetwork
from harness.world_clients import make_reference_client


def _gateway() -> FakeGateway:
    return FakeGateway(GatewayConfig(heartbeat_interval_ms=1000), Trace(clock=trio.current_time),
                       random.Random(3))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("transport", ["tcp", "memnet"])
async def test_the_reference_client_gets_a_session_at_the_handles_urls(
        transport: str, tls: bool, tmp_path: Path):
    network = MemoryNetwork() if transport == "memnet" else None
    gateway = _gateway()
    async with trio.open_nursery() as nursery:
        opened = await nursery.start(partial(open_gateway, gateway, network,
                                             tls=make_tls(tmp_path) if tls else None))
        scheme = "wss" if tls else "ws"
        discovery, resume = opened.listeners["discovery"], opened.listeners["resume"]
        assert (discovery.host, resume.host) == ("127.0.0.1", "127.0.0.1")
        assert discovery.port != resume.port
        assert opened.gateway_url == f"{scheme}://127.0.0.1:{discovery.port}"
        assert opened.resume_gateway_url == f"{scheme}://127.0.0.1:{resume.port}"
        assert opened.rest_url is None and (opened.ca_file is not None) == tls
        env = ClientEnv(
            gateway_url=opened.gateway_url, rest_url=None, token=gateway.config.token,
            ca_file=opened.ca_file,
            open_stream=network.open_stream if network is not None else None,
            fetch_gateway_bot=opened.fetch_gateway_bot, seed=1, delivery_log_path=None)
        client = make_reference_client(env, random.Random(1))
        await nursery.start(client.run)
        await wait_until(lambda: client.state == "ready", timeout=30)
        ready = next(r for r in gateway.trace.records
                     if r["kind"] == "frame_out" and r.get("t") == "READY")
        opens = [r for r in gateway.trace.records if r["kind"] == "conn_open"]
        assert [r["listener"] for r in opens] == ["discovery"]
        assert ready["conn"] == opens[0]["conn"]
        client.stop("test over")
        nursery.cancel_scope.cancel()


async def test_announced_urls_reach_rest_and_ready(tmp_path: Path):
    """What a proxy in front needs: /gateway/bot and READY name the announced URLs, while the
    listeners stay where they are."""
    gateway = _gateway()
    async with trio.open_nursery() as nursery:
        opened = await nursery.start(partial(open_gateway, gateway, tls=make_tls(tmp_path),
                                             rest_port=0))
        assert opened.rest_url == f"{opened.rest_origin}/api/v10"
        assert opened.control_url == f"{opened.rest_origin}/_harness/control"
        listener_url = opened.gateway_url
        opened.announce("wss://127.0.0.1:1", "wss://127.0.0.1:2")
        assert (opened.advertised_url, opened.resume_gateway_url) == (
            "wss://127.0.0.1:1", "wss://127.0.0.1:2")
        assert opened.gateway_url == listener_url
        context = ssl.create_default_context(cafile=opened.ca_file)
        auth = {"Authorization": f"Bot {gateway.config.token}"}
        async with httpx.AsyncClient(verify=context) as http:
            answer = await http.get(f"{opened.rest_url}/gateway/bot", headers=auth)
        assert answer.json()["url"] == "wss://127.0.0.1:1"
        assert opened.gateway_bot()["url"] == "wss://127.0.0.1:1"
        nursery.cancel_scope.cancel()


async def test_rest_on_an_in_memory_network_is_refused():
    with pytest.raises(ValueError, match="rest_port"):
        await open_gateway(_gateway(), MemoryNetwork(), rest_port=0)
