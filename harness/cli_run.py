"""`gateway-harness list | run | rejudge`: the harness users run.

``run`` loads scenario files, runs each in a fresh world (a worker process per job, each with its
own ports), judges the trace, shows progress, prints a summary table and writes the reports asked
for. The exit code is 0 only if every verdict holds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway_common.errors import UserError
from gateway_common.trace import load_jsonl, load_trace
from harness.oracle import judge
from harness.report.html import write_html
from harness.report.json_results import write_json
from harness.report.junit import write_junit
from harness.report.model import ScenarioResult, summarize
from harness.report.text import failure_details, summary_table
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario, load_scenarios
from harness.world import RunOptions, default_jobs, run_scenario

# Where `run` and `validate` keep traces and delivery logs when no --report DIR is given.
DEFAULT_RESULTS_DIR = Path(os.environ.get("GATEWAY_HARNESS_RESULTS_DIR", "results"))

# ---- list --------------------------------------------------------------------------------------


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="scenario files or folders (default: the built-in suite)")
    p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")


def list_main(args: argparse.Namespace) -> int:
    scenarios = load_scenarios(args.paths or [builtin_scenarios_dir()], args.tag)
    width = max((len(s.name) for s in scenarios), default=10)
    for s in scenarios:
        print(f"{s.name:<{width}}  {s.source:<6}  {s.summary}")
    print(f"{len(scenarios)} scenarios")
    return 0


# ---- run ---------------------------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="scenario files or folders (default: the built-in suite)")
    p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
    p.add_argument("--mode", choices=("real", "sim"), default="real",
                   help="real: TCP on 127.0.0.1, wall clock; sim: in-memory, virtual time")
    p.add_argument("--client", default="reference",
                   help="the client under test: reference, a mutant, or an adapter name")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="scenarios run in parallel, each in its own process (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the run seed (a scenario's own seed wins)")
    p.add_argument("--report", metavar="DIR",
                   help="write traces, delivery logs and report.html into DIR "
                        f"(default: traces only, into {DEFAULT_RESULTS_DIR}/)")
    p.add_argument("--json", metavar="FILE", help="write results as JSON (schema in the README)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per scenario")
    p.add_argument("--toxiproxy-url", default=os.environ.get("TOXIPROXY_URL"),
                   help="use a real Toxiproxy server (default: $TOXIPROXY_URL, else embedded)")
    p.add_argument("--check-determinism", action="store_true",
                   help="sim mode: run each scenario twice and fail it if the transcripts differ")


def run_main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {args.jobs}")
    scenarios = load_scenarios(args.paths or [builtin_scenarios_dir()], args.tag)
    if not scenarios:
        raise UserError("no scenarios matched the given paths and tags")
    out_dir = Path(args.report) if args.report else DEFAULT_RESULTS_DIR
    options = RunOptions(mode=args.mode, client=args.client, seed=args.seed, out_dir=out_dir,
                         toxiproxy_url=args.toxiproxy_url)
    _check_client(options)
    if getattr(args, "check_determinism", False) and args.mode != "sim":
        raise UserError("--check-determinism: needs --mode sim (wall-clock runs are not "
                        "deterministic)")
    skipped: list[tuple[str, str]] = []
    if options.toxiproxy_url and args.mode == "real":
        scenarios, skipped = split_for_real_toxiproxy(scenarios)
    # Simulated scenarios take milliseconds: a process pool would cost more than it saves.
    jobs = 1 if args.mode == "sim" else args.jobs
    results = run_many(scenarios, options, jobs)
    if getattr(args, "check_determinism", False):
        from harness.cli_fuzz import check_determinism

        check_determinism(results, scenarios, options)
    return report(results, args, title=f"gateway-harness run ({args.mode}, {args.client})",
                  skipped=skipped)


def split_for_real_toxiproxy(
    scenarios: Sequence[Scenario],
) -> tuple[list[Scenario], list[tuple[str, str]]]:
    """(the scenarios a real Toxiproxy can run, [(name, why not) for the others]): a scenario
    whose fault needs an extension of ours would run without it and prove nothing."""
    from harness.world import needs_our_extensions

    runnable, skipped = [], []
    for scenario in scenarios:
        reason = needs_our_extensions(scenario)
        if reason is None:
            runnable.append(scenario)
        else:
            skipped.append((scenario.name, f"needs an extension of ours ({reason})"))
    return runnable, skipped


def _check_client(options: RunOptions) -> None:
    from harness.world_clients import known_reference_clients

    if options.client in known_reference_clients():
        return
    from harness.adapters.registry import resolve

    options.adapter = resolve(options.client)


def run_many(scenarios: Sequence[Scenario], options: RunOptions, jobs: int) -> list[ScenarioResult]:
    """Run scenarios (in worker processes when jobs > 1), showing progress on stderr."""
    progress = Progress(len(scenarios))
    results: list[ScenarioResult | None] = [None] * len(scenarios)
    if jobs == 1 or len(scenarios) == 1:
        for i, scenario in enumerate(scenarios):
            progress.starting(scenario.name)
            results[i] = run_scenario(scenario, options)
            progress.done(results[i])  # type: ignore[arg-type]
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_scenario, s, options): i for i, s in enumerate(scenarios)}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    progress.done(results[i])  # type: ignore[arg-type]
            except BaseException:
                for fut in futures:
                    fut.cancel()
                _interrupt_workers(pool)
                raise
    progress.finish()
    return [r for r in results if r is not None]


def _interrupt_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Pass an interrupt on to running workers, so each tears its world down (listeners, client
    process groups, temporary files) instead of running its scenario to the end or dying
    without cleanup. A Ctrl-C on a terminal reaches them anyway; `kill -INT` of the parent
    alone does not."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.pid is not None and process.is_alive():
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass


class Progress:
    """A one-line progress bar on a terminal; one line per scenario otherwise (CI logs)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done_count = 0
        self.failed = 0
        self.tty = sys.stderr.isatty()

    def starting(self, name: str) -> None:
        if self.tty:
            self._bar(f"running {name}")

    def done(self, result: ScenarioResult) -> None:
        self.done_count += 1
        if not result.passed:
            self.failed += 1
        if self.tty:
            self._bar(f"{result.outcome} {result.name}")
        else:
            failed = ",".join(result.failed_invariants)
            extra = f" ({failed})" if failed else (f" ({result.error})" if result.error else "")
            print(f"[{self.done_count}/{self.total}] {result.outcome:<5} {result.name}{extra} "
                  f"{result.duration:.1f}s", file=sys.stderr, flush=True)

    def _bar(self, text: str) -> None:
        width = 30
        filled = int(width * self.done_count / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        line = f"\r[{bar}] {self.done_count}/{self.total} failed {self.failed}  {text}"
        print(f"{line[:110]:<110}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def report(results: list[ScenarioResult], args: argparse.Namespace, title: str,
           skipped: Sequence[tuple[str, str]] = ()) -> int:
    """Print the summary; write the JSON, JUnit and HTML reports asked for; the exit code.
    ``skipped``: (scenario, reason) pairs not run, listed after the table."""
    print(summary_table(results, color=sys.stdout.isatty()))
    if skipped:
        print(f"skipped {len(skipped)} scenario(s), not run:")
        width = max(len(name) for name, _ in skipped)
        for name, reason in skipped:
            print(f"  {name:<{width}}  {reason}")
    details = failure_details(results)
    if details:
        print(details)
    meta = {"mode": getattr(args, "mode", None), "client": getattr(args, "client", None),
            "seed": getattr(args, "seed", None)}
    if getattr(args, "json", None):
        write_json(results, args.json, meta)
    if getattr(args, "junit", None):
        write_junit(results, args.junit)
    if getattr(args, "report", None):
        path = write_html(results, args.report, title=title, meta=meta)
        print(f"report: {path}")
    s = summarize(results)
    also = f", {len(skipped)} skipped" if skipped else ""
    print(f"{s.passed} passed, {s.failed} failed, {s.errors} errors{also} in {s.duration:.1f} s")
    return 0 if s.failed == 0 and s.errors == 0 else 1


# ---- rejudge -----------------------------------------------------------------------------------


def add_rejudge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="a trace file (JSON lines) written by an earlier run")
    p.add_argument("--scenario", required=True,
                   help="the scenario file the trace came from (its expectations)")
    p.add_argument("--delivery-log", help="the client's delivery log (JSON lines)")
    p.add_argument("--json", metavar="FILE", help="write results as JSON")


def rejudge_main(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    try:
        records = load_trace(args.trace).records
        delivery = load_jsonl(args.delivery_log) if args.delivery_log else None
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: no such file") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    verdicts = judge(records, delivery, scenario.expectations())
    result = ScenarioResult(name=scenario.name, mode="rejudged", client="?", verdicts=verdicts,
                            trace_path=Path(args.trace), records=records, delivery_log=delivery,
                            description=scenario.description, source=scenario.source)
    return report([result], args, title="gateway-harness rejudge")
