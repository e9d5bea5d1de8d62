"""PR1, the runner's own verdict: the client process kept running until the harness stopped it.

A client that crashes or hangs fails PR1 with its exit code and the last line of its stderr,
even when the wire looked fine up to then (README, "the runner judges PR1"). Each check here
wants the exact status: a not_judged must not slip through where pass or fail is meant.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.adapters.contract import Adapter
from harness.adapters.process import STOP_GRACE_S
from harness.client.core import GatewayClientCore
from harness.client_env import ClientOutcome
from harness.oracle import SHUTDOWN_NOTE, Verdict
from harness.report.model import ScenarioResult
from harness.scenario import builtin_scenarios_dir, load_scenario
from harness.world import RunOptions, _process_verdict, run_scenario

pytestmark = pytest.mark.timeout(120)

BASELINE = builtin_scenarios_dir() / "baseline-steady.toml"

# A user's own client, cut down to what PR1 needs: it gets a session (READY, one heartbeat
# ACKed), then does what MODE says. websockets' sync client over the harness's wss and CA.
CLIENT = textwrap.dedent("""
    import json, os, signal, ssl, sys, time
    from websockets.sync.client import connect

    env = os.environ
    context = ssl.create_default_context(cafile=env["GATEWAY_HARNESS_CA_FILE"])
    ws = connect(env["GATEWAY_HARNESS_GATEWAY_URL"] + "/?v=10&encoding=json", ssl=context)
    json.loads(ws.recv())  # HELLO
    ws.send(json.dumps({"op": 2, "d": {"token": env["GATEWAY_HARNESS_TOKEN"], "intents": 513,
                        "properties": {"os": "linux", "browser": "x", "device": "x"}}}))
    while json.loads(ws.recv()).get("t") != "READY":
        pass
    ws.send(json.dumps({"op": 1, "d": 1}))
    print("session ready", file=sys.stderr, flush=True)
    if sys.argv[1] == "crash":
        print("fatal: simulated crash after READY", file=sys.stderr, flush=True)
        sys.exit(1)
    if sys.argv[1] == "exit0":  # a main() that returns: the bot is gone, its exit code is 0
        print("bot finished", file=sys.stderr, flush=True)
        sys.exit(0)
    # hang: as an asyncio client whose blocked loop never runs its SIGTERM handler; it stops
    # reading and heartbeating, and only SIGKILL ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stuck in a blocking call", file=sys.stderr, flush=True)
    time.sleep(600)
