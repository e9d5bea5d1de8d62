"""The reference client's trio driver: moves bytes and time for ``GatewayClientCore``.

It opens connections (an injectable ``open_stream(host, port)``: TCP by default, memnet in
simulation), does TLS itself so the handshake is its own timed stage, upgrades with the
``websockets`` trio client over that stream, decodes frames, runs the core's timers, fetches
``/gateway/bot`` (an injectable fetcher: HTTP by default, a plain function in simulation), and
hands dispatches to the application: an async iterator, callbacks and a JSON-lines delivery log.

All waiting goes through trio (``trio.current_time``, ``move_on_at``), so the same client runs in
wall-clock mode and under ``trio.testing.MockClock``. Each connection runs in its own cancel
scope; its timers are dropped when it ends, so nothing from an old socket touches a new one.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import trio
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Opcode
from websockets.protocol import Event
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect

from fake_gateway.urls import API_BASE_PATH, rest_base
from gateway_common.eager_lock import EagerLock
from gateway_common.facts import FATAL_CLOSE_CODES
from harness.client.codec import FrameDecodeError, TransportDecoder
from harness.client.core import (
    AbortConnection,
    Action,
    CancelTimer,
    ClientConfig,
    CloseConnection,
    CloseHow,
    Connect,
    Deliver,
    Dispatch,
    FetchGatewayBot,
    GatewayClientCore,
    SendFrame,
    StartTimer,
    StateChanged,
    Stop,
)

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]
GatewayBotFetcher = Callable[[], "Awaitable[Mapping[str, Any]] | Mapping[str, Any]"]
CoreFactory = Callable[[ClientConfig, random.Random], GatewayClientCore]
DeliveryRecord = dict[str, Any]

USER_AGENT = "DiscordBot (gateway-harness reference client, 0.1)"

# A setting the server refuses (a REST URL that answers 404, a certificate the CA file does not
# verify) is a configuration error, not an outage: said at once, and after this many attempts
# in a row with no success between, the client stops (fatal) instead of backing off forever.
CONFIG_ERROR_ATTEMPTS = 3


class FatalGatewayError(Exception):
    """The client stopped on an error a human must fix (fatal close code, identify budget)."""


class Misconfigured(Exception):
    """A setting is wrong (REST URL, token, CA file); the message says which, in one line.
    ``final``: stop at once (a refused token never becomes valid by asking again)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class CAFileError(ValueError):
    """The CA file cannot be used (missing, unreadable, not a PEM certificate)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"CA file {path}: {why}")
        self.path = path
        self.why = why


def tls_context_for(ca_file: str | None) -> ssl.SSLContext:
    """The client's TLS context, trusting ``ca_file`` (None: the system's CAs); raises
    ``CAFileError`` naming the file when it cannot be used."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise CAFileError(str(ca_file), f"not a PEM CA certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise CAFileError(str(ca_file), (exc.strerror or str(exc)).lower()) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


