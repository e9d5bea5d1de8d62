"""The gateway core's rules as a client sees them: the close code (and reason) each bad frame,
IDENTIFY or RESUME gets, the ops sent in answer, what a RESUME replays, the rate limits and
timers. Sans-I/O (plain calls, no sockets), so `nox -s mutation -- gateway` can run it per
mutant; each rule is checked against its near miss (the frame that is just within the limit)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from test_gateway_core import TOKEN, Clock, send, sent

from fake_gateway.codec import (
    DecodeError,
    Encoder,
    ZlibStreamDecoder,
    ZstdStreamDecoder,
    corrupt_block,
    decode_client,
    decode_server,
)
from fake_gateway.config import GatewayConfig
from fake_gateway.controls import GatewayControls, validate
from fake_gateway.etf import encode as etf_encode
from fake_gateway.protocol import Close, ConnectionCore, GatewayCore, Reset, Send
from fake_gateway.sessions import (
    IdentifyLimiter,
    Session,
    SessionStartLimit,
    SessionStore,
    shard_for_guild,
)
from gateway_common.errors import UserError
from gateway_common.trace import Trace

ACK = {"op": 11, "d": None, "s": None, "t": None}
OP9_FALSE = {"op": 9, "d": False, "s": None, "t": None}
OP9_TRUE = {"op": 9, "d": True, "s": None, "t": None}


class World:
    """One gateway core, its clock and controls, and the connections a test opens."""

    def __init__(self, **overrides: Any) -> None:
        # No IDENTIFY window unless a test is about it: most open several sessions at once.
        settings: dict[str, Any] = dict(heartbeat_interval_ms=1000, guilds=2, identify_window=0.0)
        settings.update(overrides)
        self.clock = Clock()
        self.trace = Trace(clock=self.clock)
        self.core = GatewayCore(GatewayConfig(**settings), self.trace, random.Random(7))
        self.core.set_urls("wss://discovery.test", "wss://resume.test")
        self.controls = GatewayControls(self.core, self.clock)

    def connect(self, listener: str = "discovery", query: dict[str, str] | None = None,
                drain: bool = True) -> ConnectionCore:
        conn_id = self.core.new_conn_id()
        conn = self.core.open_connection(conn_id, listener, "/",
                                         {"v": "10", "encoding": "json"} if query is None
                                         else query, self.clock.now)
        if drain:
            sent(conn)
        return conn

    def identify(self, conn: ConnectionCore, **extra: Any) -> list[Any]:
        d = {"token": TOKEN, "intents": 513, "properties": {}, **extra}
        return send(conn, self.clock, 2, d)

    def session_id(self, conn: ConnectionCore, **extra: Any) -> str:
        frames = self.identify(conn, **extra)
        assert frames[0]["t"] == "READY", frames
        return str(frames[0]["d"]["session_id"])

    def resume(self, conn: ConnectionCore, session_id: str, seq: Any) -> list[Any]:
        return send(conn, self.clock, 6, {"token": TOKEN, "session_id": session_id, "seq": seq})

    def resumable(self, session_id: str, seq: int = 0) -> bool:
        """Whether a RESUME on a new connection to the resume URL gets RESUMED."""
        frames = self.resume(self.connect("resume"), session_id, seq)
        return any(isinstance(f, dict) and f.get("t") == "RESUMED" for f in frames)


def ops(frames: list[Any]) -> list[Any]:
    return [f["op"] if isinstance(f, dict) else f for f in frames]


# ---- frames the gateway cannot take ---------------------------------------------------------

def test_a_payload_over_4096_bytes_gets_4002_and_one_of_4096_is_taken() -> None:
    w = World()
    conn = w.connect()
    beat = '{"op":1,"d":null}'
    conn.receive(beat + " " * (4096 - len(beat)), w.clock.now)
    assert sent(conn) == [ACK]
    conn.receive(beat + " " * (4097 - len(beat)), w.clock.now)
    assert sent(conn) == [Close(4002, "Decode error")]
    conn.receive(beat, w.clock.now)  # the connection is closed: nothing more goes out
    assert sent(conn) == []


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    w = World()
    conn = w.connect()
    beat = '{"op":1,"d":null}'
    padding = 4097 - len(beat)  # one byte over once é (2 bytes) replaces a space
    conn.receive(beat + " " * (padding - 2) + "é", w.clock.now)
    assert sent(conn) == [Close(4002, "Decode error")]


@pytest.mark.parametrize("message", ["nope", "[1]", '{"op":1,"d":NaN}', b"\xff\xfe"])
def test_a_frame_that_is_no_json_object_gets_4002_decode_error(message: str | bytes) -> None:
    w = World()
    conn = w.connect()
    conn.receive(message, w.clock.now)
    assert sent(conn) == [Close(4002, "Decode error")]


@pytest.mark.parametrize("op", [99, "1", True, 1.0, None, 10])
def test_an_op_a_client_may_not_send_gets_4001_unknown_opcode(op: Any) -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, op, None) == [Close(4001, "Unknown opcode")]


def test_a_session_op_before_identify_gets_4003() -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, 3, {"status": "online"}) == [Close(4003, "Not authenticated.")]


@pytest.mark.parametrize("d", ["1", True, 1.5, {}])
def test_a_heartbeat_whose_d_is_no_seq_gets_4001(d: Any) -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, 1, d) == [Close(4001, "Invalid heartbeat payload.")]


@pytest.mark.parametrize("d", [None, 0, 41])
def test_a_heartbeat_with_null_or_a_seq_is_acked(d: Any) -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, 1, d) == [ACK]


def test_4002_keeps_the_session_and_4001_ends_it() -> None:
    w = World()
    conn = w.connect()
    kept = w.session_id(conn)
    conn.receive("nope", w.clock.now)
    assert sent(conn) == [Close(4002, "Decode error")]
    assert w.resumable(kept)
    conn = w.connect()
    w.clock.now = 10.0  # past the IDENTIFY window
    ended = w.session_id(conn)
    assert send(conn, w.clock, 42, None) == [Close(4001, "Unknown opcode")]
    assert not w.resumable(ended)


def test_a_bad_frame_on_a_silent_connection_closes_nothing() -> None:
    w = World()
    conn = w.connect()
    w.controls.apply("go_silent", conn.conn_id)
    conn.receive("nope", w.clock.now)
    assert sent(conn) == [] and not conn.closed
    w.controls.apply("go_silent", conn.conn_id, on=False)
    assert send(conn, w.clock, 1, None) == [ACK]


# ---- rate limit ------------------------------------------------------------------------------

def test_the_121st_frame_within_60_s_gets_4008_and_the_session_resumes() -> None:
    w = World(heartbeat_deadline=False)
    conn = w.connect()
    session_id = w.session_id(conn)  # frame 1
    for n in range(2, 121):
        w.clock.now = n * 0.4
        assert send(conn, w.clock, 1, None) == [ACK], n
    w.clock.now = 59.9  # the first frame (at 0.0) is 59.9 s old: still in the window
    assert send(conn, w.clock, 1, None) == [Close(4008, "Rate limited.")]
    assert w.resumable(session_id, 2)


def test_a_frame_exactly_60_s_old_has_left_the_window() -> None:
    w = World(heartbeat_deadline=False)
    conn = w.connect()
    for _ in range(120):
        assert send(conn, w.clock, 1, None) == [ACK]
    w.clock.now = 60.0
    assert send(conn, w.clock, 1, None) == [ACK]
    assert send(conn, w.clock, 1, None) == [ACK]  # all 120 at 0.0 left together


# ---- IDENTIFY --------------------------------------------------------------------------------

def test_ready_names_the_session_the_resume_url_and_the_guilds_follow_in_seq_order() -> None:
    w = World(guilds=3)
    conn = w.connect()
    frames = w.identify(conn)
    ready = frames[0]
    assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
    assert ready["d"]["resume_gateway_url"] == "wss://resume.test"
    assert ready["d"]["v"] == 10
    assert [g["id"] for g in ready["d"]["guilds"]] == [str(g) for g in w.core.guild_ids]
    assert [(f["t"], f["s"], f["d"]["id"]) for f in frames[1:]] == [
        ("GUILD_CREATE", 2 + i, str(g)) for i, g in enumerate(w.core.guild_ids)]
    assert send(conn, w.clock, 1, 4) == [ACK]


def test_ready_carries_the_version_the_client_asked_for() -> None:
    w = World()
    conn = w.connect(query={"v": "9"})
    assert w.identify(conn)[0]["d"]["v"] == 9
    conn = w.connect(query={})
    w.clock.now = 10.0
    assert w.identify(conn)[0]["d"]["v"] == 10


def test_a_second_identify_gets_4005() -> None:
    w = World()
    conn = w.connect()
    w.identify(conn)
    assert w.identify(conn) == [Close(4005, "Already authenticated.")]


def test_an_identify_while_ready_is_withheld_gets_4005() -> None:
    w = World()
    w.controls.apply("withhold_ready", "next")
    conn = w.connect()
    assert w.identify(conn) == []
    assert w.identify(conn) == [Close(4005, "Already authenticated.")]


@pytest.mark.parametrize("d", [
    None, [], {"intents": 1, "properties": {}}, {"token": 5, "intents": 1, "properties": {}},
    {"token": TOKEN, "intents": 1}, {"token": TOKEN, "intents": 1, "properties": []},
])
def test_a_malformed_identify_gets_4001(d: Any) -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, 2, d) == [Close(4001, "Invalid identify payload.")]


def test_a_wrong_token_gets_4004() -> None:
    w = World()
    conn = w.connect()
    assert send(conn, w.clock, 2, {"token": TOKEN + "x", "intents": 1, "properties": {}}) == [
        Close(4004, "Authentication failed.")]


def test_accept_any_token_takes_any_but_an_empty_one() -> None:
    w = World(accept_any_token=True)
    conn = w.connect()
    assert send(conn, w.clock, 2, {"token": "mine", "intents": 1, "properties": {}})[0][
        "t"] == "READY"
    conn = w.connect()
    assert send(conn, w.clock, 2, {"token": "", "intents": 1, "properties": {}}) == [
        Close(4004, "Authentication failed.")]


@pytest.mark.parametrize("intents", [-1, True, "1", 1 << 30, None, 1.0])
def test_intents_that_are_not_a_set_of_defined_bits_get_4013(intents: Any) -> None:
    w = World()
    conn = w.connect()
    assert w.identify(conn, intents=intents) == [Close(4013, "Invalid intent(s).")]


def test_a_user_account_identify_with_capabilities_and_no_intents_is_taken() -> None:
    w = World()
    conn = w.connect()
    d = {"token": TOKEN, "capabilities": 16381, "properties": {}}
    assert send(conn, w.clock, 2, d)[0]["t"] == "READY"
    conn = w.connect()
    d = {"token": TOKEN, "capabilities": "16381", "properties": {}}
    assert send(conn, w.clock, 2, d) == [Close(4013, "Invalid intent(s).")]


def test_a_privileged_intent_not_allowed_gets_4014() -> None:
    w = World(allowed_privileged_intents=1 << 1)
    conn = w.connect()
    assert w.identify(conn, intents=(1 << 1) | (1 << 0))[0]["t"] == "READY"
    conn = w.connect()
    assert w.identify(conn, intents=1 << 8) == [Close(4014, "Disallowed intent(s).")]


@pytest.mark.parametrize("shard", [[1, 1], [0, 0], [-1, 2], [2, 2], [0], [0, 1, 2], [0, "2"],
                                   [True, 2], "0,1", [0, 1.0]])
def test_an_impossible_shard_gets_4010(shard: Any) -> None:
    w = World()
    conn = w.connect()
    assert w.identify(conn, shard=shard) == [Close(4010, "Invalid shard.")]


def test_each_shard_gets_the_guilds_routed_to_it() -> None:
    w = World(guilds=12, max_concurrency=2)
    seen: list[int] = []
    for shard_id in (0, 1):
        conn = w.connect()
        frames = w.identify(conn, shard=[shard_id, 2])
        guilds = [int(f["d"]["id"]) for f in frames if f["t"] == "GUILD_CREATE"]
        assert frames[0]["d"]["shard"] == [shard_id, 2]
        assert all((g >> 22) % 2 == shard_id for g in guilds)
        seen += guilds
    assert sorted(seen) == sorted(w.core.guild_ids)


def test_more_guilds_than_a_shard_may_hold_gets_4011() -> None:
    w = World(guilds=3, max_guilds_per_shard=3)
    assert w.identify(w.connect())[0]["t"] == "READY"
    w = World(guilds=3, max_guilds_per_shard=2)
    assert w.identify(w.connect()) == [Close(4011, "Sharding required.")]


def test_an_identify_within_the_window_of_its_bucket_gets_op9_false() -> None:
    w = World(identify_window=5.0, max_concurrency=2)
    assert w.identify(w.connect(), shard=[0, 4])[0]["t"] == "READY"
    assert w.identify(w.connect(), shard=[1, 4])[0]["t"] == "READY"  # the other bucket
    w.clock.now = 4.9
    conn = w.connect()
    assert w.identify(conn, shard=[2, 4]) == [OP9_FALSE]  # bucket 0 again
    assert not conn.closed  # op 9 alone: the client may IDENTIFY again on this socket
    w.clock.now = 5.0
    assert w.identify(conn, shard=[2, 4])[0]["t"] == "READY"


def test_the_daily_start_budget_used_up_gets_4004_and_reports_none_left() -> None:
    w = World(session_start_total=2, identify_window=0.0)
    assert w.identify(w.connect())[0]["t"] == "READY"
    assert w.core.start_limit.remaining(w.clock.now) == 1
    assert w.identify(w.connect())[0]["t"] == "READY"
    assert w.identify(w.connect()) == [Close(4004, "Authentication failed.")]
    assert w.core.start_limit.remaining(w.clock.now) == 0
    w.clock.now = 24 * 3600.0  # the window rolled over
    assert w.identify(w.connect())[0]["t"] == "READY"


def test_session_start_remaining_forces_the_budget() -> None:
    w = World()
    w.controls.apply("session_start_remaining", "all", remaining=1)
    assert w.identify(w.connect())[0]["t"] == "READY"
    w.clock.now = 10.0
    assert w.identify(w.connect()) == [Close(4004, "Authentication failed.")]


# ---- RESUME ----------------------------------------------------------------------------------

def detached(w: World, dispatches: int = 0) -> str:
    """A session whose connection dropped, with `dispatches` synthetic events missed since."""
    conn = w.connect()
    session_id = w.session_id(conn)
    conn.connection_lost(w.clock.now, "reset")
    for _ in range(dispatches):
        w.core.emit_synthetic(w.clock.now)
    return session_id


def test_resume_replays_what_was_missed_then_resumed() -> None:
    w = World(guilds=1)
    session_id = detached(w, 3)  # READY 1, GUILD_CREATE 2, then 3..5
    frames = w.resume(w.connect("resume"), session_id, 2)
    assert [(f["t"], f["s"]) for f in frames] == [
        ("TYPING_START", 3), ("TYPING_START", 4), ("TYPING_START", 5), ("RESUMED", 6)]
    assert frames[-1]["d"] == {"_trace": ["gateway-harness-fake"]}


def test_resumed_has_an_empty_d_without_extra_keys() -> None:
    w = World(guilds=1, extra_keys=False)
    session_id = detached(w)
    assert w.resume(w.connect("resume"), session_id, 2) == [
        {"op": 0, "t": "RESUMED", "s": 3, "d": {}}]


def test_resume_with_a_null_seq_replays_everything_kept() -> None:
    w = World(guilds=1)
    session_id = detached(w, 1)
    frames = w.resume(w.connect("resume"), session_id, None)
    assert [(f["t"], f["s"]) for f in frames] == [
        ("READY", 1), ("GUILD_CREATE", 2), ("TYPING_START", 3), ("RESUMED", 4)]


def test_a_resumed_session_keeps_its_seq_for_later_dispatches() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    conn = w.connect("resume")
    w.resume(conn, session_id, 2)
    w.core.emit_synthetic(w.clock.now)
    assert [(f["t"], f["s"]) for f in sent(conn)] == [("TYPING_START", 4)]


def test_resume_on_the_discovery_url_is_accepted_by_default() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    assert w.resume(w.connect("discovery"), session_id, 2)[-1]["t"] == "RESUMED"


@pytest.mark.parametrize("d", [
    None, {"session_id": "x", "seq": 1}, {"token": TOKEN, "seq": 1},
    {"token": TOKEN, "session_id": 5, "seq": 1}, {"token": TOKEN, "session_id": "x", "seq": "1"},
    {"token": TOKEN, "session_id": "x", "seq": True},
])
def test_a_malformed_resume_gets_4001(d: Any) -> None:
    w = World()
    conn = w.connect("resume")
    assert send(conn, w.clock, 6, d) == [Close(4001, "Invalid resume payload.")]


def test_a_resume_with_a_wrong_token_gets_4004_and_leaves_the_session() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    conn = w.connect("resume")
    d = {"token": "other", "session_id": session_id, "seq": 2}
    assert send(conn, w.clock, 6, d) == [Close(4004, "Authentication failed.")]
    assert w.resumable(session_id, 2)


def test_a_resume_on_a_connection_with_a_session_gets_4005() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    conn = w.connect()
    w.identify(conn)
    assert w.resume(conn, session_id, 2) == [Close(4005, "Already authenticated.")]


def test_a_resume_of_an_unknown_session_gets_op9_false() -> None:
    w = World()
    assert w.resume(w.connect("resume"), "f" * 32, 0) == [OP9_FALSE]


def test_a_resume_with_a_seq_ahead_of_the_server_gets_4007_and_ends_the_session() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    assert w.resume(w.connect("resume"), session_id, 3) == [Close(4007, "Invalid seq.")]
    assert w.resume(w.connect("resume"), session_id, 2) == [OP9_FALSE]


def test_a_resume_older_than_the_replay_buffer_gets_4007_or_op9() -> None:
    w = World(guilds=1, replay_buffer=3)
    session_id = detached(w, 3)  # s 1..5 sent, 3..5 kept
    assert w.resume(w.connect("resume"), session_id, 1) == [Close(4007, "Invalid seq.")]
    assert w.resume(w.connect("resume"), session_id, 2) == [OP9_FALSE]  # it ended
    w = World(guilds=1, replay_buffer=3, bad_seq_response="op9")
    session_id = detached(w, 3)
    assert [f["s"] for f in w.resume(w.connect("resume"), session_id, 2)] == [3, 4, 5, 6]
    session_id = detached(w, 3)
    assert w.resume(w.connect("resume"), session_id, 1) == [OP9_FALSE]
    assert w.resume(w.connect("resume"), session_id, 2) == [OP9_FALSE]


def test_a_resume_of_an_expired_session_gets_op9_or_4009() -> None:
    for response, answer in [("op9", OP9_FALSE), ("close_4009",
                                                  Close(4009, "Session timed out."))]:
        w = World(session_ttl=10.0, expired_resume_response=response)
        session_id = detached(w)
        w.clock.now = 10.0
        w.core.on_time(w.clock.now)
        assert w.resume(w.connect("resume"), session_id, 1) == [answer], response


def test_a_session_resumed_elsewhere_closes_its_old_socket_with_4000_and_stays() -> None:
    w = World(guilds=1)
    old = w.connect()
    session_id = w.session_id(old)
    new = w.connect("resume")
    assert w.resume(new, session_id, 2)[-1]["t"] == "RESUMED"
    assert sent(old) == [Close(4000, "session resumed elsewhere")]
    w.core.emit_synthetic(w.clock.now)
    assert [f["s"] for f in sent(new)] == [4]
    assert sent(old) == []


def test_withheld_resumed_holds_the_replay_end_and_later_dispatches() -> None:
    w = World(guilds=1)
    session_id = detached(w, 1)
    w.controls.apply("withhold_resumed", "next")
    conn = w.connect("resume")
    assert [f["s"] for f in w.resume(conn, session_id, 2)] == [3]
    w.core.emit_synthetic(w.clock.now)
    assert sent(conn) == []
    assert w.resume(conn, session_id, 2) == [Close(4005, "Already authenticated.")]
    w = World(guilds=1)
    session_id = detached(w, 1)
    w.controls.apply("withhold_resumed", "next")
    conn = w.connect("resume")
    w.resume(conn, session_id, 2)
    w.core.emit_synthetic(w.clock.now)
    w.controls.apply("withhold_resumed", conn.conn_id, on=False)
    assert [(f["t"], f["s"]) for f in sent(conn)] == [("RESUMED", 4), ("TYPING_START", 5)]


# ---- how a connection's end leaves its session ----------------------------------------------

@pytest.mark.parametrize("code, kept", [(1000, False), (1001, False), (1006, True),
                                        (4000, True), (None, True), (4999, True)])
def test_a_client_close_ends_the_session_only_with_1000_or_1001(code: Any, kept: bool) -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    conn.client_closed(w.clock.now, code, "")
    assert w.resumable(session_id, 2) is kept
    conn.receive('{"op":1,"d":null}', w.clock.now)
    assert sent(conn) == []


@pytest.mark.parametrize("code, kept", [(4000, True), (4008, True), (4003, False),
                                        (4009, False), (None, True), (1000, True)])
def test_a_server_close_keeps_the_session_as_the_table_says(code: Any, kept: bool) -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("close", conn.conn_id, code=code)
    [close] = sent(conn)
    assert isinstance(close, Close) and close.code == code
    assert w.resumable(session_id, 2) is kept


def test_the_close_control_can_override_resumability() -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("close", conn.conn_id, code=4000, reason="bye", resumable=False)
    assert sent(conn) == [Close(4000, "bye")]
    assert not w.resumable(session_id, 2)


def test_a_reset_keeps_the_session() -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("reset", conn.conn_id)
    assert sent(conn) == [Reset()]
    assert w.resumable(session_id, 2)
    w.controls.apply("reset", conn.conn_id)  # already closed: nothing more
    assert sent(conn) == []


def test_a_session_not_resumed_within_its_ttl_expires() -> None:
    w = World(session_ttl=10.0, guilds=1)
    first = detached(w)
    w.clock.now = 4.0
    second = detached(w)
    assert w.core.next_deadline() == 10.0
    w.core.on_time(9.99)
    assert w.core.sessions.get(first).alive  # type: ignore[union-attr]
    w.core.on_time(10.0)
    assert w.core.sessions.get(first).state == "expired"  # type: ignore[union-attr]
    assert w.core.next_deadline() == 14.0
    w.clock.now = 13.0
    assert w.resumable(second, 2)
    assert w.core.next_deadline() is None  # the resumed session's old entry does not count


def test_a_session_dropped_resumed_and_dropped_again_expires_from_its_last_drop() -> None:
    w = World(session_ttl=10.0, guilds=1)
    session_id = detached(w)
    w.clock.now = 5.0
    conn = w.connect("resume")
    w.resume(conn, session_id, 2)
    conn.connection_lost(w.clock.now, "eof")
    w.core.on_time(12.0)  # 10 s after the first drop, 7 s after the second
    assert w.core.sessions.get(session_id).alive  # type: ignore[union-attr]
    assert w.core.next_deadline() == 15.0
    w.core.on_time(15.0)
    assert not w.core.sessions.get(session_id).alive  # type: ignore[union-attr]


def test_only_the_latest_ended_sessions_are_remembered() -> None:
    w = World(expired_resume_response="close_4009", guilds=1, identify_window=0.0)
    w.core.sessions.ended_kept = 2
    ids = [detached(w) for _ in range(3)]
    for session_id in ids:
        w.controls.apply("expire_session", "all", session_id=session_id)
    assert w.core.sessions.get(ids[0]) is None
    assert w.resume(w.connect("resume"), ids[0], 2) == [OP9_FALSE]  # forgotten: unknown
    assert w.resume(w.connect("resume"), ids[1], 2) == [Close(4009, "Session timed out.")]
    assert len(w.core.sessions.get(ids[2]).buffer) == 0  # type: ignore[union-attr]


# ---- op 9, op 7 and the heartbeat deadline ---------------------------------------------------

def test_op9_false_ends_the_session_op9_true_keeps_it() -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("invalid_session", conn.conn_id, resumable=True)
    assert sent(conn) == [OP9_TRUE]
    assert w.resume(conn, session_id, 2)[-1]["t"] == "RESUMED"  # on the same socket
    w.controls.apply("invalid_session", conn.conn_id, resumable=False)
    assert sent(conn) == [OP9_FALSE]
    assert not w.resumable(session_id, 3)


def test_op9_then_a_close_after_half_a_second_when_configured() -> None:
    w = World(close_after_invalid_session=True, guilds=1)
    conn = w.connect()
    w.identify(conn)
    w.controls.apply("invalid_session", conn.conn_id, resumable=True)
    assert sent(conn) == [OP9_TRUE]
    assert conn.next_deadline() == 0.5
    conn.on_time(0.49)
    assert sent(conn) == []
    conn.on_time(0.5)
    assert sent(conn) == [Close(4000, "invalid session")]


def test_the_invalid_session_control_can_ask_for_the_close() -> None:
    w = World()
    conn = w.connect()
    w.controls.apply("invalid_session", conn.conn_id, resumable=False, close=True)
    assert sent(conn) == [OP9_FALSE]
    conn.on_time(0.5)
    assert sent(conn) == [Close(4000, "invalid session")]


def test_reconnect_sends_op7_and_closes_4000_after_the_delay_asked() -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("reconnect", conn.conn_id, close_after_ms=200)
    assert sent(conn) == [{"op": 7, "d": None, "s": None, "t": None}]
    assert conn.next_deadline() == pytest.approx(0.2)
    conn.on_time(0.2)
    assert sent(conn) == [Close(4000, "reconnect")]
    assert w.resumable(session_id, 2)


def test_the_earlier_of_two_pending_closes_wins() -> None:
    w = World()
    conn = w.connect()
    w.controls.apply("reconnect", conn.conn_id, close_after_ms=300)
    w.controls.apply("reconnect", conn.conn_id, close_after_ms=100)
    w.controls.apply("reconnect", conn.conn_id, close_after_ms=200)
    sent(conn)
    assert conn.next_deadline() == pytest.approx(0.1)


def test_the_heartbeat_deadline_closes_with_the_configured_code() -> None:
    w = World(heartbeat_deadline_close_code=4009, heartbeat_deadline_resumable=False, guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    assert conn.next_deadline() == pytest.approx(1.5)
    conn.on_time(1.5)
    assert sent(conn) == [Close(4009, "Heartbeat deadline missed.")]
    assert not w.resumable(session_id, 2)


def test_the_heartbeat_deadline_control_changes_code_and_resumability() -> None:
    w = World(guilds=1)
    conn = w.connect()
    session_id = w.session_id(conn)
    w.controls.apply("heartbeat_deadline", "all", code=4000, resumable=False)
    conn.on_time(1.5)
    assert sent(conn) == [Close(4000, "Heartbeat deadline missed.")]
    assert not w.resumable(session_id, 2)
    later = w.connect()  # the code holds for later connections too
    later.on_time(1.5)
    assert sent(later) == [Close(4000, "Heartbeat deadline missed.")]
    w.controls.apply("heartbeat_deadline", "all", on=False)
    assert w.connect().next_deadline() is None


def test_heartbeat_deadline_resumable_false_for_all_holds_for_later_connections() -> None:
    w = World(guilds=1)
    w.controls.apply("heartbeat_deadline", "all", resumable=False)
    conn = w.connect()
    session_id = w.session_id(conn)
    conn.on_time(1.5)
    assert sent(conn) == [Close(1000, "Heartbeat deadline missed.")]
    assert not w.resumable(session_id, 2)


def test_no_deadline_before_hello_nor_when_switched_off() -> None:
    w = World(heartbeat_deadline=False)
    assert w.connect().next_deadline() is None
    w = World()
    w.controls.apply("delay_hello", "next", ms=2000)
    conn = w.connect(drain=False)
    assert sent(conn) == []
    assert conn.next_deadline() == pytest.approx(2.0)  # HELLO's, not a heartbeat's
    conn.on_time(2.0)
    assert ops(sent(conn)) == [10]
    assert conn.next_deadline() == pytest.approx(3.5)


def test_a_heartbeat_request_sends_op1_with_the_d_asked() -> None:
    w = World()
    conn = w.connect()
    w.controls.apply("heartbeat_request", conn.conn_id)
    assert sent(conn) == [{"op": 1, "d": None, "s": None, "t": None}]


def test_withheld_acks_for_all_hold_on_later_connections_until_switched_off() -> None:
    w = World()
    first = w.connect()
    w.controls.apply("withhold_acks", "all")
    second = w.connect()
    assert send(first, w.clock, 1, None) == [] and send(second, w.clock, 1, None) == []
    w.controls.apply("withhold_acks", "all", on=False)
    assert send(w.connect(), w.clock, 1, None) == [ACK]
    assert send(first, w.clock, 1, None) == [ACK]


# ---- opening a connection --------------------------------------------------------------------

@pytest.mark.parametrize("v", ["8", "11", "x", ""])
def test_an_api_version_other_than_9_or_10_gets_4012(v: str) -> None:
    w = World()
    conn = w.connect(query={"v": v}, drain=False)
    assert sent(conn) == [Close(4012, "Invalid API version.")]


def test_an_unknown_encoding_gets_4002() -> None:
    w = World()
    conn = w.connect(query={"v": "10", "encoding": "xml"}, drain=False)
    assert sent(conn) == [Close(4002, "Unsupported encoding.")]


def test_an_unknown_compress_is_ignored_and_frames_go_as_plain_text() -> None:
    w = World()
    conn = w.connect(query={"v": "10", "compress": "gzip"}, drain=False)
    [action] = conn.take_actions()
    assert isinstance(action, Send) and isinstance(action.messages[0], str)
    assert json.loads(action.messages[0])["op"] == 10


def test_zlib_connections_get_their_own_inflatable_stream() -> None:
    w = World(zlib_split=2)
    conn = w.connect(query={"v": "10", "compress": "zlib-stream"}, drain=False)
    decoder = ZlibStreamDecoder()
    out = []
    for action in conn.take_actions():
        assert isinstance(action, Send) and len(action.messages) == 2
        out += [decoder.feed(m) for m in action.messages]  # type: ignore[arg-type]
    assert out[0] is None and out[1]["op"] == 10  # type: ignore[index]


def test_etf_connections_get_binary_frames_and_read_etf() -> None:
    w = World()
    conn = w.connect(query={"v": "10", "encoding": "etf"}, drain=False)
    [hello] = conn.take_actions()
    assert isinstance(hello, Send) and isinstance(hello.messages[0], bytes)
    assert decode_server(hello.messages[0], "etf")["op"] == 10
    conn.receive(etf_encode({"op": 1, "d": None}, atom_keys=False), 0.0)
    [ack] = conn.take_actions()
    assert isinstance(ack, Send) and decode_server(ack.messages[0], "etf")["op"] == 11


def test_reject_upgrade_answers_the_status_once_for_next_and_until_off_for_all() -> None:
    w = World()
    w.controls.apply("reject_upgrade", "next", status=503)
    assert w.core.upgrade_rejection("discovery") == 503
    assert w.core.upgrade_rejection("discovery") is None
    w.controls.apply("reject_upgrade", "all", status=429, listener="resume")
    assert w.core.upgrade_rejection("discovery") is None
    assert w.core.upgrade_rejection("resume") == 429
    assert w.core.upgrade_rejection("resume") == 429
    w.controls.apply("reject_upgrade", "all", listener="resume", on=False)
    assert w.core.upgrade_rejection("resume") is None
    w.controls.apply("reject_upgrade", "next", status=500, listener="resume")
    assert w.core.upgrade_rejection("discovery") is None
    assert w.core.upgrade_rejection("resume") == 500


def test_delay_hello_for_all_delays_later_connections_until_off() -> None:
    w = World()
    w.controls.apply("delay_hello", "all", ms=500)
    conn = w.connect(drain=False)
    assert sent(conn) == [] and conn.next_deadline() == pytest.approx(0.5)
    conn.on_time(0.5)
    assert ops(sent(conn)) == [10]
    w.controls.apply("delay_hello", "all", on=False)
    assert ops(sent(w.connect(drain=False))) == [10]


def test_delay_hello_off_on_a_waiting_connection_sends_hello_now() -> None:
    w = World()
    w.controls.apply("delay_hello", "next", ms=5000)
    conn = w.connect(drain=False)
    assert sent(conn) == []
    w.controls.apply("delay_hello", conn.conn_id, on=False)
    assert ops(sent(conn)) == [10]


# ---- dispatches while connected: voice, members, soundboard, channel info --------------------

def ready_conn(w: World) -> ConnectionCore:
    conn = w.connect()
    w.identify(conn)
    return conn


def test_a_voice_state_update_is_echoed_and_a_join_gets_a_voice_server() -> None:
    w = World()
    conn = ready_conn(w)
    frames = send(conn, w.clock, 4, {"guild_id": 5, "channel_id": "9", "self_mute": 1,
                                     "self_deaf": False})
    assert [f["t"] for f in frames] == ["VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"]
    state = frames[0]["d"]
    assert (state["guild_id"], state["channel_id"], state["self_mute"], state["self_deaf"]) == (
        "5", "9", True, False)
    assert state["user_id"] == str(GatewayConfig().resolved_bot_id())
    assert frames[1]["d"]["guild_id"] == "5" and frames[1]["d"]["token"]
    leave = send(conn, w.clock, 4, {"guild_id": "5", "channel_id": None})
    assert [f["t"] for f in leave] == ["VOICE_STATE_UPDATE"]
    assert send(conn, w.clock, 4, {"guild_id": None}) == [Close(4001, "Invalid payload.")]


def test_a_session_op_whose_d_is_no_object_gets_4001() -> None:
    w = World()
    conn = ready_conn(w)
    assert send(conn, w.clock, 3, "online") == [Close(4001, "Invalid payload.")]


def test_a_presence_update_gets_no_answer() -> None:
    w = World()
    conn = ready_conn(w)
    assert send(conn, w.clock, 3, {"status": "idle"}) == []


def test_request_guild_members_answers_with_one_chunk() -> None:
    w = World()
    conn = ready_conn(w)
    bot_id = str(GatewayConfig().resolved_bot_id())
    [chunk] = send(conn, w.clock, 8, {"guild_id": 5, "query": "h", "limit": 1, "nonce": "n1",
                                      "presences": True, "user_ids": [bot_id, 7]})
    d = chunk["d"]
    assert chunk["t"] == "GUILD_MEMBERS_CHUNK"
    assert (d["guild_id"], d["nonce"], d["chunk_index"], d["chunk_count"]) == ("5", "n1", 0, 1)
    assert [m["user"]["id"] for m in d["members"]] == [bot_id]
    assert d["not_found"] == [7] and d["presences"] == []
    [chunk] = send(conn, w.clock, 8, {"guild_id": "5", "query": "h", "limit": 1,
                                      "nonce": "x" * 33})
    assert "nonce" not in chunk["d"] and "not_found" not in chunk["d"]
    assert "presences" not in chunk["d"]
    [chunk] = send(conn, w.clock, 8, {"guild_id": "5", "query": "h", "limit": 1,
                                      "nonce": "x" * 32})
    assert chunk["d"]["nonce"] == "x" * 32
    for guild_id in (True, None, [5]):
        conn = ready_conn(w)
        assert send(conn, w.clock, 8, {"guild_id": guild_id}) == [
            Close(4001, "Invalid payload.")]


def test_all_members_of_a_guild_twice_within_30_s_is_rate_limited() -> None:
    w = World(heartbeat_deadline=False)
    conn = ready_conn(w)
    everyone = {"guild_id": "5", "query": "", "limit": 0, "nonce": "a"}
    assert send(conn, w.clock, 8, everyone)[0]["t"] == "GUILD_MEMBERS_CHUNK"
    w.clock.now = 12.5
    [limited] = send(conn, w.clock, 8, everyone)
    assert limited["t"] == "RATE_LIMITED"
    assert limited["d"] == {"opcode": 8, "retry_after": 17.5,
                            "meta": {"guild_id": "5", "nonce": "a"}}
    [limited] = send(conn, w.clock, 8, {"guild_id": "5", "query": "", "limit": 0})
    assert limited["d"]["meta"] == {"guild_id": "5"}
    assert send(conn, w.clock, 8, {"guild_id": "6", "query": "", "limit": 0})[0][
        "t"] == "GUILD_MEMBERS_CHUNK"  # another guild
    assert send(conn, w.clock, 8, {"guild_id": "5", "query": "a", "limit": 0})[0][
        "t"] == "GUILD_MEMBERS_CHUNK"  # a query is not "all members"
    w.clock.now = 30.0
    assert send(conn, w.clock, 8, everyone)[0]["t"] == "GUILD_MEMBERS_CHUNK"


def test_soundboard_sounds_answer_per_guild_and_channel_info_once() -> None:
    w = World()
    conn = ready_conn(w)
    frames = send(conn, w.clock, 31, {"guild_ids": [1, "2"]})
    assert [(f["t"], f["d"]) for f in frames] == [
        ("SOUNDBOARD_SOUNDS", {"soundboard_sounds": [], "guild_id": "1"}),
        ("SOUNDBOARD_SOUNDS", {"soundboard_sounds": [], "guild_id": "2"})]
    [info] = send(conn, w.clock, 43, {"guild_id": 3, "fields": ["status"]})
    assert (info["t"], info["d"]) == ("CHANNEL_INFO", {"guild_id": "3", "channels": []})
    assert send(conn, w.clock, 31, {"guild_ids": "1"}) == [Close(4001, "Invalid payload.")]


# ---- the synthetic event stream, bursts and floods -------------------------------------------

def test_dispatch_rate_sends_one_event_per_step_to_each_live_session() -> None:
    w = World(dispatch_rate=2.0, guilds=1, heartbeat_deadline=False)
    conn = ready_conn(w)
    w.core.start(0.0)
    assert w.core.next_deadline() == 0.5
    w.core.on_time(0.49)
    assert sent(conn) == []
    w.core.on_time(1.6)  # steps at 0.5, 1.0 and 1.5
    assert [(f["t"], f["s"]) for f in sent(conn)] == [("TYPING_START", s) for s in (3, 4, 5)]
    assert w.core.next_deadline() == 2.0


def test_synthetic_events_go_to_the_shard_of_their_guild_and_dms_to_shard_0() -> None:
    w = World(guilds=6, max_concurrency=2, heartbeat_deadline=False)
    shards = {i: w.connect() for i in (0, 1)}
    for i, conn in shards.items():
        w.identify(conn, shard=[i, 2])
    for _ in range(20):
        w.core.emit_synthetic(0.0)
    for i, conn in shards.items():
        for frame in sent(conn):
            assert shard_for_guild(int(frame["d"]["guild_id"]), 2) == i
    w = World(guilds=0, dm_fraction=1.0, max_concurrency=2)
    shards = {i: w.connect() for i in (0, 1)}
    for i, conn in shards.items():
        w.identify(conn, shard=[i, 2])
    assert w.core.emit_synthetic(0.0) == 1
    assert [f["d"].get("guild_id") for f in sent(shards[0])] == [None]
    assert sent(shards[1]) == []


def test_burst_sends_count_dispatches_of_about_the_size_asked() -> None:
    w = World(guilds=1)
    conn = ready_conn(w)
    w.controls.apply("burst", conn.conn_id, count=3, size=2000)
    frames = sent(conn)
    assert [f["s"] for f in frames] == [3, 4, 5]
    assert all(len(json.dumps(f["d"])) >= 1900 for f in frames)


def test_a_guild_create_burst_resends_each_sessions_guilds_in_turn() -> None:
    w = World(guilds=2)
    conn = ready_conn(w)
    w.controls.apply("burst", "all", count=3, t="GUILD_CREATE")
    frames = sent(conn)
    g = [str(x) for x in w.core.guild_ids]
    assert [(f["t"], f["d"]["id"]) for f in frames] == [
        ("GUILD_CREATE", g[0]), ("GUILD_CREATE", g[1]), ("GUILD_CREATE", g[0])]


def test_a_flood_sends_rate_dispatches_per_second_until_off() -> None:
    w = World(guilds=1, heartbeat_deadline=False)
    conn = ready_conn(w)
    w.controls.apply("flood", "all", rate=4)
    assert w.core.next_deadline() == 0.25
    w.core.on_time(1.0)
    assert len(sent(conn)) == 4
    w.controls.apply("flood", "all", on=False)
    assert w.core.next_deadline() is None
    w.core.on_time(5.0)
    assert sent(conn) == []
    with pytest.raises(UserError, match="flood"):
        w.controls.apply("flood", conn.conn_id, rate=4)


def test_go_silent_holds_dispatches_and_sends_them_in_order_after() -> None:
    w = World(guilds=1)
    conn = ready_conn(w)
    w.controls.apply("go_silent", conn.conn_id)
    for _ in range(3):
        w.core.emit_synthetic(0.0)
    assert send(conn, w.clock, 1, None) == []
    w.controls.apply("go_silent", conn.conn_id, on=False)
    assert [f["s"] for f in sent(conn)] == [3, 4, 5]


def test_go_silent_before_hello_sends_hello_when_it_ends() -> None:
    w = World()
    w.controls.apply("go_silent", "next")
    conn = w.connect(drain=False)
    assert sent(conn) == []
    w.controls.apply("go_silent", conn.conn_id, on=False)
    assert ops(sent(conn)) == [10]


# ---- controls: what they refuse and whom they reach ------------------------------------------

@pytest.mark.parametrize("action, target, params, words", [
    ("nope", "all", {}, "unknown action 'nope'"),
    ("reset", True, {}, "target must be a connection id"),
    ("reset", "some", {}, "target must be a connection id"),
    ("reset", "all", {"hard": 1}, "unknown parameter(s) hard"),
    ("close", "all", {"code": "4000"}, "parameter 'code' has the wrong type (str)"),
    ("close", "all", {"code": 12}, "control close: code"),
])
def test_a_bad_control_is_one_line_naming_what_is_wrong(
        action: str, target: Any, params: dict[str, Any], words: str) -> None:
    with pytest.raises(UserError) as err:
        validate(action, target, params)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_control_reports_the_connections_it_reached() -> None:
    w = World()
    a, b = w.connect(), w.connect()
    b.connection_lost(0.0, "eof")
    assert w.controls.apply("heartbeat_request", "all") == {"ok": True, "connections": [a.conn_id]}
    assert w.controls.apply("heartbeat_request", a.conn_id)["connections"] == [a.conn_id]
    with pytest.raises(UserError, match="no open connection 99"):
        w.controls.apply("reset", 99)


def test_ending_a_session_by_id_or_all_live_ones() -> None:
    w = World(guilds=1, identify_window=0.0)
    one, two = detached(w), detached(w)
    w.controls.apply("invalidate_session", "all", session_id=one)
    assert w.resume(w.connect("resume"), one, 2) == [OP9_FALSE]
    with pytest.raises(UserError, match="no session 'zz'"):
        w.controls.apply("expire_session", "all", session_id="zz")
    three = w.connect()
    w.identify(three)
    w.controls.apply("expire_session", "all")
    assert not w.core.sessions.get(two).alive  # type: ignore[union-attr]
    assert w.core.sessions.live() == []
    conn = w.connect()
    w.identify(conn)
    w.controls.apply("invalidate_session", conn.conn_id)
    assert w.core.sessions.live() == []


# ---- the session store and limits as the gateway reports them --------------------------------

def test_the_identify_limiter_has_at_least_one_bucket() -> None:
    limiter = IdentifyLimiter(max_concurrency=0, window=5.0)
    assert limiter.try_acquire(3, 0.0) and not limiter.try_acquire(4, 4.99)
    assert limiter.try_acquire(4, 5.0)


def test_session_start_limit_reports_reset_after_and_forced_remaining() -> None:
    limit = SessionStartLimit(total=3, window=100.0)
    assert limit.reset_after_ms(0.0) == 100_000  # no window running yet
    assert limit.consume(10.0) and limit.remaining(10.0) == 2
    assert limit.reset_after_ms(60.0) == 50_000
    assert limit.reset_after_ms(110.0) == 100_000 and limit.remaining(110.0) == 3
    limit.forced_remaining = 1
    assert limit.remaining(0.0) == 1 and limit.consume(0.0) and not limit.consume(0.0)
    assert SessionStartLimit(total=0, window=1.0).consume(0.0) is False


def test_a_session_routes_its_guilds_and_dms_only_to_shard_0() -> None:
    guild = (5 << 22) | 1  # shard 1 of 2, shard 2 of 3
    assert Session("s", (1, 2), 0, [], 10).routes(guild)
    assert not Session("s", (0, 2), 0, [], 10).routes(guild)
    assert Session("s", (2, 3), 0, [], 10).routes(guild)
    assert Session("s", None, 0, [], 10).routes(guild)
    assert Session("s", None, 0, [], 10).routes(None)
    assert not Session("s", (1, 2), 0, [], 10).routes(None)


def test_session_ids_are_32_hex_digits_and_differ() -> None:
    store = SessionStore(random.Random(1), 10)
    a, b = store.create(None, 0, []), store.create(None, 0, [])
    assert len(a.session_id) == 32 and int(a.session_id, 16) >= 0
    assert a.session_id != b.session_id and store.get(a.session_id) is a


# ---- codec -----------------------------------------------------------------------------------

def test_an_encoder_refuses_an_unknown_compression_or_encoding() -> None:
    with pytest.raises(ValueError, match="compress='gzip'"):
        Encoder("gzip")
    with pytest.raises(ValueError, match="encoding='xml'"):
        Encoder(None, encoding="xml")
    assert not Encoder().compressed and Encoder("zstd-stream").compressed


def test_plain_json_is_compact_and_keeps_unicode() -> None:
    messages, size = Encoder().encode({"op": 0, "d": "é"})
    assert messages == ['{"op":0,"d":"é"}'] and size == len('{"op":0,"d":"é"}'.encode())


def test_zlib_split_cuts_a_message_into_that_many_frames_unless_too_short() -> None:
    encoder = Encoder("zlib-stream", split=3)
    messages, _ = encoder.encode({"op": 0, "d": "x" * 200})
    assert len(messages) == 3
    decoder = ZlibStreamDecoder()
    assert [decoder.feed(m) for m in messages][-1] == {"op": 0, "d": "x" * 200}  # type: ignore
    assert len(Encoder("zlib-stream", split=0).encode({"op": 11})[0]) == 1


def test_a_continued_zlib_stream_decodes_only_with_the_old_context() -> None:
    first = Encoder("zlib-stream")
    decoder = ZlibStreamDecoder()
    decoder.feed(first.encode({"op": 10, "d": "hello" * 20})[0][0])  # type: ignore[arg-type]
    later = first.continued()
    message = later.encode({"op": 0, "d": "hello" * 20})[0][0]
    assert decoder.feed(message) == {"op": 0, "d": "hello" * 20}  # type: ignore[arg-type]
    import zlib
    with pytest.raises(zlib.error):
        ZlibStreamDecoder().feed(message)  # type: ignore[arg-type]
    assert Encoder().continued().encode({"op": 1})[0] == ['{"op":1}']


def test_a_corrupt_block_fails_the_clients_inflater() -> None:
    import zlib

    import zstandard
    encoder = Encoder("zlib-stream")
    decoder = ZlibStreamDecoder()
    decoder.feed(encoder.encode({"op": 10})[0][0])  # type: ignore[arg-type]
    with pytest.raises(zlib.error):
        decoder.feed(corrupt_block("zlib-stream"))
    encoder = Encoder("zstd-stream")
    zdecoder = ZstdStreamDecoder()
    zdecoder.feed(encoder.encode({"op": 10})[0][0])  # type: ignore[arg-type]
    with pytest.raises(zstandard.ZstdError):
        zdecoder.feed(corrupt_block("zstd-stream"))
    with pytest.raises(ValueError):
        corrupt_block("gzip")


def test_decode_client_takes_etf_maps_and_refuses_other_terms() -> None:
    assert decode_client(etf_encode({"op": 1, "d": None}, atom_keys=False), "etf") == {
        "op": 1, "d": None}
    with pytest.raises(DecodeError, match="not ETF"):
        decode_client(etf_encode({"op": 1}), "etf")  # atom keys: clients must send strings
    with pytest.raises(DecodeError, match="not an ETF map"):
        decode_client(etf_encode([1]), "etf")
    with pytest.raises(DecodeError, match="not ETF"):
        decode_client(b"\x83junk", "etf")


@pytest.mark.parametrize("message", ['{"op":1,"d":"\\ud800"}', b'{"op":1,"d":{"\\udc00":1}}',
                                     '{"op":1,"d":["\\uDBFF"]}'])
def test_a_lone_surrogate_escape_is_a_decode_error(message: str | bytes) -> None:
    with pytest.raises(DecodeError, match="lone surrogate"):
        decode_client(message)


def test_a_surrogate_pair_and_plain_escapes_decode() -> None:
    assert decode_client('{"op":1,"d":"\\ud83d\\ude00"}') == {"op": 1, "d": "😀"}
    assert decode_client(b'{"op":1,"d":["\\u00e9", {"k": "\\ud83d\\ude00"}]}')["d"][0] == "é"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_no_numbers_are_refused(constant: str) -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        decode_client('{"op":1,"d":' + constant + '}')


# ---- frame-level faults as the core carries them out -----------------------------------------

def test_drop_mid_guilds_resets_after_n_guild_creates_and_resume_replays_the_rest() -> None:
    w = World(guilds=3)
    w.controls.apply("drop_mid_guilds", "next", guilds=1)
    conn = w.connect()
    frames = w.identify(conn)
    assert [f["t"] if isinstance(f, dict) else f for f in frames] == [
        "READY", "GUILD_CREATE", Reset()]
    [fault] = [r for r in w.trace.records if r["kind"] == "frame_fault"]
    assert "READY and 1 of 3 GUILD_CREATEs sent" in fault["detail"]
    assert (fault["guilds"], fault["withheld"]) == (1, 2)
    session_id = frames[0]["d"]["session_id"]
    frames = w.resume(w.connect("resume"), session_id, 2)
    assert [(f["t"], f["s"]) for f in frames] == [
        ("GUILD_CREATE", 3), ("GUILD_CREATE", 4), ("RESUMED", 5)]


def test_drop_mid_guilds_after_all_guilds_resets_after_the_last() -> None:
    w = World(guilds=2)
    w.controls.apply("drop_mid_guilds", "next", guilds=2)
    frames = w.identify(w.connect())
    assert [f["t"] if isinstance(f, dict) else f for f in frames] == [
        "READY", "GUILD_CREATE", "GUILD_CREATE", Reset()]
    assert w.identify(w.connect())[-1]["t"] == "GUILD_CREATE"  # one shot: used up


def test_close_on_resume_answers_with_the_code_and_ends_the_session_as_it_says() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    w.controls.apply("close_on_resume", "all", code=4000, reason="again")
    assert w.resume(w.connect("resume"), session_id, 2) == [Close(4000, "again")]
    w.controls.apply("close_on_resume", "all", on=False)
    w.controls.apply("close_on_resume", "all", code=4009)
    assert w.resume(w.connect("resume"), session_id, 2) == [Close(4009, "")]
    w.controls.apply("close_on_resume", "all", on=False)
    assert w.resume(w.connect("resume"), session_id, 2) == [OP9_FALSE]  # 4009 ended it
    session_id = detached(w)
    w.controls.apply("close_on_resume", "all", code=4009, resumable=True)
    assert w.resume(w.connect("resume"), session_id, 2) == [Close(4009, "")]
    w.controls.apply("close_on_resume", "all", on=False)
    assert w.resumable(session_id, 2)


def test_close_on_resume_without_a_code_sends_an_empty_close_and_keeps_the_session() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    w.controls.apply("close_on_resume", "all")
    assert w.resume(w.connect("resume"), session_id, 2) == [Close(None, "")]
    [fault] = [r for r in w.trace.records if r["kind"] == "frame_fault"]
    assert fault["detail"] == "RESUME answered with an empty close frame (1005)"
    w.controls.apply("close_on_resume", "all", on=False)
    assert w.resumable(session_id, 2)


def test_an_op9_loop_answers_identify_and_resume_with_op9_false_until_off() -> None:
    w = World(guilds=1)
    session_id = detached(w)
    w.controls.apply("invalid_session_loop", "all")
    conn = w.connect("resume")
    assert w.resume(conn, session_id, 2) == [OP9_FALSE]
    assert w.identify(conn) == [OP9_FALSE]
    details = [r["detail"] for r in w.trace.records if r["kind"] == "frame_fault"]
    assert details == ["RESUME answered with op 9 d=false (an op 9 loop)",
                       "IDENTIFY answered with op 9 d=false (an op 9 loop)"]
    w.controls.apply("invalid_session_loop", "all", on=False)
    assert w.identify(conn)[0]["t"] == "READY"
    assert not w.resumable(session_id, 2)  # the loop's op 9 ended the session it named


def test_an_apps_own_token_is_traced_redacted() -> None:
    w = World(accept_any_token=True)
    conn = w.connect()
    send(conn, w.clock, 2, {"token": "abcdefghijklmnop", "intents": 1, "properties": {}})
    notes = [r["text"] for r in w.trace.records if r["kind"] == "note"]
    assert "accepting the app's own token 'abcdef'... (16 chars)" in notes
    [frame_in] = [r for r in w.trace.records if r["kind"] == "frame_in" and r["op"] == 2]
    assert frame_in["token_seen"] == "'abcdef'... (16 chars)" and frame_in["token_ok"]
    conn = w.connect()
    send(conn, w.clock, 2, {"token": "abcd", "intents": 1, "properties": {}})
    frame_in = [r for r in w.trace.records if r["kind"] == "frame_in" and r["op"] == 2][-1]
    assert frame_in["token_seen"] == "'ab'... (4 chars)" and not frame_in["token_ok"]
    conn = w.connect()
    send(conn, w.clock, 2, {"token": 5, "intents": 1, "properties": {}})
    frame_in = [r for r in w.trace.records if r["kind"] == "frame_in" and r["op"] == 2][-1]
    assert frame_in["token_seen"] == "5"


# ---- what the payloads and the trace carry ---------------------------------------------------

def test_voice_payloads_are_whole_and_in_the_shape_clients_parse() -> None:
    w = World()
    conn = ready_conn(w)
    session_id = w.core.sessions.live()[0].session_id
    frames = send(conn, w.clock, 4, {"guild_id": "5", "channel_id": "9", "self_deaf": 1})
    assert [f["d"] for f in frames] == [
        {"guild_id": "5", "channel_id": "9", "user_id": str(GatewayConfig().resolved_bot_id()),
         "session_id": session_id, "deaf": False, "mute": False, "self_deaf": True,
         "self_mute": False, "self_video": False, "suppress": False,
         "request_to_speak_timestamp": None},
        {"token": "fake-voice-token", "guild_id": "5", "endpoint": "voice.invalid:443"},
    ]


def test_a_members_chunk_is_whole_and_caps_not_found_at_100() -> None:
    w = World()
    conn = ready_conn(w)
    config = GatewayConfig()
    [chunk] = send(conn, w.clock, 8, {"guild_id": "5", "query": "", "limit": 1, "nonce": 7,
                                      "user_ids": list(range(1, 151))})
    assert chunk["d"] == {
        "guild_id": "5",
        "members": [{"user": json.loads(json.dumps(payloads_user(config))), "nick": None,
                     "roles": [], "joined_at": "2025-10-09T08:53:20.000+00:00", "deaf": False,
                     "mute": False, "flags": 0}],
        "chunk_index": 0, "chunk_count": 1, "not_found": list(range(1, 101)),
    }  # a nonce that is no string is not echoed


def payloads_user(config: GatewayConfig) -> dict[str, Any]:
    from fake_gateway.payloads import user_object
    return user_object(config)


def test_rate_limited_retry_after_is_rounded_to_the_millisecond() -> None:
    w = World(heartbeat_deadline=False)
    conn = ready_conn(w)
    everyone = {"guild_id": "5", "query": "", "limit": 0}
    send(conn, w.clock, 8, everyone)
    w.clock.now = 12.34567
    [limited] = send(conn, w.clock, 8, everyone)
    assert limited["d"]["retry_after"] == 17.654


def test_every_record_the_gateway_writes_carries_the_time_it_was_given() -> None:
    w = World(guilds=1, heartbeat_deadline=False)
    w.clock.now = 7.0
    conn = ready_conn(w)
    for op, d in [(1, None), (4, {"guild_id": "1", "channel_id": "2"}), (31, {"guild_ids": [1]}),
                  (43, {"guild_id": 1}), (8, {"guild_id": "1", "query": "", "limit": 0}),
                  (8, {"guild_id": "1", "query": "", "limit": 0})]:
        send(conn, w.clock, op, d)
    w.controls.apply("withhold_ready", "next")
    held = w.connect()
    w.identify(held)
    w.controls.apply("withhold_ready", held.conn_id, on=False)
    w.controls.apply("drop_mid_guilds", "next", guilds=0)
    w.identify(w.connect())
    w.controls.apply("reconnect", "next")
    w.connect().receive("nope", w.clock.now)
    w.controls.apply("heartbeat_request", conn.conn_id)
    w.controls.apply("reset", conn.conn_id)
    assert {r["ts"] for r in w.trace.records} == {7.0}
    assert {"frame_out", "frame_bad", "conn_close", "frame_fault", "session"} <= {
        r["kind"] for r in w.trace.records}


def test_a_server_reset_and_a_bad_frame_are_traced_as_the_oracle_reads_them() -> None:
    w = World(guilds=1)
    conn = ready_conn(w)
    session_id = w.core.sessions.live()[0].session_id
    w.controls.apply("reset", conn.conn_id)
    close = [r for r in w.trace.records if r["kind"] == "conn_close"][-1]
    assert {k: close[k] for k in ("conn", "by", "code", "reason", "how")} == {
        "conn": conn.conn_id, "by": "server", "code": None, "reason": "reset", "how": "reset"}
    detach = [r for r in w.trace.records if r["kind"] == "session"][-1]
    assert (detach["event"], detach["reason"], detach["session_id"]) == (
        "detached", "server reset", session_id)
    bad = w.connect()
    bad.receive("x" * 5000, w.clock.now)
    [rec] = [r for r in w.trace.records if r["kind"] == "frame_bad"]
    assert {k: rec[k] for k in ("conn", "reason", "size")} == {
        "conn": bad.conn_id, "reason": "payload of 5000 bytes exceeds 4096", "size": 5000}


def test_drop_mid_guilds_is_traced_with_its_connection_and_counts() -> None:
    w = World(guilds=3)
    w.controls.apply("drop_mid_guilds", "next", guilds=1)
    conn = w.connect()
    w.identify(conn)
    [fault] = [r for r in w.trace.records if r["kind"] == "frame_fault"]
    assert fault["conn"] == conn.conn_id
    assert fault["detail"] == ("READY and 1 of 3 GUILD_CREATEs sent, then a reset; the other 2 "
                               "wait in the session's history")


def test_the_heartbeat_count_state_reports_counts_each_beat() -> None:
    w = World()
    conn = w.connect()
    for _ in range(3):
        send(conn, w.clock, 1, None)
    assert conn.heartbeats == 3  # /_harness/state's "heartbeats"


def test_after_a_withheld_ready_is_released_later_dispatches_flow_at_once() -> None:
    w = World(guilds=1)
    w.controls.apply("withhold_ready", "next")
    conn = w.connect()
    w.identify(conn)
    w.controls.apply("withhold_ready", conn.conn_id, on=False)
    assert [f["s"] for f in sent(conn)] == [1, 2]
    w.core.emit_synthetic(w.clock.now)
    assert [f["s"] for f in sent(conn)] == [3]


def test_with_no_replay_buffer_a_resume_one_behind_gets_4007() -> None:
    w = World(guilds=1, replay_buffer=0)
    session_id = detached(w)
    assert w.resume(w.connect("resume"), session_id, 1) == [Close(4007, "Invalid seq.")]
    session_id = detached(w)
    assert [f["t"] for f in w.resume(w.connect("resume"), session_id, 2)] == ["RESUMED"]


def test_reset_after_reaches_zero_at_the_end_of_the_window() -> None:
    limit = SessionStartLimit(total=3, window=100.0)
    limit.consume(0.0)
    assert limit.reset_after_ms(99.9995) == 0


def test_client_side_decoders_read_etf_streams() -> None:
    decoder: Any
    for compress, decoder in [("zlib-stream", ZlibStreamDecoder("etf")),
                              ("zstd-stream", ZstdStreamDecoder("etf"))]:
        encoder = Encoder(compress, encoding="etf")
        [message], _ = encoder.encode({"op": 0, "t": "X", "s": 1, "d": {"id": "5"}})
        assert decoder.feed(message)["d"] == {"id": 5}, compress
    assert decode_server(Encoder(encoding="etf").encode({"op": 11})[0][0], "etf") == {"op": 11}


def test_a_continued_stream_keeps_the_encoding_and_zstd_context() -> None:
    first = Encoder("zstd-stream", encoding="etf")
    decoder = ZstdStreamDecoder("etf")
    decoder.feed(first.encode({"op": 10})[0][0])  # type: ignore[arg-type]
    later = first.continued()
    assert later.compressed and later.encoding == "etf"
    assert decoder.feed(later.encode({"op": 11})[0][0]) == {"op": 11}  # type: ignore[arg-type]


def test_zlib_split_edges() -> None:
    encoder = Encoder("zlib-stream", split=2)
    messages, _ = encoder.encode({"op": 11})
    assert len(messages) == 2  # a short message still splits in two
    one = Encoder("zlib-stream", split=1)
    assert len(one.encode({"op": 0, "d": "x" * 300})[0]) == 1
    from fake_gateway.codec import _split
    assert _split(b"abc", 3) == [b"a", b"b", b"c"] and _split(b"ab", 3) == [b"ab"]


def test_codec_errors_name_what_was_refused() -> None:
    with pytest.raises(ValueError, match="unsupported compress='gzip'"):
        corrupt_block("gzip")
    with pytest.raises(DecodeError, match="NaN is not a JSON number"):
        decode_client('{"op":1,"d":NaN}')


# ---- the session and close records the oracle judges from ------------------------------------

def session_log(w: World) -> list[tuple[Any, ...]]:
    return [(r["session_id"][:4], r["event"], r["reason"], r["conn"], r["seq"])
            for r in w.trace.records if r["kind"] == "session"]


def test_a_sessions_life_is_traced_with_event_reason_conn_and_seq() -> None:
    w = World(guilds=1, session_ttl=10.0)
    first = w.connect()
    sid = w.session_id(first)[:4]
    first.client_closed(1.0, 4000, "bye")
    second = w.connect("resume")
    w.resume(second, w.core.sessions.live()[0].session_id, 2)
    w.controls.apply("invalid_session", second.conn_id, resumable=True)
    w.core.on_time(20.0)
    assert session_log(w) == [
        (sid, "created", "identify", first.conn_id, 0),
        (sid, "attached", "identify", first.conn_id, 0),
        (sid, "detached", "client close 4000", first.conn_id, 2),
        (sid, "attached", "resume", second.conn_id, 2),
        (sid, "detached", "invalid_session (resumable)", second.conn_id, 3),
        (sid, "expired", "not resumed within 10.0s", None, 3),
    ]
    closes = [(r["conn"], r["by"], r["code"], r["reason"], r["how"], r["ts"])
              for r in w.trace.records if r["kind"] == "conn_close"]
    assert closes == [(first.conn_id, "client", 4000, "bye", "close_frame", 1.0)]
    assert w.core.sessions.get(w.trace.records[-1]["session_id"]).resumes == 1  # type: ignore


@pytest.mark.parametrize("how, reason", [
    (lambda w, c: w.controls.apply("invalid_session", c.conn_id, resumable=False),
     "invalid_session"),
    (lambda w, c: w.controls.apply("close", c.conn_id, code=4003), "server close 4003"),
    (lambda w, c: w.controls.apply("invalidate_session", c.conn_id), "control invalidate_session"),
    (lambda w, c: w.controls.apply("expire_session", c.conn_id), "control expire_session"),
])
def test_how_a_session_ended_is_traced(how: Any, reason: str) -> None:
    w = World(guilds=1)
    conn = w.connect()
    w.identify(conn)
    how(w, conn)
    event = "expired" if "expire" in reason else "invalidated"
    assert session_log(w)[-1][1:] == (event, reason, conn.conn_id, 2)
    assert conn.session is None  # /_harness/state shows no session on the connection


def test_a_server_close_is_traced_with_its_code_reason_and_how() -> None:
    w = World(guilds=1)
    conn = w.connect()
    w.controls.apply("close", conn.conn_id, code=4009, reason="r")
    [rec] = [r for r in w.trace.records if r["kind"] == "conn_close"]
    assert (rec["conn"], rec["by"], rec["code"], rec["reason"], rec["how"]) == (
        conn.conn_id, "server", 4009, "r", "close_frame")
    [control] = [r for r in w.trace.records if r["kind"] == "control"]
    assert (control["action"], control["target"], control["params"]["code"]) == (
        "close", conn.conn_id, 4009)


def test_rejected_and_bad_seq_resumes_trace_why_the_session_ended() -> None:
    w = World(guilds=1, resume_on_discovery="reject")
    sid = detached(w)
    w.resume(w.connect("discovery"), sid, 2)
    notes = [r["text"] for r in w.trace.records if r["kind"] == "note"]
    assert "RESUME on the discovery URL instead of resume_gateway_url" in notes
    assert session_log(w)[-1][1:3] == ("invalidated", "RESUME on the discovery URL rejected")
    w = World(guilds=1)
    sid = detached(w)
    w.resume(w.connect("resume"), sid, 7)
    assert session_log(w)[-1][1:3] == ("invalidated", "resume with bad seq 7 (last 2)")
    w = World(guilds=1)
    sid = detached(w)
    w.controls.apply("close_on_resume", "all", code=4007)
    w.resume(w.connect("resume"), sid, 2)
    assert session_log(w)[-1][1:3] == ("invalidated", "close_on_resume 4007")
    [fault] = [r for r in w.trace.records if r["kind"] == "frame_fault"]
    assert (fault["detail"], fault["code"]) == ("RESUME answered with close 4007", 4007)
    w = World(guilds=1)
    sid = detached(w)
    w.controls.apply("invalid_session_loop", "all")
    w.resume(w.connect("resume"), sid, 2)
    w.identify(w.connect())
    faults = [r for r in w.trace.records if r["kind"] == "frame_fault"]
    assert [f["answered"] for f in faults] == [6, 2]
    assert ("invalidated", "invalid_session_loop") in [e[1:3] for e in session_log(w)]


def test_op9_before_a_resume_ends_the_session_that_resume_names() -> None:
    w = World(guilds=1)
    sid = detached(w)
    conn = w.connect("resume")
    w.controls.apply("invalid_session", conn.conn_id, resumable=False)
    assert sent(conn) == [OP9_FALSE]
    assert w.resume(conn, sid, 2) == [OP9_FALSE]
    assert session_log(w)[-1][1:3] == ("invalidated", "invalid_session sent before its RESUME")


def test_a_session_taken_over_closes_the_old_socket_resumable() -> None:
    w = World(guilds=1)
    old = w.connect()
    sid = w.session_id(old)
    w.resume(w.connect("resume"), sid, 2)
    [close] = [r for r in w.trace.records if r["kind"] == "conn_close"]
    assert (close["conn"], close["code"], close["reason"]) == (
        old.conn_id, 4000, "session resumed elsewhere")
    assert w.core.sessions.get(sid).alive  # type: ignore[union-attr]


def test_synthetic_events_count_up_and_a_rate_below_one_per_second_still_runs() -> None:
    w = World(guilds=1, dispatch_rate=0.5, heartbeat_deadline=False)
    conn = ready_conn(w)
    w.core.start(0.0)
    assert w.core.next_deadline() == 2.0
    w.core.on_time(4.0)  # steps at 2.0 and 4.0: a step due exactly now goes out
    assert [f["d"]["_harness_n"] for f in sent(conn)] == [1, 2]
    w.controls.apply("burst", conn.conn_id, count=2)
    assert [f["d"]["_harness_n"] for f in sent(conn)] == [3, 4]


def test_a_burst_aimed_at_one_connection_reaches_only_its_session() -> None:
    w = World(guilds=1)
    a, b = ready_conn(w), ready_conn(w)
    w.controls.apply("burst", a.conn_id, count=2, t="GUILD_CREATE", size=3000)
    frames = sent(a)
    assert [f["t"] for f in frames] == ["GUILD_CREATE"] * 2 and sent(b) == []
    assert all(len(json.dumps(f["d"])) >= 2900 for f in frames)
    w.controls.apply("burst", a.conn_id, count=2)
    assert len(sent(a)) == 2 and sent(b) == []


def test_delay_hello_and_reject_upgrade_off_clear_only_their_listener() -> None:
    w = World()
    w.controls.apply("delay_hello", "all", ms=500, listener="resume")
    w.controls.apply("delay_hello", "all", ms=700)
    w.controls.apply("delay_hello", "all", listener="resume", on=False)
    assert sent(w.connect("resume", drain=False)) == []  # the any-listener delay still holds
    w.controls.apply("reject_upgrade", "all", status=503)
    w.controls.apply("reject_upgrade", "all", status=429, listener="resume")
    w.controls.apply("reject_upgrade", "all", listener="resume", on=False)
    assert w.core.upgrade_rejection("resume") == 503


def test_delay_hello_on_a_waiting_connection_moves_hello_from_its_open() -> None:
    w = World()
    w.controls.apply("delay_hello", "next", ms=5000)
    w.clock.now = 1.0
    conn = w.connect(drain=False)
    w.clock.now = 2.0
    w.controls.apply("delay_hello", conn.conn_id, ms=2000)
    assert conn.next_deadline() == pytest.approx(3.0)
    w.controls.apply("delay_hello", conn.conn_id, never=True)
    assert conn.next_deadline() is None
    [rec] = [r for r in w.trace.records if r["kind"] == "wire_fault"]
    assert rec["conn"] == conn.conn_id and rec["ts"] == 2.0


def test_a_forced_start_budget_counts_down_by_one() -> None:
    limit = SessionStartLimit(total=10, window=100.0)
    limit.forced_remaining = 3
    assert limit.consume(0.0) and limit.remaining(0.0) == 2


def test_identify_keeps_the_intents_state_reports() -> None:
    w = World()
    w.identify(w.connect(), intents=513)
    assert w.core.sessions.live()[0].intents == 513


# ---- the frame records a report's timeline and the oracle read -------------------------------

def test_every_refusal_is_traced_at_the_time_it_happened() -> None:
    w = World(guilds=3, max_guilds_per_shard=2, session_start_total=1, identify_window=5.0,
              allowed_privileged_intents=0)
    w.clock.now = 7.0
    sends: list[tuple[int, Any]] = [
        (2, None), (2, {"token": "bad", "properties": {}}), (2, {"token": TOKEN, "intents": -1,
                                                                 "properties": {}}),
        (2, {"token": TOKEN, "intents": 2, "properties": {}}),
        (2, {"token": TOKEN, "intents": 1, "properties": {}, "shard": [3, 2]}),
        (2, {"token": TOKEN, "intents": 1, "properties": {}}),  # 4011: 3 guilds on one shard
        (6, None), (6, {"token": "bad", "session_id": "x", "seq": 1}),
        (6, {"token": TOKEN, "session_id": "x", "seq": 1}), (1, "x"),
    ]
    for op, d in sends:
        send(w.connect("resume"), w.clock, op, d)
    ok = w.connect()
    w.identify(ok, shard=[0, 2])
    w.identify(ok, shard=[0, 2])  # 4005
    w.identify(w.connect(), shard=[0, 2])  # within the IDENTIFY window: op 9
    w.clock.now = 7.0
    w.connect(query={"v": "7"})
    w.connect(query={"v": "10", "encoding": "xml"})
    w.connect(query={"v": "10", "compress": "gzip"})
    w.controls.apply("delay_hello", "next", never=True)
    w.connect()
    conn = w.connect()
    conn.connection_lost(7.0, "eof")
    assert {r["ts"] for r in w.trace.records} == {7.0}
    closes = [r["code"] for r in w.trace.records if r["kind"] == "conn_close"]
    assert closes == [4001, 4004, 4013, 4014, 4010, 4011, 4001, 4004, 4001, 4005, 4012, 4002,
                      None]


def test_frame_records_carry_what_the_timeline_shows() -> None:
    w = World(guilds=1, accept_any_token=False)
    conn = w.connect("resume", query={"v": "10", "encoding": "json", "compress": "zlib-stream"},
                     drain=False)
    conn.receive(json.dumps({"op": 1, "d": "x7"}), 0.0)
    conn = w.connect("resume")
    send(conn, w.clock, 1, 5)
    w.identify(conn, shard=[0, 1])
    sid = w.core.sessions.live()[0].session_id
    conn.connection_lost(0.0, "reset")
    resume = w.connect()
    w.resume(resume, sid, 1)
    upgrade = [r for r in w.trace.records if r["kind"] == "ws_upgrade"][0]
    assert (upgrade["conn"], upgrade["path"], upgrade["listener"], upgrade["query"]) == (
        1, "/", "resume", {"v": "10", "encoding": "json", "compress": "zlib-stream"})
    ins = [{k: v for k, v in r.items() if k not in ("kind", "ts", "seq_no")}
           for r in w.trace.records if r["kind"] == "frame_in"]
    assert [(r["conn"], r["op"], r.get("d"), r["size"]) for r in ins[:2]] == [
        (1, 1, "'x7'", 20), (2, 1, 5, 17)]
    assert {k: ins[2][k] for k in ("conn", "op", "token_ok", "shard", "intents")} == {
        "conn": 2, "op": 2, "token_ok": True, "shard": [0, 1], "intents": 513}
    assert {k: ins[3][k] for k in ("conn", "op", "token_ok", "session_id", "seq")} == {
        "conn": 3, "op": 6, "token_ok": True, "session_id": sid, "seq": 1}
    outs = [r for r in w.trace.records if r["kind"] == "frame_out"]
    ready = next(r for r in outs if r["t"] == "READY")
    assert (ready["conn"], ready["op"], ready["s"], ready["session_id"],
            ready["resume_gateway_url"], ready["compressed"]) == (
        2, 0, 1, sid, "wss://resume.test", False)
    assert ready["size"] > 100
    hello = outs[0]
    assert (hello["conn"], hello["op"], hello["s"], hello["t"], hello["compressed"],
            hello["heartbeat_interval"]) == (1, 10, None, None, True, 1000)
    resumed = next(r for r in outs if r["t"] == "RESUMED")
    assert (resumed["conn"], resumed["s"], resumed["replayed"]) == (3, 3, 1)
    notes = [r["text"] for r in w.trace.records if r["kind"] == "note"]
    assert "IDENTIFY on the resume URL instead of the discovery URL" in notes
    [budget] = [r for r in w.trace.records if r["kind"] == "identify_budget"]
    assert (budget["conn"], budget["remaining"], budget["total"], budget["bucket"]) == (
        2, 999, 1000, 0)
    lost = [r for r in w.trace.records if r["kind"] == "conn_close"][-1]
    assert (lost["conn"], lost["by"], lost["code"], lost["reason"], lost["how"]) == (
        2, "network", None, "", "reset")
    assert session_log(w)[2][1:3] == ("detached", "connection lost (reset)")


def test_refusals_are_noted_with_the_reason() -> None:
    w = World(identify_window=5.0, max_concurrency=2, session_start_total=1)
    w.connect(query={"v": "10", "encoding": "xml"})
    w.connect(query={"v": "10", "compress": "gzip"})
    w.identify(w.connect(), shard=[0, 4])
    w.identify(w.connect(), shard=[2, 4])
    w.identify(w.connect(), shard=[1, 4])
    notes = [r["text"] for r in w.trace.records if r["kind"] == "note"]
    assert notes == ["unsupported encoding 'xml'",
                     "unsupported compress='gzip': sending uncompressed",
                     "IDENTIFY over max_concurrency (bucket 0): op 9",
                     "session_start_limit used up; Discord would reset the token"]


def test_a_text_frame_is_measured_in_utf8_bytes_not_characters() -> None:
    # 2,000 two-byte characters: 2,000 chars but 4,000 bytes, 4,100 with the rest, over 4,096.
    w = World(guilds=1)
    bad = w.connect()
    bad.receive('{"op":1,"d":"' + "\u00e9" * 2000 + '"}' + " " * 85, w.clock.now)
    [rec] = [r for r in w.trace.records if r["kind"] == "frame_bad"]
    assert (rec["reason"], rec["size"]) == ("payload of 4100 bytes exceeds 4096", 4100)
