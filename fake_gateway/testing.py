"""A raw gateway client for tests and benchmarks: plain `websockets` frames, no reference-client
logic, so the fake gateway is checked against the protocol rather than against our own client;
and `start_gateway`, a fake gateway on loopback to point it at."""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from fake_gateway import etf
from fake_gateway.codec import ZlibStreamDecoder, ZstdStreamDecoder, decode_server
from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.tls import make_tls
from gateway_common.facts import OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME
from gateway_common.trace import Trace


async def start_gateway(nursery: trio.Nursery, *, tls: bool = False, rest: bool = False,
                        **settings: Any) -> tuple[FakeGateway, OpenedGateway]:
    """A fake gateway with these GatewayConfig settings on loopback TCP (TLS with a fresh CA,
    REST listener only if asked), served in ``nursery``; the same seed every time."""
    gateway = FakeGateway(GatewayConfig(**settings), Trace(clock=trio.current_time),
                          random.Random(7))
    urls = await nursery.start(partial(open_gateway, gateway, rest_port=0 if rest else None,
                                       tls=make_tls() if tls else None))
    return gateway, urls


class RawGatewayClient:
    """Sends payload dicts and receives decoded payloads over one WebSocket connection.

    `encoding="etf"`: dicts go out as ETF with binary (string) keys, as Discord requires of
    clients; binary frames are decoded as ETF.
    """

    def __init__(self, ws: ClientConnection, compress: str | None,
                 encoding: str = "json") -> None:
        self.ws = ws
        self.compress = compress
        self.encoding = encoding
        self._zlib = ZlibStreamDecoder(encoding) if compress == "zlib-stream" else None
        self._zstd = ZstdStreamDecoder(encoding) if compress == "zstd-stream" else None
        self.binary_frames = 0
        self.text_frames = 0

    async def send(self, payload: dict[str, Any] | str | bytes) -> None:
        if isinstance(payload, dict):
            payload = (etf.encode(payload, atom_keys=False) if self.encoding == "etf"
                       else json.dumps(payload))
        await self.ws.send(payload)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next gateway payload (raises ConnectionClosed when the server closes)."""
        with trio.fail_after(timeout):
            while True:
                message = await self.ws.recv()
                if isinstance(message, str):
                    self.text_frames += 1
                    result: dict[str, Any] = json.loads(message)
                    return result
                self.binary_frames += 1
                if self._zstd is not None:
                    return self._zstd.feed(message)
                if self._zlib is None and self.encoding == "etf":
                    return decode_server(message, "etf")
                assert self._zlib is not None, "binary frame without compression"
                decoded = self._zlib.feed(message)
                if decoded is not None:
                    return decoded

    async def recv_op(self, op: int, timeout: float = 5.0) -> dict[str, Any]:
        """Skip payloads until one with this op arrives."""
        with trio.fail_after(timeout):
            while True:
                payload = await self.recv(timeout)
                if payload["op"] == op:
                    return payload

    async def recv_dispatch(self, t: str, timeout: float = 5.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                payload = await self.recv(timeout)
                if payload["op"] == OP_DISPATCH and payload["t"] == t:
                    return payload

    async def heartbeat(self, seq: int | None) -> dict[str, Any]:
        await self.send({"op": OP_HEARTBEAT, "d": seq})
        return await self.recv_op(11)

    async def identify(self, token: str, intents: int = 513,
                       shard: list[int] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"token": token, "intents": intents,
                             "properties": {"os": "linux", "browser": "raw", "device": "raw"}}
        if shard is not None:
            d["shard"] = shard
        await self.send({"op": OP_IDENTIFY, "d": d})
        return await self.recv_dispatch("READY")

    async def resume(self, token: str, session_id: str, seq: int) -> None:
        await self.send({"op": OP_RESUME,
                         "d": {"token": token, "session_id": session_id, "seq": seq}})

    async def expect_close(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; return the close code it sent (None: no close frame)."""
        try:
            with trio.fail_after(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        raise AssertionError("unreachable")

    async def close(self, code: int = 4000) -> None:
        await self.ws.aclose(code)


@asynccontextmanager
async def raw_client(url: str, *, query: str = "v=10&encoding=json", compress: str | None = None,
                     ca_file: str | None = None, open_timeout: float = 5.0
                     ) -> AsyncIterator[RawGatewayClient]:
    if compress:
        query += f"&compress={compress}"
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("wss") else None
    async with connect(f"{url}/?{query}", ssl=context, compression=None, open_timeout=open_timeout,
                       close_timeout=2, ping_interval=None, max_size=2**22,
                       max_queue=4096) as ws:
        encoding = parse_qs(query).get("encoding", ["json"])[-1]
        yield RawGatewayClient(ws, compress, encoding)
