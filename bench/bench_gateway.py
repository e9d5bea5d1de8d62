"""Benchmark: how many concurrent sessions with a 1 s heartbeat the fake gateway holds on one core,
and the heartbeat -> ACK latency they see, against a plain websockets echo server's.

    python bench/bench_gateway.py --sessions 1000 --duration 30 [--repeat 3]

The gateway runs in its own process pinned to one CPU (`--server-cpu`); the load generator runs
in this process, pinned to another CPU if there is one. The load generator speaks WebSocket by
hand (pre-masked frames, minimal parsing) so its own cost stays small next to the server's.
Every session IDENTIFYs, then heartbeats every interval (first beat at a random phase); the
latency of each heartbeat is the time from sending it to reading its op 11.

The same load then runs against the baseline: a plain `websockets.trio` server with the
gateway's settings that answers every frame with a canned ACK (`--echo-baseline` measures it
alone). The measured seconds are split into `--rounds` windows per server, the two servers
alternating (gateway, echo, echo, gateway, ...) so that a busy spell of a shared machine hits
both alike; each window starts its server afresh and ramps its sessions up again. Prints each
server's pooled figures, the ratio gateway/echo of the ACK p99 (issue 16's goal: <= 2) and p50,
and one JSON line; `--repeat N` does N such runs and prints the median ratio. Not a test:
nothing here asserts.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio

ACK_MARK = b'"op":11'


def masked_text_frame(payload: bytes, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client text frame (FIN, masked), built once and reused."""
    header = bytearray([0x81])
    length = len(payload)
    if length < 126:
        header.append(0x80 | length)
    else:
        header.append(0x80 | 126)
        header += length.to_bytes(2, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(header) + key + masked


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    connected: int = 0
    identified: int = 0
    closed_early: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    sent: int = 0
    measuring: bool = False


class FrameReader:
    """Reads unmasked server frames; returns complete payloads (no fragmentation expected)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def frame(self) -> tuple[int, bytes]:
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        opcode = buf[0] & 0x0F
        length = buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            offset = 10
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset:offset + length])
        del buf[:offset + length]
        return opcode, payload


async def upgrade(stream: trio.SocketStream, host: str, port: int,
                  rng: random.Random) -> FrameReader:
    """The WebSocket upgrade by hand; returns a reader holding whatever followed the 101."""
    key = base64.b64encode(rng.randbytes(16)).decode()
    await stream.send_all(
        (f"GET /?v=10&encoding=json HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
         ).encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise EOFError("closed during upgrade")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(response.split(b"\r\n", 1)[0].decode())
    reader = FrameReader(stream)
    reader.buffer += response.split(b"\r\n\r\n", 1)[1]
    return reader


async def session(host: str, port: int, token: str, interval: float, stats: Stats,
                  rng: random.Random, stop: trio.Event) -> None:
    stream = await trio.open_tcp_stream(host, port)
    reader = await upgrade(stream, host, port, rng)
    stats.connected += 1
    await reader.frame()  # HELLO: heartbeating starts now, as real clients do
    heartbeat = masked_text_frame(b'{"op":1,"d":null}')
    sent_at: list[float] = []

    async def beat() -> None:
        await trio.sleep(rng.random() * interval)
        while not stop.is_set():
            sent_at.append(time.perf_counter())
            await stream.send_all(heartbeat)
            stats.sent += 1
            await trio.sleep(interval)

    properties = {"os": "linux", "browser": "bench", "device": "bench"}
    identify = {"op": 2, "d": {"token": token, "intents": 1, "properties": properties}}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat)
            await stream.send_all(masked_text_frame(json.dumps(identify).encode()))
            while True:
                opcode, payload = await reader.frame()
                if opcode == 0x8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    stats.close_codes.append(code)
                    stats.closed_early += 1
                    nursery.cancel_scope.cancel()
                    return
                if ACK_MARK in payload and sent_at:
                    latency = time.perf_counter() - sent_at.pop(0)
                    if stats.measuring:
                        stats.latencies.append(latency)
                elif b'"READY"' in payload:
                    stats.identified += 1
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        if not stop.is_set():
            stats.closed_early += 1
    finally:
        await trio.aclose_forcefully(stream)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(args: argparse.Namespace, host: str, port: int, token: str, server_pid: int
               ) -> dict[str, Any]:
    stats = Stats()
    stop = trio.Event()
    rng = random.Random(args.seed)
    async with trio.open_nursery() as nursery:
        for _ in range(args.sessions):
            nursery.start_soon(session, host, port, token, args.interval, stats,
                               random.Random(rng.getrandbits(64)), stop)
            await trio.sleep(1.0 / args.ramp)
        with trio.move_on_after(30):
            while stats.identified < args.sessions:
                await trio.sleep(0.1)
        await trio.sleep(args.interval * 2)  # settle
        stats.measuring = True
        cpu_before, wall_before = cpu_seconds(server_pid), time.perf_counter()
        load_before = cpu_seconds(os.getpid())
        await trio.sleep(args.duration / args.rounds)
        cpu_used = cpu_seconds(server_pid) - cpu_before
        load_used = cpu_seconds(os.getpid()) - load_before
        wall = time.perf_counter() - wall_before
        stats.measuring = False
        stop.set()
        nursery.cancel_scope.cancel()
    return {
        "sessions_requested": args.sessions,
        "sessions_identified": stats.identified,
        "closed_early": stats.closed_early,
        "close_codes": sorted(set(stats.close_codes), key=str),
        "interval_s": args.interval,
        "measured_s": args.duration / args.rounds,
        "server_cpu_s": cpu_used,
        "load_generator_cpu_s": load_used,
        "wall_s": wall,
        "latencies": stats.latencies,
    }


def summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's figures over its measured windows (latencies pooled)."""
    lat = sorted(x for w in windows for x in w["latencies"])
    wall = sum(w["wall_s"] for w in windows)
    measured = sum(w["measured_s"] for w in windows)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else math.nan

    return {
        "sessions_identified": min(w["sessions_identified"] for w in windows),
        "closed_early": sum(w["closed_early"] for w in windows),
        "close_codes": sorted({c for w in windows for c in w["close_codes"]}, key=str),
        "windows": len(windows),
        "acks_measured": len(lat),
        "acks_per_s": round(len(lat) / measured, 1),
        "ack_latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                           "max": round(lat[-1] * 1000, 2) if lat else None,
                           "mean": round(statistics.fmean(lat) * 1000, 2) if lat else None},
        "server_cpu_percent_of_one_core":
            round(100 * sum(w["server_cpu_s"] for w in windows) / wall, 1),
        "load_generator_cpu_percent":
            round(100 * sum(w["load_generator_cpu_s"] for w in windows) / wall, 1),
    }


