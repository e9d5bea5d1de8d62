"""nextcord, disnake or py-cord under gateway-harness ($GATEWAY_HARNESS_SHIM_LIB picks which).

The forks discover the gateway URL through the harness's REST (``GET /gateway`` for nextcord and
py-cord, ``GET /gateway/bot`` for disnake), so only the REST base is overridden:
``Route.BASE`` (nextcord, disnake) or ``Route.API_BASE_URL`` (py-cord, a format string).
TLS trusts the harness CA through ``SSL_CERT_FILE``. Everything else stays at its defaults.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

from _shim_common import REST_URL, TOKEN, DeliveryLog, announce, emit

which = os.environ.get("GATEWAY_HARNESS_SHIM_LIB", "")
modules = {"nextcord": "nextcord", "disnake": "disnake", "py-cord": "discord"}
if which not in modules:
    sys.exit(f"shim: GATEWAY_HARNESS_SHIM_LIB must be one of {', '.join(modules)}, got {which!r}")
lib: Any = importlib.import_module(modules[which])
http: Any = importlib.import_module(modules[which] + ".http")

if which == "py-cord":
    http.Route.API_BASE_URL = REST_URL.removesuffix("/api/v10") + "/api/v{API_VERSION}"
else:
    http.Route.BASE = REST_URL

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = DeliveryLog()


class HarnessClient(lib.Client):  # type: ignore[misc]
    async def on_socket_raw_receive(self, msg: Any) -> None:  # decompressed text or dict
        log.raw_payload(msg)

    async def on_ready(self) -> None:
        emit(event="ready", session_id=log.session_id)

    async def on_resumed(self) -> None:
        emit(event="resumed", session_id=log.session_id)


announce(which, lib.__version__)
HarnessClient(intents=lib.Intents.default(), enable_debug_events=True).run(TOKEN)
