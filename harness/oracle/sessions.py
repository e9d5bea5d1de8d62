"""Session invariants: RS1-RS5 (resuming, delivery, re-identifying) and FC1 (fatal closes)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway_common.facts import (
    FATAL_CLOSE_CODES,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_RECONNECT,
    OP_RESUME,
    REIDENTIFY_CLOSE_CODES,
    RESUMABLE_SERVER_CLOSE_CODES,
    SESSION_KILLING_CLIENT_CODES,
)
from harness.oracle.liveness import is_teardown, last_fault_cleared
from harness.oracle.model import (
    Expectations,
    Record,
    Tolerances,
    Verdict,
    fail,
    first_failure,
    fmt,
    not_judged,
    ok,
)
from harness.oracle.view import (
    Connection,
    Frame,
    RunView,
    is_live_frame,
    session_of_conns,
)


@dataclass
class Loss:
    """A connection ended while the client held a resumable session."""

    conn: Connection
    ts: float
    idx: int
    why: str


def _first_session_frame_after(view: RunView, idx: int) -> Frame | None:
    """The client's first IDENTIFY or RESUME after trace record ``idx``."""
    frames = view.session_frames
    i = bisect.bisect_right(view.session_positions, idx)
    return frames[i] if i < len(frames) else None


def _resumable_losses(view: RunView) -> list[Loss]:
    """Walk the trace keeping "does the client hold a resumable session?" and note each loss."""
    losses: list[Loss] = []
    holding = False
    reconnect_asked: set[int] = set()
    for idx, rec in enumerate(view.records):
        kind = rec.get("kind")
        conn_id = rec.get("conn")
        if kind == "frame_out":
            if is_live_frame(rec):
                holding = True
            elif rec.get("op") == OP_INVALID_SESSION:
                holding = bool(rec.get("d"))
            elif rec.get("op") == OP_RECONNECT and isinstance(conn_id, int):
                reconnect_asked.add(conn_id)
        elif kind == "conn_close" and isinstance(conn_id, int):
            by, code = rec.get("by"), rec.get("code")
            conn = view.conns[conn_id]
            resumable = False
            why = ""
            if by == "client":
                resumable = code not in SESSION_KILLING_CLIENT_CODES
                why = f"client closed with {code if code is not None else 'no code'}"
                if not resumable and conn_id in reconnect_asked:
                    resumable, why = True, f"op 7, then client closed with {code}"
            elif by == "server":
                resumable = code in RESUMABLE_SERVER_CLOSE_CODES
                why = f"server closed with {code if code is not None else 'no code'}"
            else:
                resumable = True
                why = f"network ended it ({rec.get('how')})"
            if conn_id in reconnect_asked and by != "client":
                resumable, why = True, f"op 7, then {why}"
            if holding and (resumable or conn_id in reconnect_asked):
                if conn.live is not None or any(f.op == OP_RESUME for f in conn.frames_in):
                    losses.append(Loss(conn, float(rec["ts"]), idx, why))
            if not resumable:
                holding = False
            if by == "client" and code in SESSION_KILLING_CLIENT_CODES:
                holding = False
    return losses


def _resume_path_failing(view: RunView, loss: Loss, nxt: Frame) -> str | None:
    """Why the IDENTIFY ``nxt`` after ``loss`` may be a legitimate fallback from resuming."""
    a, b, a_idx, b_idx = loss.ts, nxt.ts, loss.idx, nxt.idx
    for conn in view.ordered_conns():
        # A reconnect may open before the lost connection's close is recorded (op 7: the client
        # opens the new socket, then closes the old one at the same instant).
        opened = conn.open_order > a_idx or conn.start_ts >= a - 1e-9
        # The lost connection counts too when it was itself a failed attempt to resume (closed
        # before it was live): the fallback may follow the resume URL's last failure at once.
        own = conn.id == loss.conn.id and conn.live is None
        if not (opened or own) or conn.open_order >= b_idx:
            continue
        close = conn.close
        if (
            close is not None
            and close.get("by") == "server"
            and close.get("code") in REIDENTIFY_CLOSE_CODES
            and (conn.close_idx or -1) < b_idx
        ):
            code = close.get("code")
            return f"the server closed conn {conn.id} with {code} (start a new session)"
        if conn.live is None:
            # A RESUME on a discovery connection still waiting for its answer is the attempt
            # being judged, not a failure of the resume path.
            resumed = any(f.op == OP_RESUME for f in conn.frames_in if f.idx != b_idx)
            if conn.listener == "resume" or resumed:
                return f"conn {conn.id} to the resume URL failed ({conn.describe_close()})"
    for f in view.frames_out:
        if a_idx < f.idx < b_idx and f.op == OP_INVALID_SESSION and not f.rec.get("d"):
            return f"op 9 d=false at {fmt(f.ts)}"
    for w in view.windows:
        target = str(w.params.get("url", w.params.get("target", "")))
        if w.overlaps(a, b) and (w.kind in ("toxic", "proxy") and target in ("resume", "both", "")):
            return f"fault {w.name!r} on the resume URL from {fmt(w.start)}"
    return None