""")


def run_command_client(tmp_path: Path, mode: str) -> ScenarioResult:
    script = tmp_path / "bot.py"
    script.write_text(CLIENT)
    adapter = Adapter.from_command(f"{sys.executable} -u {script} {mode}", name="mybot")
    result = run_scenario(load_scenario(BASELINE),
                          RunOptions(mode="real", client="mybot", adapter=adapter,
                                     out_dir=tmp_path / "out"))
    assert result.error is None, result.error
    return result


def pr1(result: ScenarioResult) -> Verdict:
    [verdict] = [v for v in result.verdicts if v.invariant == "PR1"]
    return verdict


def test_a_command_client_that_crashes_after_connecting_fails_pr1(tmp_path: Path) -> None:
    result = run_command_client(tmp_path, "crash")
    verdict = pr1(result)
    assert verdict.status == "fail", verdict
    assert "exited on its own with code 1" in verdict.evidence
    assert "fatal: simulated crash after READY" in verdict.evidence  # the last stderr line
    assert "exit code 1" in result.stderr_tail
    assert not result.passed and "PR1" in result.failed_invariants
    # it did connect: the crash is the process's, seen after a session on the wire
    assert any(r["kind"] == "frame_out" and r.get("t") == "READY" for r in result.records)


def test_a_command_client_that_exits_with_code_0_before_it_is_stopped_fails_pr1(
        tmp_path: Path) -> None:
    # baseline-steady expects no stop: a gateway client that ends on its own, however cleanly,
    # has stopped serving its application
    result = run_command_client(tmp_path, "exit0")
    verdict = pr1(result)
    assert verdict.status == "fail", verdict
    assert "exited on its own with code 0" in verdict.evidence
    assert "bot finished" in verdict.evidence  # the last stderr line
    assert not result.passed and "PR1" in result.failed_invariants
    # "after N s" is when it exited (right after READY), not when the harness stopped the run
    [contact] = [r for r in result.records if r["kind"] == "first_contact"]
    [over] = [r for r in result.records if str(r.get("text")).startswith(SHUTDOWN_NOTE)]
    match = re.search(r"after (\d+\.\d) s", verdict.evidence)
    assert match and float(match.group(1)) < contact["waited"] + over["ts"]


def test_a_command_client_that_hangs_and_ignores_sigterm_fails_pr1(tmp_path: Path) -> None:
    result = run_command_client(tmp_path, "hang")
    verdict = pr1(result)
    assert verdict.status == "fail", verdict
    assert f"did not exit within {STOP_GRACE_S:g} s of SIGTERM; killed" in verdict.evidence
    assert "stuck in a blocking call" in verdict.evidence  # the last stderr line
    assert "stuck in a blocking call" in result.stderr_tail
    assert "killed after ignoring SIGTERM" in result.stderr_tail
    assert not result.passed and "PR1" in result.failed_invariants


class RaisesAfterReady(GatewayClientCore):
    """A client bug that escapes the client: an exception out of its frame handling."""

    def frame_received(self, gen: int, frame: Any, now: float) -> Any:
        if frame.get("t") == "GUILD_CREATE":
            raise KeyError("guild_id")
        return super().frame_received(gen, frame, now)


def run_raising_client(monkeypatch: pytest.MonkeyPatch) -> Verdict:
    import harness.client.mutants

    monkeypatch.setitem(harness.client.mutants.MUTANTS, "raises-after-ready", RaisesAfterReady)
    return pr1(run_scenario(load_scenario(BASELINE),
                            RunOptions(mode="sim", client="raises-after-ready")))


def test_a_reference_driver_client_that_raises_fails_pr1(monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = run_raising_client(monkeypatch)
    assert verdict.status == "fail", verdict
    assert verdict.evidence.startswith("the reference client raised")
    reference = run_scenario(load_scenario(BASELINE), RunOptions(mode="sim"))
    assert pr1(reference).status == "pass"


def test_pr1_evidence_names_the_exception_the_client_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = run_raising_client(monkeypatch)
    assert verdict.evidence.startswith("the reference client raised KeyError: 'guild_id' at ")
    # where: the innermost frame, the line that raised it
    line = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1)
                if 'raise KeyError("guild_id")' in text)
    assert verdict.evidence.endswith(f"{Path(__file__).name}:{line}"), verdict.evidence


# The rule itself, one row per way a run can end.
def test_pr1_fails_a_crash_or_hang_and_passes_only_a_client_that_kept_running() -> None:
    crash = "the client process exited on its own with code 1 after 0.4 s; last stderr line: x"
    # a hang's last stderr line may say anything, "exited" included
    hang = ("the client process hung: it was stopped by the harness and did not exit within 5 s "
            "of SIGTERM; killed; last stderr line: worker exited")
    raised = "the reference client raised RuntimeError: exited early at bot.py:3"
    assert _process_verdict(ClientOutcome(), False, None).status == "pass"
    outcomes = (ClientOutcome(crash=crash, exited=True), ClientOutcome(crash=hang),
                ClientOutcome(crash=raised))
    for outcome in outcomes:
        verdict = _process_verdict(outcome, False, None)
        assert (verdict.status, verdict.evidence) == ("fail", outcome.crash)
    # a fatal close code: the scenario expects the client to stop, so exiting is right...
    stopped = _process_verdict(outcomes[0], True, None)
    assert stopped.status == "pass" and crash in stopped.evidence
    # ...but hanging or raising is not
    for outcome in outcomes[1:]:
        assert _process_verdict(outcome, True, None).status == "fail"
    # a run that broke judges nothing, and says so
    broken = _process_verdict(ClientOutcome(), False, "network: refused")
    assert broken.status == "not_judged" and "network: refused" in broken.evidence

