"""Scenarios through the real Toxiproxy (`gateway-harness run --toxiproxy-url`): what needs no
extension of ours runs, in parallel jobs sharing the one server; what needs one is skipped and
the summary says why. (`nox -s toxiproxy` runs the whole built-in suite this way.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.faults.testing import RealToxiproxyServer
from harness.scenario import builtin_scenarios_dir

pytestmark = pytest.mark.timeout(300)

SCENARIOS = builtin_scenarios_dir()


def test_suite_through_the_real_toxiproxy(
    real_toxiproxy: RealToxiproxyServer, tmp_path: Path
) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "harness", "run",
            str(SCENARIOS / "latency-spike-past-interval.toml"),  # a toxic on both proxies
            str(SCENARIOS / "gateway-down-2s.toml"),  # proxies disabled and enabled
            str(SCENARIOS / "seed-tls-reset-on-resume.toml"),  # needs reset_after
            "--toxiproxy-url", real_toxiproxy.url, "--jobs", "2", "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for name in ("latency-spike-past-interval", "gateway-down-2s"):
        assert any(line.startswith(f"{name} ") and " PASS " in line for line in lines), name
    assert "skipped 1 scenario(s), not run:" in lines
    assert any(
        line.split() == [
            "seed-tls-reset-on-resume", "needs", "an", "extension", "of", "ours",
            "(step", "tls-handshake-reset:", "toxic", "type", "'reset_after',",
            "attribute", "'only_connection')",
        ]
        for line in lines
    ), run.stdout  # fmt: skip
    assert lines[-1].startswith("2 passed, 0 failed, 0 errors, 1 skipped in ")
    assert not (tmp_path / "seed-tls-reset-on-resume.real.reference.trace.jsonl").exists()
    assert httpx.get(f"{real_toxiproxy.url}/proxies").json() == {}  # each run cleaned up
