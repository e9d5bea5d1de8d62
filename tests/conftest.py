"""Runs started by tests keep their traces in the test's temporary folder, not in ./results."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path_factory.mktemp("results")
    monkeypatch.setenv("GATEWAY_HARNESS_RESULTS_DIR", str(results))
    import harness.cli_run

    monkeypatch.setattr(harness.cli_run, "DEFAULT_RESULTS_DIR", results)
    import harness.adapters.cli

    monkeypatch.setattr(harness.adapters.cli, "DEFAULT_RESULTS_DIR", results)
