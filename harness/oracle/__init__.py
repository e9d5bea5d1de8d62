"""The oracle: invariants over a trace, each returning a verdict with evidence.

Every invariant is a pure function of the trace records the fake gateway wrote (see
``gateway_common/trace.py``), the client's delivery log where one exists, and the scenario's
``Expectations`` (which carry explicit ``Tolerances``). Nothing here knows which client ran.

The trace is recorded by the gateway: client frames are ``frame_in``, server frames ``frame_out``.
What the gateway *sent* is not always what the client *received* (a toxic may delay or drop it), so
the checks that depend on reception skip the spans where a fault window was active and say so.

An invariant with nothing to judge in a run is ``not_judged`` with the reason, never ``pass``.

The run ends where the runner writes its note "world: run over, stopping the client"
(``SHUTDOWN_NOTE``): everything after it is the harness shutting the client down (a client
closing with 1000 because it was told to stop, a connection cut as the world goes away), so the
oracle judges the trace up to that note and no further. A connection still open there is open at
the end of the run.

The modules, each importing only those above it:

- ``model``: ``Expectations``, ``Tolerances``, ``Verdict`` and the helpers that build verdicts;
- ``view``: ``RunView``, the trace (and delivery log) indexed once per run;
- ``heartbeats`` (HB1-HB4, ZB1), ``backoff`` (BO1, BO2, RL1), ``liveness`` (LV1,
  ``last_fault_cleared``), ``sessions`` (RS1-RS5, FC1): the checks, each
  ``check(view, exp) -> Verdict``;
- ``invariants``: ``INVARIANTS``, the one table of code, title and check, and ``judge``.

The names below load their module on first use, so importing ``harness.oracle.model`` (all the
scenario loader needs) loads no check.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.oracle.invariants import INVARIANTS, Invariant, invariant_title, judge
    from harness.oracle.liveness import last_fault_cleared
    from harness.oracle.model import Expectations, Outcome, Record, Status, Tolerances, Verdict
    from harness.oracle.view import SHUTDOWN_NOTE, Connection, FaultWindow, Frame, RunView

__all__ = [
    "INVARIANTS",
    "SHUTDOWN_NOTE",
    "Connection",
    "Expectations",
    "FaultWindow",
    "Frame",
    "Invariant",
    "Outcome",
    "Record",
    "RunView",
    "Status",
    "Tolerances",
    "Verdict",
    "invariant_title",
    "judge",
    "last_fault_cleared",
]

# Searched in this order, so a name of the model or the view loads no check.
_MODULES = ("model", "view", "liveness", "invariants")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
