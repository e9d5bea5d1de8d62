"""Wall-clock fuzz campaigns against client processes (`fuzz --command`, `fuzz CLIENT`, issue 12.3).

A planted two-fault bug run as a process (`gateway-harness client --mutant
forgets-session-on-second-drop`: it forgets its session when a second drop comes within 5 s of a
RESUMED) passes the validation suite, yet a campaign finds it, shrinks it to the two faults and
writes a bug bundle whose scenario.toml fails the same client under `validate --command` and
passes a correct one. Ctrl-C keeps what was found and leaves no process, port or temporary
folder. A correct client finds nothing. Campaigns that take minutes are slow-marked
(`python3 -m pytest -m slow tests/test_fuzz_real.py`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.cli import main as cli_main
from harness.scenario import Step, Trigger, load_scenario
from harness.schedules import ScheduleLimits, make_schedule, wallclock_schedule

pytestmark = pytest.mark.timeout(600)

MUTANT = "forgets-session-on-second-drop"
MUTANT_CMD = f"{shlex.quote(sys.executable)} -m harness client --mutant {MUTANT}"
REFERENCE_CMD = f"{shlex.quote(sys.executable)} -m harness client"  # a correct client
MARK = "GH_FUZZ_TEST_MARK"  # in every process the campaign starts (clients inherit it)

# A finding an earlier campaign kept (the database's wall-clock part: DIR/wallclock/CLIENT/):
# a harmless server op 1, then a reset, then a second reset 1 s after the RESUMED that followed
# (the mutant forgets within 5 s: 5x margin). Half-second heartbeats and a 6 s run keep each
# run short (a run ends once the client is live with two ACKed beats; a shrink candidate whose
# "after resumed" never fires lasts its 6 s).
KNOWN_FINDING = """\
name = "known-two-drops"
source = "generated"
tags = ["fuzz", "wallclock"]
description = "Two drops, the second soon after the resume that followed the first."
seed = 3

[gateway]
heartbeat_interval = 500
dispatch_rate = 1.0
tls = true

[expect]
recovery_bound = 77.0
duration = 6.0

[[steps]]
name = "f1"
kind = "control"
action = "heartbeat_request"
target = "all"
start = { at = 0.5 }

[[steps]]
name = "f2"
kind = "control"
action = "reset"
target = "all"
start = { at = 1.0 }

