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
# BO1: how many waits in a row stepping by one exact amount prove a fixed wait or a linear ramp
# (see no_backoff), and how close (seconds) two steps must be to count as the same step.
FIXED_STEP_MIN_WAITS = 6
FIXED_STEP_TOLERANCE = 0.005


def no_backoff(waits: list[float], tol: Tolerances) -> tuple[str, int, int] | None:
    """Proof that ``waits`` (one run of failed attempts) do not back off: ("hammering" |
    "fixed step", i, j), the waits ``waits[i:j]`` that prove it; None without proof (the waits
    back off, or are too few to tell).

    - hammering: the run's first ``backoff_hammer_waits`` waits all stay below
      ``backoff_hammer_below`` (its attempts keep coming at least once a second however long it
      fails);
    - fixed step: FIXED_STEP_MIN_WAITS waits in a row, all below ``backoff_flat_ok``, each
      differing from the one before by the same amount (within FIXED_STEP_TOLERANCE): a fixed
      wait (step 0) or a linear ramp; a deterministic backoff doubles, and one reaching
      ``backoff_flat_ok`` has reached its cap.

    Growth between single waits proves nothing either way: decorrelated jitter (AWS's
    min(cap, uniform(base, 3 x previous wait))) grows by about 1.1x per wait at the median, and
    full jitter draws a short wait after a long one half the time (bench/bo1_false_alarms.py).
    """
    if len(waits) >= tol.backoff_hammer_waits and all(
        w < tol.backoff_hammer_below for w in waits[: tol.backoff_hammer_waits]
    ):
        return "hammering", 0, tol.backoff_hammer_waits
    n = FIXED_STEP_MIN_WAITS
    for i in range(len(waits) - n + 1):
        window = waits[i : i + n]
        if max(window) >= tol.backoff_flat_ok:
            continue
        steps = [b - a for a, b in zip(window, window[1:], strict=False)]
        if max(steps) - min(steps) <= FIXED_STEP_TOLERANCE:
            return "fixed step", i, i + n
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
    short_runs: list[int] = []  # runs whose waits never reached backoff_hammer_below
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
        proof = no_backoff(waits, tol)
        if proof is not None:
            kind, i, j = proof
            shown = ", ".join(f"{w:.2f}" for w in waits[i:j])
            if kind == "hammering":
                why = (
                    f"its first {j} waits ({shown} s) all stayed below "
                    f"{tol.backoff_hammer_below:g} s"
                )
            else:
                step = round(waits[i + 1] - waits[i], 2) + 0.0  # no "-0.00"
                why = (
                    f"waits {i + 1}-{j} ({shown} s) step by one fixed amount ({step:+.2f} s), "
                    f"below {tol.backoff_flat_ok:g} s"
                )
            failures.append(
                (
                    f"no backoff: {len(run)} failed attempts from {fmt(starts[0])} with waits "
                    f"{', '.join(f'{g:.2f}' for g in gaps[:8])} s; {why}",
                    idx,
                )
            )
        elif all(w < tol.backoff_hammer_below for w in waits):
            short_runs.append(len(waits))
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
        f"backoff_hammer_waits={tol.backoff_hammer_waits} below {tol.backoff_hammer_below} s, "
        f"backoff_flat_ok={tol.backoff_flat_ok} s, "
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
    too_few = ""
    if short_runs:
        too_few = (
            f"; too few waits to tell: a run's {max(short_runs)} wait(s) all stayed below "
            f"{tol.backoff_hammer_below:g} s, and {tol.backoff_hammer_waits} are needed to "
            "tell hammering from a slow jittered start (it fails no rule)"
        )
    return ok(
        "BO1",
        f"{judged_runs} run(s) of failed attempts backed off without a storm (longest: "
        f"{run_text}); {tol_text}{too_few}",
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
