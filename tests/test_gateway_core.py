"""The sans-I/O gateway core driven by plain function calls: no sockets, no sleeps, no trio."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from fake_gateway.codec import Encoder, ZlibStreamDecoder, ZstdStreamDecoder, decode_client
from fake_gateway.config import GatewayConfig
from fake_gateway.controls import GatewayControls
from fake_gateway.protocol import Close, ConnectionCore, GatewayCore, Send
from fake_gateway.sessions import IdentifyLimiter, Session, SessionStartLimit
from gateway_common.trace import Trace

TOKEN = GatewayConfig().token


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_core(**overrides: Any) -> tuple[GatewayCore, Clock]:
    settings: dict[str, Any] = dict(heartbeat_interval_ms=1000, guilds=2)
    settings.update(overrides)
    clock = Clock()
    core = GatewayCore(GatewayConfig(**settings), Trace(clock=clock), random.Random(3))
    core.set_urls("wss://discovery.test", "wss://resume.test")
    return core, clock


def connect(core: GatewayCore, clock: Clock, listener: str = "discovery",
            query: dict[str, str] | None = None) -> ConnectionCore:
    conn_id = core.new_conn_id()
    return core.open_connection(conn_id, listener, "/", query or {"v": "10", "encoding": "json"},
                                clock.now)


def sent(conn: ConnectionCore) -> list[Any]:
    """Drain the connection's actions; JSON messages decoded."""
    out: list[Any] = []
    for action in conn.take_actions():
        if isinstance(action, Send):
            out.extend(json.loads(m) for m in action.messages)
        else:
            out.append(action)
    return out


def send(conn: ConnectionCore, clock: Clock, op: int, d: Any) -> list[Any]:
    conn.receive(json.dumps({"op": op, "d": d}), clock.now)
    return sent(conn)


def identify(conn: ConnectionCore, clock: Clock, **extra: Any) -> list[Any]:
    return send(conn, clock, 2, {"token": TOKEN, "intents": 513, "properties": {}, **extra})


def test_hello_is_queued_on_open_with_the_configured_interval() -> None:
    core, clock = make_core()
    conn = connect(core, clock)
    assert sent(conn) == [{"op": 10, "d": {"heartbeat_interval": 1000, "_trace": [
        '["gateway-harness-fake",{"micros":0.0}]']}, "s": None, "t": None}]


def test_identify_yields_ready_and_guild_creates_with_consecutive_seqs() -> None:
    core, clock = make_core(guilds=3)
    conn = connect(core, clock)
    sent(conn)
    frames = identify(conn, clock)
    assert [(f["t"], f["s"]) for f in frames] == [("READY", 1), ("GUILD_CREATE", 2),
                                                  ("GUILD_CREATE", 3), ("GUILD_CREATE", 4)]
    assert frames[0]["d"]["resume_gateway_url"] == "wss://resume.test"


def test_heartbeat_deadline_is_a_timer_not_a_sleep() -> None:
    core, clock = make_core()
    conn = connect(core, clock)
    sent(conn)
    # interval (1 s) x (1 + heartbeat_grace 0.5) after HELLO, then after each heartbeat
    assert conn.next_deadline() == pytest.approx(1.5)
    clock.now = 1.0
    assert send(conn, clock, 1, None) == [{"op": 11, "d": None, "s": None, "t": None}]
    assert conn.next_deadline() == pytest.approx(2.5)
    conn.on_time(2.45)
    assert sent(conn) == []
    conn.on_time(2.5)
    assert sent(conn) == [Close(1000, "Heartbeat deadline missed.")]
    assert conn.closed and conn.next_deadline() is None


def test_replay_after_resume_is_exact() -> None:
    core, clock = make_core(guilds=1)
    first = connect(core, clock)
    sent(first)
    ready = identify(first, clock)[0]
    session = core.sessions.get(ready["d"]["session_id"])
    assert session is not None
    first.connection_lost(clock.now, "reset")
    assert session.conn_id is None and session.alive
    for _ in range(4):
        core.emit_synthetic(clock.now)  # missed while detached
    second = connect(core, clock, "resume")
    sent(second)
    frames = send(second, clock, 6, {"token": TOKEN, "session_id": session.session_id, "seq": 3})
    assert [f["s"] for f in frames] == [4, 5, 6, 7]
    assert frames[-1]["t"] == "RESUMED"
    assert [f["t"] for f in frames[:-1]] == ["TYPING_START"] * 3


def test_a_rejected_resume_on_the_discovery_url_ends_the_session() -> None:
    core, clock = make_core(resume_on_discovery="reject")
    first = connect(core, clock)
    sent(first)
    session_id = identify(first, clock)[0]["d"]["session_id"]
    first.connection_lost(clock.now, "reset")
    on_discovery = connect(core, clock, "discovery")
    sent(on_discovery)
    resume = {"token": TOKEN, "session_id": session_id, "seq": 1}
    assert send(on_discovery, clock, 6, resume)[0] == {"op": 9, "d": False, "s": None, "t": None}
    # op 9 d=false said the session is gone: a RESUME on the resume URL must not bring it back.
    on_resume = connect(core, clock, "resume")
    sent(on_resume)
    frames = send(on_resume, clock, 6, resume)
    assert [f.get("op") for f in frames if isinstance(f, dict)] == [9]
    assert all(f.get("t") != "RESUMED" for f in frames if isinstance(f, dict))
    assert core.sessions.sessions[session_id].state == "invalidated"


