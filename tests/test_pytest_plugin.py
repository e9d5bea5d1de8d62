"""The pytest plugin's fixtures, used the way a library's own test suite would use them."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
from websockets.trio.client import connect

from harness.faults.backend import ToxicSpec
from harness.scenario import builtin_scenarios_dir


async def test_fake_gateway_fixture_serves_wss_with_its_ca(fake_gateway):
    urls = fake_gateway.urls
    context = ssl.create_default_context(cafile=urls.ca_file)
    async with connect(f"{urls.gateway_url}/?v=10&encoding=json", ssl=context) as ws:
        hello = await ws.recv()
    assert '"op":10' in hello.replace(" ", "")
    assert any(r["kind"] == "ws_upgrade" for r in fake_gateway.trace.records)


async def test_fault_proxy_fixture_relays_and_resets(fault_proxy):
    async def echo(stream):
        async with stream:
            async for data in stream:
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        info = await fault_proxy.create_proxy("echo", f"127.0.0.1:{port}", "127.0.0.1:0")
        host, proxy_port = info.listen.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(proxy_port))
        await stream.send_all(b"ping")
        assert await stream.receive_some(4) == b"ping"
        await stream.aclose()
        # A reset_after toxic resets the next connection once the client has sent a byte.
        await fault_proxy.add_toxic("echo", ToxicSpec("reset_after", attributes={"bytes": 1}))
        stream = await trio.open_tcp_stream(host, int(proxy_port))
        await stream.send_all(b"ping")
        with pytest.raises(trio.BrokenResourceError):
            while await stream.receive_some(4):
                pass
        await stream.aclose()
        assert fault_proxy.api_url.startswith("http://127.0.0.1:")
        nursery.cancel_scope.cancel()


def test_run_gateway_scenario_fixture_judges_a_builtin_scenario(run_gateway_scenario):
    result = run_gateway_scenario(builtin_scenarios_dir() / "f16-op7-close-code.toml")
    assert result.passed
    assert {v.invariant for v in result.verdicts} >= {"RS1", "RS4", "LV1"}


async def test_fake_gateway_fixture_rest_url_is_the_api_v10_base(fake_gateway):
    import httpx

    urls = fake_gateway.urls
    auth = {"Authorization": f"Bot {fake_gateway.gateway.config.token}"}
    context = ssl.create_default_context(cafile=urls.ca_file)
    async with httpx.AsyncClient(verify=context) as http:
        answer = await http.get(f"{urls.rest_url}/gateway/bot", headers=auth)
    assert answer.status_code == 200
    assert answer.json()["url"] == urls.gateway_url
