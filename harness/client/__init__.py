"""The trio reference gateway client: a sans-I/O decision core (`core`) and its driver."""

from harness.client.core import (
    ClientConfig,
    Counters,
    Dispatch,
    GatewayClientCore,
    NotReady,
    PayloadTooLarge,
    StateChanged,
    Stop,
)
from harness.client.driver import (
    FatalGatewayError,
    GatewayClient,
    open_gateway_client,
    open_tcp_stream,
)

__all__ = [
    "ClientConfig",
    "Counters",
    "Dispatch",
    "FatalGatewayError",
    "GatewayClient",
    "GatewayClientCore",
    "NotReady",
    "PayloadTooLarge",
    "StateChanged",
    "Stop",
    "open_gateway_client",
    "open_tcp_stream",
]
