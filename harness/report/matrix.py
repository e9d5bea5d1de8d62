"""The conformance matrix: clients x scenarios, each cell pass / fail (which invariants) / error,
or, when a cell ran several times (``validate --repeat N``), flaky (k of N runs failed).

Rendered to Markdown (for READMEs and PR comments) and to a self-contained HTML table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.model import ScenarioResult

EVIDENCE_CHARS = 240  # one failing run's evidence, as a matrix shows it


@dataclass(frozen=True)
class Cell:
    """One scenario x client. ``runs`` is how many times it ran, ``bad_runs`` how many of them
    did not pass. "fail": no run passed; ``failed`` names the invariants that failed in every
    failing run. "flaky": some runs passed and some did not; ``tally`` counts, over the runs that
    did not pass, each failed invariant (ERROR and UNJUDGED for runs that judged nothing).
    ``evidence``: one line per run that did not pass, when the cell ran more than once."""

    status: str  # "pass" | "fail" | "flaky" | "unjudged" | "error" | "missing"
    failed: tuple[str, ...] = ()
    not_judged: tuple[str, ...] = ()
    error: str | None = None
    runs: int = 1
    bad_runs: int = 0
    tally: tuple[tuple[str, int], ...] = ()
    evidence: tuple[str, ...] = ()

    def short(self) -> str:
        of = f" ({self.bad_runs}/{self.runs})" if self.runs > 1 else ""
        if self.status == "pass":
            nj = f" ({len(self.not_judged)} nj)" if self.not_judged else ""
            return "pass" + nj + (f" x{self.runs}" if self.runs > 1 else "")
        if self.status == "fail":
            if self.failed:
                return "FAIL " + ", ".join(self.failed) + of
            return "FAIL" + of + " " + _tally_text(self.tally)
        if self.status == "flaky":
            return f"FLAKY {self.bad_runs}/{self.runs} failed: {_tally_text(self.tally)}"
        if self.status == "error":
            return "ERROR" + of
        if self.status == "unjudged":
            return "UNJUDGED" + of
        return "-"


def _tally_text(tally: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{what} {n}" for what, n in tally)


@dataclass(frozen=True)
class Matrix:
    clients: tuple[str, ...]  # column keys: "client" or "client/mode" when several modes ran
    scenarios: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]  # (scenario, client) -> cell

    def cell(self, scenario: str, client: str) -> Cell:
        return self.cells.get((scenario, client), Cell("missing"))

    def pass_count(self, client: str) -> int:
        return sum(1 for s in self.scenarios if self.cell(s, client).status == "pass")

    def statuses(self) -> set[str]:
        return {cell.status for cell in self.cells.values()}


def conformance_matrix(results: Sequence[ScenarioResult]) -> Matrix:
    modes = {r.mode for r in results}
    clients: list[str] = []
    scenarios: list[str] = []
    runs: dict[tuple[str, str], list[ScenarioResult]] = {}
    for r in results:
        column = r.client if len(modes) == 1 else f"{r.client}/{r.mode}"
        if column not in clients:
            clients.append(column)
        if r.name not in scenarios:
            scenarios.append(r.name)
        runs.setdefault((r.name, column), []).append(r)
    cells = {key: cell_of(group) for key, group in runs.items()}
    return Matrix(tuple(clients), tuple(scenarios), cells)


def cell_of(runs: Sequence[ScenarioResult]) -> Cell:
    """The cell for every run of one scenario by one client (see ``Cell``)."""
    bad = [r for r in runs if r.outcome != "PASS"]
    failing = [r for r in runs if r.outcome == "FAIL"]
    errors = [r.error for r in runs if r.error is not None]
    if not bad:
        status = "pass"
    elif len(bad) < len(runs):
        status = "flaky"
    else:
        status = "fail" if failing else "error" if errors else "unjudged"
    if status == "pass":  # what no run could judge
        not_judged = [i for i in runs[0].not_judged if all(i in r.not_judged for r in runs)]
    else:
        not_judged = list(runs[0].not_judged)
    every = [i for i in failing[0].failed_invariants
             if all(i in r.failed_invariants for r in failing)] if failing else []
    return Cell(
        status,
        failed=tuple(every) if status == "fail" else (),
        not_judged=tuple(not_judged),
        error=errors[0] if status == "error" else None,
        runs=len(runs),
        bad_runs=len(bad),
        tally=_tally(bad),
        evidence=tuple(_run_evidence(r) for r in bad) if len(runs) > 1 else (),
    )


def _tally(bad: Sequence[ScenarioResult]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for r in bad:
        for what in r.failed_invariants if r.outcome == "FAIL" else [r.outcome]:
            counts[what] = counts.get(what, 0) + 1
    return tuple(counts.items())


def _run_evidence(r: ScenarioResult) -> str:
    """``#2 LV1: no live session by ...``: why one run did not pass, in one line."""
    if r.error is not None:
        why = f"ERROR: {r.error}"
    else:
        failed = [v for v in r.verdicts if v.status == "fail"]
        why = (f"{failed[0].invariant}: {failed[0].evidence}" if failed
               else "UNJUDGED: nothing could be judged")
        if len(failed) > 1:
            why += f" (and {', '.join(v.invariant for v in failed[1:])})"
    why = " ".join(why.split())
    if len(why) > EVIDENCE_CHARS:
        why = why[: EVIDENCE_CHARS - 3] + "..."
    return f"#{r.repeat}: {why}" if r.repeat is not None else why


