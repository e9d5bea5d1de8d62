"""Backoff, budgets and rate limits: BO1, BO2, RL1."""

from __future__ import annotations

import bisect

from gateway_common.facts import (
    OP_IDENTIFY,
    OP_RESUME,
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
)

# BO1: how many equal wait ratios prove backoff without jitter (see check_bo1).
NO_JITTER_MIN_RATIOS = 3
# BO1: how many waits in a row that never grow the largest wait before them prove no backoff
# (see stalled_envelope).
NO_BACKOFF_MIN_WAITS = 5


def stalled_envelope(waits: list[float], tol: Tolerances) -> tuple[int, float] | None:
    """(j, largest) if the waits after ``waits[j - 1]`` show no backoff: NO_BACKOFF_MIN_WAITS of
    them in a row, none growing the largest wait so far (``largest``) by ``backoff_growth``, while
    that largest wait is still below ``backoff_flat_ok`` (a cap must be at least that). None if
    the waits back off, or are too few to tell.

    The envelope, not each wait: a full-jitter backoff (wait = uniform(0, base x 2^n), AWS's
    recommendation, discord.py's and nextcord's) draws a short wait after a long one half the
    time, but the largest wait so far keeps growing with the ceiling. Measured over 10 such
    waits (base 0.25 s to 2 s), five in a row below 1.5 x the largest before them come up once
    in 3,000 to 30,000 runs; four once in 270 to 750, three once in 20 to 70 (a verdict must not
    be a coin toss), while a fixed short wait, random waits under 1 s and a linear ramp from
    zero (0.1, 0.2, 0.3 ... s: by its 16th wait) all stall.
    """
    largest = 0.0
    for j in range(1, len(waits) - NO_BACKOFF_MIN_WAITS + 1):
        largest = max(largest, waits[j - 1])
        if largest >= tol.backoff_flat_ok:
            return None
        window = waits[j : j + NO_BACKOFF_MIN_WAITS]
        if not any(w > largest and w >= tol.backoff_growth * largest for w in window):
            return j, largest
    return None