def _highest_seq_before(view: RunView) -> Callable[[int], int]:
    """A function: the highest dispatch seq the gateway sent before trace record ``idx`` (0)."""
    positions: list[int] = []
    highest: list[int] = []
    for f in view.frames_out:
        s = f.rec.get("s")
        if f.op == OP_DISPATCH and isinstance(s, int):
            positions.append(f.idx)
            highest.append(max(s, highest[-1]) if highest else s)

    def before(idx: int) -> int:
        i = bisect.bisect_left(positions, idx)
        return highest[i - 1] if i else 0

    return before


def _session_known(
    loss: Loss, delivered_sessions: set[str], seq_before: Callable[[int], int]
) -> tuple[bool, str]:
    """Whether the trace (or the delivery log) proves the client had the session it lost.

    The gateway recording READY only says it was sent: a fault may cut it in flight, and then the
    client rightly IDENTIFYs again. Proof that it arrived: the client RESUMEd on that connection
    (it knew a session), its delivery log holds the session, or a heartbeat on that connection
    after READY carried a seq the client could only have had from READY or a later dispatch
    (``d`` at least READY's ``s`` and above every seq sent to it before that READY).
    """
    conn = loss.conn
    if any(f.op == OP_RESUME and f.idx < loss.idx for f in conn.frames_in):
        return True, "it sent RESUME on that connection"
    readies = [f for f in conn.frames_out if f.rec.get("t") == "READY" and f.idx < loss.idx]
    if not readies:
        return False, f"conn {conn.id} carried no READY"
    ready = readies[-1]
    sid = ready.rec.get("session_id")
    if sid is not None and str(sid) in delivered_sessions:
        return True, f"its delivery log holds session {sid}"
    beat = _beat_cites_ready(conn, ready, loss.idx, seq_before)
    if beat is not None:
        d = beat.rec["d"]
        return True, f"its heartbeat at {fmt(beat.ts)} cited d={d}, sent only after READY"
    floor = _ready_floor(ready, seq_before)
    return False, (
        f"READY on conn {conn.id} at {fmt(ready.ts)} may never have reached the client (no "
        f"heartbeat after it cited s>{floor}, no delivery-log entry of its session)"
    )


@dataclass
class _ServerSession:
    """One session as the gateway's ``session`` records and frames show it."""

    sid: str
    shard: tuple[int, ...] | None
    conns: set[int] = field(default_factory=set)
    attached: int | None = None  # the connection it is attached to now
    detached_at: float | None = None
    gone: Record | None = None  # its "invalidated" / "expired" record
    seq: int = 0  # the highest seq the server gave it (records and frames seen so far)
    ready: Frame | None = None


def _shard_key(value: Any) -> tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list | tuple) else None


def _ready_floor(ready: Frame, seq_before: Callable[[int], int]) -> int:
    """A heartbeat citing a seq above this had READY (or a later dispatch of its session)."""
    ready_s = ready.rec["s"] if isinstance(ready.rec.get("s"), int) else 1
    return max(ready_s - 1, seq_before(ready.idx))


def _beat_cites_ready(
    conn: Connection, ready: Frame, before_idx: int, seq_before: Callable[[int], int]
) -> Frame | None:
    """A heartbeat on ``conn`` after ``ready`` whose seq the client could only have had from that
    READY on (at least READY's ``s`` and above every seq sent before it)."""
    floor = _ready_floor(ready, seq_before)
    for beat in conn.beats():
        d = beat.rec.get("d")
        if ready.idx < beat.idx < before_idx and isinstance(d, int) and d > floor:
            return beat
    return None


