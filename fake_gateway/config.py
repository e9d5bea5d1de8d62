"""GatewayConfig: every knob of the fake gateway, with Discord's real values as defaults.

Knobs mark where the real gateway's behaviour is undocumented (gateway-protocol.md section 14):
the fake makes the choice explicit instead of guessing. `GatewayConfig` is the one list of knobs:
a knob that can be set from outside says so in its field's metadata (`knob(...)`): its key in a
scenario's ``[gateway]`` table, its ``gateway-harness serve`` flag, the values it allows, a help
line. The scenario model and loader (`harness.scenario`) and `serve`'s flags
(`harness/cli/serve.py`) are derived from it (`KNOBS`).

Scenarios run in compressed time: a knob whose scenario default differs from Discord's value
(1 s heartbeats instead of 41.25 s, a steady dispatch stream) says so with ``scenario_default``.
"""

from __future__ import annotations

import base64
import math
import types
import urllib.parse
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from gateway_common.facts import (
    DISCORD_HEARTBEAT_INTERVAL_MS,
    IDENTIFY_WINDOW,
    MAX_PAYLOAD_BYTES,
    RATE_LIMIT_FRAMES,
    RATE_LIMIT_WINDOW,
    SESSION_TTL,
)

DEFAULT_BOT_ID = 100000000000000001
# hikari decodes the first segment of a token as the bot id (third-party-clients.md 1.6).
DEFAULT_TOKEN = (
    base64.b64encode(str(DEFAULT_BOT_ID).encode()).decode().rstrip("=")
    + ".GfakeX.harness-fake-gateway-signature"
)

# Intents needing approval: GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
# Every intent bit defined for apps (gateway-protocol.md 4.1); others get close 4013.
DEFINED_INTENTS = sum(1 << b for b in (*range(0, 17), 20, 21, 24, 25))

_SAME = object()  # scenario_default: the field's own default


@dataclass(frozen=True)
class Knob:
    """How a knob is set from outside (the field's default is its default)."""

    help: str
    scenario: str | None = None  # its key in a scenario's [gateway] table (None: not there)
    scenario_default: Any = _SAME  # in scenarios (compressed time), when not the field's
    flag: str | None = None  # its `gateway-harness serve` flag (None: none)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    bare_url: bool = False  # ws[s]://host:port, no path or query


def knob(default: Any, help: str, **how: Any) -> Any:
    """A GatewayConfig field settable from outside (see `Knob`)."""
    return field(default=default, metadata={"knob": Knob(help, **how)})