def check_bo1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    conns = view.ordered_conns()
    failures: list[tuple[str, list[int]]] = []
    resumes = [f for f in view.frames_in if f.op == OP_RESUME]
    if exp.max_resumes is not None and len(resumes) > exp.max_resumes:
        r = resumes[exp.max_resumes]
        failures.append(
            (
                f"{len(resumes)} RESUMEs (the scenario allows {exp.max_resumes}); "
                f"RESUME #{exp.max_resumes + 1} at {fmt(r.ts)}",
                [r.idx],
            )
        )
    # A storm is too many connection attempts in a short window, whatever became of them.
    opens = [c for c in conns if c.open_idx is not None]
    open_times = [c.start_ts for c in opens]
    for i in range(len(opens)):
        j = bisect.bisect_right(open_times, open_times[i] + tol.storm_window)
        if j - i > tol.storm_max_attempts:
            failures.append(
                (
                    f"storm: {j - i} connection attempts between {fmt(open_times[i])} and "
                    f"{fmt(open_times[j - 1])} (conns {opens[i].id}..{opens[j - 1].id})",
                    [c.open_idx or 0 for c in opens[i:j]],
                )
            )
            break

    def failed(conn: Connection) -> bool:
        """Never got a session, or the server or network ended it within one interval."""
        if conn.live is None:
            return True
        if conn.close is None or conn.close.get("by") == "client":
            return False
        interval = view.interval_for(conn) or 0.0
        return float(conn.close["ts"]) - conn.live.ts < interval

    runs: list[list[Connection]] = []
    current: list[Connection] = []
    for conn in conns:
        if failed(conn):
            current.append(conn)
        else:
            if len(current) >= 2:
                runs.append(current)
            current = []
    if len(current) >= 2:
        runs.append(current)
    judged_runs = 0
    longest_run = 0
    run_text = ""
    for run in runs:
        starts = [c.start_ts for c in run]
        idx = [c.open_idx or 0 for c in run]
        # The client's waits: from one attempt ending to the next starting.
        ends = [c.close_ts if c.close_ts is not None else c.start_ts for c in run]
        gaps = [max(0.0, b - a) for a, b in zip(ends, starts[1:], strict=False)]
        judged_runs += 1
        longest_run = max(longest_run, len(run))
        if len(run) == longest_run:
            run_text = (
                f"conns {run[0].id}..{run[-1].id}: {len(run)} failed attempts from "
                f"{fmt(starts[0])}, waits {', '.join(f'{g:.2f}' for g in gaps[:8])} s"
            )
        # An immediate first retry is fine; the backoff shows in the waits after it.
        waits = gaps[1:] if gaps and gaps[0] < 0.05 else gaps
        stall = stalled_envelope(waits, tol)
        if stall is not None:
            j, largest = stall
            failures.append(
                (
                    f"no backoff: {len(run)} failed attempts from {fmt(starts[0])} with waits "
                    f"{', '.join(f'{g:.2f}' for g in gaps[:8])} s; the "
                    f"{NO_BACKOFF_MIN_WAITS} waits after the largest wait so far "
                    f"({largest:.2f} s: "
                    f"{', '.join(f'{w:.2f}' for w in waits[j : j + NO_BACKOFF_MIN_WAITS])} s) "
                    f"never grew it by {tol.backoff_growth:g}x, below {tol.backoff_flat_ok:g} s",
                    idx,
                )
            )
        if len(waits) >= 3:
            ratios = [b / a for a, b in zip(waits, waits[1:], strict=False) if a > 0]
            # Two jittered ratios fall within 0.01 of each other by chance about once in 50
            # runs (a fuzz campaign hit it); three about once in 10,000. A verdict must not be
            # a coin toss, so "no jitter" needs three equal ratios (four waits after the first).
            if (
                len(ratios) >= NO_JITTER_MIN_RATIOS
                and max(ratios) - min(ratios) < 0.01
                and max(waits) < tol.backoff_cap
            ):
                failures.append(
                    (
                        f"no jitter: waits {', '.join(f'{g:.3f}' for g in waits[:6])} s follow "
                        "one exact ratio",
                        idx,
                    )
                )
        big = [g for g in gaps if g > tol.backoff_cap]
        if big:
            failures.append(
                (
                    f"uncapped: a wait of {max(big):.1f} s between attempts (cap "
                    f"{tol.backoff_cap} s)",
                    idx,
                )
            )
    tol_text = (
        f"tolerances storm_max_attempts={tol.storm_max_attempts} per {tol.storm_window} s, "
        f"backoff_growth={tol.backoff_growth}, backoff_flat_ok={tol.backoff_flat_ok} s, "
        f"backoff_cap={tol.backoff_cap} s"
    )
    if failures:
        return first_failure("BO1", failures, tol_text)
    if not judged_runs:
        if len(opens) > tol.storm_max_attempts:
            return ok(
                "BO1",
                f"{len(opens)} connection attempts, never more than {tol.storm_max_attempts} in "
                f"{tol.storm_window} s; no run of failed attempts; {tol_text}",
            )
        if exp.max_resumes is not None:
            return ok(
                "BO1",
                f"{len(resumes)} RESUME(s), within the {exp.max_resumes} allowed; no run of "
                f"failed attempts reached the gateway",
            )
        return not_judged(
            "BO1",
            "no run of two or more failed connection attempts reached the gateway "
            "(attempts against a proxy that is down never do)",
        )
    return ok(
        "BO1",
        f"{judged_runs} run(s) of failed attempts backed off without a storm (longest: "
        f"{run_text}); {tol_text}",
    )


