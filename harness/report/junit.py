"""JUnit XML (`--junit FILE`): one testcase per scenario; failures carry the evidence."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.report.model import ScenarioResult, summarize


def junit_xml(results: Sequence[ScenarioResult], suite_name: str = "gateway-harness") -> str:
    s = summarize(list(results))
    suites = ET.Element(
        "testsuites",
        name=suite_name,
        tests=str(s.total),
        failures=str(s.failed - s.errors),
        errors=str(s.errors),
        time=f"{s.duration:.3f}",
    )
    groups: dict[tuple[str, str], list[ScenarioResult]] = {}
    for r in results:
        groups.setdefault((r.client, r.mode), []).append(r)
    for (client, mode), group in groups.items():
        g = summarize(group)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{suite_name}.{client}.{mode}",
            tests=str(g.total),
            failures=str(g.failed - g.errors),
            errors=str(g.errors),
            skipped="0",
            time=f"{g.duration:.3f}",
        )
        for r in group:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{suite_name}.{client}.{mode}",
                name=r.label,
                time=f"{r.duration:.3f}",
            )
            if r.error is not None:
                err = ET.SubElement(case, "error", message=r.error, type="RunError")
                err.text = r.error + (
                    "\n\nstderr (tail):\n" + r.stderr_tail if r.stderr_tail else ""
                )
            elif r.outcome == "UNJUDGED":
                fail = ET.SubElement(
                    case, "failure", message="nothing could be judged", type="NothingJudged"
                )
                fail.text = "\n".join(f"{v.invariant}: {v.evidence}" for v in r.verdicts)
            elif r.failed_invariants:
                failed = [v for v in r.verdicts if v.status == "fail"]
                fail = ET.SubElement(
                    case,
                    "failure",
                    message=f"failed: {', '.join(r.failed_invariants)}",
                    type="InvariantViolated",
                )
                fail.text = "\n".join(f"{v.invariant}: {v.evidence}" for v in failed)
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(f"{v.invariant} {v.status}: {v.evidence}" for v in r.verdicts) + (
                f"\ntrace: {r.trace_path}" if r.trace_path else ""
            )
            if r.stderr_tail:
                ET.SubElement(case, "system-err").text = r.stderr_tail
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )


def write_junit(results: Sequence[ScenarioResult], path: str | Path) -> None:
    Path(path).write_text(junit_xml(results), encoding="utf-8")