def _abandoned_sessions(
    view: RunView, tol: Tolerances
) -> tuple[list[tuple[str, list[int]]], set[int], int, list[str]]:
    """IDENTIFYs sent while the client's previous session was still resumable at the server.

    Judged from the gateway's ``session`` records (a trace without them judges nothing here):
    for each IDENTIFY, the last session an IDENTIFY of the same shard created, if the client
    provably had it (it RESUMEd it, its delivery log holds it, or a heartbeat cited a seq only
    that session's READY could have given it). The IDENTIFY is fine once the server invalidated
    or expired that session, or after it told the client so: op 9 d=false, a close with
    4003/4005/4007/4009 or a fatal code. Otherwise the client threw away a session it could
    resume, and with it every event the session held.

    Returns (failures, indices of the IDENTIFYs that failed or that the server's expiry of the
    session excuses, IDENTIFYs judged, not judged).
    """
    seq_before = _highest_seq_before(view)
    delivered: dict[str, int] = {}
    for e in view.delivery_log or ():
        sid, s = e.get("session_id"), e.get("s")
        if sid is not None and isinstance(s, int):
            delivered[str(sid)] = max(delivered.get(str(sid), 0), s)
    sessions: dict[str, _ServerSession] = {}
    latest: dict[tuple[int, ...] | None, str] = {}  # shard -> its last session's id
    told: set[tuple[int, ...] | None] = set()  # shards told their session was gone
    conn_sid: dict[int, str] = {}
    conn_shard: dict[int, tuple[int, ...] | None] = {}
    failures: list[tuple[str, list[int]]] = []
    decided: set[int] = set()  # IDENTIFYs judged here that RS1's loss rule must not judge again
    unknown: list[str] = []
    judged = 0

    def tell(conn_id: int) -> None:
        if conn_id in conn_shard:
            told.add(conn_shard[conn_id])
        else:  # a connection that never said whose it is: it may be any client's
            for key in latest:
                told.add(key)

    for idx, rec in enumerate(view.records):
        kind, conn_id = rec.get("kind"), rec.get("conn")
        if kind == "session":
            sid, event = str(rec.get("session_id")), rec.get("event")
            session = sessions.get(sid)
            if event == "created" and session is None and isinstance(conn_id, int):
                session = sessions[sid] = _ServerSession(sid, conn_shard.get(conn_id))
                latest[session.shard] = sid
                told.discard(session.shard)
            if session is None:
                continue
            if isinstance(rec.get("seq"), int):
                session.seq = max(session.seq, rec["seq"])
            if event in ("created", "attached") and isinstance(conn_id, int):
                session.conns.add(conn_id)
                session.attached, session.detached_at = conn_id, None
                conn_sid[conn_id] = sid
                conn_shard[conn_id] = session.shard
            elif event == "detached":
                session.attached, session.detached_at = None, float(rec["ts"])
            elif event in ("invalidated", "expired") and session.gone is None:
                session.attached, session.gone = None, rec
            continue
        if not isinstance(conn_id, int):
            continue
        op = rec.get("op")
        if kind == "frame_out":
            owner = sessions.get(conn_sid.get(conn_id, ""))
            if op == OP_DISPATCH and owner is not None and isinstance(rec.get("s"), int):
                owner.seq = max(owner.seq, rec["s"])
                if rec.get("t") == "READY" and owner.ready is None:
                    owner.ready = Frame(idx, rec)
            elif op == OP_INVALID_SESSION and not rec.get("d"):
                tell(conn_id)
        elif kind == "conn_close" and rec.get("by") == "server":
            code = rec.get("code")
            if code in REIDENTIFY_CLOSE_CODES or code in FATAL_CLOSE_CODES:
                tell(conn_id)
        elif kind == "frame_in" and op == OP_RESUME:
            resumed = sessions.get(str(rec.get("session_id")))
            if resumed is not None:
                conn_shard.setdefault(conn_id, resumed.shard)
        elif kind == "frame_in" and op == OP_IDENTIFY:
            key = _shard_key(rec.get("shard"))
            conn_shard.setdefault(conn_id, key)
            prev = sessions.get(latest.get(key, ""))
            if prev is None or prev.attached == conn_id or prev.ready is None:
                continue
            ts = float(rec["ts"])
            later = _session_end_after(view, prev.sid, idx)
            # The server expired the session before the IDENTIFY, or within expiry_slack after
            # it (the client's resume window started earlier): a RESUME was no longer due, so
            # RS1's loss rule must not fail this IDENTIFY either (it skips ``decided``).
            if (prev.gone is not None and prev.gone.get("event") == "expired") or (
                later is not None
                and later.get("event") == "expired"
                and float(later["ts"]) - ts <= tol.expiry_slack
            ):
                judged += 1
                decided.add(idx)
                continue
            if prev.gone is not None or key in told:
                judged += 1
                continue
            # Did the client have it? (A READY cut in flight leaves it nothing to resume.)
            proof = _client_had_session(view, prev, idx, delivered, seq_before)
            if proof is None:
                unknown.append(
                    f"IDENTIFY at {fmt(ts)}: session {prev.sid}'s READY may never have reached "
                    "the client"
                )
                continue
            judged += 1
            last, how = proof
            first_lost = last + 1
            if later is not None:
                until = f"resumable until it {later.get('event')} at {fmt(later['ts'])}"
                held = max(prev.seq, int(later.get("seq") or 0))
            else:
                until = f"still resumable at the end of the run, {fmt(view.end_ts)}"
                held = prev.seq
            where = (
                f"lost at {fmt(prev.detached_at)}"
                if prev.detached_at is not None
                else f"still attached to conn {prev.attached}"
            )
            # What the server had for the session beyond the client's last seq; the events it
            # buffered while detached reach the trace only with its next record.
            mine = f"the client's seq {last} ({how})"
            lost = (
                f"held seqs {first_lost}-{held} beyond {mine}, and every later event"
                if held >= first_lost
                else f"held every event after {mine}"
            )
            failures.append(
                (
                    f"IDENTIFY on conn {conn_id} at {fmt(ts)} while session {prev.sid} ({where}, "
                    f"{until}) {lost}; nothing told the client the session was gone (no op 9 "
                    "d=false, no close 4003/4005/4007/4009 or fatal close): a new session "
                    "instead of a RESUME lost those events to the application",
                    [idx],
                )
            )
            decided.add(idx)
    return failures, decided, judged, unknown


