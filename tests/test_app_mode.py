"""App mode (issue 18): an unmodified bot, with its own token and Discord's own URLs, run against
the harness (`validate --app`, the `gateway_app` fixture, `RunOptions(adapter=app_adapter(...))`).

The gateway part (fast): the fake takes the app's own token and traces it redacted, and answers a
REST call it does not implement with Discord's 404 JSON, in the trace. The run part: a ten-line
discord.py bot gets the built-in discord.py adapter's verdicts, scenario by scenario; hikari and
discord.js bots log in and resume through the redirect; a few lines of Node with the npm
`midjourney` package at its default URLs reproduce the seed; a command that never loads the hook
is the run's error, in one line. Real clients install on first use into a session folder
(pip's and npm's caches make repeats quick).
"""

from __future__ import annotations

import json
import random
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from fake_gateway.tls import make_tls
from gateway_common.trace import Trace

pytestmark = pytest.mark.timeout(600)

APP_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.the-apps-own-secret-signature-0123456789"
SHOWN = "'MTIzND'... (72 chars)"  # how the trace shows APP_TOKEN


async def _open(nursery: trio.Nursery, tmp_path: Path, **config: Any
                ) -> tuple[FakeGateway, OpenedGateway]:
    gateway = FakeGateway(GatewayConfig(heartbeat_deadline=False, **config),
                          Trace(clock=trio.current_time), random.Random(1))
    opened = await nursery.start(partial(open_gateway, gateway, tls=make_tls(tmp_path / "tls"),
                                         rest_port=0))
    return gateway, opened


# ---- the gateway takes the app's token -----------------------------------------------------


async def test_the_gateway_takes_the_apps_own_token_and_traces_it_redacted(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    assert len(APP_TOKEN) == 72
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        ready = await client.identify(APP_TOKEN)
        await client.close(4000)  # keeps the session resumable
    session_id = ready["d"]["session_id"]
    async with raw_client(opened.resume_listener_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.resume(APP_TOKEN, session_id, ready["s"])
        await client.recv_dispatch("RESUMED")
        await client.close()
    records = gateway.trace.records
    logins = [r for r in records if r["kind"] == "frame_in" and r["op"] in (2, 6)]
    assert [(r["op"], r["token_ok"], r["token_seen"]) for r in logins] == [
        (2, True, SHOWN), (6, True, SHOWN)]
    assert any(r["kind"] == "note" and SHOWN in r["text"] for r in records)
    assert APP_TOKEN[6:] not in json.dumps(records)  # never more than the first 6 characters


async def test_a_resume_with_another_token_is_taken_but_not_ok(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """The first token the app presented is its token: RS2 judges a RESUME that changes it."""
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        ready = await client.identify(APP_TOKEN)
        await client.close(4000)
    async with raw_client(opened.resume_listener_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.resume("another-token-entirely", ready["d"]["session_id"], ready["s"])
        await client.recv_dispatch("RESUMED")
        await client.close()
    resume = [r for r in gateway.trace.records if r["kind"] == "frame_in" and r["op"] == 6]
    assert [r["token_ok"] for r in resume] == [False]


async def test_without_app_mode_another_token_is_closed_4004(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway, opened = await _open(nursery, tmp_path)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": APP_TOKEN, "intents": 513,
                                          "properties": {"os": "linux"}}})
        assert await client.expect_close() == 4004
    identify = [r for r in gateway.trace.records if r["kind"] == "frame_in" and r["op"] == 2]
    assert identify[0]["token_ok"] is False and "token_seen" not in identify[0]


# ---- REST: the app's token, and Discord's 404 for the rest ---------------------------------


async def test_rest_takes_the_apps_token_and_answers_unknown_calls_with_discords_404(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    auth = {"Authorization": f"Bot {APP_TOKEN}"}
    context = ssl.create_default_context(cafile=opened.ca_file)
    async with httpx.AsyncClient(verify=context, base_url=str(opened.rest_url)) as http:
        me = await http.get("/users/@me", headers=auth)
        unknown = await http.post("/channels/42/messages", headers=auth, json={"content": "hi"})
        no_token = await http.get("/users/@me")
    assert me.status_code == 200 and me.json()["bot"] is True
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "404: Not Found", "code": 0}
    assert unknown.headers["content-type"] == "application/json"
    assert no_token.status_code == 401
    rest = [(r["method"], r["path"], r["status"], r["implemented"])
            for r in gateway.trace.records if r["kind"] == "rest"]
    assert rest == [("GET", "/api/v10/users/@me", 200, True),
                    ("POST", "/api/v10/channels/42/messages", 404, False),
                    ("GET", "/api/v10/users/@me", 401, True)]
