"""The reference client against the real fake gateway, in memory under a virtual clock.

Both ends are the real thing (the fake gateway's websockets server, the client's websockets
client, TLS where a test asks for it); only the network (memnet) and the clock
(``trio.testing.MockClock`` with autojump) are simulated, so the protocol's real default waits
(1-5 s after op 9, 5-s identify windows, backoff) cost nothing. One test per row of the decision
table (gateway-protocol.md section 13) and per behaviour of issue 4. Every check reads the
gateway's trace: what crossed the wire, not what the client says about itself.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from harness.client import (
    FatalGatewayError,
    GatewayClient,
    PayloadTooLarge,
    open_gateway_client,
)
from harness.client.core import GatewayClientCore
from harness.client.testing import ClientWorld, open_sim_world, wait_until
from harness.oracle import judge

INTERVAL = 1.0  # the gateway's heartbeat_interval (virtual seconds)


def _ready_count(client: Any) -> int:
    return sum(1 for t in client.transitions if t.state == "ready")


async def _live(world: ClientWorld, seed: int = 1, **overrides: Any) -> Any:
    client = await world.start_client(seed, **overrides)
    await wait_until(lambda: client.state == "ready")
    return client


async def _settled_again(client: Any, readies: int) -> None:
    await wait_until(lambda: _ready_count(client) >= readies and client.state == "ready")


def _assert_exactly_once_in_order(world: ClientWorld, client: Any) -> None:
    by_session: dict[str, list[int]] = {}
    for rec in client.delivered:
        by_session.setdefault(rec["session_id"], []).append(rec["s"])
    for session_id, seqs in by_session.items():
        assert seqs == sorted(set(seqs)), f"{session_id}: duplicates or disorder in {seqs}"
        sent = world.dispatches_out(session_id)
        assert seqs == sorted(set(sent))[: len(seqs)], f"{session_id}: a sent dispatch was lost"


# ----------------------------------------------------------------------------- heartbeats


async def test_first_beat_within_an_interval_of_hello_then_every_interval_with_last_seq(
    autojump_clock: MockClock,
):
    async with open_sim_world(dispatch_rate=5.0) as world:
        await _live(world)
        await trio.sleep(10 * INTERVAL)
        conn = world.live_conn()
        hello = world.records("frame_out", conn=conn, op=10)[0]["ts"]
        beats = world.frames_in(1, conn)
        assert 0 <= beats[0]["ts"] - hello < INTERVAL
        gaps = [b["ts"] - a["ts"] for a, b in zip(beats, beats[1:], strict=False)]
        assert gaps and all(g == pytest.approx(INTERVAL, abs=0.01) for g in gaps)
        # d is the last seq the gateway had sent on this connection before the beat.
        for beat in beats:
            sent = [r["s"] for r in world.records("frame_out", conn=conn, op=0)
                    if r["ts"] <= beat["ts"]]
            assert beat["d"] == (max(sent) if sent else None)


async def test_first_beat_jitter_comes_from_the_injected_rng(autojump_clock: MockClock):
    offsets = []
    for seed in (1, 2):
        async with open_sim_world() as world:
            await _live(world, seed=seed)
            await trio.sleep(2 * INTERVAL)
            conn = world.live_conn()
            hello = world.records("frame_out", conn=conn, op=10)[0]["ts"]
            offsets.append(world.frames_in(1, conn)[0]["ts"] - hello)
    import random

    assert offsets[0] == pytest.approx(INTERVAL * random.Random(1).random(), abs=0.01)
    assert offsets[1] == pytest.approx(INTERVAL * random.Random(2).random(), abs=0.01)


async def test_server_heartbeat_request_is_answered_at_once_with_the_stored_seq(
    autojump_clock: MockClock,
):
    async with open_sim_world(heartbeat_interval_ms=30_000, dispatch_rate=2.0) as world:
        await _live(world, seed=3)  # first beat at 30 s x 0.238 = 7.1 s after HELLO
        conn = world.live_conn()
        await trio.sleep(0.5)
        asked_at = trio.current_time()
        world.gateway.controls.apply("heartbeat_request", conn, d="garbage")
        await wait_until(lambda: len(world.frames_in(1, conn)) >= 1)
        beat = world.frames_in(1, conn)[0]
        assert beat["ts"] - asked_at < 0.01  # virtual time: immediate, not at the next beat
        last_s = max(r["s"] for r in world.records("frame_out", conn=conn, op=0))
        assert beat["d"] == last_s


async def test_no_heartbeat_before_hello_on_a_reconnect_with_a_delayed_hello(
    autojump_clock: MockClock,
):
    async with open_sim_world() as world:
        await _live(world)
        await trio.sleep(3 * INTERVAL)
        world.gateway.controls.apply("delay_hello", "next", ms=4000)
        world.gateway.controls.apply("reconnect", "all")
        await wait_until(lambda: len(world.conns()) == 2)
        second = world.conns()[-1]
        await wait_until(lambda: len(world.frames_in(1, second)) >= 2)
        hello = world.records("frame_out", conn=second, op=10)[0]["ts"]
        assert all(f["ts"] >= hello for f in world.records("frame_in", conn=second))


# ----------------------------------------------------------------------------- decision table


async def test_op7_closes_with_a_non_1000_code_and_resumes_on_the_resume_url(
    autojump_clock: MockClock,
):
    async with open_sim_world(dispatch_rate=5.0) as world:
        client = await _live(world)
        await trio.sleep(2.0)
        first = world.live_conn()
        world.gateway.controls.apply("reconnect", first)
        await _settled_again(client, 2)
        (close,) = world.records("conn_close", conn=first)
        assert close["by"] == "client" and close["code"] not in (1000, 1001, None)
        second = world.conns()[-1]
        assert world.records("conn_open", conn=second)[0]["listener"] == "resume"
        (resume,) = world.frames_in(6, second)
        assert resume["session_id"] == client.core.session.session_id
        assert world.frames_in(2, second) == []
        await trio.sleep(3.0)
        _assert_exactly_once_in_order(world, client)


async def test_zombie_no_ack_closes_4000_and_resumes(autojump_clock: MockClock):
    async with open_sim_world(dispatch_rate=5.0) as world:
        client = await _live(world)
        await trio.sleep(2.0)
        first = world.live_conn()
        world.gateway.controls.apply("withhold_acks", first)
        await _settled_again(client, 2)
        (close,) = world.records("conn_close", conn=first)
        assert (close["by"], close["code"]) == ("client", 4000)
        assert client.counters()["zombies"] == 1
        assert "zombie" in [t.state for t in client.transitions]
        second = world.conns()[-1]
        (resume,) = world.frames_in(6, second)
        sent_before = [r["s"] for r in world.records("frame_out", conn=first, op=0)]
        assert resume["seq"] == max(sent_before)
        await trio.sleep(3.0)
        _assert_exactly_once_in_order(world, client)


@pytest.mark.parametrize("code", [None, 1000, 4000, 4001, 4002, 4008])
async def test_server_closes_that_keep_the_session_lead_to_resume(
    code: int | None, autojump_clock: MockClock,
):
    async with open_sim_world(dispatch_rate=5.0) as world:
        client = await _live(world)
        await trio.sleep(2.0)
        world.gateway.controls.apply("close", world.live_conn(), code=code, resumable=True)
        await _settled_again(client, 2)
        second = world.conns()[-1]
        assert len(world.frames_in(6, second)) == 1 and world.frames_in(2, second) == []
        assert client.counters()["resumes_ok"] == 1
        await trio.sleep(2.0)
        _assert_exactly_once_in_order(world, client)


async def test_tcp_reset_mid_session_resumes_with_no_event_lost(autojump_clock: MockClock):
    async with open_sim_world(dispatch_rate=20.0) as world:
        client = await _live(world)
        await trio.sleep(2.0)
        world.gateway.controls.apply("reset", world.live_conn())
        await _settled_again(client, 2)
        await trio.sleep(2.0)
        assert client.counters()["identifies"] == 1
        _assert_exactly_once_in_order(world, client)
        assert len(client.delivered) > 60


@pytest.mark.parametrize("code", [4003, 4005, 4007, 4009])
async def test_closes_that_end_the_session_identify_on_discovery_after_1_to_5_s(
    code: int, autojump_clock: MockClock,
):
    async with open_sim_world() as world:
        client = await _live(world)
        await trio.sleep(6.0)  # past the identify window of the first IDENTIFY
        first = world.live_conn()
        world.gateway.controls.apply("close", first, code=code)
        closed_at = world.records("conn_close", conn=first)[0]["ts"]
        await _settled_again(client, 2)
        second = world.conns()[-1]
        assert world.records("conn_open", conn=second)[0]["listener"] == "discovery"
        (identify,) = world.frames_in(2, second)
        assert 1.0 <= identify["ts"] - closed_at <= 5.0 + 0.1
        assert world.frames_in(6) == []
        assert client.core.session.session_id != world.records("session")[0]["session_id"]


@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013, 4014])
async def test_fatal_close_codes_stop_the_client_for_good(code: int, autojump_clock: MockClock):
    async with open_sim_world() as world:
        client = await _live(world)
        world.gateway.controls.apply("close", world.live_conn(), code=code)
        await wait_until(lambda: client.state == "stopped")
        assert client.stop_info is not None and client.stop_info.fatal
        assert str(code) in client.stop_info.reason
        await trio.sleep(120.0)
        assert len(world.conns()) == 1


async def test_op9_not_resumable_waits_1_to_5_s_then_identifies_on_discovery(
    autojump_clock: MockClock,
):
    async with open_sim_world() as world:
        client = await _live(world)
        await trio.sleep(6.0)
        first = world.live_conn()
        old_session = client.core.session.session_id
        world.gateway.controls.apply("invalid_session", first, resumable=False)
        sent_at = world.records("frame_out", conn=first, op=9)[0]["ts"]
        await _settled_again(client, 2)
        (close,) = world.records("conn_close", conn=first)
        assert close["code"] not in (1000, 1001)
        second = world.conns()[-1]
        assert world.records("conn_open", conn=second)[0]["listener"] == "discovery"
        (identify,) = world.frames_in(2, second)
        assert 1.0 <= identify["ts"] - sent_at <= 5.1
        assert client.core.session.session_id != old_session
        # The next resume uses the new session (F9).
        world.gateway.controls.apply("reset", second)
        await _settled_again(client, 3)
        assert world.frames_in(6)[-1]["session_id"] == client.core.session.session_id


async def test_op9_resumable_waits_1_to_5_s_then_resumes(autojump_clock: MockClock):
    async with open_sim_world() as world:
        client = await _live(world)
        first = world.live_conn()
        world.gateway.controls.apply("invalid_session", first, resumable=True)
        sent_at = world.records("frame_out", conn=first, op=9)[0]["ts"]
        await _settled_again(client, 2)
        second = world.conns()[-1]
        (resume,) = world.frames_in(6, second)
        assert 1.0 <= resume["ts"] - sent_at <= 5.1
        assert world.frames_in(2, second) == []


async def test_failed_resumes_are_capped_then_resume_on_the_discovery_url(
    autojump_clock: MockClock,
):
    async with open_sim_world(dispatch_rate=5.0) as world:
        client = await _live(world)
        await trio.sleep(6.0)
        session_id = client.core.session.session_id
        world.gateway.controls.apply("reject_upgrade", "all", listener="resume", status=503)
        world.gateway.controls.apply("reset", world.live_conn())
        await _settled_again(client, 2)
        assert len(world.conns("resume")) >= client.config.max_failed_resumes
        final = world.conns()[-1]
        assert world.records("conn_open", conn=final)[0]["listener"] == "discovery"
        # The fake, like Discord, accepts RESUME there: the same session, nothing lost.
        (resume,) = world.frames_in(6, final)
        assert resume["session_id"] == session_id
        assert len(world.frames_in(2)) == 1
        await trio.sleep(2.0)
        _assert_exactly_once_in_order(world, client)


class _AbandonsAfterFailedResumes(GatewayClientCore):
    """The rule issue 10 removed: after a few failed resumes, give the session up and IDENTIFY."""

    def _count_failed_resume(self, now: float) -> None:
        super()._count_failed_resume(now)
        if self._failed_resumes >= 3:
            self._forget_session()


async def _both_urls_reset_in_tls(
    world: ClientWorld, outage: float, core_factory: Any = None
) -> Any:
    """Issue 10's set-up: steady state, then for ``outage`` seconds the live socket is gone and
    every reconnect (either URL) is reset right after its ClientHello; then the network heals."""
    down = False

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        stream = await world.open_stream(host, port)
        return _ResetAfterFirstSend(stream) if down else stream

    client = GatewayClient(world.client_config(), rng=random.Random(1), open_stream=open_stream,
                           fetch_gateway_bot=world.fetch_gateway_bot, core_factory=core_factory)
    world.clients.append(client)
    await world.nursery.start(client.run)
    await wait_until(lambda: client.state == "ready")
    await trio.sleep(4.0)
    down = True
    world.gateway.controls.apply("reset", world.live_conn())
    await trio.sleep(outage)
    down = False
    await wait_until(lambda: client.state == "ready")
    await trio.sleep(3.0)
    return client


@pytest.mark.parametrize("outage", [2.0, 4.0, 8.0])
async def test_both_urls_failing_in_tls_keeps_the_session_and_loses_nothing(
    outage: float, autojump_clock: MockClock,
):
    async with open_sim_world(tls=True, heartbeat_interval_ms=500, dispatch_rate=10.0) as world:
        client = await _both_urls_reset_in_tls(world, outage=outage)
        assert client.counters()["stage_failures"]["tls"] >= 2
        assert len(world.frames_in(2)) == 1  # never a second session
        assert {r["session_id"] for r in client.delivered} == {world.frames_in(6)[0]["session_id"]}
        _assert_exactly_once_in_order(world, client)
        assert [r["s"] for r in client.delivered] == list(range(1, len(client.delivered) + 1))
        verdicts = {v.invariant: v for v in judge(world.trace.records, client.delivered)}
        assert verdicts["RS1"].status == "pass", verdicts["RS1"].evidence


async def test_the_oracle_fails_a_client_that_abandons_a_resumable_session(
    autojump_clock: MockClock,
):
    async with open_sim_world(tls=True, heartbeat_interval_ms=500, dispatch_rate=10.0) as world:
        client = await _both_urls_reset_in_tls(
            world, outage=4.0, core_factory=_AbandonsAfterFailedResumes
        )
        old, new = (r["session_id"] for r in world.records("frame_out", t="READY"))
        last_old = max(r["s"] for r in client.delivered if r["session_id"] == old)
        rs1 = {v.invariant: v for v in judge(world.trace.records, client.delivered)}["RS1"]
        assert rs1.status == "fail", rs1.evidence
        assert f"session {old}" in rs1.evidence
        assert f"after the client's seq {last_old} (its delivery log)" in rs1.evidence or \
            f"seqs {last_old + 1}-" in rs1.evidence


async def test_reconnects_back_off_with_growing_jittered_capped_delays(autojump_clock: MockClock):
    async with open_sim_world() as world:
        client = await _live(world, max_failed_resumes=100)
        world.gateway.controls.apply("reject_upgrade", "all", listener="resume", status=503)
        world.gateway.controls.apply("reset", world.live_conn())
        await trio.sleep(400.0)
        opens = [r["ts"] for r in world.records("conn_open", listener="resume")]
        gaps = [b - a for a, b in zip(opens, opens[1:], strict=False)]
        assert len(gaps) >= 8
        assert max(gaps) <= client.config.backoff_cap + 0.5
        assert sum(gaps[-4:]) > sum(gaps[:4])  # later attempts wait longer
        assert len(set(round(g, 3) for g in gaps)) == len(gaps)  # jittered, not constant


async def test_backoff_keeps_growing_when_both_urls_reject(autojump_clock: MockClock):
    """Fuzz seed 13077: the fallback from resume URL to discovery URL must not restart the
    backoff, or a gateway rejecting every upgrade (429) gets an attempt every second."""
    async with open_sim_world() as world:
        client = await _live(world)
        await trio.sleep(6.0)
        lost_at = trio.current_time()
        world.gateway.controls.apply("reject_upgrade", "all", status=429)
        world.gateway.controls.apply("reset", world.live_conn())
        await trio.sleep(60.0)
        opens = [r for r in world.records("conn_open") if r["ts"] > lost_at]
        assert {r["listener"] for r in opens} == {"resume", "discovery"}  # it did fall back
        gaps = [b["ts"] - a["ts"] for a, b in zip(opens, opens[1:], strict=False)]
        assert all(b >= a for a, b in zip(gaps, gaps[1:], strict=False)), gaps  # never shrink
        assert gaps[-1] > 8 * gaps[1], gaps  # exponential, not flat
        assert len(opens) <= 10  # ~1 a second would be 60
        world.gateway.controls.apply("reject_upgrade", "all", on=False)
        await _settled_again(client, 2)


# ----------------------------------------------------------------------------- stage deadlines


async def test_silent_tls_peer_times_out_and_the_next_attempt_connects(autojump_clock: MockClock):
    """F22: the first connect is accepted and then nothing (not even a TLS answer)."""
    async with open_sim_world(tls=True) as world:
        assert world.network is not None
        silent = world.network.listen("127.0.0.1:0")
        calls = []

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            calls.append((host, port))
            if len(calls) == 1:
                return await world.network.connect(silent.address)  # type: ignore[union-attr]
            return await world.open_stream(host, port)

        client = world.make_client(open_stream=open_stream, tls_timeout=3.0)
        await world.nursery.start(client.run)
        await wait_until(lambda: client.state == "ready")
        assert client.counters()["stage_failures"] == {"tls_timeout": 1}
        states = [t.state for t in client.transitions]
        assert states.index("backing_off") > states.index("tls")


async def test_refused_connects_back_off_until_the_gateway_listens(autojump_clock: MockClock):
    async with open_sim_world() as world:
        refused: list[float] = []

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            if len(refused) < 4:
                refused.append(trio.current_time())
                raise ConnectionRefusedError(111, "Connection refused")
            return await world.open_stream(host, port)

        client = world.make_client(open_stream=open_stream)
        await world.nursery.start(client.run)
        await wait_until(lambda: client.state == "ready")
        assert client.counters()["stage_failures"] == {"tcp": 4}
        gaps = [b - a for a, b in zip(refused, refused[1:], strict=False)]
        assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # growing waits
        assert len(world.frames_in(2)) == 1


async def test_no_hello_times_out_and_the_client_reconnects(autojump_clock: MockClock):
    async with open_sim_world() as world:
        world.gateway.controls.apply("delay_hello", "next", ms=60_000)
        client = world.make_client(hello_timeout=5.0)
        await world.nursery.start(client.run)
        await wait_until(lambda: client.state == "ready")
        assert client.counters()["stage_failures"] == {"hello_timeout": 1}
        first, second = world.conns()
        (close,) = world.records("conn_close", conn=first)
        assert close["by"] == "client" and close["code"] not in (1000, 1001)
        assert close["ts"] == pytest.approx(5.0, abs=0.1)


async def test_silent_peer_during_the_upgrade_times_out_and_the_client_reconnects(
    autojump_clock: MockClock,
):
    async with open_sim_world() as world:
        world.gateway.controls.apply("go_silent", "next")  # accepts TCP, never answers
        client = world.make_client(upgrade_timeout=4.0)
        await world.nursery.start(client.run)
        await wait_until(lambda: client.state == "ready")
        assert client.counters()["stage_failures"] == {"upgrade_timeout": 1}
        assert len(world.conns()) == 2


async def test_ready_withheld_while_acked_does_not_cause_an_identify_storm(
    autojump_clock: MockClock,
):
    async with open_sim_world() as world:
        world.gateway.controls.apply("withhold_ready", "next")
        client = await world.start_client()
        await trio.sleep(90.0)
        assert client.state == "identifying"
        assert len(world.frames_in(2)) == 1
        assert len(world.frames_in(1)) > 80  # heartbeating all along
        world.gateway.controls.apply("withhold_ready", world.live_conn(), on=False)
        await wait_until(lambda: client.state == "ready")
        assert len(world.conns()) == 1


# ----------------------------------------------------------------------------- the seed


async def test_seed_reset_after_client_hello_on_resume_then_live_with_no_event_lost(
    autojump_clock: MockClock,
):
    """The seed: the socket drops; the reconnect's TLS handshake is reset right after the
    ClientHello; the client must be back in a live, heartbeating session, nothing lost."""
    async with open_sim_world(tls=True, dispatch_rate=10.0) as world:
        calls = []

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            calls.append(port)
            stream = await world.open_stream(host, port)
            if len(calls) == 2:
                return _ResetAfterFirstSend(stream)
            return stream

        client = world.make_client(open_stream=open_stream)
        await world.nursery.start(client.run)
        await wait_until(lambda: client.state == "ready")
        await trio.sleep(3.0)
        world.gateway.controls.apply("reset", world.live_conn())
        await _settled_again(client, 2)
        resumed_conn = world.live_conn()
        await trio.sleep(5 * INTERVAL)
        assert client.counters()["stage_failures"] == {"tls": 1}
        assert client.counters()["resumes_ok"] == 1
        assert len(world.frames_in(1, resumed_conn)) >= 4
        acks = world.records("frame_out", conn=resumed_conn, op=11)
        assert len(acks) >= 4
        _assert_exactly_once_in_order(world, client)


class _ResetAfterFirstSend(trio.abc.Stream):
    """Forwards the client's first bytes (the ClientHello), then resets the connection."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.sent:
            raise trio.BrokenResourceError("connection reset by peer")
        await self.inner.send_all(data)
        self.sent = True
        self.inner.abort()  # type: ignore[attr-defined]

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ----------------------------------------------------------------------------- budget and limits


