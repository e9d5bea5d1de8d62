"""The oracle's model: what a scenario expects (``Expectations`` with its ``Tolerances``) and what
an invariant answers (``Verdict``), with the helpers every check uses to build one.

Importing this module loads no check: the scenario loader imports it alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gateway_common.facts import (
    IDENTIFY_WINDOW,
    MAX_PAYLOAD_BYTES,
    RATE_LIMIT_FRAMES,
    RATE_LIMIT_WINDOW,
)

Record = dict[str, Any]
Status = Literal["pass", "fail", "not_judged"]
Outcome = Literal["resume", "reidentify", "stop"]

@dataclass(frozen=True)
class Tolerances:
    """Slack the invariants allow. Every verdict that uses one names it and its value."""

    heartbeat_slack: float = 0.25
    """HB1/HB2/ZB1/LV1: a gap may reach interval x (1 + heartbeat_slack)."""
    seq_staleness: float = 1.0
    """HB3: seconds a dispatch may take to reach the client before its heartbeat must cite it."""
    crossing_window: float = 0.1
    """RS5: a RESUME on the connection that got op 9 d=false, this soon after it, crossed it on
    the wire (the client sent it before it could have read the op 9)."""
    op1_reply_within: float = 1.0
    """HB4: seconds to answer a server op 1."""
    ack_wait: float = 0.5
    """ZB1/RS4: a heartbeat counts as unACKed only if its connection stayed open this fraction of
    the interval after it without an ACK (a client closing right after a beat is not a zombie)."""
    zombie_close_grace: float = 0.5
    """ZB1: seconds beyond one (slackened) interval after an unACKed beat to close the socket."""
    reconnect_within: float = 5.0
    """ZB1: seconds from the zombie close to the next connection ..."""
    reconnect_backoff_factor: float = 2.0
    """ZB1: ... or up to this many times the longest wait the client took earlier in the run
    between a connection ending and the next one opening (capped at backoff_cap): a client still
    backing off from earlier failures (attempts against a proxy that is down never reach the
    trace) may wait one doubling longer, but a client that never reconnects still fails."""
    reidentify_delay_min: float = 1.0
    reidentify_delay_max: float = 5.0
    reidentify_slack: float = 1.5
    """RS5: the IDENTIFY comes reidentify_delay_min .. max (+ slack for reconnecting) s after."""
    backoff_hammer_waits: int = 20
    backoff_hammer_below: float = 1.0
    """BO1: a run of failed attempts whose first backoff_hammer_waits waits all stay below
    backoff_hammer_below seconds is hammering, not backing off (correct backoffs from a 0.25 s
    base reach 1 s within 18 waits: bench/bo1_false_alarms.py) ..."""
    backoff_flat_ok: float = 2.0
    """BO1: ... and so are five waits in a row below this many seconds stepping by one fixed
    amount (a fixed wait or a linear ramp; at or above it, a reached cap)."""
    backoff_cap: float = 120.0
    """BO1: no gap between attempts above this (the backoff is capped); LV1/ZB1: the most a
    client's next backoff step may add to their bounds."""
    storm_window: float = 1.0
    storm_max_attempts: int = 4
    """BO1: more than storm_max_attempts connection attempts in storm_window seconds is a storm."""
    identify_window: float = IDENTIFY_WINDOW
    """BO2: the max_concurrency window in seconds."""
    expiry_slack: float = 2.0
    """RS1: an IDENTIFY this soon before the server expired the old session counts as after it
    (the client starts its resumable-window clock when it sees the loss, the server when it
    does)."""
    teardown_window: float = 1.0
    """LV1/RS1: closes in the trace's last this-many seconds, after every fault cleared, are the
    run ending, not a loss (for traces without the runner's SHUTDOWN_NOTE, which marks it)."""
    rate_window: float = RATE_LIMIT_WINDOW
    rate_max_frames: int = RATE_LIMIT_FRAMES
    max_payload: int = MAX_PAYLOAD_BYTES
    """RL1: the gateway's send limits."""


@dataclass(frozen=True)
class Expectations:
    """What a scenario expects of the client; the oracle's third input."""

    outcome: Outcome | None = None
    """resume: it ends on the session it started; reidentify: on a new one; stop: not connected."""
    recovery_bound: float = 10.0
    """LV1: seconds after the last fault clears by which the client must be live again, plus
    the client's next backoff step if it was backing off then (``reconnect_backoff_factor`` x its
    longest wait, see ``liveness.backoff_allowance``)."""
    duration: float = 0.0
    """How long the run lasted (trace times start at 0 with the run; 0: as long as its trace). A
    trace whose last record is earlier (a client that never connected leaves next to nothing) still
    covers the whole run."""
    max_concurrency: int = 1
    max_identifies: int | None = None
    """BO2: total IDENTIFYs allowed in the run (F3: 1; F19: a small number)."""
    max_resumes: int | None = None
    """BO1: total RESUMEs allowed in the run (F20: a capped number of resumes)."""
    tolerances: Tolerances = field(default_factory=Tolerances)


@dataclass(frozen=True)
class Verdict:
    invariant: str
    status: Status
    evidence: str
    record_indices: tuple[int, ...] = ()
    """0-based positions in the trace records (= line number - 1 of the JSON-lines file)."""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["record_indices"] = list(self.record_indices)
        return d


def fmt(ts: float) -> str:
    return f"{float(ts):.2f} s"


def ok(inv: str, text: str, idx: Iterable[int] = ()) -> Verdict:
    return Verdict(inv, "pass", text, tuple(sorted(set(idx))))


def fail(inv: str, text: str, idx: Iterable[int] = ()) -> Verdict:
    return Verdict(inv, "fail", text, tuple(sorted(set(idx))))


def not_judged(inv: str, text: str) -> Verdict:
    return Verdict(inv, "not_judged", text)


def first_failure(inv: str, failures: list[tuple[str, list[int]]], suffix: str) -> Verdict:
    text, idx = failures[0]
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return fail(inv, f"{text}{more}; {suffix}", idx)