@dataclass
class GatewayConfig:
    """Behaviour of one fake gateway. All times in seconds unless the name says ms."""

    token: str = knob(DEFAULT_TOKEN, "the bot token IDENTIFY must carry", flag="--token")
    # App mode (issue 18): an unmodified app brings its own token; the trace shows it redacted.
    accept_any_token: bool = knob(
        False, "accept any non-empty token (gateway and REST): an app's own", flag="--any-token")
    bot_user_id: int | None = None  # None: decoded from the token's first segment
    application_id: int | None = None  # None: same as the bot user id
    bot_username: str = "harness-bot"

    heartbeat_interval_ms: int = knob(
        DISCORD_HEARTBEAT_INTERVAL_MS, "ms between heartbeats, advertised in HELLO",
        scenario="heartbeat_interval",
        scenario_default=1000, flag="--heartbeat-interval-ms", minimum=50, maximum=3_600_000)
    # Server-side heartbeat deadline: no op 1 within interval * (1 + grace) closes the socket.
    heartbeat_deadline: bool = knob(
        True, "close a client that stops heartbeating", scenario="heartbeat_deadline",
        flag="--no-heartbeat-deadline")
    # Discord's grace is undocumented (section 14.8). 0.5, past the oracle's heartbeat_slack
    # (0.25): with equal values the gateway closes a silent client at the very instant HB1 and
    # LV1 judge it, and a client that never heartbeats is never caught.
    heartbeat_grace: float = knob(
        0.5, "the deadline is interval x (1 + grace) after the last heartbeat",
        scenario="heartbeat_grace", minimum=0, maximum=100)
    heartbeat_deadline_close_code: int = knob(
        1000, "the deadline's close code (1000: what field reports saw, api-docs#2922)",
        scenario="heartbeat_deadline_close_code", minimum=1000, maximum=4999)
    heartbeat_deadline_resumable: bool = knob(
        True, "the session survives the deadline's close (the docs say: resume)",
        scenario="heartbeat_deadline_resumable")

    allowed_versions: tuple[int, ...] = (9, 10)
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    rate_limit_frames: int = RATE_LIMIT_FRAMES
    rate_limit_window: float = RATE_LIMIT_WINDOW

    # IDENTIFY limits (section 8).
    max_concurrency: int = knob(
        1, "IDENTIFY buckets (shard_id % max_concurrency), one IDENTIFY per window each",
        scenario="max_concurrency", flag="--max-concurrency", minimum=1, maximum=1024)
    identify_window: float = IDENTIFY_WINDOW
    session_start_total: int = knob(
        1000, "session_start_limit.total (IDENTIFYs per day)", scenario="session_start_total",
        minimum=0, maximum=1_000_000_000)
    session_start_window: float = 24 * 3600.0

    # Sessions and RESUME (section 5, 10).
    session_ttl: float = knob(
        SESSION_TTL, "seconds a dropped session stays resumable", scenario="session_ttl",
        flag="--session-ttl", minimum=0, maximum=7 * 86400)
    replay_buffer: int = 1000  # dispatches kept per session for replay
    bad_seq_response: str = knob(
        "close_4007", "answer to a RESUME with a bad seq", scenario="bad_seq_response",
        choices=("close_4007", "op9"))
    expired_resume_response: str = knob(
        "op9", "answer to a RESUME of an expired session", scenario="expired_resume_response",
        choices=("op9", "close_4009"))
    resume_on_discovery: str = knob(
        "accept", "RESUME on the discovery listener: accept (traced as a note) or reject (op 9 "
        "d=false, and the session is ended)", scenario="resume_on_discovery",
        choices=("accept", "reject"))
    takeover_close_code: int = 4000  # code for the old socket when a RESUME moves its session

    # op 9 (section 6): close the socket after sending it?
    close_after_invalid_session: bool = knob(
        False, "close the socket after op 9", scenario="close_after_invalid_session")
    invalid_session_close_code: int = 4000
    invalid_session_close_delay: float = 0.5

    # Privileged intents the app is allowed (others get 4014). Default: all approved.
    allowed_privileged_intents: int = PRIVILEGED_INTENTS

    # Guilds and sharding (section 9).
    guilds: int = knob(1, "guilds the bot is in", scenario="guilds", scenario_default=2,
                       flag="--guilds", minimum=0, maximum=100_000)
    max_guilds_per_shard: int = 2500
    recommended_shards: int = knob(1, "the shard count /gateway/bot recommends",
                                   scenario="shards", minimum=1, maximum=65_536)

    # Synthetic dispatches: events per second across all guilds (0 = none).
    dispatch_rate: float = knob(
        0.0, "synthetic dispatches per second (0: none)", scenario="dispatch_rate",
        scenario_default=2.0, flag="--dispatch-rate", minimum=0, maximum=100_000)
    synthetic_event: str = "TYPING_START"
    dm_fraction: float = 0.0  # share of synthetic events with no guild (routed to shard 0)

    zlib_split: int = knob(1, "zlib-stream: WebSocket frames per compressed message",
                           scenario="zlib_split", minimum=1, maximum=1024)
    # Add undocumented keys (`_trace`) to HELLO and READY, as the real gateway does.
    extra_keys: bool = True

    # URLs announced to clients (bare: no path, no query). None: where the listeners are bound.
    advertise_url: str | None = knob(
        None, "URL /gateway and /gateway/bot announce (e.g. a fault proxy in front)",
        flag="--advertise-url", bare_url=True)
    resume_url: str | None = knob(None, "resume_gateway_url READY announces",
                                  flag="--resume-url", bare_url=True)

    # Per-connection timers (heartbeat deadline, HELLO delay) fire on a grid of this many seconds
    # (0: exactly). A coarse grid lets thousands of connections share wakeups; timers are then
    # late by less than one step.
    timer_resolution: float = 0.0
    # How long a connection the server closes may take to end (frames queued before the close
    # frame, then the client's answering close frame) before the server drops TCP.
    close_timeout: float = 10.0

    extra: dict[str, object] = field(default_factory=dict)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_interval_ms / 1000.0

    def resolved_bot_id(self) -> int:
        if self.bot_user_id is not None:
            return self.bot_user_id
        first = self.token.split(".", 1)[0]
        try:
            return int(base64.b64decode(first + "=" * (-len(first) % 4)).decode())
        except ValueError:
            return DEFAULT_BOT_ID

    def resolved_application_id(self) -> int:
        return self.application_id if self.application_id is not None else self.resolved_bot_id()


@dataclass(frozen=True)
class KnobField:
    """A GatewayConfig field settable from outside: its name, value type, defaults and `Knob`."""

    name: str
    type: type  # bool, int, float or str (optional fields: the type when set)
    default: Any
    knob: Knob

    @property
    def scenario_default(self) -> Any:
        return self.default if self.knob.scenario_default is _SAME else self.knob.scenario_default

    def problem(self, value: Any) -> str | None:
        """Why a value of the right type is refused (None: it is fine)."""
        knob = self.knob
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if knob.minimum is not None and value < knob.minimum:
            return f"must be at least {knob.minimum:g}, got {value}"
        if knob.maximum is not None and value > knob.maximum:
            return f"must be at most {knob.maximum:g}, got {value}"
        if knob.choices and value not in knob.choices:
            return f"must be one of {', '.join(knob.choices)}; got {value!r}"
        if knob.bare_url:
            parts = urllib.parse.urlsplit(value)
            if parts.scheme not in ("ws", "wss") or not parts.netloc:
                return f"expected ws://host:port or wss://host:port, got {value!r}"
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                return f"must be bare (no path or query), got {value!r}"
        return None


def _value_type(hint: Any) -> type:
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    assert isinstance(hint, type)
    return hint


def _knob_fields() -> tuple[KnobField, ...]:
    hints = get_type_hints(GatewayConfig)
    return tuple(
        KnobField(spec.name, _value_type(hints[spec.name]), spec.default, spec.metadata["knob"])
        for spec in fields(GatewayConfig)
        if "knob" in spec.metadata
    )


KNOBS: tuple[KnobField, ...] = _knob_fields()
SCENARIO_KNOBS = {k.knob.scenario: k for k in KNOBS if k.knob.scenario is not None}  # by key
SERVE_FLAGS = {k.knob.flag: k for k in KNOBS if k.knob.flag is not None}  # by flag


def scenario_config(**changes: Any) -> GatewayConfig:
    """A GatewayConfig with the scenario defaults (compressed time), then ``changes``."""
    compressed = {k.name: k.scenario_default for k in SCENARIO_KNOBS.values()
                  if k.scenario_default != k.default}
    return GatewayConfig(**{**compressed, **changes})
