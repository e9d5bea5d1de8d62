"""Property tests for hostile input (issue 17): arbitrary JSON, numbers (NaN, Infinity, 1e400,
huge ints), strings (lone surrogates, very long) and nesting thrown at each surface: gateway
frames (the sans-I/O core, and a real `serve` process over loopback), REST, the control
endpoint, the proxy API and the scenario loader. Each asserts no crash, no 5xx, the right close
code or 4xx, and that the next good client is served normally.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fake_gateway.config import GatewayConfig
from fake_gateway.controls import validate
from fake_gateway.protocol import Close, GatewayCore, Send
from gateway_common.errors import UserError
from gateway_common.facts import CONTROLS
from gateway_common.trace import Trace
from harness.faults.testing import ToxiproxyServerThread
from harness.scenario import parse_scenario

TOKEN = GatewayConfig().token
SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

# ---- strategies ---------------------------------------------------------------------------------

ANY_CHAR = st.characters(blacklist_categories=())  # lone surrogates included
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=10**300, max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([2**63 - 1, -(2**63), 1e308]),
)
STRINGS = st.one_of(st.text(ANY_CHAR, max_size=20), st.sampled_from(["\ud800", "a\udfff",
                                                                      "x" * 100_000]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
# Keys the gateway reads (so hostile values reach the code that uses them), and any others.
KEYS = st.one_of(st.sampled_from(["guild_id", "guild_ids", "channel_id", "query", "nonce",
                                  "user_ids", "limit", "token", "session_id", "seq", "intents",
                                  "shard", "properties", "presences"]), STRINGS)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


def as_text(value: Any) -> str:
    """JSON text as a hostile client writes it: NaN/Infinity literals, surrogates escaped."""
    return json.dumps(value, allow_nan=True)


NESTED = st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n)
BODIES = st.one_of(JSON.map(as_text), NESTED, st.text(ANY_CHAR.filter(
    lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=30))
CLIENT_OPS = [1, 2, 3, 4, 6, 8, 31, 43, 99]
PAYLOADS = st.builds(lambda op, d: as_text({"op": op, "d": d}), st.sampled_from(CLIENT_OPS),
                     st.one_of(st.dictionaries(KEYS, JSON, min_size=1, max_size=4), JSON))
# The session ops (voice, members, soundboard, channel info) with a hostile value under a key
# they read: what used to be echoed back to the client.
SESSION_OPS = st.builds(lambda op, key, value: as_text({"op": op, "d": {key: value}}),
                        st.sampled_from([4, 8, 31, 43]),
                        st.sampled_from(["guild_id", "guild_ids", "channel_id", "nonce"]),
                        st.one_of(STRINGS, st.lists(STRINGS, max_size=2), JSON))
FRAMES = st.one_of(SESSION_OPS, PAYLOADS, BODIES)
# What the gateway may close a hostile frame with: Discord's 4xxx codes (gateway-protocol.md).
CLOSE_CODES = set(range(4000, 4015))


# ---- gateway frames, sans-I/O ---------------------------------------------------------------


def _core() -> GatewayCore:
    core = GatewayCore(GatewayConfig(heartbeat_interval_ms=1000, identify_window=0.0),
                       Trace(clock=lambda: 0.0), random.Random(3))
    core.set_urls("wss://discovery.test", "wss://resume.test")
    core.start(0.0)
    return core


def _drain(conn: Any) -> list[Any]:
    out = []
    for action in conn.take_actions():
        if isinstance(action, Send):
            for message in action.messages:  # must be sendable: UTF-8 text or bytes
                out.append(json.loads(message.encode() if isinstance(message, str) else message))
        else:
            out.append(action)
    return out


@settings(SETTINGS, max_examples=600)
@given(identified=st.booleans(), frames=st.lists(FRAMES, min_size=1, max_size=3))
@example(identified=True, frames=['{"op": 43, "d": {"guild_id": "\\ud800"}}'])  # issue 17.3
def test_any_frame_gets_an_answer_or_a_4xxx_close_and_the_next_client_is_served(
        identified: bool, frames: list[str]) -> None:
    core = _core()
    conn = core.open_connection(core.new_conn_id(), "discovery", "/", {"v": "10"}, 0.0)
    _drain(conn)
    if identified:
        conn.receive(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 513,
                                                "properties": {}}}), 0.0)
        _drain(conn)
    for frame in frames:
        conn.receive(frame, 0.0)
        for action in _drain(conn):
            if isinstance(action, Close):
                assert action.code in CLOSE_CODES, (frame[:80], action)
    good = core.open_connection(core.new_conn_id(), "discovery", "/", {"v": "10"}, 0.0)
    _drain(good)
    good.receive(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 513,
                                            "properties": {}}}), 0.0)
    assert any(isinstance(a, dict) and a.get("t") == "READY" for a in _drain(good))


@SETTINGS
@given(query=st.dictionaries(st.sampled_from(["v", "encoding", "compress"]), STRINGS.filter(
    lambda s: len(s) < 10_000), max_size=3))
def test_any_query_opens_or_closes_with_4xxx(query: dict[str, str]) -> None:
    core = _core()
    conn = core.open_connection(core.new_conn_id(), "discovery", "/", query, 0.0)
    for action in _drain(conn):
        if isinstance(action, Close):
            assert action.code in CLOSE_CODES


# ---- controls, sans-I/O -----------------------------------------------------------------------


@SETTINGS
@given(action=st.one_of(st.sampled_from(sorted(CONTROLS)), STRINGS),
       target=st.one_of(JSON, st.sampled_from(["all", "next"])),
       params=st.dictionaries(st.one_of(st.sampled_from(["on", "ms", "code", "reason", "status",
                                                         "close_after_ms", "count", "d",
                                                         "listener", "remaining"]), STRINGS),
                              JSON, max_size=3))
def test_validate_refuses_with_user_error_or_returns_sendable_params(
        action: Any, target: Any, params: dict[str, Any]) -> None:
    try:
        checked = validate(action, target, params)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    json.dumps(checked, ensure_ascii=False, allow_nan=False).encode()


# ---- a real serve process: frames, REST, control -------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
        assert proc.poll() is None, "serve exited"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def _served_normally(served: dict[str, Any]) -> None:
    with connect(served["gateway_url"] + "/?v=10&encoding=json", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["op"] == 10
        ws.send(json.dumps({"op": 1, "d": None}))
        assert json.loads(ws.recv(timeout=10))["op"] == 11


@SETTINGS
@given(frame=FRAMES)
def test_serve_answers_any_frame_with_a_4xxx_close_or_lives_on(served: dict[str, Any],
                                                                frame: str) -> None:
    with connect(served["gateway_url"] + "/?v=10&encoding=json", open_timeout=10,
                 max_size=2**22) as ws:
        ws.recv(timeout=10)
        try:
            ws.send(frame)
            ws.send(json.dumps({"op": 1, "d": None}))
            while json.loads(ws.recv(timeout=10))["op"] != 11:
                pass
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code in CLOSE_CODES, closed
    _served_normally(served)


REST_PATHS = ["/interactions", "/users/@me", "/gateway/bot", "/applications/1/commands",
              "/nowhere"]


@SETTINGS
@given(path=st.sampled_from(REST_PATHS), body=BODIES, multipart=st.booleans())
def test_rest_answers_any_body_below_500(served: dict[str, Any], path: str, body: str,
                                         multipart: bool) -> None:
    headers = {"authorization": f"Bot {TOKEN}"}
    with httpx.Client(headers=headers, timeout=30) as http:
        if multipart:
            answer = http.post(served["rest_url"] + path, files={"payload_json": (None, body)})
        else:
            answer = http.post(served["rest_url"] + path, content=body.encode(
                "utf-8", "surrogatepass"), headers={"content-type": "application/json"})
    assert answer.status_code < 500, (path, body[:80], answer.text[:200])
    _served_normally(served)


# Actions that change every later connection (or the start limit) are left to the sans-I/O test
# above: here they would stop the next good client.
SAFE_ACTIONS = sorted(set(CONTROLS) - {"reject_upgrade", "delay_hello", "go_silent",
                                       "session_start_remaining", "withhold_acks"})


@SETTINGS
@given(action=st.one_of(st.sampled_from(SAFE_ACTIONS), STRINGS),
       params=st.dictionaries(st.one_of(st.sampled_from(["code", "reason", "close_after_ms",
                                                         "count", "d", "resumable"]), STRINGS),
                              JSON, max_size=3),
       raw=st.one_of(st.none(), BODIES))
def test_the_control_endpoint_answers_200_or_400(served: dict[str, Any], action: Any,
                                                 params: dict[str, Any], raw: str | None) -> None:
    # Aimed at a connection that does not exist: every check runs, nothing is changed.
    body = raw if raw is not None else as_text({"action": action, "target": 10**6,
                                                "params": params})
    with httpx.Client(timeout=30) as http:
        answer = http.post(served["control_url"], content=body.encode("utf-8", "surrogatepass"),
                           headers={"authorization": f"Bearer {served['control_token']}"})
    assert answer.status_code == 400, (body[:120], answer.text[:200])
    _served_normally(served)


# ---- the proxy API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_api() -> Iterator[httpx.Client]:
    with ToxiproxyServerThread(seed=7) as running, httpx.Client(base_url=running.url,
                                                                timeout=30) as client:
        yield client


PROXY_PATHS = ["/proxies", "/populate", "/proxies/p", "/proxies/p/toxics",
               "/proxies/p/toxics/t"]
PROXY_FIELDS = ["name", "upstream", "type", "toxicity", "attributes", "stream", "latency",
                "enabled", "rate"]


@SETTINGS
@given(path=st.sampled_from(PROXY_PATHS), body=st.one_of(BODIES, st.dictionaries(
    st.one_of(st.sampled_from(PROXY_FIELDS), STRINGS), JSON, max_size=4).map(as_text)))
def test_the_proxy_api_answers_below_500_and_every_listing_still_works(
        proxy_api: httpx.Client, path: str, body: str) -> None:
    api = proxy_api
    for name in api.get("/proxies").json():
        api.delete(f"/proxies/{name}")
    api.post("/proxies", json={"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"})
    api.post("/proxies/p/toxics", json={"type": "noop", "name": "t"})
    answer = api.post(path, content=body.encode("utf-8", "surrogatepass"))
    if answer.status_code == 500:  # Go's listen errors are 500s too; nothing else is
        assert answer.json()["error"].startswith("listen tcp"), answer.text[:200]
    listed = api.get("/proxies")
    assert listed.status_code == 200
    for name in listed.json():
        quoted = httpx.URL("/proxies/").join(name.replace("/", "%2F")).raw_path.decode()
        assert api.get(quoted).status_code in (200, 404)
    assert api.get("/proxies/p/toxics").status_code in (200, 404)


# ---- the scenario loader -------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


TOML_VALUES = st.recursive(st.one_of(st.booleans(), NUMBERS, STRINGS),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=6)
FIELDS = ["duration", "recovery_bound", "at", "step_duration", "toxicity", "latency", "code",
          "close_after_ms", "heartbeat_interval", "delay"]


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(FIELDS), TOML_VALUES, min_size=1, max_size=3),
       control=st.booleans())
def test_the_loader_refuses_with_one_line_or_loads(values: dict[str, Any], control: bool,
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   ) -> None:
    v = {f: _toml(values[f]) if f in values else None for f in FIELDS}

    def pick(field: str, default: str) -> str:
        return v[field] if v[field] is not None else default

    step = (f'kind = "control"\naction = "reconnect"\n'
            f'params = {{ close_after_ms = {pick("close_after_ms", "100")} }}\n'
            if control else
            f'kind = "toxic"\ntype = "latency"\n'
            f'attributes = {{ latency = {pick("latency", "100")} }}\n'
            f'toxicity = {pick("toxicity", "1.0")}\nduration = {pick("step_duration", "0.5")}\n')
    start = (f'start = {{ at = {pick("at", "0.5")} }}' if "delay" not in values else
             f'start = {{ after = "ready", delay = {pick("delay", "0.5")} }}')
    text = (f'name = "p"\nsource = "seed"\ndescription = "A generated scenario to check the '
            f'loader."\n[gateway]\nheartbeat_interval = {pick("heartbeat_interval", "1000")}\n'
            f'[expect]\nrecovery_bound = {pick("recovery_bound", "3.0")}\n'
            f'duration = {pick("duration", "2.0")}\n[[steps]]\n{step}{start}\n')
    path = tmp_path_factory.mktemp("s") / "p.toml"
    try:
        scenario = parse_scenario(text, path)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}:"), str(exc)[:200]
        return
    expect = scenario.expect
    assert 0 < expect.duration < float("inf") and 0 <= expect.recovery_bound < float("inf")
    for s in scenario.steps:
        json.dumps(s.params, allow_nan=False, ensure_ascii=False).encode()
        assert s.toxicity == s.toxicity  # not NaN
