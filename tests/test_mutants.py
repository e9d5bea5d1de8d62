"""The planted-bug mutants: each breaks its invariant on a small hand-written schedule (the
failure it models) while the reference client passes the very same schedule."""

from __future__ import annotations

import inspect
import random
from dataclasses import replace

import pytest

from harness.cli import main as cli_main
from harness.client.core import ClientConfig, GatewayClientCore
from harness.client.mutants import EXPECTED_INVARIANTS, MUTANTS
from harness.scenario import Step, Trigger
from harness.schedules import ScheduleLimits, fuzz_gateway, make_schedule, run_schedule


def control(action: str, at: float, duration: float | None = None, **params: object) -> Step:
    return Step(name="", kind="control", action=action, start=Trigger(at=at), duration=duration,
                params=dict(params))


# One schedule per mutant: the fault its real-world bug needs, and the [gateway] settings it
# needs beside the fuzzer's defaults.
SCHEDULES: dict[str, tuple[list[Step], dict[str, object]]] = {
    "heartbeat-dies-on-tls-reset": (
        [
            Step(name="", kind="toxic", type="reset_after", attributes={"bytes": 1, "mode": "rst"},
                 stream="upstream", target="resume", start=Trigger(at=0.0), duration=2.0),
            control("reset", 0.5),
        ],
        {"tls": True},
    ),
    "stale-resume-seq": ([control("reset", 1.0)], {}),
    "close-1000-on-op7": ([control("reconnect", 1.0)], {}),
    "no-zombie-detection": ([control("withhold_acks", 1.0, 3.0)], {}),
    "identify-storm-after-op9": ([control("invalid_session", 1.0, resumable=False)], {}),
    "stale-heartbeat-timer": (
        [control("delay_hello", 0.5, 5.0, ms=3000), control("reset", 1.0)], {}
    ),
    "stuck-on-stale-resume-url": ([control("invalid_session", 1.0, resumable=False)], {}),
    "new-session-id-not-stored": (
        [control("invalid_session", 1.0, resumable=False), control("reset", 9.0)], {}
    ),
    # two drops: the second 2 s after the first (about 1.5 s after its RESUMED)
    "forgets-session-on-second-drop": ([control("reset", 1.0), control("reset", 3.0)], {}),
    # the session expires at the server while the connection is down: RESUME gets op 9 d=false
    "op9-after-resume-fatal": ([control("expire_session", 0.9), control("reset", 1.0)], {}),
    # one missed ACK: the client closes the zombie and RESUMEs, then must beat on
    "heartbeats-stop-after-missed-ack": ([control("withhold_acks", 1.0, 1.5)], {}),
    "reuses-zlib-inflater": ([control("reset", 1.0)], {"compression": "zlib-stream"}),
    # offline for 15 s: every reconnect reset at once, time for the loop's 20 short waits
    "reconnect-loop-no-backoff": (
        [
            Step(name="", kind="toxic", type="reset_peer", attributes={"timeout": 0},
                 stream="upstream", target="both", start=Trigger(at=1.0), duration=15.0),
            control("reset", 1.0),
        ],
        {},
    ),
}
# A client that never decodes a frame again is only judged once the recovery bound has run out
# within the run: a bound shorter than the fuzzer's (75 s, for a 60 s backoff cap).
# A loop's short waits prove no backoff only once there are 20 of them: an outage longer than
# the fuzzer's 6 s per fault.
LIMITS = {"reuses-zlib-inflater": ScheduleLimits(recovery_bound=10.0),
          "reconnect-loop-no-backoff": ScheduleLimits(horizon=20.0, max_duration=15.0,
                                                      max_fault_time=15.0)}


def test_every_mutant_has_a_schedule_and_expected_invariants() -> None:
    assert set(SCHEDULES) == set(MUTANTS) == set(EXPECTED_INVARIANTS)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_factories_take_the_core_constructor_arguments(name: str) -> None:
    factory = MUTANTS[name]
    core = factory(ClientConfig(token="t", gateway_url="ws://127.0.0.1:1"), random.Random(1))
    assert isinstance(core, GatewayClientCore)
    params = list(inspect.signature(factory).parameters)
    assert params == ["config", "rng"]


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_breaks_its_invariant_where_the_reference_client_passes(name: str) -> None:
    steps, knobs = SCHEDULES[name]
    scenario = make_schedule(steps, LIMITS.get(name), seed=3,
                             gateway=replace(fuzz_gateway(), **knobs))
    reference = run_schedule(scenario, "reference")
    assert reference.passed, (reference.failed_invariants, reference.error)
    mutant = run_schedule(scenario, name)
    assert mutant.error is None
    assert set(mutant.failed_invariants) & EXPECTED_INVARIANTS[name], mutant.failed_invariants


def test_fuzz_list_names_every_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["fuzz", "--list"]) == 0
    out = capsys.readouterr().out
    for name in MUTANTS:
        assert name in out
