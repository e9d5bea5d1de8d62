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

Scenario files as test items (issue 15): ``pytest scenarios/`` collects every scenario TOML file
as one item per scenario x client x mode (x run, with ``--gateway-repeat``), run by
``harness.runner`` in a fresh world, as ``gateway-harness run`` does. Options: ``--gateway-client
NAME`` (repeatable: reference, a mutant, a built-in client), ``--gateway-command CMD``,
``--gateway-mode real|sim`` (repeatable), ``--gateway-repeat N``, ``--gateway-seed N``,
``--gateway-out DIR``; the scenario's tags are markers (``-m seed``). A failing item's report shows
the failed invariants with their evidence, the trace and the timeline (an HTML report).
"""

from __future__ import annotations

import os
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


# ---- scenario files as test items (issue 15) ----------------------------------------------------

MODES = ("real", "sim")
SCENARIO_KEYS = ("source", "description", "expect", "steps", "gateway")  # beside a top-level name


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gateway-harness", "gateway-harness: scenario files (*.toml) as items")
    group.addoption("--gateway-client", action="append", default=[], metavar="NAME",
                    help="the client under test (repeatable): reference, a planted-bug mutant or "
                         "a built-in client (NAME[@VERSION]); default: reference")
    group.addoption("--gateway-command", metavar="CMD",
                    help="your own client: a command line run under the adapter contract")
    group.addoption("--gateway-name", metavar="NAME",
                    help="the name --gateway-command's client gets in item ids and results")
    group.addoption("--gateway-mode", action="append", default=[], choices=MODES,
                    help="real: TCP on 127.0.0.1, wall clock; sim: in-memory, virtual time "
                         "(repeatable; default: real)")
    group.addoption("--gateway-repeat", type=int, default=1, metavar="N",
                    help="run every scenario N times per client and mode (one item per run)")
    group.addoption("--gateway-seed", type=int, default=0, metavar="N",
                    help="the run seed (a scenario's own seed wins)")
    group.addoption("--gateway-out", metavar="DIR",
                    help="traces, delivery logs and failing items' timelines (default: "
                         "$GATEWAY_HARNESS_RESULTS_DIR or results/)")


@dataclass(frozen=True)
class _ClientUnderTest:
    name: str  # in item ids and results
    client: str  # RunOptions.client: reference, a mutant, a built-in client, or the command's name
    command: str | None = None  # --gateway-command
    in_process: bool = False  # reference or a mutant: the only clients simulation can run


def pytest_configure(config: pytest.Config) -> None:
    """Check the options before collection: a bad one is one line (pytest's usage error). Without
    any, nothing is imported here: the plugin loads in every pytest run where we are installed."""
    if (config.getoption("gateway_client") or config.getoption("gateway_command") is not None
            or config.getoption("gateway_name") or config.getoption("gateway_mode")
            or config.getoption("gateway_repeat") != 1):
        _clients_and_modes(config)


def _clients_and_modes(config: pytest.Config) -> tuple[list[_ClientUnderTest], list[str]]:
    if _CLIENTS in config.stash:
        return config.stash[_CLIENTS], config.stash[_MODES]
    from harness.world_clients import known_reference_clients

    repeat = config.getoption("gateway_repeat")
    if repeat < 1:
        raise pytest.UsageError(f"--gateway-repeat: must be at least 1, got {repeat}")
    clients: list[_ClientUnderTest] = []
    names = config.getoption("gateway_client")
    command = config.getoption("gateway_command")
    if config.getoption("gateway_name") and command is None:
        raise pytest.UsageError("--gateway-name: only applies to --gateway-command")
    if not names and command is None:
        names = ["reference"]
    for name in dict.fromkeys(names):
        if name in known_reference_clients():
            clients.append(_ClientUnderTest(name, name, in_process=True))
            continue
        from harness.adapters.registry import ADAPTERS

        if name.partition("@")[0] not in ADAPTERS:
            raise pytest.UsageError(
                f"--gateway-client: {name!r} is neither a built-in client "
                f"({', '.join(ADAPTERS)}) nor the reference client or a planted-bug mutant")
        clients.append(_ClientUnderTest(name, name))
    if command is not None:
        import shutil

        from gateway_common.errors import UserError
        from harness.adapters.contract import Adapter

        try:
            adapter = Adapter.from_command(command, config.getoption("gateway_name"))
        except UserError as exc:
            raise pytest.UsageError(str(exc).replace("--command", "--gateway-command")) from None
        if shutil.which(adapter.argv[0]) is None:  # else every item fails with the same line
            raise pytest.UsageError(f"--gateway-command: cannot start {adapter.argv[0]!r}: no "
                                    "such executable (on PATH, or as a path)")
        clients.append(_ClientUnderTest(adapter.name, adapter.name, command=command))
    modes = list(dict.fromkeys(config.getoption("gateway_mode"))) or ["real"]
    if "sim" in modes:
        for c in clients:
            if not c.in_process:
                raise pytest.UsageError(
                    f"--gateway-mode sim: {c.name!r} runs as a process, in real mode only "
                    "(simulation runs the reference client and its mutants)")
    config.stash[_CLIENTS] = clients
    config.stash[_MODES] = modes
    return clients, modes


_CLIENTS = pytest.StashKey[list[_ClientUnderTest]]()
_MODES = pytest.StashKey[list[str]]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and _is_scenario_file(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def _is_scenario_file(path: Path) -> bool:
    """A TOML file with a top-level ``name`` and a scenario's keys (not pyproject.toml or another
    tool's config); one that is not valid TOML counts when it has a scenario's tables, so its
    error is reported rather than the file passed over."""
    import re
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        return re.search(r"(?m)^\s*\[\[?\s*(steps|expect)\s*\]\]?\s*$", text) is not None
    return "name" in data and any(key in data for key in SCENARIO_KEYS)


class ScenarioFile(pytest.File):
    """One scenario file: its items are the scenario x client x mode (x run) combinations."""

    def collect(self) -> Any:
        from gateway_common.errors import UserError
        from harness.scenario import load_scenario

        try:
            scenario = load_scenario(self.path)
        except UserError as exc:
            raise self.CollectError(str(exc)) from None
        config = self.config
        repeat = config.getoption("gateway_repeat")
        for tag in scenario.tags:  # registered, so --strict-markers accepts them
            config.addinivalue_line("markers", f"{tag}: scenario tag (gateway-harness)")
        clients, modes = _clients_and_modes(config)
        for client in clients:
            for mode in modes:
                for run in range(1, repeat + 1):
                    label = f"{client.name}-{mode}" + (f"-run{run}" if repeat > 1 else "")
                    item = ScenarioItem.from_parent(
                        self, name=f"{scenario.name}[{label}]", scenario=scenario,
                        client=client, mode=mode, repeat=run if repeat > 1 else None)
                    for tag in scenario.tags:
                        item.add_marker(tag)
                    yield item


class ScenarioFailed(Exception):
    """A scenario item's run did not pass: its result and where its evidence was written."""

    def __init__(self, result: Any, timeline: Path | None) -> None:
        super().__init__(result.outcome)
        self.result = result
        self.timeline = timeline


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, client: _ClientUnderTest, mode: str,
                 repeat: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.client = client
        self.mode = mode
        self.repeat = repeat

    @property
    def obj(self) -> Any:
        # pytest-trio's trio_mode reads every item's .obj (a test function) to find async ones
        return self.runtest

    def runtest(self) -> None:
        from gateway_common.errors import UserError
        from harness.report.html import write_html
        from harness.runner import default_results_dir, run_many, split_for_real_toxiproxy
        from harness.world import RunOptions

        config = self.config
        out = config.getoption("gateway_out")
        out_dir = (Path(out) if out else default_results_dir()).absolute()  # cited in reports
        toxiproxy_url = os.environ.get("TOXIPROXY_URL") if self.mode == "real" else None
        if toxiproxy_url:  # as `gateway-harness run`: a real Toxiproxy lacks our extensions
            _, skipped = split_for_real_toxiproxy([self.scenario])
            if skipped:
                pytest.skip(f"TOXIPROXY_URL is a real Toxiproxy: {skipped[0][1]}")
        options = RunOptions(mode=self.mode, client=self.client.client,
                             seed=config.getoption("gateway_seed"), out_dir=out_dir,
                             toxiproxy_url=toxiproxy_url, repeat=self.repeat)
        try:
            options.adapter = _adapter(self.client)
            (result,) = run_many([self.scenario], options, jobs=1)
        except UserError as exc:  # a client that cannot be installed or started: one line
            pytest.fail(str(exc), pytrace=False)
        if result.passed:
            return
        timeline = None
        if result.trace_path is not None:  # the HTML report beside the trace: the timeline
            stem = result.trace_path.name.removesuffix(".trace.jsonl")
            timeline = write_html([result], out_dir / f"{stem}.html",
                                  title=f"gateway-harness: {self.name}",
                                  meta={"mode": self.mode, "client": self.client.name,
                                        "seed": result.seed})
        raise ScenarioFailed(result, timeline)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        if not isinstance(excinfo.value, ScenarioFailed):
            return super().repr_failure(excinfo, style)
        return failure_text(excinfo.value.result, excinfo.value.timeline, self.replay_command())

    def replay_command(self) -> str:
        import shlex

        path = str(self.scenario.path)
        if self.client.command is not None:
            return shlex.join(["gateway-harness", "validate", "--command", self.client.command,
                               "--name", self.client.name, path])
        if not self.client.in_process:
            return shlex.join(["gateway-harness", "validate", "--client", self.client.name, path])
        return shlex.join(["gateway-harness", "run", "--mode", self.mode, "--client",
                           self.client.name, path])

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.name}"


