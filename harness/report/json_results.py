"""JSON results (`gateway-harness run --json FILE`); the schema is documented in the README."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway_common.errors import UserError
from harness.oracle import Verdict
from harness.report.model import ScenarioResult, summarize

SCHEMA = "gateway-harness/results/1"


def results_to_dict(
    results: Sequence[ScenarioResult], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    s = summarize(list(results))
    return {
        "schema": SCHEMA,
        "summary": {
            "passed": s.passed,
            "failed": s.failed,
            "errors": s.errors,
            "total": s.total,
            "duration": s.duration,
        },
        "meta": dict(meta or {}),
        "scenarios": [_scenario(r) for r in results],
    }


def _scenario(r: ScenarioResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "mode": r.mode,
        "client": r.client,
        "repeat": r.repeat,
        "passed": r.passed,
        "outcome": r.outcome,
        "error": r.error,
        "duration": round(r.duration, 3),
        "failed_invariants": r.failed_invariants,
        "not_judged": r.not_judged,
        "source": r.source,
        "tags": list(r.tags),
        "seed": r.seed,
        "scenario_path": str(r.scenario_path) if r.scenario_path else None,
        "recovery_bound": r.recovery_bound,
        "trace": str(r.trace_path) if r.trace_path else None,
        "stderr_tail": r.stderr_tail,
        "verdicts": [
            {
                "invariant": v.invariant,
                "status": v.status,
                "evidence": v.evidence,
                "record_indices": list(v.record_indices),
            }
            for v in r.verdicts
        ],
    }


def write_json(
    results: Sequence[ScenarioResult], path: str | Path, meta: dict[str, Any] | None = None
) -> None:
    Path(path).write_text(
        json.dumps(results_to_dict(results, meta), indent=2) + "\n", encoding="utf-8"
    )


def results_from_dict(data: dict[str, Any], source: str = "<results>") -> list[ScenarioResult]:
    """Rebuild results from a results document (records are not stored: load them from `trace`).

    ``passed`` and ``outcome`` are recomputed from the verdicts and the error."""
    try:
        scenarios = data["scenarios"]
        out: list[ScenarioResult] = []
        for s in scenarios:
            verdicts = [
                Verdict(
                    v["invariant"], v["status"], v["evidence"], tuple(v.get("record_indices", ()))
                )
                for v in s.get("verdicts", [])
            ]
            out.append(
                ScenarioResult(
                    name=s["name"],
                    mode=s["mode"],
                    client=s["client"],
                    verdicts=verdicts,
                    trace_path=Path(s["trace"]) if s.get("trace") else None,
                    stderr_tail=s.get("stderr_tail", ""),
                    duration=float(s.get("duration", 0.0)),
                    error=s.get("error"),
                    source=s.get("source", ""),
                    tags=tuple(s.get("tags", ())),
                    seed=s.get("seed"),
                    scenario_path=Path(s["scenario_path"]) if s.get("scenario_path") else None,
                    recovery_bound=s.get("recovery_bound"),
                    repeat=s.get("repeat"),
                )
            )
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: not a gateway-harness results file ({exc})") from None


def load_json(path: str | Path) -> list[ScenarioResult]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read results: {exc}") from None
    return results_from_dict(data, str(path))
