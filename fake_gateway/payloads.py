"""Plain functions that build the JSON bodies the gateway and REST surface send.

Shapes follow what real libraries need (third-party-clients.md section 1.5): hikari wants
`user.mfa_enabled`, `user.flags` and `application.flags`; discord.py wants `resume_gateway_url`.
Usable without HTTP (simulation mode calls them directly).
"""

from __future__ import annotations

import json
import random
from typing import Any

from fake_gateway.config import GatewayConfig
from gateway_common.facts import OP_HELLO

DISCORD_EPOCH_MS = 1420070400000
# A fixed base time so payloads never depend on the wall clock (same seed, same bytes).
BASE_UNIX = 1_760_000_000


def snowflake(rng: random.Random) -> int:
    """A plausible snowflake: random timestamp bits spread guilds across shards."""
    return (rng.randrange(1 << 36, 1 << 40) << 22) | rng.randrange(1 << 22)


def iso_time(offset_s: int) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(BASE_UNIX + offset_s, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def user_object(config: GatewayConfig) -> dict[str, Any]:
    return {
        "id": str(config.resolved_bot_id()),
        "username": config.bot_username,
        "discriminator": "0",
        "global_name": config.bot_username,
        "avatar": None,
        "bot": True,
        "system": False,
        "mfa_enabled": False,
        "verified": True,
        "email": None,
        "flags": 0,
        "public_flags": 0,
        "locale": "en-US",
        "premium_type": 0,
    }


def application_object(config: GatewayConfig) -> dict[str, Any]:
    app_id = str(config.resolved_application_id())
    return {
        "id": app_id,
        "name": config.bot_username,
        "icon": None,
        "description": "fake application served by gateway-harness",
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": 0,
        "owner": {
            "id": "100000000000000002",
            "username": "harness-owner",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        },
        "team": None,
        "summary": "",
        "bot": user_object(config),
    }


def gateway_payload(url: str) -> dict[str, Any]:
    return {"url": url}


def gateway_bot_payload(
    url: str, shards: int, total: int, remaining: int, reset_after_ms: int, max_concurrency: int
) -> dict[str, Any]:
    return {
        "url": url,
        "shards": shards,
        "session_start_limit": {
            "total": total,
            "remaining": remaining,
            "reset_after": reset_after_ms,
            "max_concurrency": max_concurrency,
        },
    }


def hello_payload(interval_ms: int, extra_keys: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"heartbeat_interval": interval_ms}
    if extra_keys:
        d["_trace"] = ['["gateway-harness-fake",{"micros":0.0}]']
    return {"op": OP_HELLO, "d": d, "s": None, "t": None}


def ready_data(
    config: GatewayConfig,
    session_id: str,
    resume_gateway_url: str,
    guild_ids: list[int],
    shard: tuple[int, int] | None,
    version: int,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "v": version,
        "user": user_object(config),
        "user_settings": {},
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "presences": [],
        "private_channels": [],
        "relationships": [],
        "guild_join_requests": [],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_gateway_url,
        "application": {"id": str(config.resolved_application_id()), "flags": 0},
        "geo_ordered_rtc_regions": ["fake"],
    }
    if shard is not None:
        d["shard"] = [shard[0], shard[1]]
    if config.extra_keys:
        d["_trace"] = ['["gateway-harness-fake",{"micros":0.0}]']
    return d


def guild_create_data(config: GatewayConfig, guild_id: int, index: int) -> dict[str, Any]:
    bot = user_object(config)
    channel_id = str(guild_id + 1)
    return {
        "id": str(guild_id),
        "name": f"harness guild {index}",
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": "100000000000000002",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [
            {
                "id": str(guild_id),
                "name": "@everyone",
                "color": 0,
                # Newer libraries (py-cord, disnake) read the gradient colours (KeyError without).
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "position": 0,
                "permissions": "1071698660929",
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": None,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "joined_at": iso_time(index),
        "large": False,
        "unavailable": False,
        "member_count": 1,
        "voice_states": [],
        "members": [
            {
                "user": bot,
                "nick": None,
                "roles": [],
                "joined_at": iso_time(index),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
            }
        ],
        "channels": [
            {
                "id": channel_id,
                "type": 0,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "topic": None,
                "nsfw": False,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "parent_id": None,
            }
        ],
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def synthetic_event_data(
    event: str, n: int, guild_id: int | None, user_id: int
) -> dict[str, Any]:
    """Deterministic content for the n-th synthetic dispatch (`_harness_n` lets checks match)."""
    if event == "TYPING_START":
        d: dict[str, Any] = {
            "channel_id": str((guild_id or user_id) + 1),
            "user_id": "100000000000000003",
            "timestamp": BASE_UNIX + n,
        }
        if guild_id is not None:
            d["guild_id"] = str(guild_id)
    else:
        d = {"id": str(user_id + n)}
        if guild_id is not None:
            d["guild_id"] = str(guild_id)
    d["_harness_n"] = n
    return d


def _json_size(d: Any) -> int:
    return len(json.dumps(d, separators=(",", ":")).encode())


def pad_event(d: dict[str, Any], size: int | None) -> dict[str, Any]:
    """A synthetic event's data padded (``_harness_pad``) to about ``size`` bytes of JSON."""
    if not size:
        return d
    room = size - _json_size(d) - len(',"_harness_pad":""')
    return {**d, "_harness_pad": "x" * room} if room > 0 else d


def pad_members(d: dict[str, Any], size: int | None) -> dict[str, Any]:
    """A GUILD_CREATE's data with members added until it is about ``size`` bytes of JSON: a
    large guild, whose member list a client parses into its cache (what makes a storm slow)."""
    if not size:
        return d
    def member(i: int) -> dict[str, Any]:
        user_id = str(100_000_000_000_000_000 + i)  # 18 digits: every member the same size
        return {"user": {"id": user_id, "username": f"m{user_id}", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": False},
                "nick": None, "roles": [], "joined_at": iso_time(0), "deaf": False,
                "mute": False, "flags": 0, "pending": False}
    each = _json_size(member(0)) + 1  # and its comma
    extra = max(0, (size - _json_size(d)) // each)
    members = list(d.get("members", []))
    members += [member(i) for i in range(extra)]
    return {**d, "members": members, "member_count": len(members)}


MIDJOURNEY_BOT_ID = "936929561302675456"


def command_index_payload() -> dict[str, Any]:
    """/guilds/{id}/application-command-index: the Midjourney bot's /imagine and /settings, so the
    `midjourney` npm client finds the commands it posts interactions for."""

    def command(command_id: str, name: str, description: str,
                options: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": command_id, "application_id": MIDJOURNEY_BOT_ID, "version": command_id,
                "type": 1, "name": name, "description": description, "options": options,
                "default_member_permissions": None, "dm_permission": True,
                "contexts": [0, 1, 2], "integration_types": [0, 1], "nsfw": False}

    return {
        "applications": [{"id": MIDJOURNEY_BOT_ID, "name": "Midjourney Bot", "icon": None,
                          "description": "", "bot_id": MIDJOURNEY_BOT_ID}],
        "application_commands": [
            command("938956540159881230", "imagine", "Create images with Midjourney",
                    [{"type": 3, "name": "prompt", "description": "The prompt to imagine",
                      "required": True}]),
            command("1000850743479255081", "settings", "View and adjust your personal settings.",
                    []),
        ],
        "version": "1",
    }
