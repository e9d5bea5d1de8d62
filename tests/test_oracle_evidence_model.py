"""The oracle package's own surface, as a report reads it: the invariant titles, the count of
further failures an evidence line adds, and the names the package loads on first use."""

from __future__ import annotations

import pytest
from test_oracle_mutation_rules import verdict
from test_oracle_traces import Run

import harness.oracle as oracle
from harness.oracle import invariants, view


def test_a_report_gets_each_invariants_title_and_a_default_for_an_unknown_code():
    assert invariants.invariant_title("PR1") == (
        "the client keeps running until the harness stops it (no crash, no hang)"
    )
    assert invariants.invariant_title("HB2", "?") == (
        "no heartbeat gap longer than the interval (+ tolerance)"
    )
    assert invariants.invariant_title("XX9") == ""
    assert invariants.invariant_title("XX9", "unknown") == "unknown"


def beats_without_hello(conns: int) -> Run:
    run = Run()
    for c in range(1, conns + 1):
        run.open(c, float(c)).beat(c, c + 0.5, None)
    return run.rec("note", 9.0, text="end")


@pytest.mark.parametrize(
    ("conns", "more"), [(1, ""), (2, " (+1 more)"), (3, " (+2 more)")]
)
def test_evidence_names_the_first_failure_and_counts_the_others(conns, more):
    v = verdict(beats_without_hello(conns), "HB1")
    assert (v.status, v.evidence, v.record_indices) == (
        "fail",
        f"conn 1: op 1 at 1.50 s but HELLO was never sent{more}; tolerance heartbeat_slack=0.25",
        (1,),
    )


def test_the_package_loads_a_name_from_the_first_module_that_has_it():
    getattr_ = oracle.__getattr__
    assert getattr_("SHUTDOWN_NOTE") == "world: run over"
    assert getattr_("RunView") is view.RunView
    assert getattr_("judge") is invariants.judge
    assert oracle.__dict__["judge"] is invariants.judge  # kept: the next lookup is plain


@pytest.mark.parametrize("name", ["check_hb1", "fmt", "nothing"])
def test_the_package_refuses_a_name_it_does_not_export(name):
    with pytest.raises(AttributeError) as err:
        oracle.__getattr__(name)
    assert str(err.value) == f"module 'harness.oracle' has no attribute {name!r}"
