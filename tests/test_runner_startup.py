"""A client's start-up is not part of the scenario (issue 12.1).

In wall-clock runs the scenario's clock (its time triggers, its `duration`, LV1's bound from the
start) starts at the client's first connection attempt, its first TCP connect or REST request,
not when its process starts. A client that makes no attempt in time is a run error with its
stderr tail, never a failed invariant.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from harness.adapters.contract import Adapter
from harness.adapters.suite import validation_suite
from harness.cli import main
from harness.report.model import ScenarioResult
from harness.scenario import builtin_scenarios_dir, load_scenario
from harness.world import RunOptions, run_scenario

pytestmark = pytest.mark.timeout(240)

SCENARIOS = builtin_scenarios_dir()
STARTUP_S = 8  # the correct client that waits 8 s before its first connect
# Our reference client as a process, started late: a Node.js client on a loaded machine.
SLOW_CLIENT = "sh -c " + shlex.quote(f"sleep {STARTUP_S}; exec {sys.executable} -m harness client")


def run_command(tmp_path: Path, scenario: str, command: str, **options: object) -> ScenarioResult:
    adapter = Adapter.from_command(command, name="mybot")
    return run_scenario(load_scenario(SCENARIOS / f"{scenario}.toml"),
                        RunOptions(mode="real", client="mybot", adapter=adapter,
                                   out_dir=tmp_path, **options))  # type: ignore[arg-type]


def test_a_client_that_starts_slowly_passes_baseline_and_a_fault_on_its_first_connect(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # baseline-steady's run is 4.5 s and its LV1 bound 2 s: from the process start, a client 8 s
    # late failed LV1. seed-tls-reset-first-connect resets the first connection's TLS handshake
    # for 1.5 s "from the start": it must hit the client's first connect, not expire unseen.
    paths = [str(SCENARIOS / f"{name}.toml")
             for name in ("baseline-steady", "seed-tls-reset-first-connect")]
    code = main(["validate", "--command", SLOW_CLIENT, "--name", "slowbot", *paths,
                 "--jobs", "2", "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    entries = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert [e["outcome"] for e in entries] == ["PASS", "PASS"], out
    for entry in entries:
        records = [json.loads(line) for line in Path(entry["trace"]).read_text().splitlines()]
        [contact] = [r for r in records if r["kind"] == "first_contact"]
        assert contact["ts"] == 0.0 and contact["waited"] >= STARTUP_S  # the clock starts here
        assert min(r["ts"] for r in records) == 0.0  # the wait is not in the run
    records = [json.loads(line) for line in Path(entries[1]["trace"]).read_text().splitlines()]
    first = next(r for r in records if r["kind"] == "conn_open")
    close = next(r for r in records if r["kind"] == "conn_close" and r["conn"] == first["conn"])
    assert (close["by"], close["how"]) == ("network", "reset")  # the fault met the first connect


def test_a_client_that_never_connects_is_a_run_error_with_its_stderr(tmp_path: Path) -> None:
    never = "sh -c 'echo \"config: waiting for a token file\" >&2; exec sleep 600'"
    result = run_command(tmp_path, "baseline-steady", never, startup_timeout=2.0)
    assert result.outcome == "ERROR"
    assert result.error == ("client did not start within 2 s (no connection attempt, no REST "
                            "request; see --startup-timeout); last stderr line: config: waiting "
                            "for a token file")
    assert "config: waiting for a token file" in result.stderr_tail
    # nothing judged, nothing failed: a client that never tried proves nothing either way
    assert result.verdicts and all(v.status == "not_judged" for v in result.verdicts)


def test_a_client_that_exits_before_connecting_is_a_run_error_not_a_wait(tmp_path: Path) -> None:
    broken = "sh -c 'echo \"ModuleNotFoundError: No module named discord\" >&2; exit 1'"
    # the default 60 s start-up deadline: the run ends when the process does, not at the deadline
    result = run_command(tmp_path, "baseline-steady", broken)
    assert result.error == ("client did not start: its process exited with code 1 before any "
                            "connection attempt; last stderr line: ModuleNotFoundError: No module "
                            "named discord")
    assert all(v.status == "not_judged" for v in result.verdicts)


def test_startup_timeout_is_a_flag_of_run_validate_and_fuzz(
        capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "validate", "fuzz"):
        with pytest.raises(SystemExit):
            main([command, "--startup-timeout", "0"])
        assert "--startup-timeout: must be positive, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_client_that_starts_slowly_passes_the_whole_validation_suite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [s.name for s in validation_suite([], [])]
    code = main(["validate", "--command", SLOW_CLIENT, "--name", "slowbot", "--jobs", "2",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    entries = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert [e["name"] for e in entries] == names
    assert code == 0, out