class _GatewayConnection(ClientConnection):
    """Says when the server's close frame arrives: ``recv()`` raises only once the TCP
    connection is gone too, which a peer or a middlebox may hold back far longer than the close
    code takes to matter (discord.js #7450: a socket stuck in CLOSING after 4009)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_frame_received = trio.Event()
        self.send_lock = EagerLock()  # type: ignore[assignment]  # no yield when free

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if getattr(event, "opcode", None) is Opcode.CLOSE:
            self.close_frame_received.set()


class _PreparedStreamConnect(ws_connect):
    """The driver has already done TLS (to time and report it); don't wrap the stream again."""

    async def enable_tls(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        return stream


@dataclass
class _CloseRequest:
    code: int
    reason: str


@dataclass
class _Link:
    """One connection attempt and everything that must die with it."""

    gen: int
    url: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    outbox: deque[str | _CloseRequest] = field(default_factory=deque)
    wake_writer: trio.Event = field(default_factory=trio.Event)
    stream: trio.abc.Stream | None = None
    ws: ClientConnection | None = None
    close_reported: bool = False  # the server's close frame went to the core


class GatewayClient:
    """The trio reference gateway client.

    Run it in a nursery (``await nursery.start(client.run)``) or use
    ``open_gateway_client``. ``rng`` drives every random choice (heartbeat jitter, backoff, the
    op-9 wait); pass a seeded one for reproducible runs.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        rng: random.Random | None = None,
        open_stream: OpenStream | None = None,
        fetch_gateway_bot: GatewayBotFetcher | None = None,
        ssl_context: ssl.SSLContext | None = None,
        delivery_log: str | Path | IO[str] | None = None,
        delivery_clock: Callable[[], float] | None = None,
        core_factory: CoreFactory | None = None,
    ) -> None:
        self.config = config
        self.core = (core_factory or GatewayClientCore)(config, rng or random.Random())
        self.transitions: list[StateChanged] = []
        self.delivered: list[DeliveryRecord] = []
        self.stop_info: Stop | None = None
        self._open_stream = open_stream or open_tcp_stream
        self._fetcher: GatewayBotFetcher = fetch_gateway_bot or self._fetch_gateway_bot_http
        self._ssl_context = ssl_context
        self._delivery_log_target = delivery_log
        self._delivery_file: IO[str] | None = None
        self._owns_delivery_file = False
        self._delivery_clock = delivery_clock or trio.current_time
        self._state_listeners: list[Callable[[StateChanged], None]] = []
        self._delivery_listeners: list[Callable[[DeliveryRecord], None]] = []
        self._dispatch_send: trio.MemorySendChannel[Dispatch] | None = None
        self._dispatch_recv: trio.MemoryReceiveChannel[Dispatch] | None = None
        self._timers: dict[int, StartTimer] = {}
        # The timer task sleeps in this scope until the earliest timer; starting or cancelling
        # one moves the scope's deadline rather than waking the task.
        self._timer_scope: trio.CancelScope | None = None
        self._links: dict[int, _Link] = {}
        self._links_changed = trio.Event()
        self._pending: deque[Action] = deque()
        self._performing = False
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._finished = trio.Event()
        self._started = False
        # The configuration error seen last and not yet followed by a success (None: none),
        # where it was seen ("rest", "tls", "gateway"), and attempts in a row per place.
        self.config_error: str | None = None
        self._config_error_where: str | None = None
        self._config_errors_in_a_row: dict[str, int] = {}
        self._config_listeners: list[Callable[[str], None]] = []
        self._kept_decoder: TransportDecoder | None = None  # see core.fresh_transport_context

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> str:
        return self.core.state

    def counters(self) -> dict[str, Any]:
        """Reconnects, resumes, identifies, heartbeat RTTs (last, mean) and more, as a dict."""
        return {"state": self.core.state, **self.core.counters.as_dict()}

    def on_state(self, listener: Callable[[StateChanged], None]) -> None:
        """Call ``listener(StateChanged(state, reason, ts))`` on every transition from now on."""
        self._state_listeners.append(listener)

    def on_config_error(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(message)`` as soon as a configuration error shows (the REST URL or
        the token refused, a fatal close code, a certificate the CA does not verify): one line
        naming the URL or file, said once although the client tries a few times more."""
        self._config_listeners.append(listener)

    def on_delivery(self, listener: Callable[[DeliveryRecord], None]) -> None:
        """Call ``listener({"s", "t", "session_id", "ts"})`` for every dispatch delivered."""
        self._delivery_listeners.append(listener)

    def dispatches(self) -> AsyncIterator[Dispatch]:
        """Dispatches in order, each once. Call before ``run`` starts to see READY too. Ends
        when the client stops; raises ``FatalGatewayError`` if it stopped on a fatal error."""
        if self._dispatch_recv is None:
            self._dispatch_send, self._dispatch_recv = trio.open_memory_channel[Dispatch](math.inf)
        return _DispatchIterator(self, self._dispatch_recv)

    async def send(self, payload: Mapping[str, Any]) -> None:
        """Send an application frame (e.g. op 3) under the send rate limit; raises
        ``PayloadTooLarge`` over 4096 bytes and ``NotReady`` without a live session."""
        self._perform(self.core.app_send(payload, trio.current_time()))
        await trio.lowlevel.checkpoint()

    def stop(self, reason: str = "stop requested") -> None:
        """Shut down on purpose: close with 1000 (ending the session) and stop."""
        if self.stop_info is None and self._started:
            self._perform(self.core.shutdown(trio.current_time(), reason))

    async def aclose(self) -> None:
        """``stop()`` and wait until ``run`` has finished."""
        self.stop()
        if self._started:
            await self._finished.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> Stop:
        """Connect and stay connected until stopped; returns why it stopped."""
        if self._started:
            raise RuntimeError("GatewayClient.run() may be called once")
        if self.config.ca_file is not None:
            self._tls_context()  # an unusable CA file is said now (CAFileError), not at a connect
        self._started = True
        self._open_delivery_log()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_loop)
                self._perform(self.core.start(trio.current_time()))
                task_status.started()
                await self._stopped.wait()
                # A closing connection gets its bounded close handshake, then everything ends.
                with trio.move_on_after(self.config.close_timeout + 1.0):
                    while self._links:
                        await self._links_changed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            if self._dispatch_send is not None:
                self._dispatch_send.close()
            self._close_delivery_log()
            self._finished.set()
        assert self.stop_info is not None
        return self.stop_info

    # ------------------------------------------------------------------ performing actions

    def _perform(self, actions: list[Action]) -> None:
        # Listeners may call back into the client; queue so actions run in order, once.
        self._pending.extend(actions)
        if self._performing:
            return
        self._performing = True
        try:
            while self._pending:
                self._perform_one(self._pending.popleft())
        finally:
            self._performing = False

    def _perform_one(self, action: Action) -> None:
        if isinstance(action, StartTimer):
            self._timers[action.timer_id] = action
            scope = self._timer_scope
            if scope is not None and action.deadline < scope.deadline:
                scope.deadline = action.deadline
        elif isinstance(action, CancelTimer):
            timer = self._timers.pop(action.timer_id, None)
            if timer is not None:
                self._timer_gone(timer)
        elif isinstance(action, SendFrame):
            link = self._links.get(action.gen)
            if link is not None:
                link.outbox.append(action.text)
                link.wake_writer.set()
        elif isinstance(action, CloseConnection):
            link = self._links.get(action.gen)
            if link is not None:
                if link.ws is None:
                    link.scope.cancel()  # nothing to say goodbye on yet
                else:
                    link.outbox.append(_CloseRequest(action.code, action.reason))
                    link.wake_writer.set()
                    # websockets bounds the handshake; this bounds everything else.
                    link.scope.deadline = min(
                        link.scope.deadline, trio.current_time() + self.config.close_timeout + 1.0
                    )
        elif isinstance(action, AbortConnection):
            link = self._links.get(action.gen)
            if link is not None:
                link.scope.cancel()
        elif isinstance(action, Connect):
            link = _Link(action.gen, action.url)
            self._links[action.gen] = link
            self._spawn(self._run_link, link)
        elif isinstance(action, FetchGatewayBot):
            self._spawn(self._fetch)
        elif isinstance(action, Deliver):
            self._deliver(action.dispatch)
        elif isinstance(action, StateChanged):
            self.transitions.append(action)
            for listener in list(self._state_listeners):
                listener(action)
        elif isinstance(action, Stop):
            self.stop_info = action
            self._stopped.set()

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is not None and self.stop_info is None:
            self._nursery.start_soon(fn, *args)

    def _deliver(self, dispatch: Dispatch) -> None:
        record: DeliveryRecord = {
            "s": dispatch.s,
            "t": dispatch.t,
            "session_id": dispatch.session_id,
            "ts": round(self._delivery_clock(), 6),
        }
        self.delivered.append(record)
        if self._delivery_file is not None:
            self._delivery_file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._delivery_file.flush()
        for listener in list(self._delivery_listeners):
            listener(record)
        if self._dispatch_send is not None:
            self._dispatch_send.send_nowait(dispatch)

    # ------------------------------------------------------------------ timers

    def _timer_gone(self, timer: StartTimer) -> None:
        scope = self._timer_scope
        if scope is not None and timer.deadline <= scope.deadline:
            scope.deadline = min((t.deadline for t in self._timers.values()), default=math.inf)

    async def _timer_loop(self) -> None:
        while True:
            deadline = min((t.deadline for t in self._timers.values()), default=math.inf)
            with trio.CancelScope(deadline=deadline) as scope:
                self._timer_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._timer_scope = None
            now = trio.current_time()
            due = sorted(
                (t for t in self._timers.values() if t.deadline <= now),
                key=lambda t: (t.deadline, t.timer_id),
            )
            for timer in due:
                if self._timers.pop(timer.timer_id, None) is not None:
                    self._perform(self.core.timer_expired(timer.timer_id, now))

    # ------------------------------------------------------------------ REST

    async def _fetch(self) -> None:
        try:
            with trio.fail_after(self.config.rest_timeout):
                result = self._fetcher()
                if inspect.isawaitable(result):
                    result = await result
            if not isinstance(result, Mapping):
                raise TypeError(f"/gateway/bot answer is a {type(result).__name__}")
        except Misconfigured as exc:
            if self._config_trouble("rest", str(exc), final=exc.final):
                self._perform(self.core.configuration_error(str(exc), trio.current_time()))
            else:
                self._perform(self.core.gateway_bot_failed(str(exc), trio.current_time()))
            return
        except trio.TooSlowError:
            self._perform(self.core.gateway_bot_failed(
                f"no answer within {self.config.rest_timeout:g} s", trio.current_time()))
            return
        except Exception as exc:
            self._perform(self.core.gateway_bot_failed(_describe(exc), trio.current_time()))
            return
        self._config_resolved("rest")
        self._perform(self.core.gateway_bot_fetched(result, trio.current_time()))

    async def _fetch_gateway_bot_http(self) -> Mapping[str, Any]:
        rest_url = self.config.rest_url
        if not rest_url:
            # No REST configured: no budget to read; the core identifies without a guard.
            return {"url": self.config.gateway_url} if self.config.gateway_url else {}
        import httpx  # here, so simulation never needs it

        url = f"{rest_base(rest_url)}/gateway/bot"  # an origin means its /api/v10 base
        context = self._tls_context() if url.startswith("https") else None
        try:
            async with httpx.AsyncClient(
                verify=context if context is not None else True,
                timeout=self.config.rest_timeout,
                headers={"User-Agent": USER_AGENT},
            ) as http:
                response = await http.get(
                    url, headers={"Authorization": f"Bot {self.config.token}"})
        except httpx.ConnectError as exc:
            unverified = _cert_verify_error(exc)
            if unverified is not None:
                raise Misconfigured(self._untrusted(f"GET {url}", unverified)) from exc
            raise
        status = response.status_code
        if status in (401, 403, 404):
            hint = (f"is the REST URL the {API_BASE_PATH} base?" if status == 404
                    else "the token was refused")
            raise Misconfigured(f"GET {url} answered {status} {HTTPStatus(status).phrase}: {hint}",
                                final=status != 404)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError("/gateway/bot did not answer with a JSON object")
        return body

    # ------------------------------------------------------------------ connections

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = tls_context_for(self.config.ca_file)
        return self._ssl_context

    # ------------------------------------------------------------------ configuration errors

    def _config_trouble(self, where: str, message: str, *, final: bool = False) -> bool:
        """Note a configuration error seen at ``where``; say it at once if it is new. True
        when the client should stop on it rather than retry."""
        count = self._config_errors_in_a_row.get(where, 0) + 1
        self._config_errors_in_a_row[where] = count
        if message != self.config_error:
            self.config_error, self._config_error_where = message, where
            for listener in list(self._config_listeners):
                listener(message)
        return final or count >= CONFIG_ERROR_ATTEMPTS

    def _config_resolved(self, where: str) -> None:
        self._config_errors_in_a_row.pop(where, None)
        if self._config_error_where == where:
            self.config_error = self._config_error_where = None

    def _untrusted(self, what: str, error: ssl.SSLCertVerificationError) -> str:
        ca = self.config.ca_file
        trust = (f"is CA file {ca} the CA that signed the server's certificate?" if ca
                 else "no CA file was given, and the system's CAs do not trust it")
        return f"{what}: certificate verify failed ({error.verify_message}): {trust}"

    async def _run_link(self, link: _Link) -> None:
        try:
            with link.scope:
                await self._connect_and_serve(link)
        finally:
            self._links.pop(link.gen, None)
            for timer_id, timer in list(self._timers.items()):
                if timer.gen == link.gen:  # every timer dies with its connection
                    del self._timers[timer_id]
                    self._timer_gone(timer)
            if link.stream is not None:
                await trio.aclose_forcefully(link.stream)
            self._links_changed.set()
            self._links_changed = trio.Event()

    async def _connect_and_serve(self, link: _Link) -> None:
        gen = link.gen
        parts = urlsplit(link.url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        try:
            stream = await self._open_stream(host, port)
        except Exception as exc:  # refused, unreachable, DNS, or an injected opener's error
            # Whatever went wrong, this attempt is over; the core decides when to retry.
            self._perform(self.core.connect_failed(gen, "tcp", _describe(exc),
                                                   trio.current_time()))
            return
        link.stream = stream
        self._perform(self.core.connected(gen, trio.current_time()))
        if secure:
            tls = trio.SSLStream(stream, self._tls_context(), server_hostname=host,
                                 https_compatible=True)
            link.stream = tls
            try:
                await tls.do_handshake()
            except Exception as exc:  # reset mid-handshake, EOF, certificate errors ...
                error = _describe(exc)
                unverified = _cert_verify_error(exc)
                if unverified is not None:  # a setting, not the network
                    error = self._untrusted(f"TLS to {_origin(link.url)}", unverified)
                    if self._config_trouble("tls", error):
                        self._perform(self.core.configuration_error(error, trio.current_time()))
                        return
                self._perform(self.core.connect_failed(gen, "tls", error, trio.current_time()))
                return
            self._config_resolved("tls")
            self._perform(self.core.tls_done(gen, trio.current_time()))
            stream = tls
        opener = _PreparedStreamConnect(
            link.url,
            stream=stream,
            ssl=self._tls_context() if secure else None,
            compression=None,
            proxy=None,
            open_timeout=None,  # the core times every stage
            ping_interval=None,  # gateway heartbeats are the keepalive
            ping_timeout=None,
            close_timeout=self.config.close_timeout,
            max_size=None,
            max_queue=None,
            user_agent_header=USER_AGENT,
            create_connection=_GatewayConnection,
        )
        async with trio.open_nursery() as ws_nursery:
            try:
                ws = await opener.connect(ws_nursery)
            except Exception as exc:  # InvalidStatus, InvalidMessage, EOFError, OSError ...
                self._perform(self.core.connect_failed(gen, "upgrade", _describe(exc),
                                                       trio.current_time()))
                ws_nursery.cancel_scope.cancel()
                return
            link.ws = ws
            self._perform(self.core.upgraded(gen, trio.current_time()))
            await self._serve(link, ws)
            ws_nursery.cancel_scope.cancel()

    async def _serve(self, link: _Link, ws: ClientConnection) -> None:
        decoder = self._kept_decoder or TransportDecoder(self.config.compress)
        if not self.core.fresh_transport_context:  # a planted bug: one decoder for every socket
            self._kept_decoder = decoder
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, link, ws)
            if isinstance(ws, _GatewayConnection):
                nursery.start_soon(self._close_frame_watch, link, ws)
            try:
                while True:
                    message = await ws.recv()
                    try:
                        frames = decoder.feed(message)
                    except FrameDecodeError as exc:
                        self._perform(self.core.frame_undecodable(link.gen, str(exc),
                                                                  trio.current_time()))
                        continue
                    for frame in frames:
                        self._perform(self.core.frame_received(link.gen, frame,
                                                               trio.current_time()))
            except ConnectionClosed as exc:
                received = exc.rcvd
                if received is not None:
                    self._server_closed(link, received)
                else:
                    cause = exc.__cause__
                    how: CloseHow = (
                        "reset" if isinstance(cause, trio.BrokenResourceError) else "eof"
                    )
                    reason = _describe(cause) if cause is not None else "no close frame"
                    self._perform(self.core.connection_closed(
                        link.gen, None, reason, how, trio.current_time()))
            nursery.cancel_scope.cancel()

    async def _close_frame_watch(self, link: _Link, ws: _GatewayConnection) -> None:
        await ws.close_frame_received.wait()
        received = ws.protocol.close_rcvd
        if received is not None:
            self._server_closed(link, received)

    def _server_closed(self, link: _Link, received: Close) -> None:
        """The server's close frame, told to the core once (when it arrives, not when TCP ends)."""
        if link.close_reported:
            return
        link.close_reported = True
        code = None if received.code == 1005 else received.code
        if code in FATAL_CLOSE_CODES:  # the server refused a setting: say which
            self._config_trouble("gateway", (
                f"{_origin(link.url)} closed the connection with {code} "
                f"({received.reason or 'no reason'}): a fatal close code, "
                "not reconnecting"), final=True)
        self._perform(self.core.connection_closed(
            link.gen, code, received.reason, "close_frame", trio.current_time()))

    async def _writer(self, link: _Link, ws: ClientConnection) -> None:
        try:
            while True:
                while link.outbox:
                    item = link.outbox.popleft()
                    if isinstance(item, _CloseRequest):
                        await ws.aclose(item.code, item.reason)
                        return
                    await ws.send(item)
                await link.wake_writer.wait()
                link.wake_writer = trio.Event()
        except ConnectionClosed:
            return

    # ------------------------------------------------------------------ delivery log file

    def _open_delivery_log(self) -> None:
        target = self._delivery_log_target
        if target is None:
            return
        if isinstance(target, (str, Path)):
            self._delivery_file = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owns_delivery_file = True
        else:
            self._delivery_file = target

    def _close_delivery_log(self) -> None:
        if self._delivery_file is not None and self._owns_delivery_file:
            self._delivery_file.close()
        self._delivery_file = None


class _DispatchIterator:
    """Dispatches until the client stops; a fatal stop ends the loop with FatalGatewayError.
    A plain object rather than an async generator, so breaking out early needs no cleanup."""

    def __init__(self, client: GatewayClient, receive: trio.MemoryReceiveChannel[Dispatch]):
        self._client = client
        self._receive = receive

    def __aiter__(self) -> _DispatchIterator:
        return self

    async def __anext__(self) -> Dispatch:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            stop = self._client.stop_info
            if stop is not None and stop.fatal:
                raise FatalGatewayError(stop.reason) from None
            raise StopAsyncIteration from None


def _cert_verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc`` (trio and httpx wrap it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _origin(url: str) -> str:
    """``scheme://host:port`` of a gateway URL (its query is the client's own, not news)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def open_gateway_client(
    config: ClientConfig, **kwargs: Any
) -> AsyncIterator[GatewayClient]:
    """A running client inside its own nursery; leaving the block stops it (close 1000).

    ``async with open_gateway_client(cfg, rng=random.Random(1)) as client:
    async for dispatch in client.dispatches(): ...``
    """
    client = GatewayClient(config, **kwargs)
    client.dispatches()  # queue from the first dispatch (READY) on
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
