"""The fuzz campaign engine: Hypothesis campaigns of generated disconnect schedules, in sim mode.

``run_campaign(CampaignConfig(...))`` generates schedules (``harness.schedules``), runs each against
the chosen client in the simulated world and judges it. A failing schedule is shrunk by
Hypothesis, then (with ``out_dir``) written as a scenario TOML file with its run seed, next to its
trace and an HTML report (``write_failure``). ``gateway-harness fuzz`` and ``replay`` are its
command line (``harness/cli/fuzz.py``); ``bench/bench_sim.py`` measures it.

The Hypothesis example database (``.hypothesis/`` by default) keeps every failure found, so the
next campaign against the same client tries it first. It is a folder or a Redis server
(``redis://HOST:PORT/DB``, shared by several machines); ``shared_database`` adds one that is only
read (a team's CI writes it, people replay its findings without writing theirs into it).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway_common.errors import UserError
from gateway_common.facts import OP_HELLO
from harness.oracle import invariant_title
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, load_scenario
from harness.schedules import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_DURATION,
    DEFAULT_MAX_FAULT_TIME,
    DEFAULT_MAX_FAULTS,
    ScheduleLimits,
    make_schedule,
    run_schedule,
    schedule_id,
    schedules,
    write_scenario,
)

if TYPE_CHECKING:
    from harness.world import RunOptions

DEFAULT_OUT = "fuzz-failures"
SIM_SHRINK_TIME = 120.0
# wall-clock campaigns
DEFAULT_TIME_BUDGET = 600.0  # s of search
DEFAULT_CONFIRM = 5  # runs of a finding's minimal schedule
DEFAULT_REAL_SHRINK_TIME = 300.0
WALLCLOCK_DATABASE = "wallclock"  # under --database: minimal schedules of earlier findings
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
    # the longest single fault; a longer one (a 15 s outage) lets a reconnect loop show 20 waits
    max_duration: float = DEFAULT_MAX_DURATION
    tls: bool | None = None
    out_dir: Path | None = Path(DEFAULT_OUT)
    database: Path | str | None = Path(DEFAULT_DATABASE)  # a folder or a redis:// URL
    shared_database: Path | str | None = None  # read, never written: the team's (CI's) one
    shrink_time: float = SIM_SHRINK_TIME  # wall clock: DEFAULT_REAL_SHRINK_TIME
    multiple_bugs: bool = False
    keep_going: bool = False  # survey: count every failing schedule, shrink none
    # Differential mode: a schedule counts as failing only if this client passes it (so a
    # mutant campaign finds the planted bug, not schedules the oracle flags for every client).
    baseline: str | None = None
    fault_kinds: tuple[str, ...] | None = None  # only these kinds (harness.schedules.FAULT_KINDS)
    # Wall-clock mode ("real"): real TCP and TLS on loopback, the client under test a process
    # (``adapter``: harness.adapters.contract.Adapter) or, without one, ``client`` in-process.
    mode: str = "sim"
    adapter: Any = None
    jobs: int = 1  # worlds at once, each in its own worker process with its own ports
    time_budget: float | None = None  # s of search (real mode); None: until --examples
    confirm: int = DEFAULT_CONFIRM  # runs of a finding's minimal schedule: its reproduction rate
    interval: float = 1.0  # s: the heartbeat interval the client honours (schedules scale by it)
    startup_timeout: float | None = None  # real mode: the world's own default when None
    replay: tuple[str, ...] = ()  # the `gateway-harness validate` flags naming the client


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
    # wall-clock findings
    shrunk: bool = True
    found_faults: int | None = None  # faults in the generated schedule that first failed
    reproduced: int | None = None  # confirming runs that failed the same invariant ...
    confirm_runs: int = 0  # ... of these
    baseline_passed: bool | None = None  # the baseline client on the minimal schedule
    notes: list[str] = field(default_factory=list)  # unshrunk, unconfirmed, ...
    bundle_path: Path | None = None

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
    # wall-clock campaigns
    examples_done: int = 0  # generated schedules run to the end
    errors: int = 0  # runs that broke (no verdict to trust): not findings
    interrupted: bool = False  # Ctrl-C: findings so far, perhaps unshrunk or unconfirmed
    budget_spent: bool = False  # the search stopped at --time-budget


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
    # wall-clock campaigns (progress: examples, phase, ETA)
    phase: str = "search"  # search | shrink | confirm
    examples_total: int = 0
    examples_submitted: int = 0
    examples_done: int = 0
    errors: int = 0
    budget_spent: bool = False
    time_budget: float | None = None


def _first_failed(result: ScenarioResult) -> tuple[str, str] | None:
    """(invariant, evidence) of the first failed verdict, or ("ERROR", why) if the run broke."""
    if result.error is not None:
        return "ERROR", result.error
    for verdict in result.verdicts:
        if verdict.status == "fail":
            return verdict.invariant, verdict.evidence
    return None


def run_campaign(config: CampaignConfig, progress: ProgressHook | None = None) -> CampaignResult:
    """Run a Hypothesis campaign and return what it found (shrunk); writes files if out_dir
    (in wall-clock mode, one bug bundle per finding)."""
    if config.mode == "real":
        return _run_real_campaign(config, progress)
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
    from hypothesis.internal.conjecture import engine

    check_client(config.client)
    if config.baseline is not None:
        check_client(config.baseline)
    stats = CampaignStats(started=time.monotonic())
    limits = _limits(config)
    strategy = schedules(limits.horizon, max_faults=limits.max_faults, tls=config.tls,
                         max_fault_time=limits.max_fault_time, max_duration=limits.max_duration,
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

    database = example_database(config)
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
    if config.max_duration != DEFAULT_MAX_DURATION:  # (default: the key databases already hold)
        key += f":max_duration={config.max_duration}"
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
    # the faults' total time at least allows one fault of the longest length
    return ScheduleLimits(horizon=config.horizon, max_faults=config.max_faults,
                          max_duration=config.max_duration,
                          max_fault_time=max(DEFAULT_MAX_FAULT_TIME, config.max_duration))


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


# ---- wall-clock campaigns ------------------------------------------------------------------------
#
# `gateway-harness fuzz CLIENT` / `fuzz --command CMD`: the client under test is a process (or the
# reference client or a mutant in-process, with `--mode real`), every run a real world on
# loopback with its own ports. Design:
#
# - One Hypothesis campaign in this process generates the schedules (one campaign seed gives the
#   same schedules whatever --jobs is); each is handed to a pool of --jobs worker processes,
#   each running one world at a time. Hypothesis only generates here: it neither shrinks nor
#   targets, since runs overlap and a wall-clock verdict is not a pure function of the schedule.
# - A failing schedule is a finding only if the baseline client (the reference) passes it.
# - A finding is shrunk by deleting faults it does not need (each candidate one real run, in
#   parallel over the jobs), then its minimal schedule is run again --confirm times: the
#   reproduction rate. Each finding becomes a bug bundle (harness/bundle.py).
# - Ctrl-C: runs in flight are interrupted (each world tears itself down: client process group,
#   listeners, temporary files), and what was found so far is written as bundles, marked
#   unshrunk or unconfirmed.


class _StopSearch(BaseException):
    """Raised inside the Hypothesis test to end generation (not a failure: Hypothesis lets a
    BaseException through without shrinking or reporting it)."""


@dataclass
class RealRun:
    """One wall-clock run handed to the pool: what ran, against which client, and its folder."""

    label: str  # "example 12", "baseline of example 12", "shrink 3", "confirm 2/5", ...
    scenario: Scenario
    client: str  # the client's name in results
    baseline: bool  # run with the baseline client (in-process), not the client under test
    run_dir: Path
    result: ScenarioResult | None = None  # None: interrupted (or not run)

    @property
    def failed(self) -> tuple[str, str] | None:
        return None if self.result is None else _first_failed(self.result)


def _worker_init(stop: Any) -> None:
    # Idle workers ignore Ctrl-C: the campaign interrupts the runs in flight itself, and a run
    # picked up after the stop flag was set is not started at all. SIGTERM (a `kill` of the
    # process group) is taken as Ctrl-C, so the world tears down rather than dying mid-run.
    global _WORKER_STOP
    _WORKER_STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt_self)


def _interrupt_self(signum: int, frame: Any) -> None:
    """SIGTERM as a Ctrl-C: trio (and this module) tear down cleanly on SIGINT."""
    import os

    os.kill(os.getpid(), signal.SIGINT)


_WORKER_STOP: Any = None


def _worker_run(scenario: Scenario, options: RunOptions) -> ScenarioResult | None:
    """Run one world in a worker process; None when interrupted (the world has torn down)."""
    from harness.world import run_scenario

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if _WORKER_STOP is not None and _WORKER_STOP.is_set():
            return None
        return run_scenario(scenario, options)
    except BaseException as exc:
        if _only_interrupts(exc):
            return None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _only_interrupts(exc: BaseException) -> bool:
    """A KeyboardInterrupt, bare or inside trio's nursery ExceptionGroups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


