"""The reference client's decision core, driven with plain function calls (no sockets, no sleeps).

``CoreSim`` plays the driver: it performs the core's actions on fake bookkeeping and fires timers in
deadline order as the test moves a number it calls time.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest

from harness.client.core import (
    AbortConnection,
    Action,
    CancelTimer,
    ClientConfig,
    CloseConnection,
    Connect,
    Deliver,
    FetchGatewayBot,
    GatewayClientCore,
    NotReady,
    PayloadTooLarge,
    SendFrame,
    StartTimer,
    StateChanged,
    Stop,
    classify_close,
    gateway_url_with_params,
)

DISCOVERY = "ws://gw.test:8000/"
RESUME = "ws://resume.test:8001/"
BOT_INFO = {
    "url": DISCOVERY,
    "shards": 1,
    "session_start_limit": {
        "total": 1000,
        "remaining": 999,
        "reset_after": 14_400_000,
        "max_concurrency": 1,
    },
}


def config(**overrides: Any) -> ClientConfig:
    # Fixed handshake timeouts unless a test asks for the adaptive ones.
    base = ClientConfig(token="tok", compress=None, handshake_intervals=None)
    return replace(base, **overrides)


class CoreSim:
    def __init__(self, cfg: ClientConfig | None = None, seed: int = 7):
        self.core = GatewayClientCore(cfg or config(), random.Random(seed))
        self.now = 0.0
        self.timers: dict[int, StartTimer] = {}
        self.sent: list[tuple[int, dict[str, Any]]] = []  # (gen, payload)
        self.closes: list[CloseConnection] = []
        self.aborts: list[AbortConnection] = []
        self.connects: list[Connect] = []
        self.delivered: list[tuple[int, str, str | None]] = []
        self.states: list[StateChanged] = []
        self.stops: list[Stop] = []
        self.fetches = 0
        self.bot_info: dict[str, Any] | None = json.loads(json.dumps(BOT_INFO))

    # -- performing actions
    def feed(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, StartTimer):
                self.timers[a.timer_id] = a
            elif isinstance(a, CancelTimer):
                self.timers.pop(a.timer_id, None)
            elif isinstance(a, SendFrame):
                self.sent.append((a.gen, json.loads(a.text)))
            elif isinstance(a, CloseConnection):
                self.closes.append(a)
            elif isinstance(a, AbortConnection):
                self.aborts.append(a)
            elif isinstance(a, Connect):
                self.connects.append(a)
            elif isinstance(a, Deliver):
                d = a.dispatch
                self.delivered.append((d.s, d.t, d.session_id))
            elif isinstance(a, StateChanged):
                self.states.append(a)
            elif isinstance(a, Stop):
                self.stops.append(a)
            elif isinstance(a, FetchGatewayBot):
                self.fetches += 1
                # Answer REST at once, like a fast server (keeps tests short).
                if self.bot_info is None:
                    self.feed(self.core.gateway_bot_failed("connection refused", self.now))
                else:
                    self.feed(self.core.gateway_bot_fetched(self.bot_info, self.now))

    # -- time
    def advance(self, dt: float) -> None:
        """Move time forward by dt, firing due timers in order (the driver's job)."""
        end = self.now + dt
        while True:
            due = [t for t in self.timers.values() if t.deadline <= end]
            if not due:
                break
            timer = min(due, key=lambda t: (t.deadline, t.timer_id))
            del self.timers[timer.timer_id]
            self.now = max(self.now, timer.deadline)
            self.feed(self.core.timer_expired(timer.timer_id, self.now))
        self.now = end

    def wait_for_connect(self, count: int, limit: float = 120.0) -> Connect:
        """Advance in small steps until the count-th Connect appears."""
        end = self.now + limit
        while len(self.connects) < count:
            assert self.now < end, f"no Connect #{count} within {limit} s ({self.core.state})"
            self.advance(0.05)
        return self.connects[count - 1]

    def timer(self, name: str) -> StartTimer | None:
        found = [t for t in self.timers.values() if t.name == name]
        return found[0] if found else None

    # -- the server side of a connection
    @property
    def gen(self) -> int:
        gen = self.core.live_gen
        assert gen is not None, f"no live connection (state {self.core.state})"
        return gen

    def start(self) -> None:
        self.feed(self.core.start(self.now))

    def open(self, interval_ms: int = 1000) -> int:
        """The latest Connect succeeds through every stage and the server sends HELLO."""
        gen = self.connects[-1].gen
        self.feed(self.core.connected(gen, self.now))
        if self.connects[-1].url.startswith("wss"):
            self.feed(self.core.tls_done(gen, self.now))
        self.feed(self.core.upgraded(gen, self.now))
        self.server(gen, {"op": 10, "d": {"heartbeat_interval": interval_ms}})
        return gen

    def server(self, gen: int, frame: dict[str, Any]) -> None:
        self.feed(self.core.frame_received(gen, frame, self.now))

    def ready(self, gen: int, session_id: str = "sess1", s: int = 1) -> None:
        self.server(
            gen,
            {
                "op": 0,
                "s": s,
                "t": "READY",
                "d": {"session_id": session_id, "resume_gateway_url": RESUME},
            },
        )

    def dispatch(self, gen: int, s: int, t: str = "MESSAGE_CREATE") -> None:
        self.server(gen, {"op": 0, "s": s, "t": t, "d": {}})

    def close(self, gen: int, code: int | None, how: str = "close_frame") -> None:
        self.feed(self.core.connection_closed(gen, code, "", how, self.now))  # type: ignore[arg-type]

    def ack_all(self, gen: int, duration: float, step: float = 0.05) -> None:
        """Let time pass while the server ACKs every beat promptly."""
        end = self.now + duration
        while self.now < end:
            before = len(self.sent)
            self.advance(min(step, end - self.now))
            for g, payload in self.sent[before:]:
                if g == gen and payload["op"] == 1 and self.core.live_gen == gen:
                    self.server(gen, {"op": 11})

    def sent_ops(self, gen: int) -> list[int]:
        return [p["op"] for g, p in self.sent if g == gen]

    def last_sent(self, op: int) -> tuple[int, dict[str, Any]]:
        return [(g, p) for g, p in self.sent if p["op"] == op][-1]

    def session_up(self, interval_ms: int = 1000, seqs: int = 3) -> int:
        """Start, identify, READY (s=1) and dispatches 2..seqs; returns the gen."""
        self.start()
        gen = self.open(interval_ms)
        self.ready(gen)
        for s in range(2, seqs + 1):
            self.dispatch(gen, s)
        return gen


# --------------------------------------------------------------------------------- connecting


def test_start_fetches_budget_then_connects_to_discovery_url_with_gateway_params():
    sim = CoreSim()
    sim.start()
    assert sim.fetches == 1
    assert [c.purpose for c in sim.connects] == ["identify"]
    assert sim.connects[0].url == "ws://gw.test:8000/?v=10&encoding=json"


def test_states_walk_through_every_stage_to_ready():
    sim = CoreSim(config(gateway_url="wss://gw.test/"))
    sim.start()
    gen = sim.open()
    sim.ready(gen)
    names = [s.state for s in sim.states]
    assert names == [
        "connecting", "connecting", "tls", "upgrading", "hello", "identifying", "ready"
    ]
    assert all(s.reason for s in sim.states)


def test_identify_payload_carries_token_intents_properties_and_shard():
    sim = CoreSim(config(shard=(0, 2), intents=1))
    sim.start()
    gen = sim.open()
    _, identify = sim.last_sent(2)
    assert identify["d"]["token"] == "tok"
    assert identify["d"]["intents"] == 1
    assert identify["d"]["shard"] == [0, 2]
    assert set(identify["d"]["properties"]) == {"os", "browser", "device"}
    assert sim.sent_ops(gen) == [2]


def test_gateway_url_params_are_set_and_other_params_kept():
    url = gateway_url_with_params("wss://r.test:9?x=1", compress="zlib-stream")
    assert url == "wss://r.test:9/?x=1&v=10&encoding=json&compress=zlib-stream"


# --------------------------------------------------------------------------------- heartbeats


def test_no_heartbeat_before_hello_even_when_the_server_asks():
    sim = CoreSim()
    sim.start()
    gen = sim.connects[-1].gen
    sim.feed(sim.core.connected(gen, sim.now))
    sim.feed(sim.core.upgraded(gen, sim.now))
    sim.server(gen, {"op": 1, "d": None})
    sim.advance(sim.core.config.hello_timeout - 0.01)
    assert sim.sent_ops(gen) == []


def test_first_heartbeat_at_interval_times_jitter_from_the_injected_rng_then_every_interval():
    seed = 1234
    sim = CoreSim(seed=seed)
    sim.start()
    hello_at = sim.now
    gen = sim.open(interval_ms=2000)
    jitter = random.Random(seed).random()  # the first draw: nothing random happened before HELLO
    timer = sim.timer("heartbeat")
    assert timer is not None and timer.gen == gen
    assert timer.deadline == pytest.approx(hello_at + 2.0 * jitter)
    times: list[float] = []
    for _ in range(4):
        before = len(sim.sent)
        while len(sim.sent) == before:
            sim.advance(0.01)
        times.append(sim.now)
        sim.server(gen, {"op": 11})
    assert times[0] == pytest.approx(hello_at + 2.0 * jitter, abs=0.011)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([2.0, 2.0, 2.0], abs=0.011)


def test_heartbeat_d_is_null_before_any_dispatch_then_the_last_seq():
    sim = CoreSim()
    sim.start()
    gen = sim.open(1000)
    sim.ack_all(gen, 1.0)
    assert sim.last_sent(1)[1]["d"] is None
    sim.ready(gen)
    sim.dispatch(gen, 2)
    sim.dispatch(gen, 3)
    sim.ack_all(gen, 1.0)
    assert sim.last_sent(1)[1]["d"] == 3


def test_server_heartbeat_request_is_answered_at_once_with_stored_seq_not_its_d():
    sim = CoreSim()
    gen = sim.session_up(seqs=5)
    before = len(sim.sent)
    sim.server(gen, {"op": 1, "d": 999})
    assert sim.sent[before:] == [(gen, {"op": 1, "d": 5})]


def test_heartbeat_rtt_is_measured():
    sim = CoreSim()
    gen = sim.session_up()
    sim.advance(1.0)
    sim.advance(0.125)
    sim.server(gen, {"op": 11})
    assert sim.core.counters.heartbeat_acks == 1
    assert 0 < sim.core.counters.heartbeat_rtts[-1] <= 1.125


# --------------------------------------------------------------------------------- zombie


def test_no_ack_between_beats_closes_4000_and_resumes_on_resume_url():
    sim = CoreSim()
    gen = sim.session_up(interval_ms=1000, seqs=4)
    sim.advance(2.5)  # first beat un-ACKed, second beat time arrives
    assert [c.code for c in sim.closes] == [4000]
    assert "zombie" in [s.state for s in sim.states]
    assert sim.core.counters.zombies == 1
    assert sim.connects[-1].purpose == "resume"
    assert sim.connects[-1].url.startswith(RESUME)
    new = sim.open()
    assert new != gen
    _, resume = sim.last_sent(6)
    assert resume["d"] == {"token": "tok", "session_id": "sess1", "seq": 4}
    assert sim.sent_ops(new) == [6]  # RESUME, not IDENTIFY


def test_an_unacked_answer_to_a_server_op1_is_a_zombie_sign_too():
    """The answer to a server op 1 is a beat: no ACK for it by the next beat means zombie."""
    sim = CoreSim()
    gen = sim.session_up(interval_ms=1000, seqs=4)
    sim.ack_all(gen, 1.0)  # periodic beats ACKed so far
    sim.server(gen, {"op": 1, "d": None})  # answered at once; its ACK never comes
    sim.advance(1.0)
    assert [c.code for c in sim.closes] == [4000]
    assert sim.core.counters.zombies == 1


def test_an_acked_answer_to_a_server_op1_keeps_the_connection():
    sim = CoreSim()
    gen = sim.session_up(interval_ms=1000, seqs=4)
    sim.ack_all(gen, 1.0)
    sim.server(gen, {"op": 1, "d": None})
    sim.server(gen, {"op": 11})
    sim.ack_all(gen, 1.0)
    assert sim.closes == []


def test_stale_heartbeat_timer_of_a_dead_connection_never_fires_on_the_new_one():
    sim = CoreSim()
    old = sim.session_up(interval_ms=1000)
    stale = sim.timer("heartbeat")
    assert stale is not None
    sim.close(old, None, how="reset")
    sim.advance(5)
    new = sim.open(interval_ms=60_000)
    # The old gen's timer fires late: the core must ignore it (no beat on the new socket).
    sim.feed(sim.core.timer_expired(stale.timer_id, sim.now))
    assert all(p["op"] != 1 for g, p in sim.sent if g == new)
    assert sim.core.live_gen == new


def test_late_events_from_an_old_connection_are_ignored():
    sim = CoreSim()
    old = sim.session_up()
    sim.server(old, {"op": 7, "d": None})
    new = sim.open()
    sim.close(old, 4004)  # the old socket's close arrives late: must not stop the client
    sim.server(old, {"op": 9, "d": False})
    assert sim.stops == []
    assert sim.core.live_gen == new


# --------------------------------------------------------------------------------- resume + seq


def test_resume_replays_are_delivered_once_in_order_across_reconnects():
    sim = CoreSim()
    gen = sim.session_up(seqs=3)
    sim.close(gen, None, how="reset")
    sim.advance(5)
    gen2 = sim.open()
    for s in (2, 3, 4, 5):  # the server replays from an older seq: 2 and 3 are duplicates
        sim.dispatch(gen2, s)
    sim.dispatch(gen2, 6, t="RESUMED")
    sim.dispatch(gen2, 5)
    sim.dispatch(gen2, 7)
    seqs = [s for s, _, _ in sim.delivered]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert sim.core.counters.duplicates_dropped == 3
    assert sim.core.counters.resumes_ok == 1
    assert sim.core.state == "ready"
    assert {sid for _, _, sid in sim.delivered} == {"sess1"}


def test_new_session_restarts_seq_and_the_next_resume_uses_the_new_session_id():
    sim = CoreSim(config(invalid_session_wait=(1.0, 1.0)))
    gen = sim.session_up(seqs=5)
    sim.server(gen, {"op": 9, "d": False})
    sim.advance(6)
    gen2 = sim.open()
    sim.ready(gen2, session_id="sess2")
    sim.dispatch(gen2, 2)
    sim.close(gen2, 4000)
    sim.advance(5)
    sim.open()
    assert sim.last_sent(6)[1]["d"]["session_id"] == "sess2"
    assert sim.last_sent(6)[1]["d"]["seq"] == 2
    assert [(s, sid) for s, _, sid in sim.delivered][-2:] == [(1, "sess2"), (2, "sess2")]


# --------------------------------------------------------------------------------- decision table


def test_op7_closes_non_1000_and_resumes_at_once():
    sim = CoreSim()
    gen = sim.session_up()
    sim.server(gen, {"op": 7, "d": None})
    assert [c.code for c in sim.closes] == [4000]
    assert sim.connects[-1].purpose == "resume" and sim.connects[-1].url.startswith(RESUME)
    assert sim.timer("backoff") is None  # no delay


def test_op7_before_hello_reconnects_too():
    sim = CoreSim()
    sim.start()
    gen = sim.connects[-1].gen
    sim.feed(sim.core.connected(gen, sim.now))
    sim.feed(sim.core.upgraded(gen, sim.now))
    sim.server(gen, {"op": 7, "d": None})
    assert [c.code for c in sim.closes] == [4000]
    assert len(sim.connects) == 2


@pytest.mark.parametrize("resumable_frame", [False, None])
def test_op9_not_resumable_forgets_session_waits_1_to_5_s_and_identifies_on_discovery(
    resumable_frame: bool | None,
):
    sim = CoreSim()
    gen = sim.session_up()
    sim.server(gen, {"op": 9, "d": resumable_frame})
    assert [c.code for c in sim.closes] == [4000]
    assert sim.core.session is None
    backoff = sim.timer("backoff")
    assert backoff is not None
    assert 1.0 <= backoff.deadline - sim.now <= 5.0
    sim.advance(backoff.deadline - sim.now - 0.001)
    assert len(sim.connects) == 1
    sim.advance(5.0)  # the wait, then the identify slot (5 s after the last IDENTIFY)
    assert len(sim.connects) == 2
    assert sim.connects[-1].purpose == "identify"
    assert sim.connects[-1].url.startswith(DISCOVERY)
    sim.open()
    assert sim.last_sent(2)[0] == sim.gen


def test_op9_resumable_waits_1_to_5_s_then_resumes_on_resume_url():
    sim = CoreSim()
    gen = sim.session_up()
    sim.server(gen, {"op": 9, "d": True})
    backoff = sim.timer("backoff")
    assert backoff is not None and 1.0 <= backoff.deadline - sim.now <= 5.0
    sim.advance(5.0)
    assert len(sim.connects) == 2
    assert sim.connects[-1].purpose == "resume"
    assert sim.connects[-1].url.startswith(RESUME)


def test_op9_wait_is_random_between_1_and_5_seconds():
    waits = []
    for seed in range(40):
        sim = CoreSim(seed=seed)
        gen = sim.session_up()
        sim.server(gen, {"op": 9, "d": False})
        backoff = sim.timer("backoff")
        assert backoff is not None
        waits.append(backoff.deadline - sim.now)
    assert all(1.0 <= w <= 5.0 for w in waits)
    assert max(waits) - min(waits) > 2.0  # spread, not a constant


@pytest.mark.parametrize("code", [4003, 4005, 4007, 4009])
def test_new_session_close_codes_identify_on_discovery_after_1_to_5_s(code: int):
    sim = CoreSim()
    gen = sim.session_up()
    sim.close(gen, code)
    assert sim.core.session is None
    backoff = sim.timer("backoff")
    assert backoff is not None and 1.0 <= backoff.deadline - sim.now <= 5.0
    sim.advance(5.0)
    assert len(sim.connects) == 2
    assert sim.connects[-1].purpose == "identify"
    assert sim.connects[-1].url.startswith(DISCOVERY)


@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013, 4014])
def test_fatal_close_codes_stop_and_never_reconnect(code: int):
    sim = CoreSim()
    gen = sim.session_up()
    sim.close(gen, code)
    assert len(sim.stops) == 1 and sim.stops[0].fatal
    assert str(code) in sim.stops[0].reason
    assert sim.core.state == "stopped"
    sim.advance(3600)
    assert len(sim.connects) == 1
    assert sim.timers == {}