def serve(args: argparse.Namespace) -> None:
    """The server process: the real FakeGateway on TCP, one line with its URL on stdout."""
    from fake_gateway.config import GatewayConfig
    from fake_gateway.opened import open_gateway
    from fake_gateway.server import FakeGateway, tune_gc_for_a_server_process
    from gateway_common.trace import Trace

    if os.environ.get("BENCH_NO_GC"):
        gc.disable()

    async def main() -> None:
        config = GatewayConfig(heartbeat_interval_ms=int(args.interval * 1000), guilds=1,
                               max_concurrency=1_000_000, identify_window=0.0,
                               session_start_total=10**9,
                               timer_resolution=args.timer_resolution)
        gateway = FakeGateway(config, Trace(clock=trio.current_time), random.Random(args.seed))
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(open_gateway, gateway)
            tune_gc_for_a_server_process()  # as `gateway-harness serve` does
            print(json.dumps({"gateway_url": urls.gateway_url, "token": config.token}),
                  flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_echo(args: argparse.Namespace) -> None:
    """Baseline server: a plain websockets echo server (`websockets.trio`, the library and
    settings the gateway uses) that answers HELLO on connect, READY to the first frame and a
    canned ACK to every later one: no parsing, no protocol core, no trace. What the gateway's
    WebSocket layer costs by itself under the same load."""
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import ServerConnection, serve

    from fake_gateway.server import tune_gc_for_a_server_process

    hello = json.dumps({"op": 10, "d": {"heartbeat_interval": int(args.interval * 1000)},
                        "s": None, "t": None}, separators=(",", ":"))
    ready = '{"op":0,"t":"READY","s":1,"d":{}}'
    ack = '{"op":11,"d":null,"s":null,"t":null}'

    async def handle(ws: ServerConnection) -> None:
        try:
            await ws.send(hello)
            reply = ready
            async for _ in ws:
                await ws.send(reply)
                reply = ack
        except ConnectionClosed:
            pass  # the load generator resets its connections at the end

    async def run() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(
                    handle, listeners=listeners, compression=None, ping_interval=None,
                    ping_timeout=None, max_size=2**20, server_header=None,
                    task_status=task_status))
            tune_gc_for_a_server_process()  # as the gateway's process does
            print(json.dumps({"gateway_url": f"ws://127.0.0.1:{port}", "token": "x"}),
                  flush=True)

    trio.run(run)