def matrix_markdown(results: Sequence[ScenarioResult]) -> str:
    m = conformance_matrix(results)
    header = "| scenario | " + " | ".join(m.clients) + " |"
    lines = [header, "|---|" + "---|" * len(m.clients)]
    for s in m.scenarios:
        row = []
        for c in m.clients:
            cell = m.cell(s, c)
            text = cell.short()
            if cell.status == "pass":
                text = "✅ " + text
            elif cell.status == "flaky":
                text = "⚠️ " + text
            elif cell.status in ("fail", "error", "unjudged"):
                text = "❌ " + text
            row.append(text.replace("|", "\\|"))
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    lines.append(
        "| **passed** | "
        + " | ".join(f"**{m.pass_count(c)}/{len(m.scenarios)}**" for c in m.clients)
        + " |"
    )
    lines.append("")
    lines.append("nj = invariants not judged in that run (nothing in the trace to judge them by).")
    if any(cell.runs > 1 for cell in m.cells.values()):
        lines.append("Each cell ran several times: pass = every run passed; FAIL = no run passed "
                     "(the invariants named failed in every run); FLAKY k/N = k of N runs failed "
                     "(count of each failed invariant).")
    flaky = [(s, c) for s in m.scenarios for c in m.clients if m.cell(s, c).status == "flaky"]
    if flaky:
        lines.append("")
        lines.append("Flaky cells, each failing run:")
        for s, c in flaky:
            for line in m.cell(s, c).evidence:
                lines.append(f"- {s} / {c} {line}".replace("|", "\\|"))
    return "\n".join(lines) + "\n"


MATRIX_CSS = """
table.matrix{border-collapse:collapse;font:13px system-ui,sans-serif}
table.matrix th,table.matrix td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
table.matrix th{background:#f6f8fa;position:sticky;top:0}
table.matrix td.pass{background:#e6f4ea;color:#137333}
table.matrix td.fail{background:#fce8e6;color:#a50e0e;font-weight:600}
table.matrix td.flaky{background:#fff1e0;color:#9a4b00;font-weight:600}
table.matrix td.error{background:#f3e8fd;color:#681da8;font-weight:600}
table.matrix td.unjudged{background:#fff8c5;color:#7d4e00;font-weight:600}
table.matrix td.missing{color:#8c959f}
"""


def matrix_table_html(results: Sequence[ScenarioResult]) -> str:
    """The matrix as an HTML <table> fragment (class "matrix"), for embedding."""
    m = conformance_matrix(results)
    esc = html.escape
    out = ['<table class="matrix"><thead><tr><th>scenario</th>']
    out += [f"<th>{esc(c)}</th>" for c in m.clients]
    out.append("</tr></thead><tbody>")
    for s in m.scenarios:
        out.append(f"<tr><th>{esc(s)}</th>")
        for c in m.clients:
            cell = m.cell(s, c)
            tip = "\n".join(cell.evidence) or cell.error or (
                ("not judged: " + ", ".join(cell.not_judged)) if cell.not_judged else ""
            )
            out.append(f'<td class="{cell.status}" title="{esc(tip)}">{esc(cell.short())}</td>')
        out.append("</tr>")
    out.append("<tr><th>passed</th>")
    out += [f"<td>{m.pass_count(c)}/{len(m.scenarios)}</td>" for c in m.clients]
    out.append("</tr></tbody></table>")
    return "".join(out)


def matrix_html(
    results: Sequence[ScenarioResult], title: str = "Gateway client conformance"
) -> str:
    """A self-contained HTML page holding the matrix."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta '
        f'charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font:14px system-ui,sans-serif;margin:24px}"
        f"{MATRIX_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{matrix_table_html(results)}"
        "<p>Cells: pass, FAIL with the failed invariants (see the run reports for evidence), ERROR "
        "when the "
        "run itself broke. nj = invariants not judged. A cell run N times (validate --repeat N) "
        "passes if every run passed, FAILs if none did, and is FLAKY when k of N failed (hover "
        "it for each failing run's evidence).</p></body></html>\n"
    )