def _session_end_after(view: RunView, sid: str, idx: int) -> Record | None:
    """The session's "invalidated"/"expired" record after trace record ``idx``, if any."""
    for rec in view.records[idx + 1 :]:
        if (
            rec.get("kind") == "session"
            and str(rec.get("session_id")) == sid
            and rec.get("event") in ("invalidated", "expired")
        ):
            return rec
    return None


def _client_had_session(
    view: RunView,
    session: _ServerSession,
    before_idx: int,
    delivered: dict[str, int],
    seq_before: Callable[[int], int],
) -> tuple[int, str] | None:
    """The last seq of ``session`` the client showed it had before ``before_idx``, and how it
    showed it; None when nothing proves it ever had the session."""
    if session.sid in delivered:
        return delivered[session.sid], "its delivery log"
    best: tuple[int, str] | None = None
    for f in view.frames_in:
        if f.idx >= before_idx:
            break
        seq = f.rec.get("seq")
        if f.op == OP_RESUME and str(f.rec.get("session_id")) == session.sid:
            seq = seq if isinstance(seq, int) else 0
            if best is None or seq >= best[0]:
                best = (seq, f"its RESUME at {fmt(f.ts)}")
    assert session.ready is not None
    ready_conn = view.conns[session.ready.rec["conn"]]
    cited = _beat_cites_ready(ready_conn, session.ready, before_idx, seq_before)
    if cited is None and best is None:
        return None
    for conn_id in sorted(session.conns):
        for beat in view.conns[conn_id].beats():
            d = beat.rec.get("d")
            if beat.idx < before_idx and session.ready.idx < beat.idx and isinstance(d, int):
                if best is None or d > best[0]:
                    best = (d, f"its heartbeat at {fmt(beat.ts)}")
    return best


