"""The fake REST surface: what real libraries call before and after connecting, plus the
harness control endpoint. A Starlette app served by hypercorn's trio worker.

Bodies come from the plain functions in `fake_gateway.payloads` (and `gateway_bot_for` below),
so simulation mode can build them without HTTP. Every JSON response has a Content-Type of
exactly `application/json` (discord.py compares it literally).
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import json
from typing import Any, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fake_gateway import payloads
from fake_gateway.config import GatewayConfig
from fake_gateway.controls import GatewayControls
from fake_gateway.protocol import GatewayCore
from fake_gateway.tls import TLSFiles
from fake_gateway.urls import API_BASE_PATH
from gateway_common.errors import UserError
from gateway_common.trace import KIND_REST

API_PREFIXES = ("/api/v9", API_BASE_PATH, "/api")


def gateway_bot_for(core: GatewayCore, now: float) -> dict[str, Any]:
    limit = core.start_limit
    return payloads.gateway_bot_payload(
        core.discovery_url, core.wire.recommended_shards(now), limit.total, limit.remaining(now),
        limit.reset_after_ms(now), core.config.max_concurrency,
    )


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type="application/json")


def _error(status: int, message: str) -> JSONResponse:
    return _json({"message": message, "code": 0}, status)


def _form_field(content_type: str, body: bytes, name: str) -> bytes | None:
    """One field of a multipart/form-data body, parsed with the standard library (starlette
    needs python-multipart for it: every multipart POST answered 500 without it)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


class RestHost(Protocol):
    """What the REST app needs of the gateway it serves (`fake_gateway.server.FakeGateway`)."""

    core: GatewayCore
    config: GatewayConfig
    controls: GatewayControls
    control_token: str

    def state(self) -> dict[str, Any]: ...


def build_app(gateway: RestHost) -> Starlette:
    core = gateway.core
    config = gateway.config

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return core.token_accepted(header.removeprefix("Bot ").strip())

    async def get_gateway(request: Request) -> Response:
        return _json(payloads.gateway_payload(core.discovery_url))

    async def get_gateway_bot(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "401: Unauthorized")
        return _json(gateway_bot_for(core, trio.current_time()))

    async def api(request: Request) -> Response:
        response = await route(request)
        # Discord's 404 for what the fake does not serve: the app gets an answer it knows, and
        # the trace shows what it asked for.
        implemented = response is not None
        if response is None:
            response = _error(404, "404: Not Found")
        core.trace.record(KIND_REST, ts=trio.current_time(), method=request.method,
                          path=request.url.path, status=response.status_code,
                          implemented=implemented)
        return response

    async def route(request: Request) -> Response | None:
        """The answer of a route the fake implements, None for any other."""
        path = request.url.path
        for prefix in API_PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix):]
                break
        else:
            return None
        if path == "/gateway":
            return await get_gateway(request)
        if path == "/gateway/bot":
            return await get_gateway_bot(request)
        if not authorized(request):
            return _error(401, "401: Unauthorized")
        parts = path.strip("/").split("/")
        method = request.method
        if path == "/users/@me":
            return _json(payloads.user_object(config))
        if path in ("/oauth2/applications/@me", "/applications/@me"):
            return _json(payloads.application_object(config))
        if parts[0] == "applications" and parts[-1] == "commands":
            return _json([] if method in ("GET", "PUT") else {})
        if path == "/soundboard-default-sounds":
            return _json([])
        if parts[0] == "guilds" and parts[-1] == "application-command-index":
            return _json(payloads.command_index_payload())
        if path == "/interactions" and method == "POST":
            return await interaction(request)
        return None

    async def interaction(request: Request) -> Response:
        """The midjourney client posts an interaction and waits for its dispatches."""
        nonce = None
        content_type = request.headers.get("content-type", "")
        try:
            raw = await request.body()
            if content_type.startswith("multipart/form-data"):
                raw = _form_field(content_type, raw, "payload_json") or b"{}"
            body = json.loads(raw or b"{}")
            nonce = body.get("nonce") if isinstance(body, dict) else None
            json.dumps(nonce, ensure_ascii=False).encode()  # sent on: a lone surrogate is no text
        except (ValueError, RecursionError):
            return _error(400, "400: Bad Request")
        now = trio.current_time()
        interaction_id = str(config.resolved_bot_id() + core.event_count + 1)
        for session in core.sessions.live():
            core.emit_to(session, "INTERACTION_CREATE", {"id": interaction_id, "nonce": nonce},
                         now)
            core.emit_to(session, "INTERACTION_SUCCESS", {"id": interaction_id, "nonce": nonce},
                         now)
        return Response(status_code=204)

    def harness_authorized(request: Request) -> bool:
        """The control token (random per gateway, in serve's JSON line), not the bot token,
        which is a well-known default: anyone who can reach the port could inject faults."""
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {gateway.control_token}".encode())

    async def control(request: Request) -> Response:
        if not harness_authorized(request):
            return _error(401, "401: Unauthorized (Authorization: Bearer <control_token>)")
        try:
            body = json.loads(await request.body())
            json.dumps(body, ensure_ascii=False).encode()  # a lone surrogate is no text
        except (ValueError, RecursionError):
            return _error(400, "control: body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            return _error(400, "control: body needs an 'action' string")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            return _error(400, "control: 'params' must be an object")
        try:
            result = gateway.controls.apply(body["action"], body.get("target", "all"), **params)
        except UserError as exc:
            return _error(400, str(exc))
        return _json(result)

    async def state(request: Request) -> Response:
        if not harness_authorized(request):
            return _error(401, "401: Unauthorized (Authorization: Bearer <control_token>)")
        return _json(gateway.state())

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[
        Route("/_harness/control", control, methods=["POST"]),
        Route("/_harness/state", state, methods=["GET"]),
        Route("/{path:path}", api, methods=methods),
    ])


async def serve_rest(
    gateway: RestHost,
    host: str,
    port: int,
    tls: TLSFiles | None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST app with hypercorn's trio worker; `task_status.started` gets the origin
    (``scheme://host:port``; the API lives under it at /api/v10, /api/v9 and /api)."""
    hconfig = HypercornConfig()
    hconfig.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hconfig.accesslog = None
    hconfig.errorlog = None
    if tls is not None:
        hconfig.certfile = tls.cert_file
        hconfig.keyfile = tls.cert_file
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: hypercorn_serve(build_app(gateway), hconfig,  # type: ignore[arg-type]
                                                task_status=task_status))
        task_status.started(binds[0])
