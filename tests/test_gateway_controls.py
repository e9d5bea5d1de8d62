"""The fake gateway's control actions (protocol-level faults), from the table that defines them.

Every action of ``gateway_common.facts.CONTROLS`` and every parameter it takes is tried on the
control endpoint (over HTTP, and ``controls.validate``, which ``GatewayControls.apply`` and the
endpoint run) and in a scenario's ``kind = "control"`` step: both accept the same values and
refuse the same ones, naming the parameter, so a parameter added to or removed from the table
cannot go unnoticed. Each action's kind shows in the loader (one-shot actions take no duration)
and the oracle (switches are fault windows, policies are not).

Then single actions on a live gateway: invalid_session when op 9 races the client's RESUME (fuzz
seed 207210633: op 9 d=false means the session is gone, gateway-protocol.md section 6; the RESUME
that follows must get op 9 d=false too, not RESUMED; with d=true the session stays resumable), and
go_silent, which delays dispatches and never loses them.
"""

from __future__ import annotations

import json
import random
import re
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.controls import validate
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.errors import UserError
from gateway_common.facts import CONTROLS, JSON_TYPES, Param
from gateway_common.trace import Trace
from harness.oracle import RunView
from harness.scenario import parse_scenario

TOKEN = GatewayConfig().token

# ---- every action and parameter, from the table -----------------------------------------------


def _good(param: Param) -> Any:
    """A value the parameter takes."""
    if param.default is not None:
        return param.default
    if param.choices:
        return param.choices[0]
    if param.ranges:
        return param.ranges[0][0]
    return {bool: True, int: 1, float: 1.5, str: "x"}[param.types[0]]


def _refused(param: Param) -> list[tuple[str, Any]]:
    """(why, value) pairs the parameter refuses: a wrong type, a value out of its limits."""
    cases = [("type", value) for value in ("x", 1.5, True, [1])
             if param.types != JSON_TYPES and not param.accepts_type(value)][:1]
    if param.ranges:
        cases.append(("range", param.ranges[0][0] - 1))
    if param.choices:
        cases.append(("choice", "elsewhere"))
    return cases


# (action, param, value, refused: None or why) for every parameter of every action; `on` is the
# runner's to set in a scenario, so only the endpoint takes it.
CASES = [
    (action, name, value, why)
    for action, control in CONTROLS.items()
    for name, param in control.all_params.items()
    for why, value in [(None, _good(param)), *_refused(param)]
]


def _case_id(case: tuple[str, str, Any, str | None]) -> str:
    action, name, value, why = case
    return f"{action}-{name}-{why or 'ok'}"


def _scenario(action: str, params: dict[str, Any]) -> str:
    one_shot = CONTROLS[action].kind == "one_shot"
    table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
    return f"""name = "one-control"
source = "seed"
description = "One control step, to check what the loader takes."

[expect]
recovery_bound = 3.0
duration = 6.0

[[steps]]
kind = "control"
action = "{action}"
params = {{ {table} }}
start = {{ at = 1.0 }}
{"" if one_shot else "duration = 1.0"}
"""


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_the_endpoint_and_the_loader_take_and_refuse_the_same_params(case, tmp_path):
    action, name, value, why = case
    if why is None:
        assert validate(action, "all", {name: value})[name] == value
    else:
        with pytest.raises(UserError, match=rf"control {action}: (parameter '{name}'|{name} )"):
            validate(action, "all", {name: value})
    text = _scenario(action, {name: value})
    if name == "on":
        with pytest.raises(UserError, match=rf"control '{action}' has no param 'on'"):
            parse_scenario(text, tmp_path / "c.toml")
    elif why is None:
        assert parse_scenario(text, tmp_path / "c.toml").steps[0].params == {name: value}
    else:
        with pytest.raises(UserError, match=rf"c.toml:\d+: steps\[1\].params.{name}: "):
            parse_scenario(text, tmp_path / "c.toml")


@pytest.mark.parametrize("action", list(CONTROLS))
def test_an_unknown_param_is_refused_by_both(action: str, tmp_path):
    with pytest.raises(UserError, match="unknown parameter"):
        validate(action, "all", {"nonsense": 1})
    with pytest.raises(UserError, match=rf"control '{action}' has no param 'nonsense'"):
        parse_scenario(_scenario(action, {"nonsense": 1}), tmp_path / "c.toml")


async def test_the_control_endpoint_over_http_refuses_exactly_the_refused_params(
        nursery: trio.Nursery) -> None:
    gateway = FakeGateway(GatewayConfig(heartbeat_deadline=False), Trace(clock=trio.current_time),
                          random.Random(7))
    opened = await nursery.start(partial(open_gateway, gateway, rest_port=0))
    assert opened.control_url
    async with httpx.AsyncClient(headers=opened.control_headers) as http:
        for action, name, value, why in CASES:
            body = {"action": action, "target": "all", "params": {name: value}}
            answer = await http.post(opened.control_url, json=body)
            message = answer.json().get("message", "")
            if why is None:
                # A session_id that names no session is a good param for a missing session.
                assert answer.status_code == 200 or "no session" in message, (action, name)
            else:
                assert answer.status_code == 400 and name in message, (action, name, message)


@pytest.mark.parametrize("action", list(CONTROLS))
def test_each_kind_shows_in_the_loader_and_the_oracle(action: str, tmp_path):
    kind = CONTROLS[action].kind
    text = _scenario(action, {})
    with_duration = text if kind != "one_shot" else text + "duration = 1.0\n"
    if kind == "one_shot":
        with pytest.raises(UserError, match="happens once; it takes no duration"):
            parse_scenario(with_duration, tmp_path / "c.toml")
    else:
        assert parse_scenario(with_duration, tmp_path / "c.toml").steps[0].duration == 1.0
    # The control record the gateway writes, as the oracle reads it: a one-shot is an instant,
    # a switch a window that stays open until switched off, a policy no fault at all.
    params = validate(action, "all", {})
    record = {"ts": 1.0, "kind": "control", "action": action, "target": "all", "params": params}
    windows = RunView([record]).windows
    if kind == "policy":
        assert windows == []
    else:
        (window,) = windows
        assert (window.end == 1.0) if kind == "one_shot" else (window.end is None)


def test_the_readme_lists_every_action_with_its_params():
    """The controls table in the README (one row per action or group of actions) and the list
    of actions in its scenario example say what the table says."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Faults on demand (controls)", 1)[1].split("\n### ", 1)[0]
    documented: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`"):
            continue
        params = set(re.findall(r"`([a-z_]+)`", cells[2]))
        for action in re.findall(r"`([a-z_]+)`", cells[1]):
            documented[action] = params
    assert documented == {a: set(c.all_params) for a, c in CONTROLS.items()}
    example = readme.split("## Scenario files", 1)[1].split("```toml\n", 1)[1].split("```")[0]
    listed = example.split('kind = "control"', 1)[1].split("params =", 1)[0]
    assert set(re.findall(r"[a-z_]{4,}", listed.split("#", 1)[1])) == set(CONTROLS)


# ---- single actions on a live gateway ----------------------------------------------------------


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
