"""The plain results structure every report renders: one ``ScenarioResult`` per scenario run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.oracle import Verdict

Record = dict[str, Any]


@dataclass
class ScenarioResult:
    """One scenario run by one client in one mode, judged."""

    name: str
    mode: str  # "real" | "sim"
    client: str  # "reference" or an adapter name
    verdicts: list[Verdict] = field(default_factory=list)
    trace_path: Path | None = None
    records: list[Record] = field(default_factory=list)
    delivery_log: list[Record] | None = None
    stderr_tail: str = ""
    duration: float = 0.0  # wall-clock seconds the run took
    error: str | None = None  # the run itself broke (no verdicts can be trusted)
    description: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    seed: int | None = None
    scenario_path: Path | None = None
    recovery_bound: float | None = None  # the scenario's LV1 bound (drawn on the timeline)
    repeat: int | None = None  # the K-th run of a repeated cell (validate --repeat); None: once

    @property
    def label(self) -> str:
        """The name reports show: the scenario's, with ``#K`` for the K-th run of a repeat."""
        return self.name if self.repeat is None else f"{self.name} #{self.repeat}"

    @property
    def passed(self) -> bool:
        """No verdict failed, at least one held, and the run itself did not break."""
        return self.outcome == "PASS"

    @property
    def judged_nothing(self) -> bool:
        """Every invariant was not judged: the run proves nothing (a client that never started)."""
        return not any(v.status == "pass" for v in self.verdicts)

    @property
    def failed_invariants(self) -> list[str]:
        return [v.invariant for v in self.verdicts if v.status == "fail"]

    @property
    def not_judged(self) -> list[str]:
        return [v.invariant for v in self.verdicts if v.status == "not_judged"]

    @property
    def outcome(self) -> str:
        """The one word a summary shows: ERROR (the run broke), FAIL (a verdict failed),
        UNJUDGED (nothing could be judged, which is not a pass) or PASS."""
        if self.error is not None:
            return "ERROR"
        if any(v.status == "fail" for v in self.verdicts):
            return "FAIL"
        return "UNJUDGED" if self.judged_nothing else "PASS"


@dataclass
class RunSummary:
    passed: int
    failed: int
    errors: int
    total: int
    duration: float


def summarize(results: list[ScenarioResult]) -> RunSummary:
    passed = sum(1 for r in results if r.passed)
    errors = sum(1 for r in results if r.error is not None)
    return RunSummary(
        passed=passed,
        failed=len(results) - passed,
        errors=errors,
        total=len(results),
        duration=round(sum(r.duration for r in results), 3),
    )
