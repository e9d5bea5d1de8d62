"""What real third-party clients need from the fake gateway beyond the bot protocol rules
(found by running them: see harness/adapters and the README's adapter section)."""

from __future__ import annotations

import random
from functools import partial

import httpx
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.trace import Trace

TOKEN = GatewayConfig().token


async def _serve(nursery: trio.Nursery) -> tuple[FakeGateway, object]:
    gateway = FakeGateway(GatewayConfig(heartbeat_interval_ms=500, heartbeat_deadline=False),
                          Trace(clock=trio.current_time), random.Random(1))
    urls = await nursery.start(partial(open_gateway, gateway, rest_port=0))
    return gateway, urls


async def test_user_account_identify_with_capabilities_and_no_intents_gets_ready(nursery):
    """The `midjourney` npm client logs in like the Discord app: capabilities, no intents."""
    _, urls = await _serve(nursery)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": TOKEN, "capabilities": 8189,
                                          "properties": {"os": "Mac OS X"}, "compress": False}})
        assert (await client.recv_op(0))["t"] == "READY"


async def test_guild_roles_carry_gradient_colours(nursery):
    """py-cord crashes and disnake logs a KeyError on a role without `colors`."""
    _, urls = await _serve(nursery)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.identify(TOKEN)
        guild = await client.recv_dispatch("GUILD_CREATE")
    role = guild["d"]["roles"][0]
    assert role["colors"]["primary_color"] == role["color"]


async def test_command_index_lists_midjourney_imagine_and_settings(nursery):
    _, urls = await _serve(nursery)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{urls.rest_origin}/api/v9/guilds/1/application-command-index",
            headers={"Authorization": TOKEN})
    assert response.status_code == 200
    commands = {c["name"]: c for c in response.json()["application_commands"]}
    assert {"imagine", "settings"} <= set(commands)
    assert commands["imagine"]["application_id"] == "936929561302675456"
