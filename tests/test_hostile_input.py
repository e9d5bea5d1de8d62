"""Hostile input (issue 17): single targeted inputs that used to crash the fake gateway, poison a
session, answer 500 or wedge the proxy API. Each must now get a 4xx answer or the close code
Discord would send, and the next good client must be served normally.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.trace import Trace
from harness.faults import proxy as proxy_module
from harness.faults.testing import ToxiproxyServerThread, echo_server

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
                                        **opened.control_headers})


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


# ---- 8, 9, 10: the proxy API ------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_api() -> Iterator[httpx.Client]:
    with ToxiproxyServerThread(seed=7) as running, httpx.Client(base_url=running.url,
                                                                timeout=20) as client:
        yield client


def _listings_work(api: httpx.Client, *proxies: str) -> None:
    assert api.get("/proxies").status_code == 200
    for name in proxies:
        assert api.get(f"/proxies/{name}").status_code == 200
        assert api.get(f"/proxies/{name}/toxics").status_code == 200


def _post(api: httpx.Client, path: str, body: str) -> httpx.Response:
    return api.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("toxicity", ["1e39", "-1e39", "1e400", "NaN", "Infinity", "-Infinity"])
def test_a_toxicity_no_float32_holds_is_400_and_nothing_is_stored(
        proxy_api: httpx.Client, toxicity: str) -> None:
    api = proxy_api
    api.post("/reset")
    assert api.post("/proxies", json={"name": "p", "listen": "127.0.0.1:0",
                                      "upstream": "127.0.0.1:9"}).status_code == 201
    try:
        answer = _post(api, "/proxies/p/toxics", f'{{"type":"noop","toxicity":{toxicity}}}')
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith("bad request body: ")
        assert api.get("/proxies/p/toxics").json() == []
        _listings_work(api, "p")
        assert _post(api, "/proxies/p/toxics", '{"type":"noop","name":"n"}').status_code == 200
        answer = _post(api, "/proxies/p/toxics/n", f'{{"toxicity":{toxicity}}}')
        assert answer.status_code == 400, answer.text
        assert api.get("/proxies/p/toxics/n").json()["toxicity"] == 1
        _listings_work(api, "p")
    finally:
        api.delete("/proxies/p")


@pytest.mark.parametrize("field", ["name", "upstream", "listen"])
def test_a_lone_surrogate_in_a_proxy_field_reads_as_go_does(proxy_api: httpx.Client,
                                                             field: str) -> None:
    """Go's JSON decoder turns a lone surrogate escape into U+FFFD: the proxy can be listed,
    shown and deleted like any other."""
    api = proxy_api
    api.post("/reset")
    body = {"name": "q", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
    text = json.dumps({**body, field: body[field] + "\ud800"})
    answer = _post(api, "/proxies", text)
    if field == "listen":  # no address: Go's listen error (a 500, as Toxiproxy answers it)
        assert answer.json()["error"].startswith("listen tcp: address 127.0.0.1:0\ufffd")
        assert api.get("/proxies").json() == {}
        return
    assert answer.status_code == 201, answer.text
    name = answer.json()["name"]
    assert answer.json()[field].endswith("\ufffd")
    _listings_work(api, urllib.parse.quote(name))
    assert api.delete(f"/proxies/{urllib.parse.quote(name)}").status_code == 204
    assert api.get("/proxies").json() == {}


@pytest.mark.parametrize("path", ["/proxies", "/populate", "/proxies/p/toxics",
                                  "/proxies/p/toxics/n", "/proxies/p"])
def test_deeply_nested_bodies_are_400(proxy_api: httpx.Client, path: str) -> None:
    api = proxy_api
    api.post("/reset")
    _post(api, "/proxies", '{"name":"p","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}')
    _post(api, "/proxies/p/toxics", '{"type":"noop","name":"n"}')
    for body in ("[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000):
        answer = _post(api, path, body)
        assert answer.status_code == 400, (path, answer.text[:200])
    _listings_work(api, "p")
    api.delete("/proxies/p")


# ---- 5: the control and state endpoints -------------------------------------------------------


async def test_control_and_state_answer_only_the_control_token(nursery: trio.Nursery) -> None:
    gateway, opened = await _gateway(nursery)
    assert opened.control_url and opened.rest_origin
    state_url = f"{opened.rest_origin}/_harness/state"
    async with raw_client(opened.gateway_url) as client, httpx.AsyncClient() as http:
        await client.recv_op(10)
        for headers in ({}, {"authorization": f"Bot {TOKEN}"},
                        {"authorization": "Bearer nope"},
                        {"authorization": f"Bearer {gateway.control_token}x"}):
            answer = await http.post(opened.control_url, headers=headers,
                                     json={"action": "close", "params": {"code": 4000}})
            assert answer.status_code == 401, headers
            assert (await http.get(state_url, headers=headers)).status_code == 401
        assert gateway.trace.of_kind("control") == []
        answer = await http.get(state_url, headers=opened.control_headers)
        assert answer.status_code == 200 and len(answer.json()["connections"]) == 1
        await client.heartbeat(None)  # untouched


async def test_close_codes_and_reasons_a_close_frame_cannot_carry_are_400(
        nursery: trio.Nursery) -> None:
    gateway, opened = await _gateway(nursery)
    async with raw_client(opened.gateway_url) as client:
        await client.recv_op(10)
        refused = ['"code":1005', '"code":2000', '"code":1006', '"code":4000.5',
                   '"code":4000,"reason":"' + "x" * 124 + '"',
                   '"code":4000,"reason":"' + "\\u00e9" * 62 + '"',  # 124 bytes in UTF-8
                   '"code":4000,"reason":"\\ud800"',
                   '"code":4000,"reason":"' + "x" * 100_000 + '"']
        for params in refused:
            answer = await _control(opened, _body("close", '"all"', params))
            assert answer.status_code == 400, (params[:40], answer.text)
        assert gateway.trace.of_kind("control") == []
        await client.heartbeat(None)
        reason = "\u00e9" * 61 + "x"  # 123 bytes: the most a close frame holds
        answer = await _control(opened, _body("close", '"all"', f'"code":4000,"reason":"{reason}"'))
        assert answer.status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv(5)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == reason
    await _served_normally(opened)


# ---- 14: scenario files -----------------------------------------------------------------------

_HEAD = '''name = "x"
source = "seed"
description = "A scenario written to check what the loader refuses and why."
'''
_EXPECT = "[expect]\nrecovery_bound = 3.0\nduration = 2.0\n"
_STEP = '[[steps]]\nkind = "toxic"\ntype = "latency"\nattributes = { latency = 100 }\n'
_CONTROL = '[[steps]]\nkind = "control"\naction = "close"\nstart = { at = 0.5 }\n'

_AT = "start = { at = 0.5 }\n"
_STEPS = "steps\\[1\\]"
_FINITE = "must be a finite number"
_REASON = 'params = { code = 4000, reason = "' + "x" * 124 + '" }\n'
_RECONNECT = '[[steps]]\nkind = "control"\naction = "reconnect"\n' + _AT

# name: (body after the head, text on the line to be named, the message's regex after file:line)
SCENARIO_CASES = {
    "run-duration-nan": ("[expect]\nrecovery_bound = 3.0\nduration = nan\n",
                         "duration = nan", f"expect.duration: {_FINITE}"),
    "start-at-nan": (_EXPECT + _STEP + "start = { at = nan }\nduration = 1.0\n",
                     "at = nan", f"{_STEPS}.start.at: {_FINITE}"),
    "step-duration-nan": (_EXPECT + _STEP + _AT + "duration = nan\n",
                          "duration = nan", f"{_STEPS}.duration: {_FINITE}"),
    "toxicity-nan": (_EXPECT + _STEP + _AT + "toxicity = nan\n",
                     "toxicity = nan", f"{_STEPS}.toxicity: {_FINITE}"),
    "strat": (_EXPECT + _STEP + "strat = { at = 0.5 }\n",
              "strat =", f"{_STEPS}.strat: unknown field 'strat'; did you mean 'start'\\?"),
    "starts-after-the-run": (_EXPECT + _STEP + "start = { at = 5.0 }\nduration = 1.0\n",
                             "at = 5.0", f"{_STEPS}.start.at: starts at 5 s or later"),
    "delay-after-the-run": (_EXPECT + _STEP + 'start = { after = "ready", delay = 3.0 }\n',
                            "delay = 3.0", f"{_STEPS}.start.delay: starts at 3 s or later"),
    "duration-1e9": (_EXPECT + _STEP + _AT + "duration = 1e9\n",
                     "duration = 1e9", f"{_STEPS}.duration: 1e\\+09 s from 0.5 s ends after"),
    "recovery-bound-inf": ("[expect]\nrecovery_bound = inf\nduration = 2.0\n",
                           "recovery_bound = inf", f"expect.recovery_bound: {_FINITE}"),
    "heartbeat-interval-2**63-1": (
        "[gateway]\nheartbeat_interval = 9223372036854775807\n" + _EXPECT,
        "heartbeat_interval =", "gateway.heartbeat_interval: must be at most"),
    "close-1005": (_EXPECT + _CONTROL + "params = { code = 1005 }\n",
                   "code = 1005", f"{_STEPS}.params.code: must be 1000-1003"),
    "close-2000": (_EXPECT + _CONTROL + "params = { code = 2000 }\n",
                   "code = 2000", f"{_STEPS}.params.code: must be 1000-1003"),
    "reason-124-bytes": (_EXPECT + _CONTROL + _REASON,
                         "reason =", f"{_STEPS}.params.reason: must be at most 123 bytes"),
    "int-5000-digits": (_EXPECT.replace("2.0", "9" * 5000), "9999",
                        "not valid TOML: an integer of more than 4,300 digits"),
    "int-past-64-bits": (_EXPECT.replace("2.0", "9" * 30), "9999",
                         "expect.duration: must fit in 64 bits"),
    "reconnect-1e400": (_EXPECT + _RECONNECT + "params = { close_after_ms = 1e400 }\n",
                        "close_after_ms", f"{_STEPS}.params.close_after_ms: {_FINITE}"),
}


@pytest.mark.parametrize("case", list(SCENARIO_CASES))
def test_a_broken_scenario_file_is_exit_2_naming_file_line_and_field(case: str,
                                                                     tmp_path: Path) -> None:
    body, marker, message = SCENARIO_CASES[case]  # marker: text on the line to be named
    path = tmp_path / f"{case}.toml"
    path.write_text(_HEAD + body)
    line = next(n for n, text in enumerate((_HEAD + body).splitlines(), 1) if marker in text)
    result = subprocess.run([sys.executable, "-m", "harness", "list", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    (error,) = result.stderr.strip().splitlines()
    assert re.search(rf"{re.escape(str(path))}:{line}: {message}", error), error


# ---- 13: key material left in /tmp ----------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_tls_removes_its_key_material_when_it_stops(tmp_path: Path, stop: int) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--tls", "on"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        folder = Path(line["ca_file"]).parent
        assert folder.parent == tmp_path and (folder / "server.pem").exists()
        assert (folder / "server.pem").stat().st_mode & 0o077 == 0  # the key: owner only
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.iterdir()) == []


def test_serve_tls_that_cannot_listen_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "harness", "serve", "--tls", "on",
                                 "--port", str(port)], capture_output=True, text=True,
                                env=env, timeout=60)
    assert result.returncode == 2 and "cannot listen" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---- 11: a proxy whose upstream is itself ---------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_proxy_whose_upstream_is_its_own_listen_address_is_refused(
        proxy_api: httpx.Client, host: str) -> None:
    api = proxy_api
    api.post("/reset")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = {"name": "loop", "listen": f"127.0.0.1:{port}", "upstream": f"{host}:{port}"}
    answer = api.post("/proxies", json=loop)
    assert answer.status_code == 400 and "loop" in answer.json()["error"], answer.text
    assert api.get("/proxies").json() == {}
    with pytest.raises(OSError):  # nothing listens there
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    # Pointed at itself by an update: refused too, and nothing listens on a loop.
    created = api.post("/proxies", json={**loop, "upstream": "127.0.0.1:9"})
    assert created.status_code == 201
    listen = created.json()["listen"]
    answer = api.post("/proxies/loop", json={"upstream": listen})
    assert answer.status_code == 400 and "loop" in answer.json()["error"]
    assert api.get("/proxies/loop").json()["enabled"] is False
    api.delete("/proxies/loop")


def test_a_proxy_holds_a_bounded_number_of_connections(proxy_api: httpx.Client,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound a new connection is closed as it arrives; the open ones carry on."""
    monkeypatch.setattr(proxy_module, "MAX_CONNECTIONS_PER_PROXY", 2)
    api = proxy_api
    api.post("/reset")
    with echo_server() as echo_port:
        created = api.post("/proxies", json={"name": "b", "listen": "127.0.0.1:0",
                                             "upstream": f"127.0.0.1:{echo_port}"})
        host, port = created.json()["listen"].rsplit(":", 1)
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                try:
                    extra.sendall(b"ping")
                    assert extra.recv(4) == b""  # closed at once
                except ConnectionResetError:
                    pass  # or reset
            held[0].sendall(b"pong")
            assert held[0].recv(4) == b"pong"
        finally:
            for sock in held:
                sock.close()
    api.delete("/proxies/b")


