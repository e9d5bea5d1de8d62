"""A protocol-faithful fake Discord gateway (sans-I/O core, trio driver) and its REST surface."""

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway

__all__ = ["FakeGateway", "GatewayConfig", "OpenedGateway", "open_gateway"]
