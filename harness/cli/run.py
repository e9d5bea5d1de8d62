"""`gateway-harness list | run | rejudge`: the harness users run.

``run`` loads scenario files, runs each in a fresh world (``harness.runner``: a worker process per
job, each with its own ports), judges the trace, shows progress, prints a summary table and writes
the reports asked for. The exit code is 0 only if every verdict holds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway_common.errors import UserError
from gateway_common.trace import load_jsonl, load_trace
from harness.cli.common import (
    add_out_argument,
    add_startup_timeout_argument,
    report,
    warn_deprecated,
)
from harness.oracle import judge
from harness.report.model import ScenarioResult
from harness.runner import (
    check_determinism,
    default_results_dir,
    resolve_client,
    run_many,
    split_for_real_toxiproxy,
)
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario, load_scenarios
from harness.world import RunOptions, default_jobs


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="scenario files or folders (default: the built-in suite)")
    p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")


# ---- list --------------------------------------------------------------------------------------


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    _add_paths(p)


def list_main(args: argparse.Namespace) -> int:
    # Without paths: every built-in suite, scenarios/ and its sub-folders (a tag such as
    # real-world spans both), each of a sub-folder named with it so `run` can be given its file.
    builtin = builtin_scenarios_dir()
    paths = args.paths or [builtin, *sorted(p for p in builtin.iterdir() if p.is_dir())]
    scenarios = load_scenarios(paths, args.tag)
    names = [_listed_name(s, builtin if not args.paths else None) for s in scenarios]
    width = max((len(n) for n in names), default=10)
    source_width = max((len(s.source) for s in scenarios), default=6)
    for name, s in zip(names, scenarios, strict=True):
        print(f"{name:<{width}}  {s.source:<{source_width}}  {s.summary}")
    print(f"{len(scenarios)} scenarios")
    return 0


def _listed_name(scenario: Scenario, builtin: Path | None) -> str:
    folder = scenario.path.parent if scenario.path is not None else None
    if builtin is None or folder is None or folder == builtin:
        return scenario.name
    return f"{folder.name}/{scenario.name}"


# ---- run ---------------------------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    _add_paths(p)
    p.add_argument("--mode", choices=("real", "sim"), default="real",
                   help="real: TCP on 127.0.0.1, wall clock; sim: in-memory, virtual time")
    p.add_argument("--client", default="reference",
                   help="the client under test: reference, a mutant, or an adapter name")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="scenarios run in parallel, each in its own process (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the run seed (a scenario's own seed wins)")
    add_out_argument(p, "write traces, delivery logs and report.html into DIR "
                        f"(default: traces only, into {default_results_dir()}/)", old="--report")
    p.add_argument("--json", metavar="FILE", help="write results as JSON (schema in the README)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per scenario")
    p.add_argument("--toxiproxy-url", default=os.environ.get("TOXIPROXY_URL"),
                   help="use a real Toxiproxy server (default: $TOXIPROXY_URL, else embedded)")
    p.add_argument("--check-determinism", action="store_true",
                   help="sim mode: run each scenario twice and fail it if the transcripts differ")
    add_startup_timeout_argument(p)


def run_main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {args.jobs}")
    scenarios = load_scenarios(args.paths or [builtin_scenarios_dir()], args.tag)
    if not scenarios:
        raise UserError("no scenarios matched the given paths and tags")
    out_dir = Path(args.out) if args.out else default_results_dir()
    options = RunOptions(mode=args.mode, client=args.client, seed=args.seed, out_dir=out_dir,
                         toxiproxy_url=args.toxiproxy_url, startup_timeout=args.startup_timeout)
    resolve_client(options)
    if args.check_determinism and args.mode != "sim":
        raise UserError("--check-determinism: needs --mode sim (wall-clock runs are not "
                        "deterministic)")
    skipped: list[tuple[str, str]] = []
    if options.toxiproxy_url and args.mode == "real":
        scenarios, skipped = split_for_real_toxiproxy(scenarios)
    # Simulated scenarios take milliseconds: a process pool would cost more than it saves.
    jobs = 1 if args.mode == "sim" else args.jobs
    results = run_many(scenarios, options, jobs)
    if args.check_determinism:
        check_determinism(results, scenarios, options)
    return report(results, title=f"gateway-harness run ({args.mode}, {args.client})",
                  meta={"mode": args.mode, "client": args.client, "seed": args.seed},
                  json_path=args.json, junit_path=args.junit, html_dir=args.out,
                  skipped=skipped)


# ---- rejudge -----------------------------------------------------------------------------------


def add_rejudge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", metavar="PATH",
                   help="the scenario file the trace came from (its expectations)")
    p.add_argument("--trace", metavar="FILE",
                   help="a trace file (JSON lines) written by an earlier run")
    p.add_argument("--delivery-log", metavar="FILE",
                   help="the client's delivery log (JSON lines)")
    p.add_argument("--json", metavar="FILE", help="write results as JSON")
    # the old spelling: rejudge TRACE --scenario FILE
    p.add_argument("--scenario", dest="old_scenario", help=argparse.SUPPRESS)


def rejudge_main(args: argparse.Namespace) -> int:
    scenario_path, trace = args.scenario, args.trace
    if args.old_scenario is not None:
        warn_deprecated("gateway-harness rejudge", "rejudge TRACE --scenario FILE",
                        "rejudge FILE --trace TRACE")
        scenario_path, trace = args.old_scenario, trace or args.scenario
    if scenario_path is None:
        raise UserError("PATH: the scenario file the trace came from is required")
    if trace is None:
        raise UserError("--trace: required (the trace file to judge)")
    scenario = load_scenario(scenario_path)
    try:
        records = load_trace(trace).records
        delivery = load_jsonl(args.delivery_log) if args.delivery_log else None
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: no such file") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    verdicts = judge(records, delivery, scenario.expect)
    result = ScenarioResult(name=scenario.name, mode="rejudged", client="?", verdicts=verdicts,
                            trace_path=Path(trace), records=records, delivery_log=delivery,
                            description=scenario.description, source=scenario.source)
    return report([result], title="gateway-harness rejudge",
                  meta={"mode": None, "client": None, "seed": None}, json_path=args.json)