@pytest.mark.parametrize("code", [None, 1000, 1001, 4000, 4001, 4002, 4006, 4008, 4999])
def test_other_closes_and_drops_resume_on_resume_url_after_a_backoff(code: int | None):
    sim = CoreSim(config(backoff_base=1.0))
    gen = sim.session_up(seqs=3)
    sim.close(gen, code, how="close_frame" if code else "reset")
    backoff = sim.timer("backoff")
    assert backoff is not None and 0 <= backoff.deadline - sim.now <= 1.0
    sim.advance(1.0)
    assert sim.connects[-1].purpose == "resume"
    assert sim.connects[-1].url.startswith(RESUME)
    sim.open()
    assert sim.last_sent(6)[1]["d"]["seq"] == 3


def test_classify_close_matches_the_table():
    assert classify_close(None) == "resume"
    assert {classify_close(c) for c in (4003, 4005, 4007, 4009)} == {"new_session"}
    assert {classify_close(c) for c in (4004, 4010, 4011, 4012, 4013, 4014)} == {"fatal"}


def test_shutdown_closes_with_1000_and_stops():
    sim = CoreSim()
    sim.session_up()
    sim.feed(sim.core.shutdown(sim.now))
    assert [c.code for c in sim.closes] == [1000]
    assert sim.stops and not sim.stops[0].fatal
    assert sim.timers == {}


