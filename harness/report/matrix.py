"""The conformance matrix: clients x scenarios, each cell pass / fail (which invariants) / error.

Rendered to Markdown (for READMEs and PR comments) and to a self-contained HTML table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.model import ScenarioResult


@dataclass(frozen=True)
class Cell:
    status: str  # "pass" | "fail" | "unjudged" | "error" | "missing"
    failed: tuple[str, ...] = ()
    not_judged: tuple[str, ...] = ()
    error: str | None = None

    def short(self) -> str:
        if self.status == "pass":
            return "pass" + (f" ({len(self.not_judged)} nj)" if self.not_judged else "")
        if self.status == "fail":
            return "FAIL " + ", ".join(self.failed)
        if self.status == "error":
            return "ERROR"
        if self.status == "unjudged":
            return "UNJUDGED"
        return "-"


@dataclass(frozen=True)
class Matrix:
    clients: tuple[str, ...]  # column keys: "client" or "client/mode" when several modes ran
    scenarios: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]  # (scenario, client) -> cell

    def cell(self, scenario: str, client: str) -> Cell:
        return self.cells.get((scenario, client), Cell("missing"))

    def pass_count(self, client: str) -> int:
        return sum(1 for s in self.scenarios if self.cell(s, client).status == "pass")


def conformance_matrix(results: Sequence[ScenarioResult]) -> Matrix:
    modes = {r.mode for r in results}
    clients: list[str] = []
    scenarios: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for r in results:
        column = r.client if len(modes) == 1 else f"{r.client}/{r.mode}"
        if column not in clients:
            clients.append(column)
        if r.name not in scenarios:
            scenarios.append(r.name)
        if r.error is not None:
            cell = Cell("error", error=r.error)
        else:
            status = {"PASS": "pass", "FAIL": "fail"}.get(r.outcome, "unjudged")
            cell = Cell(status, tuple(r.failed_invariants), tuple(r.not_judged))
        cells[(r.name, column)] = cell
    return Matrix(tuple(clients), tuple(scenarios), cells)


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
    return "\n".join(lines) + "\n"


MATRIX_CSS = """
table.matrix{border-collapse:collapse;font:13px system-ui,sans-serif}
table.matrix th,table.matrix td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
table.matrix th{background:#f6f8fa;position:sticky;top:0}
table.matrix td.pass{background:#e6f4ea;color:#137333}
table.matrix td.fail{background:#fce8e6;color:#a50e0e;font-weight:600}
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
            tip = cell.error or (
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
        "run itself broke. nj = invariants not judged.</p></body></html>\n"
    )
