"""pytest plugin (entry point ``pytest11``): fixtures for testing your own gateway client code.

Async fixtures need pytest-trio (``trio_mode = true``, or mark tests ``@pytest.mark.trio``):

- ``fake_gateway``: a running fake Discord gateway on 127.0.0.1 with TLS and REST; yields a
  ``RunningGateway`` (``.urls`` with gateway_url, rest_url (the REST base ending in /api/v10),
  rest_origin, ca_file, ...; ``.gateway.controls`` for protocol-level faults; ``.trace`` with
  every frame).
- ``fault_proxy``: the embedded Toxiproxy-compatible server on 127.0.0.1 (an ``EmbeddedBackend``
  with ``.api_url``; toxiproxy-python works against it unmodified).

Plain fixture:

- ``run_gateway_scenario``: ``run_gateway_scenario(path_or_scenario, mode="sim", client=
  "reference", seed=0) -> ScenarioResult``; assert ``result.passed`` or look at ``verdicts``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway_common.trace import Trace


@dataclass
class RunningGateway:
    gateway: Any  # fake_gateway.server.FakeGateway
    urls: Any  # fake_gateway.opened.OpenedGateway
    trace: Trace


@pytest.fixture
async def fake_gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    from fake_gateway.config import GatewayConfig
    from fake_gateway.opened import open_gateway
    from fake_gateway.server import FakeGateway
    from fake_gateway.tls import make_tls

    trace = Trace(clock=trio.current_time)
    config = GatewayConfig(heartbeat_interval_ms=1000, dispatch_rate=2.0)
    gateway = FakeGateway(config, trace, random.Random(0))
    async with trio.open_nursery() as nursery:
        opened = await nursery.start(partial(open_gateway, gateway, tls=make_tls(tmp_path / "tls"),
                                             rest_port=0))
        yield RunningGateway(gateway, opened, trace)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def fault_proxy() -> AsyncIterator[Any]:
    from harness.faults.backend import open_embedded_backend

    async with open_embedded_backend(seed=0, api_port=0) as backend:
        yield backend


@pytest.fixture
def run_gateway_scenario(tmp_path: Path) -> Callable[..., Any]:
    from harness.scenario import Scenario, load_scenario
    from harness.world import RunOptions, run_scenario

    def run(scenario: str | Path | Scenario, mode: str = "sim", client: str = "reference",
            seed: int = 0) -> Any:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        return run_scenario(scenario, RunOptions(mode=mode, client=client, seed=seed,
                                                 out_dir=tmp_path / "gateway-harness"))

    return run
