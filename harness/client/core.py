"""The reference client's decisions, as a sans-I/O state machine.

``GatewayClientCore`` never reads a clock, sleeps, opens a socket or draws a random number on its
own: the driver feeds it events (frames received, connection stages reached or failed, closes, timer
expiries, REST results), each with the current time, and performs the actions it returns, in order:
send a frame, close or abort a connection, start or cancel a timer, open a connection, fetch
``/gateway/bot``, hand a dispatch to the application, stop. All randomness comes from the
``random.Random`` passed in.

Every connection attempt gets a new generation number. Events and timers carry the generation they
belong to; anything from an older generation is ignored, so a timer or a late close from a dead
socket can never act on the live one. Section references are to
``shared/reference/gateway-protocol.md``; the close/reconnect decisions follow its section 13 table.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway_common.facts import (
    IDENTIFY_WINDOW,
    MAX_PAYLOAD_BYTES,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_RECONNECT,
    OP_RESUME,
    RATE_LIMIT_FRAMES,
    RATE_LIMIT_WINDOW,
    SESSION_TTL,
    ClientAction,
    close_code,
)

RESUME_CLOSE_CODE = 4000  # a close code that keeps the session resumable (never 1000/1001)
SHUTDOWN_CLOSE_CODE = 1000

State = Literal[
    "disconnected",
    "connecting",
    "tls",
    "upgrading",
    "hello",
    "identifying",
    "resuming",
    "ready",
    "zombie",
    "backing_off",
    "stopped",
]
Stage = Literal["tcp", "tls", "upgrade"]
Purpose = Literal["identify", "resume"]
CloseHow = Literal["close_frame", "no_close_frame", "reset", "eof", "error"]
CloseClass = ClientAction


class PayloadTooLarge(ValueError):
    """A frame would exceed the gateway's 4096-byte limit (the server would close with 4002)."""


class NotReady(RuntimeError):
    """The application tried to send while no session is live."""


def classify_close(code: int | None) -> CloseClass:
    """What a server close (or a drop with no close code) means for the session (section 13)."""
    return close_code(code).client


