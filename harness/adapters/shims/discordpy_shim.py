"""discord.py under gateway-harness: a plain Client pointed at the harness, logging dispatches.

Overrides (discord.py 2.x): ``discord.http.Route.BASE`` (REST) and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (first connect and re-IDENTIFY; resumes
follow READY's ``resume_gateway_url``). TLS trusts the harness CA through ``SSL_CERT_FILE``.
Compression and everything else are left at the library's defaults.
"""

from __future__ import annotations

import discord
import yarl
from _shim_common import GATEWAY_URL, REST_URL, TOKEN, DeliveryLog, announce, emit
from discord import gateway, http

http.Route.BASE = REST_URL
gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(GATEWAY_URL + "/")
log = DeliveryLog()


class HarnessClient(discord.Client):
    async def on_socket_raw_receive(self, msg: str) -> None:  # decompressed payload text
        log.raw_payload(msg)

    async def on_ready(self) -> None:
        emit(event="ready", session_id=log.session_id)

    async def on_resumed(self) -> None:
        emit(event="resumed", session_id=log.session_id)


announce("discord.py", discord.__version__)
HarnessClient(intents=discord.Intents.default(), enable_debug_events=True).run(TOKEN)
