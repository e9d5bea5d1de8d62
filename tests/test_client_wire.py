"""The reference client on real loopback sockets: wss with a trustme CA, REST over https, the
fault proxy's reset_after toxic for the seed failure, and the client as a separate process.

Wall-clock mode: the gateway advertises a 1-s heartbeat interval. An ACK later than the next
beat is a zombie to the client, and an ACK takes ~2 ms on loopback (with the CPUs saturated
too), so a late one needs a stall of 1 s. Timeouts here only protect against hangs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.client.driver import CONFIG_ERROR_ATTEMPTS
from harness.client.testing import TOKEN, ClientWorld, open_tcp_world, wait_until
from harness.faults.backend import ToxicSpec, open_embedded_backend

FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.5, "close_timeout": 1.0,
                        "invalid_session_wait": (0.1, 0.2), "identify_window": 0.1}
# No server-side heartbeat deadline: on a loaded CI machine a late beat must not add a close.
GATEWAY: dict[str, Any] = {"heartbeat_interval_ms": 1000, "dispatch_rate": 20.0,
                           "identify_window": 0.0, "heartbeat_deadline": False}


def _read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_delivery(world: ClientWorld, log: list[dict[str, Any]]) -> None:
    """Every dispatch the gateway sent reached the app once, in order (per session)."""
    sessions = {rec["session_id"] for rec in log}
    for session_id in sessions:
        seqs = [rec["s"] for rec in log if rec["session_id"] == session_id]
        sent = sorted(set(world.dispatches_out(session_id)))
        assert seqs == sent[: len(seqs)], f"lost, duplicated or reordered: {seqs} vs {sent}"


async def test_wss_rest_and_zlib_stream_to_a_live_heartbeating_session(tmp_path: Path):
    log_path = tmp_path / "delivery.jsonl"
    async with open_tcp_world(client_defaults=FAST, **GATEWAY) as world:
        assert world.discovery_url.startswith("wss://") and world.rest_url is not None
        client = await world.start_client(delivery_log=log_path)
        await wait_until(lambda: len(world.frames_in(1)) >= 5, timeout=30)
        conn = world.live_conn()
        assert world.records("ws_upgrade", conn=conn)[0]["query"]["compress"] == "zlib-stream"
        assert client.state == "ready"
        assert len(world.records("frame_out", conn=conn, op=11)) >= 4
        assert world.gateway.state()["session_start_remaining"] == 999  # read via REST
        client.stop()
        await wait_until(lambda: client.stop_info is not None, timeout=10)
    log = _read_log(log_path)
    assert log[0]["t"] == "READY" and log[0]["s"] == 1
    assert all(set(rec) == {"s", "t", "session_id", "ts"} for rec in log)
    _check_delivery(world, log)


async def test_zstd_stream_transport_works_too():
    async with open_tcp_world(tls=False, rest=False, client_defaults=FAST, **GATEWAY) as world:
        client = await world.start_client(compress="zstd-stream")
        await wait_until(lambda: len(client.delivered) >= 10, timeout=30)
        query = world.records("ws_upgrade")[0]["query"]
        assert query["compress"] == "zstd-stream"
        assert [rec["s"] for rec in client.delivered[:10]] == list(range(1, 11))


async def test_seed_tls_reset_after_client_hello_through_the_fault_proxy(tmp_path: Path):
    """The seed on real sockets: the session's socket is reset; the reconnect to the resume URL
    goes through a proxy whose reset_after toxic sends an RST right after the ClientHello. The
    client must come back, RESUME, heartbeat, and lose no event."""
    log_path = tmp_path / "delivery.jsonl"
    async with open_tcp_world(rest=False, client_defaults=FAST, **GATEWAY) as world, \
            open_embedded_backend(seed=3) as backend:
        proxies = {name: await backend.create_proxy(name, str(address), "127.0.0.1:0")
                   for name, address in world.opened.listeners.items()}
        discovery = f"wss://{proxies['discovery'].listen}"
        world.opened.announce(discovery, f"wss://{proxies['resume'].listen}")
        await backend.add_toxic("resume", ToxicSpec(
            "reset_after", attributes={"bytes": 1, "mode": "rst", "forward": True},
            only_connection=1))
        client = await world.start_client(gateway_url=discovery, delivery_log=log_path)
        await wait_until(lambda: client.state == "ready", timeout=30)
        await trio.sleep(0.5)
        world.gateway.controls.apply("reset", world.live_conn())
        await wait_until(lambda: client.counters()["resumes_ok"] == 1, timeout=30)
        resumed = world.live_conn()
        await wait_until(lambda: len(world.frames_in(1, resumed)) >= 4, timeout=30)
        counters = client.counters()
        assert counters["stage_failures"] == {"tls": 1}
        assert counters["identifies"] == 1 and counters["failed_resumes"] == 1
        assert client.state == "ready"
        assert len(world.records("frame_out", conn=resumed, op=11)) >= 3
        client.stop()
        await wait_until(lambda: client.stop_info is not None, timeout=10)
    log = _read_log(log_path)
    assert len({rec["session_id"] for rec in log}) == 1
    _check_delivery(world, log)
    assert log[-1]["s"] > 20


# trigger -> what the next connection must do: ("resume" | "identify" | "stop")
DECISIONS: list[tuple[str, dict[str, Any], str]] = [
    ("reconnect", {}, "resume"),
    ("withhold_acks", {}, "resume"),
    ("reset", {}, "resume"),
    ("close", {"code": 4000}, "resume"),
    ("close", {"code": 4009}, "identify"),
    ("invalid_session", {"resumable": False}, "identify"),
    ("invalid_session", {"resumable": True}, "resume"),
    ("close", {"code": 4004}, "stop"),
]


@pytest.mark.parametrize(("action", "params", "expected"), DECISIONS,
                         ids=[f"{a}-{'-'.join(map(str, p.values()))}" for a, p, _ in DECISIONS])
async def test_decision_table_rows_on_real_sockets(action: str, params: dict[str, Any],
                                                   expected: str):
    async with open_tcp_world(tls=False, rest=False, client_defaults=FAST, **GATEWAY) as world:
        client = await world.start_client()
        await wait_until(lambda: client.state == "ready", timeout=30)
        await trio.sleep(0.3)
        first = world.live_conn()
        world.gateway.controls.apply(action, first, **params)
        if expected == "stop":
            await wait_until(lambda: client.stop_info is not None, timeout=30)
            assert client.stop_info is not None and client.stop_info.fatal
            await trio.sleep(0.5)
            assert world.conns() == [first]
            return
        op = 6 if expected == "resume" else 2
        await wait_until(lambda: len(world.conns()) >= 2 and client.state == "ready", timeout=30)
        second = world.live_conn()
        listener = "resume" if expected == "resume" else "discovery"
        assert world.records("conn_open", conn=second)[0]["listener"] == listener
        assert [f["op"] for f in world.records("frame_in", conn=second) if f["op"] in (2, 6)] \
            == [op]
        closes = world.records("conn_close", conn=first, by="client")
        assert all(c["code"] not in (1000, 1001) for c in closes)
        await wait_until(lambda: len(world.frames_in(1, second)) >= 2, timeout=30)
        _check_delivery(world, [dict(r) for r in client.delivered])


async def test_cli_runs_as_a_process_under_the_env_contract(tmp_path: Path):
    log_path = tmp_path / "delivery.jsonl"
    async with open_tcp_world(**GATEWAY) as world:
        assert world.rest_url is not None and world.ca_file is not None
        env = {**os.environ,
               "GATEWAY_HARNESS_GATEWAY_URL": world.discovery_url,
               "GATEWAY_HARNESS_REST_URL": world.rest_url,
               "GATEWAY_HARNESS_TOKEN": TOKEN,
               "GATEWAY_HARNESS_CA_FILE": world.ca_file,
               "GATEWAY_HARNESS_DELIVERY_LOG": str(log_path)}
        with trio.fail_after(60):
            proc = await trio.run_process(
                [sys.executable, "-m", "harness", "client", "--show-state", "--run-for", "1.5",
                 "--seed", "4"],
                env=env, capture_stdout=True, capture_stderr=True, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    states = [line.split("]", 1)[1].split()[0] for line in stderr.splitlines()
              if line.startswith("[")]
    assert states[:6] == ["connecting", "connecting", "tls", "upgrading", "hello", "identifying"]
    assert "ready" in states and states[-1] == "stopped"
    log = _read_log(log_path)
    assert log[0]["t"] == "READY"
    _check_delivery(world, log)
    closes = world.records("conn_close", by="client")
    assert [c["code"] for c in closes] == [1000]


async def _run_cli(*args: str) -> tuple[int, str]:
    """`gateway-harness client ARGS` as a process: its exit code and stderr. The deadline only
    catches a client that never gives up (each of these runs takes about 3 s)."""
    with trio.fail_after(60):
        proc = await trio.run_process([sys.executable, "-m", "harness", "client", *args],
                                      capture_stdout=True, capture_stderr=True, check=False)
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    return proc.returncode, stderr


def _said(stderr: str) -> list[str]:
    """What the client told its user (not the --show-state lines, not the counters)."""
    return [line for line in stderr.splitlines() if line.startswith("gateway-harness client:")]


async def test_cli_reports_a_fatal_close_in_one_line_and_exits_nonzero():
    async with open_tcp_world(tls=False, rest=False, **GATEWAY) as world:
        code, stderr = await _run_cli("--gateway-url", world.discovery_url,
                                      "--token", "not-the-token")
    assert code == 1
    assert _said(stderr) == [
        f"gateway-harness client: {world.discovery_url} closed the connection with 4004 "
        "(Authentication failed.): a fatal close code, not reconnecting"]
    assert len(world.conns()) == 1  # never reconnected


async def test_an_origin_without_path_is_taken_as_its_api_v10_base():
    async with open_tcp_world(client_defaults=FAST, **GATEWAY) as world:
        assert world.rest_url is not None and world.rest_url.endswith("/api/v10")
        world.gateway.controls.apply("session_start_remaining", remaining=7)
        origin = world.rest_url.removesuffix("/api/v10")
        client = await world.start_client(rest_url=origin, gateway_url=None)
        await wait_until(lambda: client.state == "ready", timeout=30)
        assert client.core.gateway_bot is not None  # read over REST, from the origin's base
        # the 7 the server answered (not a default), less the IDENTIFY the client counted
        assert client.core.gateway_bot["session_start_limit"]["remaining"] in (6, 7)


async def test_cli_says_a_rest_url_answering_404_at_once_and_stops_after_three_tries():
    async with open_tcp_world(**GATEWAY) as world:
        assert world.rest_url is not None and world.ca_file is not None
        wrong = world.rest_url.removesuffix("/api/v10") + "/v10"
        code, stderr = await _run_cli("--rest-url", wrong, "--token", TOKEN,
                                      "--ca-file", world.ca_file, "--show-state")
    assert code == 1
    line = (f"gateway-harness client: GET {wrong}/gateway/bot answered 404 Not Found: "
            "is the REST URL the /api/v10 base?")
    assert _said(stderr) == [line]
    lines = stderr.splitlines()
    fetches = [i for i, text in enumerate(lines) if "fetching /gateway/bot" in text]
    assert len(fetches) == CONFIG_ERROR_ATTEMPTS
    assert fetches[0] < lines.index(line) < fetches[1]  # said at once, not when giving up
    assert world.conns() == []


async def test_cli_rejects_a_ca_file_it_cannot_read_at_start_up(tmp_path: Path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    async with open_tcp_world(rest=False, **GATEWAY) as world:
        code, stderr = await _run_cli("--gateway-url", world.discovery_url, "--token", TOKEN,
                                      "--ca-file", str(bad))
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"gateway-harness client: error: --ca-file: {bad}: not a PEM CA certificate "
        "(NO_CERTIFICATE_OR_CRL_FOUND)"]
    assert world.conns() == []


@pytest.mark.parametrize("via", ["gateway", "rest"])
async def test_cli_says_a_ca_that_does_not_verify_the_server_and_stops(tmp_path: Path, via: str):
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with open_tcp_world(**GATEWAY) as world:
        assert world.rest_url is not None
        url = ["--gateway-url", world.discovery_url] if via == "gateway" else [
            "--rest-url", world.rest_url]
        code, stderr = await _run_cli(*url, "--token", TOKEN, "--ca-file", str(other))
    assert code == 1
    what = (f"TLS to {world.discovery_url}" if via == "gateway"
            else f"GET {world.rest_url}/gateway/bot")
    assert _said(stderr) == [
        f"gateway-harness client: {what}: certificate verify failed (unable to get local "
        f"issuer certificate): is CA file {other} the CA that signed the server's certificate?"]
    assert len(world.conns()) == (CONFIG_ERROR_ATTEMPTS if via == "gateway" else 0)


async def test_refused_token_at_rest_stops_before_connecting():
    async with open_tcp_world(client_defaults=FAST, **GATEWAY) as world:
        client = await world.start_client(token="not-the-token")
        await wait_until(lambda: client.stop_info is not None, timeout=30)
        assert client.stop_info is not None and client.stop_info.fatal
        assert "401" in client.stop_info.reason
        assert world.conns() == []
