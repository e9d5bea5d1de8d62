"""Hypothesis throws malformed and out-of-order frames at the gateway.

The core never raises, closes with the code Discord would send (a small independent model of
gateway-protocol.md sections 2, 4, 7 and 12 decides which), and a neighbouring session keeps
working. A smaller run does the same over real loopback sockets.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_gateway.config import DEFINED_INTENTS, GatewayConfig
from fake_gateway.opened import open_gateway
from fake_gateway.protocol import Close, GatewayCore, Send
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from gateway_common.trace import Trace

TOKEN = GatewayConfig().token
SESSION_OPS = (3, 4, 8, 31, 43)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6,
)
good_identify = st.builds(
    lambda intents, shard: {"token": TOKEN, "intents": intents, "properties": {"os": "x"},
                            **({"shard": shard} if shard is not None else {})},
    st.sampled_from([0, 1, 513, DEFINED_INTENTS, 1 << 17, -1]),
    st.none() | st.sampled_from([[0, 1], [1, 2], [2, 2], [0], [0, 0], ["0", 1]]),
)
payload_d = st.one_of(
    json_values,
    good_identify,
    st.builds(lambda seq: {"token": TOKEN, "session_id": "f" * 32, "seq": seq},
              st.none() | st.integers(0, 5) | st.text(max_size=2)),
    st.fixed_dictionaries({"guild_id": st.sampled_from(["1", 1, None, True])}),
    st.fixed_dictionaries({"guild_ids": st.sampled_from([["1"], "1", []])}),
)
frames = st.one_of(
    st.builds(lambda op, d: json.dumps({"op": op, "d": d}),
              st.sampled_from([1, 1, 1, 2, 2, 3, 4, 6, 8, 31, 43, 0, 5, 7, 9, 10, 11, 99, -1]),
              payload_d),
    st.builds(lambda op: json.dumps({"op": op, "d": None}),
              st.sampled_from(["1", 1.5, None, True, [1]])),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.builds(lambda n: json.dumps({"op": 1, "d": None, "pad": "x" * n}),
              st.integers(4060, 4100)),
    st.sampled_from(["[]", "null", "1", '"x"', "{}", '{"d":1}']),
)


def expected_close(frame: str | bytes, state: dict[str, bool]) -> int | None:
    """What Discord sends back for one client frame, or None if it keeps the socket open."""
    raw = frame.encode() if isinstance(frame, str) else frame
    if len(raw) > 4096:
        return 4002
    try:
        payload = json.loads(raw)
    except ValueError:
        return 4002
    if not isinstance(payload, dict):
        return 4002
    op, d = payload.get("op"), payload.get("d")
    if type(op) is not int or op not in (1, 2, 3, 4, 6, 8, 31, 43):
        return 4001
    if op == 1:
        return None if d is None or type(d) is int else 4001
    if op == 2:
        if state["authed"]:
            return 4005
        if not isinstance(d, dict) or not isinstance(d.get("token"), str) or not isinstance(
                d.get("properties"), dict):
            return 4001
        if d["token"] != TOKEN:
            return 4004
        intents = d.get("intents")
        if intents is None and type(d.get("capabilities")) is int:
            intents = 0  # a user-account IDENTIFY (the midjourney client)
        if type(intents) is not int or intents < 0 or intents & ~DEFINED_INTENTS:
            return 4013
        shard = d.get("shard")
        if shard is not None and not (isinstance(shard, list) and len(shard) == 2
                                      and all(type(x) is int for x in shard)
                                      and 0 <= shard[0] < shard[1]):
            return 4010
        state["authed"] = True
        return None
    if op == 6:
        if state["authed"]:
            return 4005
        if not (isinstance(d, dict) and isinstance(d.get("token"), str)
                and isinstance(d.get("session_id"), str)
                and (d.get("seq") is None or type(d.get("seq")) is int)):
            return 4001
        return None if d["token"] == TOKEN else 4004  # unknown session: op 9, stays open
    if not state["authed"]:
        return 4003
    if not isinstance(d, dict):
        return 4001
    if op in (4, 8) and (type(d.get("guild_id")) not in (str, int)):
        return 4001
    if op == 31 and not isinstance(d.get("guild_ids"), list):
        return 4001
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(frames, min_size=1, max_size=12))
def test_core_closes_like_discord_and_spares_other_sessions(batch: list[str | bytes]) -> None:
    config = GatewayConfig(heartbeat_interval_ms=1000, guilds=2, max_concurrency=64,
                           identify_window=0.0, max_guilds_per_shard=2500)
    core = GatewayCore(config, Trace(clock=lambda: 0.0), random.Random(0))
    neighbour = core.open_connection(core.new_conn_id(), "discovery", "/", {"v": "10"}, 0.0)
    neighbour.receive(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 1,
                                                 "properties": {}}}), 0.0)
    neighbour.take_actions()
    conn = core.open_connection(core.new_conn_id(), "discovery", "/", {"v": "10"}, 0.0)
    conn.take_actions()
    state = {"authed": False}
    expected: int | None = None
    for n, frame in enumerate(batch):
        expected = expected_close(frame, state)
        conn.receive(frame, n * 0.01)
        if expected is not None:
            break
    closes = [a for a in conn.take_actions() if isinstance(a, Close)]
    assert [c.code for c in closes] == ([expected] if expected is not None else [])
    # the neighbour's session is untouched and still answers heartbeats
    neighbour.receive('{"op":1,"d":1}', 1.0)
    replies = [json.loads(m) for a in neighbour.take_actions() if isinstance(a, Send)
               for m in a.messages]
    assert replies == [{"op": 11, "d": None, "s": None, "t": None}]
    assert neighbour.session is not None and neighbour.session.alive


async def start_gateway(nursery: trio.Nursery) -> Any:
    config = GatewayConfig(heartbeat_interval_ms=500, heartbeat_deadline=False, guilds=1,
                           max_concurrency=64, identify_window=0.0, rate_limit_frames=100_000)
    gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(0))
    return await nursery.start(open_gateway, gateway)


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(frames, min_size=1, max_size=6))
async def test_over_the_wire_junk_never_breaks_the_server(batch: list[str | bytes]) -> None:
    # A fresh gateway per example: Hypothesis runs each example in its own trio.run.
    handler = _ErrorCollector()
    logging.getLogger("websockets").addHandler(handler)
    try:
        async with trio.open_nursery() as nursery:
            urls = await start_gateway(nursery)
            await _throw(urls, batch)
            nursery.cancel_scope.cancel()
    finally:
        logging.getLogger("websockets").removeHandler(handler)
    assert handler.errors == []


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage())


async def _throw(urls: Any, batch: list[str | bytes]) -> None:
    async with raw_client(urls.gateway_url) as neighbour:
        await neighbour.recv_op(10)
        await neighbour.identify(TOKEN)
        async with raw_client(urls.gateway_url) as client:
            await client.recv_op(10)
            state = {"authed": False}
            expected = None
            for frame in batch:
                expected = expected_close(frame, state)
                await client.send(frame)
                if expected is not None:
                    break
            if expected is not None:
                assert await client.expect_close() == expected
            else:
                assert (await client.heartbeat(None))["op"] == 11
        assert (await neighbour.heartbeat(1))["op"] == 11
        await neighbour.close(4000)