# --------------------------------------------------------------------------------- backoff


def test_backoff_is_exponential_full_jitter_capped_and_resets_after_a_stable_session():
    cfg = config(backoff_base=1.0, backoff_cap=8.0, stable_after=30.0, max_failed_resumes=100)
    sim = CoreSim(cfg, seed=3)
    gen = sim.session_up()
    sim.close(gen, None, how="reset")
    delays = []
    for _ in range(8):
        backoff = sim.timer("backoff")
        assert backoff is not None
        delays.append(backoff.deadline - sim.now)
        sim.advance(backoff.deadline - sim.now)
        sim.feed(sim.core.connect_failed(sim.gen, "tcp", "connection refused", sim.now))
    ceilings = [min(8.0, 2.0**k) for k in range(8)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[4:]) > 1.0  # grew beyond the base
    # Reconnect and stay up past stable_after: the next loss starts from the base again.
    sim.advance(8.0)
    gen = sim.open()
    sim.dispatch(gen, 9, t="RESUMED")
    sim.ack_all(gen, 31.0)
    sim.close(gen, None, how="reset")
    backoff = sim.timer("backoff")
    assert backoff is not None and backoff.deadline - sim.now <= 1.0


def test_repeated_op7_right_after_resume_backs_off_instead_of_storming():
    sim = CoreSim(config(backoff_base=0.5, backoff_cap=10.0))
    gen = sim.session_up()
    waits = []
    for i in range(6):
        sim.server(gen, {"op": 7, "d": None})
        backoff = sim.timer("backoff")
        waits.append(0.0 if backoff is None else backoff.deadline - sim.now)
        sim.advance(waits[-1])
        gen = sim.open()
        sim.dispatch(gen, 4 + i, t="RESUMED")
    assert waits[0] == 0.0  # a stable session reconnects at once
    assert sum(waits) > 0.5  # later ones wait


