"""One self-contained HTML file per run: summary, and per scenario a timeline and the verdict table.

No scripts, no fonts, no network fetches: inline CSS and inline SVG only, so the file can be
attached to a CI run or mailed and still open years later.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway_common.trace import load_jsonl
from harness.oracle import invariant_title
from harness.report.model import Record, ScenarioResult, summarize
from harness.report.timeline import timeline_svg

CSS = """
:root{--pass:#137333;--pass-bg:#e6f4ea;--fail:#a50e0e;--fail-bg:#fce8e6;--nj:#5f6368;--nj-bg:#f1f3f4;
--err:#681da8;--err-bg:#f3e8fd;--line:#d0d7de;--muted:#57606a}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:21px}
header .meta{color:#c9d1d9;font-size:13px}
main{padding:18px 28px;max-width:1240px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 18px;
margin:0 0 18px}
.totals{display:flex;gap:14px;margin:6px 0 0}
.total{padding:8px 14px;border-radius:6px;font-weight:600}
.total.pass{background:var(--pass-bg);color:var(--pass)}.total.fail{background:var(--fail-bg);color:var(--fail)}
.total.all{background:#eaeef2}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;font-size:13px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:700;
white-space:nowrap}
.badge.pass,.badge.PASS{background:var(--pass-bg);color:var(--pass)}
.badge.fail,.badge.FAIL{background:var(--fail-bg);color:var(--fail)}
.badge.not_judged{background:var(--nj-bg);color:var(--nj)}
.badge.ERROR{background:var(--err-bg);color:var(--err)}
.badge.UNJUDGED{background:#fff8c5;color:#7d4e00}
h2{font-size:18px;margin:0 0 4px;display:flex;align-items:center;gap:10px}
h2 a{color:inherit;text-decoration:none}
.sub{color:var(--muted);font-size:13px;margin:0 0 8px}
.desc{margin:6px 0 12px;max-width:920px}
.timeline-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:6px;margin:8px 0 14px}
svg.timeline a:hover circle{stroke-width:3.5}
tr.fail td{background:#fff7f6}
tr:target td{outline:2px solid #d29922;background:#fff8c5}
td.inv{white-space:nowrap;font-weight:700}
td.inv small{display:block;font-weight:400;color:var(--muted);white-space:normal;max-width:230px}
td.lines{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;color:var(--muted)}
.error{background:var(--err-bg);color:var(--err);padding:8px 12px;border-radius:6px;margin:8px 0;
font-family:ui-monospace,monospace;white-space:pre-wrap}
details pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow-x:auto;font-size:12px}
.index td.name a{font-weight:600}
.index th,.index td.name,.index td:nth-child(6),.index td:nth-child(7){white-space:nowrap}
.why{color:var(--muted);font-size:12px;max-width:520px}
.tally{margin:10px 0 0;color:var(--muted)}
.tally b{color:var(--fail)}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def slug(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", name).strip("-") or "scenario"


def records_of(result: ScenarioResult) -> list[Record]:
    """The result's trace records, loaded from its trace file when they were not kept in memory."""
    if result.records:
        return result.records
    if result.trace_path is not None and Path(result.trace_path).exists():
        try:
            return load_jsonl(result.trace_path)
        except (OSError, ValueError):
            return []
    return []


def _anchor(result: ScenarioResult, index: int) -> str:
    return f"s{index}-{slug(result.name)}-{slug(result.client)}-{slug(result.mode)}"


def render_html(
    results: Sequence[ScenarioResult],
    title: str = "gateway-harness run",
    meta: dict[str, Any] | None = None,
) -> str:
    s = summarize(list(results))
    meta = dict(meta or {})
    meta.setdefault("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    meta_text = " · ".join(f"{k}: {v}" for k, v in meta.items() if v is not None)
    out: list[str] = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{_esc(title)}</h1><div class="meta">{_esc(meta_text)}</div></header><main>',
        '<section class="card"><div class="totals">',
        f'<span class="total pass">{s.passed} passed</span>',
        f'<span class="total fail">{s.failed} failed</span>',
        f'<span class="total all">{s.total} scenario(s) · {s.duration:.1f} s</span></div>',
        _tally(results),
        '<table class="index" '
        'style="margin-top:12px"><thead><tr><th>scenario</th><th>client</th><th>mode</th>'
        "<th>outcome</th><th>failed invariants</th><th>not "
        "judged</th><th>time</th></tr></thead><tbody>",
    ]
    for i, r in enumerate(results):
        failed = ", ".join(r.failed_invariants) or ("error" if r.error else "–")
        why = r.error or next((v.evidence for v in r.verdicts if v.status == "fail"), "")
        if len(why) > 140:
            why = why[:137] + "…"
        why_html = f'<div class="why">{_esc(why)}</div>' if why else ""
        out.append(
            '<tr><td class="name"><a '
            f'href="#{_anchor(r, i)}">{_esc(r.label)}</a></td><td>{_esc(r.client)}</td>'
            f'<td>{_esc(r.mode)}</td><td><span class="badge {r.outcome}">{r.outcome}</span></td>'
            f"<td>{_esc(failed)}{why_html}</td><td>{len(r.not_judged)}</td>"
            f"<td>{r.duration:.1f} s</td></tr>"
        )
    out.append("</tbody></table></section>")
    for i, r in enumerate(results):
        out.append(_scenario_section(r, _anchor(r, i)))
    out.append(
        '<p class="sub">Invariants are judged from the gateway\'s trace alone (client frames in, '
        "server frames "
        "out); evidence cites trace times, connection ids and trace lines (1-based lines of the "
        "JSON-lines "
        "trace). <em>not judged</em> means the run gave that invariant nothing to judge, never "
        "that it held."
        "</p></main></body></html>\n"
    )
    return "".join(out)


def _tally(results: Sequence[ScenarioResult]) -> str:
    """Which invariants failed, and in how many scenarios (most first)."""
    counts: dict[str, int] = {}
    for r in results:
        for inv in r.failed_invariants:
            counts[inv] = counts.get(inv, 0) + 1
    if not counts:
        return ""
    parts = [
        f'<span title="{_esc(invariant_title(inv))}"><b>{_esc(inv)}</b> × {n}</span>'
        for inv, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return f'<p class="tally">failed invariants: {" · ".join(parts)}</p>'


def _scenario_section(r: ScenarioResult, anchor: str) -> str:
    records = records_of(r)
    out = [f'<section class="card" id="{anchor}">']
    out.append(
        f'<h2><span class="badge {r.outcome}">{r.outcome}</span><a '
        f'href="#{anchor}">{_esc(r.label)}</a></h2>'
    )
    bits = [f"client {r.client}", f"mode {r.mode}", f"{r.duration:.1f} s"]
    if r.source:
        bits.append(f"source {r.source}")
    if r.seed is not None:
        bits.append(f"seed {r.seed}")
    if r.tags:
        bits.append("tags " + ", ".join(r.tags))
    if r.trace_path:
        bits.append(f"trace {r.trace_path}")
    out.append(f'<p class="sub">{_esc(" · ".join(bits))}</p>')
    if r.description:
        out.append(f'<p class="desc">{_esc(" ".join(r.description.split()))}</p>')
    if r.error:
        out.append(f'<div class="error">run error: {_esc(r.error)}</div>')
    if records:
        out.append('<div class="timeline-wrap">')
        out.append(
            timeline_svg(records, r.verdicts, anchor_prefix=anchor, recovery_bound=r.recovery_bound)
        )
        out.append("</div>")
    else:
        out.append('<p class="sub">No trace records to draw.</p>')
    if r.verdicts:
        out.append(
            "<table><thead><tr><th>invariant</th><th>status</th><th>evidence</th><th>trace "
            "lines</th></tr>"
            "</thead><tbody>"
        )
        order = {"fail": 0, "pass": 1, "not_judged": 2}
        for v in sorted(r.verdicts, key=lambda v: order.get(v.status, 3)):
            lines = ", ".join(str(i + 1) for i in v.record_indices[:12])
            if len(v.record_indices) > 12:
                lines += ", …"
            out.append(
                f'<tr id="{anchor}-{_esc(v.invariant)}" class="{v.status}"><td '
                f'class="inv">{_esc(v.invariant)}'
                f"<small>{_esc(invariant_title(v.invariant))}</small></td>"
                f'<td><span class="badge {v.status}">{v.status.replace("_", " ")}</span></td>'
                f'<td>{_esc(v.evidence)}</td><td class="lines">{_esc(lines)}</td></tr>'
            )
        out.append("</tbody></table>")
    if r.stderr_tail:
        out.append(
            "<details><summary>client stderr "
            f"(tail)</summary><pre>{_esc(r.stderr_tail)}</pre></details>"
        )
    out.append("</section>")
    return "".join(out)


def write_html(
    results: Sequence[ScenarioResult],
    path: str | Path,
    title: str = "gateway-harness run",
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the run report; ``path`` may be a folder (then ``report.html`` inside it)."""
    target = Path(path)
    if target.is_dir() or str(path).endswith(("/", "\\")):
        target.mkdir(parents=True, exist_ok=True)
        target = target / "report.html"
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(results, title, meta), encoding="utf-8")
    return target
