"""Running scenarios in bulk: one fresh world per scenario, in worker processes when asked.

``run_many`` is what ``gateway-harness run`` and ``validate`` call; ``check_determinism`` runs
simulated scenarios a second time and compares transcripts (``run --check-determinism``).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.report.model import ScenarioResult
from harness.scenario import Scenario
from harness.world import RunOptions, run_scenario


def default_results_dir() -> Path:
    """Where `run`, `validate` and scenario items keep traces and delivery logs when no output
    folder is given."""
    return Path(os.environ.get("GATEWAY_HARNESS_RESULTS_DIR", "results"))


def resolve_client(options: RunOptions) -> None:
    """Check ``options.client`` names a client before any run starts: the reference client or a
    mutant, else an adapter (resolved, installed on first use, into ``options.adapter``)."""
    from harness.world_clients import known_reference_clients

    if options.client in known_reference_clients():
        return
    from harness.adapters.registry import resolve

    options.adapter = resolve(options.client)


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


def run_many(scenarios: Sequence[Scenario], options: RunOptions, jobs: int,
             repeat: int = 1) -> list[ScenarioResult]:
    """Run scenarios (in worker processes when jobs > 1), showing progress on stderr.

    ``repeat`` > 1 runs each scenario that many times, with the same seed (what differs between
    the runs is the machine's timing), each result carrying its ``repeat`` index; the results
    come in scenario order, then run order."""
    runs = [(s, options if repeat == 1 else replace(options, repeat=k))
            for s in scenarios for k in range(1, repeat + 1)]
    progress = Progress(len(runs))
    results: list[ScenarioResult | None] = [None] * len(runs)
    if jobs == 1 or len(runs) == 1:
        for i, (scenario, run_options) in enumerate(runs):
            progress.starting(scenario.name)
            results[i] = run_scenario(scenario, run_options)
            progress.done(results[i])  # type: ignore[arg-type]
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_scenario, s, o): i for i, (s, o) in enumerate(runs)}
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
            self._bar(f"{result.outcome} {result.label}")
        else:
            failed = ",".join(result.failed_invariants)
            extra = f" ({failed})" if failed else (f" ({result.error})" if result.error else "")
            print(f"[{self.done_count}/{self.total}] {result.outcome:<5} {result.label}{extra} "
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


# ---- determinism -----------------------------------------------------------------------------


def first_difference(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> str | None:
    """Where two transcripts of the same run part ways (None if they are identical)."""
    for line, (a, b) in enumerate(zip(first, second, strict=False), 1):
        if a != b:
            return (f"trace line {line} differs: {json.dumps(a, sort_keys=True)[:200]} vs "
                    f"{json.dumps(b, sort_keys=True)[:200]}")
    if len(first) != len(second):
        longer, n = ("first", len(second)) if len(first) > len(second) else ("second", len(first))
        return f"the {longer} run has more trace records (identical up to line {n})"
    return None


def check_determinism(results: list[ScenarioResult], scenarios: list[Scenario],
                      options: RunOptions) -> None:
    """Run each sim scenario a second time; a transcript that differs turns its result into an
    error naming the first differing trace line (``gateway-harness run --check-determinism``)."""
    # looked up at call time, so a test can perturb the second run
    from harness import world

    by_name = {s.name: s for s in scenarios}
    again_options = replace(options, out_dir=None)
    for result in results:
        scenario = by_name.get(result.name)
        if scenario is None or result.error is not None:
            continue
        again = world.run_scenario(scenario, again_options)
        if world.transcript_hash(again.records) == world.transcript_hash(result.records):
            continue
        where = first_difference(result.records, again.records) or "transcripts differ"
        result.error = f"not deterministic: two runs with seed {result.seed} differ: {where}"
