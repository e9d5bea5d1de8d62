"""hikari under gateway-harness: a GatewayBot pointed at the harness, logging dispatches.

REST goes to ``rest_url``; the gateway URL comes from the harness's ``GET /gateway/bot`` (hikari
has no other knob) and resumes follow READY's ``resume_gateway_url``. TLS uses an explicit
context trusting the harness CA (``HTTPSettings(ssl=...)``, hikari's documented hook). The
update check against PyPI is off. Everything else stays at its defaults.

Dispatches are read from the shard's TRACE log line "dispatching %s with seq %s", written
synchronously as each payload is handled; READY's session id comes from the "shard is ready"
line right after it.
"""

from __future__ import annotations

import logging
import ssl
import sys

import hikari
from _shim_common import CA_FILE, REST_URL, TOKEN, DeliveryLog, announce, emit
from hikari.impl import config

TRACE = 5
log = DeliveryLog()


class DispatchTap(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=TRACE)
        self.ready_seq: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "dispatching %s with seq %s":
            event, seq = record.args  # type: ignore[misc]
            assert isinstance(event, str) and isinstance(seq, int)
            if event == "READY":
                self.ready_seq = seq  # written once the session id is logged
            else:
                log.dispatch(seq, event)
        elif isinstance(record.msg, str) and record.msg.startswith("shard is ready"):
            log.session_id = record.args[3]  # type: ignore[index]
            if self.ready_seq is not None:
                log.dispatch(self.ready_seq, "READY")
                self.ready_seq = None


bot = hikari.GatewayBot(
    TOKEN,
    rest_url=REST_URL,
    intents=hikari.Intents.ALL_UNPRIVILEGED,
    banner=None,
    http_settings=config.HTTPSettings(ssl=ssl.create_default_context(cafile=CA_FILE)),
)

gateway_logger = logging.getLogger("hikari.gateway")
gateway_logger.setLevel(TRACE)
gateway_logger.propagate = False  # TRACE lines stay out of stderr ...
gateway_logger.addHandler(DispatchTap())
info = logging.StreamHandler(sys.stderr)  # ... INFO and up still go there
info.setLevel(logging.INFO)
info.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
gateway_logger.addHandler(info)


@bot.listen(hikari.ShardReadyEvent)
async def on_ready(event: hikari.ShardReadyEvent) -> None:
    emit(event="ready", session_id=event.session_id)


@bot.listen(hikari.ShardResumedEvent)
async def on_resumed(event: hikari.ShardResumedEvent) -> None:
    emit(event="resumed", session_id=log.session_id)


announce("hikari", hikari.__version__)
bot.run(check_for_updates=False)
