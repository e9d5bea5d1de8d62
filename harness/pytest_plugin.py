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
- ``gateway_app``: ``gateway_app("python bot.py", scenario="baseline-steady", cwd=None, env=None,
  name=None, ignores_hello_interval=False, seed=0) -> ScenarioResult``: your unmodified bot
  (Python or Node.js, its own token) run in wall-clock mode with Discord's hostnames redirected
  to the harness (app mode, issue 18); ``scenario`` is a built-in scenario's name, a path or a
  ``Scenario``. ``result.error`` says so when the bot could not be redirected.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
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


@pytest.fixture
def gateway_app(tmp_path: Path) -> Callable[..., Any]:
    from harness.adapters.app.mode import app_adapter
    from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario
    from harness.world import RunOptions, run_scenario

    def run(command: str, scenario: str | Path | Scenario = "baseline-steady", *,
            cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
            name: str | None = None, ignores_hello_interval: bool = False,
            seed: int = 0) -> Any:
        if not isinstance(scenario, Scenario):
            path = Path(scenario)
            if not path.exists() and path.suffix != ".toml" and len(path.parts) == 1:
                path = builtin_scenarios_dir() / f"{scenario}.toml"  # a built-in, by name
            scenario = load_scenario(path)
        app = app_adapter(command, name, honours_hello_interval=not ignores_hello_interval,
                          cwd=cwd, env=env, flag="gateway_app")
        return run_scenario(scenario, RunOptions(mode="real", client=app.name, seed=seed,
                                                 adapter=app,
                                                 out_dir=tmp_path / "gateway-harness"))

    return run
