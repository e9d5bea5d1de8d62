"""Proxies and the proxy collection: Toxiproxy's lifecycle semantics on any transport.

A ``Proxy`` listens through a ``Transport`` (``TcpTransport`` for real sockets,
``MemoryTransport`` over a ``MemoryNetwork`` for simulation), dials its upstream through the
same transport for every accepted client, and runs each connection through the toxic pipeline of
``harness.faults.link``. ``ProxyCollection`` holds named proxies and implements create, update,
delete, populate and reset exactly as Toxiproxy 2.12 does (``proxy_collection.go``); the HTTP
API (``harness.faults.api``) and the embedded backend are thin layers over it.

Errors carry the HTTP status and Toxiproxy's message (``ProxyError``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from harness.faults.link import Link, ProxiedConnection
from harness.faults.memnet import MemoryNetwork, close_stream, format_address, parse_address
from harness.faults.toxics import Toxic, ToxicError, ToxicExists, build_toxic, update_toxic

DEFAULT_LISTEN = "127.0.0.1:0"
# Connections one proxy holds open at once; more are closed as they arrive (a loop through two
# proxies took a process to thousands of file descriptors in seconds).
MAX_CONNECTIONS_PER_PROXY = 4096


class ProxyError(Exception):
    """An API-level failure: HTTP ``status`` and Toxiproxy's error ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# Transports


class Transport(Protocol):
    async def resolve(self, address: str) -> str:
        """The address a listen request means (``localhost:1`` -> ``127.0.0.1:1``)."""

    async def listen(self, address: str) -> tuple[trio.abc.Listener[Any], str]:
        """Bind; returns the listener and the address actually bound (port 0 replaced)."""

    async def connect(self, address: str) -> trio.abc.Stream:
        """Dial an upstream; OSError (e.g. ConnectionRefusedError) when that fails."""


def _split(address: str) -> tuple[str, int]:
    try:
        return parse_address(address)
    except ValueError as exc:
        raise ProxyError(500, f"listen tcp: {exc}") from None


class TcpTransport:
    """Real loopback TCP. Wildcard listen addresses bind 127.0.0.1 (the harness never listens
    on all interfaces)."""

    async def resolve(self, address: str) -> str:
        host, port = _split(address)
        if host in ("", "0.0.0.0", "::"):
            return format_address("127.0.0.1", port)
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise ProxyError(500, f"listen tcp: lookup {host}: no such host") from None
        # Go resolves to one address, IPv4 first.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        ip = str(infos[0][4][0])
        return format_address(ip, port)

    async def listen(self, address: str) -> tuple[trio.abc.Listener[Any], str]:
        resolved = await self.resolve(address)
        host, port = parse_address(resolved)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ProxyError(500, f"listen tcp {resolved}: bind: {reason}") from None
        listener = listeners[0]
        bound = listener.socket.getsockname()
        return listener, format_address(str(bound[0]), int(bound[1]))

    async def connect(self, address: str) -> trio.abc.Stream:
        try:
            host, port = parse_address(address)
        except ValueError as exc:
            raise OSError(errno.EINVAL, str(exc)) from None
        return await trio.open_tcp_stream(host or "127.0.0.1", port)


