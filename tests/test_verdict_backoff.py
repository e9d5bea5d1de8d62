"""Verdicts on clients whose reconnect waits are a random exponential backoff (issue 13): LV1
allows the client's next backoff step after the last fault clears, and still fails a client that
never comes back; BO1 judges the envelope of full-jitter waits, not each wait.

The traces are shaped on real runs (validate --client discord.py / nextcord, the runs named in
each test)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from harness.oracle.liveness import lv1_judged_by
from harness.oracle.model import Expectations, Verdict
from harness.oracle.view import RunView
from harness.scenario import load_scenario
from harness.world import RunOptions, run_scenario
from tests.test_oracle_traces import Run, healthy_start


def verdict(run: Run, inv: str, **exp: object) -> Verdict:
    from harness.oracle import judge

    return next(v for v in judge(run.records, None, Expectations(**exp)) if v.invariant == inv)  # type: ignore[arg-type]


# LV1 --------------------------------------------------------------------------------------------


def gateway_down(back_at: float | None, end: float) -> Run:
    """gateway-down-2s as discord.py ran it: live from 0.1 s, the proxy in front of both URLs
    down from 0.52 to 2.52 s (its refused attempts never reach the trace), then the client's
    next attempt at ``back_at`` RESUMEs (None: it never comes back); the run ends at ``end``."""
    run = healthy_start().beats(1, 0.5, 0.52, d=3)
    run.fault("gateway-down", 0.52, "on", kind="proxy", action="down", target="both")
    run.close(1, 0.523, "network", None, how="eof")
    run.fault("gateway-down", 2.525, "off", kind="proxy", action="down", target="both")
    if back_at is not None:
        run.open(2, back_at, "resume").hello(2, back_at + 0.01)
        run.resume(2, back_at + 0.02, "sess-a", 3).resumed(2, back_at + 0.03)
        run.beats(2, back_at + 0.5, end, d=4)
    return run.rec("note", end, text="world: run over, stopping the client")


def test_lv1_allows_the_next_backoff_step_of_a_client_that_came_back_36_s_after_the_outage():
    # discord.py / gateway-down-2s, the failing run of six: RESUMED 3.6 s after the gateway came
    # back (bound 3 s); it had been backing off for 2 s when the proxy came up. Its wait until
    # that attempt is allowed on top of the bound, up to the ceiling of its next step.
    v = verdict(gateway_down(6.12, 9.0), "LV1", outcome="resume", recovery_bound=3.0,
                duration=6.5)
    assert v.status == "pass", v.evidence
    assert ("(3.63 s later, bound 3.0 s + 3.60 s (until its first attempt after the clear) of a "
            "8.01 s backoff allowance: 2 x 2 x the 2.00 s both URLs were down since conn 1's end "
            "at 0.52 s, the client's backoff through the outage, cap 120 s)") in v.evidence


def test_lv1_names_the_allowance_only_when_the_client_needed_it():
    v = verdict(gateway_down(3.06, 6.5), "LV1", outcome="resume", recovery_bound=3.0,
                duration=6.5)
    assert v.status == "pass"
    assert "(0.56 s later, bound 3.0 s);" in v.evidence


def test_lv1_fails_a_client_that_never_comes_back_once_the_allowance_ran_out():
    v = verdict(gateway_down(None, 14.0), "LV1", outcome="resume", recovery_bound=3.0,
                duration=6.5)
    assert v.status == "fail"
    assert v.evidence == (
        "the last fault ('gateway-down') switched off at 2.52 s; no live session (READY/RESUMED "
        "sent, connection open) by 13.53 s (bound 3.0 s + 8.01 s backoff allowance: 2 x 2 x the "
        "2.00 s both URLs were down since conn 1's end at 0.52 s, the client's backoff through "
        "the outage, cap 120 s); it never became live again; last heartbeat at 0.50 s (conn 1)"
    )


def test_lv1_fails_a_client_not_back_when_the_run_ends_inside_its_allowance():
    # The runner extends a run only so far (world.py); a client that is not live by its end,
    # past the scenario's own bound, fails and the evidence says the allowance ran on.
    v = verdict(gateway_down(None, 6.5), "LV1", outcome="resume", recovery_bound=3.0,
                duration=6.5)
    assert v.status == "fail"
    assert "the run ended at 6.50 s, before the allowance ran out at 13.53 s" in v.evidence
    # Before the scenario's own bound ran out, nothing can be said.
    short = verdict(gateway_down(None, 5.0), "LV1", outcome="resume", recovery_bound=3.0)
    assert short.status == "not_judged"


def offline_backoff(back_at: float) -> Run:
    """nextcord / offline-reconnect-backoff run 2: every attempt reset at once, waits 0.97,
    3.37 and 0.27 s, the network back at 5.51 s, live again on the attempt at ``back_at``."""
    run = healthy_start().beats(1, 0.5, 0.5, d=3)
    run.fault("every-connect-reset", 0.512, "on", target="both")
    run.close(1, 0.512, "server", None, how="reset")
    for conn, t in ((2, 0.521), (3, 1.487), (4, 4.865), (5, 5.143)):
        run.open(conn, t, "resume").close(conn, t + 0.001, "network", None, how="reset")
    run.fault("every-connect-reset", 5.513, "off", target="both")
    run.open(6, back_at, "resume").hello(6, back_at + 0.008).resume(6, back_at + 0.018, "sess-a", 3)
    run.resumed(6, back_at + 0.028).beats(6, back_at + 0.2, back_at + 2.6, d=4)
    return run.rec("note", back_at + 2.6, text="end")


def test_lv1_allowance_is_the_ceiling_of_the_next_step_the_waits_show():
    # Live 8.88 s after the clear (bound 8.5 s): its 3.38 s wait, about half a ceiling of 6.75 s
    # that doubled twice with the attempts after it, makes 27 s.
    run = offline_backoff(14.362)
    v = verdict(run, "LV1", outcome="resume", recovery_bound=8.5, duration=15.0)
    assert v.status == "pass", v.evidence
    assert ("(8.88 s later, bound 8.5 s + 8.85 s (until its first attempt after the clear) of a "
            "27.02 s backoff allowance: the client's wait of 3.38 s from conn 3's end at 1.49 s "
            "to conn 4 at 4.87 s x 2 (a random wait is about half its ceiling) x 2^2 (a step per "
            "failed attempt since), cap 120 s)") in v.evidence
    exp = Expectations(outcome="resume", recovery_bound=8.5, duration=15.0)
    # judged by the bound plus the wait up to the first attempt after the clear
    assert lv1_judged_by(RunView(run.records), exp) == pytest.approx(14.362 + 8.5)
    capped = replace(exp, tolerances=replace(exp.tolerances, backoff_cap=0.3))
    assert lv1_judged_by(RunView(run.records), capped) == pytest.approx(5.513 + 8.5 + 0.3)
    assert verdict(run, "LV1", outcome="resume", recovery_bound=8.5, duration=15.0,
                   tolerances=capped.tolerances).status == "fail"


def test_lv1_allowance_ends_at_the_clients_first_attempt_after_the_clear():
    # A client retrying every 0.3 s that never gets a session: whatever its waits show, its
    # backoff ended 0.11 s after the clear, when it tried again; the bound runs from there.
    run = healthy_start().beats(1, 0.5, 1.0, d=3)
    run.fault("every-connect-reset", 1.0, "on", target="both").close(1, 1.0, "network", None)
    t = 1.0
    while t < 9.0:
        run.open(int(t * 10), t + 0.3, "resume").close(int(t * 10), t + 0.301, "network", None)
        t = round(t + 0.301, 3)
    run.fault("every-connect-reset", 3.0, "off", target="both").rec("note", 9.0, text="end")
    v = verdict(run, "LV1", outcome="resume", recovery_bound=3.0)
    assert v.status == "fail"
    assert "by 6.11 s (bound 3.0 s + 0.11 s (until its first attempt after the clear) of a" in (
        v.evidence)


# The runner goes on until LV1 can judge ----------------------------------------------------------


def gateway_down_scenario(duration: float, recovery_bound: float):
    scenario = load_scenario("scenarios/gateway-down-2s.toml")
    return replace(scenario, expect=replace(scenario.expect, duration=duration,
                                            recovery_bound=recovery_bound))


def test_a_run_goes_on_past_its_duration_while_the_clients_allowance_runs():
    # The reference client in simulation comes back 0.72 s after the clear at 2.5 s: a run of
    # 3 s would end before the 3 s bound ran out (LV1 not judged); it goes on instead.
    result = run_scenario(gateway_down_scenario(3.0, 3.0), RunOptions(mode="sim"))
    lv1 = next(v for v in result.verdicts if v.invariant == "LV1")
    assert lv1.status == "pass", lv1.evidence
    notes = [r["text"] for r in result.records if r.get("kind") == "note"]
    assert any(t.startswith("world: the run goes on to 13.50 s, past its duration") for t in notes)


def test_lv1_gives_no_allowance_for_time_a_usable_url_went_unused():
    # f12: the resume URL's proxy is down, the discovery URL up. A client that keeps waiting on
    # the resume URL (the stuck-on-stale-resume-url bug) was not backing off from failures the
    # oracle could see, so it gets only the recovery bound.
    run = healthy_start().beats(1, 0.5, 0.5, d=3)
    run.fault("resume-host-down", 0.3, "on", kind="proxy", action="down", target="resume")
    run.close(1, 0.5, "server", None, how="reset")
    run.fault("resume-host-down", 6.3, "off", kind="proxy", action="down", target="resume")
    run.open(2, 12.83, "resume").hello(2, 12.84).resume(2, 12.85, "sess-a", 3)
    run.resumed(2, 12.86).beats(2, 13.0, 14.5, d=4).rec("note", 14.5, text="end")
    v = verdict(run, "LV1", outcome="resume", recovery_bound=1.5, duration=9.0)
    assert v.status == "fail"
    assert "by 7.80 s (bound 1.5 s); the client was live again only at 12.86 s" in v.evidence


# BO1 ---------------------------------------------------------------------------------------------


def attempts_with_waits(waits: list[float]) -> Run:
    """A session lost at 1.0 s, then attempts the network resets at once, ``waits`` apart (the
    first at once, as discord.py and nextcord retry)."""
    run = healthy_start().beats(1, 0.5, 1.0, d=3).close(1, 1.0, "server", None, how="reset")
    t = 1.0
    for conn, wait in enumerate([0.004, *waits], start=2):
        t = round(t + wait, 6)
        run.open(conn, t, "resume").close(conn, t + 0.001, "network", None, how="reset")
        t += 0.001
    return run.rec("note", t + 5.0, text="end")


@pytest.mark.parametrize(
    "waits",
    [
        [1.73, 0.33, 0.62],  # discord.py / offline-reconnect-backoff run 2 (BO1 "no backoff")
        [0.97, 3.37, 0.27],  # nextcord / offline-reconnect-backoff run 2
        [1.9, 0.2, 0.4, 0.3, 5.1, 14.0],  # uniform(0, 2^n): short draws after a long one
    ],
)
def test_bo1_passes_full_jitter_backoff(waits: list[float]) -> None:
    v = verdict(attempts_with_waits(waits), "BO1")
    assert v.status == "pass", v.evidence


def decorrelated(base: float, n: int, seed: int) -> list[float]:
    """AWS's decorrelated jitter: each wait min(60, uniform(base, 3 x the wait before))."""
    rng, out, prev = random.Random(seed), [], base
    for _ in range(n):
        prev = round(min(60.0, rng.uniform(base, prev * 3)), 3)
        out.append(prev)
    return out


