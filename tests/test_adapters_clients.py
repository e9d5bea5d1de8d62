"""Real third-party clients, installed from their registries, against the real fake gateway.

Each test installs its client on first use into the machine's clients directory (conftest's
``install_client``: a failed install skips, in CI fails), serves the fake gateway over
wss/https with a generated CA, runs the adapter under the env contract, and checks what a user
would: the client logged in, heartbeated on the interval HELLO gave it, and handed the app every
dispatch the gateway sent, in order, with the right session id.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.tls import make_tls
from gateway_common.trace import Trace
from harness.adapters.contract import Adapter, env_for
from harness.adapters.process import ClientProcess, ClientRun
from harness.adapters.registry import ADAPTERS, get_spec

pytestmark = pytest.mark.timeout(240)
Install = Callable[[str], Adapter]


@asynccontextmanager
async def fake_gateway(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[OpenedGateway, Trace]]:
    trace = Trace(clock=trio.current_time)
    gateway = FakeGateway(GatewayConfig(**config), trace, random.Random(7))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(open_gateway, gateway, rest_port=0, tls=make_tls(tmp_path / "tls")))
        yield urls, trace
        nursery.cancel_scope.cancel()


async def run_until(
    adapter_name: str,
    install_client: Install,
    tmp_path: Path,
    done: Callable[[ClientProcess, Trace], bool],
    **config: Any,
) -> tuple[ClientRun, Trace]:
    adapter = await trio.to_thread.run_sync(install_client, adapter_name)
    async with fake_gateway(tmp_path, **config) as (urls, trace):
        assert urls.rest_url is not None and urls.ca_file is not None
        env = env_for(urls.gateway_url, urls.rest_url, GatewayConfig().token,
                      urls.ca_file, tmp_path / "delivery.jsonl")
        async with ClientProcess(adapter, env, deadline=120, log_dir=tmp_path / "logs") as proc:
            with trio.move_on_after(90):  # hang protection only; normally seconds
                while not done(proc, trace) and proc.running:
                    await trio.sleep(0.1)
            run = await proc.stop()
    return run, trace


def frames(trace: Trace, kind: str, op: int, conn: int | None = None) -> list[dict[str, Any]]:
    return [r for r in trace.of_kind(kind)
            if r["op"] == op and (conn is None or r["conn"] == conn)]


def ready_conn(trace: Trace) -> dict[str, Any]:
    ready = [r for r in frames(trace, "frame_out", 0) if r["t"] == "READY"]
    assert ready, "the gateway never sent READY"
    return ready[0]


def assert_logged_in_and_delivered(run: ClientRun, trace: Trace, lib: str) -> None:
    ready = ready_conn(trace)
    conn = ready["conn"]
    identify = frames(trace, "frame_in", 2, conn)
    assert identify and identify[0]["token_ok"], "no IDENTIFY with the harness token"
    sent = [(r["s"], r["t"]) for r in frames(trace, "frame_out", 0, conn)]
    delivered = [(r["s"], r["t"]) for r in run.delivery]
    assert len(delivered) >= 5
    # exactly the gateway's dispatches, in order, none lost or doubled (up to when it stopped)
    assert delivered == sent[: len(delivered)]
    assert {r["session_id"] for r in run.delivery} == {ready["session_id"]}
    assert run.versions[lib] == ADAPTERS[lib].version
    assert run.ended_by == "stop", f"client ended early: {run.stderr_tail[-5:]}"


def enough(deliveries: int, heartbeats: int) -> Callable[[ClientProcess, Trace], bool]:
    def check(proc: ClientProcess, trace: Trace) -> bool:
        return len(proc.delivery) >= deliveries and len(frames(trace, "frame_in", 1)) >= heartbeats
    return check


async def test_discord_py_logs_in_over_wss_and_writes_the_delivery_log(
    install_client: Install, tmp_path: Path
) -> None:
    counts = enough(deliveries=10, heartbeats=3)

    def done(proc: ClientProcess, trace: Trace) -> bool:
        # on_ready comes only after guild_ready_timeout (2 s) without a GUILD_CREATE: wait for it
        return counts(proc, trace) and any(e.get("event") == "ready" for e in proc.events)

    run, trace = await run_until(
        "discord.py", install_client, tmp_path, done,
        heartbeat_interval_ms=1000, dispatch_rate=10.0,
    )
    assert_logged_in_and_delivered(run, trace, "discord.py")
    conn = ready_conn(trace)["conn"]
    # the TLS handshake with the generated CA completed, and the client took HELLO's 1 s
    # interval: three heartbeats on the READY connection within the run
    assert [r for r in trace.of_kind("tls_done") if r["conn"] == conn]
    assert len(frames(trace, "frame_in", 1, conn)) >= 3
    # discord.py asks for transport compression by default and decoded what it got
    upgrade = [r for r in trace.of_kind("ws_upgrade") if r["conn"] == conn][0]
    assert upgrade["query"].get("compress") in ("zlib-stream", "zstd-stream")
    assert any(r["compressed"] for r in frames(trace, "frame_out", 0, conn))
    assert {"event": "ready", "session_id": ready_conn(trace)["session_id"]} in run.events
    assert (tmp_path / "logs" / "stderr.log").read_text()  # full stderr kept beside the tail


def test_install_is_reused_and_isolated(install_client: Install, clients_dir: Path) -> None:
    spec = get_spec("discord.py")
    first = install_client("discord.py")  # installed by the test above, or now
    marker = spec.install_dir(None, clients_dir) / "installed.json"
    stamp = marker.stat().st_mtime_ns
    again = spec.install(None, clients_dir)
    assert again == first and marker.stat().st_mtime_ns == stamp  # reused, not reinstalled
    python = Path(first.argv[0])
    assert python.parent.parent == spec.install_dir(None, clients_dir)  # its own venv
    assert first.versions["discord.py"] == "2.7.1"


async def test_discord_js_logs_in_over_wss_and_writes_the_delivery_log(
    install_client: Install, tmp_path: Path
) -> None:
    run, trace = await run_until(
        "discord.js", install_client, tmp_path, enough(deliveries=10, heartbeats=3),
        heartbeat_interval_ms=1000, dispatch_rate=10.0,
    )
    assert_logged_in_and_delivered(run, trace, "discord.js")
    conn = ready_conn(trace)["conn"]
    assert len(frames(trace, "frame_in", 1, conn)) >= 3
    # without the optional zlib-sync, discord.js asks for no transport compression
    upgrade = [r for r in trace.of_kind("ws_upgrade") if r["conn"] == conn][0]
    assert "compress" not in upgrade["query"]


async def test_midjourney_connects_the_way_chatgpt_midjourney_configured_it(
    install_client: Install, tmp_path: Path
) -> None:
    def identified(proc: ClientProcess, trace: Trace) -> bool:
        return bool(frames(trace, "frame_in", 2))

    run, trace = await run_until("midjourney", install_client, tmp_path, identified)
    first = trace.of_kind("ws_upgrade")[0]
    # WsBaseUrl is the bare harness URL, used verbatim: path "/", no ?v=&encoding=
    assert first["path"] == "/" and first["query"] == {}
    identify = frames(trace, "frame_in", 2)[0]
    assert identify["token_ok"]  # the raw user token from SalaiToken
    assert identify["intents"] is None  # a user-account IDENTIFY: no intents
    assert {"event": "open", "n": 0} in run.events  # the library's own "open.time 0" log
    assert run.versions["midjourney"] == ADAPTERS["midjourney"].version
