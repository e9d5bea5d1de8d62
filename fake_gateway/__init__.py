"""A protocol-faithful fake Discord gateway (sans-I/O core, trio driver) and its REST surface.

The names below load their module on first use: importing ``fake_gateway.config`` (what the
scenario loader needs) or the sans-I/O core does not load trio, websockets or the REST server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fake_gateway.config import GatewayConfig
    from fake_gateway.opened import OpenedGateway, open_gateway
    from fake_gateway.server import FakeGateway

__all__ = ["FakeGateway", "GatewayConfig", "OpenedGateway", "open_gateway"]
_WHERE = {"FakeGateway": "server", "GatewayConfig": "config", "OpenedGateway": "opened",
          "open_gateway": "opened"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