async def test_exhausted_session_start_budget_stops_before_identifying(autojump_clock: MockClock):
    async with open_sim_world() as world:
        world.gateway.controls.apply("session_start_remaining", "all", remaining=0)
        client = await world.start_client()
        await wait_until(lambda: client.state == "stopped")
        assert client.stop_info is not None and client.stop_info.fatal
        assert "session_start_limit.remaining=0" in client.stop_info.reason
        assert world.frames_in(2) == [] and world.conns() == []


async def test_identifies_respect_the_5_s_window_under_repeated_op9(autojump_clock: MockClock):
    async with open_sim_world() as world:
        client = await _live(world, invalid_session_wait=(0.1, 0.2))
        for _ in range(3):
            world.gateway.controls.apply("invalid_session", world.live_conn(), resumable=False)
            await _settled_again(client, _ready_count(client) + 1)
        times = [f["ts"] for f in world.frames_in(2)]
        assert len(times) == 4
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 5.0


async def test_app_sends_stay_under_120_per_60_s_with_heartbeats_flowing(autojump_clock: MockClock):
    async with open_sim_world(heartbeat_interval_ms=1000) as world:
        client = await _live(world)
        presence = {"op": 3, "d": {"since": None, "activities": [], "status": "online",
                                   "afk": False}}
        for _ in range(150):
            await client.send(presence)
        await trio.sleep(130.0)
        conn = world.live_conn()
        assert len(world.conns()) == 1  # never closed with 4008
        frames = [r["ts"] for r in world.records("frame_in", conn=conn)]
        worst = max(sum(1 for t in frames if s <= t < s + 60.0) for s in frames)
        assert worst <= 120
        assert len(world.frames_in(3, conn)) == 150
        beats = [r["ts"] for r in world.frames_in(1, conn)]
        assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) <= INTERVAL + 0.01


