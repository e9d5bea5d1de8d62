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
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway_common.errors import UserError
from harness.campaign import (
    DEFAULT_DATABASE,
    DEFAULT_OUT,
    CampaignConfig,
    CampaignResult,
    CampaignStats,
    check_client,
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



# ---- fuzz ----------------------------------------------------------------------------------------


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
    add_tls_argument(p, default="scenario", bare_was_on=True,
                     help="on: always TLS; off: never; scenario: drawn per generated schedule")
    p.add_argument("--no-tls", dest="tls", action=Deprecated, new="--tls off", value="off")
    add_out_argument(p, f"where failing schedules, traces and reports go (default {DEFAULT_OUT}/)",
                     default=DEFAULT_OUT)
    add_switchable(p, "database", default=DEFAULT_DATABASE, metavar="DIR",
                   help=f"Hypothesis example database (default {DEFAULT_DATABASE}/)",
                   off_help="no example database: failures found are not kept")
    p.add_argument("--shrink-time", type=float, default=120.0, metavar="SECONDS",
                   help="stop shrinking after this long and report the smallest so far "
                        "(default 120)")
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
    if args.shrink_time <= 0:
        raise UserError(f"--shrink-time: must be positive, got {args.shrink_time:g}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    database = None if args.no_database else Path(args.database)
    if args.no_baseline:
        baseline = None
    else:
        baseline = args.baseline or ("reference" if args.client != "reference" else None)
    kinds = None
    if args.faults:
        try:
            kinds = check_fault_kinds([k.strip() for k in args.faults.split(",") if k.strip()])
        except ValueError as exc:
            raise UserError(f"--faults: {exc}") from None
    config = CampaignConfig(
        examples=args.examples, seed=seed, client=args.client, horizon=args.horizon,
        max_faults=args.max_faults, tls=tls_setting(args.tls), out_dir=Path(args.out),
        database=database, shrink_time=args.shrink_time, multiple_bugs=args.multiple_bugs,
        keep_going=args.keep_going, baseline=baseline, fault_kinds=kinds,
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
