"""Scenario files as pytest items (issue 15): `pytest scenarios/` with our plugin, run by pytest
itself (pytester, in a subprocess) on copies of the built-in scenario files."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.scenario import load_scenario

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
MUTANT_SCENARIO = "f11-ack-blackhole.toml"  # no-zombie-detection fails it (ZB1)


def copy_scenarios(pytester: pytest.Pytester, *names: str) -> Path:
    """The built-in suite (or the named files of it) under pytester's folder as scenarios/."""
    dest = pytester.path / "scenarios"
    if names:
        dest.mkdir()
        for name in names:
            shutil.copy(SCENARIOS / name, dest / name)
    else:
        shutil.copytree(SCENARIOS, dest)
    return dest


def item_ids(result: pytest.RunResult) -> list[str]:
    return [line.strip() for line in result.outlines if "::" in line]


def test_one_item_per_scenario_client_and_mode(pytester: pytest.Pytester) -> None:
    copy_scenarios(pytester)
    # TOML files that are not scenarios are not items (a tool's config, a name-only table)
    pytester.makefile(".toml", pyproject='[project]\nname = "bot"\n',
                      other='name = "not a scenario"\ncolour = "blue"\n')
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "--gateway-client", "reference",
        "--gateway-client", "no-zombie-detection", "--gateway-mode", "sim",
        "--gateway-mode", "real")
    assert result.ret == 0, result.stdout.str()
    expected = set()
    for path in sorted(SCENARIOS.rglob("*.toml")):
        name = load_scenario(path).name
        rel = path.relative_to(REPO).as_posix()
        for client in ("reference", "no-zombie-detection"):
            for mode in ("sim", "real"):
                expected.add(f"{rel}::{name}[{client}-{mode}]")
    assert len(expected) == 4 * len(list(SCENARIOS.rglob("*.toml")))
    assert sorted(item_ids(result)) == sorted(expected)


def test_repeat_gives_one_item_per_run(pytester: pytest.Pytester) -> None:
    copy_scenarios(pytester, MUTANT_SCENARIO)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "--gateway-repeat", "3")
    assert item_ids(result) == [
        f"scenarios/{MUTANT_SCENARIO}::f11-ack-blackhole[reference-real-run{n}]"
        for n in (1, 2, 3)]


def test_scenario_tags_are_markers(pytester: pytest.Pytester) -> None:
    copy_scenarios(pytester)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "--strict-markers",
                                           "-m", "seed and not resume")
    assert result.ret == 0, result.stdout.str()
    expected = []
    for path in SCENARIOS.rglob("*.toml"):
        scenario = load_scenario(path)
        if "seed" in scenario.tags and "resume" not in scenario.tags:
            expected.append(f"{path.relative_to(REPO).as_posix()}::{scenario.name}"
                            "[reference-real]")
    assert expected  # the built-in suite has such scenarios
    assert sorted(item_ids(result)) == sorted(expected)


def test_failing_item_shows_evidence_trace_timeline_and_replay(
        pytester: pytest.Pytester) -> None:
    copy_scenarios(pytester, MUTANT_SCENARIO)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        "--gateway-client", "no-zombie-detection", "--gateway-client", "reference",
        "--gateway-mode", "sim", "--gateway-out", str(out), "--junitxml", "junit.xml")
    # the mutant fails the scenario; the reference client passes the same item
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()

    # the replay command the report gives reproduces the same verdict on its own
    # (with CI set, pytest's short summary repeats the whole failure text: the same lines again)
    (replay,) = set(re.findall(r"^replay:\s+(.*)$", text, re.M))
    argv = shlex.split(replay)
    assert argv[:2] == ["gateway-harness", "run"]
    replayed = subprocess.run(
        [sys.executable, "-m", "harness", *argv[1:], "--out", str(pytester.path / "replay"),
         "--json", str(pytester.path / "replay.json")],
        capture_output=True, text=True, cwd=pytester.path, timeout=300)
    assert replayed.returncode == 1, replayed.stderr
    (judged,) = json.loads((pytester.path / "replay.json").read_text())["scenarios"]
    failed = [v for v in judged["verdicts"] if v["status"] == "fail"]
    assert [v["invariant"] for v in failed] == ["ZB1"]

    # the item's report: the failed invariant with the oracle's evidence, trace and timeline
    evidence = failed[0]["evidence"]
    assert "no ACK" in evidence
    assert "ZB1 (" in text and evidence in text
    (trace,) = set(re.findall(r"^trace:\s+(.*)$", text, re.M))
    (timeline,) = set(re.findall(r"^timeline:\s+(.*)$", text, re.M))
    assert Path(trace).parent == out and Path(timeline).parent == out
    records = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    assert any(r.get("kind") == "frame_in" for r in records)
    html = Path(timeline).read_text()
    assert "<svg" in html and "ZB1" in html

    # --junitxml: the failing testcase carries the same text; the passing one none
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    assert set(cases) == {"f11-ack-blackhole[no-zombie-detection-sim]",
                          "f11-ack-blackhole[reference-sim]"}
    assert cases["f11-ack-blackhole[reference-sim]"].find("failure") is None
    failure = cases["f11-ack-blackhole[no-zombie-detection-sim]"].find("failure")
    assert failure is not None
    for line in (evidence, f"trace:    {trace}", f"timeline: {timeline}", f"replay:   {replay}"):
        assert line in (failure.text or ""), line