# ---- 12: the proxy's --host ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["proxy", "serve"])
@pytest.mark.parametrize("host", ["192.0.2.1", "0.0.0.0", "example.invalid"])
def test_serve_and_proxy_refuse_a_non_loopback_host_alike(command: str, host: str) -> None:
    result = subprocess.run([sys.executable, "-m", "harness", command, "--host", host],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith(("(loopback only)", "is not an IP address")) and host in line, line


# ---- 6: REST ---------------------------------------------------------------------------------


async def test_interactions_take_multipart_and_answer_malformed_bodies_with_400(
        nursery: trio.Nursery) -> None:
    _, opened = await _gateway(nursery)
    url = f"{opened.rest_url}/interactions"
    auth = {"authorization": f"Bot {TOKEN}"}
    async with raw_client(opened.gateway_url) as client, httpx.AsyncClient(headers=auth) as http:
        await client.recv_op(10)
        await client.identify(TOKEN)
        answer = await http.post(url, files={"payload_json": (None, '{"type":2,"nonce":"m1"}'),
                                             "files[0]": ("a.png", b"\x89PNG", "image/png")})
        assert answer.status_code == 204, answer.text
        created = await client.recv_dispatch("INTERACTION_CREATE")
        assert created["d"]["nonce"] == "m1"
        bad = [("multipart/form-data", b"no boundary at all"),
               ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; "
                                                   b'name="payload_json"\r\n\r\n{nope\r\n--x--'),
               ("application/json", b'{"nonce":"\\ud800"}'),
               ("application/json", b"[" * 100_000),
               ("application/json", b"\xff\xfe")]
        for content_type, body in bad:
            answer = await http.post(url, content=body, headers={"content-type": content_type})
            assert answer.status_code == 400, (content_type, body[:30], answer.text)
            assert answer.json() == {"message": "400: Bad Request", "code": 0}
        await client.heartbeat(None)  # the session was not sent anything it cannot encode
    await _served_normally(opened)


# ---- 7: memory held by closed connections -----------------------------------------------------


async def test_a_gateway_that_keeps_no_trace_holds_nothing_per_closed_connection(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """What `serve` runs: records go to the --trace file (and the listeners), none stay in memory;
    the trace file still gets every one."""
    path = tmp_path / "trace.jsonl"
    with path.open("w", encoding="utf-8") as sink:
        trace = Trace(clock=trio.current_time, sink=sink, keep=False)
        seen: list[dict[str, Any]] = []
        trace.subscribe(seen.append)
        gateway = FakeGateway(GatewayConfig(identify_window=0.0), trace, random.Random(7))
        opened: OpenedGateway = await nursery.start(open_gateway, gateway)
        for _ in range(20):
            async with raw_client(opened.gateway_url) as client:
                await client.recv_op(10)
        await _served_normally(opened)
    assert trace.records == [] and len(trace) == 0
    written = path.read_text().splitlines()
    assert len(written) == len(seen) and sum('"conn_open"' in line for line in written) == 21
