"""The table of invariants and ``judge``, which runs every check in it over one trace."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.oracle.backoff import check_bo1, check_bo2, check_rl1
from harness.oracle.heartbeats import check_hb1, check_hb2, check_hb3, check_hb4, check_zb1
from harness.oracle.liveness import check_lv1
from harness.oracle.model import Expectations, Record, Verdict
from harness.oracle.sessions import check_fc1, check_rs1, check_rs2, check_rs3, check_rs4, check_rs5
from harness.oracle.view import RunView

Check = Callable[[RunView, Expectations], Verdict]


@dataclass(frozen=True)
class Invariant:
    """One row of ``INVARIANTS``: the code verdicts and reports use, the title reports print, and
    the check that judges it from a trace (None: judged by the runner, not from the trace)."""

    code: str
    title: str
    check: Check | None


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("HB1", "first heartbeat after HELLO, within one interval", check_hb1),
    Invariant("HB2", "no heartbeat gap longer than the interval (+ tolerance)", check_hb2),
    Invariant("HB3", "heartbeat d is the last seq the client could have received", check_hb3),
    Invariant("HB4", "a server op 1 is answered promptly", check_hb4),
    Invariant(
        "ZB1", "with ACKs withheld, the client closes (not 1000/1001) and reconnects", check_zb1
    ),
    Invariant("RS1", "after a resumable loss the client RESUMEs on resume_gateway_url", check_rs1),
    Invariant("RS2", "RESUME carries the current session_id and last seq", check_rs2),
    Invariant("RS3", "exactly-once, in-order delivery across reconnects", check_rs3),
    Invariant("RS4", "no 1000/1001 close when the client means to resume", check_rs4),
    Invariant(
        "RS5",
        "after op 9 false / 4007 / 4009 the client IDENTIFYs on discovery after 1-5 s",
        check_rs5,
    ),
    Invariant("FC1", "no reconnect after a fatal close code", check_fc1),
    Invariant("BO1", "reconnect attempts back off; no storms", check_bo1),
    Invariant("BO2", "IDENTIFYs respect max_concurrency per 5 s and the start budget", check_bo2),
    Invariant(
        "RL1",
        "at most 120 client frames per 60 s per connection, payloads <= 4096 bytes",
        check_rl1,
    ),
    Invariant(
        "LV1", "live again (READY/RESUMED, heartbeats flowing) within the recovery bound", check_lv1
    ),
    # The client process, not the trace, shows this one: the runner judges it (harness/world.py,
    # _process_verdict) and appends its verdict after judge()'s.
    Invariant(
        "PR1", "the client keeps running until the harness stops it (no crash, no hang)", None
    ),
)
"""Every invariant, in the order verdicts are reported. ``judge`` runs the rows that have a
check; PR1 (check None) needs the client process, so the runner judges it and adds its verdict."""

_BY_CODE: Mapping[str, Invariant] = {inv.code: inv for inv in INVARIANTS}


def invariant_title(code: str, default: str = "") -> str:
    """The title of invariant ``code`` (``default`` for a code not in the table)."""
    inv = _BY_CODE.get(code)
    return default if inv is None else inv.title


def judge(
    records: Sequence[Record],
    delivery_log: Sequence[Record] | None = None,
    expectations: Expectations | None = None,
) -> list[Verdict]:
    """Judge one run: every invariant of the table that has a check, in table order, one verdict
    each."""
    exp = expectations or Expectations()
    view = RunView(records, delivery_log)
    return [inv.check(view, exp) for inv in INVARIANTS if inv.check is not None]
