"""Fault backends: one small interface the runner drives, two implementations.

- ``EmbeddedBackend``: in-process (trio), on a ``MemoryNetwork`` (simulation, virtual time) or
  on real loopback TCP; supports every toxic including the extensions. Open it with
  ``async with open_embedded_backend(network=net, seed=7) as backend: ...``.
- ``ToxiproxyBackend``: any Toxiproxy-compatible server at a URL (``TOXIPROXY_URL``), driven
  through toxiproxy-python from a worker thread (``trio.to_thread``). A real Toxiproxy knows no
  extensions, so a step that needs one raises ``UnsupportedByRealToxiproxy`` (message starts
  with ``unsupported by real Toxiproxy:``) instead of silently doing something else.

Both raise ``FaultBackendError`` (with the HTTP-style ``status`` and Toxiproxy's message) for
requests the server refuses.
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.faults.api import serve_api
from harness.faults.memnet import MemoryNetwork
from harness.faults.proxy import (
    DEFAULT_LISTEN,
    MemoryTransport,
    Proxy,
    ProxyCollection,
    ProxyError,
    ProxySpec,
    TcpTransport,
)
from harness.faults.toxics import ToxicError, build_toxic

T = TypeVar("T")


class FaultBackendError(Exception):
    """The fault server refused a request (``status`` as its HTTP API would answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedByRealToxiproxy(FaultBackendError):
    """The step needs an extension a real Toxiproxy server does not have; skip it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"unsupported by real Toxiproxy: {what}")


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str  # the bound address, e.g. "127.0.0.1:43771"
    upstream: str
    enabled: bool


@dataclass(frozen=True)
class ToxicSpec:
    """A toxic to add. ``only_connection``/``from_connection`` target connections (1-based,
    per proxy, in accept order): an extension, merged into the attributes."""

    type: str
    stream: str | None = None  # None: "downstream" ("upstream" for reset_after)
    name: str | None = None  # None: "<type>_<stream>"
    toxicity: float = 1.0
    attributes: Mapping[str, Any] = field(default_factory=dict)
    only_connection: int | None = None
    from_connection: int | None = None

    def to_json(self) -> dict[str, Any]:
        attributes = dict(self.attributes)
        if self.only_connection is not None:
            attributes["only_connection"] = self.only_connection
        if self.from_connection is not None:
            attributes["from_connection"] = self.from_connection
        body: dict[str, Any] = {
            "type": self.type,
            "toxicity": self.toxicity,
            "attributes": attributes,
        }
        if self.stream is not None:
            body["stream"] = self.stream
        if self.name is not None:
            body["name"] = self.name
        return body


class FaultBackend(ABC):
    """What the runner calls. All methods are async (trio)."""

    kind: str

    @abstractmethod
    async def create_proxy(
        self, name: str, upstream: str, listen: str = DEFAULT_LISTEN, enabled: bool = True
    ) -> ProxyInfo: ...

    @abstractmethod
    async def get_proxy(self, name: str) -> ProxyInfo: ...

    @abstractmethod
    async def delete_proxy(self, name: str) -> None: ...

    @abstractmethod
    async def set_enabled(self, name: str, enabled: bool) -> ProxyInfo: ...

    async def enable(self, name: str) -> ProxyInfo:
        return await self.set_enabled(name, True)

    async def disable(self, name: str) -> ProxyInfo:
        return await self.set_enabled(name, False)

    @abstractmethod
    async def add_toxic(self, proxy: str, toxic: ToxicSpec) -> dict[str, Any]:
        """Add a toxic; returns its Toxiproxy JSON (name, type, stream, toxicity, attributes)."""

    @abstractmethod
    async def update_toxic(
        self,
        proxy: str,
        toxic_name: str,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]: ...

    @abstractmethod
    async def remove_toxic(self, proxy: str, toxic_name: str) -> None: ...

    @abstractmethod
    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (on a Toxiproxy server: all of its proxies,
        not only this backend's)."""

    @abstractmethod
    async def close(self) -> None:
        """Release what this backend created (embedded: stop all proxies)."""

    def unsupported_reason(self, toxic: ToxicSpec) -> str | None:
        """Why this backend cannot run ``toxic`` (None: it can). Lets a runner skip up front."""
        return None


def unsupported_by_real_toxiproxy(toxic: ToxicSpec) -> str | None:
    """What of ``toxic`` a real Toxiproxy does not know (our extensions), e.g. "toxic type
    'reset_after'"; None if it knows it all."""
    try:
        found = build_toxic(toxic.to_json()).uses_extensions()
    except ToxicError:
        return None  # invalid, not unsupported: add_toxic reports it
    return ", ".join(found) or None


def _check_locally(toxic: ToxicSpec) -> None:
    """Refuse bad toxics before any server sees them (same checks as the embedded API)."""
    try:
        build_toxic(toxic.to_json())
    except ToxicError as exc:
        raise FaultBackendError(str(exc), 400) from None


# ---------------------------------------------------------------------------------------------


class EmbeddedBackend(FaultBackend):
    """In-process proxies over a ``ProxyCollection`` (memnet or TCP), all extensions included.

    ``proxy(name)`` gives the live ``Proxy`` (``accepted`` connection count, ``connections``).
    """

    kind = "embedded"

    def __init__(self, collection: ProxyCollection) -> None:
        self.collection = collection
        self.api_url: str | None = None  # set when the HTTP API is served too

    def proxy(self, name: str) -> Proxy:
        try:
            return self.collection.get(name)
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    @staticmethod
    def _info(proxy: Proxy) -> ProxyInfo:
        return ProxyInfo(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)

    async def create_proxy(
        self, name: str, upstream: str, listen: str = DEFAULT_LISTEN, enabled: bool = True
    ) -> ProxyInfo:
        try:
            proxy = await self.collection.create(ProxySpec(name, upstream, listen, enabled))
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None
        return self._info(proxy)

    async def get_proxy(self, name: str) -> ProxyInfo:
        return self._info(self.proxy(name))

    async def delete_proxy(self, name: str) -> None:
        self.proxy(name)
        await self.collection.delete(name)

    async def set_enabled(self, name: str, enabled: bool) -> ProxyInfo:
        self.proxy(name)
        try:
            return self._info(await self.collection.update(name, enabled=enabled))
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    async def add_toxic(self, proxy: str, toxic: ToxicSpec) -> dict[str, Any]:
        try:
            return self.proxy(proxy).add_toxic(toxic.to_json()).to_json()
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    async def update_toxic(
        self,
        proxy: str,
        toxic_name: str,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"attributes": dict(attributes or {})}
        if toxicity is not None:
            body["toxicity"] = toxicity
        try:
            return self.proxy(proxy).update_toxic(toxic_name, body).to_json()
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    async def remove_toxic(self, proxy: str, toxic_name: str) -> None:
        try:
            self.proxy(proxy).remove_toxic(toxic_name)
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    async def reset(self) -> None:
        try:
            await self.collection.reset()
        except ProxyError as exc:
            raise FaultBackendError(exc.message, exc.status) from None

    async def close(self) -> None:
        await self.collection.close()


@asynccontextmanager
async def open_embedded_backend(
    *,
    network: MemoryNetwork | None = None,
    seed: int | str = 0,
    api_host: str = "127.0.0.1",
    api_port: int | None = None,
) -> AsyncIterator[EmbeddedBackend]:
    """An embedded backend for the duration of the block.

    ``network`` given: proxies live on that in-memory network (simulation). Otherwise on TCP;
    then ``api_port`` (0 = any) also serves the Toxiproxy HTTP API, reported as
    ``backend.api_url``.
    """
    async with trio.open_nursery() as nursery:
        transport = MemoryTransport(network) if network is not None else TcpTransport()
        backend = EmbeddedBackend(ProxyCollection(nursery, transport, seed))
        if api_port is not None:
            port = await nursery.start(serve_api, backend.collection, api_host, api_port)
            backend.api_url = f"http://{api_host}:{port}"
        try:
            yield backend
        finally:
            with trio.CancelScope(shield=True):
                await backend.close()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------


REQUEST_TIMEOUT = 30.0  # seconds; toxiproxy-python itself sets none
_CLIENT_LOCK = threading.Lock()  # toxiproxy-python keeps host/port in class attributes


class ToxiproxyBackend(FaultBackend):
    """A Toxiproxy server (real or ours) at ``url``, through toxiproxy-python in a thread.

    ``name_prefix`` is put before every proxy name on the server (and taken off in answers),
    so runs sharing one server, e.g. parallel scenario jobs, do not clash.
    """

    kind = "toxiproxy"

    def __init__(self, url: str | None = None, *, name_prefix: str = "") -> None:
        url = url or os.environ.get("TOXIPROXY_URL") or "http://127.0.0.1:8474"
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname:
            raise FaultBackendError(f"TOXIPROXY_URL {url!r}: no host")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 8474
        self.name_prefix = name_prefix
        self._created: list[str] = []

    def _on_server(self, name: str) -> str:
        return f"{self.name_prefix}{name}"

    async def _call(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with _CLIENT_LOCK:
                saved = APIConsumer.host, APIConsumer.port
                APIConsumer.host, APIConsumer.port = self.host, self.port
                try:
                    return fn()
                finally:
                    APIConsumer.host, APIConsumer.port = saved

        try:
            return await trio.to_thread.run_sync(locked)
        except FaultBackendError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: Exception) -> FaultBackendError:
        status = {ProxyExists: 409, NotFound: 404, InvalidToxic: 400}.get(type(exc))
        if status is not None:
            return FaultBackendError(_error_message(exc.args[0] if exc.args else b""), status)
        return FaultBackendError(f"Toxiproxy at {self.url}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _checked(response: Any) -> dict[str, Any]:
        """toxiproxy-python returns non-400/404/409 failures as responses: turn them into
        errors; return the JSON body of a success (``{}`` if it has none)."""
        if response.status_code >= 400:
            raise FaultBackendError(_error_message(response.content), response.status_code)
        return response.json() if response.content else {}

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call through toxiproxy-python's ``APIConsumer``; the JSON reply or an error."""

        def call() -> Any:
            if method == "GET":
                return APIConsumer.get(path, timeout=REQUEST_TIMEOUT)
            if method == "DELETE":
                return APIConsumer.delete(path, timeout=REQUEST_TIMEOUT)
            return APIConsumer.post(path, json=body, timeout=REQUEST_TIMEOUT)

        return self._checked(await self._call(call))

    def _info(self, body: Mapping[str, Any]) -> ProxyInfo:
        name = str(body["name"]).removeprefix(self.name_prefix)
        return ProxyInfo(name, body["listen"], body["upstream"], body["enabled"])

    def unsupported_reason(self, toxic: ToxicSpec) -> str | None:
        return unsupported_by_real_toxiproxy(toxic)

    async def create_proxy(
        self, name: str, upstream: str, listen: str = DEFAULT_LISTEN, enabled: bool = True
    ) -> ProxyInfo:
        body = {
            "name": self._on_server(name),
            "upstream": upstream,
            "listen": listen,
            "enabled": enabled,
        }
        info = self._info(await self._request("POST", "/proxies", body))
        self._created.append(name)
        return info

    async def get_proxy(self, name: str) -> ProxyInfo:
        return self._info(await self._request("GET", f"/proxies/{self._on_server(name)}"))

    async def delete_proxy(self, name: str) -> None:
        await self._request("DELETE", f"/proxies/{self._on_server(name)}")
        if name in self._created:
            self._created.remove(name)

    async def set_enabled(self, name: str, enabled: bool) -> ProxyInfo:
        def switch() -> Any:
            proxy = Toxiproxy().get_proxy(self._on_server(name))
            if proxy is None:
                raise FaultBackendError("proxy not found", 404)
            if enabled:
                proxy.enable()
            else:
                proxy.disable()
            return Toxiproxy().get_proxy(self._on_server(name))

        proxy = await self._call(switch)
        return self._info(proxy.__dict__)

    async def add_toxic(self, proxy: str, toxic: ToxicSpec) -> dict[str, Any]:
        reason = self.unsupported_reason(toxic)
        if reason:
            raise UnsupportedByRealToxiproxy(reason)
        _check_locally(toxic)

        def add() -> dict[str, Any]:
            target = Toxiproxy().get_proxy(self._on_server(proxy))
            if target is None:
                raise FaultBackendError("proxy not found", 404)
            body = toxic.to_json()
            stream = body.get("stream", "upstream" if toxic.type == "reset_after" else "downstream")
            name = body.get("name") or f"{toxic.type}_{stream}"  # as the server names it
            target.add_toxic(
                type=toxic.type,
                stream=stream,
                name=name,
                toxicity=toxic.toxicity,
                attributes=body["attributes"],
            )
            return dict(target.get_toxic(name).__dict__)

        created = await self._call(add)
        return {
            key: created.get(key) for key in ("attributes", "name", "type", "stream", "toxicity")
        }

    async def update_toxic(
        self,
        proxy: str,
        toxic_name: str,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        for key in ("only_connection", "from_connection"):
            if attributes and attributes.get(key) is not None:
                raise UnsupportedByRealToxiproxy(f"attribute {key!r}")
        body: dict[str, Any] = {"attributes": dict(attributes or {})}
        if toxicity is not None:
            body["toxicity"] = toxicity
        # toxiproxy-python has no update call; its APIConsumer does the POST.
        path = f"/proxies/{self._on_server(proxy)}/toxics/{toxic_name}"
        return await self._request("POST", path, body)

    async def remove_toxic(self, proxy: str, toxic_name: str) -> None:
        await self._request("DELETE", f"/proxies/{self._on_server(proxy)}/toxics/{toxic_name}")

    async def reset(self) -> None:
        if not await self._call(lambda: Toxiproxy().reset()):
            raise FaultBackendError(f"Toxiproxy at {self.url}: reset failed")

    async def close(self) -> None:
        for name in list(self._created):
            try:
                await self.delete_proxy(name)
            except FaultBackendError:
                pass


def _error_message(content: bytes | str) -> str:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip()
