"""Same toxic, same bytes: every toxic type, in both directions, through a proxy on our server
and on Shopify's toxiproxy-server 2.12.0, with the same traffic at the same time. What arrives
(bytes and their order, at the client and at the upstream), and how each side's connection ends
(FIN or RST) and when, must agree.

Upstream-direction cases use a sink upstream (it records, never answers), so what reached the
upstream is seen there; downstream-direction cases use an echo upstream and look at the client.

Timing: the two servers run each case side by side, so load on this shared machine hits both
alike. An event (a delayed chunk, a close) may not come before the toxic says, nor more than
``TOLERANCE`` after, and its time may differ between the servers by at most ``TOLERANCE``.
Toxic times are 300 ms, so an error of half the toxic's time fails; the servers measured
within 6 ms of each other here (the slicer's 20 sleeps: 20 ms), so the margin is 5-15x what
it guards. Jittered latency is held to its bounds on each server, not compared (it is random).
Bandwidth is held to 10% of the configured rate over a one-second transfer (measured: 1%).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from harness.faults.testing import (
    RealToxiproxyServer,
    ToxiproxyServerThread,
    UpstreamConnection,
    echo_server,
)

pytestmark = pytest.mark.timeout(120)

TOLERANCE = 0.1  # s: how late an event may be, and how far apart on the two servers (see above)
EARLY = 0.005  # s: timer granularity: nothing a toxic delays may come sooner than this before
END_WAIT = 3.0  # s: how long an observation waits for a connection to end


# -- the two sides -------------------------------------------------------------------------------


@dataclass
class Side:
    """One Toxiproxy server with its own two upstreams: an echo and a sink."""

    name: str
    url: str
    echo_port: int
    echoed: list[UpstreamConnection]
    sink_port: int
    sunk: list[UpstreamConnection]


@pytest.fixture(scope="module")
def sides(real_toxiproxy: RealToxiproxyServer) -> Iterator[list[Side]]:
    with ExitStack() as stack:
        ours = stack.enter_context(ToxiproxyServerThread(seed=11))
        built = []
        for name, url in (("ours", ours.url), ("real", real_toxiproxy.url)):
            echoed: list[UpstreamConnection] = []
            sunk: list[UpstreamConnection] = []
            echo_port = stack.enter_context(echo_server(echoed))
            sink_port = stack.enter_context(echo_server(sunk, echo=False))
            built.append(Side(name, url, echo_port, echoed, sink_port, sunk))
        yield built


# -- one observation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    writes: tuple[bytes, ...]
    gap: float = 0.0  # s between writes
    shut: bool = False  # SHUT_WR after the writes (after their echoes came back, if echoed)
    remove_after: float | None = None  # s after the first write: delete the toxic
    wait: float = END_WAIT  # s the client waits for the connection to end
    until_bytes: int | None = None  # or stops once this much arrived where the toxic acts
    live: bool = False  # add the toxic once the connection is open, not before


@dataclass
class Seen:
    """What one side saw; times in seconds from the first write."""

    sent_at: list[float] = field(default_factory=list)
    shut_at: float | None = None
    removed_at: float | None = None
    client: list[tuple[float, bytes]] = field(default_factory=list)
    client_end: str = "open"  # "fin" | "rst" | "open"
    client_end_at: float | None = None
    upstream: list[tuple[float, bytes]] = field(default_factory=list)
    upstream_end: str = "open"
    upstream_end_at: float | None = None

    @property
    def client_bytes(self) -> bytes:
        return b"".join(data for _, data in self.client)

    @property
    def upstream_bytes(self) -> bytes:
        return b"".join(data for _, data in self.upstream)


def observe(side: Side, toxic: dict[str, Any], traffic: Traffic, echo: bool) -> Seen:
    """Create a proxy with ``toxic``, run ``traffic`` through it, record both ends."""
    upstreams = side.echoed if echo else side.sunk
    port = side.echo_port if echo else side.sink_port
    seen = Seen()
    with httpx.Client(base_url=side.url, timeout=20) as api:
        body = {"name": "case", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{port}"}
        listen = api.post("/proxies", json=body).json()["listen"]
        if not traffic.live:
            assert api.post("/proxies/case/toxics", json=toxic).status_code == 200
        before = len(upstreams)
        host, listen_port = listen.rsplit(":", 1)
        client = socket.create_connection((host, int(listen_port)), timeout=10)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + 10
        while len(upstreams) == before and time.monotonic() < deadline:
            time.sleep(0.005)  # the proxy dials its upstream when it accepts the client
        upstream = upstreams[before]
        if traffic.live:
            assert api.post("/proxies/case/toxics", json=toxic).status_code == 200
        everything = sum(len(w) for w in traffic.writes)
        echoed = threading.Event()
        t0 = time.monotonic()

        def write() -> None:
            try:
                for data in traffic.writes:
                    seen.sent_at.append(time.monotonic() - t0)
                    client.sendall(data)
                    time.sleep(traffic.gap)
                if traffic.shut:
                    if echo:
                        echoed.wait(10)
                    seen.shut_at = time.monotonic() - t0
                    client.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the toxic ended the connection first

        def remove() -> None:
            assert traffic.remove_after is not None
            time.sleep(traffic.remove_after)
            seen.removed_at = time.monotonic() - t0
            api.delete("/proxies/case/toxics/case")

        helpers = [threading.Thread(target=write)]
        if traffic.remove_after is not None:
            helpers.append(threading.Thread(target=remove))
        for helper in helpers:
            helper.start()
        def arrived() -> int:
            chunks = seen.client if echo else upstream.arrivals
            return sum(len(data) for _, data in chunks)

        client.settimeout(0.02)
        while time.monotonic() < t0 + traffic.wait and arrived() < (traffic.until_bytes or 1e12):
            try:
                data = client.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                seen.client_end, seen.client_end_at = "rst", time.monotonic() - t0
                break
            if not data:
                seen.client_end, seen.client_end_at = "fin", time.monotonic() - t0
                break
            seen.client.append((time.monotonic() - t0, data))
            if len(seen.client_bytes) >= everything:
                echoed.set()
        echoed.set()
        for helper in helpers:
            helper.join()
        if seen.client_end != "open":  # the upstream side ends too: give it a moment
            deadline = time.monotonic() + END_WAIT
            while upstream.end == "open" and time.monotonic() < deadline:
                time.sleep(0.005)
        seen.upstream = [(at - t0, data) for at, data in upstream.arrivals]
        seen.upstream_end = upstream.end
        if upstream.ended_at is not None:
            seen.upstream_end_at = upstream.ended_at - t0
        client.close()
        api.delete("/proxies/case")
    return seen


def side_by_side(
    sides: list[Side], toxic: dict[str, Any], traffic: Traffic, echo: bool
) -> tuple[Seen, Seen]:
    """The same case on both servers at the same time: (ours, real)."""
    results: dict[str, Seen] = {}
    errors: list[BaseException] = []

    def run(side: Side) -> None:
        try:
            results[side.name] = observe(side, toxic, traffic, echo)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(side,)) for side in sides]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results["ours"], results["real"]


# -- comparisons ---------------------------------------------------------------------------------


def assert_same(ours: Seen, real: Seen, timing: bool = True) -> None:
    """Bytes and order at both ends, how each end closed, and when (within TOLERANCE)."""
    assert ours.client_bytes == real.client_bytes
    assert ours.upstream_bytes == real.upstream_bytes
    assert (ours.client_end, ours.upstream_end) == (real.client_end, real.upstream_end)
    if not timing:
        return
    for what in ("client_end_at", "upstream_end_at"):
        mine, theirs = getattr(ours, what), getattr(real, what)
        if mine is not None and theirs is not None:
            assert abs(mine - theirs) <= TOLERANCE, (what, mine, theirs)
    for mine, theirs in ((ours.client, real.client), (ours.upstream, real.upstream)):
        if mine and theirs:
            assert abs(mine[0][0] - theirs[0][0]) <= TOLERANCE, ("first arrival", mine, theirs)
            assert abs(mine[-1][0] - theirs[-1][0]) <= TOLERANCE, ("last arrival", mine, theirs)


def delays(seen: Seen, arrivals: list[tuple[float, bytes]], size: int) -> list[float]:
    """Per write (all ``size`` bytes long): when its last byte arrived less when it was sent."""
    out, total = [], 0
    for at, data in arrivals:
        total += len(data)
        while len(out) < total // size:
            out.append(at - seen.sent_at[len(out)])
    return out


DIRECTIONS = ["upstream", "downstream"]


def arrivals_of(seen: Seen, stream: str) -> list[tuple[float, bytes]]:
    """Where a toxic on ``stream`` shows: at the upstream (sink), or back at the client."""
    return seen.upstream if stream == "upstream" else seen.client


def run_case(
    sides: list[Side], stream: str, toxic: dict[str, Any], traffic: Traffic, timing: bool = True
) -> tuple[Seen, Seen]:
    body = {"name": "case", "stream": stream, **toxic}
    ours, real = side_by_side(sides, body, traffic, echo=stream == "downstream")
    assert_same(ours, real, timing)
    return ours, real


MESSAGE = bytes(range(256)) * 4  # 1 KiB; order-revealing


# -- the cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_noop_then_client_close(sides: list[Side], stream: str) -> None:
    ours, _ = run_case(sides, stream, {"type": "noop"}, Traffic((MESSAGE,) * 3, 0.02, shut=True))
    assert arrivals_of(ours, stream) and ours.client_end == ours.upstream_end == "fin"


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_latency(sides: list[Side], stream: str) -> None:
    toxic = {"type": "latency", "attributes": {"latency": 300}}
    traffic = Traffic((MESSAGE,) * 3, 0.05, until_bytes=3 * len(MESSAGE))
    for seen in run_case(sides, stream, toxic, traffic):
        got = delays(seen, arrivals_of(seen, stream), len(MESSAGE))
        assert len(got) == 3 and 0.3 - EARLY <= min(got) <= max(got) <= 0.3 + TOLERANCE, got


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_latency_with_jitter(sides: list[Side], stream: str) -> None:
    toxic = {"type": "latency", "attributes": {"latency": 300, "jitter": 100}}
    messages = tuple(bytes([i]) * 100 for i in range(10))
    traffic = Traffic(messages, 0.1, until_bytes=1000)
    for seen in run_case(sides, stream, toxic, traffic, timing=False):
        got = delays(seen, arrivals_of(seen, stream), 100)
        assert len(got) == 10 and min(got) >= 0.2 - EARLY, got  # each chunk: 300 +- 100 ms
        assert max(got) <= 0.4 + TOLERANCE, got
        assert max(got) - min(got) >= 0.02, got  # the jitter is applied, not just allowed


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_bandwidth_rate(sides: list[Side], stream: str) -> None:
    rate = 200  # KB/s, 1 KB = 1000 B
    payload = MESSAGE * 195 + MESSAGE[:320]  # 200,000 B: one second at the rate
    toxic = {"type": "bandwidth", "attributes": {"rate": rate}}
    for seen in run_case(sides, stream, toxic, Traffic((payload,), until_bytes=len(payload))):
        arrived = arrivals_of(seen, stream)
        assert b"".join(data for _, data in arrived) == payload
        measured = len(payload) / arrived[-1][0] / 1000
        assert abs(measured - rate) <= 0.1 * rate, measured


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_slow_close(sides: list[Side], stream: str) -> None:
    toxic = {"type": "slow_close", "attributes": {"delay": 300}}
    for seen in run_case(sides, stream, toxic, Traffic((MESSAGE,), shut=True)):
        assert seen.shut_at is not None and seen.client_end == "fin"
        assert seen.client_end_at is not None
        assert 0.3 - EARLY <= seen.client_end_at - seen.shut_at <= 0.3 + TOLERANCE


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_timeout_closes_after_silence(sides: list[Side], stream: str) -> None:
    toxic = {"type": "timeout", "attributes": {"timeout": 300}}
    for seen in run_case(sides, stream, toxic, Traffic((MESSAGE,))):
        assert arrivals_of(seen, stream) == []  # swallowed
        assert seen.client_end == "fin" and seen.client_end_at is not None
        assert 0.3 - EARLY <= seen.client_end_at <= 0.3 + TOLERANCE


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_timeout_zero_holds_until_removed(sides: list[Side], stream: str) -> None:
    toxic = {"type": "timeout", "attributes": {"timeout": 0}}
    traffic = Traffic((MESSAGE,), remove_after=0.6)
    for seen in run_case(sides, stream, toxic, traffic):
        assert arrivals_of(seen, stream) == []
        assert seen.removed_at is not None and seen.client_end_at is not None
        assert seen.client_end == "fin" and seen.client_end_at >= seen.removed_at  # removal closes


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_reset_peer(sides: list[Side], stream: str) -> None:
    toxic = {"type": "reset_peer", "attributes": {"timeout": 300}}
    for seen in run_case(sides, stream, toxic, Traffic((MESSAGE,))):
        assert arrivals_of(seen, stream) == []  # the first chunk is dropped
        assert (seen.client_end, seen.upstream_end) == ("rst", "rst")
        assert seen.client_end_at is not None
        assert 0.3 - EARLY <= seen.client_end_at <= 0.3 + TOLERANCE


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_slicer_reassembles(sides: list[Side], stream: str) -> None:
    attributes = {"average_size": 50, "size_variation": 25, "delay": 1000}
    traffic = Traffic((MESSAGE,), until_bytes=len(MESSAGE))
    for seen in run_case(sides, stream, {"type": "slicer", "attributes": attributes}, traffic):
        arrived = arrivals_of(seen, stream)
        assert b"".join(data for _, data in arrived) == MESSAGE
        assert len(arrived) >= 5  # it arrived in pieces (about 20), not in one read


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_limit_data(sides: list[Side], stream: str) -> None:
    toxic = {"type": "limit_data", "attributes": {"bytes": 100}}
    traffic = Traffic((b"a" * 90, b"b" * 20, b"c" * 20), 0.2)
    for seen in run_case(sides, stream, toxic, traffic):
        assert b"".join(data for _, data in arrivals_of(seen, stream)) == b"a" * 90 + b"b" * 10
        assert seen.client_end == "fin"


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_limit_data_zero(sides: list[Side], stream: str) -> None:
    toxic = {"type": "limit_data", "attributes": {"bytes": 0}}
    for seen in run_case(sides, stream, toxic, Traffic((MESSAGE,))):
        assert arrivals_of(seen, stream) == [] and seen.client_end == "fin"


@pytest.mark.parametrize("stream", DIRECTIONS)
def test_toxicity_zero_passes(sides: list[Side], stream: str) -> None:
    toxic = {"type": "latency", "toxicity": 0, "attributes": {"latency": 1000}}
    for seen in run_case(sides, stream, toxic, Traffic((MESSAGE,), until_bytes=len(MESSAGE))):
        got = delays(seen, arrivals_of(seen, stream), len(MESSAGE))
        assert got and got[0] < 1.0  # never delayed by the toxic's second


# -- where we differ on purpose (README, "Where we differ") --------------------------------------


def test_reset_peer_added_to_an_open_connection(sides: list[Side]) -> None:
    """It fires on both, but we reset (RST) and Go closes with a FIN: Go sets SO_LINGER 0 only
    on connections opened while a reset_peer toxic exists."""
    toxic = {"name": "case", "type": "reset_peer", "stream": "upstream"}
    ours, real = side_by_side(sides, toxic, Traffic((MESSAGE,), live=True), echo=False)
    assert ours.upstream_bytes == real.upstream_bytes == b""
    assert (ours.client_end, ours.upstream_end) == ("rst", "rst")
    assert (real.client_end, real.upstream_end) == ("fin", "fin")


def test_reset_peer_that_rolled_no(sides: list[Side]) -> None:
    """toxicity 0: nothing fires on either, but Go has set SO_LINGER 0 on the connection all
    the same, so an ordinary close becomes a reset there (Go issue #603); ours stays a FIN."""
    toxic = {"name": "case", "type": "reset_peer", "stream": "upstream", "toxicity": 0}
    ours, real = side_by_side(sides, toxic, Traffic((MESSAGE,), shut=True), echo=True)
    assert ours.client_bytes == real.client_bytes == MESSAGE
    assert (ours.client_end, ours.upstream_end) == ("fin", "fin")
    assert (real.client_end, real.upstream_end) == ("rst", "rst")
