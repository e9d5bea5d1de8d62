"""Frame-level faults of the fake gateway (fake_gateway.frames, issue 13), each seen from a raw
`websockets` client over loopback TCP, as a real client would see it: server frames dropped,
held back, sent twice or out of order (picked by op or dispatch type, the next N or while on);
a GUILD_CREATE storm and a sustained dispatch flood; READY followed by only part of its
GUILD_CREATE stream, then a reset; a close in answer to every RESUME; an op 9 loop. Each act
leaves a ``frame_fault`` record, which the oracle reads as a fault window."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from websockets.exceptions import ConnectionClosed

from fake_gateway.config import GatewayConfig
from fake_gateway.server import FakeGateway
from fake_gateway.testing import RawGatewayClient, raw_client, start_gateway
from gateway_common.errors import UserError
from gateway_common.trace import KIND_FRAME_FAULT, KIND_FRAME_OUT
from harness.oracle import RunView
from harness.oracle.view import missed_ack_before
from harness.schedules import run_schedule, scenario_toml, schedules

TOKEN = GatewayConfig().token
FRAME_KINDS = ["server_frames", "flood", "drop_mid_guilds", "close_on_resume",
               "invalid_session_loop", "burst"]
# Long heartbeats and no server deadline: the tests beat when they choose.
QUIET: dict[str, Any] = {"heartbeat_interval_ms": 30_000, "heartbeat_deadline": False,
                         "identify_window": 0.0}


def _newest(gateway: FakeGateway) -> int:
    return max(gateway.connections)


def _faults(gateway: FakeGateway, action: str = "server_frames") -> list[dict[str, Any]]:
    return [r for r in gateway.trace.of_kind(KIND_FRAME_FAULT) if r["action"] == action]


def _sent(gateway: FakeGateway, conn: int, op: int) -> list[dict[str, Any]]:
    return [r for r in gateway.trace.of_kind(KIND_FRAME_OUT) if r["conn"] == conn and r["op"] == op]


async def _nothing_for(client: RawGatewayClient, seconds: float) -> None:
    with pytest.raises(trio.TooSlowError):
        await client.recv(timeout=seconds)


async def _ready(client: RawGatewayClient, guilds: int) -> dict[str, Any]:
    await client.recv_op(10)
    ready = await client.identify(TOKEN)
    for _ in range(guilds):
        await client.recv_dispatch("GUILD_CREATE")
    return ready


# ---- server_frames ----------------------------------------------------------------------------


async def test_drop_exactly_one_ack(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("server_frames", "all", op=11, count=1)
        await client.send({"op": 1, "d": None})
        await _nothing_for(client, 0.5)  # that beat's ACK never comes
        assert (await client.heartbeat(None))["op"] == 11  # the next one's does
        conn = _newest(gateway)
    assert len(_sent(gateway, conn, 11)) == 1  # no frame_out for the dropped one
    (record,) = _faults(gateway)
    assert (record["mode"], record["op"], record["conn"]) == ("drop", 11, conn)
    assert "dropped op 11 Heartbeat ACK" in record["detail"]


async def test_a_dropped_dispatch_is_replayed_on_resume(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=1, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        ready = await _ready(client, 1)  # READY s=1, GUILD_CREATE s=2
        gateway.controls.apply("server_frames", "all", op=0, count=1)
        gateway.controls.apply("burst", "all", count=2)
        assert (await client.recv_op(0))["s"] == 4  # s=3 was dropped
        await client.close(4000)
    session_id = ready["d"]["session_id"]
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 2)  # a client that knows it missed s=3
        replayed = [await client.recv_op(0) for _ in range(3)]
    assert [(d["s"], d["t"]) for d in replayed] == [(3, "TYPING_START"), (4, "TYPING_START"),
                                                    (5, "RESUMED")]
    assert [r["s"] for r in _faults(gateway)] == [3]


async def test_a_dropped_frame_leaves_the_zlib_stream_intact(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, **QUIET)
    async with raw_client(urls.gateway_url, compress="zlib-stream") as client:
        await client.recv_op(10)
        gateway.controls.apply("server_frames", "all", op=11, count=1)
        await client.send({"op": 1, "d": None})
        assert (await client.heartbeat(None))["op"] == 11  # decodes: the inflater is in step
        ready = await client.identify(TOKEN)
    assert ready["t"] == "READY" and client.binary_frames >= 3


async def test_delay_holds_acks_back_and_keeps_dispatches_in_seq_order(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=1, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await _ready(client, 1)
        conn = _newest(gateway)
        gateway.controls.apply("server_frames", "all", mode="delay", op=11, ms=300)
        await client.heartbeat(2)
        beat = gateway.trace.of_kind("frame_in")[-1]
        (ack,) = _sent(gateway, conn, 11)
        assert ack["ts"] - beat["ts"] >= 0.3  # sent when it went out, not when it was picked
        # A delayed dispatch holds back the dispatches after it: they arrive, in order, after it.
        gateway.controls.apply("server_frames", "all", mode="delay", op=0, count=1, ms=300)
        gateway.controls.apply("burst", "all", count=3)
        seqs = [(await client.recv_op(0))["s"] for _ in range(3)]
    assert seqs == [3, 4, 5]
    out = [r for r in _sent(gateway, conn, 0) if r["s"] in (3, 4, 5)]
    assert out[0]["ts"] - _faults(gateway)[-1]["ts"] >= 0.3
    assert [r["s"] for r in out] == [3, 4, 5]


async def test_duplicate_sends_the_frame_twice(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("server_frames", "all", mode="duplicate", op=11, count=1)
        await client.heartbeat(None)
        assert (await client.recv(timeout=5))["op"] == 11  # the copy
        await client.heartbeat(None)
        await _nothing_for(client, 0.3)  # count = 1: the next ACK comes once
    assert _faults(gateway)[0]["mode"] == "duplicate"


async def test_reorder_sends_the_frame_after_the_one_that_follows_it(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=1, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await _ready(client, 1)
        gateway.controls.apply("server_frames", "all", mode="reorder", op=11, ms=60_000)
        await client.send({"op": 1, "d": 2})
        await _nothing_for(client, 0.3)  # held until the next frame goes
        gateway.controls.apply("burst", "all", count=1)
        first, second = await client.recv(), await client.recv()
    assert (first["op"], second["op"]) == (0, 11)


async def test_reorder_sends_a_held_frame_after_ms_if_nothing_follows(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("server_frames", "all", mode="reorder", op=11, ms=200)
        assert (await client.heartbeat(None))["op"] == 11


async def test_a_dispatch_type_picks_only_those_dispatches(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=3, **QUIET)
    gateway.controls.apply("server_frames", "next", t="GUILD_CREATE", count=2)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.identify(TOKEN)
        assert (await client.recv_op(0))["s"] == 4  # GUILD_CREATE s=2 and s=3 dropped
    assert [(r["t"], r["s"]) for r in _faults(gateway)] == [("GUILD_CREATE", 2),
                                                            ("GUILD_CREATE", 3)]
    with pytest.raises(UserError, match="no open connection 99"):
        gateway.controls.apply("server_frames", 99, op=11)


async def test_switching_off_stops_picking(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("server_frames", "all", op=11)  # every ACK while on
        for _ in range(2):
            await client.send({"op": 1, "d": None})
        await _nothing_for(client, 0.3)
        gateway.controls.apply("server_frames", "all", on=False, op=11)
        assert (await client.heartbeat(None))["op"] == 11
    assert len(_faults(gateway)) == 2


# ---- burst and flood --------------------------------------------------------------------------


async def test_a_guild_create_storm_of_large_dispatches(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=2, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await _ready(client, 2)
        gateway.controls.apply("burst", "all", count=5, size=200_000, t="GUILD_CREATE")
        storm = [await client.recv_dispatch("GUILD_CREATE") for _ in range(5)]
        conn = _newest(gateway)
    sizes = [r["size"] for r in _sent(gateway, conn, 0)[-5:]]  # bytes on the wire
    assert all(190_000 <= size <= 201_000 for size in sizes), sizes
    assert len({d["d"]["id"] for d in storm}) == 2  # the session's own guilds again
    assert [d["s"] for d in storm] == [4, 5, 6, 7, 8]


async def test_a_flood_runs_while_on_and_stops_when_off(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=1, **QUIET)
    async with raw_client(urls.gateway_url) as client:
        await _ready(client, 1)
        gateway.controls.apply("flood", "all", rate=200, size=2000)
        await trio.sleep(0.5)
        gateway.controls.apply("flood", "all", on=False)
        flooded = gateway.core.event_count
        assert flooded >= 20  # 100 due at 200/s; a busy machine may fire late, never early
        got = [await client.recv_op(0) for _ in range(flooded)]
        await _nothing_for(client, 0.3)  # and nothing more once it is off
    assert all(len(json.dumps(d["d"])) >= 1900 for d in got)
    with pytest.raises(UserError, match="aim it at 'all'"):
        gateway.controls.apply("flood", "next")


# ---- drop_mid_guilds ---------------------------------------------------------------------------


async def test_ready_then_part_of_the_guild_stream_then_a_reset(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=5, **QUIET)
    gateway.controls.apply("drop_mid_guilds", "next", guilds=2)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        ready = await client.identify(TOKEN)
        got = [(await client.recv_dispatch("GUILD_CREATE"))["s"] for _ in range(2)]
        assert await client.expect_close() is None  # a reset: no close frame
    assert got == [2, 3]
    (record,) = _faults(gateway, "drop_mid_guilds")
    assert (record["guilds"], record["withheld"]) == (2, 3)
    async with raw_client(urls.resume_listener_url) as client:  # the rest is replayed
        await client.recv_op(10)
        await client.resume(TOKEN, ready["d"]["session_id"], 3)
        rest = [await client.recv_op(0) for _ in range(4)]
    assert [(d["t"], d["s"]) for d in rest] == [("GUILD_CREATE", 4), ("GUILD_CREATE", 5),
                                                ("GUILD_CREATE", 6), ("RESUMED", 7)]


# ---- close_on_resume and invalid_session_loop ---------------------------------------------------


async def _left(urls: Any, gateway: FakeGateway) -> str:
    """A session whose client left with 4000 (resumable)."""
    async with raw_client(urls.gateway_url) as client:
        ready = await _ready(client, 0)
        await client.close(4000)
    session_id: str = ready["d"]["session_id"]
    with trio.fail_after(5):
        while gateway.sessions[session_id].conn_id is not None:
            await trio.sleep(0.01)
    return session_id


async def test_close_on_resume_answers_every_resume_with_an_empty_close(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=0, **QUIET)
    session_id = await _left(urls, gateway)
    gateway.controls.apply("close_on_resume", "all")
    for _ in range(2):
        async with raw_client(urls.resume_listener_url) as client:
            await client.recv_op(10)
            await client.resume(TOKEN, session_id, 1)
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1005
    assert gateway.sessions[session_id].alive  # an empty close keeps the session
    assert [r["code"] for r in _faults(gateway, "close_on_resume")] == [None, None]
    gateway.controls.apply("close_on_resume", "all", on=False)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        await client.recv_dispatch("RESUMED")


async def test_close_on_resume_with_a_session_ending_code_ends_it(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=0, **QUIET)
    session_id = await _left(urls, gateway)
    gateway.controls.apply("close_on_resume", "all", code=4009)
    async with raw_client(urls.resume_listener_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert await client.expect_close() == 4009
    assert not gateway.sessions[session_id].alive


async def test_an_op9_loop_answers_every_identify_and_resume(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, guilds=0, **QUIET)
    session_id = await _left(urls, gateway)
    gateway.controls.apply("invalid_session_loop", "all")
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 1)
        assert (await client.recv_op(9))["d"] is False
        for _ in range(2):  # on the same socket, again and again
            await client.send({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}}})
            assert (await client.recv_op(9))["d"] is False
    assert not gateway.sessions[session_id].alive
    assert [r["answered"] for r in _faults(gateway, "invalid_session_loop")] == [6, 2, 2]
    gateway.controls.apply("invalid_session_loop", "all", on=False)
    async with raw_client(urls.gateway_url) as client:
        assert (await _ready(client, 0))["t"] == "READY"


# ---- what the oracle makes of them ------------------------------------------------------------


def test_a_frame_fault_is_a_fault_window_from_since_to_its_act() -> None:
    records = [
        {"ts": 0.0, "kind": "conn_open", "conn": 1, "listener": "discovery"},
        {"ts": 0.0, "kind": "frame_out", "conn": 1, "op": 10, "heartbeat_interval": 1000},
        {"ts": 1.0, "kind": "frame_in", "conn": 1, "op": 1, "d": None},
        {"ts": 1.0, "kind": "frame_out", "conn": 1, "op": 11},
        {"ts": 2.0, "kind": "frame_in", "conn": 1, "op": 1, "d": None},
        {"ts": 2.0, "kind": "frame_fault", "conn": 1, "action": "server_frames", "on_for": 0.5,
         "mode": "drop", "op": 11, "detail": "dropped op 11 Heartbeat ACK (never sent)"},
        {"ts": 3.0, "kind": "conn_close", "conn": 1, "by": "client", "code": 4000},
    ]
    view = RunView(records)
    conn = view.conns[1]
    window = view.fault_active(2.0, 3.0, conn)
    assert window is not None and (window.start, window.end) == (1.5, 2.0)
    assert view.fault_active(0.0, 1.4, conn) is None
    text, idx = missed_ack_before(view, 6, 1.0)
    assert "the gateway dropped op 11 Heartbeat ACK (never sent) at 2.00 s" in text
    assert "(server_frames, on since 1.50 s)" in text
    assert 5 in idx


# ---- from the pytest fixture, and in generated schedules ---------------------------------------


async def test_the_pytest_fixture_drives_frame_faults(fake_gateway: Any) -> None:
    """What a user's own suite does: the plugin's fake_gateway (TLS, 1 s heartbeats)."""
    urls = fake_gateway.urls
    async with raw_client(urls.gateway_url, ca_file=urls.ca_file) as client:
        await client.recv_op(10)
        fake_gateway.gateway.controls.apply("server_frames", "all", op=11, count=1)
        await client.send({"op": 1, "d": None})
        await _nothing_for(client, 0.3)
        assert (await client.heartbeat(None))["op"] == 11
    assert [r["mode"] for r in fake_gateway.trace.of_kind(KIND_FRAME_FAULT)] == ["drop"]


@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(schedules(horizon=8.0, max_faults=2, kinds=FRAME_KINDS))
def test_the_reference_client_survives_generated_frame_faults(scenario: Any) -> None:
    result = run_schedule(scenario)
    assert result.passed, (result.failed_invariants, scenario_toml(scenario))
