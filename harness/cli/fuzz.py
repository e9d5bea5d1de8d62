"""`gateway-harness fuzz` and `gateway-harness replay`: Hypothesis campaigns in simulation mode.

``fuzz`` runs a campaign (``harness.campaign``) against the chosen client and prints what it found.
A failing schedule is shrunk, then written as a scenario TOML file (with its run seed) next to its
trace and an HTML report::

    gateway-harness fuzz --client stale-resume-seq --examples 200 --seed 1

``replay FILE`` runs a scenario file in simulation mode and prints its transcript hash; the same
file gives the same hash on every replay.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway_common.errors import UserError
from harness.adapters.app.mode import app_adapter
from harness.adapters.contract import Adapter
from harness.campaign import (
    DEFAULT_CONFIRM,
    DEFAULT_DATABASE,
    DEFAULT_OUT,
    DEFAULT_REAL_SHRINK_TIME,
    DEFAULT_TIME_BUDGET,
    SIM_SHRINK_TIME,
    CampaignConfig,
    CampaignResult,
    CampaignStats,
    check_client,
    example_database,
    parse_database,
    replay_client,
    run_campaign,
)
from harness.cli.common import (
    Deprecated,
    add_out_argument,
    add_startup_timeout_argument,
    add_switchable,
    add_tls_argument,
    tls_setting,
)
from harness.oracle import invariant_title
from harness.scenario import Scenario, load_scenario
from harness.schedules import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_DURATION,
    DEFAULT_MAX_FAULTS,
    FAULT_KINDS,
    check_fault_kinds,
    run_schedule,
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
        if self.config.mode == "real":
            self._wallclock(event, stats)
            return
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

    def _wallclock(self, event: str, stats: CampaignStats) -> None:
        """Wall clock: runs are seconds long, so every event is worth a line (or a redraw)."""
        now = time.monotonic()
        elapsed = now - stats.started
        done = stats.examples_done
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        if stats.phase == "search":
            phase = f"search: examples {done}/{stats.examples_total}"
            left = [stats.examples_total - done] if done else []
            eta: float | None = None
            if left and done:
                eta = left[0] * elapsed / done
            if stats.time_budget is not None:
                budget_left = max(0.0, stats.time_budget - elapsed)
                eta = budget_left if eta is None else min(eta, budget_left)
            eta_text = f", ETA {_clock(eta)}" if eta is not None else ""
        else:
            smallest = ", ".join(f"{inv} in {n} fault(s)" for inv, n in stats.smallest.items())
            phase = (f"shrinking: smallest so far {smallest}" if stats.phase == "shrink"
                     else f"confirming {smallest}")
            eta_text = ""
        line = (f"[fuzz {self.config.client}] {phase}; runs {stats.runs}, failing "
                f"{stats.failing}, findings {len(stats.first_failure_at)}, errors {stats.errors}, "
                f"{rate:.1f} examples/min, elapsed {_clock(elapsed)}{eta_text}")
        if self.tty:
            print(f"\r{line[:150]:<150}", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"



# ---- fuzz ----------------------------------------------------------------------------------------


def add_fuzz_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=int, default=100,
                   help="schedules to generate (default 100; shrinking runs come on top)")
    p.add_argument("--seed", type=int, default=None,
                   help="campaign seed (default: a random one, printed so it can be repeated)")
    p.add_argument("target", nargs="?", metavar="CLIENT",
                   help="the client to fuzz: a built-in client (e.g. discord.py, hikari@2.6.0; "
                        "wall clock), the reference client or a planted-bug mutant (simulation)")
    p.add_argument("--client", default=None,
                   help="the same as CLIENT (default: reference)")
    # dest differs from "command": the top-level parser keeps the subcommand name there
    p.add_argument("--command", dest="client_command", metavar="CMD",
                   help="your own client: a command line run under the adapter contract "
                        "(wall clock)")
    p.add_argument("--app", metavar="CMD",
                   help="your unmodified bot (Python or Node.js), Discord's hostnames redirected "
                        "to the harness (wall clock; README: Test your own bot)")
    p.add_argument("--name", help="the name --command's or --app's client gets in results and "
                                  "bundles")
    p.add_argument("--ignores-hello-interval", action="store_true",
                   help="--command's or --app's client beats on its own clock: HELLO gets the "
                        "real 41.25 s and the schedules' times scale with it")
    p.add_argument("--mode", choices=("sim", "real"), default=None,
                   help="sim: simulated time, in-process client (reference and mutants only); "
                        "real: wall clock, real TCP/TLS on loopback (default: sim for the "
                        "reference client and mutants, real for anything else)")
    p.add_argument("--jobs", type=int, default=1,
                   help="wall clock: worlds at once, each in its own process with its own ports "
                        "(default 1)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="wall clock: stop generating schedules after this long (default "
                        f"{DEFAULT_TIME_BUDGET:g}); shrinking and confirming come on top")
    p.add_argument("--confirm", type=int, default=DEFAULT_CONFIRM, metavar="K",
                   help="wall clock: run each finding's minimal schedule K more times for its "
                        f"reproduction rate (default {DEFAULT_CONFIRM})")
    p.add_argument("--clients-dir", metavar="DIR",
                   help="where built-in clients are installed "
                        "(default: $GATEWAY_HARNESS_CLIENTS_DIR or .clients/)")
    p.add_argument("--horizon", type=float, default=DEFAULT_HORIZON,
                   help=f"seconds (simulated) in which faults happen (default {DEFAULT_HORIZON:g})")
    p.add_argument("--max-faults", type=int, default=DEFAULT_MAX_FAULTS,
                   help=f"most faults in one schedule (default {DEFAULT_MAX_FAULTS})")
    p.add_argument("--max-duration", type=float, default=DEFAULT_MAX_DURATION, metavar="SECONDS",
                   help="the longest single fault, in heartbeat intervals (default "
                        f"{DEFAULT_MAX_DURATION:g}); a reconnect loop needs about 15 to show "
                        "(with a --horizon past it)")
    add_tls_argument(p, default="scenario", bare_was_on=True,
                     help="on: always TLS; off: never; scenario: drawn per generated schedule")
    p.add_argument("--no-tls", dest="tls", action=Deprecated, new="--tls off", value="off")
    add_out_argument(p, "where failing schedules, traces and reports go; wall clock: one bug "
                        f"bundle folder per finding (default {DEFAULT_OUT}/)",
                     default=DEFAULT_OUT)
    add_switchable(p, "database", default=DEFAULT_DATABASE, metavar="DIR|redis://HOST:PORT/DB",
                   help="Hypothesis example database, read and written: a folder or a Redis "
                        f"server shared by several machines (default {DEFAULT_DATABASE}/)",
                   off_help="no example database: failures found are not kept")
    p.add_argument("--shared-database", metavar="DIR|redis://HOST:PORT/DB",
                   help="a team's database (CI writes it), only read: its findings are replayed "
                        "first, yours are kept in --database only")
    p.add_argument("--shrink-time", type=float, default=None, metavar="SECONDS",
                   help="stop shrinking after this long and report the smallest so far "
                        f"(default {SIM_SHRINK_TIME:g}; wall clock {DEFAULT_REAL_SHRINK_TIME:g})")
    p.add_argument("--multiple-bugs", action="store_true",
                   help="keep searching after the first failure and report each invariant's own")
    p.add_argument("--keep-going", action="store_true",
                   help="survey: run every example, count each failing one, shrink none "
                        "(measures a false-alarm rate)")
    add_switchable(p, "baseline", default=None, metavar="CLIENT",
                   help="count a failing schedule only if CLIENT passes it (default: reference "
                        "when fuzzing a mutant)",
                   off_help="count every failing schedule, whichever client fails it too")
    p.add_argument("--faults", metavar="KIND,...",
                   help="only these fault kinds, e.g. reset,reconnect,proxy,reset_after "
                        "(default: all; --list shows them)")
    p.add_argument("--list", action="store_true",
                   help="list the planted-bug mutants and the fault kinds, and exit")
    add_startup_timeout_argument(p)


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
    if not args.max_duration >= 0.1:
        raise UserError(f"--max-duration: must be at least 0.1, got {args.max_duration:g}")
    if args.shrink_time is not None and args.shrink_time <= 0:
        raise UserError(f"--shrink-time: must be positive, got {args.shrink_time:g}")
    client, adapter, mode, replay = _client_under_test(args)
    real = mode == "real"
    if not real:
        for flag, value, default in (("--jobs", args.jobs, 1), ("--time-budget",
                                     args.time_budget, None), ("--confirm", args.confirm,
                                                               DEFAULT_CONFIRM)):
            if value != default:
                raise UserError(f"{flag}: wall-clock campaigns only (--mode real, a built-in "
                                "client or --command)")
    if args.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {args.jobs}")
    if args.confirm < 1:
        raise UserError(f"--confirm: must be at least 1, got {args.confirm}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError(f"--time-budget: must be positive, got {args.time_budget:g}")
    if real and args.keep_going:
        raise UserError("--keep-going: a survey runs in simulation mode only")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    database = None if args.no_database else parse_database(args.database)
    shared = (parse_database(args.shared_database, "--shared-database")
              if args.shared_database is not None else None)
    if args.no_baseline:
        baseline = None
    else:
        baseline = args.baseline or ("reference" if client != "reference" else None)
    kinds = None
    if args.faults:
        try:
            kinds = check_fault_kinds([k.strip() for k in args.faults.split(",") if k.strip()])
        except ValueError as exc:
            raise UserError(f"--faults: {exc}") from None
    shrink_time = args.shrink_time or (DEFAULT_REAL_SHRINK_TIME if real else SIM_SHRINK_TIME)
    interval = 1.0
    if adapter is not None and adapter.hello_interval_ms is not None:
        interval = adapter.hello_interval_ms / 1000  # its own clock: schedules scale with it
    config = CampaignConfig(
        examples=args.examples, seed=seed, client=client, horizon=args.horizon,
        max_faults=args.max_faults, max_duration=args.max_duration, tls=tls_setting(args.tls),
        out_dir=Path(args.out),
        database=database, shared_database=shared, shrink_time=shrink_time,
        multiple_bugs=args.multiple_bugs,
        keep_going=args.keep_going, baseline=baseline, fault_kinds=kinds, mode=mode,
        adapter=adapter, jobs=args.jobs, confirm=args.confirm, interval=interval,
        time_budget=(args.time_budget or DEFAULT_TIME_BUDGET) if real else None,
        startup_timeout=getattr(args, "startup_timeout", None), replay=replay,
    )
    example_database(config)  # an unreachable Redis is one line now, not in the middle
    where = (f"wall clock, {config.jobs} job(s), time budget {config.time_budget:g} s, "
             f"heartbeat interval {interval:g} s" if real else "simulation")
    print(f"gateway-harness fuzz: client {config.client} ({where}), {config.examples} examples, "
          f"seed {seed}, horizon {config.horizon:g} intervals, up to {config.max_faults} faults",
          file=sys.stderr)
    progress = FuzzProgress(config)
    try:
        result = run_campaign(config, progress)
    finally:
        progress.finish()
    print(campaign_summary(result))
    if result.interrupted:
        return 130
    return 1 if result.failures else 0


def _client_under_test(args: argparse.Namespace) -> tuple[str, Any, str, tuple[str, ...]]:
    """(client name, adapter or None, mode, the `gateway-harness` arguments that replay a
    bundle's scenario.toml against it, before the file)."""
    from harness.world_clients import known_reference_clients

    if args.target and args.client:
        raise UserError(f"name the client once: CLIENT {args.target!r} or --client "
                        f"{args.client!r}")
    named = args.target or args.client
    if args.client_command and args.app:
        raise UserError("--command and --app: give one (--app for an unmodified bot)")
    if args.client_command or args.app:
        flag, command = ("--app", args.app) if args.app else ("--command", args.client_command)
        if named:
            raise UserError(f"{flag}: a command line or a client name ({named!r}), not both")
        if args.mode == "sim":
            raise UserError(f"--mode sim: {flag}'s client runs in wall-clock mode only")
        honours = not args.ignores_hello_interval
        adapter = (app_adapter(command, args.name, honours_hello_interval=honours) if args.app
                   else Adapter.from_command(command, args.name, honours_hello_interval=honours))
        replay: tuple[str, ...] = ("validate", flag, command)
        if args.name:
            replay += ("--name", args.name)
        if args.ignores_hello_interval:
            replay += ("--ignores-hello-interval",)
        return adapter.name, adapter, "real", replay
    if args.name:
        raise UserError("--name: only applies to --command or --app")
    if args.ignores_hello_interval:
        raise UserError("--ignores-hello-interval: only applies to --command or --app")
    client = named or "reference"
    if client in known_reference_clients():
        mode = args.mode or "sim"
        replay = (("validate", "--client", "reference") if client == "reference"
                  else ("run", "--client", client))
        return client, None, mode, replay
    if args.mode == "sim":
        raise UserError(f"--mode sim: {client!r} runs as a process, in wall-clock mode only "
                        "(simulation runs the reference client and its mutants)")
    from harness.adapters.registry import ADAPTERS

    name, _, version = client.partition("@")
    spec = ADAPTERS.get(name)
    if spec is None:
        flag = "CLIENT" if args.target else "--client"
        raise UserError(f"{flag}: {client!r} is neither a built-in client ({', '.join(ADAPTERS)}) "
                        f"nor the reference client or a planted-bug mutant "
                        f"({', '.join(known_reference_clients())})")
    where = Path(args.clients_dir).resolve() if args.clients_dir else None
    if not spec.is_installed(version or None, where):
        print(f"installing {spec.requirement(version or None)} into "
              f"{spec.install_dir(version or None, where)} (first use)", file=sys.stderr,
              flush=True)
    adapter = spec.install(version or None, where)
    replay = ("validate", "--client", client)
    if args.clients_dir:
        replay += ("--clients-dir", args.clients_dir)
    return adapter.name, adapter, "real", replay


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
    if cfg.mode == "real":
        return _wallclock_summary(result, lines)
    for f in result.failures:
        lines.append(
            f"FAIL {f.invariant} ({invariant_title(f.invariant, 'the run broke')}): "
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


def _wallclock_summary(result: CampaignResult, lines: list[str]) -> str:
    cfg = result.config
    lines[0] = (f"{result.examples_done} examples ({result.examples_run} runs with baselines, "
                f"shrinking and confirming) against {cfg.client} in {result.duration:.1f} s "
                f"of wall clock, {cfg.jobs} job(s); seed {cfg.seed}")
    if result.interrupted:
        lines.append("interrupted (Ctrl-C): the findings so far are below")
    elif result.budget_spent:
        lines.append(f"the search stopped at --time-budget {cfg.time_budget:g} s")
    if result.errors:
        lines.append(f"{result.errors} run(s) broke (a run error, no verdict): not findings")
    for f in result.failures:
        rate = (f"reproduced {f.reproduced}/{f.confirm_runs}" if f.reproduced is not None
                else "not confirmed")
        base = ("" if f.baseline_passed is None
                else f"; the {cfg.baseline} client {'passes' if f.baseline_passed else 'FAILS'} it")
        if not f.shrunk:
            shrunk = f"{f.faults} fault(s), not shrunk"
        elif f.found_faults != f.faults:
            shrunk = f"shrunk from {f.found_faults} to {f.faults} fault(s)"
        else:
            shrunk = f"{f.faults} fault(s), each needed"
        lines.append(f"FAIL {f.invariant} ({invariant_title(f.invariant, 'the run broke')}): "
                     f"{shrunk}; {rate}{base}; found after {f.found_after:.1f} s, shrunk after "
                     f"{f.shrunk_after:.1f} s")
        for step in f.scenario.steps:
            lines.append(f"  - {step.describe()}")
        lines.append(f"  evidence: {f.evidence}")
        for note in f.notes:
            lines.append(f"  note: {note}")
        if f.bundle_path is not None:
            lines.append(f"  bundle:   {f.bundle_path} (REPORT.md, scenario.toml, report.html)")
            replay = shlex.join(["gateway-harness", *cfg.replay, str(f.scenario_path)])
            lines.append(f"  replay:   {replay}")
    return "\n".join(lines)


# ---- replay ------------------------------------------------------------------------------------


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="PATH",
                   help="a scenario file (e.g. one written by `gateway-harness fuzz`)")
    p.add_argument("--client", default=None,
                   help="the client to replay against (default: the one the file was found "
                        "with, else reference)")
    p.add_argument("--seed", type=int, default=0,
                   help="run seed for a file without its own `seed` (default 0)")
    add_out_argument(p, "write the trace and report.html into DIR")


def replay_main(args: argparse.Namespace) -> int:
    from harness.report.html import write_html
    from harness.report.text import failure_details, summary_table
    from harness.world import transcript_hash

    scenario = load_scenario(args.file)
    client = replay_client(scenario, args.client)
    check_client(client)
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