[[steps]]
name = "f3"
kind = "control"
action = "reset"
target = "all"
start = { after = "resumed", delay = 1.0 }
"""


def _database(tmp_path: Path) -> Path:
    db = tmp_path / "db"
    (db / "wallclock" / "mutant").mkdir(parents=True)
    (db / "wallclock" / "mutant" / "known-two-drops.toml").write_text(KNOWN_FINDING)
    return db


def _fuzz_argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "fuzz", "--command", MUTANT_CMD, "--name", "mutant",
            "--out", str(out), "--seed", "1", *extra]


def _validate(command: str, name: str, scenario: Path, json_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "validate", "--command", command, "--name", name,
         str(scenario), "--json", str(json_path), "--out", str(json_path.parent / name)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check_bundle_replays(scenario: Path, tmp_path: Path) -> None:
    """The bundle's scenario.toml, as is, fails the mutant with RS1 under `validate --command`
    and passes the reference client run the same way."""
    bad = _validate(MUTANT_CMD, "mutant", scenario, tmp_path / "bad.json")
    good = _validate(REFERENCE_CMD, "reference-process", scenario, tmp_path / "good.json")
    bad_out, _ = bad.communicate(timeout=300)
    good_out, _ = good.communicate(timeout=300)
    assert bad.returncode == 1, bad_out
    assert good.returncode == 0, good_out
    [entry] = json.loads((tmp_path / "bad.json").read_text())["scenarios"]
    assert "RS1" in entry["failed_invariants"], entry


def test_fuzz_command_shrinks_confirms_and_bundles_a_two_fault_bug(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        _fuzz_argv(out, "--database", str(_database(tmp_path)), "--jobs", "3", "--confirm", "2",
                   "--max-faults", "3", "--examples", "1"),
        capture_output=True, text=True, timeout=500)
    assert done.returncode == 1, done.stdout + done.stderr  # 1: a finding
    assert "FAIL RS1" in done.stdout and "shrunk from 3 to 2 fault(s)" in done.stdout, done.stdout
    [bundle] = [p for p in out.iterdir() if p.is_dir()]
    scenario = load_scenario(bundle / "scenario.toml")
    assert [(s.action, s.start.at, s.start.after) for s in scenario.steps] == [
        ("reset", 1.0, None), ("reset", None, "resumed")]  # the op 1 went: it was not needed
    report = (bundle / "REPORT.md").read_text()
    rate = re.search(r"\*\*Reproduction\*\*: (\d)/2 runs of the minimal schedule failed RS1",
                     report)
    assert rate is not None and int(rate.group(1)) >= 1, report
    assert "**Baseline**: the reference client passed the minimal schedule" in report
    assert "shrunk from 3 faults" in report and "IDENTIFY" in report  # what happened
    assert re.search(r"line \d+: \{.*\"op\":2", report), report  # the evidence: the IDENTIFY
    assert f"validate --command {shlex.quote(MUTANT_CMD)} --name mutant scenario.toml" in report
    for run in ("confirm-1", "confirm-2", "found"):  # traces, delivery logs, stdout/stderr
        assert len(list((bundle / "runs" / run).glob("*.trace.jsonl"))) == 1, run
        assert list((bundle / "runs" / run).glob("*.client/stderr.log")), run
    assert list((bundle / "runs" / "baseline").glob("*.trace.jsonl"))
    versions = json.loads((bundle / "versions.json").read_text())
    assert versions["client_library"] == {f"gateway-harness-mutant:{MUTANT}": "0.1.0"}
    assert versions["client_runtime"].startswith("python ") and versions["python"]
    html = (bundle / "report.html").read_text()
    assert html.count("<svg") >= 3 and "confirm-2" in html  # a timeline per run
    # the earlier finding is kept for the next campaign: the minimal one, next to it
    kept = sorted(p.name for p in (tmp_path / "db" / "wallclock" / "mutant").glob("*.toml"))
    assert kept == sorted(["known-two-drops.toml", f"{bundle.name}.toml"])
    _check_bundle_replays(bundle / "scenario.toml", tmp_path)


def _group_members(pgid: int) -> list[str]:
    """Live processes of a process group (zombies waiting for init hold nothing)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(stat.parent.name)
    return out


