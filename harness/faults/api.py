"""The Toxiproxy 2.x HTTP API as a raw ASGI app, served by hypercorn's trio worker.

Routes, status codes, JSON shapes and error bodies follow Shopify/toxiproxy 2.12 ``api.go`` (see
``/work/shared/reference/toxiproxy-spec.md`` sections 2-5): compact JSON in Go's field order,
``{"error":...,"status":...}`` error bodies, 201 for proxy create and populate, 200 for toxic
create, 204 for deletes and reset, 403 for browser user agents, ``404 page not found`` for
unknown paths, 405 (empty) for a known path with the wrong method.

``serve_api(collection, host, port)`` runs it; ``ToxiproxyApp(collection)`` is the ASGI app.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from harness.faults.proxy import PopulateError, ProxyCollection, ProxyError, ProxySpec
from harness.faults.toxics import JsonFloat, ToxicError, decode_error, go_json_kind

TOXIPROXY_VERSION = "2.12.0"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Response:
    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers: list[tuple[bytes, bytes]] = []
        if status != 204:  # Go sends a length, not a chunked body
            self.headers.append((b"content-length", str(len(body)).encode()))
        if content_type is not None:
            self.headers.append((b"content-type", content_type.encode()))
        self.headers += extra or []


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, value: Any) -> Response:
    return Response(status, compact(value), "application/json")


def text_error(status: int, text: str) -> Response:
    """Go's ``http.Error``: text/plain with nosniff and a trailing newline."""
    return Response(
        status,
        text.encode() + b"\n",
        "text/plain; charset=utf-8",
        [(b"x-content-type-options", b"nosniff")],
    )


def api_error(status: int, message: str) -> Response:
    return text_error(status, compact({"error": message, "status": status}).decode())


class BadBody(Exception):
    pass


def _not_json(constant: str) -> Any:
    """NaN, Infinity, -Infinity: no JSON for Go (stored, a NaN toxicity broke every listing)."""
    where = "in numeric literal" if constant.startswith("-") else "looking for beginning of value"
    raise BadBody(f"bad request body: invalid character '{constant.lstrip('-')[0]}' {where}")


_JSON = json.JSONDecoder(parse_float=JsonFloat, parse_constant=_not_json)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _go_text(value: Any) -> Any:
    """Go's decoder reads a lone surrogate escape as U+FFFD (kept, a proxy named "\\ud800"
    could be neither listed nor deleted)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_go_text(item) for item in value]
    if isinstance(value, dict):
        return {_go_text(key): _go_text(item) for key, item in value.items()}
    return value


def decode_body(body: bytes) -> Any:
    """Go's ``json.NewDecoder(r.Body).Decode``: the first JSON value; trailing bytes ignored."""
    text = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise BadBody("bad request body: EOF")
    try:
        value, _ = _JSON.raw_decode(text)
        return _go_text(value) if _SURROGATE_ESCAPE.search(text) else value
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise BadBody("bad request body: unexpected EOF") from None
        raise BadBody(f"bad request body: {exc.msg} at offset {exc.pos}") from None
    except RecursionError:  # Go stops at depth 10,000; Python's stack sooner
        raise BadBody("bad request body: exceeded max depth") from None


_PROXY_FIELDS: dict[str, type] = {"name": str, "listen": str, "upstream": str, "enabled": bool}
# Go's type names in decode errors of proxy requests (api.go, proxy_collection.go PopulateJson).
_PROXY = "toxiproxy.Proxy"
_POPULATE_ENTRY = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'