@pytest.mark.parametrize(
    "waits",
    [
        # Decorrelated jitter grows by about 1.1x per wait at the median: the old envelope rule
        # (five waits not growing the largest by 1.5x) called this "no backoff" (issue 13).
        [0.25, 0.6, 0.74, 0.5, 0.9, 0.41, 0.83, 1.22, 2.9, 5.3],
        [1.0, 1.4, 1.4, 1.4, 1.4, 1.4, 3.1],  # a typical draw from a 1 s base
        decorrelated(0.25, 20, seed=7),
        # Equal jitter: b/2 + uniform(0, b/2) for b = 0.25 x 2^n, capped at 2 s.
        [0.2, 0.3, 0.61, 1.3, 1.02, 1.97, 1.5, 1.11, 1.8, 1.04, 1.6, 1.33, 1.9, 1.2, 1.7, 1.45,
         1.05, 1.88, 1.26, 1.5, 1.61],
        # Full jitter capped at 2 s: uniform(0, 2), a wait of 1 s or more half the time.
        [0.1, 0.4, 0.7, 0.3, 1.4, 0.2, 0.9, 1.9, 0.5, 0.8, 1.6, 0.3, 0.6, 1.2, 0.4, 0.7, 1.8],
    ],
)
def test_bo1_passes_decorrelated_and_equal_jitter(waits: list[float]) -> None:
    v = verdict(attempts_with_waits(waits), "BO1")
    assert v.status == "pass", v.evidence


