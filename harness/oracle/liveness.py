"""Liveness: LV1, and when the last fault cleared (which LV1, RS1, the timeline and the
runner's early stop measure from)."""

from __future__ import annotations

import bisect
import math

from gateway_common.facts import (
    FATAL_CLOSE_CODES,
    OP_HEARTBEAT,
)
from harness.oracle.model import (
    Expectations,
    Tolerances,
    Verdict,
    fail,
    fmt,
    not_judged,
    ok,
)
from harness.oracle.view import (
    Connection,
    RunView,
    last_attempt,
    missed_ack_before,
    session_of_conns,
)


def is_teardown(view: RunView, conn: Connection, cleared: float, tol: Tolerances) -> bool:
    """Whether ``conn``'s close is the run ending: in the trace's last moments, after every fault
    cleared, and the kind of close a runner stopping the client or the gateway makes (the client
    closing with 1000/1001 or none, the network, or the server going away with 1001) rather than a
    server closing a silent client."""
    close = conn.close
    if close is None or conn.close_ts is None:
        return False
    if conn.close_ts < max(cleared, view.end_ts - tol.teardown_window):
        return False
    by, code = close.get("by"), close.get("code")
    if by == "client":
        return code in (1000, 1001, None)
    if by == "server":
        return code == 1001
    return True


def last_fault_cleared(view: RunView) -> tuple[float | None, str, int | None]:
    """(time, description, record index) of the moment the last fault cleared.

    (None, reason, None) if a fault never switched off; the start of the trace if there were none.
    """
    if not view.windows:
        return view.start_ts, "no faults: judged from the start of the run", None
    never = [w for w in view.windows if w.end is None]
    if never:
        w = never[0]
        return (
            None,
            f"fault {w.name!r} switched on at {fmt(w.start)} never switched off",
            w.start_idx,
        )
    last = max(view.windows, key=lambda w: (w.end or 0.0, w.end_idx or 0))
    assert last.end is not None
    what = "switched off" if last.end > last.start else "applied"
    return last.end, f"the last fault ({last.name!r}) {what} at {fmt(last.end)}", last.end_idx