def proxy_fields(value: Any, *, populate: bool = False) -> dict[str, Any]:
    """A proxy object from a request: known fields type-checked, null = absent, rest ignored."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        go_type = _POPULATE_ENTRY if populate else _PROXY
        raise BadBody(decode_error(go_json_kind(value), f"Go value of type {go_type}"))
    fields: dict[str, Any] = {}
    for key, field_type in _PROXY_FIELDS.items():
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, field_type):
            go_type = "bool" if field_type is bool else "string"
            where = f"Proxy.{key}"  # populate entries embed Proxy in an unnamed struct
            if populate:
                where = ".enabled" if key == "enabled" else f".{where}"
            target = f"Go struct field {where} of type {go_type}"
            raise BadBody(decode_error(go_json_kind(item), target))
        fields[key] = item
    return fields


def spec_from(fields: dict[str, Any]) -> ProxySpec:
    return ProxySpec(
        name=fields.get("name", ""),
        upstream=fields.get("upstream", ""),
        listen=fields.get("listen", ""),
        enabled=fields.get("enabled", True),
    )


Handler = Callable[["Request"], Awaitable[Response]]
_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Request:
    def __init__(self, params: dict[str, str], body: bytes) -> None:
        self.params = params
        self.body = body

    def json(self) -> Any:
        return decode_body(self.body)


class ToxiproxyApp:
    """ASGI app serving the Toxiproxy API over a ``ProxyCollection``."""

    def __init__(self, collection: ProxyCollection, version: str = TOXIPROXY_VERSION) -> None:
        self.collection = collection
        self.version = version
        self._request_ids = itertools.count(1)
        self._id_prefix = f"{id(self) & 0xFFFFFFFF:08x}"
        p = r"(?P<{}>[^/]+)"
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"^/version$"), {"GET": self.version_}),
            (re.compile(r"^/reset$"), {"POST": self.reset}),
            (re.compile(r"^/proxies$"), {"GET": self.list_proxies, "POST": self.create_proxy}),
            (re.compile(r"^/populate$"), {"POST": self.populate}),
            (
                re.compile(rf"^/proxies/{p.format('proxy')}$"),
                {
                    "GET": self.show_proxy,
                    "POST": self.update_proxy,
                    "PATCH": self.update_proxy,
                    "DELETE": self.delete_proxy,
                },
            ),
            (
                re.compile(rf"^/proxies/{p.format('proxy')}/toxics$"),
                {"GET": self.list_toxics, "POST": self.create_toxic},
            ),
            (
                re.compile(rf"^/proxies/{p.format('proxy')}/toxics/{p.format('toxic')}$"),
                {
                    "GET": self.show_toxic,
                    "POST": self.update_toxic,
                    "PATCH": self.update_toxic,
                    "DELETE": self.delete_toxic,
                },
            ),
        ]

        if collection.metrics.enabled:  # like Go: the route exists only with -proxy-metrics
            self.routes.append(
                (re.compile(r"^/metrics$"), dict.fromkeys(_ALL_METHODS, self.metrics))
            )

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        response = await self.dispatch(scope, body)
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    def _request_id(self) -> bytes:
        return f"{self._id_prefix}{next(self._request_ids):012d}".encode()

    async def dispatch(self, scope: Scope, body: bytes) -> Response:
        path: str = scope["path"]
        method: str = scope["method"]
        for pattern, methods in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            handler = methods.get(method)
            if handler is None:
                return Response(405)
            response = await self._matched(scope, handler, Request(match.groupdict(), body))
            response.headers.append((b"x-toxiproxy-request-id", self._request_id()))
            return response
        return text_error(404, "404 page not found")

    async def _matched(self, scope: Scope, handler: Handler, request: Request) -> Response:
        user_agent = ""
        for key, value in scope.get("headers", []):
            if key.lower() == b"user-agent":
                user_agent = value.decode("latin-1")
        if user_agent.startswith("Mozilla/"):
            return text_error(403, "User agent not allowed")
        try:
            return await handler(request)
        except PopulateError as exc:
            # api.go Populate: a plain JSON response (not http.Error): no newline, JSON type.
            created = [p.to_json() for p in exc.created] or None
            body = {"error": exc.message, "status": exc.status, "proxies": created}
            return json_response(exc.status, body)
        except ToxicError as exc:
            return api_error(400, str(exc))
        except ProxyError as exc:
            return api_error(exc.status, exc.message)
        except BadBody as exc:
            return api_error(400, str(exc))
        except Exception as exc:  # like Go: an error without a status is a 500 with its text
            return api_error(500, f"{type(exc).__name__}: {exc}")

    # -- handlers --------------------------------------------------------------------------------
    async def version_(self, request: Request) -> Response:
        body = json.dumps({"version": self.version}).encode() + b"\n"
        return Response(200, body, "application/json;charset=utf-8")

    async def metrics(self, request: Request) -> Response:
        body = self.collection.metrics.exposition().encode()
        return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")

    async def reset(self, request: Request) -> Response:
        await self.collection.reset()
        return Response(204)

    async def list_proxies(self, request: Request) -> Response:
        return json_response(200, {p.name: p.to_json() for p in self.collection.sorted()})

    async def create_proxy(self, request: Request) -> Response:
        proxy = await self.collection.create(spec_from(proxy_fields(request.json())))
        return json_response(201, proxy.to_json())

    async def populate(self, request: Request) -> Response:
        try:
            entries = request.json()
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                target = f"Go value of type []{_POPULATE_ENTRY}"
                raise BadBody(decode_error(go_json_kind(entries), target))
            specs = [spec_from(proxy_fields(entry, populate=True)) for entry in entries]
        except BadBody as exc:  # Populate answers every error in its own JSON shape
            raise PopulateError(400, str(exc), []) from None
        proxies = await self.collection.populate(specs)
        return json_response(201, {"proxies": [p.to_json() for p in proxies] or None})

    async def show_proxy(self, request: Request) -> Response:
        return json_response(200, self.collection.get(request.params["proxy"]).to_json())

    async def update_proxy(self, request: Request) -> Response:
        name = request.params["proxy"]
        self.collection.get(name)
        fields = proxy_fields(request.json())
        proxy = await self.collection.update(
            name,
            listen=fields.get("listen"),
            upstream=fields.get("upstream"),
            enabled=fields.get("enabled"),
        )
        return json_response(200, proxy.to_json())

    async def delete_proxy(self, request: Request) -> Response:
        await self.collection.delete(request.params["proxy"])
        return Response(204)

    async def list_toxics(self, request: Request) -> Response:
        proxy = self.collection.get(request.params["proxy"])
        return json_response(200, [t.to_json() for t in proxy.ordered_toxics()])

    async def create_toxic(self, request: Request) -> Response:
        proxy = self.collection.get(request.params["proxy"])
        async with self.collection.lock:
            toxic = proxy.add_toxic(request.json())
        return json_response(200, toxic.to_json())

    async def show_toxic(self, request: Request) -> Response:
        proxy = self.collection.get(request.params["proxy"])
        return json_response(200, proxy.get_toxic(request.params["toxic"]).to_json())

    async def update_toxic(self, request: Request) -> Response:
        proxy = self.collection.get(request.params["proxy"])
        proxy.get_toxic(request.params["toxic"])
        async with self.collection.lock:
            toxic = proxy.update_toxic(request.params["toxic"], request.json())
        return json_response(200, toxic.to_json())

    async def delete_toxic(self, request: Request) -> Response:
        proxy = self.collection.get(request.params["proxy"])
        async with self.collection.lock:
            proxy.remove_toxic(request.params["toxic"])
        return Response(204)


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    config.include_server_header = False  # Go's server sends none
    return config


class _PortStatus:
    """Passes hypercorn's ``started(binds)`` on as ``started(port)``."""

    def __init__(self, outer: trio.TaskStatus[int]) -> None:
        self.outer = outer

    def started(self, binds: list[str] | None = None) -> None:
        assert binds, "hypercorn reported no bound address"
        self.outer.started(int(binds[0].rsplit(":", 1)[1]))


async def serve_api(
    collection: ProxyCollection,
    host: str = "127.0.0.1",
    port: int = 8474,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; ``task_status.started(port)`` reports the bound port.

    Use as ``port = await nursery.start(serve_api, collection, "127.0.0.1", 0)``.
    """
    app = ToxiproxyApp(collection)
    await serve(
        app,  # type: ignore[arg-type]
        hypercorn_config(host, port),
        task_status=_PortStatus(task_status),  # type: ignore[arg-type]
    )
