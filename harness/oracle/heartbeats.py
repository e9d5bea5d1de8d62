"""Heartbeat invariants: HB1-HB4 and ZB1 (zombie connections)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from gateway_common.facts import (
    OP_DISPATCH,
    OP_HEARTBEAT,
    SESSION_KILLING_CLIENT_CODES,
)
from harness.oracle.model import (
    Expectations,
    Tolerances,
    Verdict,
    first_failure,
    fmt,
    not_judged,
    ok,
)
from harness.oracle.view import (
    Connection,
    Frame,
    RunView,
    missed_ack_before,
)


def check_hb1(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    judged = 0
    failures: list[tuple[str, list[int]]] = []
    proof: list[int] = []
    for conn in view.ordered_conns():
        beats = conn.beats()
        if conn.hello is None:
            if beats:
                b = beats[0]
                failures.append(
                    (f"conn {conn.id}: op 1 at {fmt(b.ts)} but HELLO was never sent", [b.idx])
                )
            continue
        early = [b for b in beats if b.idx < conn.hello.idx]
        if early:
            b = early[0]
            failures.append(
                (
                    f"conn {conn.id}: op 1 at {fmt(b.ts)} before HELLO at {fmt(conn.hello.ts)}",
                    [b.idx, conn.hello.idx],
                )
            )
            continue
        interval = conn.interval
        if interval is None:
            continue
        deadline = conn.hello.ts + interval * (1 + slack)
        if beats:
            b = beats[0]
            judged += 1
            if b.ts > deadline + 1e-9:
                failures.append(
                    (
                        f"conn {conn.id}: first heartbeat at {fmt(b.ts)}, "
                        f"{b.ts - conn.hello.ts:.2f} s "
                        f"after HELLO at {fmt(conn.hello.ts)} (bound {interval * (1 + slack):.2f} "
                        "s)",
                        [conn.hello.idx, b.idx],
                    )
                )
            else:
                proof += [conn.hello.idx, b.idx]
        else:
            end = conn.close_ts if conn.close_ts is not None else view.end_ts
            if end >= deadline - 1e-9 and not view.fault_active(conn.hello.ts, deadline, conn):
                judged += 1
                # A client that went silent after a missed ACK: name the ACK it missed.
                missed, missed_idx = missed_ack_before(view, conn.hello.idx,
                                                       exp.tolerances.ack_wait)
                failures.append(
                    (
                        f"conn {conn.id}: no heartbeat in the {end - conn.hello.ts:.2f} s after "
                        "HELLO at "
                        f"{fmt(conn.hello.ts)} (bound {interval * (1 + slack):.2f} s; "
                        f"{conn.describe_close()})"
                        + (f"; before it, {missed}" if missed else ""),
                        [conn.hello.idx] + ([conn.close_idx] if conn.close_idx is not None else [])
                        + missed_idx,
                    )
                )
    tol = f"tolerance heartbeat_slack={slack}"
    if failures:
        return first_failure("HB1", failures, tol)
    if not judged:
        return not_judged("HB1", "no connection lived long enough after HELLO to need a heartbeat")
    return ok(
        "HB1",
        f"{judged} connection(s): first heartbeat after HELLO within interval x {1 + slack}; {tol}",
        proof[:2],
    )


def _beat_gaps(view: RunView, conn: Connection) -> list[tuple[float, float, int, int | None, str]]:
    """(start, end, start_idx, end_idx, what) for each gap between this connection's heartbeats,
    including the trailing gap to its close (or the end of the trace)."""
    beats = conn.beats()
    gaps: list[tuple[float, float, int, int | None, str]] = [
        (a.ts, b.ts, a.idx, b.idx, "heartbeats") for a, b in zip(beats, beats[1:], strict=False)
    ]
    if beats:
        last = beats[-1]
        if conn.close is not None:
            gaps.append(
                (
                    last.ts,
                    float(conn.close["ts"]),
                    last.idx,
                    conn.close_idx,
                    "last heartbeat and the close",
                )
            )
        else:
            gaps.append(
                (last.ts, view.end_ts, last.idx, None, "last heartbeat and the end of the trace")
            )
    return gaps


def check_hb2(view: RunView, exp: Expectations) -> Verdict:
    slack = exp.tolerances.heartbeat_slack
    judged = excluded = 0
    worst: tuple[float, str, list[int]] | None = None
    failures: list[tuple[str, list[int]]] = []
    for conn in view.ordered_conns():
        interval = view.interval_for(conn)
        if interval is None:
            continue
        bound = interval * (1 + slack)
        for a, b, ia, ib, what in _beat_gaps(view, conn):
            window = view.fault_active(a, b, conn)
            if window is not None:
                excluded += 1
                continue
            judged += 1
            gap = b - a
            idx = [ia] + ([ib] if ib is not None else [])
            if gap > bound + 1e-9:
                failures.append(
                    (
                        f"conn {conn.id}: {gap:.2f} s between {what} ({fmt(a)} .. {fmt(b)}), bound "
                        f"{bound:.2f} s",
                        idx,
                    )
                )
            elif worst is None or gap / interval > worst[0]:
                worst = (gap / interval, f"conn {conn.id} {fmt(a)} .. {fmt(b)}", idx)
    tol = (
        f"tolerance heartbeat_slack={slack}; {excluded} gap(s) overlapping a fault window "
        "not judged"
    )
    if failures:
        return first_failure("HB2", failures, tol)
    if not judged or worst is None:
        return not_judged("HB2", f"no heartbeat gap outside fault windows to judge; {tol}")
    return ok(
        "HB2",
        f"{judged} gap(s) judged, longest {worst[0]:.2f} x interval ({worst[1]}); {tol}",
        worst[2],
    )


def check_hb3(view: RunView, exp: Expectations) -> Verdict:
    staleness = exp.tolerances.seq_staleness
    first_sent: dict[int, int] = {}  # seq -> the first trace record that sent it
    for f in view.frames_out:
        s = f.rec.get("s")
        if f.op == OP_DISPATCH and isinstance(s, int) and s not in first_sent:
            first_sent[s] = f.idx
    failures: list[tuple[str, list[int]]] = []
    judged = skipped = 0
    for conn in view.ordered_conns():
        dispatched = [
            f for f in conn.frames_out if f.op == OP_DISPATCH and isinstance(f.rec.get("s"), int)
        ]
        floor: Frame | None = None
        next_dispatch = 0
        for beat in conn.beats():
            d = beat.rec.get("d")
            judged += 1
            # Upper bound: a seq the gateway has sent by then, anywhere in the run.
            if d is not None:
                if not isinstance(d, int) or isinstance(d, bool):
                    failures.append(
                        (
                            f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d!r}, not a "
                            "seq",
                            [beat.idx],
                        )
                    )
                    continue
                if first_sent.get(d, beat.idx) >= beat.idx:
                    failures.append(
                        (
                            f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d}, a seq the "
                            "gateway "
                            f"never sent before it",
                            [beat.idx],
                        )
                    )
                    continue
            # Lower bound: dispatches sent on this connection well before the beat must show.
            while (
                next_dispatch < len(dispatched)
                and dispatched[next_dispatch].idx < beat.idx
                and dispatched[next_dispatch].ts <= beat.ts - staleness
            ):
                floor = dispatched[next_dispatch]
                next_dispatch += 1
            if floor is None:
                continue
            if view.fault_active(floor.ts, beat.ts, conn):
                skipped += 1
                continue
            s_floor = int(floor.rec["s"])
            if d is None or d < s_floor:
                failures.append(
                    (
                        f"conn {conn.id}: heartbeat at {fmt(beat.ts)} carries d={d}, but "
                        f"s={s_floor} was sent "
                        f"at {fmt(floor.ts)}",
                        [floor.idx, beat.idx],
                    )
                )
    tol = (
        f"tolerance seq_staleness={staleness} s; {skipped} beat(s) during fault windows not "
        "held to the lower bound"
    )
    if failures:
        return first_failure("HB3", failures, tol)
    if not judged:
        return not_judged("HB3", "no client heartbeats in the trace")
    return ok(
        "HB3",
        f"{judged} heartbeat(s) carried a seq the client had (or null before any dispatch); {tol}",
    )


def check_hb4(view: RunView, exp: Expectations) -> Verdict:
    within = exp.tolerances.op1_reply_within
    failures: list[tuple[str, list[int]]] = []
    judged = skipped = 0
    proof: list[int] = []
    for conn in view.ordered_conns():
        for req in (f for f in conn.frames_out if f.op == OP_HEARTBEAT):
            deadline = req.ts + within
            beats = conn.beats()
            i = bisect.bisect_right([b.idx for b in beats], req.idx) if beats else 0
            reply = beats[i] if i < len(beats) else None
            end = conn.close_ts if conn.close_ts is not None else view.end_ts
            if reply is not None and reply.ts <= deadline + 1e-9:
                judged += 1
                proof = proof or [req.idx, reply.idx]
                continue
            if end < deadline or view.fault_active(req.ts, deadline, conn):
                skipped += 1
                continue
            judged += 1
            idx = [req.idx] + ([reply.idx] if reply else [])
            if reply is not None:
                answer = f"next op 1 at {fmt(reply.ts)}"
            elif conn.close is not None:
                answer = f"no op 1 before the connection was {conn.describe_close()}"
            else:
                answer = f"no op 1 by the end of the run at {fmt(view.end_ts)} (still open)"
            failures.append((f"conn {conn.id}: server op 1 at {fmt(req.ts)}, {answer}", idx))
    tol = f"tolerance op1_reply_within={within} s"
    if failures:
        return first_failure("HB4", failures, tol)
    if not judged:
        reason = (
            "no server op 1 in the trace"
            if not skipped
            else "every server op 1 fell in a fault window or at the end"
        )
        return not_judged("HB4", reason)
    return ok("HB4", f"{judged} server op 1 answered within {within} s; {tol}", proof)


def _reconnect_bound(
    conns: Sequence[Connection], zombie: Connection, tol: Tolerances
) -> tuple[float, str]:
    """How long after closing ``zombie`` the client may take to open its next connection, and why.

    ``reconnect_within``, or ``reconnect_backoff_factor`` times the longest wait the client took
    before ``zombie`` opened (from a connection's end to the next connection's start; capped at
    ``backoff_cap``): a client whose backoff has not reset since earlier failures waits one step
    longer. Attempts refused by a proxy that is down never reach the trace, but their waits add up
    to the gap between the connections on either side of the outage.
    """
    starts = [c.start_ts for c in conns]
    limit = zombie.start_ts
    longest: tuple[float, Connection, Connection] | None = None
    for i, conn in enumerate(conns):
        if conn.id == zombie.id or conn.close_ts is None or conn.close_ts > limit:
            continue
        j = max(bisect.bisect_left(starts, conn.close_ts), i + 1)
        if j < len(conns) and conns[j].start_ts <= limit:
            wait = conns[j].start_ts - conn.close_ts
            if longest is None or wait > longest[0]:
                longest = (wait, conn, conns[j])
    text = f"reconnect_within={tol.reconnect_within} s"
    if longest is None:
        return tol.reconnect_within, text
    backoff = min(tol.backoff_cap, tol.reconnect_backoff_factor * longest[0])
    if backoff <= tol.reconnect_within:
        return tol.reconnect_within, text
    wait, before, after = longest
    return backoff, (
        f"{tol.reconnect_backoff_factor:g} x the client's earlier wait of {wait:.2f} s "
        f"(conn {before.id} ended at {fmt(before.close_ts or 0.0)}, conn {after.id} opened at "
        f"{fmt(after.start_ts)})"
    )


def check_zb1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    proof: list[int] = []
    proof_text = ""
    conns = view.ordered_conns()
    for conn in conns:
        interval = view.interval_for(conn)
        if interval is None:
            continue
        beats = conn.beats()
        unacked: Frame | None = None
        open_until = conn.close_ts if conn.close_ts is not None else view.end_ts
        for i, beat in enumerate(beats):
            nxt = beats[i + 1].idx if i + 1 < len(beats) else None
            ack = conn.ack_after(beat.idx)
            answered = ack is not None and (nxt is None or ack.idx < nxt)
            if not answered and open_until - beat.ts >= interval * tol.ack_wait:
                unacked = beat
                break
        if unacked is None:
            continue
        deadline = unacked.ts + interval * (1 + tol.heartbeat_slack) + tol.zombie_close_grace
        close = conn.close
        if close is not None and close.get("by") != "client" and float(close["ts"]) <= deadline:
            continue  # the server or the network ended it first: nothing for the client to detect
        if close is None and view.end_ts < deadline:
            continue  # the run ended too soon to tell
        judged += 1
        bound = f"the client should have closed it by {fmt(deadline)}"
        if close is None or close.get("by") != "client" or float(close["ts"]) > deadline:
            failures.append(
                (
                    f"conn {conn.id}: heartbeat at {fmt(unacked.ts)} got no ACK; connection "
                    f"{conn.describe_close()} ({bound})",
                    [unacked.idx] + ([conn.close_idx] if conn.close_idx is not None else []),
                )
            )
            continue
        code = close.get("code")
        if code in SESSION_KILLING_CLIENT_CODES:
            failures.append(
                (
                    f"conn {conn.id}: zombie close at {fmt(close['ts'])} used code {code}, which "
                    "kills the session",
                    [unacked.idx, conn.close_idx or 0],
                )
            )
            continue
        close_ts = float(close["ts"])
        # The reconnect: the first connection opened after the unACKed beat. It may open before
        # the zombie's close is recorded (the client reconnects once it has sent its close
        # frame; the gateway records the close when the closing handshake or TCP ends, and a
        # silent server answers neither), so it is not sought after the close only.
        nxt_conn = next((c for c in conns if c.id != conn.id and c.start_ts >= unacked.ts
                         and (c.open_idx or 0) > (conn.open_idx or 0)), None)
        within, within_text = _reconnect_bound(conns, conn, tol)
        if nxt_conn is None and view.end_ts < close_ts + within:
            judged -= 1  # the run ended before the client was due to reconnect
            continue
        if nxt_conn is None or nxt_conn.start_ts > close_ts + within:
            when = (
                f"next connection at {fmt(nxt_conn.start_ts)}"
                if nxt_conn
                else f"no later connection by the end of the run at {fmt(view.end_ts)}"
            )
            failures.append(
                (
                    f"conn {conn.id}: zombie closed at {fmt(close_ts)} but {when} (bound "
                    f"{within:.2f} s: {within_text})",
                    [unacked.idx, conn.close_idx or 0],
                )
            )
            continue
        proof = proof or [unacked.idx, conn.close_idx or 0, nxt_conn.open_idx or 0]
        proof_text = (
            f"conn {conn.id}: heartbeat at {fmt(unacked.ts)} unACKed, client closed at "
            f"{fmt(close_ts)} "
            f"with {'code ' + str(code) if code is not None else 'no code'}, conn {nxt_conn.id} "
            "opened at "
            f"{fmt(nxt_conn.start_ts)} (bound {within:.2f} s: {within_text})"
        )
    tol_text = (
        f"tolerances heartbeat_slack={tol.heartbeat_slack}, "
        f"zombie_close_grace={tol.zombie_close_grace} s, "
        f"reconnect_within={tol.reconnect_within} s, "
        f"reconnect_backoff_factor={tol.reconnect_backoff_factor}"
    )
    if failures:
        return first_failure("ZB1", failures, tol_text)
    if not judged:
        return not_judged(
            "ZB1", "no connection had an unACKed heartbeat the client was due to detect"
        )
    return ok("ZB1", f"{proof_text}; {tol_text}", proof)
