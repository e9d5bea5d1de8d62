"""The terminal summary table, printed at the end of `gateway-harness run`."""

from __future__ import annotations

from collections.abc import Sequence

from harness.report.model import ScenarioResult, summarize

_COLORS = {"PASS": "\x1b[32m", "FAIL": "\x1b[31m", "ERROR": "\x1b[35m", "UNJUDGED": "\x1b[33m"}
_RESET = "\x1b[0m"


def summary_table(results: Sequence[ScenarioResult], color: bool = False, width: int = 100) -> str:
    """A fixed-width table: scenario, outcome, failed invariants (or the error), time.

    Ends with a one-line total. ``color`` adds ANSI colors to the outcome column.
    """
    rows: list[tuple[str, str, str, str]] = []
    for r in results:
        if r.error is not None:
            detail = f"error: {r.error}"
        elif r.failed_invariants:
            detail = ", ".join(r.failed_invariants)
        elif r.outcome == "UNJUDGED":
            detail = "nothing could be judged (did the client run?)"
        else:
            detail = f"- ({len(r.not_judged)} not judged)" if r.not_judged else "-"
        who = (
            r.label
            if len({(x.client, x.mode) for x in results}) == 1
            else f"{r.label} [{r.client}/{r.mode}]"
        )
        rows.append((who, r.outcome, detail, f"{r.duration:.1f}s"))
    name_w = max([len("scenario")] + [len(row[0]) for row in rows])
    fixed = name_w + 2 + 8 + 2 + 2 + 7
    detail_w = max(20, width - fixed)
    lines = [
        f"{'scenario':<{name_w}}  {'outcome':<8}  {'failed invariants':<{detail_w}}  {'time':>7}"
    ]
    lines.append("-" * len(lines[0]))
    for name, outcome, detail, took in rows:
        if len(detail) > detail_w:
            detail = detail[: detail_w - 3] + "..."
        shown = f"{outcome:<8}"
        if color:
            shown = f"{_COLORS[outcome]}{shown}{_RESET}"
        lines.append(f"{name:<{name_w}}  {shown}  {detail:<{detail_w}}  {took:>7}")
    s = summarize(list(results))
    tail = f"{s.passed} passed, {s.failed} failed"
    if s.errors:
        tail += f" ({s.errors} errors)"
    lines.append("-" * len(lines[0]))
    lines.append(f"{tail} of {s.total} scenario(s)")
    return "\n".join(lines)


def failure_details(results: Sequence[ScenarioResult]) -> str:
    """The evidence of every failed verdict, for printing under the table."""
    out: list[str] = []
    for r in results:
        if r.error is not None:
            out.append(f"{r.label}: ERROR {r.error}")
        elif r.outcome == "UNJUDGED":
            out.append(f"{r.label}: UNJUDGED every invariant was not judged; "
                       "the trace may be empty")
        for v in r.verdicts:
            if v.status == "fail":
                out.append(f"{r.label}: {v.invariant} {v.evidence}")
    return "\n".join(out)