def test_session_expires_after_ttl_on_the_gateway_timer() -> None:
    core, clock = make_core(session_ttl=10.0)
    conn = connect(core, clock)
    sent(conn)
    session_id = identify(conn, clock)[0]["d"]["session_id"]
    clock.now = 5.0
    conn.client_closed(clock.now, 4000, "")
    assert core.next_deadline() == pytest.approx(15.0)
    core.on_time(14.9)
    assert core.sessions.sessions[session_id].alive
    core.on_time(15.0)
    assert core.sessions.sessions[session_id].state == "expired"


def test_client_close_codes_decide_resumability() -> None:
    for code, alive in [(1000, False), (1001, False), (4000, True), (None, True), (3000, True)]:
        core, clock = make_core()
        conn = connect(core, clock)
        sent(conn)
        session_id = identify(conn, clock)[0]["d"]["session_id"]
        conn.client_closed(clock.now, code, "")
        assert core.sessions.sessions[session_id].alive is alive, code


def test_rate_limit_window_slides() -> None:
    core, clock = make_core(rate_limit_frames=3, rate_limit_window=10.0, heartbeat_deadline=False)
    conn = connect(core, clock)
    sent(conn)
    for t in (0.0, 1.0, 2.0):
        clock.now = t
        assert send(conn, clock, 1, None)[0]["op"] == 11
    clock.now = 10.5  # the frame at 0.0 left the window
    assert send(conn, clock, 1, None)[0]["op"] == 11
    clock.now = 10.6
    assert send(conn, clock, 1, None) == [Close(4008, "Rate limited.")]


def test_identify_limiter_buckets_by_shard_modulo_concurrency() -> None:
    limiter = IdentifyLimiter(max_concurrency=2, window=5.0)
    assert limiter.try_acquire(0, 0.0) and limiter.try_acquire(1, 0.0)
    assert not limiter.try_acquire(2, 1.0)  # bucket 0 again
    assert limiter.try_acquire(2, 5.0)


def test_session_start_limit_window_resets() -> None:
    limit = SessionStartLimit(total=2, window=100.0)
    assert limit.consume(0.0) and limit.consume(1.0) and not limit.consume(2.0)
    assert limit.reset_after_ms(50.0) == 50_000
    assert limit.remaining(100.0) == 2


def test_replay_after_boundaries() -> None:
    session = Session("s", None, 0, [], replay_capacity=3)
    for n in range(5):
        session.next_dispatch("X", n)
    assert session.replay_after(5) == []
    assert [d.s for d in session.replay_after(2) or []] == [3, 4, 5]
    assert session.replay_after(1) is None  # s=2 already dropped
    assert session.replay_after(6) is None  # the future
    assert session.replay_after(-1) is None


def test_withheld_ready_holds_later_dispatches_in_order() -> None:
    core, clock = make_core(guilds=1)
    controls = GatewayControls(core, clock)
    controls.apply("withhold_ready", "next")
    conn = connect(core, clock)
    sent(conn)
    assert identify(conn, clock) == []
    core.emit_synthetic(clock.now)
    assert send(conn, clock, 1, 0)[0]["op"] == 11  # ACKs still flow
    controls.apply("withhold_ready", conn.conn_id, on=False)
    assert [f["s"] for f in sent(conn)] == [1, 2, 3]


def test_go_silent_sends_nothing_and_enforces_nothing() -> None:
    core, clock = make_core()
    controls = GatewayControls(core, clock)
    conn = connect(core, clock)
    sent(conn)
    controls.apply("go_silent", conn.conn_id)
    assert send(conn, clock, 1, None) == []
    assert conn.next_deadline() is None
    controls.apply("close", conn.conn_id, code=4000)  # a close still ends it
    assert sent(conn) == [Close(4000, "")]


def test_controls_targeting_next_apply_at_open() -> None:
    core, clock = make_core()
    controls = GatewayControls(core, clock)
    controls.apply("reconnect", "next")
    conn = connect(core, clock)
    assert [f["op"] for f in sent(conn)] == [7, 10]  # op 7 may come before HELLO
    other = connect(core, clock)
    assert [f["op"] for f in sent(other)] == [10]


def test_burst_on_detached_session_fills_the_replay_buffer() -> None:
    core, clock = make_core(guilds=1)
    controls = GatewayControls(core, clock)
    conn = connect(core, clock)
    sent(conn)
    session_id = identify(conn, clock)[0]["d"]["session_id"]
    conn.connection_lost(clock.now, "eof")
    controls.apply("burst", "all", count=5)
    assert core.sessions.sessions[session_id].seq == 2 + 5


@pytest.mark.parametrize("compress", ["zlib-stream", "zstd-stream"])
def test_stream_compression_round_trips_many_messages(compress: str) -> None:
    encoder = Encoder(compress, split=2)
    decoder: Any = ZlibStreamDecoder() if compress == "zlib-stream" else ZstdStreamDecoder()
    for n in range(50):
        payload = {"op": 0, "s": n, "t": "X", "d": {"n": n, "text": "é" * n}}
        messages, size = encoder.encode(payload)
        results = [decoder.feed(m) for m in messages]
        assert [r for r in results if r is not None] == [payload]
        assert size == len(json.dumps(payload, separators=(",", ":"),
                                      ensure_ascii=False).encode())


def test_zlib_messages_end_with_sync_flush_suffix() -> None:
    messages, _ = Encoder("zlib-stream", split=3).encode({"op": 11, "d": None})
    assert messages[-1][-4:] == b"\x00\x00\xff\xff"  # type: ignore[index]
    assert all(not m.endswith(b"\x00\x00\xff\xff") for m in messages[:-1])  # type: ignore


def test_decode_client_rejects_non_objects() -> None:
    assert decode_client('{"op":1}') == {"op": 1}
    for bad in ("[]", "1", "nope", b"\xff"):
        with pytest.raises(ValueError):
            decode_client(bad)
