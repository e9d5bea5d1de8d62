"""Hostile input (issue 17): single targeted inputs that used to crash the fake gateway, poison a
session, answer 500 or wedge the proxy API. Each must now get a 4xx answer or the close code
Discord would send, and the next good client must be served normally.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.trace import Trace

TOKEN = GatewayConfig().token
NINES = "9" * 400


async def _gateway(nursery: trio.Nursery, **knobs: Any) -> tuple[FakeGateway, OpenedGateway]:
    config = GatewayConfig(**{"heartbeat_interval_ms": 5000, "guilds": 1, "identify_window": 0.0,
                              **knobs})
    gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(7))
    opened: OpenedGateway = await nursery.start(partial(open_gateway, gateway, rest_port=0))
    return gateway, opened


def _body(action: str, target: object, params: str) -> str:
    """A control request as text, so non-JSON-standard numbers (NaN, 1e400) go out verbatim."""
    return f'{{"action":"{action}","target":{target},"params":{{{params}}}}}'


async def _control(opened: OpenedGateway, body: str) -> httpx.Response:
    assert opened.control_url
    async with httpx.AsyncClient() as http:
        return await http.post(opened.control_url, content=body,
                               headers={"content-type": "application/json",
                                        "authorization": f"Bot {TOKEN}"})


async def _served_normally(opened: OpenedGateway) -> None:
    """A well-behaved client gets HELLO, READY and heartbeat ACKs."""
    async with raw_client(opened.gateway_url) as client:
        await client.recv_op(10)
        await client.identify(TOKEN)
        await client.heartbeat(1)


# ---- 1: the control endpoint ------------------------------------------------------------------


async def test_non_finite_and_huge_control_numbers_are_refused_with_400(
        nursery: trio.Nursery) -> None:
    gateway, opened = await _gateway(nursery)
    async with raw_client(opened.gateway_url) as client:
        await client.recv_op(10)
        conn = max(gateway.connections)
        answer = await _control(opened, _body("heartbeat_deadline", conn, '"on":false'))
        assert answer.status_code == 200
        for value in ("NaN", "Infinity", "-Infinity", "1e400", NINES, "-1"):
            answer = await _control(opened, _body("reconnect", conn, f'"close_after_ms":{value}'))
            assert answer.status_code == 400, (value, answer.text)
            assert "close_after_ms" in answer.json()["message"]
        for target in ('"all"', '"next"', str(conn)):
            for value in ("NaN", NINES, "1e400"):
                answer = await _control(opened, _body("delay_hello", target, f'"ms":{value}'))
                assert answer.status_code == 400, (target, value, answer.text)
        await client.heartbeat(None)  # the connection lives on
    await _served_normally(opened)


# ---- 2, 3: a lone surrogate in a frame ------------------------------------------------------

LONE = "\ud800"  # valid JSON ("\ud800" escaped), but no Unicode text: it cannot be sent back


async def test_a_lone_surrogate_before_hello_is_a_decode_error_not_a_crash(
        nursery: trio.Nursery) -> None:
    gateway, opened = await _gateway(nursery)
    gateway.controls.apply("delay_hello", "next", ms=1500)
    async with raw_client(opened.gateway_url) as client:
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}}})
        await client.send({"op": 43, "d": {"guild_id": LONE}})
        assert await client.expect_close() == 4002
    await _served_normally(opened)


@pytest.mark.parametrize("op, d", [
    (43, {"guild_id": LONE}),
    (8, {"guild_id": "1", "query": LONE, "limit": 0}),
    (31, {"guild_ids": [LONE]}),
    (4, {"guild_id": LONE, "channel_id": None}),
    (8, {"guild_id": "1", "nonce": LONE, "limit": 0, "query": ""}),
    (4, {"guild_id": "1", "channel_id": {LONE: 1}}),
])
async def test_a_lone_surrogate_after_ready_is_4002_and_the_session_resumes(
        nursery: trio.Nursery, op: int, d: dict[str, Any]) -> None:
    _, opened = await _gateway(nursery)
    async with raw_client(opened.gateway_url) as client:
        await client.recv_op(10)
        ready = await client.identify(TOKEN)
        await client.send({"op": op, "d": d})
        assert await client.expect_close() == 4002
    session_id = ready["d"]["session_id"]
    async with raw_client(opened.gateway_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, ready["s"])
        await client.recv_dispatch("RESUMED")
        await client.heartbeat(ready["s"])


# ---- 4: the upgrade's query -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["%C2%B2", "9" * 5000, "%D9%A1%D9%A0", "-10", "0", "00"])
async def test_a_version_that_is_no_number_is_4012_not_500(nursery: trio.Nursery,
                                                            version: str) -> None:
    _, opened = await _gateway(nursery)
    async with raw_client(opened.gateway_url, query=f"v={version}&encoding=json") as client:
        assert await client.expect_close() == 4012
    await _served_normally(opened)
