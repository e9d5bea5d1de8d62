"""Runs started by tests keep their traces in the test's temporary folder, not in ./results."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.adapters.contract import Adapter
    from harness.faults.testing import RealToxiproxyServer


def in_ci() -> bool:
    """CI=true (set by .ci/run): what a test needs and cannot find fails instead of skipping."""
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path_factory.mktemp("results")
    monkeypatch.setenv("GATEWAY_HARNESS_RESULTS_DIR", str(results))  # read at each run


@pytest.fixture(scope="session")
def real_toxiproxy_binary() -> str:
    """Shopify's toxiproxy-server ($TOXIPROXY_SERVER or PATH): a skip without it, a failure
    in CI (CI=true), where .ci/run installs it."""
    from harness.faults.testing import ToxiproxyServerMissing, find_toxiproxy_server

    try:
        return find_toxiproxy_server()
    except ToxiproxyServerMissing as missing:
        if in_ci():
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def real_toxiproxy(real_toxiproxy_binary: str) -> Iterator[RealToxiproxyServer]:
    """One real Toxiproxy server on a free loopback port for the session (tests using it
    delete the proxies they create)."""
    from harness.faults.testing import RealToxiproxyServer

    with RealToxiproxyServer(real_toxiproxy_binary) as server:
        yield server


@pytest.fixture(scope="session")
def clients_dir() -> Path:
    """Where the built-in real clients are installed: $GATEWAY_HARNESS_CLIENTS_DIR, else the
    repository's .clients/ (gitignored). One place per machine, so a run installs each once."""
    from harness.adapters.registry import ENV_CLIENTS_DIR

    repo = Path(__file__).resolve().parent.parent
    return Path(os.environ.get(ENV_CLIENTS_DIR) or repo / ".clients").resolve()


@pytest.fixture(scope="session")
def install_client(clients_dir: Path) -> Callable[[str], Adapter]:
    """Install a built-in client on first use (pinned, into ``clients_dir``) and return it. A
    failed install (no network, no npm or Node.js) skips; in CI it fails."""
    from gateway_common.errors import UserError
    from harness.adapters.registry import get_spec

    def install(name: str) -> Adapter:
        try:
            return get_spec(name).install(None, clients_dir)
        except UserError as exc:
            if in_ci():
                pytest.fail(f"CI: {exc}")
            pytest.skip(str(exc))

    return install