def check_rs1(view: RunView, exp: Expectations) -> Verdict:
    cleared, _, _ = last_fault_cleared(view)
    last_open = max((c.open_idx for c in view.conns.values() if c.open_idx is not None), default=-1)
    delivered_sessions = {
        str(e["session_id"]) for e in view.delivery_log or () if e.get("session_id") is not None
    }
    # A loss that is the run ending (see is_teardown), with no connection after it, is no loss.
    losses = [
        loss
        for loss in _resumable_losses(view)
        if cleared is None
        or last_open > loss.idx
        or not is_teardown(view, loss.conn, cleared, exp.tolerances)
    ]
    seq_before = _highest_seq_before(view)
    # The server's word first: an IDENTIFY while the old session was still resumable there.
    failures, decided, identifies_judged, _ = _abandoned_sessions(view, exp.tolerances)
    unknown: list[str] = []
    judged = 0
    proof: list[int] = []
    for loss in losses:
        nxt = _first_session_frame_after(view, loss.idx)
        if nxt is None or nxt.idx in decided:
            continue
        conn = view.conns[nxt.rec["conn"]]
        if nxt.op == OP_IDENTIFY:
            # A session the client may never have received (READY cut in flight) is not judged:
            # a new IDENTIFY is then the right move. (A RESUME shows it had one.)
            known, why = _session_known(loss, delivered_sessions, seq_before)
            if not known:
                unknown.append(f"conn {loss.conn.id} lost at {fmt(loss.ts)}: {why}")
                continue
        judged += 1
        if nxt.op == OP_IDENTIFY:
            excuse = _resume_path_failing(view, loss, nxt)
            if excuse is None:
                failures.append(
                    (
                        f"conn {loss.conn.id} lost at {fmt(loss.ts)} ({loss.why}) while resumable "
                        f"and the client had the session ({why}); the client then IDENTIFYd on "
                        f"conn {conn.id} at {fmt(nxt.ts)} instead of RESUMing",
                        [loss.idx, nxt.idx],
                    )
                )
            continue
        same_socket = conn.id == loss.conn.id
        if (
            conn.listener not in ("resume", None)
            and not same_socket
            # RESUME on the discovery URL is the fallback while resume_gateway_url fails.
            and _resume_path_failing(view, loss, nxt) is None
        ):
            resumed = conn.live if conn.live is not None and conn.live.idx > nxt.idx else None
            if resumed is not None and resumed.rec.get("t") == "RESUMED":
                # Discord resumes there too (nothing is lost), but since 2022-09-12 it
                # disconnects such clients "significantly faster than normal" (change log
                # 2022-08-09): a defect users see as extra reconnects, not as lost events.
                replayed = resumed.rec.get("replayed")
                outcome = (
                    f"; the resume itself succeeded (RESUMED at {fmt(resumed.ts)}"
                    + (f", {replayed} event(s) replayed" if isinstance(replayed, int) else "")
                    + "): no events lost, but Discord disconnects clients that resume on the "
                    "discovery URL significantly faster than normal"
                )
                idx = [loss.idx, nxt.idx, resumed.idx]
            else:
                outcome, idx = "", [loss.idx, nxt.idx]
            failures.append(
                (
                    f"conn {loss.conn.id} lost at {fmt(loss.ts)}; RESUME at {fmt(nxt.ts)} went to "
                    f"conn {conn.id} "
                    f"on the {conn.listener!r} URL, not resume_gateway_url{outcome}",
                    idx,
                )
            )
            continue
        proof = proof or [loss.idx, nxt.idx]
    unknown_text = (
        f"; {len(unknown)} IDENTIFY after a loss not judged, the client may not have had the "
        f"session ({unknown[0]}{' ...' if len(unknown) > 1 else ''})"
        if unknown
        else ""
    )
    if failures:
        return first_failure(
            "RS1",
            failures,
            f"{judged} resumable loss(es), {identifies_judged} IDENTIFY(s) after a session the "
            f"client held judged{unknown_text}",
        )
    identified = (
        f"; {identifies_judged} IDENTIFY(s) after a session the client held, each once the "
        "server had ended it or told the client so"
        if identifies_judged
        else ""
    )
    if not judged and identifies_judged:
        return ok("RS1", identified.removeprefix("; ") + unknown_text)
    if not judged:
        why = (
            "no resumable loss in the run"
            if not losses
            else "no IDENTIFY/RESUME followed the resumable loss"
            if not unknown
            else "no resumable loss judged"
        ) + unknown_text
        # Counted from the later of the loss and the last fault clearing: while a fault is on,
        # the client's attempts may never reach the gateway (a proxy down refuses them).
        cleared, _, _ = last_fault_cleared(view)
        due = [
            loss
            for loss in losses
            if cleared is not None
            and view.end_ts - max(loss.ts, cleared)
            > max(exp.recovery_bound, exp.tolerances.teardown_window)
            and _first_session_frame_after(view, loss.idx) is None
        ]
        if due and exp.outcome == "resume":
            loss = due[-1]
            return fail(
                "RS1",
                f"conn {loss.conn.id} lost at {fmt(loss.ts)} ({loss.why}); the client never "
                f"sent RESUME or IDENTIFY afterwards",
                [loss.idx],
            )
        return not_judged("RS1", why)
    return ok(
        "RS1",
        f"{judged} resumable loss(es), each followed by a RESUME on the resume URL "
        f"(or on the discovery URL, or an IDENTIFY, after the resume path failed)"
        f"{identified}{unknown_text}",
        proof,
    )