def check_bo2(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    identifies = [f for f in view.frames_in if f.op == OP_IDENTIFY]
    if not identifies:
        return not_judged("BO2", "the client sent no IDENTIFY")
    failures: list[tuple[str, list[int]]] = []
    mc = max(1, exp.max_concurrency)
    by_bucket: dict[int, list[Frame]] = {}
    for f in identifies:
        shard = f.rec.get("shard")
        shard_id = int(shard[0]) if isinstance(shard, list | tuple) and shard else 0
        by_bucket.setdefault(shard_id % mc, []).append(f)
    for bucket, frames in sorted(by_bucket.items()):
        for a, b in zip(frames, frames[1:], strict=False):
            if b.ts - a.ts < tol.identify_window - 1e-9:
                failures.append(
                    (
                        f"bucket {bucket}: IDENTIFYs at {fmt(a.ts)} and {fmt(b.ts)}, "
                        f"{b.ts - a.ts:.2f} s apart (window {tol.identify_window} s)",
                        [a.idx, b.idx],
                    )
                )
                break
    budget = [(i, r) for i, r in enumerate(view.records) if r.get("kind") == "identify_budget"]
    for f in identifies:
        before = [(i, r) for i, r in budget if i < f.idx]
        if (
            before
            and isinstance(before[-1][1].get("remaining"), int)
            and before[-1][1]["remaining"] <= 0
        ):
            failures.append(
                (
                    f"IDENTIFY at {fmt(f.ts)} with the session start budget at "
                    f"{before[-1][1]['remaining']}",
                    [before[-1][0], f.idx],
                )
            )
            break
    if exp.max_identifies is not None and len(identifies) > exp.max_identifies:
        f = identifies[exp.max_identifies]
        failures.append(
            (
                f"{len(identifies)} IDENTIFYs (the scenario allows {exp.max_identifies}); "
                f"IDENTIFY #{exp.max_identifies + 1} at {fmt(f.ts)}",
                [f.idx],
            )
        )
    tol_text = f"max_concurrency={mc}, tolerance identify_window={tol.identify_window} s"
    if exp.max_identifies is not None:
        tol_text += f", max_identifies={exp.max_identifies}"
    if failures:
        return first_failure("BO2", failures, tol_text)
    return ok(
        "BO2",
        f"{len(identifies)} IDENTIFY(s), none too close in its bucket, none over budget; "
        f"{tol_text}",
        [identifies[0].idx],
    )


def check_rl1(view: RunView, exp: Expectations) -> Verdict:
    tol = exp.tolerances
    failures: list[tuple[str, list[int]]] = []
    total = 0
    busiest = 0
    for conn in view.ordered_conns():
        frames = conn.frames_in
        total += len(frames)
        times = [f.ts for f in frames]
        for i in range(len(times)):
            j = bisect.bisect_right(times, times[i] + tol.rate_window - 1e-9)
            busiest = max(busiest, j - i)
            if j - i > tol.rate_max_frames:
                failures.append(
                    (
                        f"conn {conn.id}: {j - i} client frames in {tol.rate_window:.0f} s from "
                        f"{fmt(times[i])}",
                        [frames[i].idx, frames[j - 1].idx],
                    )
                )
                break
        for f in frames:
            if isinstance(f.rec.get("size"), int) and f.rec["size"] > tol.max_payload:
                failures.append(
                    (f"conn {conn.id}: op {f.op} at {fmt(f.ts)} is {f.rec['size']} bytes", [f.idx])
                )
                break
    for idx, rec in enumerate(view.records):
        if (
            rec.get("kind") == "frame_bad"
            and isinstance(rec.get("size"), int)
            and rec["size"] > tol.max_payload
        ):
            failures.append(
                (
                    f"conn {rec.get('conn')}: a {rec['size']}-byte frame at {fmt(rec['ts'])} "
                    f"({rec.get('reason')})",
                    [idx],
                )
            )
    tol_text = (
        f"limits {tol.rate_max_frames} frames per {tol.rate_window:.0f} s, {tol.max_payload} bytes"
    )
    if failures:
        return first_failure("RL1", failures, tol_text)
    if not total:
        return not_judged("RL1", "the client sent no frames")
    return ok("RL1", f"{total} client frame(s); busiest window held {busiest}; {tol_text}")