def _power(base: float, exponent: int) -> float:
    """base ** exponent, infinite where a float overflows: a client that looped through a
    thousand attempts gives exponents past what 2.0 ** n can hold."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def backoff_allowance(view: RunView, cleared: float, tol: Tolerances) -> tuple[float, str]:
    """(seconds, why): how long after the last fault cleared at ``cleared`` the client may still
    be in the backoff wait the fault's failures put it in, which LV1 allows on top of the
    recovery bound (until the client's first attempt after the clear: see ``used_allowance``).

    Estimated as the ceiling of the client's next backoff step, with f =
    ``reconnect_backoff_factor`` (2: one doubling, as ZB1's reconnect bound) and capped at
    ``backoff_cap``. A randomised wait (full jitter: uniform(0, ceiling), discord.py's and
    nextcord's; equal jitter) averages about half its ceiling, so a wait w shows a ceiling of
    f x w, and the ceiling grows f-fold with each failed attempt after it: the waits the trace
    shows (a connection ending to the next one opening, both by ``cleared``), the k-th of m
    giving f x w x f^(m - k + 1) for the step in progress. Attempts a proxy that is down
    refuses never reach the trace: the time both URLs were down since the client's last
    connection ended (``all_paths_down``), D, is all the oracle sees of that backoff; its
    waits add up to about half the ceiling, so the step in progress may reach f x f x D. While
    a path was up, time the client did not use it is no backoff (f12: the resume URL down, the
    discovery URL up). Measured against discord.py's uniform(0, 2^n) waits (simulated, 40,000
    runs each of gateway-down-2s, f13, offline-reconnect-backoff): LV1 failed 0.6 %, 0.6 %,
    0.9 % of them (with one doubling less: 2.4 %, 1.8 %, 1.2 %). (0, "") if nothing shows a wait.
    """
    f = tol.reconnect_backoff_factor
    conns = view.ordered_conns()
    starts = [c.start_ts for c in conns]
    open_at_clear = any(
        c.start_ts <= cleared and (c.close_ts is None or c.close_ts > cleared) for c in conns
    )
    waits: list[tuple[float, Connection, Connection]] = []
    in_progress: tuple[float, Connection] | None = None
    for i, conn in enumerate(conns):
        end = conn.close_ts
        if end is None or end > cleared:
            continue
        j = max(bisect.bisect_left(starts, end), i + 1)
        nxt = conns[j] if j < len(conns) else None
        if nxt is not None and nxt.start_ts <= cleared:
            waits.append((nxt.start_ts - end, conn, nxt))
        elif not open_at_clear and (in_progress is None or end > (in_progress[1].close_ts or 0)):
            in_progress = (all_paths_down(view, end, cleared), conn)
    best, why = 0.0, ""
    m = len(waits)
    for k, (wait, before, after) in enumerate(waits, start=1):
        ceiling = f * wait * _power(f, m - k + 1) if wait > 0 else 0.0
        if ceiling > best:
            best, why = ceiling, (
                f"the client's wait of {wait:.2f} s from conn {before.id}'s end at "
                f"{fmt(before.close_ts or 0.0)} to conn {after.id} at {fmt(after.start_ts)} "
                f"x {f:g} (a random wait is about half its ceiling) x {f:g}^{m - k + 1} (a step "
                f"per failed attempt since)"
            )
    if in_progress is not None and f * f * in_progress[0] > best:
        down, before = in_progress
        best, why = f * f * down, (
            f"{f:g} x {f:g} x the {down:.2f} s both URLs were down since conn {before.id}'s end "
            f"at {fmt(before.close_ts or 0.0)}, the client's backoff through the outage"
        )
    if best <= 0.0:
        return 0.0, ""
    allowance = min(tol.backoff_cap, best)
    return allowance, f"{allowance:.2f} s backoff allowance: {why}, cap {tol.backoff_cap:g} s"


def used_allowance(view: RunView, cleared: float, allowance: float) -> float:
    """The part of the backoff ``allowance`` LV1 grants: the client's wait from ``cleared`` to
    its first connection attempt after it (its backoff ended there; from then on the recovery
    bound alone applies), all of it if there was none."""
    after = [c.start_ts for c in view.conns.values() if c.start_ts > cleared]
    return allowance if not after else min(allowance, min(after) - cleared)


def all_paths_down(view: RunView, a: float, b: float) -> float:
    """Seconds of [a, b] during which new connections could reach neither URL: a proxy ``down``
    fault (the only fault whose refused attempts leave no trace) on both at once, in one window
    aimed at both or in windows on each."""
    down: dict[str, list[tuple[float, float]]] = {"discovery": [], "resume": []}
    for w in view.windows:
        if w.kind != "proxy" or w.params.get("action") != "down":
            continue
        start, end = max(a, w.start), min(b, w.end if w.end is not None else b)
        if end <= start:
            continue
        target = w.params.get("target")
        for listener in down:
            if target in (listener, "both", "all", None):
                down[listener].append((start, end))
    edges = sorted({a, b, *(t for spans in down.values() for span in spans for t in span)})
    total = 0.0
    for lo, hi in zip(edges, edges[1:], strict=False):
        mid = (lo + hi) / 2
        if all(any(s <= mid <= e for s, e in spans) for spans in down.values()):
            total += hi - lo
    return total


def lv1_judged_by(view: RunView, exp: Expectations) -> float | None:
    """The trace time by which LV1 can tell whether the client recovered: the last fault's
    clearing plus the recovery bound and the client's backoff allowance (``backoff_allowance``).
    None if there is no such time (a fault never switched off, or the client is to stop). The
    runner keeps a run going until then (within its deadline) rather than end it first."""
    if exp.outcome == "stop":
        return None
    cleared, _, _ = last_fault_cleared(view)
    if cleared is None:
        return None
    allowance, _ = backoff_allowance(view, cleared, exp.tolerances)
    return cleared + exp.recovery_bound + used_allowance(view, cleared, allowance)


def check_lv1(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    cleared, cleared_text, cleared_idx = last_fault_cleared(view)
    conns = view.ordered_conns()
    if exp.outcome == "stop":
        fatal = [
            c
            for c in conns
            if c.close is not None
            and c.close.get("by") == "server"
            and c.close.get("code") in FATAL_CLOSE_CODES
        ]
        if not fatal:
            if not any(c.live is not None for c in conns):
                return fail(
                    "LV1",
                    "expected a fatal close and then silence, but the client never got a session "
                    "(no READY or RESUMED), so the fatal close never came",
                )
            return not_judged("LV1", "expected the client to stop, but no fatal close happened")
        # Only a connection opened after the first fatal close (and after the faults cleared)
        # is one the client should not have made: reconnecting before it is no failure.
        fatal_idx = min(c.close_idx for c in fatal if c.close_idx is not None)
        after = [
            c
            for c in conns
            if cleared is not None
            and c.open_order > max(fatal_idx, -1 if cleared_idx is None else cleared_idx)
            and c.start_ts > (cleared or 0.0)
        ]
        if cleared is None:
            ref = max((w.start_idx for w in view.windows), default=-1)
            after = [c for c in conns if c.open_order > max(ref, fatal_idx)]
        if after:
            c = after[0]
            return fail(
                "LV1",
                f"expected the client to stop; {cleared_text}, but conn {c.id} opened at "
                f"{fmt(c.start_ts)}",
                [c.open_idx or 0],
            )
        return ok("LV1", f"expected the client to stop: {cleared_text}; no connection after it")
    if cleared is None:
        return not_judged("LV1", cleared_text)
    bound = exp.recovery_bound
    full_allowance, allowance_text = backoff_allowance(view, cleared, exp.tolerances)
    allowance = used_allowance(view, cleared, full_allowance)
    if allowance < full_allowance:
        allowance_text = (f"{allowance:.2f} s (until its first attempt after the clear) of a "
                          f"{allowance_text}")
    run_end = max(view.end_ts, view.start_ts + exp.duration)
    check_at = min(cleared + bound + allowance, run_end)
    # Not judged only if the run ended before the scenario's own bound ran out; a client not
    # live by the end of a run that went past it fails, even if its allowance ran on further
    # (the runner goes on as long as its deadline lets it: world.py).
    too_short = run_end < cleared + bound
    bound_text = f"bound {bound} s" + (f" + {allowance_text}" if allowance else "")
    past_end = (
        f"; the run ended at {fmt(run_end)}, before the allowance ran out at "
        f"{fmt(cleared + bound + allowance)}"
        if allowance and run_end < cleared + bound + allowance
        else ""
    )
    idx_base = [cleared_idx] if cleared_idx is not None else []
    # Once the faults are gone, every session the client gets must heartbeat: a connection that
    # went live and then sat silent until the server closed it is the seed's failure, even if a
    # later connection is still too young to tell.
    for conn in conns:
        if conn.live is None or conn.live.ts < cleared or conn.live.ts > check_at:
            continue
        if conn.close is None or is_teardown(view, conn, cleared, exp.tolerances):
            continue
        interval = view.interval_for(conn) or 0.0
        silent = not any(b.idx > conn.live.idx for b in conn.beats())
        if silent and (conn.close_ts or 0.0) - conn.live.ts >= interval * (1 + slack) - 1e-6:
            missed, missed_idx = missed_ack_before(view, conn.live.idx, exp.tolerances.ack_wait)
            return fail(
                "LV1",
                f"{cleared_text}; conn {conn.id} got {conn.live.rec.get('t')} at "
                f"{fmt(conn.live.ts)} but sent no heartbeat until it was {conn.describe_close()}"
                + (f"; before it, {missed}" if missed else ""),
                idx_base
                + [conn.live.idx]
                + ([conn.close_idx] if conn.close_idx is not None else [])
                + missed_idx,
            )
    candidates = []
    for conn in conns:
        if conn.live is None or conn.live.ts > check_at:
            continue
        if conn.close_ts is not None and conn.close_ts < check_at:
            if not is_teardown(view, conn, cleared, exp.tolerances):
                continue
        candidates.append(conn)
    if not candidates and too_short:
        return not_judged(
            "LV1",
            f"{cleared_text}; the run ends at {fmt(run_end)}, before the "
            f"{bound} s recovery bound ran out and before the client was live",
        )
    if not candidates:
        late = next((c for c in conns if c.live is not None and c.live.ts > check_at), None)
        tail = (
            f"; the client was live again only at {fmt(late.live.ts)} (conn {late.id})"
            if late is not None and late.live is not None
            else "; it never became live again"
        )
        last_beat = max(
            (f for f in view.frames_in if f.op == OP_HEARTBEAT), key=lambda f: f.idx, default=None
        )
        beat_text = (
            f"; last heartbeat at {fmt(last_beat.ts)} (conn {last_beat.rec.get('conn')})"
            if last_beat and late is None
            else ""
        )
        # Name the frames the last attempt ended on (op 9 in answer to RESUME, a HELLO the
        # client closed on at once, ...): what a reader needs to see why it never came back.
        attempt, attempt_idx = ("", []) if late is not None else last_attempt(
            view, cleared_idx if cleared_idx is not None else -1)
        return fail(
            "LV1",
            f"{cleared_text}; no live session (READY/RESUMED sent, connection open) by "
            f"{fmt(check_at)} ({bound_text}){past_end}{tail}{beat_text}"
            + (f"; {attempt}" if attempt else ""),
            idx_base
            + (
                [late.live.idx]
                if late is not None and late.live is not None
                else [last_beat.idx]
                if last_beat
                else []
            )
            + attempt_idx,
        )
    conn = candidates[-1]
    assert conn.live is not None
    interval = view.interval_for(conn) or 0.0
    beats = [b for b in conn.beats() if b.idx > conn.live.idx]
    acked = [b for b in beats if conn.ack_after(b.idx) is not None]
    how = conn.live.rec.get("t")
    end = conn.close_ts if conn.close_ts is not None else view.end_ts
    live_text = f"conn {conn.id} got {how} at {fmt(conn.live.ts)}"
    if not acked:
        ended_by_run = conn.close is None or is_teardown(view, conn, cleared, exp.tolerances)
        if ended_by_run and end - max(conn.live.ts, cleared) <= interval * (1 + slack):
            return not_judged(
                "LV1", f"{cleared_text}; {live_text}, but the run ends before a heartbeat was due"
            )
        return fail(
            "LV1",
            f"{cleared_text}; {live_text} but no ACKed heartbeat followed on it "
            f"(heartbeats have stopped; {conn.describe_close()})",
            idx_base + [conn.live.idx],
        )
    last = acked[-1]
    if end - last.ts > interval * (1 + slack) + 1e-9 and not view.fault_active(last.ts, end, conn):
        return fail(
            "LV1",
            f"{cleared_text}; {live_text}, but its heartbeats stopped at {fmt(last.ts)} "
            f"({end - last.ts:.2f} s before {'its close' if conn.close else 'the end'}; "
            f"interval {interval:.2f} s)",
            idx_base + [conn.live.idx, last.idx],
        )
    # The outcome class: which session the client ends on.
    sessions = [f for f in view.frames_out if f.rec.get("t") == "READY"]
    first_sid = sessions[0].rec.get("session_id") if sessions else None
    current = session_of_conns(view).get(conn.id)
    if exp.outcome == "resume" and len(sessions) > 1:
        return fail(
            "LV1",
            f"expected the client to resume; {live_text}, but it started {len(sessions)} "
            f"sessions (a new READY at {fmt(sessions[1].ts)})",
            idx_base + [sessions[1].idx],
        )
    if exp.outcome == "reidentify" and (len(sessions) < 2 or current == first_sid):
        return fail(
            "LV1",
            f"expected the client to start a new session; {live_text}, still on the first "
            f"session {first_sid!r}",
            idx_base + [conn.live.idx],
        )
    outcome = f"; outcome {exp.outcome} as expected" if exp.outcome else ""
    if conn.live.ts <= cleared:
        when = "and stayed up through it"
    else:
        # The allowance is named only where the client needed it.
        named = bound_text if conn.live.ts > cleared + bound else f"bound {bound} s"
        when = f"({conn.live.ts - cleared:.2f} s later, {named})"
    return ok(
        "LV1",
        f"{cleared_text}; {live_text} {when}; "
        f"{len(acked)} ACKed heartbeat(s) after it, last at {fmt(last.ts)}{outcome}; "
        f"tolerance heartbeat_slack={slack}",
        idx_base + [conn.live.idx, last.idx],
    )
