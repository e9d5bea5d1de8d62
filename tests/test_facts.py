"""The protocol-fact tables (``gateway_common.facts``): what the reference says, and every close
code as each part that uses the table behaves: the fake gateway sending it, the reference client
receiving it, the oracle judging a run with it. A row added to the table is tested everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from test_client_core import DISCOVERY, RESUME, CoreSim
from test_gateway_core import connect, identify, make_core, sent
from test_oracle_traces import Run, healthy_start

from fake_gateway.protocol import Close
from gateway_common.facts import (
    CLIENT_OPS,
    CLOSE_CODES,
    FATAL_CLOSE_CODES,
    NON_RESUMABLE_SERVER_CLOSE_CODES,
    OPCODES,
    REIDENTIFY_CLOSE_CODES,
    RESUMABLE_SERVER_CLOSE_CODES,
    SESSION_KILLING_CLIENT_CODES,
    close_code,
)
from harness.oracle import Expectations, judge

# gateway-protocol.md, written out by hand: section 13's client decisions and section 7.1's
# "Resume?" column (4001 never resumable, 14.3), 7.2 for the WebSocket codes (a server 1000 is
# ambiguous), section 5 for what a client's own close does.
REFERENCE: dict[int | None, tuple[str, str]] = {
    None: ("resume", "kept"),
    1000: ("resume", "unsure"),
    1001: ("resume", "kept"),
    1006: ("resume", "kept"),
    4000: ("resume", "kept"),
    4001: ("resume", "ended"),
    4002: ("resume", "kept"),
    4003: ("new_session", "ended"),
    4004: ("fatal", "ended"),
    4005: ("new_session", "ended"),
    4007: ("new_session", "ended"),
    4008: ("resume", "kept"),
    4009: ("new_session", "ended"),
    4010: ("fatal", "ended"),
    4011: ("fatal", "ended"),
    4012: ("fatal", "ended"),
    4013: ("fatal", "ended"),
    4014: ("fatal", "ended"),
}
SENT_BY_A_CLIENT_ENDS_THE_SESSION = {1000, 1001}
CODES = list(CLOSE_CODES)
FRAME_CODES = [code for code in CODES if code != 1006]  # 1006 is never in a close frame


def test_the_close_code_table_says_what_the_reference_says():
    assert {code: (row.client, row.session) for code, row in CLOSE_CODES.items()} == REFERENCE
    assert SESSION_KILLING_CLIENT_CODES == SENT_BY_A_CLIENT_ENDS_THE_SESSION
    assert FATAL_CLOSE_CODES == {4004, 4010, 4011, 4012, 4013, 4014}
    assert REIDENTIFY_CLOSE_CODES == {4003, 4005, 4007, 4009}
    assert RESUMABLE_SERVER_CLOSE_CODES == {None, 1001, 1006, 4000, 4002, 4008}
    assert NON_RESUMABLE_SERVER_CLOSE_CODES == {4001, 4003, 4004, 4005, 4007, 4009, 4010, 4011,
                                                4012, 4013, 4014}
    # An unlisted code: reconnect and try to resume, nobody counts on the session (7.1's note).
    assert (close_code(4006).client, close_code(4006).session) == ("resume", "unsure")


def test_the_opcode_table_says_what_the_reference_says():
    assert sorted(OPCODES) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 31, 43]
    assert CLIENT_OPS == {1, 2, 3, 4, 6, 8, 31, 43}


# ---- the fake gateway --------------------------------------------------------------------------


def _session_up() -> tuple[Any, Any, Any, Any]:
    core, clock = make_core(guilds=1)
    conn = connect(core, clock)
    sent(conn)
    session = core.sessions.get(identify(conn, clock)[0]["d"]["session_id"])
    assert session is not None
    return core, clock, conn, session


@pytest.mark.parametrize("code", FRAME_CODES)
def test_the_gateway_closing_with_a_code_keeps_the_session_unless_the_table_says_ended(code):
    row = CLOSE_CODES[code]
    _, clock, conn, session = _session_up()
    conn.close(clock.now, code)
    assert sent(conn)[-1] == Close(code, row.reason)
    assert session.alive is (row.session != "ended")


@pytest.mark.parametrize("code", FRAME_CODES)
def test_a_client_closing_with_a_code_ends_the_session_only_if_the_table_says_so(code):
    _, clock, conn, session = _session_up()
    conn.client_closed(clock.now, code, "")
    assert session.alive is not CLOSE_CODES[code].ends_session_from_client


# ---- the reference client ----------------------------------------------------------------------


@pytest.mark.parametrize("code", CODES)
def test_the_reference_client_resumes_starts_over_or_stops_as_the_table_says(code):
    sim = CoreSim()
    gen = sim.session_up(seqs=3)
    sim.close(gen, code, how="no_close_frame" if code == 1006 else "close_frame")
    action = CLOSE_CODES[code].client
    if action == "fatal":
        assert len(sim.stops) == 1 and sim.stops[0].fatal
        sim.advance(600)
        assert len(sim.connects) == 1
        return
    sim.wait_for_connect(2)
    nxt = sim.connects[-1]
    if action == "new_session":
        assert nxt.purpose == "identify" and nxt.url.startswith(DISCOVERY)
    else:
        assert nxt.purpose == "resume" and nxt.url.startswith(RESUME)


# ---- the oracle --------------------------------------------------------------------------------


def _closed_then(code: int | None, resume: bool) -> Run:
    """A session on conn 1, the server closes it with ``code`` at 2.0 s; 2.5 s later the client
    comes back on conn 2: a RESUME on the resume URL, or an IDENTIFY on the discovery URL."""
    run = healthy_start().beats(1, 0.5, 2.0, d=3).close(1, 2.0, "server", code)
    if resume:
        run.open(2, 4.5, "resume").hello(2, 4.5).resume(2, 4.55, "sess-a", 3).resumed(2, 4.6)
    else:
        run.open(2, 4.5).hello(2, 4.5).identify(2, 4.55).ready(2, 4.6, "sess-b")
    return run.beats(2, 4.8, 8.0, d=4)


def _statuses(run: Run) -> dict[str, str]:
    exp = Expectations(recovery_bound=8.0, duration=8.0)
    return {v.invariant: v.status for v in judge(run.records, None, exp)}


@pytest.mark.parametrize("code", CODES)
def test_the_oracle_wants_a_resume_after_a_kept_session_and_no_reconnect_after_a_fatal_code(code):
    row = CLOSE_CODES[code]
    identified = _statuses(_closed_then(code, resume=False))
    # IDENTIFY while the server kept the session: RS1 fails (events lost); otherwise it may.
    assert (identified["RS1"] == "fail") is (row.session == "kept")
    assert (identified["FC1"] == "fail") is (row.client == "fatal")
    resumed = _statuses(_closed_then(code, resume=True))
    # RESUME after a code that means "start a new session": RS5 fails.
    assert (resumed["RS5"] == "fail") is (row.client == "new_session")
    assert (resumed["FC1"] == "fail") is (row.client == "fatal")


def test_the_fuzzers_choices_come_from_the_tables():
    """Generated schedules pick, simplest first, among what the tables define: every non-fatal
    close code a close frame carries, one-shot controls, switches (not the policy)."""
    from gateway_common.facts import CONTROLS, ONE_SHOT_CONTROLS, SWITCH_CONTROLS
    from harness.schedules import ONE_SHOT_ACTIONS, PERSISTENT_ACTIONS, SAFE_CLOSE_CODES

    sendable = CONTROLS["close"].params["code"]
    assert set(SAFE_CLOSE_CODES) == {
        code for code, row in CLOSE_CODES.items()
        if row.client != "fatal" and (code is None or sendable.problem(code) is None)
    }
    assert set(ONE_SHOT_ACTIONS) <= ONE_SHOT_CONTROLS
    assert set(PERSISTENT_ACTIONS) == SWITCH_CONTROLS