def _marked_processes(mark: str) -> list[str]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{MARK}={mark}".encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:
            continue
    return found


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":  # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_ctrl_c_keeps_the_finding_and_leaves_no_process_port_or_temporary_folder(
        tmp_path: Path) -> None:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    mark = uuid.uuid4().hex
    env = {**os.environ, "TMPDIR": str(tmp), MARK: mark}
    proc = subprocess.Popen(
        _fuzz_argv(out, "--database", str(_database(tmp_path)), "--jobs", "2", "--no-baseline",
                   "--max-faults", "3", "--examples", "1"),
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:  # interrupt while it shrinks, a run in flight in each worker
        seen.append(line)
        if "shrinking" in line:
            break
    else:
        pytest.fail("the campaign ended before shrinking:\n" + "".join(seen))
    time.sleep(0.5)  # the first shrink candidates' worlds are up (a run takes 4 s or more)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted (Ctrl-C)" in stdout and "FAIL RS1" in stdout, stdout
    for _ in range(50):  # the workers' last exit statuses reach init
        if not _group_members(proc.pid):
            break
        time.sleep(0.1)
    assert _group_members(proc.pid) == []
    assert _marked_processes(mark) == []  # clients run in sessions of their own: none left
    assert list(tmp.iterdir()) == []  # worlds' TLS material, client logs, the campaign's runs
    [bundle] = [p for p in out.iterdir() if p.is_dir()]
    report = (bundle / "REPORT.md").read_text()
    assert "not shrunk (the campaign was interrupted)" in report
    assert "confirmed by 0 of 5 runs (the campaign was interrupted)" in report
    assert len(load_scenario(bundle / "scenario.toml").steps) == 3  # the finding, as found
    trace = next((bundle / "runs" / "found").glob("*.trace.jsonl")).read_text()
    ports = {int(p) for p in re.findall(r"wss://127\.0\.0\.1:(\d+)", trace)}
    assert ports and not ports & _listening_ports()


def test_schedules_scale_with_the_heartbeat_interval_the_client_honours() -> None:
    limits = ScheduleLimits()
    scenario = make_schedule([
        Step(name="", kind="toxic", type="latency", attributes={"latency": 1000, "jitter": 100},
             start=Trigger(at=2.0), duration=3.0),
        Step(name="", kind="control", action="delay_hello", params={"ms": 2000},
             start=Trigger(after="ready", delay=0.5), duration=1.0),
        Step(name="", kind="control", action="reconnect", params={"close_after_ms": 500},
             start=Trigger(at=4.0)),
    ], limits, seed=1)
    same = wallclock_schedule(scenario, limits)
    assert [s.start for s in same.steps] == [s.start for s in scenario.steps]
    assert same.expect.recovery_bound == 77.0 and same.expect.duration == limits.run_duration
    longer = wallclock_schedule(same, limits, until_bound=True)
    assert longer.steps == same.steps and longer.expect.duration == 10 + 77 + 2
    slow = wallclock_schedule(scenario, limits, 41.25)  # e.g. midjourney's own 40 s clock
    assert slow.gateway.config.heartbeat_interval_ms == 41250
    toxic, hello, op7 = slow.steps
    assert (toxic.start.at, toxic.duration, toxic.attributes) == (
        82.5, 123.8, {"latency": 41250, "jitter": 4125})
    assert (hello.start.after, hello.start.delay, hello.params["ms"]) == ("ready", 20.6, 82500)
    assert op7.params == {"close_after_ms": 20625}
    assert slow.expect.recovery_bound == 75 + 2 * 41.25
    assert slow.expect.duration == round(25 * 41.25, 1)


def test_wall_clock_flags_are_user_errors_in_simulation(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert cli_main(["fuzz", "--client", "stale-resume-seq", "--jobs", "2"]) == 2
    assert "--jobs: wall-clock campaigns only" in capsys.readouterr().err
    assert cli_main(["fuzz", "--command", "true", "--mode", "sim"]) == 2
    assert "wall-clock mode only" in capsys.readouterr().err
    assert cli_main(["fuzz", "--command", "true", "--keep-going"]) == 2
    assert "--keep-going" in capsys.readouterr().err
    assert cli_main(["client", "--mutant", "no-such-bug", "--token", "t",
                     "--gateway-url", "ws://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mutant" in err[0] and MUTANT in err[0]


# ---- slow: whole campaigns (run with -m slow) ----------------------------------------------------


@pytest.mark.slow
def test_a_campaign_from_scratch_finds_the_two_fault_bug_and_shrinks_it_to_two_faults(
        tmp_path: Path) -> None:
    # As the simulated campaigns in test_fuzz.py: the fault kinds the bug needs (drops) among
    # distractors, so 200 examples find it whatever order Hypothesis explores in.
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run(
        _fuzz_argv(out, "--no-database", "--jobs", "2", "--examples", "200",
                   "--time-budget", "1200",
                   "--faults", "reset,close,reconnect,proxy,latency,withhold_acks"),
        capture_output=True, text=True, timeout=3000)
    print(done.stdout, f"wall clock: {time.monotonic() - started:.0f} s", sep="\n")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL RS1" in done.stdout, done.stdout
    [bundle] = [p for p in out.iterdir() if p.is_dir()]
    scenario = load_scenario(bundle / "scenario.toml")
    assert len(scenario.steps) == 2, [s.describe() for s in scenario.steps]
    _check_bundle_replays(bundle / "scenario.toml", tmp_path)


@pytest.mark.slow
def test_a_correct_client_finds_nothing(tmp_path: Path) -> None:
    # The reference client as a process: no schedule it fails that it also passes. 50 examples
    # are reported in the README (`fuzz --command 'gateway-harness client' --examples 50`).
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "fuzz", "--command", REFERENCE_CMD, "--name",
         "reference-process", "--out", str(out), "--no-database", "--jobs", "2",
         "--examples", os.environ.get("GH_FUZZ_EXAMPLES", "10"), "--seed", "2",
         "--time-budget", "3600"],
        capture_output=True, text=True, timeout=4000)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no invariant failed" in done.stdout
    assert not out.exists() or not any(out.iterdir())