@pytest.mark.parametrize(("args", "message"), [
    (["--gateway-client", "nope"], "--gateway-client: 'nope' is neither a built-in client"),
    (["--gateway-repeat", "0"], "--gateway-repeat: must be at least 1, got 0"),
    (["--gateway-mode", "sim", "--gateway-client", "hikari"],
     "--gateway-mode sim: 'hikari' runs as a process, in real mode only"),
    (["--gateway-name", "bot"], "--gateway-name: only applies to --gateway-command"),
    (["--gateway-command", ""], "--gateway-command: empty command line"),
    (["--gateway-command", "'unclosed"], "--gateway-command: cannot parse"),
    (["--gateway-command", "no-such-bot-binary --x"],
     "--gateway-command: cannot start 'no-such-bot-binary'"),
    (["--gateway-mode", "fast"], "argument --gateway-mode: invalid choice: 'fast'"),
    (["--gateway-seed", "x"], "argument --gateway-seed: invalid int value: 'x'"),
])
def test_bad_option_is_one_usage_line(pytester: pytest.Pytester, args: list[str],
                                      message: str) -> None:
    copy_scenarios(pytester, MUTANT_SCENARIO)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if message in line]
    assert len(errors) == 1, result.errlines
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert not item_ids(result)  # nothing ran


def test_default_test_run_collects_no_scenario_items() -> None:
    """`python3 -m pytest` in the repository (testpaths = tests) is the project's suite only."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    assert len(ids) > 100
    assert all(line.startswith("tests/") and ".py::" in line for line in ids), [
        line for line in ids if not line.startswith("tests/") or ".py::" not in line][:5]


# ---- pytest-xdist (issue 15.2) ------------------------------------------------------------------

XDIST_SCENARIOS = ("f11-ack-blackhole.toml", "seed-tls-reset-on-resume.toml",
                   "f06-repeated-op7.toml", "close-4004-fatal.toml", "gateway-down-2s.toml",
                   "f09-new-session-then-drop.toml")


def junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """Each testcase's outcome and, for a failure, its text (the verdicts and evidence)."""
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None:
            outcomes[case.get("name", "")] = ("failed", failure.text or "")
        elif error is not None:
            outcomes[case.get("name", "")] = ("error", error.text or "")
        else:
            outcomes[case.get("name", "")] = ("passed", "")
    return outcomes


def test_xdist_workers_give_the_results_of_a_serial_run(pytester: pytest.Pytester) -> None:
    copy_scenarios(pytester, *XDIST_SCENARIOS)
    common = ["--gateway-mode", "sim", "--gateway-client", "reference",
              "--gateway-client", "no-zombie-detection",
              "--gateway-client", "identify-storm-after-op9",
              "--gateway-client", "heartbeat-dies-on-tls-reset", "-p", "no:cacheprovider"]
    serial = pytester.runpytest_subprocess(*common, "--gateway-out", "serial",
                                           "--junitxml", "serial.xml")
    assert serial.ret == pytest.ExitCode.TESTS_FAILED
    parallel = pytester.runpytest_subprocess(*common, "-n", "2", "--gateway-out", "parallel",
                                             "--junitxml", "parallel.xml")
    assert "2 workers [24 items]" in parallel.stdout.str()
    by_serial = junit_outcomes(pytester.path / "serial.xml")
    by_parallel = junit_outcomes(pytester.path / "parallel.xml")
    assert len(by_serial) == 24
    # each mutant fails something, or the comparison would prove little
    failed = {name.partition("[")[2].rstrip("]")
              for name, (o, _) in by_serial.items() if o == "failed"}
    assert {"no-zombie-detection-sim", "identify-storm-after-op9-sim",
            "heartbeat-dies-on-tls-reset-sim"} <= failed
    assert {name: o for name, (o, _) in by_parallel.items()} == {
        name: o for name, (o, _) in by_serial.items()}
    # and for the same reasons: the failure texts match but for their output folder
    for name, (outcome, text) in by_serial.items():
        if outcome == "failed":
            assert by_parallel[name][1].replace("/parallel/", "/serial/") == text, name
    # each item's trace in its own file, none lost to another worker
    assert sorted(p.name for p in (pytester.path / "parallel").glob("*.trace.jsonl")) == sorted(
        p.name for p in (pytester.path / "serial").glob("*.trace.jsonl"))


def test_xdist_workers_in_wall_clock_mode_use_their_own_ports(pytester: pytest.Pytester) -> None:
    """Two real-mode worlds at once, one per worker: each its own listeners, proxies, TLS files."""
    copy_scenarios(pytester, "baseline-steady.toml", "seed-tls-reset-on-resume.toml")
    result = pytester.runpytest_subprocess("-n", "2", "--gateway-repeat", "2",
                                           "-p", "no:cacheprovider", "--gateway-out", "out")
    result.assert_outcomes(passed=4)
    assert len(list((pytester.path / "out").glob("*.trace.jsonl"))) == 4