async def test_payload_over_4096_bytes_is_refused_and_never_sent(autojump_clock: MockClock):
    async with open_sim_world() as world:
        client = await _live(world)
        with pytest.raises(PayloadTooLarge):
            await client.send({"op": 3, "d": {"status": "online", "x": "a" * 5000}})
        assert world.frames_in(3) == [] and len(world.conns()) == 1


# ----------------------------------------------------------------------------- library use


async def test_library_use_async_iterator_of_dispatches_and_state_stream(autojump_clock: MockClock):
    async with open_sim_world(dispatch_rate=5.0) as world:
        got: list[tuple[int, str]] = []
        async with open_gateway_client(world.client_config(), **_sim_kwargs(world)) as client:
            async for dispatch in client.dispatches():
                got.append((dispatch.s, dispatch.t))
                if len(got) == 10:
                    break
        assert got[0] == (1, "READY")
        assert [s for s, _ in got] == list(range(1, 11))
        states = [t.state for t in client.transitions]
        assert states[:2] == ["connecting", "connecting"]
        assert states[-1] == "stopped"
        assert "ready" in states
        closes = world.records("conn_close", by="client")
        assert [c["code"] for c in closes] == [1000]  # a deliberate shutdown ends the session


async def test_dispatch_iterator_raises_after_a_fatal_stop(autojump_clock: MockClock):
    async with open_sim_world() as world:
        async with open_gateway_client(world.client_config(), **_sim_kwargs(world)) as client:
            with pytest.raises(FatalGatewayError, match="4004"):
                async for dispatch in client.dispatches():
                    if dispatch.t == "READY":
                        world.gateway.controls.apply("close", world.live_conn(), code=4004)


def _sim_kwargs(world: ClientWorld) -> dict[str, Any]:
    import random

    return {"rng": random.Random(1), "open_stream": world.open_stream,
            "fetch_gateway_bot": world.fetch_gateway_bot}