def encode_frame(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def gateway_url_with_params(url: str, *, compress: str | None) -> str:
    """``url`` with ``v=10&encoding=json`` (and ``compress``) set, keeping its other parameters."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({"v": "10", "encoding": "json"})
    if compress:
        query["compress"] = compress
    else:
        query.pop("compress", None)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ClientConfig:
    """Everything the decisions depend on. Times are seconds."""

    token: str
    gateway_url: str | None = None  # discovery URL; None = use the one /gateway/bot returns
    rest_url: str | None = None  # for the driver: REST base ending in /api/v10
    ca_file: str | None = None  # for the driver: PEM of the CA to trust for wss and https
    intents: int = 513  # GUILDS | GUILD_MESSAGES
    shard: tuple[int, int] | None = None
    compress: Literal["zlib-stream", "zstd-stream"] | None = "zlib-stream"
    properties: Mapping[str, str] = field(
        default_factory=lambda: {
            "os": "linux",
            "browser": "gateway-harness",
            "device": "gateway-harness",
        }
    )
    # stage deadlines
    tcp_timeout: float = 10.0
    tls_timeout: float = 10.0
    upgrade_timeout: float = 10.0
    # Once a HELLO has told us the heartbeat interval, TCP/TLS/upgrade may take at most this many
    # intervals (never under 1 s): a handshake slower than the server's own heartbeat tolerance
    # is not worth waiting for. None = always the fixed timeouts above.
    handshake_intervals: float | None = 2.0
    hello_timeout: float = 20.0
    # READY/RESUMED may be held back in an outage while ACKs keep coming (section 3), and zombie
    # detection already catches a dead peer, so this one is long: re-IDENTIFYing is expensive.
    ready_timeout: float = 120.0
    rest_timeout: float = 10.0  # for the driver: /gateway/bot request
    close_timeout: float = 2.0  # for the driver: how long a close handshake may take
    # reconnecting
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    stable_after: float = 60.0  # a session this old resets the backoff
    invalid_session_wait: tuple[float, float] = (1.0, 5.0)
    # After this many consecutive failed RESUMEs (section 13: two), the next RESUME goes to the
    # discovery URL (never stuck on a dead resume host; Discord accepts RESUME there). If that
    # fails too, the whole gateway is down: back to resume_gateway_url, the backoff going on.
    max_failed_resumes: int = 2
    # A session lost longer than this is gone at the server: IDENTIFY instead of RESUME.
    # Until then only the server may end it (op 9 d=false, 4007, 4009, ...): a new session
    # while the old one is resumable loses every event it holds. Discord does not document its
    # window; the default is the fake gateway's session_ttl.
    resumable_window: float = SESSION_TTL
    # identify budget
    identify_window: float = IDENTIFY_WINDOW  # one IDENTIFY per window for our bucket
    identify_reserve: int = 0  # stop rather than let session_start_limit.remaining drop below this
    identify_breaker: tuple[int, float] = (10, 600.0)  # at most N IDENTIFYs per M seconds
    # send rate limit (section 8)
    send_limit: int = RATE_LIMIT_FRAMES
    send_window: float = RATE_LIMIT_WINDOW
    # A sent frame counts as in the window this much longer: network delay and clock rounding
    # must not let the server see a full window plus one.
    send_margin: float = 1.0

    def __post_init__(self) -> None:
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard {self.shard!r}: need 0 <= shard_id < num_shards")
        low, high = self.invalid_session_wait
        if not 0 <= low <= high:
            raise ValueError(f"invalid_session_wait {self.invalid_session_wait!r}: need 0<=lo<=hi")
        if self.max_failed_resumes < 1:
            raise ValueError("max_failed_resumes must be at least 1")
        if self.resumable_window <= 0:
            raise ValueError("resumable_window must be positive")


# ---------------------------------------------------------------------------------------------
# actions (outputs)


@dataclass(frozen=True)
class FetchGatewayBot:
    """Fetch ``/gateway/bot``; answer with ``gateway_bot_fetched`` or ``gateway_bot_failed``."""


@dataclass(frozen=True)
class Connect:
    """Open connection ``gen`` to ``url`` (TCP, TLS for wss, WebSocket upgrade), reporting each
    stage with ``connected``/``tls_done``/``upgraded`` or ``connect_failed``."""

    gen: int
    url: str
    purpose: Purpose


@dataclass(frozen=True)
class SendFrame:
    gen: int
    op: int
    text: str


@dataclass(frozen=True)
class CloseConnection:
    """Send a close frame with ``code`` and finish the closing handshake (bounded), then drop."""

    gen: int
    code: int
    reason: str


@dataclass(frozen=True)
class AbortConnection:
    """Tear connection ``gen`` down at once (no handshake possible or wanted)."""

    gen: int
    reason: str


@dataclass(frozen=True)
class StartTimer:
    """Call ``timer_expired(timer_id)`` at time ``deadline``. ``gen`` None = not tied to a
    connection (backoff); otherwise the timer dies with connection ``gen``."""

    timer_id: int
    name: str
    gen: int | None
    deadline: float


@dataclass(frozen=True)
class CancelTimer:
    timer_id: int


@dataclass(frozen=True)
class Dispatch:
    s: int
    t: str
    d: Any
    session_id: str | None


@dataclass(frozen=True)
class Deliver:
    """Hand a dispatch to the application (and write its delivery-log line)."""

    dispatch: Dispatch


@dataclass(frozen=True)
class StateChanged:
    state: State
    reason: str
    ts: float


@dataclass(frozen=True)
class Stop:
    """The client is done: ``fatal`` means it stopped on an error a human must look at."""

    reason: str
    fatal: bool


Action = (
    FetchGatewayBot
    | Connect
    | SendFrame
    | CloseConnection
    | AbortConnection
    | StartTimer
    | CancelTimer
    | Deliver
    | StateChanged
    | Stop
)


@dataclass
class Counters:
    connects: int = 0  # connection attempts
    reconnects: int = 0  # attempts after the first
    identifies: int = 0
    resumes: int = 0  # RESUME frames sent
    resumes_ok: int = 0  # RESUMED received
    failed_resumes: int = 0
    zombies: int = 0
    heartbeats: int = 0
    heartbeat_acks: int = 0
    heartbeat_rtts: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    dispatches: int = 0  # delivered to the application
    duplicates_dropped: int = 0
    seq_gaps: int = 0
    stage_failures: dict[str, int] = field(default_factory=dict)
    frames_sent: int = 0
    app_frames_queued: int = 0
    app_frames_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "heartbeat_rtts"}
        rtts = list(self.heartbeat_rtts)
        out["heartbeat_rtt_last"] = rtts[-1] if rtts else None
        out["heartbeat_rtt_mean"] = sum(rtts) / len(rtts) if rtts else None
        out["stage_failures"] = dict(self.stage_failures)
        return out


@dataclass
class Session:
    session_id: str
    resume_url: str | None
    seq: int  # last seq received, the `d` of heartbeats and the `seq` of RESUME


@dataclass
class _Connection:
    """What the core knows about the live connection attempt."""

    gen: int
    url: str
    purpose: Purpose
    opened_at: float
    fallback: bool = False  # a RESUME on the discovery URL (the resume host kept failing)
    stage: str = "tcp"  # tcp | tls | upgrade | hello | session
    hello: bool = False
    interval: float = 0.0
    beat_deadline: float = 0.0
    acked: bool = True
    last_beat_at: float | None = None
    established: bool = False  # READY or RESUMED seen
    closing: bool = False
    sent_times: deque[float] = field(default_factory=deque)  # every frame, for the window
    other_sent_times: deque[float] = field(default_factory=deque)  # frames other than op 1
    heartbeat_reserve: int = 3
    app_queue: deque[tuple[int, str]] = field(default_factory=deque)


class GatewayClientCore:
    """The decision core of the reference gateway client (see the module docstring)."""

    # Every connection is a new zlib-stream / zstd-stream context (section 1.4): the driver
    # starts a new decoder for each. Only a planted-bug mutant turns this off.
    fresh_transport_context = True

    def __init__(self, config: ClientConfig, rng: random.Random):
        self.config = config
        self.rng = rng
        self.state: State = "disconnected"
        self.counters = Counters()
        self.session: Session | None = None
        self.discovery_url: str | None = config.gateway_url
        self.gateway_bot: dict[str, Any] | None = None
        self.stopped = False
        self.stop_reason: str | None = None
        self._started = False
        self._gen = 0
        self._conn: _Connection | None = None
        self._next_timer_id = 0
        self._timers: dict[int, tuple[str, int | None]] = {}  # live timers: id -> (name, gen)
        self._backoff_attempt = 0
        self._failed_resumes = 0
        self._resume_on_discovery = False  # the next RESUME goes to the discovery URL
        self._session_lost_at: float | None = None  # when the session was lost (for the window)
        self._identify_times: deque[float] = deque()
        self._known_interval: float | None = None  # the last HELLO's heartbeat interval (s)
        self._pending_purpose: Purpose | None = None  # what the backoff timer will start
        self._delivered_seq = 0  # highest seq handed to the application in this session
        self._out: list[Action] = []

    # ------------------------------------------------------------------ public inputs

    def start(self, now: float) -> list[Action]:
        if self._started:
            raise RuntimeError("start() may be called once")
        self._started = True
        self._begin_attempt("identify", now)
        return self._flush()

    def gateway_bot_fetched(self, info: Mapping[str, Any], now: float) -> list[Action]:
        if self.stopped or self._pending_purpose != "identify":
            return self._flush()
        self.gateway_bot = dict(info)
        if self.config.gateway_url is None:
            url = info.get("url")
            if isinstance(url, str) and url:
                self.discovery_url = url
        self._identify_after_budget_check(now)
        return self._flush()

    def gateway_bot_failed(self, error: str, now: float, *, fatal: bool = False) -> list[Action]:
        if self.stopped or self._pending_purpose != "identify":
            return self._flush()
        if fatal:
            self._stop(f"/gateway/bot: {error}", fatal=True, now=now)
        elif self.gateway_bot is not None and self.discovery_url is not None:
            # REST is down but we know the budget from the last answer (decremented locally).
            self._identify_after_budget_check(now)
        else:
            delay = self._backoff_delay()
            self._backoff_attempt += 1
            self._schedule("identify", f"/gateway/bot failed: {error}", now, delay)
        return self._flush()

    def configuration_error(self, error: str, now: float) -> list[Action]:
        """The driver saw a setting that retrying cannot fix (REST URL, token, CA file): stop,
        fatal, with ``error`` as the reason."""
        if not self.stopped:
            self._stop(error, fatal=True, now=now)
        return self._flush()

    def connected(self, gen: int, now: float) -> list[Action]:
        conn = self._live(gen)
        if conn is not None:
            if urlsplit(conn.url).scheme == "wss":
                conn.stage = "tls"
                self._set_state("tls", "TCP connected", now)
                self._start_timer("stage", gen,
                                  now + self._handshake_timeout(self.config.tls_timeout))
            else:
                conn.stage = "upgrade"
                self._set_state("upgrading", "TCP connected", now)
                self._start_timer("stage", gen,
                                  now + self._handshake_timeout(self.config.upgrade_timeout))
        return self._flush()

    def tls_done(self, gen: int, now: float) -> list[Action]:
        conn = self._live(gen)
        if conn is not None:
            conn.stage = "upgrade"
            self._set_state("upgrading", "TLS handshake done", now)
            self._start_timer("stage", gen,
                              now + self._handshake_timeout(self.config.upgrade_timeout))
        return self._flush()

    def upgraded(self, gen: int, now: float) -> list[Action]:
        conn = self._live(gen)
        if conn is not None:
            conn.stage = "hello"
            self._set_state("hello", "WebSocket open, waiting for HELLO", now)
            self._start_timer("stage", gen, now + self.config.hello_timeout)
        return self._flush()

    def connect_failed(self, gen: int, stage: Stage, error: str, now: float) -> list[Action]:
        if self._live(gen) is not None:
            self.counters.stage_failures[stage] = self.counters.stage_failures.get(stage, 0) + 1
            self._connection_lost(f"{stage} failed: {error}", None, now)
        return self._flush()

    def connection_closed(
        self, gen: int, code: int | None, reason: str, how: CloseHow, now: float
    ) -> list[Action]:
        conn = self._live(gen)
        if conn is not None:
            if conn.closing:
                # We closed it on purpose and already decided what comes next.
                return self._flush()
            what = f"closed by server with {code}" if code is not None else f"connection {how}"
            if reason:
                what += f" ({reason})"
            self._connection_lost(what, code, now)
        return self._flush()

    def frame_undecodable(self, gen: int, error: str, now: float) -> list[Action]:
        if self._live(gen) is not None:
            self._close_and_reconnect(f"undecodable frame: {error}", "resume", now)
        return self._flush()

    def frame_received(self, gen: int, frame: Mapping[str, Any], now: float) -> list[Action]:
        conn = self._live(gen)
        if conn is None or conn.closing:
            return self._flush()
        op = frame.get("op")
        if op == OP_DISPATCH:
            self._on_dispatch(conn, frame, now)
        elif op == OP_HELLO:
            self._on_hello(conn, frame, now)
        elif op == OP_HEARTBEAT_ACK:
            conn.acked = True
            self.counters.heartbeat_acks += 1
            if conn.last_beat_at is not None:
                self.counters.heartbeat_rtts.append(now - conn.last_beat_at)
        elif op == OP_HEARTBEAT:
            # The server wants a beat now: answer with our stored seq, never the frame's d.
            # The answer is a beat like any other: no ACK for it by the next beat is a zombie.
            if conn.hello:
                self._send_heartbeat(conn, now)
                conn.acked = False
        elif op == OP_RECONNECT:
            self._close_and_reconnect("server sent op 7 Reconnect", "resume", now)
        elif op == OP_INVALID_SESSION:
            resumable = frame.get("d") is True
            if resumable and self.session is not None and conn.purpose == "resume":
                # Resumable, but our RESUME was the thing that failed: count it and retry.
                self._count_failed_resume(now)
            if resumable and self.session is not None:
                self._close_and_reconnect(
                    "op 9 Invalid Session (resumable)", "resume", now, invalid_session=True
                )
            else:
                self._close_and_reconnect(
                    "op 9 Invalid Session (not resumable)", "new_session", now,
                    invalid_session=True,
                )
        # Unknown ops are ignored: a newer gateway may send things we do not know.
        return self._flush()

    def timer_expired(self, timer_id: int, now: float) -> list[Action]:
        entry = self._timers.pop(timer_id, None)
        if entry is None or self.stopped:
            return self._flush()  # cancelled, or from a dead connection
        name, gen = entry
        conn = self._conn
        if gen is not None and (conn is None or conn.gen != gen):
            return self._flush()
        if name == "backoff":
            purpose = self._pending_purpose or "identify"
            self._begin_attempt(purpose, now)
        elif name == "identify_slot":
            self._connect("identify", now)
        elif conn is None:
            pass
        elif name == "stage":
            self._stage_deadline(conn, now)
        elif name == "heartbeat":
            self._heartbeat_due(conn, now)
        elif name == "ready":
            self._ready_deadline(conn, now)
        elif name == "stable":
            self._backoff_attempt = 0
        elif name == "send_queue":
            self._drain_app_queue(conn, now)
        return self._flush()

    def app_send(self, payload: Mapping[str, Any], now: float) -> list[Action]:
        """Queue a frame from the application (e.g. op 3 presence) under the send rate limit."""
        text = encode_frame(payload)
        self._check_size(text)
        conn = self._conn
        if conn is None or not conn.established or conn.closing:
            raise NotReady(f"cannot send op {payload.get('op')}: no live session ({self.state})")
        conn.app_queue.append((int(payload.get("op", -1)), text))
        self.counters.app_frames_queued += 1
        self._drain_app_queue(conn, now)
        return self._flush()

    def shutdown(self, now: float, reason: str = "shutdown requested") -> list[Action]:
        """Intentional stop: close with 1000 (which ends the session on the server)."""
        if not self.stopped:
            conn = self._conn
            if conn is not None and not conn.closing:
                conn.closing = True
                self._emit(CloseConnection(conn.gen, SHUTDOWN_CLOSE_CODE, reason))
            self._stop(reason, fatal=False, now=now)
        return self._flush()

    # ------------------------------------------------------------------ observation helpers

    @property
    def live_gen(self) -> int | None:
        return self._conn.gen if self._conn is not None else None

    @property
    def seq(self) -> int | None:
        return self.session.seq if self.session is not None else None

    # ------------------------------------------------------------------ internals: plumbing

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _set_state(self, state: State, reason: str, now: float) -> None:
        self.state = state
        self._emit(StateChanged(state, reason, now))

    def _live(self, gen: int) -> _Connection | None:
        if self.stopped or self._conn is None or self._conn.gen != gen:
            return None
        return self._conn

    def _start_timer(self, name: str, gen: int | None, deadline: float) -> None:
        # One timer per (name, gen): starting it again replaces the old one.
        for tid, entry in list(self._timers.items()):
            if entry == (name, gen):
                del self._timers[tid]
                self._emit(CancelTimer(tid))
        self._next_timer_id += 1
        tid = self._next_timer_id
        self._timers[tid] = (name, gen)
        self._emit(StartTimer(tid, name, gen, deadline))

    def _cancel_timers(self, *, gen: int | None = None, name: str | None = None) -> None:
        for tid, (tname, tgen) in list(self._timers.items()):
            if (gen is None or tgen == gen) and (name is None or tname == name):
                del self._timers[tid]
                self._emit(CancelTimer(tid))

    def _check_size(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")

    def _send(self, conn: _Connection, op: int, payload: Mapping[str, Any], now: float) -> None:
        text = encode_frame(payload)
        self._check_size(text)
        self._send_text(conn, op, text, now)

    def _send_text(self, conn: _Connection, op: int, text: str, now: float) -> None:
        conn.sent_times.append(now)
        if op != OP_HEARTBEAT:
            conn.other_sent_times.append(now)
        self.counters.frames_sent += 1
        self._emit(SendFrame(conn.gen, op, text))

    def _window_count(self, times: deque[float], now: float) -> int:
        # Same expression as the send_queue deadline, so a timer at that deadline frees a slot.
        while times and times[0] + self.config.send_window + self.config.send_margin <= now:
            times.popleft()
        return len(times)

    # ------------------------------------------------------------------ internals: attempts

    def _begin_attempt(self, purpose: Purpose, now: float) -> None:
        """Start a connection attempt now (resume) or after fetching /gateway/bot (identify)."""
        lost_at = self._session_lost_at
        if self.session is not None and lost_at is not None \
                and now - lost_at > self.config.resumable_window:
            # The server has let it go by now: no RESUME can work.
            self._set_state("connecting", f"session lost {now - lost_at:.1f} s ago, past "
                            f"resumable_window {self.config.resumable_window:g} s", now)
            self._forget_session()
            purpose = "identify"
        if purpose == "resume" and self.session is not None:
            self._connect("resume", now)
            return
        self._pending_purpose = "identify"
        self._set_state("connecting", "fetching /gateway/bot for the identify budget", now)
        self._emit(FetchGatewayBot())

    def _identify_after_budget_check(self, now: float) -> None:
        info = self.gateway_bot or {}
        limit = info.get("session_start_limit") or {}
        remaining = limit.get("remaining")
        if isinstance(remaining, int) and remaining <= self.config.identify_reserve:
            reset_after = limit.get("reset_after")
            self._stop(
                f"identify budget exhausted: session_start_limit.remaining={remaining} "
                f"(reserve {self.config.identify_reserve}, resets in {reset_after} ms); "
                "not identifying",
                fatal=True,
                now=now,
            )
            return
        max_count, window = self.config.identify_breaker
        while self._identify_times and self._identify_times[0] <= now - window:
            self._identify_times.popleft()
        if len(self._identify_times) >= max_count:
            self._stop(
                f"identify circuit breaker: {len(self._identify_times)} IDENTIFYs in the last "
                f"{window:g} s (limit {max_count}); stopping instead of burning the budget",
                fatal=True,
                now=now,
            )
            return
        if self.discovery_url is None:
            self._stop("no gateway URL: /gateway/bot gave none and none was configured",
                       fatal=True, now=now)
            return
        slot = self._next_identify_slot()
        if slot > now:
            self._set_state("backing_off", f"waiting {slot - now:.3f} s for an identify slot", now)
            self._start_timer("identify_slot", None, slot)
            return
        self._connect("identify", now)

    def _max_concurrency(self) -> int:
        limit = (self.gateway_bot or {}).get("session_start_limit") or {}
        value = limit.get("max_concurrency")
        return value if isinstance(value, int) and value > 0 else 1

    def _next_identify_slot(self) -> float:
        """Our shard owns one bucket (shard_id % max_concurrency): one IDENTIFY per 5 s in it."""
        if not self._identify_times:
            return -math.inf
        return self._identify_times[-1] + self.config.identify_window

    def _connect(self, purpose: Purpose, now: float) -> None:
        self._pending_purpose = None
        fallback = False
        if purpose == "resume" and self.session is not None and self.session.resume_url \
                and not self._resume_on_discovery:
            url = self.session.resume_url
        else:
            # IDENTIFY, or a RESUME on the discovery URL (the resume host kept failing, or READY
            # named none): the session stays the same.
            if purpose == "resume" and self.session is None:
                purpose = "identify"
            fallback = purpose == "resume"
            assert self.discovery_url is not None
            url = self.discovery_url
        url = gateway_url_with_params(url, compress=self.config.compress)
        self._gen += 1
        self._conn = _Connection(gen=self._gen, url=url, purpose=purpose, opened_at=now,
                                 fallback=fallback)
        self.counters.connects += 1
        if self._gen > 1:
            self.counters.reconnects += 1
        self._set_state("connecting", f"{purpose} via {url}", now)
        self._emit(Connect(self._gen, url, purpose))
        self._start_timer("stage", self._gen,
                          now + self._handshake_timeout(self.config.tcp_timeout))

    def _handshake_timeout(self, configured: float) -> float:
        k = self.config.handshake_intervals
        if k is None or self._known_interval is None:
            return configured
        return min(configured, max(1.0, k * self._known_interval))

    def _stage_deadline(self, conn: _Connection, now: float) -> None:
        key = f"{conn.stage}_timeout"
        self.counters.stage_failures[key] = self.counters.stage_failures.get(key, 0) + 1
        if conn.stage == "hello":
            # The WebSocket is open, so say goodbye properly (and keep the session).
            self._close_and_reconnect(f"no HELLO within {self.config.hello_timeout:g} s",
                                      "resume", now)
        else:
            reason = f"{conn.stage} stage timed out"
            conn.closing = True
            self._emit(AbortConnection(conn.gen, reason))
            self._after_loss(conn, reason, "resume", now, planned=False, invalid_session=False)

    # ------------------------------------------------------------------ internals: frames

    def _on_hello(self, conn: _Connection, frame: Mapping[str, Any], now: float) -> None:
        if conn.hello:
            return
        d = frame.get("d") or {}
        interval_ms = d.get("heartbeat_interval") if isinstance(d, Mapping) else None
        if not isinstance(interval_ms, (int, float)) or interval_ms <= 0:
            self._close_and_reconnect(f"HELLO without a usable heartbeat_interval: {d!r}",
                                      "resume", now)
            return
        conn.hello = True
        conn.stage = "session"
        self._cancel_timers(gen=conn.gen, name="stage")
        conn.interval = interval_ms / 1000.0
        self._known_interval = conn.interval
        beats_per_window = math.ceil(self.config.send_window / conn.interval) + 1
        conn.heartbeat_reserve = min(self.config.send_limit // 2, beats_per_window)
        conn.acked = True
        conn.beat_deadline = now + conn.interval * self.rng.random()
        self._start_timer("heartbeat", conn.gen, conn.beat_deadline)
        if conn.purpose == "identify" and self.session is not None:
            self._forget_session()  # an IDENTIFY replaces whatever session we held
        if conn.purpose == "resume" and self.session is not None:
            self._set_state("resuming", f"HELLO (interval {interval_ms} ms), sending RESUME", now)
            self.counters.resumes += 1
            self._send(
                conn,
                OP_RESUME,
                {
                    "op": OP_RESUME,
                    "d": {
                        "token": self.config.token,
                        "session_id": self.session.session_id,
                        "seq": self.session.seq,
                    },
                },
                now,
            )
        else:
            self._set_state("identifying", f"HELLO (interval {interval_ms} ms), sending IDENTIFY",
                            now)
            d_identify: dict[str, Any] = {
                "token": self.config.token,
                "intents": self.config.intents,
                "properties": dict(self.config.properties),
            }
            if self.config.shard is not None:
                d_identify["shard"] = list(self.config.shard)
            self.counters.identifies += 1
            self._identify_times.append(now)
            limit = (self.gateway_bot or {}).get("session_start_limit")
            if isinstance(limit, dict) and isinstance(limit.get("remaining"), int):
                limit["remaining"] -= 1  # until the next /gateway/bot answer says otherwise
            self._send(conn, OP_IDENTIFY, {"op": OP_IDENTIFY, "d": d_identify}, now)
        self._start_timer("ready", conn.gen, now + self.config.ready_timeout)

    def _on_dispatch(self, conn: _Connection, frame: Mapping[str, Any], now: float) -> None:
        s = frame.get("s")
        t = frame.get("t")
        d = frame.get("d")
        if not isinstance(s, int) or not isinstance(t, str):
            return  # a dispatch without a usable seq or name cannot be ordered; ignore it
        if t == "READY":
            if not isinstance(d, Mapping) or not isinstance(d.get("session_id"), str):
                self._close_and_reconnect("READY without session_id", "new_session", now)
                return
            resume_url = d.get("resume_gateway_url")
            self.session = Session(
                session_id=d["session_id"],
                resume_url=resume_url if isinstance(resume_url, str) and resume_url else None,
                seq=s,
            )
            self._delivered_seq = 0
            self._failed_resumes = 0
            self._resume_on_discovery = False
            self._session_lost_at = None
            self._established(conn, "READY", now)
        session = self.session
        if session is None:
            return  # a dispatch before any READY belongs to no session we know
        if s <= self._delivered_seq:
            self.counters.duplicates_dropped += 1
            return
        if self._delivered_seq and s > self._delivered_seq + 1:
            self.counters.seq_gaps += 1
        self._delivered_seq = s
        session.seq = max(session.seq, s)
        self.counters.dispatches += 1
        self._emit(Deliver(Dispatch(s=s, t=t, d=d, session_id=session.session_id)))
        if t == "RESUMED":
            self.counters.resumes_ok += 1
            self._failed_resumes = 0
            self._resume_on_discovery = False
            self._session_lost_at = None
            self._established(conn, "RESUMED", now)

    def _established(self, conn: _Connection, what: str, now: float) -> None:
        conn.established = True
        self._cancel_timers(gen=conn.gen, name="ready")
        assert self.session is not None
        self._set_state("ready", f"{what} (session {self.session.session_id})", now)
        self._start_timer("stable", conn.gen, now + self.config.stable_after)

    def _ready_deadline(self, conn: _Connection, now: float) -> None:
        what = "RESUMED" if conn.purpose == "resume" else "READY"
        self._close_and_reconnect(f"no {what} within {self.config.ready_timeout:g} s",
                                  "resume", now)

    # ------------------------------------------------------------------ internals: heartbeats

    def _heartbeat_due(self, conn: _Connection, now: float) -> None:
        if not conn.acked:
            self.counters.zombies += 1
            self._set_state("zombie", "no heartbeat ACK since the last beat", now)
            self._close_and_reconnect("zombie connection (no heartbeat ACK)", "resume", now)
            return
        self._send_heartbeat(conn, now)
        conn.acked = False
        conn.beat_deadline = max(conn.beat_deadline + conn.interval, now)
        self._start_timer("heartbeat", conn.gen, conn.beat_deadline)

    def _send_heartbeat(self, conn: _Connection, now: float) -> None:
        # Heartbeats have priority: they are counted but never held back by the send limit.
        self.counters.heartbeats += 1
        conn.last_beat_at = now
        self._send(conn, OP_HEARTBEAT, {"op": OP_HEARTBEAT, "d": self.seq}, now)

    # ------------------------------------------------------------------ internals: app sends

    def _drain_app_queue(self, conn: _Connection, now: float) -> None:
        # Heartbeats are never held back; everything else shares what is left of the window
        # after a reserve for the beats it will need, so app traffic can never push the
        # connection over the limit (close 4008).
        limit = self.config.send_limit
        other_limit = max(1, limit - conn.heartbeat_reserve)
        while (
            conn.app_queue
            and self._window_count(conn.other_sent_times, now) < other_limit
            and self._window_count(conn.sent_times, now) < limit
        ):
            op, text = conn.app_queue.popleft()
            self._send_text(conn, op, text, now)
        if conn.app_queue:
            full = conn.other_sent_times if len(conn.other_sent_times) >= other_limit else \
                conn.sent_times
            self._start_timer("send_queue", conn.gen,
                              full[0] + self.config.send_window + self.config.send_margin)

    # ------------------------------------------------------------------ internals: losing it

    def _close_and_reconnect(
        self, reason: str, kind: CloseClass, now: float, *, invalid_session: bool = False
    ) -> None:
        """We end the connection ourselves, with a code that keeps the session (never 1000)."""
        conn = self._conn
        if conn is None:
            return
        conn.closing = True
        self._emit(CloseConnection(conn.gen, RESUME_CLOSE_CODE, reason[:120]))
        self._after_loss(conn, reason, kind, now, planned=True, invalid_session=invalid_session)

    def _connection_lost(self, reason: str, code: int | None, now: float) -> None:
        conn = self._conn
        if conn is None:
            return
        kind = classify_close(code)
        if kind == "fatal":
            self._end_connection(conn)
            self._stop(f"fatal close code {code}: {reason}", fatal=True, now=now)
            return
        self._after_loss(conn, reason, kind, now, planned=False, invalid_session=False)

    def _end_connection(self, conn: _Connection) -> None:
        self._cancel_timers(gen=conn.gen)
        conn.app_queue.clear()
        self._conn = None

    def _after_loss(
        self,
        conn: _Connection,
        reason: str,
        kind: CloseClass,
        now: float,
        *,
        planned: bool,
        invalid_session: bool,
    ) -> None:
        self.counters.app_frames_dropped += len(conn.app_queue)
        self._end_connection(conn)
        self._set_state("disconnected", reason, now)
        if conn.established and self._session_lost_at is None:
            self._session_lost_at = now
        if conn.purpose == "resume" and not conn.established and not invalid_session:
            self._count_failed_resume(now)
        if conn.fallback and not conn.established:
            # The discovery host failed too: the whole gateway is down, and the session may well
            # outlive that. Back to resume_gateway_url, with a fresh count.
            self._failed_resumes = 0
            self._resume_on_discovery = False
        elif self._failed_resumes >= self.config.max_failed_resumes:
            if not self._resume_on_discovery:
                reason = (f"{self._failed_resumes} resumes failed in a row; next RESUME on the "
                          "discovery URL")
            self._resume_on_discovery = True
        if kind == "new_session":
            self._forget_session()
        if kind == "new_session" or invalid_session:
            # op 9 / a dead session: the protocol's random 1-5 s wait, not the backoff (the
            # identify window and the circuit breaker keep this from becoming a storm).
            wait = self.rng.uniform(*self.config.invalid_session_wait)
        elif planned and self._backoff_attempt == 0:
            wait = 0.0  # op 7 or a zombie on a stable session: reconnect at once
        else:
            wait = self._backoff_delay()
        # The wait goes on growing whichever URL comes next: if both fail (the whole gateway is
        # down), attempts must keep spreading out, never start over.
        self._backoff_attempt += 1
        purpose: Purpose = "resume" if self.session is not None else "identify"
        if wait <= 0:
            self._begin_attempt(purpose, now)
        else:
            self._schedule(purpose, reason, now, wait)

    def _count_failed_resume(self, now: float) -> None:
        self._failed_resumes += 1
        self.counters.failed_resumes += 1
        if self._session_lost_at is None:
            self._session_lost_at = now

    def _backoff_delay(self, attempt: int | None = None) -> float:
        # Exponential with jitter over the upper half ("equal jitter"): every wait is random,
        # yet the waits are guaranteed to grow, so failed attempts can never bunch up.
        n = self._backoff_attempt if attempt is None else attempt
        ceiling = min(self.config.backoff_cap, self.config.backoff_base * 2**n)
        return self.rng.uniform(ceiling / 2, ceiling)

    def _schedule(self, purpose: Purpose, reason: str, now: float, delay: float) -> None:
        """The next attempt starts when the backoff timer fires (never inline, even at 0 s)."""
        self._pending_purpose = purpose
        self._set_state("backing_off", f"{reason}; {purpose} in {delay:.3f} s", now)
        self._start_timer("backoff", None, now + delay)

    def _forget_session(self) -> None:
        self.session = None
        self._delivered_seq = 0
        self._failed_resumes = 0
        self._resume_on_discovery = False
        self._session_lost_at = None

    def _stop(self, reason: str, *, fatal: bool, now: float) -> None:
        if self._conn is not None:
            conn = self._conn
            if not conn.closing:
                conn.closing = True
                self._emit(AbortConnection(conn.gen, reason))
            self._end_connection(conn)
        self._cancel_timers()
        self.stopped = True
        self.stop_reason = reason
        self._set_state("stopped", reason, now)
        self._emit(Stop(reason, fatal))
