"""The same FakeGateway over in-memory listeners under trio's MockClock (simulation mode)."""

from __future__ import annotations

import json
import random
import ssl
from typing import Any

import trio
import trio.testing
from websockets.trio.client import connect

from fake_gateway.config import GatewayConfig
from fake_gateway.server import FakeGateway
from fake_gateway.testing import RawGatewayClient
from fake_gateway.tls import make_tls
from gateway_common.trace import Trace
from harness.faults.memnet import MemoryNetwork

DISCOVERY, RESUME = "127.0.0.1:4000", "127.0.0.1:4001"


async def simulated_hour(seed: int, tls_dir: str | None = None) -> list[dict[str, Any]]:
    """A client identifies, heartbeats for an hour of virtual time, drops, resumes, then stops
    heartbeating and is closed by the server's deadline. Returns the gateway's trace."""
    config = GatewayConfig(heartbeat_interval_ms=41250, dispatch_rate=0.05, guilds=3)
    start = trio.current_time()
    trace = Trace(clock=trio.current_time)
    gateway = FakeGateway(config, trace, random.Random(seed))
    net = MemoryNetwork()
    scheme = "wss" if tls_dir else "ws"
    gateway.core.set_urls(f"{scheme}://{DISCOVERY}", f"{scheme}://{RESUME}")
    tls = make_tls(tls_dir) if tls_dir else None
    client_ssl = ssl.create_default_context(cafile=tls.ca_file) if tls else None
    listeners = {"discovery": net.listen(DISCOVERY), "resume": net.listen(RESUME)}

    async def open_client(address: str) -> Any:
        stream = await net.connect(address)
        return connect(f"{scheme}://{address}/?v=10&encoding=json", stream=stream,
                       ssl=client_ssl, server_hostname="127.0.0.1" if tls else None,
                       ping_interval=None, max_queue=4096)

    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve_listeners, listeners, tls.context if tls else None)
        last_seq = 0
        async with await open_client(DISCOVERY) as ws:
            client = RawGatewayClient(ws, None)
            await client.recv_op(10)
            ready = await client.identify(config.token)
            session_id = ready["d"]["session_id"]
            end = trio.current_time() + 3600
            while trio.current_time() < end:
                with trio.move_on_after(config.heartbeat_interval):
                    while True:
                        payload = await client.recv(timeout=10_000)
                        last_seq = payload["s"] or last_seq
                await client.send({"op": 1, "d": last_seq})
            await client.close(4000)
        await trio.sleep(30)  # dispatches keep coming while detached
        async with await open_client(RESUME) as ws:
            client = RawGatewayClient(ws, None)
            await client.recv_op(10)
            await client.resume(config.token, session_id, last_seq)
            while (payload := await client.recv(timeout=10_000))["t"] != "RESUMED":
                assert payload["s"] == last_seq + 1
                last_seq = payload["s"]
            assert await client.expect_close(timeout=10_000) == 1000  # no heartbeats: deadline
        nursery.cancel_scope.cancel()
    return [r | {"ts": round(r["ts"] - start, 6)} for r in trace.records]


async def test_a_simulated_hour_takes_no_wall_time(autojump_clock: trio.testing.MockClock
                                                   ) -> None:
    records = await simulated_hour(seed=5)
    heartbeats = [r for r in records if r["kind"] == "frame_in" and r["op"] == 1]
    assert len(heartbeats) >= 3600 / 41.25 - 1
    assert all(r["d"] is not None for r in heartbeats[1:])
    dispatches = [r for r in records if r["kind"] == "frame_out" and r["op"] == 0]
    assert len(dispatches) > 150  # ~0.05/s over an hour, plus READY and GUILD_CREATEs
    close = [r for r in records if r["kind"] == "conn_close"][-1]
    assert (close["by"], close["code"]) == ("server", 1000)
    # the deadline is interval x (1 + grace) after the last heartbeat (HELLO here)
    hello = [r for r in records if r["kind"] == "frame_out" and r["op"] == 10][-1]
    assert abs(close["ts"] - hello["ts"] - 41.25 * (1 + GatewayConfig().heartbeat_grace)) < 1e-6


async def test_same_seed_same_transcript(autojump_clock: trio.testing.MockClock) -> None:
    first = json.dumps(await simulated_hour(seed=9))
    assert first == json.dumps(await simulated_hour(seed=9))


async def test_tls_over_memory_streams(autojump_clock: trio.testing.MockClock,
                                       tmp_path: Any) -> None:
    records = await simulated_hour(seed=1, tls_dir=str(tmp_path))
    assert [r["kind"] for r in records[:3]] == ["conn_open", "tls_done", "ws_upgrade"]
    assert records[0]["peer"].startswith("127.0.0.1:")


async def test_heartbeats_just_inside_the_deadline_keep_the_connection(
        autojump_clock: trio.testing.MockClock) -> None:
    """The deadline is interval * (1 + grace) after the previous heartbeat, not a fixed grid."""
    config = GatewayConfig(heartbeat_interval_ms=1000, heartbeat_grace=0.25)
    gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(0))
    net = MemoryNetwork()
    gateway.core.set_urls(f"ws://{DISCOVERY}", f"ws://{RESUME}")
    listeners = {"discovery": net.listen(DISCOVERY), "resume": net.listen(RESUME)}
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve_listeners, listeners)
        stream = await net.connect(DISCOVERY)
        async with connect(f"ws://{DISCOVERY}/?v=10", stream=stream, ping_interval=None) as ws:
            client = RawGatewayClient(ws, None)
            await client.recv_op(10)
            hello_at = trio.current_time()
            for beat in range(1, 20):
                await trio.sleep_until(hello_at + 1.2499 * beat)  # 0.1 ms before each deadline
                await client.send({"op": 1, "d": None})
                assert (await client.recv(timeout=1))["op"] == 11
            await trio.sleep(1.2501)
            assert await client.expect_close(timeout=1) == 1000
        nursery.cancel_scope.cancel()
    close = [r for r in gateway.trace.records if r["kind"] == "conn_close"][0]
    assert (close["by"], close["code"]) == ("server", 1000)
