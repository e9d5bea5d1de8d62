"""Benchmark: our Toxiproxy-compatible proxy (no toxics) vs the real Toxiproxy vs socat vs a
direct connection.

    python bench/bench_proxy.py [--rounds 2000] [--megabytes 64]

All on loopback; this client on one CPU, the echo server and every relay on another
(`--no-pin`: wherever the OS puts them). One echo server (a separate process) behind these paths:
  direct    client -> echo
  ours      client -> `gateway-harness proxy` (separate process, one proxy, no toxics) -> echo
  toxiproxy client -> Shopify's toxiproxy-server 2.12.0 (one proxy, no toxics) -> echo
            ($TOXIPROXY_SERVER, PATH or .tools/bin; `.ci/install-toxiproxy` builds it)
  socat     client -> socat TCP-LISTEN,fork -> echo   (Debian package `socat`)
  trio-min  client -> a 20-line raw trio relay -> echo (the floor any trio proxy pays)
Measures round-trip time of a 1 KiB echo (p50/p99 over all rounds, paths interleaved in batches
of 100; "added" = path minus direct) and throughput of 64 KiB chunks streamed through and echoed
back. Prints a table, the ratios ours/trio-min, ours/toxiproxy and ours/socat, and one JSON
line. Goals: our added p50 <= 1.2x the trio relay's measured in the same run (issue 16);
our added p50 <= 2x socat's; our throughput >= 30% of socat's (issue 3).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.faults.testing import (
    RealToxiproxyServer,
    ToxiproxyServerMissing,
    find_toxiproxy_server,
)

ECHO_SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(64)
print(srv.getsockname()[1], flush=True)
def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


# The least a trio relay can do: two tasks per connection moving bytes with raw non-blocking
# reads/writes and one wait each. Shows what trio's scheduler alone costs per hop.
TRIO_FLOOR_RELAY = r"""
import os, sys, trio
async def pump(src, dst):
    while True:
        try:
            data = os.read(src.fileno(), 32768)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(src)
            continue
        if not data:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(dst.fileno(), view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(dst)
async def handle(client):
    upstream = await trio.open_tcp_stream("127.0.0.1", int(sys.argv[1]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, client.socket, upstream.socket)
        nursery.start_soon(pump, upstream.socket, client.socket)
async def main():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(handle, listeners)
trio.run(main)
"""


SERVER_CPUS: set[int] | None = None  # main() sets it: where the servers and proxies run


def _pin_server() -> None:
    if SERVER_CPUS is not None:
        os.sched_setaffinity(0, SERVER_CPUS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_connectable(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


@contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=_pin_server)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> None:
    view = memoryview(bytearray(n))
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise RuntimeError("connection closed during benchmark")
        got += k


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_latency(ports: dict[str, int], rounds: int, batch: int = 100) -> dict[str, list[float]]:
    """Round trips of a 1 KiB echo per path, interleaved in small batches so that load from
    other processes on the machine hits every path alike."""
    payload = b"x" * 1024
    socks = {name: connect(port) for name, port in ports.items()}
    samples: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for sock in socks.values():
            for _ in range(200):  # warm-up
                sock.sendall(payload)
                recv_exactly(sock, len(payload))
        for _ in range(max(1, rounds // batch)):
            for name, sock in socks.items():
                for _ in range(batch):
                    start = time.perf_counter()
                    sock.sendall(payload)
                    recv_exactly(sock, len(payload))
                    samples[name].append(time.perf_counter() - start)
    finally:
        for sock in socks.values():
            sock.close()
    return samples


def measure_throughput(port: int, megabytes: int) -> float:
    chunk = b"y" * 65536
    count = megabytes * 16
    with connect(port) as sock:

        def send_all() -> None:
            for _ in range(count):
                sock.sendall(chunk)

        start = time.perf_counter()
        sender = threading.Thread(target=send_all)
        sender.start()
        recv_exactly(sock, count * len(chunk))
        sender.join()
        elapsed = time.perf_counter() - start
    return count * len(chunk) / elapsed / 1e6  # MB/s


def create_proxy(api: str, upstream_port: int) -> int:
    proxy = {"name": "bench", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream_port}"}
    request = urllib.request.Request(
        f"{api}/proxies", data=json.dumps(proxy).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        listen = json.loads(response.read())["listen"]
    return int(listen.rsplit(":", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="1 KiB echoes per path")
    parser.add_argument("--megabytes", type=int, default=64, help="MB streamed per path")
    parser.add_argument(
        "--no-pin", action="store_true",
        help="let the OS place the processes (default: this client on one CPU, the echo server "
             "and every relay on another, so that no path gains or loses by where it lands)",
    )
    args = parser.parse_args()
    global SERVER_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        SERVER_CPUS = {cpus[1]}
        os.sched_setaffinity(0, {cpus[0]})

    socat = shutil.which("socat")
    if socat is None:
        print(
            "socat is MISSING: install it (Debian: apt-get install -y socat) to get the reference "
            "numbers; no socat column.",
            file=sys.stderr,
        )
    try:
        toxiproxy: str | None = find_toxiproxy_server()
    except ToxiproxyServerMissing as missing:
        toxiproxy = None
        print(f"{missing}; no toxiproxy column.", file=sys.stderr)

    results: dict[str, dict[str, float]] = {}
    with process([sys.executable, "-c", ECHO_SERVER]) as echo:
        assert echo.stdout is not None
        echo_port = int(echo.stdout.readline())
        paths: dict[str, int] = {"direct": echo_port}
        with process(
            [sys.executable, "-m", "harness", "proxy", "--port", "0", "--seed", "1"]
        ) as ours:
            assert ours.stdout is not None
            api = json.loads(ours.stdout.readline())["api"]
            paths["ours"] = create_proxy(api, echo_port)
            socat_port = free_port()
            socat_cmd = [
                socat or "socat",
                f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:127.0.0.1:{echo_port},nodelay",
            ]
            with (
                RealToxiproxyServer(toxiproxy) if toxiproxy else _nothing() as real,
                process(socat_cmd) if socat else _nothing() as _,
                process([sys.executable, "-c", TRIO_FLOOR_RELAY, str(echo_port)]) as floor,
            ):
                if real is not None:
                    server = getattr(real, "_process", None)  # (started without _pin_server)
                    if SERVER_CPUS is not None and server is not None:
                        os.sched_setaffinity(server.pid, SERVER_CPUS)
                    paths["toxiproxy"] = create_proxy(real.url, echo_port)
                if socat:
                    wait_connectable(socat_port)
                    paths["socat"] = socat_port
                assert floor.stdout is not None
                paths["trio-min"] = int(floor.stdout.readline())
                latencies = measure_latency(paths, args.rounds)
                for name, port in paths.items():
                    results[name] = {
                        "p50_us": percentile(latencies[name], 0.50) * 1e6,
                        "p99_us": percentile(latencies[name], 0.99) * 1e6,
                        "throughput_MBps": measure_throughput(port, args.megabytes),
                    }

    direct = results["direct"]
    for r in results.values():
        r["added_p50_us"] = r["p50_us"] - direct["p50_us"]
        r["added_p99_us"] = r["p99_us"] - direct["p99_us"]
    print(f"{'path':9} {'p50 µs':>9} {'p99 µs':>9} {'+p50 µs':>9} {'+p99 µs':>9} {'MB/s':>9}")
    for name, r in results.items():
        print(
            f"{name:9} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['added_p50_us']:9.1f} "
            f"{r['added_p99_us']:9.1f} {r['throughput_MBps']:9.1f}"
        )
    summary: dict[str, object] = {
        "results": results, "socat": bool(socat), "toxiproxy": bool(toxiproxy)
    }
    ours_r, floor_r = results["ours"], results["trio-min"]
    floor_ratio = ours_r["added_p50_us"] / max(floor_r["added_p50_us"], 1e-9)
    # (A p99 is one slow round trip in a hundred: on a busy machine a path's p99 can come out
    # below the direct one's, and then there is no ratio to speak of.)
    p99_ratio = (
        round(ours_r["added_p99_us"] / floor_r["added_p99_us"], 2)
        if floor_r["added_p99_us"] > 0 and ours_r["added_p99_us"] > 0
        else None
    )
    summary |= {
        "added_p50_ratio_vs_trio_min": round(floor_ratio, 2),
        "added_p99_ratio_vs_trio_min": p99_ratio,
        "goal_trio_min_met": floor_ratio <= 1.2,
    }
    print(
        f"ours/trio-min: added p50 x{floor_ratio:.2f} (goal <= 1.2), added p99 "
        + (f"x{p99_ratio:.2f}" if p99_ratio is not None else "n/a (below direct's p99)")
    )
    if toxiproxy:
        ours_r, real_r = results["ours"], results["toxiproxy"]
        ratios = {
            "added_p50_ratio_vs_toxiproxy": ours_r["added_p50_us"] / real_r["added_p50_us"],
            "added_p99_ratio_vs_toxiproxy": ours_r["added_p99_us"] / real_r["added_p99_us"],
            "throughput_ratio_vs_toxiproxy": ours_r["throughput_MBps"] / real_r["throughput_MBps"],
        }
        summary |= {key: round(value, 2) for key, value in ratios.items()}
        print(
            f"ours/toxiproxy: added p50 x{ratios['added_p50_ratio_vs_toxiproxy']:.2f}, "
            f"added p99 x{ratios['added_p99_ratio_vs_toxiproxy']:.2f}, "
            f"throughput {ratios['throughput_ratio_vs_toxiproxy']:.0%}"
        )
    if socat:
        ours_r, socat_r = results["ours"], results["socat"]
        added_ratio = ours_r["added_p50_us"] / max(socat_r["added_p50_us"], 1e-9)
        throughput_ratio = ours_r["throughput_MBps"] / socat_r["throughput_MBps"]
        summary |= {
            "added_p50_ratio_vs_socat": round(added_ratio, 2),
            "added_p99_ratio_vs_socat": round(
                ours_r["added_p99_us"] / max(socat_r["added_p99_us"], 1e-9), 2
            ),
            "throughput_ratio_vs_socat": round(throughput_ratio, 2),
            "goal_latency_met": added_ratio <= 2.0,
            "goal_throughput_met": throughput_ratio >= 0.30,
        }
        print(
            f"ours/socat: added p50 x{added_ratio:.2f} (goal <= 2), "
            f"added p99 x{summary['added_p99_ratio_vs_socat']:.2f}, "
            f"throughput {throughput_ratio:.0%} (goal >= 30%)"
        )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


@contextmanager
def _nothing() -> Iterator[Any]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
