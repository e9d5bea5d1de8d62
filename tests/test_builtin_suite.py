"""The whole built-in suite end to end in simulation mode (about a second of CPU for all of it).

Every scenario file shipped in scenarios/ and its sub-folders (scenarios/extended/ ...) passes
on the reference client, judged exactly: each invariant either passes or could not be judged,
never fails, and liveness and the process verdict are judged and pass. Each planted-bug mutant
fails at least one of the scenarios written for the failure it models, on an invariant its bug
is expected to break. New scenario files are picked up by the glob.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.client.mutants import EXPECTED_INVARIANTS, MUTANTS
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario, scenario_files
from harness.world import RunOptions, run_scenario

ROOT = builtin_scenarios_dir()
SUITES = [ROOT, *sorted(p for p in ROOT.iterdir() if p.is_dir())]
FILES = scenario_files(SUITES)

# Which scenarios each planted bug is "named for": the rows of the failure-mode table
# (shared/reference/gateway-protocol.md section 15, a scenario's `source`) its docstring in
# harness/client/mutants.py cites, or a tag. stale-resume-seq models no row of its own: a stale
# seq in RESUME is what every resume scenario exercises.
NAMED_FOR: dict[str, dict[str, frozenset[str]]] = {
    "heartbeat-dies-on-tls-reset": {"source": frozenset({"seed"})},
    "stale-resume-seq": {"tag": frozenset({"resume"})},
    "close-1000-on-op7": {"source": frozenset({"F16"})},
    "no-zombie-detection": {"source": frozenset({"F11", "F18"})},
    "identify-storm-after-op9": {"source": frozenset({"F1", "F19"})},
    "stale-heartbeat-timer": {"source": frozenset({"F6", "F8"})},
    "stuck-on-stale-resume-url": {"source": frozenset({"F12"})},
    "new-session-id-not-stored": {"source": frozenset({"F9"})},
    # the real-world catalogue's rows (issue 13): the upstream report each bug was found in
    "op9-after-resume-fatal": {"source": frozenset({"bwmarrin/discordgo#544"})},
    "heartbeats-stop-after-missed-ack": {"source": frozenset({"twilight-rs/twilight#1964"})},
    "reuses-zlib-inflater": {"source": frozenset({"abalabahaha/eris#1364"})},
    "reconnect-loop-no-backoff": {"source": frozenset({"discordjs/discord.js#9510"})},
}
# Bugs that need two faults in a row: no built-in scenario is named for them; they exist to show
# that a fuzz campaign finds what the suite misses (tests/test_fuzz_real.py).
FOUND_ONLY_BY_FUZZING = frozenset({"forgets-session-on-second-drop"})


def named_for(mutant: str, scenarios: list[Scenario]) -> list[Scenario]:
    sel = NAMED_FOR[mutant]
    return [s for s in scenarios
            if set(s.source.split(", ")) & sel.get("source", frozenset())
            or set(s.tags) & sel.get("tag", frozenset())]


def run(scenario: Scenario, client: str = "reference") -> ScenarioResult:
    return run_scenario(scenario, RunOptions(mode="sim", client=client))


def test_the_suite_is_all_there() -> None:
    # every scenario file under scenarios/ is run, the extended suite included
    assert set(FILES) == set(ROOT.glob("**/*.toml"))
    assert any(f.parent.name == "extended" for f in FILES)
    names = [load_scenario(f).name for f in FILES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_the_reference_client_passes_the_scenario_in_simulation(path: Path) -> None:
    result = run(load_scenario(path))
    assert result.error is None, result.error
    statuses = {v.invariant: v.status for v in result.verdicts}
    failed = {v.invariant: v.evidence for v in result.verdicts if v.status == "fail"}
    assert not failed, failed
    assert set(statuses.values()) <= {"pass", "not_judged"}
    # recovery and the client process are judged in every scenario, and hold
    assert statuses["LV1"] == "pass", [v for v in result.verdicts if v.invariant == "LV1"]
    assert statuses["PR1"] == "pass"
    assert result.outcome == "PASS"


def test_every_mutant_is_named_for_scenarios_that_exist() -> None:
    assert set(NAMED_FOR) | FOUND_ONLY_BY_FUZZING == set(MUTANTS)
    scenarios = [load_scenario(f) for f in FILES]
    for mutant in NAMED_FOR:
        assert named_for(mutant, scenarios), f"{mutant}: no scenario is named for its bug"


@pytest.mark.parametrize("mutant", sorted(NAMED_FOR))
def test_each_mutant_fails_a_scenario_named_for_its_bug(mutant: str) -> None:
    tried = []
    for scenario in named_for(mutant, [load_scenario(f) for f in FILES]):
        result = run(scenario, mutant)
        assert result.error is None, (scenario.name, result.error)
        if set(result.failed_invariants) & EXPECTED_INVARIANTS[mutant]:
            return  # found, on an invariant the bug is expected to break
        tried.append((scenario.name, result.failed_invariants))
    pytest.fail(f"{mutant} broke none of {sorted(EXPECTED_INVARIANTS[mutant])} in any scenario "
                f"named for its bug: {tried}")