def check_rs2(view: RunView, exp: Expectations) -> Verdict:
    """One pass over the trace, keeping the current session (the last READY), the connections
    that carried it, the last seq sent on them and the highest seq the client's own heartbeats
    proved it had."""
    resumes: list[Frame] = []
    failures: list[tuple[str, list[int]]] = []
    session: str | None = None
    session_idx = -1
    conns: set[Any] = set()
    last_sent: int | None = None
    proven: tuple[int, Record] | None = None
    beat_by_conn: dict[Any, tuple[int, Record]] = {}  # highest heartbeat d on each connection

    def judge_resume(idx: int, rec: Record) -> None:
        ts = float(rec["ts"])
        sid, seq = rec.get("session_id"), rec.get("seq")
        if session is None:
            failures.append(
                (f"RESUME at {fmt(ts)} on conn {rec.get('conn')} but no READY was ever sent", [idx])
            )
        elif sid != session:
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries session_id {sid!r}, but the current session "
                    f"(READY at {fmt(view.records[session_idx]['ts'])}) is {session!r}",
                    [session_idx, idx],
                )
            )
        elif not isinstance(seq, int) or isinstance(seq, bool):
            failures.append((f"RESUME at {fmt(ts)} carries seq={seq!r}, not a number", [idx]))
        elif last_sent is not None and seq > last_sent:
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries seq={seq}, beyond the last sent s={last_sent}",
                    [idx],
                )
            )
        elif proven is not None and seq < int(proven[1]["d"]):
            failures.append(
                (
                    f"RESUME at {fmt(ts)} carries seq={seq}, but the client's heartbeat at "
                    f"{fmt(proven[1]['ts'])} showed it had s={proven[1]['d']}",
                    [proven[0], idx],
                )
            )
        elif rec.get("token_ok") is False:
            failures.append((f"RESUME at {fmt(ts)} carried a wrong token", [idx]))

    for idx, rec in enumerate(view.records):
        kind, conn, op = rec.get("kind"), rec.get("conn"), rec.get("op")
        if kind == "frame_out" and rec.get("t") == "READY" and rec.get("session_id"):
            session, session_idx = str(rec["session_id"]), idx
            conns = {conn}
            last_sent = rec["s"] if isinstance(rec.get("s"), int) else None
            proven = None  # beats before READY carried the previous session's seq
            beat_by_conn.pop(conn, None)
            continue
        if kind == "frame_in" and op == OP_RESUME:
            resumes.append(Frame(idx, rec))
            judge_resume(idx, rec)
            if session is not None and rec.get("session_id") == session and conn not in conns:
                conns.add(conn)
                earlier = beat_by_conn.get(conn)
                if earlier is not None and (proven is None or earlier[1]["d"] > proven[1]["d"]):
                    proven = earlier
            continue
        if kind == "frame_in" and op == OP_HEARTBEAT and isinstance(rec.get("d"), int):
            best = beat_by_conn.get(conn)
            if best is None or rec["d"] >= best[1]["d"]:
                beat_by_conn[conn] = (idx, rec)
            if conn in conns and (proven is None or rec["d"] >= proven[1]["d"]):
                proven = (idx, rec)
        elif kind == "frame_out" and op == OP_DISPATCH and conn in conns:
            s = rec.get("s")
            if isinstance(s, int) and (last_sent is None or s > last_sent):
                last_sent = s
    if not resumes:
        return not_judged("RS2", "the client sent no RESUME")
    if failures:
        return first_failure("RS2", failures, f"{len(resumes)} RESUME(s) judged")
    r = resumes[-1]
    return ok(
        "RS2",
        f"{len(resumes)} RESUME(s) carried the current session_id and a seq between the last one "
        f"the client proved it had and the last sent (last: seq={r.rec.get('seq')} at {fmt(r.ts)})",
        [r.idx],
    )


def check_rs3(view: RunView, exp: Expectations) -> Verdict:
    delivery_log = view.delivery_log
    if delivery_log is None:
        return not_judged("RS3", "the client gave no delivery log")
    conn_session = session_of_conns(view)
    sent: dict[str, set[int]] = {}
    for f in view.frames_out:
        sid = conn_session.get(f.rec.get("conn"))  # type: ignore[arg-type]
        if (
            f.op == OP_DISPATCH
            and isinstance(f.rec.get("s"), int)
            and sid
            and f.rec.get("t") not in ("READY", "RESUMED")
        ):
            sent.setdefault(sid, set()).add(int(f.rec["s"]))
    # Group delivered dispatches by session (or by READY boundaries if the log has no session ids).
    groups: dict[str, list[tuple[int, Record]]] = {}
    segment = 0
    for line, entry in enumerate(delivery_log, 1):
        t = entry.get("t")
        if t == "READY" and not entry.get("session_id"):
            segment += 1
        if t in ("READY", "RESUMED"):
            continue
        key = str(entry.get("session_id") or f"segment {segment}")
        groups.setdefault(key, []).append((line, entry))
    delivered = sum(len(g) for g in groups.values())
    if not delivered:
        return not_judged("RS3", "the delivery log holds no dispatches")
    failures: list[str] = []
    for key, entries in groups.items():
        prev: tuple[int, Record] | None = None
        seen: set[int] = set()
        for line, entry in entries:
            s = entry.get("s")
            if not isinstance(s, int):
                failures.append(f"delivery line {line} has s={s!r}")
                continue
            if s in seen:
                failures.append(f"session {key}: s={s} delivered twice (delivery line {line})")
            elif prev is not None and s < int(prev[1]["s"]):
                failures.append(
                    f"session {key}: s={s} delivered after s={prev[1]['s']} (delivery line {line})"
                )
            seen.add(s)
            prev = (line, entry)
        if key in sent and seen:
            top = max(seen)
            missing = sorted(s for s in sent[key] if s < top and s not in seen)
            if missing:
                failures.append(
                    f"session {key}: s={missing[:5]} sent by the gateway but never delivered, "
                    f"while s={top} was"
                )
    if failures:
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        return fail("RS3", failures[0] + more)
    return ok(
        "RS3",
        f"{delivered} dispatch(es) in {len(groups)} session(s) delivered once each, in order, "
        f"with no gap below the highest delivered seq",
    )


