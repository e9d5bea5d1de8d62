"""`gateway-harness proxy`: the Toxiproxy-compatible fault proxy as a server.

Serves the Toxiproxy 2.x HTTP API (default 127.0.0.1:8474). ``--config FILE`` is a JSON array in
``/populate`` format, loaded before the API listens (like ``toxiproxy-server -config``, except
that a bad file is an error here, not a log line). ``--seed N`` seeds every toxic's randomness
(jitter, toxicity rolls, slicer sizes); without it a seed is drawn and printed so a run can be
repeated. Once listening it prints one JSON line, e.g.
``{"event":"listening","api":"http://127.0.0.1:8474","host":"127.0.0.1","port":8474,"seed":1,
"proxies":["redis"]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

import trio

from gateway_common.errors import UserError
from harness.cli.common import check_loopback_host
from harness.faults.api import TOXIPROXY_VERSION, BadBody, proxy_fields, serve_api, spec_from
from harness.faults.proxy import ProxyCollection, ProxyError, ProxySpec, TcpTransport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="API bind host, loopback only (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="API port (default 8474; 0 = any)")
    parser.add_argument(
        "--config", metavar="FILE", help="JSON array of proxies to create (populate format)"
    )
    parser.add_argument("--seed", type=int, help="seed for toxic randomness (default: random)")
    parser.add_argument(
        "--proxy-metrics",
        action="store_true",
        help="serve Toxiproxy's byte counters at /metrics (Prometheus text)",
    )
    parser.add_argument(
        "--version", action="version", version=f"toxiproxy-server version {TOXIPROXY_VERSION}"
    )


def load_config(path: str) -> list[ProxySpec]:
    """Read a populate-format file; a bad file raises UserError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            entries: Any = json.load(f)
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--config {path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(entries, list):
        raise UserError(f"--config {path}: expected a JSON array of proxies")
    specs = []
    for number, entry in enumerate(entries, 1):
        try:
            specs.append(spec_from(proxy_fields(entry)))
        except BadBody as exc:
            raise UserError(f"--config {path}: proxy {number}: {exc}") from None
    return specs


def _first_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_os_error(inner)
            if found is not None:
                return found
    return None


async def run_server(
    host: str, port: int, seed: int, specs: list[ProxySpec], source: str, metrics: bool = False
) -> None:
    async with trio.open_nursery() as nursery:
        collection = ProxyCollection(nursery, TcpTransport(), seed, metrics=metrics)
        try:
            proxies = await collection.populate(specs)
        except ProxyError as exc:
            raise UserError(f"--config {source}: {exc.message}") from None
        try:
            bound = await nursery.start(serve_api, collection, host, port)
        except BaseException as exc:
            error = _first_os_error(exc)
            if error is None:
                raise
            raise UserError(
                f"--host/--port {host}:{port}: cannot listen: {error.strerror}"
            ) from None
        line = {
            "event": "listening",
            "api": f"http://{host}:{bound}",
            "host": host,
            "port": bound,
            "seed": seed,
            "proxies": [p.name for p in proxies],
        }
        print(json.dumps(line, separators=(",", ":")), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
        with trio.CancelScope(shield=True):
            await collection.close()
        nursery.cancel_scope.cancel()


def main(args: argparse.Namespace) -> int:
    specs = load_config(args.config) if args.config else []
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    check_loopback_host(args.host)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be 0..65535")
    try:
        trio.run(
            run_server, args.host, args.port, seed, specs, args.config or "", args.proxy_metrics
        )
    except BaseExceptionGroup as group:
        user_errors = [e for e in group.exceptions if isinstance(e, UserError)]
        if user_errors:
            raise user_errors[0] from None
        raise
    print("gateway-harness proxy: stopped", file=sys.stderr)
    return 0
