"""Wire-level faults of the fake gateway (fake_gateway.wire, issue 13), each seen from a plain
`websockets` client with its own zlib/zstd decoder, as a real client would see it: a corrupt
block in the compressed stream, a connection that continues an earlier one's compressor, bytes
that break RFC 6455, HELLO that never comes, and a /gateway/bot whose shard count moves. Each
leaves a ``wire_fault`` trace record naming what it wrote."""

from __future__ import annotations

import json
import zlib
from typing import Any

import httpx
import pytest
import trio
import zstandard
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from fake_gateway.codec import ZLIB_SUFFIX
from fake_gateway.config import GatewayConfig
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client, start_gateway
from gateway_common.errors import UserError
from gateway_common.facts import MALFORMED_FRAMES
from gateway_common.trace import KIND_NOTE, KIND_WIRE_FAULT

TOKEN = GatewayConfig().token


def _connect(url: str, compress: str | None = None) -> Any:
    query = "v=10&encoding=json" + (f"&compress={compress}" if compress else "")
    return connect(f"{url}/?{query}", compression=None, open_timeout=10, close_timeout=2,
                   ping_interval=None)


async def _zlib_message(ws: ClientConnection) -> bytes:
    """One compressed message's bytes, up to and including the flush suffix."""
    data = b""
    with trio.fail_after(10):
        while not data.endswith(ZLIB_SUFFIX):
            message = await ws.recv()
            assert isinstance(message, bytes)
            data += message
    return data


def _newest(gateway: FakeGateway) -> int:
    return max(gateway.connections)


def _wire_faults(gateway: FakeGateway, action: str) -> list[dict[str, Any]]:
    return [r for r in gateway.trace.of_kind(KIND_WIRE_FAULT) if r["action"] == action]


# ---- corrupt_compression -----------------------------------------------------------------------


async def test_a_corrupt_zlib_block_fails_the_clients_inflater_at_once(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    async with _connect(urls.gateway_url, "zlib-stream") as ws:
        inflater = zlib.decompressobj()
        hello = json.loads(inflater.decompress(await _zlib_message(ws)))
        assert hello["op"] == 10  # the stream was fine up to here
        gateway.controls.apply("corrupt_compression", _newest(gateway))
        with pytest.raises(zlib.error, match="invalid block type"):
            inflater.decompress(await _zlib_message(ws))
    (record,) = _wire_faults(gateway, "corrupt_compression")
    assert record["compress"] == "zlib-stream"
    assert bytes.fromhex(record["bytes"]).endswith(ZLIB_SUFFIX)


async def test_a_corrupt_zstd_block_fails_the_clients_decoder(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    async with _connect(urls.gateway_url, "zstd-stream") as ws:
        decoder = zstandard.ZstdDecompressor().decompressobj()
        hello = await ws.recv()
        assert isinstance(hello, bytes) and json.loads(decoder.decompress(hello))["op"] == 10
        gateway.controls.apply("corrupt_compression", "all")
        bad = await ws.recv()
        assert isinstance(bad, bytes)
        with pytest.raises(zstandard.ZstdError):
            decoder.decompress(bad)
    assert _wire_faults(gateway, "corrupt_compression")[0]["compress"] == "zstd-stream"


async def test_corrupt_compression_leaves_an_uncompressed_connection_alone(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        gateway.controls.apply("corrupt_compression", _newest(gateway))
        ready = await client.identify(TOKEN)  # nothing was written between the frames
        assert ready["t"] == "READY"
        assert client.binary_frames == 0
    assert _wire_faults(gateway, "corrupt_compression") == []
    assert any("no transport compression" in r["text"] for r in gateway.trace.of_kind(KIND_NOTE))


# ---- reuse_compressor --------------------------------------------------------------------------


async def test_reuse_compressor_continues_the_last_connections_zlib_context(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    async with _connect(urls.gateway_url, "zlib-stream") as ws:
        kept = zlib.decompressobj()  # the inflater a buggy client would keep (eris #1364)
        kept.decompress(await _zlib_message(ws))
        first = _newest(gateway)
    gateway.controls.apply("reuse_compressor", "next", on=True)
    async with _connect(urls.gateway_url, "zlib-stream") as ws:
        hello = await _zlib_message(ws)
        with pytest.raises(zlib.error):  # a fresh inflater (what a correct client has) chokes
            zlib.decompressobj().decompress(hello)
        assert json.loads(kept.decompress(hello))["op"] == 10  # it continues the old stream
    (record,) = _wire_faults(gateway, "reuse_compressor")
    assert record["from_conn"] == first
    # "next" is one connection: the one after it starts a fresh context again
    async with _connect(urls.gateway_url, "zlib-stream") as ws:
        assert json.loads(zlib.decompressobj().decompress(await _zlib_message(ws)))["op"] == 10


async def test_reuse_compressor_cannot_aim_at_an_open_connection(nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        with pytest.raises(UserError, match="aim it at 'all' or 'next'"):
            gateway.controls.apply("reuse_compressor", _newest(gateway), on=True)


# ---- malformed_frame ---------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "client_code"), [
    ("fragmented_control", 1002), ("bad_opcode", 1002), ("bad_utf8", 1007)])
async def test_a_malformed_frame_makes_the_client_fail_the_connection(
        nursery: trio.Nursery, frame: str, client_code: int) -> None:
    gateway, urls = await start_gateway(nursery)
    async with _connect(urls.gateway_url) as ws:
        assert json.loads(await ws.recv())["op"] == 10
        gateway.controls.apply("malformed_frame", _newest(gateway), frame=frame)
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.sent is not None and closed.value.sent.code == client_code
    (record,) = _wire_faults(gateway, "malformed_frame")
    assert record["frame"] == frame and record["bytes"]


def test_the_malformed_frames_are_the_tables() -> None:
    from fake_gateway.wire import FRAMES

    assert tuple(FRAMES) == MALFORMED_FRAMES


# ---- delay_hello never / connections ------------------------------------------------------------


async def test_delay_hello_never_holds_hello_on_the_next_connections_only(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery)
    gateway.controls.apply("delay_hello", "all", on=True, never=True, connections=1)
    async with raw_client(urls.gateway_url) as client:
        with pytest.raises(trio.TooSlowError):
            await client.recv(timeout=1.0)  # upgrade accepted, nothing sent
        conn = gateway.connections[_newest(gateway)]
        assert conn.hello_sent_at is None and conn.hello_due is None  # no deadline at all
    async with raw_client(urls.gateway_url) as client:  # the second connection is served
        assert (await client.recv(timeout=10))["op"] == 10
    (record,) = _wire_faults(gateway, "delay_hello")
    assert "never sent" in record["detail"]


# ---- recommended_shards -------------------------------------------------------------------------


async def test_gateway_bot_recommends_a_shard_count_that_changes_per_call(
        nursery: trio.Nursery) -> None:
    gateway, urls = await start_gateway(nursery, rest=True, recommended_shards=3)
    gateway.controls.apply("recommended_shards", "all", shards=5, per_call=2)
    headers = {"authorization": f"Bot {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        counts = [(await http.get(f"{urls.rest_url}/gateway/bot")).json()["shards"]
                  for _ in range(3)]
    assert counts == [5, 7, 9]
    assert [r["answer"] for r in _wire_faults(gateway, "recommended_shards")] == [1, 2, 3]
    with pytest.raises(UserError, match="aim it at 'all'"):
        gateway.controls.apply("recommended_shards", 1, shards=2)
