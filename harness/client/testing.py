"""A fake gateway plus the reference client, wired for tests: in memory (memnet, any clock, e.g.
``trio.testing.MockClock``) or over loopback TCP (optionally TLS and REST), with trace queries.

    async with open_sim_world(heartbeat_interval_ms=1000) as world:
        client = await world.start_client()
        await wait_until(lambda: client.state == "ready")
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.rest import gateway_bot_for
from fake_gateway.server import FakeGateway, make_tls
from gateway_common.trace import Record, Trace
from harness.client.core import ClientConfig
from harness.client.driver import GatewayClient, OpenStream
from harness.faults.memnet import MemoryNetwork

TOKEN = GatewayConfig().token


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0,
                     poll: float = 0.01) -> None:
    """Poll until ``predicate()``; the timeout only protects against hangs."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


@dataclass
class ClientWorld:
    gateway: FakeGateway
    trace: Trace
    nursery: trio.Nursery
    discovery_url: str
    resume_url: str
    rest_url: str | None = None
    ca_file: str | None = None
    network: MemoryNetwork | None = None
    client_defaults: dict[str, Any] = field(default_factory=dict)
    clients: list[GatewayClient] = field(default_factory=list)

    # ---- the client
    def client_config(self, **overrides: Any) -> ClientConfig:
        base = ClientConfig(token=TOKEN, gateway_url=self.discovery_url, rest_url=self.rest_url,
                            ca_file=self.ca_file)
        return replace(base, **{**self.client_defaults, **overrides})

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        assert self.network is not None
        return await self.network.connect(f"{host}:{port}")

    async def fetch_gateway_bot(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return gateway_bot_for(self.gateway.core, trio.current_time())

    def make_client(self, seed: int = 1, open_stream: OpenStream | None = None,
                    delivery_log: str | Path | None = None, **overrides: Any) -> GatewayClient:
        kwargs: dict[str, Any] = {}
        if self.network is not None:
            kwargs["open_stream"] = open_stream or self.open_stream
            kwargs["fetch_gateway_bot"] = self.fetch_gateway_bot
        elif open_stream is not None:
            kwargs["open_stream"] = open_stream
        client = GatewayClient(self.client_config(**overrides), rng=random.Random(seed),
                               delivery_log=delivery_log, **kwargs)
        self.clients.append(client)
        return client

    async def start_client(self, seed: int = 1, **kwargs: Any) -> GatewayClient:
        client = self.make_client(seed, **kwargs)
        await self.nursery.start(client.run)
        return client

    # ---- the trace
    def records(self, kind: str, **match: Any) -> list[Record]:
        return [r for r in self.trace.records
                if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())]

    def conns(self, listener: str | None = None) -> list[int]:
        return [r["conn"] for r in self.records("conn_open")
                if listener is None or r["listener"] == listener]

    def frames_in(self, op: int, conn: int | None = None) -> list[Record]:
        extra = {} if conn is None else {"conn": conn}
        return self.records("frame_in", op=op, **extra)

    def dispatches_out(self, session_id: str) -> list[int]:
        """Seqs the gateway sent for a session (the oracle's view of what existed)."""
        conns_of: dict[int, str] = {}
        for r in self.records("session"):
            if r.get("conn") is not None and r["event"] in ("created", "attached"):
                conns_of[r["conn"]] = r["session_id"]
        return [r["s"] for r in self.records("frame_out", op=0)
                if conns_of.get(r["conn"]) == session_id]

    def live_conn(self) -> int:
        return self.conns()[-1]


def _gateway_config(overrides: dict[str, Any]) -> GatewayConfig:
    settings: dict[str, Any] = {"heartbeat_interval_ms": 1000}
    settings.update(overrides)
    return GatewayConfig(**settings)


@asynccontextmanager
async def open_sim_world(*, tls: bool = False, seed: int = 7,
                         client_defaults: dict[str, Any] | None = None,
                         **gateway_overrides: Any) -> AsyncIterator[ClientWorld]:
    """The fake gateway on an in-memory network; clients connect through memnet."""
    trace = Trace(clock=trio.current_time)
    gateway = FakeGateway(_gateway_config(gateway_overrides), trace, random.Random(seed))
    network = MemoryNetwork()
    files = make_tls() if tls else None
    async with trio.open_nursery() as nursery:
        listeners = {name: network.listen("127.0.0.1:0") for name in ("discovery", "resume")}
        await nursery.start(gateway.serve_listeners, listeners, files.context if files else None)
        scheme = "wss" if tls else "ws"
        urls = {name: f"{scheme}://{lst.address}" for name, lst in listeners.items()}
        gateway.core.set_urls(urls["discovery"], urls["resume"])
        world = ClientWorld(gateway, trace, nursery, urls["discovery"], urls["resume"],
                            ca_file=files.ca_file if files else None, network=network,
                            client_defaults=client_defaults or {})
        try:
            yield world
        finally:
            for client in world.clients:
                client.stop("test over")
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_tcp_world(*, tls: bool = True, rest: bool = True, seed: int = 7,
                         client_defaults: dict[str, Any] | None = None,
                         **gateway_overrides: Any) -> AsyncIterator[ClientWorld]:
    """The fake gateway on loopback TCP (wss with a fresh trustme CA, REST via hypercorn)."""
    trace = Trace(clock=trio.current_time)
    gateway = FakeGateway(_gateway_config(gateway_overrides), trace, random.Random(seed))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(gateway.serve_tcp, "127.0.0.1", 0, 0, 0 if rest else None,
                                   tls)
        world = ClientWorld(gateway, trace, nursery, urls.gateway_url,
                            urls.resume_listener_url,
                            rest_url=urls.rest_url,
                            ca_file=urls.ca_file, client_defaults=client_defaults or {})
        try:
            yield world
        finally:
            for client in world.clients:
                client.stop("test over")
            nursery.cancel_scope.cancel()