def _fail_attempts(sim: CoreSim, until: Any, stage: str = "tls", limit: int = 40) -> Connect:
    """Fail every connection attempt (at ``stage``) until one satisfies ``until(connect)``;
    return that one, left pending."""
    for _ in range(limit):
        connect = sim.wait_for_connect(len(sim.connects) + 1, limit=200.0)
        if until(connect):
            return connect
        sim.feed(sim.core.connect_failed(connect.gen, stage, "reset by peer", sim.now))  # type: ignore[arg-type]
    raise AssertionError(f"no such attempt in {limit}: {sim.connects[-3:]}")


def _to_discovery(connect: Connect) -> bool:
    return connect.url.startswith(DISCOVERY)


def test_failed_resumes_are_capped_then_resume_on_the_discovery_url():
    sim = CoreSim(config(max_failed_resumes=2))
    gen = sim.session_up(interval_ms=1000, seqs=5)
    sim.ack_all(gen, 10.0)
    lost_at = sim.now
    sim.close(gen, None, how="reset")
    fallback = _fail_attempts(sim, _to_discovery)
    assert [c.url.startswith(RESUME) for c in sim.connects[1:-1]] == [True, True]
    assert any("resumes failed in a row" in st.reason for st in sim.states if st.ts > lost_at)
    # Discord (and the fake) accept RESUME on the discovery URL: same session, nothing lost.
    assert fallback.purpose == "resume"
    gen = sim.open()
    assert sim.last_sent(6) == (gen, {"op": 6, "d": {"token": "tok", "session_id": "sess1",
                                                      "seq": 5}})
    assert sim.sent_ops(gen).count(2) == 0
    sim.dispatch(gen, 6)
    sim.dispatch(gen, 7, t="RESUMED")
    assert sim.core.state == "ready" and sim.core.counters.identifies == 1
    assert [s for s, _, _ in sim.delivered] == list(range(1, 8))
    # The next loss tries resume_gateway_url first again.
    sim.close(gen, None, how="reset")
    assert sim.wait_for_connect(len(sim.connects) + 1).url.startswith(RESUME)