class _RunPool:
    """At most ``jobs`` wall-clock runs at a time, each a world in a worker process."""

    def __init__(self, config: CampaignConfig, work_dir: Path) -> None:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.config = config
        self.jobs = config.jobs
        self.work_dir = work_dir
        self._stop = ctx.Event()
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=config.jobs, mp_context=ctx, initializer=_worker_init,
            initargs=(self._stop,))
        self._futures: dict[Any, RealRun] = {}
        self._count = 0

    @property
    def busy(self) -> int:
        return len(self._futures)

    def submit(self, label: str, scenario: Scenario, *, baseline: bool = False,
               run_dir: Path | None = None) -> RealRun:
        self._count += 1
        client = (self.config.baseline or "reference") if baseline else self.config.client
        run = RealRun(label, scenario, client, baseline,
                      run_dir or self.work_dir / f"run-{self._count:05d}")
        from harness.world import RunOptions

        extra: dict[str, Any] = {}
        if self.config.startup_timeout is not None:
            extra["startup_timeout"] = self.config.startup_timeout
        options = RunOptions(mode="real", client=client, seed=scenario.seed or 0,
                             out_dir=run.run_dir,
                             adapter=None if baseline else self.config.adapter, **extra)
        self._futures[self._pool.submit(_worker_run, scenario, options)] = run
        return run

    def wait(self, timeout: float | None = None) -> list[RealRun]:
        """Block until at least one run finishes (or ``timeout``); the finished runs."""
        import concurrent.futures

        if not self._futures:
            return []
        done, _ = concurrent.futures.wait(list(self._futures), timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        finished = []
        for fut in done:
            run = self._futures.pop(fut)
            try:
                run.result = fut.result()
            except BaseException as exc:  # a broken worker or run: it proves nothing
                run.result = None
                print(f"gateway-harness fuzz: warning: {run.label}: the run broke: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
            finished.append(run)
        return finished

    def run_all(self, runs: list[tuple[str, Scenario, bool, Path | None]],
                into: list[RealRun] | None = None) -> list[RealRun]:
        """Run these (label, scenario, baseline, run_dir) in parallel; the runs, in order.
        ``into`` gets each run as it starts (an interrupt still finds those in flight there)."""
        submitted: list[RealRun] = [] if into is None else into
        pending = list(runs)
        while pending or self.busy:
            while pending and self.busy < self.jobs:
                label, scenario, baseline, run_dir = pending.pop(0)
                submitted.append(self.submit(label, scenario, baseline=baseline, run_dir=run_dir))
            self.wait()
        return submitted

    def interrupt(self) -> list[RealRun]:
        """Stop: runs not started never start, runs in flight tear down; their results (None
        for interrupted ones)."""
        import os

        self._stop.set()
        for process in list(getattr(self._pool, "_processes", {}).values()):
            if process.pid is not None and process.is_alive():
                try:
                    os.kill(process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        finished = []
        while self._futures:
            finished += self.wait()
        return finished

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Finding:
    invariant: str
    evidence: str
    found: RealRun  # the failing run of the generated schedule
    found_at: float  # s from the campaign's start
    scenario: Scenario  # the smallest failing schedule so far
    result: ScenarioResult  # its failing run
    run_dir: Path  # that run's folder
    shrunk: bool = False
    shrink_note: str = ""
    checks: list[RealRun] = field(default_factory=list)  # confirming runs and the baseline's
    shrunk_at: float | None = None

    @property
    def confirms(self) -> list[RealRun]:
        return [run for run in self.checks if not run.baseline]

    @property
    def baseline_check(self) -> RealRun | None:
        return next((run for run in self.checks if run.baseline), None)


def _run_real_campaign(config: CampaignConfig, progress: ProgressHook | None) -> CampaignResult:
    from harness.schedules import wallclock_expect, wallclock_schedule

    if config.keep_going:
        raise UserError("--keep-going: a survey runs in simulation mode only")
    if config.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {config.jobs}")
    if config.confirm < 1:
        raise UserError(f"--confirm: must be at least 1, got {config.confirm}")
    if config.adapter is None:
        check_client(config.client)
    if config.baseline is not None:
        check_client(config.baseline)
    stats = CampaignStats(started=time.monotonic(), examples_total=config.examples,
                          time_budget=config.time_budget)
    limits = _limits(config)
    strategy = schedules(limits.horizon, max_faults=limits.max_faults,
                         max_fault_time=limits.max_fault_time, max_duration=limits.max_duration,
                         tls=True if config.adapter is not None else config.tls,
                         kinds=config.fault_kinds).map(
        lambda sc: wallclock_schedule(sc, limits, config.interval))
    budget_end = (stats.started + config.time_budget if config.time_budget is not None
                  else float("inf"))
    long_run = wallclock_expect(limits, config.interval, until_bound=True).duration
    outcome = CampaignResult(config)
    findings: dict[str, _Finding] = {}
    pending_baselines: dict[int, RealRun] = {}  # id(baseline run) -> the failing example
    interrupted = False

    def tell(event: str) -> None:
        if progress:
            progress(event, stats)

    def settle(run: RealRun) -> None:
        """Account for a finished run of the search."""
        stats.runs += 1
        if run.result is None:
            return
        if run.baseline:
            origin = pending_baselines.pop(id(run))
            failed = origin.failed
            assert failed is not None
            if run.result.passed:
                _add_finding(findings, failed, origin, stats)
                tell("fail")
            else:
                stats.baseline_failed += 1
                shutil.rmtree(origin.run_dir, ignore_errors=True)
            shutil.rmtree(run.run_dir, ignore_errors=True)
            return
        failed = run.failed
        if failed is None and run.result.error is None and _liveness_unsettled(run, long_run):
            # Not live again when the run ended, before LV1's bound ran out: run it again until
            # the bound, so a client that never comes back fails LV1.
            longer = wallclock_schedule(run.scenario, limits, config.interval, until_bound=True)
            shutil.rmtree(run.run_dir, ignore_errors=True)
            pool.submit(f"{run.label} (until LV1's bound)", longer)
            return
        if not run.label.startswith("earlier"):  # the database's findings are no examples
            stats.examples_done += 1
        if run.result.error is not None or failed is None:
            stats.errors += run.result.error is not None
            shutil.rmtree(run.run_dir, ignore_errors=True)
            tell("run")
            return
        stats.failing += 1
        if config.baseline is None:
            _add_finding(findings, failed, run, stats)
            tell("fail")
            return
        baseline = pool.submit(f"baseline of {run.label}", run.scenario, baseline=True)
        pending_baselines[id(baseline)] = run
        tell("run")

    def enough() -> bool:
        if time.monotonic() >= budget_end:
            stats.budget_spent = True
            return True
        return bool(findings) and not config.multiple_bugs

    def submit_example(label: str, scenario: Scenario) -> None:
        pool.submit(label, scenario)
        while pool.busy >= pool.jobs:
            for run in pool.wait():
                settle(run)

    def check(scenario: Scenario) -> None:
        if enough():
            raise _StopSearch
        stats.examples_submitted += 1
        submit_example(f"example {stats.examples_submitted}", scenario)

    work_dir = Path(tempfile.mkdtemp(prefix="gateway-harness-fuzz-"))
    try:
        with _sigterm_interrupts():
            pool = _RunPool(config, work_dir)
            try:
                tell("run")
                for n, known in enumerate(_known_findings(config), 1):
                    if enough():
                        break
                    submit_example(f"earlier finding {n}", known)
                if not enough():
                    _hypothesis_search(check, strategy, config)
                while pool.busy:  # the runs in flight finish (they may be findings too)
                    for run in pool.wait():
                        settle(run)
                stats.phase = "shrink"
                if findings:
                    tell("run")
                shrink_end = time.monotonic() + config.shrink_time
                for finding in findings.values():
                    _shrink_real(finding, pool, config, shrink_end, stats, tell)
                stats.phase = "confirm"
                if findings:
                    tell("run")
                for finding in findings.values():
                    _confirm_real(finding, pool, config, stats, tell)
            except KeyboardInterrupt:
                interrupted = True
                with _sigint_ignored():
                    for run in pool.interrupt():  # what finished as it stopped still counts
                        if run.result is None or stats.phase != "search":
                            continue
                        origin = pending_baselines.get(id(run)) if run.baseline else None
                        if origin is not None and run.result.passed and origin.failed:
                            _add_finding(findings, origin.failed, origin, stats)
                        elif not run.baseline and config.baseline is None and run.failed:
                            _add_finding(findings, run.failed, run, stats)
            finally:
                with _sigint_ignored():
                    pool.close()
            with _sigint_ignored():  # the bundles are what a Ctrl-C keeps: write them whole
                for finding in findings.values():
                    outcome.failures.append(_found_failure(finding, config, stats, interrupted))
                    inv = finding.invariant
                    outcome.invariants_failed[inv] = outcome.invariants_failed.get(inv, 0) + 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    outcome.interrupted = interrupted
    outcome.examples_run = stats.runs
    outcome.failing_runs = stats.failing
    outcome.baseline_failed = stats.baseline_failed
    outcome.errors = stats.errors
    outcome.examples_done = stats.examples_done
    outcome.budget_spent = stats.budget_spent
    outcome.duration = time.monotonic() - stats.started
    return outcome


def _liveness_unsettled(run: RealRun, long_duration: float) -> bool:
    """LV1 could not be judged because the run ended before its bound (it was shorter than
    ``long_duration``), with the client not live (no connection open past READY/RESUMED at the
    end of the observed run)."""
    result = run.result
    if result is None or run.scenario.expect.duration >= long_duration:
        return False
    lv1 = next((v for v in result.verdicts if v.invariant == "LV1"), None)
    if lv1 is None or lv1.status != "not_judged":
        return False
    live: dict[Any, bool] = {}
    for rec in result.records:
        kind, conn = rec.get("kind"), rec.get("conn")
        if kind == "note" and str(rec.get("text", "")).startswith("world: run over"):
            break
        if kind == "conn_open":
            live[conn] = False
        elif kind == "frame_out" and rec.get("t") in ("READY", "RESUMED") and conn in live:
            live[conn] = True
        elif kind == "conn_close":
            live.pop(conn, None)
    return not any(live.values())


def _hypothesis_search(check: Callable[[Scenario], None], strategy: Any,
                       config: CampaignConfig) -> None:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    check._hypothesis_internal_use_seed = config.seed  # type: ignore[attr-defined]
    test = settings(
        max_examples=config.examples,
        deadline=None,
        database=None,  # nothing ever fails inside: earlier findings are kept as files instead
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(given(strategy)(check))
    try:
        test()
    except _StopSearch:
        pass


def _add_finding(findings: dict[str, _Finding], failed: tuple[str, str], run: RealRun,
                 stats: CampaignStats) -> None:
    """Keep the run as the finding of its invariant (the one with fewest faults wins)."""
    invariant, evidence = failed
    assert run.result is not None
    now = time.monotonic() - stats.started
    stats.first_failure_at.setdefault(invariant, now)
    faults = len(run.scenario.steps)
    stats.smallest[invariant] = min(stats.smallest.get(invariant, faults), faults)
    have = findings.get(invariant)
    if have is not None and len(have.scenario.steps) <= faults:
        return
    findings[invariant] = _Finding(invariant, evidence, run, have.found_at if have else now,
                                   run.scenario, run.result, run.run_dir)


def _shrink_real(finding: _Finding, pool: _RunPool, config: CampaignConfig, end: float,
                 stats: CampaignStats, tell: Callable[[str], None]) -> None:
    """Delete every fault the failure does not need: each candidate (one fault fewer) is one real
    run, up to --jobs of them at once; the first that still fails the same invariant, and that
    the baseline passes, is kept. Stops at ``end`` keeping the smallest so far."""
    best = finding
    while len(best.scenario.steps) > 1:
        if time.monotonic() >= end:
            finding.shrink_note = f"stopped after --shrink-time {config.shrink_time:g} s"
            return
        steps = best.scenario.steps
        candidates = [replace(best.scenario, steps=steps[:i] + steps[i + 1:])
                      for i in range(len(steps))]
        accepted: tuple[Scenario, RealRun] | None = None
        for start in range(0, len(candidates), pool.jobs):
            batch = candidates[start:start + pool.jobs]
            runs = pool.run_all([(f"shrink {finding.invariant} without {steps[start + j].name}",
                                  sc, False, None) for j, sc in enumerate(batch)])
            stats.runs += len(runs)
            for run in runs:
                got = run.failed
                if got is None or got[0] != finding.invariant:
                    continue
                if config.baseline is not None:
                    (base,) = pool.run_all([(f"baseline of {run.label}", run.scenario, True,
                                             None)])
                    stats.runs += 1
                    if base.result is None or not base.result.passed:
                        continue
                accepted = (run.scenario, run)
                break
            for run in runs:
                if accepted is None or run is not accepted[1]:
                    shutil.rmtree(run.run_dir, ignore_errors=True)
            tell("fail")
            if accepted is not None:
                break
        if accepted is None:
            break
        scenario, run = accepted
        assert run.result is not None
        failed = run.failed
        assert failed is not None
        best.scenario, best.result, best.run_dir = scenario, run.result, run.run_dir
        best.evidence = failed[1]
        stats.smallest[finding.invariant] = len(scenario.steps)
    finding.shrunk = True
    finding.shrunk_at = time.monotonic() - stats.started


def _confirm_real(finding: _Finding, pool: _RunPool, config: CampaignConfig,
                  stats: CampaignStats, tell: Callable[[str], None]) -> None:
    """Run the minimal schedule --confirm times against the client, and once against the
    baseline, into the bundle's runs/ folder (its traces and client logs are the evidence)."""
    scenario = _named(finding.scenario, config.client, finding.invariant)
    if config.out_dir is not None:
        bundle = config.out_dir / scenario.name
        shutil.rmtree(bundle, ignore_errors=True)  # an earlier campaign's bundle of it
        runs_dir = bundle / "runs"
    else:
        runs_dir = pool.work_dir / scenario.name
    plan: list[tuple[str, Scenario, bool, Path | None]] = [
        (f"confirm {i}/{config.confirm}", scenario, False, runs_dir / f"confirm-{i}")
        for i in range(1, config.confirm + 1)]
    if config.baseline is not None:
        plan.append((f"baseline ({config.baseline})", scenario, True, runs_dir / "baseline"))
    pool.run_all(plan, into=finding.checks)
    stats.runs += len(plan)
    tell("run")


def _named(scenario: Scenario, client: str, invariant: str) -> Scenario:
    """The minimal schedule as the bundle's scenario: named, described, steps f1, f2, ..."""
    steps = tuple(replace(step, name=f"f{i}") for i, step in enumerate(scenario.steps, 1))
    scenario = replace(scenario, steps=steps, path=None)
    name = failure_name(client, invariant, scenario).lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip("-.")
    title = invariant_title(invariant, invariant)
    faults = "; ".join(step.describe() for step in steps)
    return replace(scenario, name=name, tags=("fuzz", "wallclock", invariant.lower()),
                   description=(f"Found by gateway-harness fuzz against {client} in wall-clock "
                                f"mode: {invariant} ({title}) after {len(steps)} fault(s): "
                                f"{faults}."))


def _found_failure(finding: _Finding, config: CampaignConfig, stats: CampaignStats,
                   interrupted: bool) -> FoundFailure:
    from harness.bundle import Bug, BundleRun, write_bundle

    scenario = _named(finding.scenario, config.client, finding.invariant)
    confirmed = [run for run in finding.confirms if run.result is not None]
    reproduced = sum(1 for run in confirmed
                     if (run.failed or ("", ""))[0] == finding.invariant)
    failure = FoundFailure(
        invariant=finding.invariant,
        scenario=scenario,
        result=finding.result,
        evidence=finding.evidence,
        found_after=finding.found_at,
        shrunk_after=finding.shrunk_at if finding.shrunk_at is not None
        else time.monotonic() - stats.started,
        shrunk=finding.shrunk,
        found_faults=len(finding.found.scenario.steps),
        reproduced=reproduced if confirmed else None,
        confirm_runs=len(confirmed),
        baseline_passed=(None if finding.baseline_check is None
                         or finding.baseline_check.result is None
                         else finding.baseline_check.result.passed),
    )
    notes = []
    if not finding.shrunk:
        notes.append("not shrunk (the campaign was interrupted)" if interrupted
                     else f"not fully shrunk ({finding.shrink_note})")
    elif finding.shrink_note:
        notes.append(finding.shrink_note)
    if len(confirmed) < config.confirm:
        notes.append(f"confirmed by {len(confirmed)} of {config.confirm} runs"
                     + (" (the campaign was interrupted)" if interrupted else ""))
    failure.notes = notes
    if config.out_dir is not None:
        runs = [BundleRun(run.run_dir.name, run.result, run.run_dir, run.baseline)
                for run in finding.checks]
        runs.append(BundleRun("found", finding.found.result, finding.found.run_dir))
        adapter = config.adapter
        bug = Bug(client=config.client, invariant=finding.invariant, evidence=finding.evidence,
                  scenario=scenario, found_faults=failure.found_faults or 0,
                  found_after=finding.found_at, runs=runs, shrunk=finding.shrunk,
                  notes=notes, reproduced=failure.reproduced, confirm_runs=len(confirmed),
                  baseline=config.baseline, baseline_passed=failure.baseline_passed,
                  replay=config.replay or ("run", "--client", config.client),
                  command=shlex.join(adapter.argv) if adapter is not None else None,
                  adapter_versions=dict(adapter.versions) if adapter is not None else {})
        failure.bundle_path = write_bundle(config.out_dir, bug)
        failure.scenario_path = failure.bundle_path / "scenario.toml"
        failure.report_path = failure.bundle_path / "report.html"
        _remember(config, failure.scenario)
    return failure


# ---- example databases: a folder or a Redis server ----------------------------------------------

REDIS_EXPIRY_DAYS = 90  # a finding nobody replays for this long leaves a shared Redis


def parse_database(value: str, flag: str = "--database") -> Path | str:
    """A ``--database`` value: a folder (a Path), or ``redis://HOST:PORT/DB`` (kept as the URL)."""
    import urllib.parse

    if "://" not in value:
        return Path(value)
    form = "a folder or redis://HOST:PORT/DB"
    url = urllib.parse.urlsplit(value)
    if url.scheme != "redis":
        raise UserError(f"{flag}: {value!r}: not {form} (scheme {url.scheme!r})")
    try:
        port = url.port
    except ValueError:
        raise UserError(f"{flag}: {value!r}: not {form} (the port is not a number)") from None
    if not url.hostname or port is None:
        raise UserError(f"{flag}: {value!r}: not {form} (no host or no port)")
    db = url.path.strip("/")
    if not db.isdigit() or url.query or url.fragment:
        raise UserError(f"{flag}: {value!r}: not {form} (DB is a number, e.g. /0)")
    return value


def open_database(location: Path | str, flag: str = "--database") -> Any:
    """The Hypothesis ``ExampleDatabase`` at a folder (its ``examples/``) or a Redis server (one
    connection check first: an unreachable server is one line, not a traceback mid-campaign)."""
    if isinstance(location, Path):
        from hypothesis.database import DirectoryBasedExampleDatabase

        return DirectoryBasedExampleDatabase(str(location / "examples"))
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError:
        raise UserError(f"{flag} {location}: needs the redis package: "
                        "pip install 'gateway-harness[redis]'") from None
    from datetime import timedelta

    server = redis.Redis.from_url(location, socket_connect_timeout=10, socket_timeout=30)
    try:
        server.ping()
    except redis.RedisError as exc:
        raise UserError(f"{flag}: cannot reach {location}: {exc}") from None
    return RedisExampleDatabase(server, expire_after=timedelta(days=REDIS_EXPIRY_DAYS))


def example_database(config: CampaignConfig) -> Any:
    """The campaign's database: ``database`` (read and written), multiplexed with a read-only
    ``shared_database`` when given (Hypothesis saves to every writable one, fetches from all)."""
    from hypothesis.database import MultiplexedDatabase, ReadOnlyDatabase

    own = open_database(config.database) if config.database is not None else None
    if config.shared_database is None:
        return own
    shared = ReadOnlyDatabase(open_database(config.shared_database, "--shared-database"))
    return shared if own is None else MultiplexedDatabase(own, shared)


def _database_dir(location: Path, client: str) -> Path:
    """``DATABASE/wallclock/CLIENT/``: the minimal schedules of findings against that client."""
    return location / WALLCLOCK_DATABASE / re.sub(r"[^A-Za-z0-9._-]+", "-", client)


def _wallclock_key(client: str) -> bytes:
    """Where a Redis database keeps a client's wall-clock findings (scenario TOML texts)."""
    return hashlib.sha256(f"gateway-harness wallclock:{client}".encode()).digest()


def _remember(config: CampaignConfig, scenario: Scenario) -> None:
    """Keep a finding's minimal schedule, so the next campaign against this client tries it
    first (the wall-clock counterpart of Hypothesis's example database)."""
    if config.database is None:
        return
    if not isinstance(config.database, Path):
        from harness.schedules import scenario_toml

        try:
            open_database(config.database).save(_wallclock_key(config.client),
                                                scenario_toml(scenario).encode())
        except Exception as exc:  # the bundle has the finding: a lost server costs a warning
            print(f"gateway-harness fuzz: warning: --database: cannot write {config.database}: "
                  f"{exc}", file=sys.stderr)
        return
    where = _database_dir(config.database, config.client)
    try:
        where.mkdir(parents=True, exist_ok=True)
        write_scenario(scenario, where / f"{scenario.name}.toml")
    except OSError as exc:
        print(f"gateway-harness fuzz: warning: --database: cannot write {where}: "
              f"{exc.strerror}", file=sys.stderr)


def _known_findings(config: CampaignConfig) -> list[Scenario]:
    """Earlier findings against this client, from ``database`` and ``shared_database``."""
    from harness.scenario import parse_scenario

    known: dict[str, Scenario] = {}
    for location, flag in ((config.database, "--database"),
                           (config.shared_database, "--shared-database")):
        if location is None:
            continue
        texts: list[tuple[str, str]] = []
        if isinstance(location, Path):
            where = _database_dir(location, config.client)
            if where.is_dir():
                texts = [(str(path), path.read_text(encoding="utf-8", errors="replace"))
                         for path in sorted(where.glob("*.toml"))]
        else:
            stored = open_database(location, flag).fetch(_wallclock_key(config.client))
            texts = [(location, value.decode("utf-8", "replace")) for value in stored]
        for source, text in texts:
            try:
                scenario = parse_scenario(text, source)
            except UserError:
                continue  # written by another version: not worth failing the campaign for
            known.setdefault(schedule_id(scenario), scenario)
    return list(known.values())


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """A `kill` of the campaign is taken as Ctrl-C (findings kept, nothing left behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGTERM, _interrupt_self)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Cleanup that a second Ctrl-C must not cut short (it would leave processes behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)