def check_rs4(view: RunView, exp: Expectations) -> Verdict:
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    for conn in view.ordered_conns():
        close = conn.close
        if close is None or close.get("by") != "client":
            continue
        op7 = next((f for f in conn.frames_out if f.op == OP_RECONNECT), None)
        nxt = _first_session_frame_after(view, conn.close_idx or 0)
        resuming = nxt is not None and nxt.op == OP_RESUME
        beats, acks = conn.beats(), conn.acks()
        # A zombie close: the session was live and the last heartbeat went unanswered.
        interval = view.interval_for(conn) or 0.0
        zombie = (
            conn.live is not None
            and bool(beats)
            and not any(a.idx > beats[-1].idx for a in acks)
            and float(close["ts"]) - beats[-1].ts >= interval * exp.tolerances.ack_wait
        )
        if not (op7 or resuming or zombie):
            continue
        judged += 1
        code = close.get("code")
        if code in SESSION_KILLING_CLIENT_CODES:
            reason = (
                f"after op 7 at {fmt(op7.ts)}"
                if op7
                else f"then RESUMEd at {fmt(nxt.ts)}"
                if resuming and nxt
                else "after an unACKed heartbeat"
            )
            idx = [conn.close_idx or 0] + ([op7.idx] if op7 else []) + ([nxt.idx] if nxt else [])
            failures.append(
                (f"conn {conn.id}: client closed with {code} at {fmt(close['ts'])} {reason}", idx)
            )
    if failures:
        return first_failure(
            "RS4", failures, f"{judged} client close(s) with intent to resume judged"
        )
    if not judged:
        return not_judged("RS4", "the client never closed a connection it meant to resume")
    return ok("RS4", f"{judged} client close(s) meant to resume used codes other than 1000/1001")


