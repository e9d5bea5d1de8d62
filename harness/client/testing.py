"""A fake gateway plus the reference client, wired for tests: in memory (memnet, any clock, e.g.
``trio.testing.MockClock``) or over loopback TCP (optionally TLS and REST), with trace queries.

    async with open_sim_world(heartbeat_interval_ms=1000) as world:
        client = await world.start_client()
        await wait_until(lambda: client.state == "ready")
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.tls import make_tls
from gateway_common.trace import Record, Trace
from harness.client.core import ClientConfig
from harness.client.driver import GatewayClient, OpenStream
from harness.client_env import ClientEnv
from harness.faults.memnet import MemoryNetwork
from harness.world_clients import make_reference_client, reference_config

TOKEN = GatewayConfig().token


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0,
                     poll: float = 0.01) -> None:
    """Poll until ``predicate()``; the timeout only protects against hangs."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


@dataclass
class ClientWorld:
    opened: OpenedGateway
    trace: Trace
    nursery: trio.Nursery
    network: MemoryNetwork | None = None
    client_defaults: dict[str, Any] = field(default_factory=dict)
    clients: list[GatewayClient] = field(default_factory=list)

    @property
    def gateway(self) -> FakeGateway:
        return self.opened.gateway

    @property
    def discovery_url(self) -> str:
        return self.opened.gateway_url

    @property
    def resume_url(self) -> str:
        return self.opened.resume_listener_url

    @property
    def rest_url(self) -> str | None:
        return self.opened.rest_url

    @property
    def ca_file(self) -> str | None:
        return self.opened.ca_file

    # ---- the client
    def client_env(self, seed: int = 1, open_stream: OpenStream | None = None) -> ClientEnv:
        """Where a client reaches this world: memnet and no HTTP in simulation."""
        sim = self.network is not None
        return ClientEnv(
            gateway_url=self.discovery_url, rest_url=self.rest_url, token=TOKEN,
            ca_file=self.ca_file,
            open_stream=open_stream or (self.open_stream if sim else None),
            fetch_gateway_bot=self.fetch_gateway_bot if sim else None,
            seed=seed, delivery_log_path=None,
            compress=ClientConfig.compress,  # the client's own default
        )

    def client_config(self, **overrides: Any) -> ClientConfig:
        return reference_config(self.client_env(), **{**self.client_defaults, **overrides})

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        assert self.network is not None
        return await self.network.open_stream(host, port)

    async def fetch_gateway_bot(self) -> dict[str, Any]:
        return await self.opened.fetch_gateway_bot()

    def make_client(self, seed: int = 1, open_stream: OpenStream | None = None,
                    delivery_log: str | Path | None = None, **overrides: Any) -> GatewayClient:
        client = make_reference_client(
            self.client_env(seed, open_stream), random.Random(seed), delivery_log=delivery_log,
            **{**self.client_defaults, **overrides})
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
    network = MemoryNetwork()
    async with _open_world(network, tls, None, seed, client_defaults,
                           gateway_overrides) as world:
        yield world


@asynccontextmanager
async def open_tcp_world(*, tls: bool = True, rest: bool = True, seed: int = 7,
                         client_defaults: dict[str, Any] | None = None,
                         **gateway_overrides: Any) -> AsyncIterator[ClientWorld]:
    """The fake gateway on loopback TCP (wss with a fresh trustme CA, REST via hypercorn)."""
    async with _open_world(None, tls, 0 if rest else None, seed, client_defaults,
                           gateway_overrides) as world:
        yield world


@asynccontextmanager
async def _open_world(network: MemoryNetwork | None, tls: bool, rest_port: int | None, seed: int,
                      client_defaults: dict[str, Any] | None,
                      gateway_overrides: dict[str, Any]) -> AsyncIterator[ClientWorld]:
    trace = Trace(clock=trio.current_time)
    gateway = FakeGateway(_gateway_config(gateway_overrides), trace, random.Random(seed))
    tls_dir = tempfile.mkdtemp(prefix="fake-gateway-tls-") if tls else None
    files = make_tls(tls_dir) if tls else None
    async with trio.open_nursery() as nursery:
        opened = await nursery.start(partial(open_gateway, gateway, network, tls=files,
                                             rest_port=rest_port))
        world = ClientWorld(opened, trace, nursery, network=network,
                            client_defaults=client_defaults or {})
        try:
            yield world
        finally:
            for client in world.clients:
                client.stop("test over")
            nursery.cancel_scope.cancel()
            if tls_dir is not None:  # the server's private key
                shutil.rmtree(tls_dir, ignore_errors=True)
