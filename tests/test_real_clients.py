"""Every built-in real client (harness/adapters/registry.py) through one scenario end to end, as
`gateway-harness validate` runs it (wall clock, wss with the generated CA, behind the fault
proxies), judged: every invariant's status is checked exactly, so a verdict that turns into
not_judged is caught as surely as one that fails.

Clients install on first use into the machine's clients dir (conftest's ``install_client``); an
install that fails skips the test, and fails it in CI. Library bugs confirmed by reading the
library's code are in ``KNOWN_BUGS``: the run's other verdicts are still checked exactly, and the
buggy invariant is a strict xfail, so a fixed library is noticed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from harness.adapters.contract import Adapter
from harness.adapters.registry import ADAPTERS
from harness.oracle import INVARIANTS
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario
from harness.world import RunOptions, run_scenario

pytestmark = pytest.mark.timeout(300)

BASELINE = "baseline-steady"
# What baseline-steady judges; every other invariant has nothing to judge there (no faults, no
# op 1 from the server, no RESUME, no close).
BASELINE_PASSES = frozenset({"HB1", "HB2", "HB3", "RS3", "BO1", "BO2", "RL1", "LV1", "PR1"})

# Clients on their own heartbeat clock get the real 41.25 s HELLO interval, so baseline-steady's
# 4.5 s would end before their first beat and judge no heartbeat invariant. midjourney beats 10 s
# after it opens, then every 40 s (libs/discord.ws.js open() and heartbeat()): 20 s sees its
# first beat with 10 s to spare; 60 s sees the second (50 s) too, so HB2 judges a real gap.
OWN_CLOCK_DURATION = {"midjourney": 20.0}
OWN_CLOCK_LONG_DURATION = {"midjourney": 60.0}

# (client, scenario) -> {invariant: why it fails}, each read in the library's code.
KNOWN_BUGS: dict[tuple[str, str], dict[str, str]] = {
    ("midjourney", BASELINE): {
        "HB3": "midjourney 4.3.18 sends `{op: 1, d: ++this.heartbeatInterval}`, a beat counter "
               "reset on each open, not the last seq (libs/discord.ws.js heartbeat())",
    },
}

RunFn = Callable[[str, bool], ScenarioResult]


def baseline_for(adapter: Adapter, long: bool) -> Scenario:
    scenario = load_scenario(builtin_scenarios_dir() / f"{BASELINE}.toml")
    # validate's default (--tls on): real clients meet the gateway over TLS, as in production
    scenario = dataclasses.replace(
        scenario, gateway=dataclasses.replace(scenario.gateway, tls=True))
    if not adapter.honours_hello_interval:
        durations = OWN_CLOCK_LONG_DURATION if long else OWN_CLOCK_DURATION
        scenario = dataclasses.replace(
            scenario, expect=dataclasses.replace(scenario.expect, duration=durations[adapter.name]))
    return scenario


@pytest.fixture(scope="module")
def run_baseline(install_client: Callable[[str], Adapter],
                 tmp_path_factory: pytest.TempPathFactory) -> RunFn:
    """Run a client through baseline-steady (``long``: two beats for a client on its own clock);
    one run per client and length, shared by its verdict test and its known-bug tests."""
    runs: dict[tuple[str, bool], ScenarioResult] = {}

    def run(name: str, long: bool) -> ScenarioResult:
        if (name, long) not in runs:
            adapter = install_client(name)
            out_dir = tmp_path_factory.mktemp(f"{name}-{BASELINE}")
            runs[name, long] = run_scenario(
                baseline_for(adapter, long),
                RunOptions(mode="real", client=name, adapter=adapter, out_dir=out_dir))
        return runs[name, long]
    return run


def expected_verdicts(passes: frozenset[str]) -> dict[str, str]:
    return {inv.code: "pass" if inv.code in passes else "not_judged" for inv in INVARIANTS}


def assert_verdicts(result: ScenarioResult, passes: frozenset[str], known: dict[str, str]) -> None:
    assert result.error is None, f"{result.client}: the run broke: {result.error}\n" \
                                 f"{result.stderr_tail}"
    got = {v.invariant: v.status for v in result.verdicts if v.invariant not in known}
    want = {k: v for k, v in expected_verdicts(passes).items() if k not in known}
    wrong = [f"  {v.invariant} {v.status} (want {want.get(v.invariant)}): {v.evidence}"
             for v in result.verdicts
             if v.invariant not in known and v.status != want.get(v.invariant)]
    assert got == want, (f"{result.client} on {result.name}:\n" + "\n".join(wrong)
                         + f"\ntrace: {result.trace_path}\nstderr tail:\n{result.stderr_tail}")


def known_bug_cases(long: bool) -> list[object]:
    cases = []
    for (client, _scenario), bugs in KNOWN_BUGS.items():
        if long and ADAPTERS[client].honours_hello_interval:
            continue  # the long run is only for clients on their own clock
        for code, reason in bugs.items():
            # raises=AssertionError: only "still not pass" is expected; a run that no longer
            # judges the invariant (pytest.fail below) is a real failure
            cases.append(pytest.param(client, code, id=f"{client}-{code}", marks=pytest.mark.xfail(
                strict=True, raises=AssertionError, reason=reason)))
    return cases


def check_known_bug(result: ScenarioResult, invariant: str) -> None:
    """Strictly xfailed: passes, failing the suite, once the library is fixed."""
    verdict = next(v for v in result.verdicts if v.invariant == invariant)
    if verdict.status == "not_judged":
        pytest.fail(f"{invariant} was not judged, so the run no longer shows the library's bug: "
                    f"{verdict.evidence}")
    assert verdict.status == "pass", verdict.evidence


# ---- the default run: every client once ----------------------------------------------------------

@pytest.mark.parametrize("client", list(ADAPTERS))
def test_every_built_in_client_passes_baseline_steady(client: str, run_baseline: RunFn) -> None:
    result = run_baseline(client, False)
    assert_verdicts(result, BASELINE_PASSES, KNOWN_BUGS.get((client, BASELINE), {}))


@pytest.mark.parametrize(("client", "invariant"), known_bug_cases(long=False))
def test_known_library_bug(client: str, invariant: str, run_baseline: RunFn) -> None:
    check_known_bug(run_baseline(client, False), invariant)


def test_every_client_on_its_own_clock_has_a_duration_that_fits() -> None:
    own_clock = {name for name, spec in ADAPTERS.items() if not spec.honours_hello_interval}
    assert set(OWN_CLOCK_DURATION) == own_clock == set(OWN_CLOCK_LONG_DURATION)


# ---- slow: clients on their own clock, long enough for two beats ---------------------------------

OWN_CLOCK = [name for name, spec in ADAPTERS.items() if not spec.honours_hello_interval]


@pytest.mark.slow
@pytest.mark.parametrize("client", OWN_CLOCK)
def test_a_client_on_its_own_clock_passes_a_baseline_with_two_beats(
        client: str, run_baseline: RunFn) -> None:
    result = run_baseline(client, True)
    assert_verdicts(result, BASELINE_PASSES, KNOWN_BUGS.get((client, BASELINE), {}))
    beats = [r for r in result.records if r.get("kind") == "frame_in" and r.get("op") == 1]
    assert len(beats) >= 2, "HB2 judged no beat-to-beat gap"


@pytest.mark.slow
@pytest.mark.parametrize(("client", "invariant"), known_bug_cases(long=True))
def test_known_library_bug_on_the_long_run(
        client: str, invariant: str, run_baseline: RunFn) -> None:
    check_known_bug(run_baseline(client, True), invariant)


# ---- slow: library bugs found by the validation suite, pinned ------------------------------------

LOOP_SCENARIO = "extended/offline-reconnect-loop-15s"


@pytest.mark.slow
@pytest.mark.parametrize(("client", "loops"), [("disnake", True), ("discord.py", False)])
def test_a_reconnect_loop_on_connection_resets_fails_bo1(
        client: str, loops: bool, install_client: Callable[[str], Adapter],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """disnake 2.12.2's `Client.connect` RESUMEs again at once on ECONNRESET, skipping the
    backoff every other error gets: hundreds of attempts a second while every connection is
    reset. discord.py 2.7.1, whose code it forked, backs off. Strict: a fixed disnake passes BO1
    here and fails this test, so the README matrix gets updated."""
    adapter = install_client(client)
    scenario = load_scenario(builtin_scenarios_dir() / f"{LOOP_SCENARIO}.toml")
    result = run_scenario(scenario, RunOptions(mode="real", client=client, adapter=adapter,
                                               out_dir=tmp_path_factory.mktemp(client)))
    assert result.error is None, result.error
    bo1 = next(v for v in result.verdicts if v.invariant == "BO1")
    attempts = sum(1 for r in result.records if r.get("kind") == "conn_open")
    if loops:
        assert bo1.status == "fail" and "storm" in bo1.evidence, bo1.evidence
        assert attempts > 100, attempts
    else:
        assert bo1.status == "pass", bo1.evidence
        assert attempts < 20, attempts
    lv1 = next(v for v in result.verdicts if v.invariant == "LV1")
    assert lv1.status == "pass", lv1.evidence  # both come back once the resets stop
