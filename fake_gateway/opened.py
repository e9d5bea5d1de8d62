"""Open a fake gateway on a transport and get its URLs: the one way to put `FakeGateway` on a
network, TCP on loopback or an in-memory network, with TLS or without.

    opened = await nursery.start(open_gateway, gateway)                 # ws:// on 127.0.0.1
    opened = await nursery.start(partial(open_gateway, gateway, tls=make_tls(), rest_port=0))
    opened = await nursery.start(open_gateway, gateway, network)        # a MemoryNetwork

It serves until cancelled. The handle (`OpenedGateway`) has the listeners' addresses as
host/port, the URLs clients use (the REST base ends in /api/v10, `fake_gateway.urls`) and the
control endpoint. `opened.announce(...)` makes the gateway announce other URLs than its
listeners' (a fault proxy in front of each).

The gateway does not import the harness: an in-memory network is anything with the `Network`
interface (`harness.faults.memnet.MemoryNetwork` has it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

import trio

from fake_gateway.server import FakeGateway
from fake_gateway.tls import TLSFiles
from fake_gateway.urls import rest_base
from gateway_common.facts import LISTENERS


class BoundListener(Protocol):
    """A `trio.abc.Listener` that knows the address it is bound to."""

    host: str
    port: int

    async def accept(self) -> trio.abc.Stream: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class Network(Protocol):
    """An in-memory network the gateway can listen on (`harness.faults.memnet.MemoryNetwork`)."""

    def listen(self, address: tuple[str, int], *, backlog: int = ...) -> BoundListener: ...


@dataclass(frozen=True)
class HostPort:
    """A listener's address."""

    host: str
    port: int

    def __str__(self) -> str:
        """``host:port`` (``[::1]:port``), the form a proxy's upstream takes."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, scheme: str) -> str:
        return f"{scheme}://{self}"


@dataclass(frozen=True)
class OpenedGateway:
    """A gateway serving on its listeners, and where clients reach it."""

    gateway: FakeGateway
    listeners: dict[str, HostPort]  # by listener name: "discovery", "resume"
    tls: TLSFiles | None
    rest_origin: str | None  # scheme://host:port: /api/v9, /api and /_harness/* live here too

    @property
    def scheme(self) -> str:
        return "wss" if self.tls is not None else "ws"

    @property
    def gateway_url(self) -> str:
        """The discovery listener itself (bare: no path, no query)."""
        return self.listeners["discovery"].url(self.scheme)

    @property
    def resume_listener_url(self) -> str:
        """The resume listener itself."""
        return self.listeners["resume"].url(self.scheme)

    @property
    def advertised_url(self) -> str:
        """What /gateway and /gateway/bot announce."""
        return self.gateway.core.discovery_url

    @property
    def resume_gateway_url(self) -> str:
        """What READY announces."""
        return self.gateway.core.resume_url

    @property
    def rest_url(self) -> str | None:
        """The REST base, ending in /api/v10 (None: no REST served)."""
        return rest_base(self.rest_origin) if self.rest_origin is not None else None

    @property
    def control_url(self) -> str | None:
        return f"{self.rest_origin}/_harness/control" if self.rest_origin is not None else None

    @property
    def control_headers(self) -> dict[str, str]:
        """What /_harness/control and /_harness/state require."""
        return {"authorization": f"Bearer {self.gateway.control_token}"}

    @property
    def ca_file(self) -> str | None:
        return self.tls.ca_file if self.tls is not None else None

    def announce(self, discovery_url: str, resume_url: str | None = None) -> None:
        """Announce these URLs (bare) instead of the listeners' own, e.g. a fault proxy in
        front of each. `GatewayConfig.advertise_url`/`resume_url`, when set, still win."""
        self.gateway.core.set_urls(discovery_url, resume_url)

    def gateway_bot(self) -> dict[str, Any]:
        """What GET /gateway/bot answers now (simulation has no HTTP)."""
        from fake_gateway.rest import gateway_bot_for  # the REST server only when needed

        return gateway_bot_for(self.gateway.core, trio.current_time())

    async def fetch_gateway_bot(self) -> dict[str, Any]:
        """`gateway_bot()` in the reference client's ``fetch_gateway_bot`` shape."""
        await trio.lowlevel.checkpoint()
        return self.gateway_bot()


async def open_gateway(
    gateway: FakeGateway,
    network: Network | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    resume_port: int = 0,
    rest_port: int | None = None,
    tls: TLSFiles | None = None,
    backlog: int | None = None,
    task_status: trio.TaskStatus[OpenedGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `gateway` on two listeners ("discovery" on `port`, "resume" on `resume_port`; 0:
    any free port) until cancelled; `task_status.started` gets the `OpenedGateway`.

    `network=None` listens on TCP at `host`; otherwise on `network` (simulation). With `tls`
    (e.g. `make_tls()`), WebSocket and REST speak TLS. `rest_port` (TCP only; None: no REST)
    serves /gateway/bot, the control endpoint and the rest. `backlog`: an in-memory
    listener's (None: the network's default).
    """
    if network is not None and rest_port is not None:
        raise ValueError("rest_port: REST is served on TCP only, not on an in-memory network")
    opened_listeners: list[Any] = []
    try:
        listeners: dict[str, trio.abc.Listener[Any]] = {}
        addresses: dict[str, HostPort] = {}
        for name, wanted in zip(LISTENERS, (port, resume_port), strict=True):
            if network is not None:
                memory = (network.listen((host, wanted)) if backlog is None
                          else network.listen((host, wanted), backlog=backlog))
                opened_listeners.append(memory)
                # The network's listeners are trio Listeners (the protocol above names only
                # what is used here).
                listeners[name] = cast("trio.abc.Listener[Any]", memory)
                addresses[name] = HostPort(memory.host, memory.port)
            else:
                tcp = (await trio.open_tcp_listeners(wanted, host=host))[0]
                opened_listeners.append(tcp.socket)
                listeners[name] = tcp
                bound_host, bound_port = tcp.socket.getsockname()[:2]
                addresses[name] = HostPort(bound_host, bound_port)
        opened = OpenedGateway(gateway, addresses, tls, rest_origin=None)
        gateway.core.set_urls(opened.gateway_url, opened.resume_listener_url)
        ssl_context = tls.context if tls is not None else None
        if rest_port is None:
            await gateway.serve_listeners(listeners, ssl_context,
                                          task_status=_Started(task_status, opened))
            return
        from fake_gateway.rest import serve_rest  # the REST server only when it is served

        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve_listeners, listeners, ssl_context)
            origin = await nursery.start(serve_rest, gateway, host, rest_port, tls)
            task_status.started(replace(opened, rest_origin=origin))
    finally:
        # serve_listeners closes them once serving; this covers a failure before that.
        for listener in opened_listeners:
            listener.close()


class _Started(trio.TaskStatus[None]):
    """Passes `serve_listeners`' start on as the `OpenedGateway`: no task of its own, so a
    simulated world schedules exactly the tasks it did before there was a handle."""

    def __init__(self, outer: trio.TaskStatus[OpenedGateway], opened: OpenedGateway) -> None:
        self._outer = outer
        self._opened = opened

    def started(self, value: None = None) -> None:
        self._outer.started(self._opened)