def failure_text(result: Any, timeline: Path | None, replay: str) -> str:
    """What a failing item's report (and --junitxml's failure element) says."""
    from harness.oracle import invariant_title

    lines = [f"{result.label} [{result.client}, {result.mode}]: {result.outcome}"
             + (f" ({', '.join(result.failed_invariants)})" if result.failed_invariants else "")]
    if result.error is not None:
        lines.append(f"  run error: {result.error}")
    elif result.outcome == "UNJUDGED":
        lines.append("  every invariant was not judged: the client may never have run")
    for verdict in result.verdicts:
        if verdict.status == "fail":
            lines.append(f"  {verdict.invariant} ({invariant_title(verdict.invariant)}): "
                         f"{verdict.evidence}")
    if result.stderr_tail:
        tail = result.stderr_tail.rstrip().splitlines()[-5:]
        lines.append("  client stderr (last lines):")
        lines.extend(f"    {line}" for line in tail)
    lines.append(f"trace:    {result.trace_path}")
    if timeline is not None:
        lines.append(f"timeline: {timeline}")
    lines.append(f"replay:   {replay}")
    return "\n".join(lines)


_ADAPTERS: dict[str, Any] = {}  # per process (an xdist worker installs a client once)


def _adapter(client: _ClientUnderTest) -> Any:
    """None for the in-process reference client and mutants; else the client's adapter, a
    built-in one installed on first use (registry.install locks its folder: workers share it)."""
    if client.in_process:
        return None
    if client.name not in _ADAPTERS:
        from harness.adapters.contract import Adapter
        from harness.runner import resolve_client
        from harness.world import RunOptions

        if client.command is not None:
            _ADAPTERS[client.name] = Adapter.from_command(client.command, client.name)
        else:
            options = RunOptions(client=client.client)
            resolve_client(options)
            _ADAPTERS[client.name] = options.adapter
    return _ADAPTERS[client.name]
