"""Runs started by tests keep their traces in the test's temporary folder, not in ./results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.faults.testing import RealToxiproxyServer


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path_factory.mktemp("results")
    monkeypatch.setenv("GATEWAY_HARNESS_RESULTS_DIR", str(results))  # read at each run


@pytest.fixture(scope="session")
def real_toxiproxy_binary() -> str:
    """Shopify's toxiproxy-server ($TOXIPROXY_SERVER or PATH): a skip without it, a failure
    in CI (CI=true), where .ci/run installs it."""
    import os

    from harness.faults.testing import ToxiproxyServerMissing, find_toxiproxy_server

    try:
        return find_toxiproxy_server()
    except ToxiproxyServerMissing as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def real_toxiproxy(real_toxiproxy_binary: str) -> Iterator[RealToxiproxyServer]:
    """One real Toxiproxy server on a free loopback port for the session (tests using it
    delete the proxies they create)."""
    from harness.faults.testing import RealToxiproxyServer

    with RealToxiproxyServer(real_toxiproxy_binary) as server:
        yield server