def test_whole_gateway_down_keeps_the_session_within_the_resumable_window():
    """Issue 10: both URLs reset every handshake for 100 s. The session outlives that at the
    server (its window is 120 s), so the client must never IDENTIFY: a new session would lose
    every event the old one holds."""
    sim = CoreSim(config(max_failed_resumes=2))
    gen = sim.session_up(interval_ms=500, seqs=5)
    sim.ack_all(gen, 10.0)
    lost_at = sim.now
    sim.close(gen, None, how="reset")
    back = _fail_attempts(sim, lambda c: sim.now - lost_at > 100.0)
    tried = sim.connects[1:]
    assert {c.purpose for c in tried} == {"resume"}
    assert any(_to_discovery(c) for c in tried) and any(c.url.startswith(RESUME) for c in tried)
    assert back.purpose == "resume"
    gen = sim.open()
    sim.dispatch(gen, 6, t="RESUMED")
    assert sim.core.state == "ready" and sim.core.counters.identifies == 1
    assert sim.last_sent(6)[1]["d"]["seq"] == 5


def test_a_session_lost_longer_than_the_resumable_window_is_replaced_by_identify():
    sim = CoreSim(config(max_failed_resumes=2, resumable_window=30.0, backoff_cap=8.0))
    gen = sim.session_up(seqs=5)
    sim.ack_all(gen, 10.0)
    lost_at = sim.now
    sim.close(gen, None, how="reset")
    first_identify = _fail_attempts(sim, lambda c: c.purpose == "identify")
    assert all(c.purpose == "resume" for c in sim.connects[1:-1])
    assert sim.core.session is None
    assert 30.0 < sim.now - lost_at <= 30.0 + 8.0  # the first attempt after the window
    assert _to_discovery(first_identify)
    assert any("past resumable_window 30 s" in st.reason for st in sim.states)
    sim.open()
    assert sim.last_sent(2)[0] == sim.gen


