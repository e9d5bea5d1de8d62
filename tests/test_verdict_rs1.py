"""RS1 on a RESUME sent to the discovery URL (py-cord never uses resume_gateway_url): Discord
resumes it there too, so no event is lost, but it disconnects such clients "significantly faster
than normal" (change log 2022-08-09, enforced from 2022-09-12). The verdict stays a failure of
RS1 and its evidence says that, so it does not read like lost events (issue 13)."""

from __future__ import annotations

from harness.oracle import judge
from harness.oracle.model import Expectations, Verdict
from tests.test_oracle_traces import Run, healthy_start


def rs1(run: Run) -> Verdict:
    return next(v for v in judge(run.records, None, Expectations()) if v.invariant == "RS1")


def lost_then_resumed_on_discovery() -> Run:
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    run.open(2, 2.5, "discovery").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    run.dispatch(2, 2.65).dispatch(2, 2.66).resumed(2, 2.67, replayed=2)
    return run.beats(2, 3.0, 6.0, d=6).rec("note", 6.0, text="end")


def test_a_successful_resume_on_the_discovery_url_says_no_events_were_lost():
    v = rs1(lost_then_resumed_on_discovery())
    assert v.status == "fail"
    assert v.evidence.startswith(
        "conn 1 lost at 2.00 s; RESUME at 2.60 s went to conn 2 on the 'discovery' URL, not "
        "resume_gateway_url; the resume itself succeeded (RESUMED at 2.67 s, 2 event(s) "
        "replayed): no events lost, but Discord disconnects clients that resume on the "
        "discovery URL significantly faster than normal;"
    )



def test_an_unanswered_resume_on_the_discovery_url_is_no_excuse_for_itself():
    # The RESUME's own connection, not live yet, used to count as "the resume URL failed".
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "network", None, how="reset")
    run.open(2, 2.5, "discovery").hello(2, 2.51).resume(2, 2.6, "sess-a", 3)
    v = rs1(run.rec("note", 6.0, text="end"))
    assert v.status == "fail", v.evidence
    assert "on the 'discovery' URL, not resume_gateway_url;" in v.evidence
    assert "no events lost" not in v.evidence
