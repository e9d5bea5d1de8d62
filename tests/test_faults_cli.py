"""`gateway-harness proxy` as a process: JSON line on start, API served, clean exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


def test_proxy_serves_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "redis", "upstream": "localhost:6379"}]))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "proxy",
            "--port",
            "0",
            "--seed",
            "9",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        assert line["event"] == "listening" and line["seed"] == 9
        assert line["proxies"] == ["redis"]
        proxies = httpx.get(f"{line['api']}/proxies", timeout=10).json()
        assert proxies["redis"]["upstream"] == "localhost:6379"
        assert proxies["redis"]["listen"].startswith("127.0.0.1:")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_bad_config_is_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('[{"name": "a", "upstream": "x:1"}, {"upstream": "y:1"}]')
    result = subprocess.run(
        [sys.executable, "-m", "harness", "proxy", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gateway-harness proxy: error: --config {config}: missing required field: name at proxy 2"
    )
    assert "Traceback" not in result.stderr