def test_the_resumable_window_defaults_to_the_fake_gateways_session_ttl():
    from fake_gateway.config import GatewayConfig

    assert ClientConfig(token="t").resumable_window == GatewayConfig().session_ttl


def test_op9_not_resumable_on_the_discovery_resume_starts_a_new_session():
    sim = CoreSim(config(max_failed_resumes=1))
    gen = sim.session_up(seqs=5)
    sim.ack_all(gen, 10.0)
    sim.close(gen, None, how="reset")
    _fail_attempts(sim, _to_discovery)
    gen = sim.open()
    assert sim.sent_ops(gen) == [6]
    sim.server(gen, {"op": 9, "d": False})  # the server said the session is gone
    assert sim.core.session is None
    identify = sim.wait_for_connect(len(sim.connects) + 1)
    assert identify.purpose == "identify" and _to_discovery(identify)


def test_a_session_without_resume_gateway_url_resumes_on_the_discovery_url():
    sim = CoreSim()
    sim.start()
    gen = sim.open()
    sim.server(gen, {"op": 0, "s": 1, "t": "READY", "d": {"session_id": "s1"}})
    sim.close(gen, None, how="reset")
    connect = sim.wait_for_connect(2)
    assert connect.purpose == "resume" and _to_discovery(connect)


def test_a_reset_during_the_resume_tls_handshake_is_retried_and_the_session_survives():
    """The seed's failure: drop, the reconnect is reset in TLS, the next one resumes."""
    sim = CoreSim(config(gateway_url="wss://gw.test/", backoff_base=0.5))
    gen = sim.session_up(seqs=4)
    sim.close(gen, None, how="reset")
    sim.advance(0.5)
    attempt = sim.connects[-1]
    assert attempt.purpose == "resume"
    sim.feed(sim.core.connected(attempt.gen, sim.now))
    sim.feed(sim.core.connect_failed(attempt.gen, "tls", "ECONNRESET", sim.now))
    assert sim.core.state == "backing_off"
    sim.advance(1.0)
    gen3 = sim.open()
    for s in (5, 6):
        sim.dispatch(gen3, s)
    sim.dispatch(gen3, 7, t="RESUMED")
    sim.ack_all(gen3, 3.0)
    assert sim.core.state == "ready"
    assert [s for s, _, _ in sim.delivered] == list(range(1, 8))
    assert sim.sent_ops(gen3).count(1) >= 2  # heartbeating on the new connection