class MemoryTransport:
    """An in-memory network (simulation): the same proxy code over memnet streams."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    async def resolve(self, address: str) -> str:
        host, port = _split(address)
        host = "127.0.0.1" if host.lower() in ("", "localhost", "0.0.0.0", "::") else host
        return format_address(host, port)

    async def listen(self, address: str) -> tuple[trio.abc.Listener[Any], str]:
        resolved = await self.resolve(address)
        try:
            listener = self.network.listen(resolved)
        except OSError:
            raise ProxyError(500, f"listen tcp {resolved}: bind: address already in use") from None
        return listener, listener.address

    async def connect(self, address: str) -> trio.abc.Stream:
        try:
            return await self.network.connect(address)
        except ValueError as exc:
            raise OSError(errno.EINVAL, str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Proxy


class Proxy:
    """One named proxy: a listener, an upstream address, toxics, and its live connections.

    ``accepted`` counts accepted connections (1-based numbers for ``only_connection`` and
    ``from_connection``); it restarts at 0 on ``/reset``.
    """

    def __init__(self, collection: ProxyCollection, name: str, listen: str, upstream: str) -> None:
        self._collection = collection
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.accepted = 0
        self.connections: list[ProxiedConnection] = []
        self._listener: trio.abc.Listener[Any] | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    @property
    def seed(self) -> str:
        return f"{self._collection.seed}:{self.name}"

    # -- JSON ------------------------------------------------------------------------------------
    def ordered_toxics(self) -> list[Toxic]:
        """Upstream toxics first, then downstream, each in creation order (Toxiproxy's order)."""
        return [t for t in self.toxics if t.direction == "upstream"] + [
            t for t in self.toxics if t.direction == "downstream"
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": [t.to_json() for t in self.ordered_toxics()],
        }

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled:
            return
        transport = self._collection.transport
        listener, bound = await transport.listen(self.listen)
        upstream = self.upstream
        try:
            if parse_address(upstream)[1] == parse_address(bound)[1]:  # only then look it up
                upstream = await transport.resolve(upstream)
        except (ProxyError, ValueError):
            pass  # a bad upstream fails per connection, as in Toxiproxy
        if upstream == bound:  # each connection would dial itself, without end
            await listener.aclose()
            raise ProxyError(400, f"upstream {self.upstream} is the proxy's own listen address "
                                  f"{bound}: a loop")
        self.listen = bound  # the resolved address, so disable/enable and reset rebind it
        self._listener = listener
        self._stopped = trio.Event()
        await self._collection.nursery.start(self._serve, listener)
        self.enabled = True

    async def stop(self) -> None:
        """Stop listening and close every connection of this proxy (FIN, or RST if reset)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._listener is not None:
            await self._listener.aclose()
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()

    async def _serve(
        self,
        listener: trio.abc.Listener[Any],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self._stopped is not None
        stopped = self._stopped
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    while True:
                        try:
                            stream = await listener.accept()
                        except (trio.ClosedResourceError, trio.BrokenResourceError):
                            break
                        except OSError:
                            await trio.sleep(0.01)  # e.g. EMFILE: back off, keep serving
                            continue
                        self.accepted += 1
                        if len(self.connections) >= MAX_CONNECTIONS_PER_PROXY:
                            await trio.aclose_forcefully(stream)
                            continue
                        nursery.start_soon(self._handle, self.accepted, stream)
                    # listener closed: the connections are closed by the scope's cancellation
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            stopped.set()

    async def _handle(self, number: int, client: trio.abc.Stream) -> None:
        connection = ProxiedConnection(
            number,
            client,
            self.seed,
            lambda: self.toxics,
            lambda link: self._collection.metrics.count_link(self, link),
        )
        self.connections.append(connection)
        try:
            upstream: trio.abc.Stream | None = None
            if not connection.blackholed():
                try:
                    upstream = await self._collection.transport.connect(self.upstream)
                except OSError:
                    return  # as Toxiproxy: the client just sees its connection closed
            await connection.serve(upstream)
        finally:
            self.connections.remove(connection)
            with trio.CancelScope(shield=True):
                await close_stream(client, reset=connection.reset)

    # -- toxics ----------------------------------------------------------------------------------
    def get_toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise ProxyError(404, "toxic not found")

    def add_toxic(self, body: Any) -> Toxic:
        """Create a toxic from a Toxiproxy JSON body and apply it to live connections."""
        try:
            toxic = build_toxic(body, lambda name: any(t.name == name for t in self.toxics))
        except ToxicExists as exc:
            raise ProxyError(409, str(exc)) from None
        except ToxicError as exc:
            raise ProxyError(400, str(exc)) from None
        self.toxics.append(toxic)
        for connection in list(self.connections):
            connection.toxic_added(toxic)
        return toxic

    def update_toxic(self, name: str, body: Any) -> Toxic:
        toxic = self.get_toxic(name)
        try:
            update_toxic(toxic, body)
        except ToxicError as exc:
            raise ProxyError(400, str(exc)) from None
        for connection in list(self.connections):
            connection.toxic_updated(toxic)
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.get_toxic(name)
        self.toxics.remove(toxic)
        for connection in list(self.connections):
            connection.toxic_removed(toxic)

    def remove_all_toxics(self) -> None:
        for toxic in list(self.toxics):
            self.remove_toxic(toxic.name)


# ---------------------------------------------------------------------------------------------
# Collection


@dataclass
class ProxySpec:
    """What a create/populate entry asks for (``listen`` may be empty: a free loopback port)."""

    name: str
    upstream: str
    listen: str = DEFAULT_LISTEN
    enabled: bool = True


class ProxyMetrics:
    """Toxiproxy's two byte counters (``-proxy-metrics``), added once per link when it ends.

    ``count_link`` is given each finished link; ``exposition()`` is the Prometheus text
    (exact label order and names as Toxiproxy's ``collectors/proxy.go``).
    """

    NAMES = (
        (
            "toxiproxy_proxy_received_bytes_total",
            "The total bytes received from the source",
        ),
        ("toxiproxy_proxy_sent_bytes_total", "The total bytes sent to the destination"),
    )

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        # (metric, direction, listener, proxy, upstream) -> bytes
        self.counters: dict[tuple[str, str, str, str, str], int] = {}

    def count_link(self, proxy: Proxy, link: Link) -> None:
        if not self.enabled:
            return
        labels = (link.direction, proxy.listen, proxy.name, proxy.upstream)
        received, sent = self.NAMES[0][0], self.NAMES[1][0]
        self.counters[(received, *labels)] = (
            self.counters.get((received, *labels), 0) + link.received_bytes
        )
        if not link.write_failed:
            self.counters[(sent, *labels)] = self.counters.get((sent, *labels), 0) + link.sent_bytes

    def exposition(self) -> str:
        lines = []
        for metric, help_text in self.NAMES:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            for key in sorted(k for k in self.counters if k[0] == metric):
                _, direction, listener, proxy, upstream = key
                labels = (
                    f'direction="{direction}",listener="{listener}",proxy="{proxy}",'
                    f'upstream="{upstream}"'
                )
                lines.append(f"{metric}{{{labels}}} {self.counters[key]}")
        return "\n".join(lines) + "\n"


class ProxyCollection:
    """Named proxies with Toxiproxy's create/update/delete/populate/reset semantics.

    Runs its proxies in ``nursery``; ``seed`` (int or str) seeds every toxic's randomness.
    Operations are serialized (like Toxiproxy's collection mutex).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        transport: Transport,
        seed: int | str = 0,
        *,
        metrics: bool = False,
    ):
        self.nursery = nursery
        self.transport = transport
        self.seed = seed
        self.metrics = ProxyMetrics(metrics)
        self.proxies: dict[str, Proxy] = {}
        self.lock = trio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ProxyError(404, "proxy not found")
        return proxy

    def sorted(self) -> list[Proxy]:
        return [self.proxies[name] for name in sorted(self.proxies)]

    async def create(self, spec: ProxySpec) -> Proxy:
        async with self.lock:
            if not spec.name:
                raise ProxyError(400, "missing required field: name")
            if not spec.upstream:
                raise ProxyError(400, "missing required field: upstream")
            if spec.name in self.proxies:
                raise ProxyError(409, "proxy already exists")
            proxy = Proxy(self, spec.name, spec.listen or DEFAULT_LISTEN, spec.upstream)
            if spec.enabled:
                await proxy.start()
            self.proxies[spec.name] = proxy
            return proxy

    async def _differs(self, proxy: Proxy, listen: str, upstream: str) -> bool:
        try:
            resolved = await self.transport.resolve(listen or DEFAULT_LISTEN)
        except ProxyError as exc:  # Go reports the bare resolve error here
            raise ProxyError(exc.status, exc.message.removeprefix("listen tcp: ")) from None
        return resolved != proxy.listen or upstream != proxy.upstream

    async def update(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        """Toxiproxy's update: restart on a changed listen/upstream, then apply ``enabled``."""
        async with self.lock:
            proxy = self.get(name)
            new_listen = proxy.listen if listen is None else listen
            new_upstream = proxy.upstream if upstream is None else upstream
            want_enabled = proxy.enabled if enabled is None else enabled
            if await self._differs(proxy, new_listen, new_upstream):
                await proxy.stop()
                proxy.listen = new_listen or DEFAULT_LISTEN
                proxy.upstream = new_upstream
            if want_enabled and not proxy.enabled:
                await proxy.start()
            elif not want_enabled and proxy.enabled:
                await proxy.stop()
            return proxy

    async def delete(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            await proxy.stop()
            del self.proxies[name]

    async def populate(self, specs: Iterable[ProxySpec]) -> list[Proxy]:
        """Create or replace proxies in order; raise ``PopulateError`` (with what was done so
        far) on the first failure."""
        specs = list(specs)
        for number, spec in enumerate(specs, 1):
            if not spec.name:
                raise PopulateError(400, f"missing required field: name at proxy {number}", [])
            if not spec.upstream:
                raise PopulateError(400, f"missing required field: upstream at proxy {number}", [])
        done: list[Proxy] = []
        async with self.lock:
            for spec in specs:
                try:
                    existing = self.proxies.get(spec.name)
                    if existing is not None and not await self._differs(
                        existing, spec.listen, spec.upstream
                    ):
                        done.append(existing)
                        continue
                    if existing is not None:
                        await existing.stop()
                        del self.proxies[spec.name]
                    proxy = Proxy(self, spec.name, spec.listen or DEFAULT_LISTEN, spec.upstream)
                    if spec.enabled:
                        await proxy.start()
                    self.proxies[spec.name] = proxy
                    done.append(proxy)
                except ProxyError as exc:
                    raise PopulateError(exc.status, exc.message, done) from None
        return done

    async def reset(self) -> None:
        """Enable every proxy, remove all toxics (live), restart connection numbering."""
        async with self.lock:
            for proxy in self.sorted():
                await proxy.start()
                proxy.remove_all_toxics()
                proxy.accepted = 0

    async def close(self) -> None:
        async with self.lock:
            for proxy in self.sorted():
                await proxy.stop()


class PopulateError(ProxyError):
    def __init__(self, status: int, message: str, created: list[Proxy]) -> None:
        super().__init__(status, message)
        self.created = created
