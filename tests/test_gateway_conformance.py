"""Conformance of the fake gateway over real loopback TCP, driven by a raw websockets client.

Each test states one rule of gateway-protocol.md (sections 1-11) a client would notice.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import RawGatewayClient, raw_client, start_gateway
from gateway_common.trace import Trace

Start = Callable[..., Awaitable[tuple[FakeGateway, OpenedGateway]]]
TOKEN = GatewayConfig().token


@pytest.fixture
def start(nursery: trio.Nursery) -> Start:
    async def start(tls: bool = False, rest: bool = False, **overrides: Any
                    ) -> tuple[FakeGateway, OpenedGateway]:
        return await start_gateway(nursery, tls=tls, rest=rest, **{
            "heartbeat_interval_ms": 300, "heartbeat_deadline": False, "max_concurrency": 16,
            "identify_window": 0.0, "guilds": 2, **overrides})

    return start


async def ready_session(client: RawGatewayClient, **kwargs: Any) -> dict[str, Any]:
    await client.recv_op(10)
    return await client.identify(TOKEN, **kwargs)


async def collect_dispatches(client: RawGatewayClient, count: int) -> list[dict[str, Any]]:
    return [await client.recv_op(0) for _ in range(count)]


# ---- HELLO, heartbeats ---------------------------------------------------------------------


async def test_hello_comes_first_with_null_s_and_t(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        hello = await client.recv()
        assert hello["op"] == 10 and hello["s"] is None and hello["t"] is None
        assert hello["d"]["heartbeat_interval"] == 300


async def test_heartbeat_is_acked_before_identify_and_after(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        ack = await client.heartbeat(None)
        assert ack == {"op": 11, "d": None, "s": None, "t": None}
        await client.identify(TOKEN)
        await client.heartbeat(1)


async def test_server_closes_a_client_that_stops_heartbeating(start: Start) -> None:
    # A 1.5 s deadline: handshake, IDENTIFY, READY and the ACK take ~15 ms on a loaded machine.
    gateway, urls = await start(heartbeat_deadline=True, heartbeat_interval_ms=1000)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.heartbeat(1)
        assert await client.expect_close(timeout=30) == 1000  # the code field reports saw
    # resumable by default (docs): RESUME on the resume URL works
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], 3)
        assert (await client.recv_op(0))["t"] == "RESUMED"


async def test_heartbeat_deadline_knobs_pick_code_and_resumability(start: Start) -> None:
    gateway, urls = await start(heartbeat_deadline=True, heartbeat_interval_ms=1000,
                                heartbeat_deadline_close_code=4009,
                                heartbeat_deadline_resumable=False)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        assert await client.expect_close(timeout=30) == 4009
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], 3)
        assert (await client.recv_op(9))["d"] is False


async def test_heartbeats_keep_the_connection_past_the_deadline(start: Start) -> None:
    gateway, urls = await start(heartbeat_deadline=True, heartbeat_interval_ms=1000)
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        for _ in range(10):  # 2 s, past the 1.5 s deadline; each gap under 1/7 of it
            await trio.sleep(0.2)
            await client.heartbeat(3)
        assert len(gateway.connections) == 1


# ---- IDENTIFY and READY ---------------------------------------------------------------------


async def test_ready_then_one_guild_create_per_guild(start: Start) -> None:
    gateway, urls = await start(guilds=3)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        assert ready["s"] == 1
        d = ready["d"]
        assert d["resume_gateway_url"] == urls.resume_listener_url
        assert d["user"]["id"] == "100000000000000001" and d["user"]["bot"] is True
        assert d["application"]["flags"] == 0 and "shard" not in d
        guild_ids = [g["id"] for g in d["guilds"]]
        assert len(guild_ids) == 3 and all(g["unavailable"] for g in d["guilds"])
        creates = await collect_dispatches(client, 3)
        assert [c["t"] for c in creates] == ["GUILD_CREATE"] * 3
        assert [c["s"] for c in creates] == [2, 3, 4]
        assert [c["d"]["id"] for c in creates] == guild_ids


async def test_ready_echoes_shard_and_lists_only_its_guilds(start: Start) -> None:
    gateway, urls = await start(guilds=8)
    async with raw_client(urls.gateway_url) as a, raw_client(urls.gateway_url) as b:
        ready_a = await ready_session(a, shard=[0, 2])
        ready_b = await ready_session(b, shard=[1, 2])
        assert ready_a["d"]["shard"] == [0, 2] and ready_b["d"]["shard"] == [1, 2]
        ids_a = {int(g["id"]) for g in ready_a["d"]["guilds"]}
        ids_b = {int(g["id"]) for g in ready_b["d"]["guilds"]}
        assert ids_a | ids_b == set(gateway.core.guild_ids) and not ids_a & ids_b
        assert all((g >> 22) % 2 == 0 for g in ids_a)


async def test_identify_before_hello_is_accepted(start: Start) -> None:
    gateway, urls = await start()
    gateway.controls.apply("delay_hello", "next", ms=300)
    async with raw_client(urls.gateway_url) as client:
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        first = await client.recv()
        assert first["op"] == 10  # HELLO still comes first
        assert (await client.recv())["t"] == "READY"


BAD_IDENTIFY = [
    pytest.param({"token": "wrong", "intents": 1, "properties": {}}, 4004, id="bad-token"),
    pytest.param({"token": TOKEN, "intents": 1 << 17, "properties": {}}, 4013, id="undefined-bit"),
    pytest.param({"token": TOKEN, "intents": "1", "properties": {}}, 4013, id="intents-string"),
    pytest.param({"token": TOKEN, "properties": {}}, 4013, id="no-intents"),
    pytest.param({"token": TOKEN, "intents": 1, "properties": {}, "shard": [2, 2]}, 4010,
                 id="shard-id-too-big"),
    pytest.param({"token": TOKEN, "intents": 1, "properties": {}, "shard": [0]}, 4010,
                 id="shard-malformed"),
    pytest.param({"token": TOKEN, "intents": 1, "properties": {}, "shard": [0, 0]}, 4010,
                 id="zero-shards"),
    pytest.param({"intents": 1, "properties": {}}, 4001, id="no-token"),
    pytest.param([1, 2], 4001, id="d-not-object"),
]


@pytest.mark.parametrize(("d", "code"), BAD_IDENTIFY)
async def test_identify_validation_close_codes(start: Start, d: Any, code: int) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": d})
        assert await client.expect_close() == code


async def test_privileged_intent_not_allowed_gets_4014(start: Start) -> None:
    _, urls = await start(allowed_privileged_intents=0)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1 << 15, "properties": {}}})
        assert await client.expect_close() == 4014


async def test_too_many_guilds_for_one_shard_gets_4011(start: Start) -> None:
    _, urls = await start(guilds=3, max_guilds_per_shard=2)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        assert await client.expect_close() == 4011


async def test_second_identify_gets_4005(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        assert await client.expect_close() == 4005


@pytest.mark.parametrize("op", [3, 4, 8, 31, 43])
async def test_other_ops_before_identify_get_4003(start: Start, op: int) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": op, "d": {"guild_id": "1"}})
        assert await client.expect_close() == 4003


@pytest.mark.parametrize(("frame", "code"), [
    pytest.param({"op": 5, "d": None}, 4001, id="unknown-op"),
    pytest.param({"op": 11, "d": None}, 4001, id="client-sends-ack"),
    pytest.param({"op": "1", "d": None}, 4001, id="op-string"),
    pytest.param({"op": 1, "d": "x"}, 4001, id="heartbeat-d-string"),
    pytest.param("{not json", 4002, id="not-json"),
    pytest.param("[1,2]", 4002, id="not-object"),
    pytest.param(json.dumps({"op": 1, "d": None, "pad": "x" * 4100}), 4002, id="over-4096"),
    pytest.param(b"\x00\xff\x10", 4002, id="binary-junk"),
])
async def test_bad_frames_get_discord_close_codes(start: Start, frame: Any, code: int) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send(frame)
        assert await client.expect_close() == code
    assert gateway.trace.of_kind("frame_bad") or code == 4001


async def test_payload_of_exactly_4096_bytes_is_fine(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        base = json.dumps({"op": 1, "d": None, "pad": ""})
        await client.send(json.dumps({"op": 1, "d": None, "pad": "x" * (4096 - len(base))}))
        assert (await client.recv())["op"] == 11


@pytest.mark.parametrize(("query", "code"), [("v=8&encoding=json", 4012),
                                              ("v=abc&encoding=json", 4012),
                                              ("v=10&encoding=msgpack", 4002)])
async def test_bad_query_gets_closed(start: Start, query: str, code: int) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url, query=query) as client:
        assert await client.expect_close() == code


async def test_v9_and_a_resume_url_without_slash_are_accepted(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url, query="v=9&encoding=json") as client:
        assert (await client.recv())["op"] == 10


# ---- rate limits ----------------------------------------------------------------------------


async def test_more_than_the_frame_budget_gets_4008(start: Start) -> None:
    _, urls = await start(rate_limit_frames=5)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        for _ in range(5):
            await client.heartbeat(None)  # heartbeats count too
        await client.send({"op": 1, "d": None})
        assert await client.expect_close() == 4008


async def test_identify_concurrency_overflow_gets_op9(start: Start) -> None:
    gateway, urls = await start(max_concurrency=2, identify_window=30.0)
    async with raw_client(urls.gateway_url) as a, raw_client(urls.gateway_url) as b, \
            raw_client(urls.gateway_url) as c:
        await ready_session(a, shard=[0, 4])
        await ready_session(b, shard=[1, 4])  # other bucket: fine
        await c.recv_op(10)
        await c.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {},
                                     "shard": [2, 4]}})  # bucket 0 again within 30 s
        assert (await c.recv_op(9))["d"] is False
    budget = gateway.trace.of_kind("identify_budget")
    assert [r["bucket"] for r in budget] == [0, 1]


async def test_session_start_limit_counts_identifies(start: Start) -> None:
    import httpx

    gateway, urls = await start(rest=True, session_start_total=2)
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{urls.rest_url}/gateway/bot", headers=headers)).json()
        async with raw_client(urls.gateway_url) as client:
            await ready_session(client)
        after = (await http.get(f"{urls.rest_url}/gateway/bot", headers=headers)).json()
    assert before["session_start_limit"]["remaining"] == 2
    assert after["session_start_limit"]["remaining"] == 1
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
    async with raw_client(urls.gateway_url) as client:  # budget used up
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        assert await client.expect_close() == 4004


# ---- RESUME ---------------------------------------------------------------------------------


async def _session_with_missed_events(
        start: Start, missed: int, buffer: int = 1000, **overrides: Any
) -> tuple[FakeGateway, OpenedGateway, str, int]:
    """IDENTIFY, read everything, disconnect resumably (4000), then miss `missed` events.
    Returns (gateway, urls, session_id, last seq the client saw)."""
    gateway, urls = await start(guilds=1, replay_buffer=buffer, **overrides)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.recv_dispatch("GUILD_CREATE")
        gateway.controls.apply("burst", "all", count=3)
        seen = await collect_dispatches(client, 3)
        await client.close(4000)
    session_id = ready["d"]["session_id"]
    await wait_detached(gateway, session_id)
    if missed:
        gateway.controls.apply("burst", "all", count=missed)
    return gateway, urls, session_id, seen[-1]["s"]


async def wait_detached(gateway: FakeGateway, session_id: str) -> None:
    with trio.fail_after(5):
        while gateway.sessions[session_id].conn_id is not None:
            await trio.sleep(0.01)


@pytest.mark.parametrize("behind", [0, 1, 4, 7])
async def test_resume_replays_exactly_the_missed_dispatches(start: Start, behind: int) -> None:
    """seq = last replays nothing; seq = last - k replays exactly k, in order, then RESUMED."""
    gateway, urls, session_id, last_seen = await _session_with_missed_events(start, missed=4)
    newest = last_seen + 4
    seq = newest - behind
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, seq)
        got = [await client.recv_op(0) for _ in range(behind + 1)]
        assert [p["s"] for p in got] == list(range(seq + 1, newest + 2))
        assert got[-1]["t"] == "RESUMED" and got[-1]["s"] == newest + 1
        assert all(p["t"] == "TYPING_START" for p in got[:-1]) or seq < 2
        # the seq keeps counting after the resume
        gateway.controls.apply("burst", "all", count=1)
        assert (await client.recv_op(0))["s"] == newest + 2
    resumed = [r for r in gateway.trace.of_kind("frame_out") if r.get("t") == "RESUMED"]
    assert resumed[-1]["replayed"] == behind


async def test_replayed_dispatches_are_the_same_bytes_as_the_originals(start: Start) -> None:
    gateway, urls = await start(guilds=1)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.recv_dispatch("GUILD_CREATE")
        gateway.controls.apply("burst", "all", count=5)
        originals = await collect_dispatches(client, 5)
        await client.close(4000)
    await wait_detached(gateway, ready["d"]["session_id"])
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], originals[0]["s"] - 1)
        assert await collect_dispatches(client, 5) == originals


async def test_resume_at_the_edges_of_the_replay_buffer(start: Start) -> None:
    """The oldest kept dispatch can be replayed; one older than that cannot (4007)."""
    gateway, urls, session_id, last_seen = await _session_with_missed_events(
        start, missed=6, buffer=5)
    newest = last_seen + 6
    oldest_kept = newest - 4
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, oldest_kept - 1)
        got = await collect_dispatches(client, 6)
        assert [p["s"] for p in got] == list(range(oldest_kept, newest + 2))
        await client.close(4000)
    await wait_detached(gateway, session_id)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, oldest_kept - 2)
        assert await client.expect_close() == 4007


@pytest.mark.parametrize("knob", ["close_4007", "op9"])
async def test_resume_with_seq_beyond_last(start: Start, knob: str) -> None:
    gateway, urls, session_id, last_seen = await _session_with_missed_events(
        start, missed=0, bad_seq_response=knob)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, last_seen + 1)
        if knob == "op9":
            assert (await client.recv_op(9))["d"] is False
        else:
            assert await client.expect_close() == 4007
    assert gateway.sessions[session_id].state == "invalidated"


async def test_resume_of_unknown_session_gets_op9_false(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, "0" * 32, 1)
        assert (await client.recv_op(9))["d"] is False


@pytest.mark.parametrize("code", [1000, 1001])
async def test_client_close_1000_or_1001_kills_the_session(start: Start, code: int) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.close(code)
    session_id = ready["d"]["session_id"]
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_op(9))["d"] is False
    closes = gateway.trace.of_kind("conn_close")
    assert closes[0]["by"] == "client" and closes[0]["code"] == code


@pytest.mark.parametrize("how", ["4000", "empty_close_frame", "tcp_reset", "tcp_fin"])
async def test_other_disconnects_keep_the_session_resumable(start: Start, how: str) -> None:
    from harness.faults.memnet import abort_stream

    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        ws = client.ws
        if how == "4000":
            await client.close(4000)
        elif how == "empty_close_frame":
            async with ws.send_context():
                ws.protocol.send_close()
        elif how == "tcp_reset":
            abort_stream(ws.stream)
        else:
            await ws.stream.aclose()
    session_id = ready["d"]["session_id"]
    await wait_detached(gateway, session_id)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_dispatch("RESUMED"))["s"] == 4
    close = gateway.trace.of_kind("conn_close")[0]
    expected = {"4000": ("client", 4000), "empty_close_frame": ("client", None),
                "tcp_reset": ("network", None), "tcp_fin": ("network", None)}[how]
    assert (close["by"], close["code"]) == expected


async def test_session_expires_after_its_ttl(start: Start) -> None:
    gateway, urls = await start(session_ttl=0.2)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.close(4000)
    session_id = ready["d"]["session_id"]
    with trio.fail_after(5):
        while gateway.sessions[session_id].state != "expired":
            await trio.sleep(0.05)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_op(9))["d"] is False


async def test_resume_moves_a_session_off_a_still_open_socket(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as old:
        ready = await ready_session(old)
        async with raw_client(urls.resume_listener_url) as new:
            await new.recv_op(10)
            await new.resume(TOKEN, ready["d"]["session_id"], 3)
            await new.recv_dispatch("RESUMED")
            assert await old.expect_close() == 4000
            gateway.controls.apply("burst", "all", count=1)
            assert (await new.recv_op(0))["s"] == 5


async def test_resume_on_discovery_url_is_noted_or_rejected(start: Start) -> None:
    gateway, urls = await start(resume_on_discovery="reject")
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.close(4000)
    await wait_detached(gateway, ready["d"]["session_id"])
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], 1)
        assert (await client.recv_op(9))["d"] is False
    assert any("discovery" in r["text"] for r in gateway.trace.of_kind("note"))


# ---- compression ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["zlib-stream", "zstd-stream"])
async def test_transport_compression_on_two_connections(start: Start, compress: str) -> None:
    gateway, urls = await start(guilds=2)
    for _ in range(2):  # a fresh context per connection: a fresh decoder must work
        async with raw_client(urls.gateway_url, compress=compress) as client:
            await ready_session(client)
            creates = await collect_dispatches(client, 2)
            assert [c["t"] for c in creates] == ["GUILD_CREATE"] * 2
            assert client.text_frames == 0 and client.binary_frames >= 4
            await client.close(4000)
    outs = gateway.trace.of_kind("frame_out")
    assert all(r["compressed"] for r in outs)


async def test_zlib_messages_split_across_frames_still_decode(start: Start) -> None:
    _, urls = await start(zlib_split=3)
    async with raw_client(urls.gateway_url, compress="zlib-stream") as client:
        ready = await ready_session(client)
        assert ready["s"] == 1
        assert client.binary_frames >= 6  # HELLO and READY, three frames each


# ---- sharding and synthetic events ----------------------------------------------------------


async def test_dispatches_follow_shard_routing(start: Start) -> None:
    gateway, urls = await start(guilds=6, dm_fraction=0.3)
    async with raw_client(urls.gateway_url) as a, raw_client(urls.gateway_url) as b:
        ready_a = await ready_session(a, shard=[0, 2])
        ready_b = await ready_session(b, shard=[1, 2])
        for client, ready in ((a, ready_a), (b, ready_b)):
            await collect_dispatches(client, len(ready["d"]["guilds"]))
        gateway.controls.apply("burst", "all", count=40)
        await trio.sleep(0.3)
        await a.close(4000)
        await b.close(4000)
    events_a = [s for s in gateway.sessions.values() if s.shard == (0, 2)][0].buffer
    events_b = [s for s in gateway.sessions.values() if s.shard == (1, 2)][0].buffer
    typing_a = [d.d for d in events_a if d.t == "TYPING_START"]
    typing_b = [d.d for d in events_b if d.t == "TYPING_START"]
    assert len(typing_a) + len(typing_b) == 40  # each event reaches exactly one shard
    assert all("guild_id" not in d or (int(d["guild_id"]) >> 22) % 2 == 0 for d in typing_a)
    assert all("guild_id" in d and (int(d["guild_id"]) >> 22) % 2 == 1 for d in typing_b)
    assert any("guild_id" not in d for d in typing_a)  # DMs go to shard 0 only


async def test_synthetic_events_arrive_at_the_configured_rate(start: Start) -> None:
    gateway, urls = await start(guilds=1, dispatch_rate=20)
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        await client.recv_dispatch("GUILD_CREATE")
        events = await collect_dispatches(client, 5)
        assert [e["d"]["_harness_n"] for e in events] == sorted(
            e["d"]["_harness_n"] for e in events)
        assert [e["s"] for e in events] == list(range(3, 8))


async def test_synthetic_content_depends_only_on_the_seed() -> None:
    def contents(seed: int) -> list[Any]:
        from fake_gateway.protocol import GatewayCore

        core = GatewayCore(GatewayConfig(guilds=4), Trace(), random.Random(seed))
        session = core.sessions.create(None, 1, core.guild_ids)
        for _ in range(20):
            core.emit_synthetic(0.0)
        return [d.d for d in session.buffer]

    assert contents(3) == contents(3)
    assert contents(3) != contents(4)


# ---- ops 3, 4, 8 ----------------------------------------------------------------------------


async def test_presence_voice_and_member_requests_are_answered(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await collect_dispatches(client, 2)
        guild = ready["d"]["guilds"][0]["id"]
        await client.send({"op": 3, "d": {"since": None, "activities": [], "status": "online",
                                          "afk": False}})
        await client.heartbeat(3)  # presence has no reply; the connection is fine
        await client.send({"op": 4, "d": {"guild_id": guild, "channel_id": "5",
                                          "self_mute": False, "self_deaf": False}})
        voice = await collect_dispatches(client, 2)
        assert [v["t"] for v in voice] == ["VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"]
        await client.send({"op": 8, "d": {"guild_id": guild, "query": "", "limit": 0,
                                          "nonce": "n1"}})
        chunk = await client.recv_op(0)
        assert chunk["t"] == "GUILD_MEMBERS_CHUNK" and chunk["d"]["nonce"] == "n1"
        assert chunk["d"]["chunk_index"] == 0 and chunk["d"]["chunk_count"] == 1
        await client.send({"op": 8, "d": {"guild_id": guild, "query": "", "limit": 0,
                                          "nonce": "n2"}})
        limited = await client.recv_op(0)
        assert limited["t"] == "RATE_LIMITED" and limited["d"]["opcode"] == 8
        assert limited["d"]["meta"] == {"guild_id": guild, "nonce": "n2"}
        assert limited["s"] == chunk["s"] + 1  # RATE_LIMITED is a dispatch with its own seq


# ---- TLS and REST ---------------------------------------------------------------------------


async def test_tls_gateway_and_rest_with_the_generated_ca(start: Start) -> None:
    import ssl

    import httpx

    gateway, urls = await start(tls=True, rest=True)
    assert urls.gateway_url.startswith("wss://") and urls.ca_file
    async with raw_client(urls.gateway_url, ca_file=urls.ca_file) as client:
        await ready_session(client)
    kinds = [r["kind"] for r in gateway.trace.records[:3]]
    assert kinds == ["conn_open", "tls_done", "ws_upgrade"]
    context = ssl.create_default_context(cafile=urls.ca_file)
    async with httpx.AsyncClient(verify=context) as http:
        response = await http.get(f"{urls.rest_url}/gateway")
    assert response.json() == {"url": urls.gateway_url}


async def test_rest_endpoints_real_libraries_call(start: Start) -> None:
    import httpx

    gateway, urls = await start(rest=True)
    api = urls.rest_url  # the /api/v10 base
    auth = {"Authorization": f"Bot {TOKEN}"}
    async with httpx.AsyncClient() as http:
        me = await http.get(f"{api}/users/@me", headers=auth)
        assert me.headers["content-type"] == "application/json"  # exactly, for discord.py
        assert me.json()["id"] == "100000000000000001"
        app = (await http.get(f"{api}/oauth2/applications/@me", headers=auth)).json()
        assert app["flags"] == 0 and app["id"] == me.json()["id"]
        assert (await http.get(f"{api}/users/@me")).status_code == 401
        assert (await http.get(f"{api}/users/@me", headers={"Authorization": TOKEN})
                ).status_code == 200  # the raw token (midjourney) is fine too
        commands = await http.get(f"{api}/applications/{app['id']}/commands", headers=auth)
        assert commands.json() == []
        assert (await http.get(f"{urls.rest_origin}/api/v9/soundboard-default-sounds",
                               headers=auth)).json() == []
        index = await http.get(f"{urls.rest_origin}/api/v9/guilds/1/application-command-index",
                               headers=auth)
        assert index.status_code == 200
        assert (await http.get(f"{api}/nope", headers=auth)).status_code == 404
        async with raw_client(urls.gateway_url) as client:
            await ready_session(client)
            await collect_dispatches(client, 2)
            posted = await http.post(f"{urls.rest_origin}/api/v9/interactions", headers=auth,
                                     json={"type": 2, "nonce": "abc"})
            assert posted.status_code == 204
            created = await client.recv_op(0)
            assert created["t"] == "INTERACTION_CREATE" and created["d"]["nonce"] == "abc"


async def test_control_endpoint_applies_actions_and_rejects_bad_ones(start: Start) -> None:
    import httpx

    gateway, urls = await start(rest=True)
    assert urls.control_url
    async with raw_client(urls.gateway_url) as client, httpx.AsyncClient(
            headers=urls.control_headers) as http:
        await ready_session(client)
        await collect_dispatches(client, 2)
        ok = await http.post(urls.control_url, json={"action": "reconnect", "target": "all"})
        assert ok.status_code == 200 and ok.json()["connections"] == [1]
        assert (await client.recv_op(7))["d"] is None
        bad = await http.post(urls.control_url, json={"action": "explode"})
        assert bad.status_code == 400 and "unknown action" in bad.json()["message"]
        bad = await http.post(urls.control_url, json={"action": "close", "params": {"code": 5}})
        assert bad.status_code == 400 and "code" in bad.json()["message"]
        state = (await http.get(f"{urls.rest_origin}/_harness/state")).json()
        assert state["sessions"][0]["conn"] == 1
    assert [r["action"] for r in gateway.trace.of_kind("control")] == ["reconnect"]


# ---- protocol-level faults ------------------------------------------------------------------


async def test_withhold_acks_drops_only_acks(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        await collect_dispatches(client, 2)
        gateway.controls.apply("withhold_acks", 1)
        await client.send({"op": 1, "d": 3})
        gateway.controls.apply("burst", 1, count=1)
        assert (await client.recv())["t"] == "TYPING_START"  # no ACK came before it
        gateway.controls.apply("withhold_acks", 1, on=False)
        assert (await client.heartbeat(4))["op"] == 11


async def test_withheld_ready_is_released_when_switched_off(start: Start) -> None:
    gateway, urls = await start()
    gateway.controls.apply("withhold_ready", "all")
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        ack = await client.heartbeat(None)  # ACKs continue while READY is held
        assert ack["op"] == 11
        with trio.move_on_after(0.3) as waited:
            await client.recv_op(0)
        assert waited.cancelled_caught
        gateway.controls.apply("withhold_ready", "all", on=False)
        assert (await client.recv_op(0))["t"] == "READY"


async def test_withheld_resumed_keeps_replay_but_holds_resumed(start: Start) -> None:
    gateway, urls, session_id, last_seen = await _session_with_missed_events(start, missed=2)
    gateway.controls.apply("withhold_resumed", "next")
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, last_seen)
        replay = await collect_dispatches(client, 2)
        assert [p["t"] for p in replay] == ["TYPING_START"] * 2
        with trio.move_on_after(0.3) as waited:
            await client.recv_op(0)
        assert waited.cancelled_caught
        gateway.controls.apply("withhold_resumed", 2, on=False)
        assert (await client.recv_op(0))["t"] == "RESUMED"


async def test_reconnect_before_hello_on_the_next_connection(start: Start) -> None:
    gateway, urls = await start()
    gateway.controls.apply("reconnect", "next")
    async with raw_client(urls.gateway_url) as client:
        assert (await client.recv())["op"] == 7
        assert (await client.recv())["op"] == 10


@pytest.mark.parametrize("resumable", [True, False])
async def test_invalid_session_on_demand(start: Start, resumable: bool) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        gateway.controls.apply("invalid_session", 1, resumable=resumable, close=True)
        assert (await client.recv_op(9))["d"] is resumable
        assert await client.expect_close() == 4000
    assert gateway.sessions[ready["d"]["session_id"]].alive is resumable


async def test_resume_on_the_same_socket_after_op9_true(start: Start) -> None:
    gateway, urls = await start(guilds=1)
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.recv_dispatch("GUILD_CREATE")
        gateway.controls.apply("invalid_session", 1, resumable=True)
        assert (await client.recv_op(9))["d"] is True
        await client.resume(TOKEN, ready["d"]["session_id"], 2)
        assert (await client.recv_op(0))["t"] == "RESUMED"


async def test_identify_on_the_resume_url_is_noted(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.resume_listener_url) as client:
        await ready_session(client)
    assert any("IDENTIFY on the resume URL" in r["text"] for r in gateway.trace.of_kind("note"))


async def test_close_with_a_code_and_with_an_empty_frame(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        gateway.controls.apply("close", 1, code=4000, reason="x")
        assert await client.expect_close() == 4000
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("close", 2, code=None)
        assert await client.expect_close() == 1005  # what an empty close frame looks like


async def test_reset_drops_the_connection_without_a_close_frame(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        gateway.controls.apply("reset", "all")
        assert await client.expect_close() is None
    assert gateway.sessions[ready["d"]["session_id"]].alive  # a reset keeps it resumable
    close = gateway.trace.of_kind("conn_close")[-1]
    assert close["how"] == "reset" and close["by"] == "server"


async def test_go_silent_answers_nothing_but_keeps_the_socket(start: Start) -> None:
    gateway, urls = await start(close_timeout=0.5)
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        await collect_dispatches(client, 2)
        gateway.controls.apply("go_silent", 1)
        await client.send({"op": 1, "d": 3})
        with trio.move_on_after(0.4) as waited:
            await client.recv()
        assert waited.cancelled_caught
        assert 1 in gateway.connections
        gateway.controls.apply("reset", 1)


async def test_ignore_client_close_never_answers_the_close_frame(start: Start) -> None:
    gateway, urls = await start(close_timeout=5.0)
    gateway.controls.apply("ignore_client_close", "all")
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        client.ws.close_timeout = 0.3
        await client.ws.aclose(4000)
        assert client.ws.protocol.close_rcvd is None  # the server never echoed it
    close = gateway.trace.of_kind("conn_close")[0]
    assert close["by"] == "client" and close["code"] == 4000


async def test_reject_upgrade_answers_http_503(start: Start) -> None:
    gateway, urls = await start()
    gateway.controls.apply("reject_upgrade", "all", listener="resume")
    with pytest.raises(InvalidStatus) as info:
        async with raw_client(urls.resume_listener_url):
            pass
    assert info.value.response.status_code == 503
    async with raw_client(urls.gateway_url) as client:  # the other listener still works
        await client.recv_op(10)
    gateway.controls.apply("reject_upgrade", "all", listener="resume", on=False)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
    assert gateway.trace.of_kind("ws_rejected")[0]["status"] == 503


async def test_heartbeat_request_sends_server_op1(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("heartbeat_request", "all", d="garbage")
        assert await client.recv() == {"op": 1, "d": "garbage", "s": None, "t": None}


@pytest.mark.parametrize("action", ["expire_session", "invalidate_session"])
async def test_expired_or_invalidated_sessions_cannot_resume(start: Start, action: str) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        ready = await ready_session(client)
        await client.close(4000)
    session_id = ready["d"]["session_id"]
    await wait_detached(gateway, session_id)
    gateway.controls.apply(action, "all", session_id=session_id)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_op(9))["d"] is False


async def test_delay_hello_holds_hello(start: Start) -> None:
    gateway, urls = await start()
    gateway.controls.apply("delay_hello", "all", ms=1500)
    async with raw_client(urls.gateway_url) as client:
        with trio.move_on_after(0.3) as waited:  # 1.2 s to spare for a slow start of the wait
            await client.recv()
        assert waited.cancelled_caught
        assert (await client.recv(timeout=30))["op"] == 10


async def test_controls_reject_bad_requests(start: Start) -> None:
    from gateway_common.errors import UserError

    gateway, _ = await start()
    with pytest.raises(UserError, match="unknown action"):
        gateway.controls.apply("nope")
    with pytest.raises(UserError, match="no open connection"):
        gateway.controls.apply("reconnect", 99)
    with pytest.raises(UserError, match="unknown parameter"):
        gateway.controls.apply("burst", "all", amount=1)
    with pytest.raises(UserError, match="target"):
        gateway.controls.apply("burst", "some")


async def test_trace_records_a_connection_life(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        await client.heartbeat(1)
        await client.close(4000)
    await wait_detached(gateway, next(iter(gateway.sessions)))
    records = gateway.trace.records
    kinds = [r["kind"] for r in records]
    assert kinds[:3] == ["conn_open", "ws_upgrade", "frame_out"]
    assert records[1]["query"] == {"v": "10", "encoding": "json"}
    beat = [r for r in records if r["kind"] == "frame_in" and r["op"] == 1][0]
    assert beat["d"] == 1
    identify = [r for r in records if r["kind"] == "frame_in" and r["op"] == 2][0]
    assert identify["token_ok"] is True
    close = [r for r in records if r["kind"] == "conn_close"][0]
    assert (close["by"], close["code"], close["how"]) == ("client", 4000, "close_frame")
    ts = [r["ts"] for r in records]
    assert ts == sorted(ts)


async def test_server_keeps_serving_after_a_client_disappears_mid_handshake(start: Start) -> None:
    gateway, urls = await start(tls=True)
    host, port = urls.gateway_url.removeprefix("wss://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"\x16\x03\x01\x00")  # half a TLS ClientHello, then gone
    await stream.aclose()
    async with raw_client(urls.gateway_url, ca_file=urls.ca_file) as client:
        assert (await client.recv())["op"] == 10
    with trio.fail_after(5):
        while not any(r["kind"] == "conn_close" and r["conn"] == 1
                      for r in gateway.trace.records):
            await trio.sleep(0.01)


def test_serve_cli_prints_one_json_line_and_stops_on_sigint(tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--tls", "on", "--tls-dir", str(tmp_path),
         "--heartbeat-interval-ms", "1000", "--trace", str(tmp_path / "trace.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        for key in ("gateway_url", "advertised_url", "rest_url", "token", "control_url",
                    "control_token", "ca_file"):
            assert key in line
        assert line["gateway_url"].startswith("wss://127.0.0.1:")
        assert line["ca_file"] == str(tmp_path / "ca.pem")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == ""  # exactly one line
    finally:
        proc.kill()


def test_serve_cli_rejects_bad_flags_in_one_line() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "harness", "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--host" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_closing_server_does_not_leak_connection_errors(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await ready_session(client)
        with pytest.raises(ConnectionClosed):
            gateway.controls.apply("close", 1, code=4000)
            while True:
                await client.ws.recv()