# --------------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize("stage", ["tcp", "tls", "upgrade"])
def test_silent_peer_at_a_handshake_stage_is_aborted_and_retried(stage: str):
    cfg = config(gateway_url="wss://gw.test/", tcp_timeout=3, tls_timeout=4, upgrade_timeout=5)
    sim = CoreSim(cfg)
    sim.start()
    gen = sim.connects[-1].gen
    timeout = 3.0
    if stage in ("tls", "upgrade"):
        sim.feed(sim.core.connected(gen, sim.now))
        timeout = 4.0
    if stage == "upgrade":
        sim.feed(sim.core.tls_done(gen, sim.now))
        timeout = 5.0
    sim.advance(timeout - 0.01)
    assert sim.aborts == []
    sim.advance(0.02)
    assert [a.gen for a in sim.aborts] == [gen]
    assert sim.core.counters.stage_failures == {f"{stage}_timeout": 1}
    sim.advance(1.0)  # the first backoff is at most backoff_base
    assert len(sim.connects) == 2


def test_handshake_timeouts_shrink_to_two_heartbeat_intervals_once_hello_was_seen():
    sim = CoreSim(config(handshake_intervals=2.0, tcp_timeout=10.0))
    sim.start()
    first = sim.timer("stage")
    assert first is not None and first.deadline - sim.now == 10.0  # no interval known yet
    gen = sim.open(interval_ms=1500)
    sim.ready(gen)
    sim.close(gen, None, how="reset")
    sim.wait_for_connect(2)
    stage = sim.timer("stage")
    assert stage is not None and stage.deadline - sim.now == pytest.approx(3.0, abs=0.06)


def test_falling_back_to_discovery_after_failed_resumes_keeps_the_backoff():
    sim = CoreSim(config(max_failed_resumes=2, backoff_base=1.0, backoff_cap=60.0))
    sim.session_up()
    sim.advance(10)
    sim.close(sim.gen, None, how="reset")
    _fail_attempts(sim, _to_discovery, stage="tcp")
    states = [s for s in sim.states if s.state == "backing_off"]
    waits = [float(s.reason.rsplit(" in ", 1)[1].split()[0]) for s in states]
    # The wait before the discovery attempt continues the exponential schedule (if that host
    # is down too, attempts must keep spreading out); it does not restart at backoff_base.
    assert waits == sorted(waits) and waits[-1] > 2.0, waits


def test_no_hello_within_the_deadline_closes_and_retries():
    sim = CoreSim(config(hello_timeout=2.0))
    sim.start()
    gen = sim.connects[-1].gen
    sim.feed(sim.core.connected(gen, sim.now))
    sim.feed(sim.core.upgraded(gen, sim.now))
    sim.advance(2.01)
    assert [(c.gen, c.code) for c in sim.closes] == [(gen, 4000)]
    sim.advance(10)
    assert len(sim.connects) == 2


def test_ready_withheld_while_acked_waits_the_long_deadline_without_reidentifying():
    sim = CoreSim(config(ready_timeout=30.0))
    sim.start()
    gen = sim.open(interval_ms=1000)
    sim.ack_all(gen, 29.0)
    assert sim.core.counters.identifies == 1 and sim.closes == []
    assert sim.core.state == "identifying"
    sim.ack_all(gen, 1.5)
    assert [c.code for c in sim.closes] == [4000]


def test_resumed_withheld_counts_as_a_failed_resume():
    sim = CoreSim(config(ready_timeout=5.0))
    gen = sim.session_up()
    sim.server(gen, {"op": 7, "d": None})
    gen2 = sim.open()
    sim.ack_all(gen2, 5.1)
    assert sim.core.counters.failed_resumes == 1
    assert sim.closes[-1].gen == gen2 and sim.closes[-1].code == 4000


# --------------------------------------------------------------------------------- identify budget