def check_rs5(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    triggers: list[tuple[Record, int, str]] = []
    for f in view.frames_out:
        if f.op == OP_INVALID_SESSION and not f.rec.get("d"):
            on = view.conns[f.rec["conn"]]
            # an answer: the op 9 came before any READY/RESUMED on that connection
            asked = None if on.live is not None and on.live.idx < f.idx else next(
                (g for g in reversed(on.frames_in) if g.idx < f.idx
                 and g.op in (OP_IDENTIFY, OP_RESUME)), None)
            answer = (f" in answer to {'RESUME' if asked.op == OP_RESUME else 'IDENTIFY'} at "
                      f"{fmt(asked.ts)}" if asked is not None else "")
            triggers.append(
                (f.rec, f.idx,
                 f"op 9 d=false on conn {f.rec.get('conn')} at {fmt(f.ts)}{answer}")
            )
    for conn in view.conns.values():
        c = conn.close
        if c is not None and c.get("by") == "server" and c.get("code") in REIDENTIFY_CLOSE_CODES:
            triggers.append(
                (
                    c,
                    conn.close_idx or 0,
                    f"server close {c.get('code')} on conn {conn.id} at {fmt(c['ts'])}",
                )
            )
    triggers.sort(key=lambda t: t[1])
    failures: list[tuple[str, list[int]]] = []
    judged = 0
    unseen: list[str] = []  # invalidations a fault may have kept from the client
    pending: list[str] = []  # invalidations the run ended too soon after (or, stop) to judge
    lo, hi = tol.reidentify_delay_min, tol.reidentify_delay_max + tol.reidentify_slack
    proof: list[int] = []
    last_ok = ""
    for rec, idx, what in triggers:
        ts = float(rec["ts"])
        nxt = _first_session_frame_after(view, idx)
        if nxt is None:
            if view.end_ts - ts > hi and exp.outcome != "stop":
                judged += 1
                failures.append(
                    (f"{what}: no IDENTIFY in the {view.end_ts - ts:.2f} s that followed", [idx])
                )
            else:
                pending.append(
                    f"{what}: no IDENTIFY before the run ended {view.end_ts - ts:.2f} s later"
                    + (
                        " (the scenario expects the client to stop)"
                        if exp.outcome == "stop"
                        else f", within the {hi:.2f} s bound"
                    )
                )
            continue
        # A second trigger before the client acted restarts the clock; judge only the last one.
        if any(idx < other < nxt.idx for _, other, _ in triggers):
            continue
        judged += 1
        conn = view.conns[nxt.rec["conn"]]
        delay = nxt.ts - ts
        carrier = view.conns.get(rec.get("conn"))  # type: ignore[arg-type]
        in_flight = view.data_fault_active(ts, nxt.ts, carrier) if carrier is not None else None
        crossed = (
            nxt.op == OP_RESUME
            and nxt.rec.get("conn") == rec.get("conn")
            and nxt.ts - ts <= tol.crossing_window
        )
        if crossed:
            judged -= 1
            unseen.append(
                f"{what} (the RESUME on the same connection {nxt.ts - ts:.3f} s "
                f"later crossed it; crossing_window={tol.crossing_window} s)"
            )
        elif nxt.op == OP_RESUME and in_flight is not None:
            # What the gateway sent is not what a faulted client received: the invalidation may
            # still have been in flight when the client resumed for a reason of its own.
            judged -= 1
            unseen.append(f"{what} (fault {in_flight.name!r} on that connection)")
        elif nxt.op == OP_RESUME:
            failures.append(
                (
                    f"{what}: the client RESUMEd at {fmt(nxt.ts)} instead of IDENTIFYing",
                    [idx, nxt.idx],
                )
            )
        elif conn.listener == "resume":
            failures.append(
                (
                    f"{what}: IDENTIFY at {fmt(nxt.ts)} went to the resume URL (conn {conn.id})",
                    [idx, nxt.idx],
                )
            )
        elif delay < lo - 1e-9:
            failures.append(
                (
                    f"{what}: IDENTIFY after only {delay:.2f} s (wait at least {lo} s)",
                    [idx, nxt.idx],
                )
            )
        elif delay > hi + 1e-9 and not view.fault_active(ts, nxt.ts):
            failures.append(
                (f"{what}: IDENTIFY only after {delay:.2f} s (bound {hi:.2f} s)", [idx, nxt.idx])
            )
        else:
            proof = proof or [idx, nxt.idx]
            last_ok = f"{what}: IDENTIFY on conn {conn.id} after {delay:.2f} s"
    tol_text = (
        f"tolerances reidentify_delay_min={lo} s, reidentify_delay_max={tol.reidentify_delay_max} "
        "s "
        f"+ reidentify_slack={tol.reidentify_slack} s"
    )
    if unseen:
        tol_text += (
            f"; {len(unseen)} RESUME after an invalidation not judged, it may not have reached "
            f"the client: {unseen[0]}"
        )
    if failures:
        return first_failure("RS5", failures, tol_text)
    if not judged:
        if pending:
            more = f" (+{len(pending) - 1} more)" if len(pending) > 1 else ""
            return not_judged("RS5", f"{pending[0]}{more}; {tol_text}")
        if unseen:
            return not_judged("RS5", tol_text)
        return not_judged(
            "RS5", "no op 9 d=false and no server close 4003/4005/4007/4009 in the run"
        )
    return ok(
        "RS5",
        f"{judged} invalidation(s) followed by an IDENTIFY on the discovery URL; last: {last_ok}; "
        f"{tol_text}",
        proof,
    )


def check_fc1(view: RunView, exp: Expectations) -> Verdict:
    fatal = [
        c
        for c in view.ordered_conns()
        if c.close is not None
        and c.close.get("by") == "server"
        and c.close.get("code") in FATAL_CLOSE_CODES
    ]
    if not fatal:
        return not_judged("FC1", "no fatal close code (4004, 4010-4014) in the run")
    first = min(fatal, key=lambda c: c.close_idx or 0)
    close_idx = first.close_idx or 0
    later = [c for c in view.ordered_conns() if c.open_order > close_idx]
    code = first.close["code"] if first.close else None
    if later:
        c = later[0]
        return fail(
            "FC1",
            f"server closed conn {first.id} with fatal {code} at {fmt(first.close_ts or 0)}; the "
            f"client reconnected anyway (conn {c.id} at {fmt(c.start_ts)}, {len(later)} in all)",
            [close_idx, c.open_idx or 0],
        )
    return ok(
        "FC1",
        f"server closed conn {first.id} with fatal {code} at {fmt(first.close_ts or 0)}; no "
        f"connection in the {view.end_ts - (first.close_ts or 0):.2f} s after",
        [close_idx],
    )
