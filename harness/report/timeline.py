"""The timeline picture of one run as inline SVG (no scripts, no external resources).

One lane per connection (opened .. closed, coloured by URL); on it the client's heartbeats (blue
dots above the line), the gateway's ACKs (green ticks below), dispatches with their seqs, HELLO,
READY / RESUMED, IDENTIFY / RESUME, op 7 / op 9, and the close with its code. Faults are shaded
spans across all lanes (one-shot controls are dashed lines), named in the fault rows above the
lanes. Every failed verdict marks the trace records it cites with a red ring linked to its
evidence row.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from gateway_common.facts import (
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_RECONNECT,
    OP_RESUME,
)
from harness.oracle import Connection, RunView, Verdict, last_fault_cleared

Record = dict[str, Any]

LEFT = 132
RIGHT = 24
AXIS_H = 26
FAULT_ROW_H = 17
LEGEND_H = 30
CHAR_W = 6.2  # average width of a 10-11 px sans-serif character
MIN_MARK_GAP = 1.5  # px between two routine marks of one kind in one lane
MAX_FAULT_ROWS = 6
ONE_SHOT_SPAN = 0.05  # s: a fault on for less than this is drawn as a one-shot (a dashed line)

COLORS = {
    "discovery": "#dbeafe",
    "resume": "#ede9fe",
    "other": "#e5e7eb",
    "beat": "#2563eb",
    "ack": "#16a34a",
    "live": "#15803d",
    "session": "#7c3aed",
    "dispatch": "#374151",
    "warn": "#ea580c",
    "bad": "#dc2626",
    "fault": "#f59e0b",
    "grid": "#e5e7eb",
    "text": "#111827",
    "muted": "#6b7280",
}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_step(span: float, target_ticks: int = 10) -> float:
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: int = 10,
        fill: str = COLORS["text"],
        anchor: str = "start",
        weight: str = "normal",
        title: str | None = None,
    ) -> None:
        tip = f"<title>{_esc(title)}</title>" if title else ""
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
            f'text-anchor="{anchor}" '
            f'font-weight="{weight}">{tip}{_esc(s)}</text>'
        )


def timeline_svg(
    records: Sequence[Record],
    verdicts: Sequence[Verdict] = (),
    anchor_prefix: str = "run",
    width: int = 1100,
    end_time: float | None = None,
    recovery_bound: float | None = None,
) -> str:
    """The run's timeline as an <svg> element; violations link to ``#{anchor_prefix}-{inv}``.

    With ``recovery_bound`` (the scenario's), a dotted line marks when LV1 wanted the client live.
    """
    view = RunView(records)
    conns = view.ordered_conns()
    t0 = min((float(r["ts"]) for r in records if "ts" in r), default=0.0)
    t0 = min(t0, 0.0)
    t1 = max(view.end_ts, end_time or 0.0, t0 + 1.0)
    plot_w = width - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (float(t) - t0) / (t1 - t0) * plot_w

    # Fault rows: greedy packing so bars and their labels never overlap.
    # At most MAX_FAULT_ROWS rows: a fault that fits nowhere with its name is drawn unnamed (its
    # tooltip still names it) in the first row it fits, or the last row.
    rows_end: list[float] = []
    placed: list[tuple[int, Any]] = []
    unnamed: set[int] = set()
    for w in view.windows:
        x0 = x(w.start)
        x1 = x(w.end if w.end is not None else t1)
        right = max(x1, x0 + len(w.name) * CHAR_W + 14)
        row = next((i for i, end in enumerate(rows_end) if end + 4 <= x0), None)
        if row is None and len(rows_end) < MAX_FAULT_ROWS:
            rows_end.append(right)
            placed.append((len(rows_end) - 1, w))
            continue
        if row is None:
            row = next((i for i, end in enumerate(rows_end) if end <= x0), len(rows_end) - 1)
            right = max(x1, x0 + 2)
            unnamed.add(id(w))
        rows_end[row] = max(rows_end[row], right)
        placed.append((row, w))
    n_rows = max(1, len(rows_end))
    lanes_top = AXIS_H + n_rows * FAULT_ROW_H + 8
    lane_h = 52 if len(conns) <= 8 else max(26, int(420 / len(conns)))
    lanes_h = max(1, len(conns)) * lane_h
    height = lanes_top + lanes_h + 8 + LEGEND_H
    svg = _Svg()
    svg.add(
        '<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="100%" '
        f'style="min-width:{width // 2}px" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, -apple-system, Segoe UI, '
        'sans-serif" '
        f'role="img" aria-label="timeline of the run">'
    )
    svg.add(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')

    # Time axis and grid.
    step = _nice_step(t1 - t0)
    tick = math.ceil(t0 / step) * step
    while tick <= t1 + 1e-9:
        xt = x(tick)
        svg.add(
            f'<line x1="{xt:.1f}" y1="{AXIS_H - 4}" x2="{xt:.1f}" y2="{lanes_top + lanes_h}" '
            f'stroke="{COLORS["grid"]}" stroke-width="1"/>'
        )
        svg.text(xt, AXIS_H - 8, f"{tick:g} s", size=10, fill=COLORS["muted"], anchor="middle")
        tick += step
    svg.text(8, AXIS_H + 12, "faults", size=11, fill=COLORS["muted"], weight="600")

    # Faults: shaded spans across the lanes, bars with names in the fault rows.
    for row, w in placed:
        y = AXIS_H + row * FAULT_ROW_H + 2
        x0 = x(w.start)
        tip = f"{w.kind} fault {w.name!r} on at {w.start:.2f} s" + (
            f", off at {w.end:.2f} s"
            if w.end is not None and w.end > w.start
            else " (never switched off)"
            if w.end is None
            else " (one-shot)"
        )
        params = {k: v for k, v in w.params.items() if k not in ("attributes",)}
        if params:
            tip += " " + ", ".join(f"{k}={v}" for k, v in params.items())
        if w.end is not None and w.end - w.start < ONE_SHOT_SPAN:
            svg.add(
                f'<line x1="{x0:.1f}" y1="{y}" x2="{x0:.1f}" y2="{lanes_top + lanes_h}" '
                f'stroke="{COLORS["warn"]}" stroke-width="1.2" stroke-dasharray="4 '
                f'3"><title>{_esc(tip)}</title></line>'
            )
            if id(w) not in unnamed:
                svg.text(x0 + 4, y + 11, f"⚡ {w.name}", size=10, fill=COLORS["warn"], title=tip)
            continue
        x1 = x(w.end if w.end is not None else t1)
        span = max(2.0, x1 - x0)
        svg.add(
            f'<rect x="{x0:.1f}" y="{lanes_top}" width="{span:.1f}" height="{lanes_h}" '
            f'fill="{COLORS["fault"]}" fill-opacity="0.13"><title>{_esc(tip)}</title></rect>'
        )
        svg.add(
            f'<rect x="{x0:.1f}" y="{y}" width="{span:.1f}" height="{FAULT_ROW_H - 4}" rx="3" '
            f'fill="{COLORS["fault"]}" fill-opacity="0.55"><title>{_esc(tip)}</title></rect>'
        )
        if id(w) not in unnamed:
            label = w.name + ("" if w.end is not None else " →")
            svg.text(x0 + 4, y + 10, label, size=10, title=tip)

    # Connection lanes.
    lane_of: dict[int, int] = {c.id: i for i, c in enumerate(conns)}
    for i, conn in enumerate(conns):
        _lane(svg, view, conn, lanes_top + i * lane_h, lane_h, x, t1)
    if not conns:
        svg.text(
            LEFT + 8,
            lanes_top + 20,
            "no connection reached the gateway",
            size=11,
            fill=COLORS["muted"],
        )

    # Violations: red rings on the records each failed verdict cites, linked to its evidence.
    badges: dict[tuple[int, int], int] = {}
    for v in verdicts:
        if v.status != "fail":
            continue
        shown = 0
        for idx in v.record_indices:
            if not 0 <= idx < len(records) or shown >= 4:
                continue
            rec = records[idx]
            conn_id = rec.get("conn")
            if isinstance(conn_id, int) and conn_id in lane_of:
                cy = lanes_top + lane_of[conn_id] * lane_h + lane_h / 2
            else:
                cy = AXIS_H + 8
            cx = x(float(rec.get("ts", t0)))
            shown += 1
            # The badge sits below-right of the ring (left of it at the right edge); badges of
            # several invariants on one spot stack downwards.
            badge_w = len(v.invariant) * 7 + 6
            spot = (round(cx / 6), round(cy))
            stack = badges.get(spot, 0)
            badges[spot] = stack + 1
            bx = cx + 7 if cx + 7 + badge_w <= width - 2 else cx - 7 - badge_w
            by = cy + 6 + stack * 14
            svg.add(
                f'<a href="#{_esc(anchor_prefix)}-{_esc(v.invariant)}"><g class="violation">'
                f"<title>{_esc(v.invariant)} failed: {_esc(v.evidence)} (trace line "
                f"{idx + 1})</title>"
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="none" stroke="{COLORS["bad"]}" '
                'stroke-width="2.2"/>'
                f'<rect x="{bx:.1f}" y="{by:.1f}" width="{badge_w}" height="13" rx="3" '
                f'fill="{COLORS["bad"]}"/>'
                f'<text x="{bx + 3:.1f}" y="{by + 10:.1f}" font-size="10" font-weight="700" '
                'fill="#fff">'
                f"{_esc(v.invariant)}</text></g></a>"
            )

    if recovery_bound is not None:
        cleared, _, _ = last_fault_cleared(view)
        if cleared is not None and cleared + recovery_bound <= t1:
            bx = x(cleared + recovery_bound)
            tip = (
                f"LV1: live again by {cleared + recovery_bound:.2f} s "
                f"(last fault cleared + {recovery_bound:g} s)"
            )
            svg.add(
                f'<line x1="{bx:.1f}" y1="{AXIS_H - 2}" x2="{bx:.1f}" y2="{lanes_top + lanes_h}" '
                f'stroke="{COLORS["live"]}" stroke-width="1.4" stroke-dasharray="2 3">'
                f"<title>{_esc(tip)}</title></line>"
            )
            svg.text(
                bx + 3, lanes_top - 2, "recovery bound", size=9, fill=COLORS["live"], title=tip
            )

    _legend(svg, height - LEGEND_H + 8, width)
    svg.add("</svg>")
    return "".join(svg.parts)


def _lane(
    svg: _Svg, view: RunView, conn: Connection, top: float, h: float, x: Any, t1: float
) -> None:
    mid = top + h / 2
    start = conn.start_ts
    end = conn.close_ts if conn.close_ts is not None else t1
    listener = conn.listener or "other"
    fill = COLORS.get(listener, COLORS["other"])
    svg.add(
        f'<line x1="0" y1="{top + h:.1f}" x2="{LEFT + 9999}" y2="{top + h:.1f}" '
        f'stroke="{COLORS["grid"]}"/>'
    )
    state = (
        conn.live.rec.get("t")
        if conn.live is not None
        else ("rejected" if conn.rejected else "no session")
    )
    if h < 40:  # many lanes: one compact line per connection
        svg.text(8, mid + 4, f"conn {conn.id}", size=10, weight="600")
        svg.text(58, mid + 4, f"{listener}·{state}", size=8, fill=COLORS["muted"])
    else:
        svg.text(8, mid - 2, f"conn {conn.id}", size=12, weight="600")
        svg.text(8, mid + 12, f"{listener} · {state}", size=10, fill=COLORS["muted"])
    bar_h = min(22.0, h - 14)
    svg.add(
        f'<rect x="{x(start):.1f}" y="{mid - bar_h / 2:.1f}" '
        f'width="{max(2.0, x(end) - x(start)):.1f}" '
        f'height="{bar_h:.1f}" rx="4" fill="{fill}" stroke="#94a3b8" stroke-width="0.6">'
        f"<title>conn {conn.id} on the {listener} URL, open {start:.2f} s .. "
        f"{f'{end:.2f} s' if conn.close_ts is not None else 'end'}</title></rect>"
    )
    small = h < 40
    last_seq_x = -1e9
    # Labels above the bar (IDENTIFY, READY, op 7 ...): close neighbours merge into one label.
    above: list[tuple[float, list[tuple[str, str]]]] = []

    def label_above(fx: float, text: str, color: str) -> None:
        if small:
            return
        if above and fx - above[-1][0] < 8 + sum(len(t) + 3 for t, _ in above[-1][1]) * 5.6:
            above[-1][1].append((text, color))
        else:
            above.append((fx, [(text, color)]))

    frames = sorted(conn.frames_in + conn.frames_out, key=lambda f: f.idx)
    # Routine marks (heartbeats, ACKs, dispatches) closer than a pixel or so to the previous one of
    # their kind add nothing to the picture: skip them, so a day-long trace stays a small file.
    last_mark: dict[tuple[str, Any], float] = {}
    for f in frames:
        rec = f.rec
        fx = x(f.ts)
        op = rec.get("op")
        routine = (rec["kind"], op) in (
            ("frame_in", OP_HEARTBEAT),
            ("frame_out", OP_HEARTBEAT_ACK),
        ) or (
            rec["kind"] == "frame_out"
            and op == OP_DISPATCH
            and rec.get("t") not in ("READY", "RESUMED")
        )
        if routine:
            key = (rec["kind"], op)
            if fx - last_mark.get(key, -1e9) < MIN_MARK_GAP:
                continue
            last_mark[key] = fx
        line = f"trace line {f.idx + 1}"
        if rec["kind"] == "frame_in":
            if op == OP_HEARTBEAT:
                svg.add(
                    f'<circle cx="{fx:.1f}" cy="{mid - 5:.1f}" r="2.8" fill="{COLORS["beat"]}">'
                    f"<title>client heartbeat d={rec.get('d')} at {f.ts:.2f} s "
                    f"({line})</title></circle>"
                )
            elif op in (OP_IDENTIFY, OP_RESUME):
                label = "IDENTIFY" if op == OP_IDENTIFY else f"RESUME seq={rec.get('seq')}"
                svg.add(
                    f'<rect x="{fx - 3.5:.1f}" y="{mid - 3.5:.1f}" width="7" height="7" '
                    f'fill="{COLORS["session"]}">'
                    f"<title>client {label} at {f.ts:.2f} s ({line})</title></rect>"
                )
                label_above(fx, label, COLORS["session"])
            else:
                svg.add(
                    f'<circle cx="{fx:.1f}" cy="{mid - 5:.1f}" r="2" fill="{COLORS["muted"]}">'
                    f"<title>client op {op} at {f.ts:.2f} s ({line})</title></circle>"
                )
        else:
            if op == OP_HEARTBEAT_ACK:
                svg.add(
                    f'<rect x="{fx - 0.8:.1f}" y="{mid + 3:.1f}" width="1.6" height="6" '
                    f'fill="{COLORS["ack"]}">'
                    f"<title>ACK at {f.ts:.2f} s ({line})</title></rect>"
                )
            elif op == OP_HELLO:
                svg.add(
                    f'<path d="M{fx:.1f},{mid - 11:.1f} l4,-6 h-8 z" fill="{COLORS["muted"]}">'
                    f"<title>HELLO heartbeat_interval={rec.get('heartbeat_interval')} at "
                    f"{f.ts:.2f} s ({line})</title></path>"
                )
            elif op == OP_DISPATCH and rec.get("t") in ("READY", "RESUMED"):
                t = rec.get("t")
                svg.add(
                    f'<path d="M{fx:.1f},{mid - 6:.1f} l6,6 l-6,6 l-6,-6 z" '
                    f'fill="{COLORS["live"]}">'
                    f"<title>{t} s={rec.get('s')} at {f.ts:.2f} s ({line})</title></path>"
                )
                label_above(fx, str(t), COLORS["live"])
            elif op == OP_DISPATCH:
                svg.add(
                    f'<line x1="{fx:.1f}" y1="{mid - 2:.1f}" x2="{fx:.1f}" y2="{mid + 2:.1f}" '
                    f'stroke="{COLORS["dispatch"]}" stroke-width="1"><title>dispatch '
                    f"{rec.get('t')} "
                    f"s={rec.get('s')} at {f.ts:.2f} s ({line})</title></line>"
                )
                if not small and fx - last_seq_x > 16:
                    svg.text(
                        fx,
                        mid + h / 2 - 3,
                        str(rec.get("s")),
                        size=8,
                        fill=COLORS["muted"],
                        anchor="middle",
                    )
                    last_seq_x = fx
            elif op == OP_HEARTBEAT:
                svg.add(
                    f'<circle cx="{fx:.1f}" cy="{mid - 5:.1f}" r="3.2" fill="#fff" '
                    f'stroke="{COLORS["warn"]}" '
                    f'stroke-width="1.6"><title>server op 1 (heartbeat request) at {f.ts:.2f} s '
                    f"({line})</title></circle>"
                )
            elif op in (OP_RECONNECT, OP_INVALID_SESSION):
                label = "op 7" if op == OP_RECONNECT else f"op 9 d={str(rec.get('d')).lower()}"
                color = COLORS["warn"] if op == OP_RECONNECT else COLORS["bad"]
                svg.add(
                    f'<path d="M{fx:.1f},{mid - 7:.1f} v14" stroke="{color}" stroke-width="2.2">'
                    f"<title>server {label} at {f.ts:.2f} s ({line})</title></path>"
                )
                label_above(fx, label, color)
    for lx, parts in above:
        spans = "".join(
            f'<tspan fill="{color}">{_esc((" · " if i else "") + text)}</tspan>'
            for i, (text, color) in enumerate(parts)
        )
        svg.add(
            f'<text x="{lx - 4:.1f}" y="{top + 10:.1f}" font-size="9" '
            f'font-weight="700">{spans}</text>'
        )
    rejected_status: object = None
    for idx, rec in enumerate(view.records):
        if rec.get("conn") != conn.id:
            continue
        if rec.get("kind") == "ws_rejected":
            rejected_status = rec.get("status")
            fx = x(float(rec["ts"]))
            svg.text(
                fx,
                mid + 4,
                "✕",
                size=12,
                fill=COLORS["bad"],
                anchor="middle",
                title=f"upgrade rejected with HTTP {rec.get('status')} ({rec.get('reason')}), "
                f"trace line {idx + 1}",
            )
        elif rec.get("kind") == "frame_bad":
            fx = x(float(rec["ts"]))
            svg.text(
                fx,
                mid + 4,
                "!",
                size=12,
                fill=COLORS["bad"],
                anchor="middle",
                weight="700",
                title=f"bad client frame: {rec.get('reason')}, trace line {idx + 1}",
            )
    if conn.close is not None:
        c = conn.close
        cx = x(float(c["ts"]))
        code = c.get("code")
        how = c.get("how")
        label = "RST" if how == "reset" else (str(code) if code is not None else "no code")
        if rejected_status is not None:
            label = f"HTTP {rejected_status}"
        by = c.get("by")
        color = COLORS["bad"] if by == "network" else COLORS["text"]
        tip = (
            f"closed by {by} at {float(c['ts']):.2f} s, code {code}, {how}"
            f"{', ' + str(c.get('reason')) if c.get('reason') else ''} (trace line "
            f"{(conn.close_idx or 0) + 1})"
        )
        svg.add(
            f'<line x1="{cx:.1f}" y1="{mid - 11:.1f}" x2="{cx:.1f}" y2="{mid + 11:.1f}" '
            f'stroke="{color}" '
            f'stroke-width="2.5"><title>{_esc(tip)}</title></line>'
        )
        text = f"{label} ({by})"
        if (
            cx + 8 + len(text) * CHAR_W > x(t1) + RIGHT - 2
        ):  # no room on the right: write it leftwards
            svg.text(
                cx - 6, mid + 4, text, size=10, fill=color, weight="600", anchor="end", title=tip
            )
        else:
            svg.text(cx + 8, mid + 4, text, size=10, fill=color, weight="600", title=tip)


def _legend(svg: _Svg, y: float, width: int) -> None:
    items = [
        (f'<circle cx="0" cy="-3" r="2.8" fill="{COLORS["beat"]}"/>', "heartbeat"),
        (f'<rect x="-0.8" y="-7" width="1.6" height="7" fill="{COLORS["ack"]}"/>', "ACK"),
        (
            f'<line x1="0" y1="-6" x2="0" y2="0" stroke="{COLORS["dispatch"]}"/>',
            "dispatch (seq below)",
        ),
        (f'<path d="M0,-9 l5,5 l-5,5 l-5,-5 z" fill="{COLORS["live"]}"/>', "READY / RESUMED"),
        (
            f'<rect x="-3.5" y="-7" width="7" height="7" fill="{COLORS["session"]}"/>',
            "IDENTIFY / RESUME",
        ),
        (
            f'<circle cx="0" cy="-3" r="3.2" fill="#fff" stroke="{COLORS["warn"]}" '
            'stroke-width="1.6"/>',
            "server op 1",
        ),
        (f'<path d="M0,-9 l4,-0 l-4,6 l-4,-6 z" fill="{COLORS["muted"]}"/>', "HELLO"),
        (
            f'<rect x="-6" y="-9" width="12" height="10" fill="{COLORS["fault"]}" '
            'fill-opacity="0.45"/>',
            "fault",
        ),
        (
            f'<line x1="0" y1="-9" x2="0" y2="2" stroke="{COLORS["text"]}" stroke-width="2.5"/>',
            "close (code, by)",
        ),
        (
            f'<circle cx="0" cy="-3" r="6" fill="none" stroke="{COLORS["bad"]}" stroke-width="2"/>',
            "violation",
        ),
    ]
    cx = 10.0
    for symbol, label in items:
        svg.add(f'<g transform="translate({cx + 6:.1f},{y + 8:.1f})">{symbol}</g>')
        svg.text(cx + 16, y + 9, label, size=10, fill=COLORS["muted"])
        cx += 24 + len(label) * CHAR_W
        if cx > width - 60:
            break
