"""The Hypothesis strategies for disconnect schedules: valid, fair, replayable, and shrinking
towards fewer, shorter, earlier, simpler faults."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from gateway_common.facts import FATAL_CLOSE_CODES, ONE_SHOT_CONTROLS
from harness.scenario import Step, Trigger, load_scenario
from harness.schedules import (
    ScheduleLimits,
    fault_steps,
    fuzz_gateway,
    make_schedule,
    run_schedule,
    scenario_toml,
    schedules,
    write_scenario,
)

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@FAST
@given(schedules(horizon=12.0, max_faults=3, max_fault_time=5.0))
def test_generated_schedules_respect_their_limits(scenario) -> None:
    assert len(scenario.steps) <= 3
    persistent = [s for s in scenario.steps if not s.one_shot]
    assert sum(s.duration or 0.0 for s in persistent) <= 5.0 + 1e-9
    for step in persistent:
        assert step.duration is not None and step.duration > 0
        if step.start.at is not None:
            assert step.start.at + step.duration <= 12.0 + 0.1 + 1e-9
    for step in scenario.steps:
        if step.kind == "control" and step.action == "close":
            assert step.params.get("code") not in FATAL_CLOSE_CODES
        if step.kind == "control":
            assert step.action != "session_start_remaining"
            assert step.action != "heartbeat_deadline"
        if step.one_shot:
            assert step.duration is None
    # quiet time after the horizon for the client to recover in
    assert scenario.expect.duration >= 12.0 + 10.0
    assert len({s.name for s in scenario.steps}) == len(scenario.steps)


@FAST
@given(schedules(horizon=10.0))
def test_a_schedule_written_as_toml_loads_back_identically(scenario) -> None:
    text = scenario_toml(scenario)
    from harness.scenario import parse_scenario

    loaded = parse_scenario(text, "generated.toml")
    assert replace(loaded, path=None) == scenario


def test_write_scenario_writes_a_file_gateway_harness_can_load(tmp_path: Path) -> None:
    steps = [
        Step(name="", kind="toxic", type="reset_after", attributes={"bytes": 1, "mode": "rst"},
             stream="upstream", target="resume", only_connection=1, start=Trigger(after="ready"),
             duration=2.0),
        Step(name="", kind="control", action="reset", start=Trigger(after="ready", delay=0.8)),
    ]
    scenario = make_schedule(steps, seed=7, gateway=replace(fuzz_gateway(), tls=True))
    path = write_scenario(scenario, tmp_path / "seed.toml", comments=("found by a test",))
    loaded = load_scenario(path)
    assert loaded.seed == 7
    assert loaded.gateway.tls is True
    assert [s.name for s in loaded.steps] == ["f1", "f2"]
    assert loaded.steps[0].only_connection == 1
    assert path.read_text().startswith("# found by a test\n")


def test_limits_cut_durations_to_the_fault_time_budget_and_the_horizon() -> None:
    limits = ScheduleLimits(horizon=5.0, max_fault_time=3.0, max_duration=6.0)
    steps = [
        Step(name="", kind="proxy", action="down", start=Trigger(at=4.0), duration=6.0),
        Step(name="", kind="proxy", action="down", start=Trigger(at=0.0), duration=6.0),
        Step(name="", kind="control", action="reset", start=Trigger(at=1.0)),
    ]
    scenario = make_schedule(steps, limits)
    assert [s.duration for s in scenario.steps] == [1.0, 2.0, None]


def test_shrinking_gives_the_smallest_fault_earliest_and_shortest() -> None:
    # Any schedule with a proxy fault: the minimal one is a single proxy step at 0 s for 0.1 s.
    minimal = find(
        schedules(horizon=20.0),
        lambda s: any(step.kind == "proxy" for step in s.steps),
        settings=settings(database=None, max_examples=2000, derandomize=True,
                          suppress_health_check=list(HealthCheck)),
    )
    assert len(minimal.steps) == 1
    step = minimal.steps[0]
    assert step.start == Trigger(at=0.0)
    assert step.duration == 0.1
    assert step.target == "both"
    assert minimal.seed == 0


def test_shrinking_prefers_one_shot_controls_over_persistent_faults() -> None:
    minimal = find(
        fault_steps(),
        lambda step: step.kind == "control",
        settings=settings(database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck)),
    )
    assert minimal.action in ONE_SHOT_CONTROLS
    assert minimal.duration is None


# The strategies in a user's own suite: a few schedules against the reference client, in sim.
@settings(max_examples=6, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(schedules(horizon=8.0, max_faults=1,
                 steps=st.one_of(
                     st.builds(lambda t: Step(name="", kind="control", action="reset",
                                              start=Trigger(at=t)),
                               st.integers(0, 60).map(lambda n: n / 10)),
                     st.builds(lambda t: Step(name="", kind="control", action="reconnect",
                                              start=Trigger(at=t)),
                               st.integers(0, 60).map(lambda n: n / 10)),
                 )))
def test_the_reference_client_survives_generated_resets_and_reconnects(scenario) -> None:
    result = run_schedule(scenario)
    assert result.passed, (result.failed_invariants, scenario_toml(scenario))
