"""GatewayConfig: every knob of the fake gateway, with Discord's real values as defaults.

Knobs mark where the real gateway's behaviour is undocumented (gateway-protocol.md section 14):
the fake makes the choice explicit instead of guessing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

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


@dataclass
class GatewayConfig:
    """Behaviour of one fake gateway. All times in seconds unless the name says ms."""

    token: str = DEFAULT_TOKEN
    bot_user_id: int | None = None  # None: decoded from the token's first segment
    application_id: int | None = None  # None: same as the bot user id
    bot_username: str = "harness-bot"

    heartbeat_interval_ms: int = 41250
    # Server-side heartbeat deadline: no op 1 within interval * (1 + grace) closes the socket.
    heartbeat_deadline: bool = True
    heartbeat_grace: float = 0.25
    heartbeat_deadline_close_code: int = 1000  # what field reports saw (api-docs#2922)
    heartbeat_deadline_resumable: bool = True  # the docs say the client must resume

    allowed_versions: tuple[int, ...] = (9, 10)
    max_payload_bytes: int = 4096
    rate_limit_frames: int = 120
    rate_limit_window: float = 60.0

    # IDENTIFY limits (section 8).
    max_concurrency: int = 1
    identify_window: float = 5.0
    session_start_total: int = 1000
    session_start_window: float = 24 * 3600.0

    # Sessions and RESUME (section 5, 10).
    session_ttl: float = 120.0  # how long a detached session stays resumable
    replay_buffer: int = 1000  # dispatches kept per session for replay
    bad_seq_response: str = "close_4007"  # or "op9"
    expired_resume_response: str = "op9"  # or "close_4009"
    # RESUME on the discovery listener: "accept" (traced as a note) or "reject" (op 9).
    resume_on_discovery: str = "accept"
    takeover_close_code: int = 4000  # code for the old socket when a RESUME moves its session

    # op 9 (section 6): close the socket after sending it?
    close_after_invalid_session: bool = False
    invalid_session_close_code: int = 4000
    invalid_session_close_delay: float = 0.5

    # Privileged intents the app is allowed (others get 4014). Default: all approved.
    allowed_privileged_intents: int = PRIVILEGED_INTENTS

    # Guilds and sharding (section 9).
    guilds: int = 1
    max_guilds_per_shard: int = 2500
    recommended_shards: int = 1

    # Synthetic dispatches: events per second across all guilds (0 = none).
    dispatch_rate: float = 0.0
    synthetic_event: str = "TYPING_START"
    dm_fraction: float = 0.0  # share of synthetic events with no guild (routed to shard 0)

    # zlib-stream: split every compressed message into this many WebSocket frames.
    zlib_split: int = 1
    # Add undocumented keys (`_trace`) to HELLO and READY, as the real gateway does.
    extra_keys: bool = True

    # URLs announced to clients (bare: no path, no query). None: where the listeners are bound.
    advertise_url: str | None = None
    resume_url: str | None = None

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
