"""The floor for ``bench_sim.py day`` (issue 16): a bare trio loop with the same heartbeats and
dispatches as the simulated day, on trio's memory streams under ``MockClock``, with no WebSocket,
TLS, proxy, gateway core, client core, trace or oracle.

A client task beats every ``interval`` seconds, the server answers each beat with an ACK and
sends a dispatch every ``dispatch_interval`` seconds; frames are JSON lines. The simulated day's
cost divided by this loop's cost is what the full stack adds per frame.

    python bench/floor.py --heartbeats 2050 --dispatches 1442
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio
import trio.testing


@dataclass
class FloorResult:
    heartbeats: int
    acks: int
    dispatches: int
    simulated_s: float
    wall_s: float
    cpu_s: float


async def _lines(stream: trio.abc.ReceiveStream) -> object:
    buffer = b""
    while True:
        data = await stream.receive_some()
        if not data:
            return
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield json.loads(line)


async def _floor(heartbeats: int, dispatches: int, interval: float,
                 dispatch_interval: float) -> tuple[int, int, int]:
    client, server = trio.testing.memory_stream_pair()
    server_lock = trio.Lock()  # the ACK answerer and the dispatcher share one stream
    seen = {"acks": 0, "dispatches": 0, "seq": 0}
    beats_sent = 0

    async def server_send(frame: dict[str, object]) -> None:
        async with server_lock:
            await server.send_all(json.dumps(frame).encode() + b"\n")

    async def serve_reader() -> None:
        async for frame in _lines(server):  # type: ignore[attr-defined]
            if frame["op"] == 1:
                await server_send({"op": 11})

    async def dispatcher() -> None:
        for n in range(1, dispatches + 1):
            await trio.sleep(dispatch_interval)
            await server_send({"op": 0, "t": "TYPING_START", "s": n,
                               "d": {"channel_id": "1", "user_id": "2", "timestamp": n}})

    async def client_reader() -> None:
        async for frame in _lines(client):  # type: ignore[attr-defined]
            if frame["op"] == 11:
                seen["acks"] += 1
            elif frame["op"] == 0:
                seen["dispatches"] += 1
                seen["seq"] = frame["s"]

    async def beater() -> None:
        nonlocal beats_sent
        for _ in range(heartbeats):
            await trio.sleep(interval)
            await client.send_all(json.dumps({"op": 1, "d": seen["seq"] or None}).encode()
                                  + b"\n")
            beats_sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_reader)
        nursery.start_soon(client_reader)
        async with trio.open_nursery() as senders:
            senders.start_soon(dispatcher)
            senders.start_soon(beater)
        await trio.sleep(interval)  # the last ACK arrives
        nursery.cancel_scope.cancel()
    return beats_sent, seen["acks"], seen["dispatches"]


def run_floor(heartbeats: int, dispatches: int, interval: float = 41.25,
              dispatch_interval: float = 60.0,
              instruments: Sequence[trio.abc.Instrument] = ()) -> FloorResult:
    clock = trio.testing.MockClock(autojump_threshold=0)
    wall, cpu = time.perf_counter(), time.process_time()
    beats, acks, sent = trio.run(_floor, heartbeats, dispatches, interval, dispatch_interval,
                                 clock=clock, instruments=list(instruments))
    return FloorResult(beats, acks, sent, round(clock.current_time(), 1),
                       time.perf_counter() - wall, time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heartbeats", type=int, default=2050)
    p.add_argument("--dispatches", type=int, default=1442)
    p.add_argument("--interval", type=float, default=41.25)
    p.add_argument("--dispatch-interval", type=float, default=60.0)
    args = p.parse_args(argv)
    r = run_floor(args.heartbeats, args.dispatches, args.interval, args.dispatch_interval)
    print(f"floor: {r.heartbeats} heartbeats, {r.acks} ACKs, {r.dispatches} dispatches over "
          f"{r.simulated_s / 3600:.2f} h simulated: {r.wall_s:.3f} s wall, {r.cpu_s:.3f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