def serve_raw(args: argparse.Namespace) -> None:
    """Floor server: HELLO, then READY for the first read and a canned ACK for every later one,
    no WebSocket library and no parsing at all. Shows what the machine and the load generator
    allow by themselves."""

    def frame(payload: bytes) -> bytes:
        return bytes([0x81, len(payload)]) + payload

    hello = frame(b'{"op":10,"d":{"heartbeat_interval":1000},"s":null,"t":null}')
    ready = frame(b'{"op":0,"t":"READY","s":1,"d":{}}')
    ack = frame(b'{"op":11,"d":null,"s":null,"t":null}')

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n" + hello)
        identified = False
        while await stream.receive_some(65536):
            await stream.send_all(ack if identified else ready)
            identified = True

    async def run() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"gateway_url": f"ws://127.0.0.1:{port}", "token": "x"}), flush=True)
        await trio.serve_listeners(handle, listeners)

    trio.run(run)


SERVERS = {"gateway": serve, "echo": serve_echo, "raw": serve_raw}


def measure(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Start one server process (`kind` of SERVERS), load it for one window, stop it."""
    cpus = os.sched_getaffinity(0)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-only", kind, "--interval", str(args.interval),
         "--server-cpu", str(-1 if args.no_pin else args.server_cpu), "--seed", str(args.seed),
         "--timer-resolution", str(args.timer_resolution)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        if not args.no_pin and args.load_cpu in cpus and args.load_cpu != args.server_cpu:
            os.sched_setaffinity(0, {args.load_cpu})
        host, port = info["gateway_url"].removeprefix("ws://").rsplit(":", 1)
        return trio.run(load, args, host, int(port), info["token"], server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
        os.sched_setaffinity(0, cpus)


def describe(kind: str, args: argparse.Namespace, result: dict[str, Any]) -> str:
    lat = result["ack_latency_ms"]
    return (f"{kind:7}: {result['sessions_identified']}/{args.sessions} sessions, heartbeat "
            f"every {args.interval}s, {result['acks_per_s']} ACKs/s over {args.duration}s "
            f"({result['windows']} windows); ACK latency p50 {lat['p50']} ms, p99 {lat['p99']} "
            f"ms, max {lat['max']} ms; server CPU {result['server_cpu_percent_of_one_core']}% "
            f"of one core; {result['closed_early']} sessions closed early")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, s")
    parser.add_argument("--ramp", type=float, default=250.0, help="new sessions per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--timer-resolution", type=float, default=0.0,
                        help="GatewayConfig.timer_resolution for the server")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place both processes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="windows per server: the measured seconds are split into this "
                             "many windows, gateway and echo baseline alternating")
    parser.add_argument("--repeat", type=int, default=1,
                        help="whole runs (each its own ratio); prints the median ratio")
    parser.add_argument("--echo-baseline", action="store_true",
                        help="measure only the websockets echo server")
    parser.add_argument("--raw-baseline", action="store_true",
                        help="also measure a canned-ACK server with no WebSocket library")
    parser.add_argument("--serve-only", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_only:
        if args.server_cpu >= 0:
            os.sched_setaffinity(0, {args.server_cpu})
        SERVERS[args.serve_only](args)
        return
    kinds = ["echo"] if args.echo_baseline else ["gateway", "echo"]
    if args.raw_baseline:
        kinds.append("raw")
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, args.repeat)):
        windows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for window in range(args.rounds):
            # Alternate the order (G E, E G, ...) so that a slow spell of a shared machine
            # falls on both servers alike.
            for kind in kinds if window % 2 == 0 else kinds[::-1]:
                windows[kind].append(measure(args, kind))
        run: dict[str, Any] = {kind: summary(w) for kind, w in windows.items()}
        for kind in kinds:
            print(describe(kind, args, run[kind]), file=sys.stderr)
        if "gateway" in run:
            ours, echo = run["gateway"]["ack_latency_ms"], run["echo"]["ack_latency_ms"]
            run["p99_ratio_vs_echo"] = round(ours["p99"] / echo["p99"], 2)
            run["p50_ratio_vs_echo"] = round(ours["p50"] / echo["p50"], 2)
            print(f"gateway/echo: ACK p99 x{run['p99_ratio_vs_echo']:.2f} (goal <= 2), "
                  f"p50 x{run['p50_ratio_vs_echo']:.2f}", file=sys.stderr)
        runs.append(run)
    result: dict[str, Any] = {"nproc": os.cpu_count(), "runs": runs}
    if "gateway" in kinds:
        result["median_p99_ratio_vs_echo"] = statistics.median(
            r["p99_ratio_vs_echo"] for r in runs)
        result["median_p50_ratio_vs_echo"] = statistics.median(
            r["p50_ratio_vs_echo"] for r in runs)
        result["goal_p99_met"] = result["median_p99_ratio_vs_echo"] <= 2.0
        if len(runs) > 1:
            print(f"median of {len(runs)} runs: gateway/echo ACK p99 "
                  f"x{result['median_p99_ratio_vs_echo']:.2f} (goal <= 2), "
                  f"p50 x{result['median_p50_ratio_vs_echo']:.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
