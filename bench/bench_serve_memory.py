"""Benchmark: does a long-running `gateway-harness serve` hold its memory flat over closed
connections? Prints the server's RSS after every ``--every`` closed connections (none open).

    python bench/bench_serve_memory.py --connections 8000 --every 2000
    python bench/bench_serve_memory.py --connections 8000 --every 2000 --trace

It starts the real ``serve`` command (``--trace``: with ``--trace FILE`` into a temporary folder)
and opens connections a few at a time, in four kinds, one after another:

- IDENTIFY (its own shard bucket), READY, then the client closes with 4000: a resumable
  session, left to expire after ``--session-ttl`` seconds;
- a heartbeat and its ACK, then the client closes with 1000;
- a frame that is not JSON: the server closes with 4002;
- TCP ends with no close frame.

Before each reading it waits until /_harness/state lists no connection and no live session, so
every reading is taken in the same state. serve keeps IDENTIFYs to its start budget
(session_start_total, 1,000 a day): later IDENTIFYs are closed with 4004, still a connection.
The load generator speaks WebSocket by hand (`bench_gateway.py`'s frames). Prints one line per
reading and one JSON line. Not a test: nothing here asserts (tests/test_serve_memory.py counts
what the gateway holds instead).

Measured (2 shared cores, `--connections 6000 --every 2000`, RSS at 0/2,000/4,000/6,000):
before issue 17.7's fix 48.2/79.8/111.1/139.9 MB (every closed connection's objects waited for
a full cyclic collection, and every session stayed); after it 48.2/51.0/52.6/52.7 MB (what
remains between the first readings is ended sessions, kept up to a fixed number).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio
from bench_gateway import masked_text_frame, upgrade

KINDS = ("identify", "heartbeat", "bad_frame", "drop")
SHARDS = 1024  # one IDENTIFY bucket per shard: serve's --max-concurrency


def masked_close_frame(code: int, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    payload = code.to_bytes(2, "big")
    return bytes([0x88, 0x80 | len(payload)]) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def connection(host: str, port: int, token: str, kind: str, index: int,
                     rng: random.Random, counts: dict[str, int]) -> None:
    stream = await trio.open_tcp_stream(host, port)
    try:
        reader = await upgrade(stream, host, port, rng)
        await reader.frame()  # HELLO
        if kind == "drop":
            counts[kind] += 1
            return
        if kind == "identify":
            identify = {"op": 2, "d": {"token": token, "intents": 1,
                                       "shard": [index % SHARDS, SHARDS],
                                       "properties": {"os": "linux", "browser": "bench",
                                                      "device": "bench"}}}
            await stream.send_all(masked_text_frame(json.dumps(identify).encode()))
            until, ours = b'"READY"', 4000
        elif kind == "heartbeat":
            await stream.send_all(masked_text_frame(b'{"op":1,"d":null}'))
            until, ours = b'"op":11', 1000
        else:
            await stream.send_all(masked_text_frame(b"not json"))
            until, ours = b"", 1000
        while True:
            opcode, payload = await reader.frame()
            if opcode == 0x8:  # the server closed: answer its close frame
                await stream.send_all(masked_close_frame(
                    int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000))
                counts[f"{kind}: server closed"] += 1
                return
            if until and until in payload:
                await stream.send_all(masked_close_frame(ours))
                counts[kind] += 1
                break
        while (await reader.frame())[0] != 0x8:  # the server's answer to our close
            pass
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def state(info: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        info["control_url"].replace("/control", "/state"),
        headers={"authorization": f"Bearer {info['control_token']}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.load(answer)
        return result


async def settled(info: dict[str, Any], ttl: float) -> dict[str, int]:
    """Wait until the server lists no connection and no live session (the detached ones expire
    after the TTL)."""
    deadline = trio.current_time() + ttl * 5 + 60
    while True:
        now = await trio.to_thread.run_sync(state, info)
        live = [s for s in now["sessions"] if s["state"] == "live"]
        if not now["connections"] and not live:
            return {"sessions_listed": len(now["sessions"])}
        if trio.current_time() > deadline:
            raise RuntimeError(f"not settled: {len(now['connections'])} connections, "
                               f"{len(live)} live sessions")
        await trio.sleep(0.2)


async def load(args: argparse.Namespace, info: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    host, port = info["gateway_url"].removeprefix("ws://").rsplit(":", 1)
    rng = random.Random(args.seed)
    counts: dict[str, int] = {k: 0 for k in KINDS}
    for kind in KINDS:
        counts[f"{kind}: server closed"] = 0
    readings: list[dict[str, Any]] = [
        {"closed": 0, "rss_kib": rss_kib(pid), **await settled(info, args.session_ttl)}]
    print(f"{0:>7} closed: RSS {readings[0]['rss_kib'] / 1024:6.1f} MB", file=sys.stderr)
    done = 0
    limiter = trio.CapacityLimiter(args.concurrency)

    async def one(index: int) -> None:
        async with limiter:
            await connection(host, int(port), info["token"], KINDS[index % len(KINDS)], index,
                             rng, counts)

    started = time.perf_counter()
    while done < args.connections:
        batch = min(args.every, args.connections - done)
        async with trio.open_nursery() as nursery:
            for index in range(done, done + batch):
                nursery.start_soon(one, index)
        done += batch
        listed = await settled(info, args.session_ttl)
        reading = {"closed": done, "rss_kib": rss_kib(pid), **listed,
                   "elapsed_s": round(time.perf_counter() - started, 1)}
        readings.append(reading)
        print(f"{done:>7} closed: RSS {reading['rss_kib'] / 1024:6.1f} MB, "
              f"{listed['sessions_listed']} sessions listed, {reading['elapsed_s']} s",
              file=sys.stderr)
    readings[-1]["outcomes"] = counts
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8000)
    parser.add_argument("--every", type=int, default=2000, help="closed connections per reading")
    parser.add_argument("--concurrency", type=int, default=8, help="connections open at once")
    parser.add_argument("--session-ttl", type=float, default=2.0,
                        help="serve --session-ttl: how soon an unresumed session expires")
    parser.add_argument("--trace", action="store_true", help="serve --trace FILE (a temp file)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-memory-") as folder:
        command = [sys.executable, "-m", "harness", "serve", "--max-concurrency", str(SHARDS),
                   "--session-ttl", str(args.session_ttl), "--seed", str(args.seed)]
        trace_file = Path(folder) / "trace.jsonl"
        if args.trace:
            command += ["--trace", str(trace_file)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            info = json.loads(server.stdout.readline())
            readings = trio.run(load, args, info, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
        trace_mb = round(trace_file.stat().st_size / 2**20, 1) if args.trace else None
    first = readings[1]["rss_kib"]
    result = {
        "connections": args.connections, "trace": args.trace, "trace_file_mb": trace_mb,
        "readings": readings,
        "growth_after_first_reading_kib": readings[-1]["rss_kib"] - first,
        "pid_cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