def test_exhausted_session_start_budget_stops_with_a_clear_error_before_identifying():
    sim = CoreSim()
    assert sim.bot_info is not None
    sim.bot_info["session_start_limit"]["remaining"] = 0
    sim.start()
    assert sim.connects == []
    assert sim.stops and sim.stops[0].fatal
    assert "session_start_limit.remaining=0" in sim.stops[0].reason


def test_budget_is_read_before_every_identify_and_a_drop_to_zero_stops():
    sim = CoreSim(config(invalid_session_wait=(1.0, 1.0)))
    gen = sim.session_up()
    assert sim.fetches == 1
    assert sim.bot_info is not None
    sim.bot_info["session_start_limit"]["remaining"] = 0
    sim.server(gen, {"op": 9, "d": False})
    sim.advance(10)
    assert sim.fetches == 2
    assert len(sim.connects) == 1
    assert sim.stops and sim.stops[0].fatal


def test_identifies_are_at_least_5_s_apart_for_one_concurrency_bucket():
    sim = CoreSim(config(invalid_session_wait=(1.0, 1.0)))
    sim.start()
    identify_times = []
    for _ in range(4):
        gen = sim.open()
        identify_times.append(sim.now)
        sim.server(gen, {"op": 9, "d": False})  # e.g. the concurrency limit
        while sim.core.live_gen is None:
            sim.advance(0.1)
    gaps = [b - a for a, b in zip(identify_times, identify_times[1:], strict=False)]
    assert min(gaps) >= 5.0


def test_identify_circuit_breaker_stops_an_identify_storm():
    sim = CoreSim(config(identify_breaker=(3, 600.0), invalid_session_wait=(1.0, 1.0)))
    sim.start()
    for n in range(2, 5):
        gen = sim.open()
        sim.close(gen, 4009)
        if n < 4:
            sim.wait_for_connect(n)
    sim.advance(60)
    assert sim.core.counters.identifies == 3
    assert len(sim.connects) == 3
    assert sim.stops and sim.stops[0].fatal and "circuit breaker" in sim.stops[0].reason


def test_rest_failure_with_no_cached_budget_backs_off_and_retries():
    sim = CoreSim(config(backoff_base=1.0))
    sim.bot_info = None
    sim.start()
    assert sim.connects == [] and sim.core.state == "backing_off"
    sim.bot_info = json.loads(json.dumps(BOT_INFO))
    sim.advance(2.0)
    assert len(sim.connects) == 1


def test_discovery_url_comes_from_gateway_bot_when_not_configured():
    sim = CoreSim(config(gateway_url=None))
    assert sim.bot_info is not None
    sim.bot_info["url"] = "wss://from-rest.test"
    sim.start()
    assert sim.connects[0].url == "wss://from-rest.test/?v=10&encoding=json"


# --------------------------------------------------------------------------------- sending


def test_payloads_over_4096_bytes_are_refused_before_sending():
    sim = CoreSim()
    sim.session_up()
    with pytest.raises(PayloadTooLarge):
        sim.core.app_send({"op": 3, "d": {"x": "a" * 5000}}, sim.now)


def test_app_send_before_ready_is_refused():
    sim = CoreSim()
    sim.start()
    with pytest.raises(NotReady):
        sim.core.app_send({"op": 3, "d": {}}, sim.now)


def test_send_rate_limit_holds_app_frames_but_never_heartbeats():
    sim = CoreSim()
    gen = sim.session_up(interval_ms=1000)
    for _ in range(200):
        sim.feed(sim.core.app_send({"op": 3, "d": {"status": "online"}}, sim.now))
    stamped: list[tuple[float, int]] = [(sim.now, p["op"]) for _, p in sim.sent]
    n = len(sim.sent)
    for _ in range(800):  # 200 s in 0.25-s steps, ACKing every beat
        sim.ack_all(gen, 0.25, step=0.25)
        stamped += [(sim.now, p["op"]) for _, p in sim.sent[n:]]
        n = len(sim.sent)
    times = [ts for ts, _ in stamped]
    worst = max(sum(1 for x in times if start <= x < start + 60.0) for start in times)
    assert worst <= 120
    assert sum(1 for _, op in stamped if op == 1) >= 195  # heartbeats never held back
    assert sum(1 for _, op in stamped if op == 3) == 200  # the queue drains eventually


def test_an_undecodable_frame_closes_4000_and_resumes():
    sim = CoreSim()
    gen = sim.session_up()
    sim.feed(sim.core.frame_undecodable(gen, "zlib-stream: invalid stored block", sim.now))
    assert [(c.gen, c.code) for c in sim.closes] == [(gen, 4000)]
    assert sim.wait_for_connect(2).purpose == "resume"