@pytest.mark.parametrize(
    "waits, why",
    [
        # a fixed short wait: six waits in a row, one step (0)
        ([0.5] * 8, "waits 1-6 (0.50, 0.50, 0.50, 0.50, 0.50, 0.50 s) step by one fixed amount "
                    "(+0.00 s), below 2 s"),
        # a linear ramp from 0.1 s by 0.1 s
        ([round(0.1 * k, 1) for k in range(1, 17)],
         "waits 1-6 (0.10, 0.20, 0.30, 0.40, 0.50, 0.60 s) step by one fixed amount (+0.10 s), "
         "below 2 s"),
        # random waits under a second, no growth: 20 of them
        ([0.9, 0.3, 0.7, 0.1, 0.8, 0.4, 0.6, 0.2, 0.95, 0.5] * 2,
         "its first 20 waits (0.90, 0.30, 0.70, 0.10, 0.80, 0.40, 0.60, 0.20, 0.95, 0.50, 0.90, "
         "0.30, 0.70, 0.10, 0.80, 0.40, 0.60, 0.20, 0.95, 0.50 s) all stayed below 1 s"),
    ],
)
def test_bo1_fails_no_backoff_naming_the_waits_that_prove_it(
    waits: list[float], why: str
) -> None:
    v = verdict(attempts_with_waits(waits), "BO1")
    assert v.status == "fail"
    assert v.evidence.startswith(f"no backoff: {len(waits) + 2} failed attempts from 0.00 s")
    assert why in v.evidence, v.evidence


def test_bo1_says_too_few_waits_to_tell_random_short_waits_from_a_slow_start() -> None:
    # Seven random waits under a second: hammering, or decorrelated jitter from a 0.1 s base that
    # has not grown yet. No proof either way, so no failure, and the verdict says why.
    v = verdict(attempts_with_waits([0.9, 0.3, 0.7, 0.1, 0.8, 0.4, 0.6]), "BO1")
    assert v.status == "pass", v.evidence
    assert ("too few waits to tell: a run's 7 wait(s) all stayed below 1 s, and 20 are needed"
            in v.evidence)
    # One wait fewer than 20 is still too few; the 20th proves it (above).
    nineteen = [0.9, 0.3, 0.7, 0.1, 0.8, 0.4, 0.6, 0.2, 0.95, 0.5] * 2
    assert verdict(attempts_with_waits(nineteen[:19]), "BO1").status == "pass"
