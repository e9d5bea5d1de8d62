"""`gateway-harness fuzz` and `gateway-harness replay`: Hypothesis campaigns in simulation mode.

``fuzz`` generates disconnect schedules (``harness.schedules``), runs each against the chosen
client in the simulated world and judges it. A failing schedule is shrunk by Hypothesis, then
written as a scenario TOML file (with its run seed) next to its trace and an HTML report::

    gateway-harness fuzz --client stale-resume-seq --examples 200 --seed 1

``replay FILE`` runs a scenario file in simulation mode and prints its transcript hash; the same
file gives the same hash on every replay.

The Hypothesis example database (``.hypothesis/`` by default) keeps every failure found, so the
next campaign against the same client tries it first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway_common.errors import UserError
from harness.oracle import INVARIANT_TITLES
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, load_scenario
from harness.schedules import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_FAULTS,
    FAULT_KINDS,
    ScheduleLimits,
    check_fault_kinds,
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

    _check_client(config.client)
    if config.baseline is not None:
        _check_client(config.baseline)
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
        elif kind == "frame_out" and rec.get("op") == 10 and conn in upgraded_at:
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


def _check_client(client: str) -> None:
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
    title = INVARIANT_TITLES.get(failure.invariant, failure.invariant)
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


# ---- progress --------------------------------------------------------------------------------


class FuzzProgress:
    """One updating line on a terminal; a line every `every` runs otherwise (CI logs)."""

    def __init__(self, config: CampaignConfig, stream: Any = None, every: int = 50) -> None:
        self.config = config
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0

    def __call__(self, event: str, stats: CampaignStats) -> None:
        now = time.monotonic()
        elapsed = max(1e-9, now - stats.started)
        if stats.first_failure_at and not self.config.keep_going:
            smallest = ", ".join(f"{inv} in {n} fault(s)" for inv, n in stats.smallest.items())
            phase = f"shrinking: smallest so far {smallest}"
        else:
            phase = f"examples {stats.runs}/{self.config.examples}"
        line = (f"[fuzz {self.config.client}] {phase}; runs {stats.runs}, failing {stats.failing}, "
                f"{stats.runs / elapsed:.1f} runs/s, {stats.sim_seconds / elapsed:.0f}x real time")
        if self.tty:
            if event == "fail" or now - self._last > 0.2:
                self._last = now
                print(f"\r{line[:118]:<118}", end="", file=self.stream, flush=True)
        elif event == "fail" and stats.failing == 1 or stats.runs % self.every == 0:
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


# ---- fuzz CLI ------------------------------------------------------------------------------------


def add_fuzz_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=int, default=100,
                   help="schedules to generate (default 100; shrinking runs come on top)")
    p.add_argument("--seed", type=int, default=None,
                   help="campaign seed (default: a random one, printed so it can be repeated)")
    p.add_argument("--client", default="reference",
                   help="reference or a planted-bug mutant (see `gateway-harness fuzz --list`)")
    p.add_argument("--horizon", type=float, default=DEFAULT_HORIZON,
                   help=f"seconds (simulated) in which faults happen (default {DEFAULT_HORIZON:g})")
    p.add_argument("--max-faults", type=int, default=DEFAULT_MAX_FAULTS,
                   help=f"most faults in one schedule (default {DEFAULT_MAX_FAULTS})")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--tls", dest="tls", action="store_const", const=True, default=None,
                     help="always TLS (default: drawn per schedule)")
    tls.add_argument("--no-tls", dest="tls", action="store_const", const=False,
                     help="never TLS")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where failing schedules, traces and reports go (default {DEFAULT_OUT}/)")
    p.add_argument("--database", default=DEFAULT_DATABASE, metavar="DIR",
                   help=f"Hypothesis example database (default {DEFAULT_DATABASE}/; 'none' = off)")
    p.add_argument("--shrink-time", type=float, default=120.0, metavar="SECONDS",
                   help="stop shrinking after this long and report the smallest so far "
                        "(default 120)")
    p.add_argument("--multiple-bugs", action="store_true",
                   help="keep searching after the first failure and report each invariant's own")
    p.add_argument("--keep-going", action="store_true",
                   help="survey: run every example, count each failing one, shrink none "
                        "(measures a false-alarm rate)")
    p.add_argument("--baseline", default=None, metavar="CLIENT",
                   help="count a failing schedule only if CLIENT passes it (default: reference "
                        "when fuzzing a mutant; 'none' = off)")
    p.add_argument("--faults", metavar="KIND,...",
                   help="only these fault kinds, e.g. reset,reconnect,proxy,reset_after "
                        "(default: all; --list shows them)")
    p.add_argument("--list", action="store_true",
                   help="list the planted-bug mutants and the fault kinds, and exit")


def fuzz_main(args: argparse.Namespace) -> int:
    if args.list:
        from harness.client.mutants import EXPECTED_INVARIANTS, MUTANTS

        for name, factory in MUTANTS.items():
            doc = " ".join((factory.__doc__ or "").split())
            first = doc.split(". ")[0].rstrip(".")
            invs = ",".join(sorted(EXPECTED_INVARIANTS.get(name, ())))
            print(f"{name:<28} {invs:<12} {first}")
        print(f"fault kinds: {', '.join(FAULT_KINDS)}")
        return 0
    if args.examples < 1:
        raise UserError(f"--examples: must be at least 1, got {args.examples}")
    if args.horizon <= 0:
        raise UserError(f"--horizon: must be positive, got {args.horizon:g}")
    if args.max_faults < 1:
        raise UserError(f"--max-faults: must be at least 1, got {args.max_faults}")
    if args.shrink_time <= 0:
        raise UserError(f"--shrink-time: must be positive, got {args.shrink_time:g}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    database = None if args.database.lower() == "none" else Path(args.database)
    baseline = args.baseline or ("reference" if args.client != "reference" else "none")
    kinds = None
    if args.faults:
        try:
            kinds = check_fault_kinds([k.strip() for k in args.faults.split(",") if k.strip()])
        except ValueError as exc:
            raise UserError(f"--faults: {exc}") from None
    config = CampaignConfig(
        examples=args.examples, seed=seed, client=args.client, horizon=args.horizon,
        max_faults=args.max_faults, tls=args.tls, out_dir=Path(args.out), database=database,
        shrink_time=args.shrink_time, multiple_bugs=args.multiple_bugs,
        keep_going=args.keep_going,
        baseline=None if baseline.lower() == "none" else baseline,
        fault_kinds=kinds,
    )
    print(f"gateway-harness fuzz: client {config.client}, {config.examples} examples, "
          f"seed {seed}, horizon {config.horizon:g} s, up to {config.max_faults} faults",
          file=sys.stderr)
    progress = FuzzProgress(config)
    try:
        result = run_campaign(config, progress)
    finally:
        progress.finish()
    print(campaign_summary(result))
    return 1 if result.failures else 0


def _tally(failures: list[tuple[str, Scenario, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for inv, _, _ in failures:
        out[inv] = out.get(inv, 0) + 1
    return out


def campaign_summary(result: CampaignResult) -> str:
    cfg = result.config
    lines = [f"{result.examples_run} runs ({cfg.examples} examples + shrinking) against "
             f"{cfg.client} in {result.duration:.1f} s; seed {cfg.seed}"]
    if not result.failures:
        lines.append("no invariant failed")
    if cfg.baseline is not None:
        lines.append(f"{result.baseline_failed} failing schedule(s) set aside because the "
                     f"{cfg.baseline} client failed them too")
    if cfg.keep_going and result.all_failures:
        tally = ", ".join(f"{inv} {n}" for inv, n in sorted(_tally(result.all_failures).items()))
        lines.append(f"{len(result.all_failures)} failing schedule(s) of {result.examples_run}: "
                     f"{tally} (the smallest of each below, not shrunk)")
    for f in result.failures:
        lines.append(
            f"FAIL {f.invariant} ({INVARIANT_TITLES.get(f.invariant, 'the run broke')}): "
            f"shrunk to {f.faults} fault(s); found after {f.found_after:.1f} s"
            + (f", down to <= 3 faults after {f.small_after:.1f} s"
               if f.small_after is not None else "")
            + f", shrinking done after {f.shrunk_after:.1f} s"
        )
        for step in f.scenario.steps:
            lines.append(f"  - {step.describe()}")
        lines.append(f"  evidence: {f.evidence}")
        if f.scenario_path is not None:
            lines.append(f"  scenario: {f.scenario_path}")
            lines.append(f"  report:   {f.report_path}")
            lines.append(f"  replay:   gateway-harness replay {f.scenario_path}")
        lines.append(f"  transcript sha256: {f.transcript_hash}")
    return "\n".join(lines)


# ---- determinism -----------------------------------------------------------------------------


def first_difference(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> str | None:
    """Where two transcripts of the same run part ways (None if they are identical)."""
    import json

    for line, (a, b) in enumerate(zip(first, second, strict=False), 1):
        if a != b:
            return (f"trace line {line} differs: {json.dumps(a, sort_keys=True)[:200]} vs "
                    f"{json.dumps(b, sort_keys=True)[:200]}")
    if len(first) != len(second):
        longer, n = ("first", len(second)) if len(first) > len(second) else ("second", len(first))
        return f"the {longer} run has more trace records (identical up to line {n})"
    return None


def check_determinism(results: list[ScenarioResult], scenarios: list[Scenario],
                      options: Any) -> None:
    """Run each sim scenario a second time; a transcript that differs turns its result into an
    error naming the first differing trace line (``gateway-harness run --check-determinism``)."""
    from harness.world import run_scenario, transcript_hash

    by_name = {s.name: s for s in scenarios}
    again_options = replace(options, out_dir=None)
    for result in results:
        scenario = by_name.get(result.name)
        if scenario is None or result.error is not None:
            continue
        again = run_scenario(scenario, again_options)
        if transcript_hash(again.records) == transcript_hash(result.records):
            continue
        where = first_difference(result.records, again.records) or "transcripts differ"
        result.error = f"not deterministic: two runs with seed {result.seed} differ: {where}"


# ---- replay ------------------------------------------------------------------------------------


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a scenario file (e.g. one written by `gateway-harness fuzz`)")
    p.add_argument("--client", default=None,
                   help="the client to replay against (default: the one the file was found "
                        "with, else reference)")
    p.add_argument("--seed", type=int, default=0,
                   help="run seed for a file without its own `seed` (default 0)")
    p.add_argument("--out", metavar="DIR", help="write the trace and report.html into DIR")


def replay_client(scenario: Scenario, explicit: str | None) -> str:
    if explicit:
        return explicit
    for tag in scenario.tags:
        if tag.startswith(CLIENT_TAG_PREFIX):
            return tag[len(CLIENT_TAG_PREFIX):]
    return "reference"


def replay_main(args: argparse.Namespace) -> int:
    from harness.report.html import write_html
    from harness.report.text import failure_details, summary_table
    from harness.world import transcript_hash

    scenario = load_scenario(args.file)
    client = replay_client(scenario, args.client)
    _check_client(client)
    if scenario.seed is None:
        scenario = replace(scenario, seed=args.seed)
    out_dir = Path(args.out) if args.out else None
    result = run_schedule(scenario, client, out_dir=out_dir)
    print(summary_table([result], color=sys.stdout.isatty()))
    details = failure_details([result])
    if details:
        print(details)
    if out_dir is not None:
        path = write_html([result], out_dir, title=f"gateway-harness replay: {scenario.name}",
                          meta={"mode": "sim", "client": client, "seed": scenario.seed})
        print(f"report: {path}")
    print(f"client {client}, seed {scenario.seed}, {len(result.records)} trace records")
    print(f"transcript sha256: {transcript_hash(result.records)}")
    return 0 if result.passed else 1
