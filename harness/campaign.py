"""The fuzz campaign engine: Hypothesis campaigns of generated disconnect schedules, in sim mode.

``run_campaign(CampaignConfig(...))`` generates schedules (``harness.schedules``), runs each against
the chosen client in the simulated world and judges it. A failing schedule is shrunk by
Hypothesis, then (with ``out_dir``) written as a scenario TOML file with its run seed, next to its
trace and an HTML report (``write_failure``). ``gateway-harness fuzz`` and ``replay`` are its
command line (``harness/cli/fuzz.py``); ``bench/bench_sim.py`` measures it.

The Hypothesis example database (``.hypothesis/`` by default) keeps every failure found, so the
next campaign against the same client tries it first.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway_common.errors import UserError
from gateway_common.facts import OP_HELLO
from harness.oracle import invariant_title
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, load_scenario
from harness.schedules import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_FAULTS,
    ScheduleLimits,
    make_schedule,
    run_schedule,
    schedule_id,
    schedules,
    write_scenario,
)

DEFAULT_OUT = "fuzz-failures"
DEFAULT_DATABASE = ".hypothesis"
CLIENT_TAG_PREFIX = "client."


# ---- the campaign --------------------------------------------------------------------------------


class ScheduleFailed(AssertionError):
    """A generated schedule broke an invariant (one subclass per invariant, see below)."""

    invariant = "?"

    def __init__(self, message: str, scenario: Scenario, result: ScenarioResult) -> None:
        super().__init__(message)
        self.scenario = scenario
        self.result = result


_FAILURE_TYPES: dict[str, type[ScheduleFailed]] = {}


def failure_type(invariant: str) -> type[ScheduleFailed]:
    """One exception class per invariant: Hypothesis shrinks each distinct failure on its own and
    never 'slips' from one invariant's counterexample to another's when reporting them."""
    if invariant not in _FAILURE_TYPES:
        name = f"{invariant}Violated" if invariant != "ERROR" else "RunBroke"
        _FAILURE_TYPES[invariant] = type(name, (ScheduleFailed,), {"invariant": invariant})
    return _FAILURE_TYPES[invariant]


@dataclass
class CampaignConfig:
    examples: int = 100
    seed: int = 0
    client: str = "reference"
    horizon: float = DEFAULT_HORIZON
    max_faults: int = DEFAULT_MAX_FAULTS
    tls: bool | None = None
    out_dir: Path | None = Path(DEFAULT_OUT)
    database: Path | None = Path(DEFAULT_DATABASE)
    shrink_time: float = 120.0
    multiple_bugs: bool = False
    keep_going: bool = False  # survey: count every failing schedule, shrink none
    # Differential mode: a schedule counts as failing only if this client passes it (so a
    # mutant campaign finds the planted bug, not schedules the oracle flags for every client).
    baseline: str | None = None
    fault_kinds: tuple[str, ...] | None = None  # only these kinds (harness.schedules.FAULT_KINDS)


@dataclass
class FoundFailure:
    invariant: str
    scenario: Scenario
    result: ScenarioResult
    evidence: str
    found_after: float  # s from the campaign's start to the first failing example
    shrunk_after: float  # s from the campaign's start to the end of shrinking
    small_after: float | None = None  # s to the first failing example with <= 3 faults
    transcript_hash: str = ""
    scenario_path: Path | None = None
    report_path: Path | None = None

    @property
    def faults(self) -> int:
        return len(self.scenario.steps)


@dataclass
class CampaignResult:
    config: CampaignConfig
    examples_run: int = 0
    failing_runs: int = 0
    baseline_failed: int = 0
    duration: float = 0.0
    failures: list[FoundFailure] = field(default_factory=list)
    invariants_failed: dict[str, int] = field(default_factory=dict)
    # keep_going: every failing schedule, in the order found (not shrunk)
    all_failures: list[tuple[str, Scenario, str]] = field(default_factory=list)


ProgressHook = Callable[[str, "CampaignStats"], None]


@dataclass
class CampaignStats:
    started: float
    runs: int = 0
    failing: int = 0
    first_failure_at: dict[str, float] = field(default_factory=dict)
    smallest: dict[str, int] = field(default_factory=dict)  # invariant -> fewest faults seen
    small_at: dict[str, float] = field(default_factory=dict)  # first failure with <= 3 faults
    sim_seconds: float = 0.0
    baseline_failed: int = 0  # failing schedules the baseline client failed too (not counted)
    surveyed: list[tuple[str, Scenario, ScenarioResult, str]] = field(default_factory=list)


def _first_failed(result: ScenarioResult) -> tuple[str, str] | None:
    """(invariant, evidence) of the first failed verdict, or ("ERROR", why) if the run broke."""
    if result.error is not None:
        return "ERROR", result.error
    for verdict in result.verdicts:
        if verdict.status == "fail":
            return verdict.invariant, verdict.evidence
    return None


def run_campaign(config: CampaignConfig, progress: ProgressHook | None = None) -> CampaignResult:
    """Run a Hypothesis campaign and return what it found (shrunk); writes files if out_dir."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
    from hypothesis.database import DirectoryBasedExampleDatabase
    from hypothesis.internal.conjecture import engine

    check_client(config.client)
    if config.baseline is not None:
        check_client(config.baseline)
    stats = CampaignStats(started=time.monotonic())
    limits = _limits(config)
    strategy = schedules(limits.horizon, max_faults=limits.max_faults, tls=config.tls,
                         kinds=config.fault_kinds)

    def check(scenario: Scenario) -> None:
        result = run_schedule(scenario, config.client)
        stats.runs += 1
        stats.sim_seconds += _sim_seconds(result)
        for label, value in coverage(result.records).items():
            target(value, label=label)
        failed = _first_failed(result)
        if failed is None:
            if progress:
                progress("run", stats)
            return
        invariant, evidence = failed
        if not _baseline_passes(scenario, config, stats):
            stats.baseline_failed += 1
            return
        stats.failing += 1
        stats.first_failure_at.setdefault(invariant, time.monotonic() - stats.started)
        faults = len(scenario.steps)
        stats.smallest[invariant] = min(stats.smallest.get(invariant, faults), faults)
        if faults <= 3:
            stats.small_at.setdefault(invariant, time.monotonic() - stats.started)
        if progress:
            progress("fail", stats)
        if config.keep_going:
            stats.surveyed.append((invariant, scenario, result, evidence))
            return
        raise failure_type(invariant)(f"{invariant}: {evidence}", scenario, result)

    database = (
        DirectoryBasedExampleDatabase(str(config.database / "examples"))
        if config.database is not None
        else None
    )
    # Set the seed on the inner function rather than with @seed(), which would switch the
    # example database off: we want both a reproducible campaign and the database.
    check._hypothesis_internal_use_seed = config.seed  # type: ignore[attr-defined]
    test = settings(
        max_examples=config.examples,
        deadline=None,
        database=database,
        derandomize=False,
        # A survey counts distinct generated schedules: no targeted mutation of earlier ones.
        phases=(Phase.explicit, Phase.reuse, Phase.generate)
        if config.keep_going
        else (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=config.multiple_bugs,
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(given(strategy)(check))
    # One database entry per client and schedule shape, so a failure found against one mutant
    # is not replayed first against another.
    key = (f"gateway-harness fuzz:{config.client}:{config.horizon}:{config.max_faults}:"
           f"{config.tls}:{','.join(config.fault_kinds or ())}")
    test._hypothesis_internal_database_key = hashlib.sha256(key.encode()).digest()  # type: ignore[attr-defined]

    raised: list[ScheduleFailed] = []
    saved_limit = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = int(config.shrink_time)  # documented as monkeypatchable
    try:
        test()
    except ScheduleFailed as exc:
        raised.append(exc)
    except BaseExceptionGroup as group:
        matched, rest = group.split(ScheduleFailed)
        if rest is not None:
            raise rest from None
        if matched is not None:
            raised.extend(_leaves(matched))
    finally:
        engine.MAX_SHRINKING_SECONDS = saved_limit
    finished = time.monotonic() - stats.started
    outcome = CampaignResult(config, examples_run=stats.runs, failing_runs=stats.failing,
                             duration=finished, baseline_failed=stats.baseline_failed)
    if config.keep_going:
        outcome.all_failures = [(inv, sc, ev) for inv, sc, _, ev in stats.surveyed]
        # Report the smallest failing schedule of each invariant (unshrunk).
        smallest: dict[str, tuple[str, Scenario, ScenarioResult, str]] = {}
        for entry in stats.surveyed:
            best = smallest.get(entry[0])
            if best is None or len(entry[1].steps) < len(best[1].steps):
                smallest[entry[0]] = entry
        raised = [failure_type(inv)(f"{inv}: {ev}", sc, res)
                  for inv, sc, res, ev in smallest.values()]
        if config.out_dir is not None and stats.surveyed:
            config.out_dir.mkdir(parents=True, exist_ok=True)
            survey_dir = config.out_dir / "survey"
            survey_dir.mkdir(exist_ok=True)
            with open(config.out_dir / "survey.txt", "w", encoding="utf-8") as f:
                for n, (inv, sc, _, ev) in enumerate(stats.surveyed, 1):
                    path = survey_dir / f"{n:03d}-{inv.lower()}.toml"
                    write_scenario(replace(sc, name=f"survey-{n:03d}-{inv.lower()}",
                                           tags=("fuzz", f"{CLIENT_TAG_PREFIX}{config.client}")),
                                   path, comments=(f"{inv} failed: {ev[:300]}",))
                    steps = "; ".join(step.describe() for step in sc.steps)
                    f.write(f"{path.name}\t{inv}\t{ev}\n\t{steps}\n")
    if not config.keep_going:
        raised = [_polish(failed, config, stats) for failed in raised]
        finished = time.monotonic() - stats.started
        outcome.duration = finished
    for failed in raised:
        invariant = failed.invariant
        outcome.invariants_failed[invariant] = outcome.invariants_failed.get(invariant, 0) + 1
        failure = FoundFailure(
            invariant=invariant,
            scenario=failed.scenario,
            result=failed.result,
            evidence=str(failed).split(": ", 1)[-1],
            found_after=stats.first_failure_at.get(invariant, finished),
            shrunk_after=finished,
            small_after=stats.small_at.get(invariant),
        )
        if config.out_dir is not None:
            write_failure(failure, config.client, config.out_dir)
        else:
            from harness.world import transcript_hash

            failure.transcript_hash = transcript_hash(failure.result.records)
        outcome.failures.append(failure)
    return outcome


def coverage(records: list[dict[str, Any]]) -> dict[str, float]:
    """Black-box fault coverage of one run, for Hypothesis's targeted search: how many
    connections the client opened, how many were lost in each phase (before TLS finished,
    before the WebSocket upgrade, before READY/RESUMED, or live), and how many waited for a
    held-back HELLO (the window in which a stale timer from the old socket can fire)."""
    opened: dict[int, str] = {}
    upgraded_at: dict[int, float] = {}
    held_hello = 0
    lost = {"tls": 0, "upgrade": 0, "session": 0, "live": 0}
    for rec in records:
        kind, conn = rec.get("kind"), rec.get("conn")
        if not isinstance(conn, int):
            continue
        if kind == "conn_open":
            opened[conn] = "tls"
        elif kind == "tls_done" and opened.get(conn) == "tls":
            opened[conn] = "upgrade"
        elif kind == "ws_upgrade":
            opened[conn] = "session"
            upgraded_at[conn] = float(rec["ts"])
        elif kind == "frame_out" and rec.get("op") == OP_HELLO and conn in upgraded_at:
            held_hello += float(rec["ts"]) - upgraded_at.pop(conn) >= 0.1
        elif kind == "frame_out" and rec.get("t") in ("READY", "RESUMED"):
            opened[conn] = "live"
        elif kind == "conn_close" and conn in opened:
            lost[opened.pop(conn)] += 1
    out = {f"connections lost before {phase}" if phase != "live" else "live connections lost":
           float(n) for phase, n in lost.items()}
    out["connections"] = float(sum(1 for r in records if r.get("kind") == "conn_open"))
    out["connections waiting for a held-back HELLO"] = float(held_hello + len(upgraded_at))
    return out


def _polish(failed: ScheduleFailed, config: CampaignConfig, stats: CampaignStats) -> ScheduleFailed:
    """Delete any step the failure does not need (greedy, one run per step).

    Hypothesis's shrinker sometimes keeps a step that does nothing (a reset at 0 s, before any
    connection), because removing it shifts trio's seeded task shuffle and so the timing of
    everything else; trying each deletion once more after shrinking cleans that up.
    """
    best = failed
    i = 0
    while i < len(best.scenario.steps) and len(best.scenario.steps) > 1:
        steps = [st for j, st in enumerate(best.scenario.steps) if j != i]
        candidate = make_schedule(steps, seed=best.scenario.seed or 0,
                                  gateway=best.scenario.gateway, limits=_limits(config))
        result = run_schedule(candidate, config.client)
        stats.runs += 1
        got = _first_failed(result)
        if got is not None and got[0] == best.invariant and _baseline_passes(candidate, config,
                                                                             stats):
            best = failure_type(best.invariant)(f"{got[0]}: {got[1]}", candidate, result)
        else:
            i += 1
    return best


def _baseline_passes(scenario: Scenario, config: CampaignConfig, stats: CampaignStats) -> bool:
    if config.baseline is None:
        return True
    stats.runs += 1
    return _first_failed(run_schedule(scenario, config.baseline)) is None


def _limits(config: CampaignConfig) -> ScheduleLimits:
    return ScheduleLimits(horizon=config.horizon, max_faults=config.max_faults)


def _leaves(group: BaseExceptionGroup[Any]) -> list[ScheduleFailed]:
    out: list[ScheduleFailed] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        elif isinstance(exc, ScheduleFailed):
            out.append(exc)
    return out


def _sim_seconds(result: ScenarioResult) -> float:
    return max((float(r.get("ts", 0.0)) for r in result.records[-1:]), default=0.0)


def check_client(client: str) -> None:
    """Fuzzing and replay run in sim mode: only the reference client or a mutant will do."""
    from harness.world_clients import known_reference_clients

    known = known_reference_clients()
    if client not in known:
        raise UserError(
            f"--client: {client!r} is not the reference client or a planted-bug mutant "
            f"(fuzzing runs in simulation mode; known: {', '.join(known)})"
        )


def failure_name(client: str, invariant: str, scenario: Scenario) -> str:
    return f"fuzz-{client}-{invariant.lower()}-{schedule_id(scenario)}"


def write_failure(failure: FoundFailure, client: str, out_dir: Path) -> None:
    """Write the shrunk schedule as a scenario file, then replay it to write its trace and report.

    The replay must fail the same way: if it does not, the run is not deterministic, which is a
    harness bug worth saying out loud.
    """
    from harness.report.html import write_html
    from harness.world import transcript_hash

    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = failure.scenario
    name = failure_name(client, failure.invariant, scenario)
    title = invariant_title(failure.invariant, failure.invariant)
    description = (
        f"Found by gateway-harness fuzz against the {client} client: {failure.invariant} "
        f"({title}). {scenario.description}"
    )
    scenario = replace(
        scenario,
        name=name,
        description=description,
        tags=("fuzz", f"{CLIENT_TAG_PREFIX}{client}", failure.invariant.lower()),
    )
    path = write_scenario(
        scenario,
        out_dir / f"{name}.toml",
        comments=(
            f"Replay: gateway-harness replay {out_dir / (name + '.toml')}",
            f"{failure.invariant} failed: {failure.evidence[:300]}",
        ),
    )
    replayed = run_schedule(load_scenario(path), client, out_dir=out_dir)
    failure.scenario = replace(scenario, path=path)
    failure.scenario_path = path
    failure.transcript_hash = transcript_hash(replayed.records)
    failed = _first_failed(replayed)
    if failed is None or failed[0] != failure.invariant:
        got = failed[0] if failed else "nothing"
        print(f"gateway-harness fuzz: warning: replaying {path} failed {got}, not "
              f"{failure.invariant}: the run is not deterministic", file=sys.stderr)
    else:
        failure.result = replayed
    failure.report_path = write_html(
        [replayed], out_dir / f"{name}.html",
        title=f"gateway-harness fuzz: {failure.invariant} against {client}",
        meta={"mode": "sim", "client": client, "seed": scenario.seed},
    )


def replay_client(scenario: Scenario, explicit: str | None) -> str:
    if explicit:
        return explicit
    for tag in scenario.tags:
        if tag.startswith(CLIENT_TAG_PREFIX):
            return tag[len(CLIENT_TAG_PREFIX):]
    return "reference"
