"""`gateway-harness serve`: run the fake gateway and its REST surface until interrupted.

Prints exactly one JSON line on stdout once listening (gateway_url, advertised_url,
resume_gateway_url, rest_url (the REST base ending in /api/v10; api_url is a deprecated alias),
control_url, token, and ca_file with --tls).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import signal
import sys
import urllib.parse
from functools import partial
from typing import IO

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import open_gateway
from fake_gateway.server import FakeGateway, make_tls, tune_gc_for_a_server_process
from gateway_common.errors import UserError
from gateway_common.trace import Trace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="discovery WebSocket port (0: any)")
    parser.add_argument("--resume-port", type=int, default=0, help="resume WebSocket port")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (0: any)")
    parser.add_argument("--tls", action="store_true", help="wss/https with a generated CA")
    parser.add_argument("--tls-dir", help="where to write ca.pem and server.pem (default: temp)")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=41250)
    parser.add_argument("--dispatch-rate", type=float, default=0.0,
                        help="synthetic dispatches per second (0: none)")
    parser.add_argument("--guilds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", metavar="FILE", help="write the trace here as JSON lines")
    parser.add_argument("--advertise-url", help="URL /gateway and /gateway/bot announce")
    parser.add_argument("--resume-url", help="resume_gateway_url READY announces")
    parser.add_argument("--token", help="the bot token IDENTIFY must carry")
    parser.add_argument("--max-concurrency", type=int, default=1)
    parser.add_argument("--session-ttl", type=float, default=120.0,
                        help="seconds a dropped session stays resumable")
    parser.add_argument("--no-heartbeat-deadline", action="store_true",
                        help="never close clients that stop heartbeating")


def _check_url(flag: str, value: str | None) -> None:
    if value is None:
        return
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UserError(f"{flag}: expected ws://host:port or wss://host:port, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"{flag}: must be bare (no path or query), got {value!r}")


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            raise UserError(f"--host: {args.host} is not a loopback address (loopback only)")
    except ValueError:
        if args.host != "localhost":
            raise UserError(f"--host: {args.host!r} is not an IP address") from None
    for flag, value in (("--port", args.port), ("--resume-port", args.resume_port),
                        ("--rest-port", args.rest_port)):
        if not 0 <= value <= 65535:
            raise UserError(f"{flag}: {value} is not a TCP port")
    if args.heartbeat_interval_ms <= 0:
        raise UserError("--heartbeat-interval-ms: must be positive")
    if args.dispatch_rate < 0:
        raise UserError("--dispatch-rate: must not be negative")
    if not 0 <= args.guilds <= 100_000:
        raise UserError("--guilds: must be between 0 and 100000")
    if args.max_concurrency < 1:
        raise UserError("--max-concurrency: must be at least 1")
    _check_url("--advertise-url", args.advertise_url)
    _check_url("--resume-url", args.resume_url)
    config = GatewayConfig(
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        dispatch_rate=args.dispatch_rate,
        guilds=args.guilds,
        advertise_url=args.advertise_url.rstrip("/") if args.advertise_url else None,
        resume_url=args.resume_url.rstrip("/") if args.resume_url else None,
        max_concurrency=args.max_concurrency,
        session_ttl=args.session_ttl,
        heartbeat_deadline=not args.no_heartbeat_deadline,
    )
    if args.token:
        config.token = args.token
    return config


async def _serve(args: argparse.Namespace, config: GatewayConfig, sink: IO[str] | None) -> None:
    trace = Trace(clock=trio.current_time, sink=sink)
    gateway = FakeGateway(config, trace, random.Random(args.seed))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                urls = await nursery.start(partial(
                    open_gateway, gateway, host=args.host, port=args.port,
                    resume_port=args.resume_port, rest_port=args.rest_port,
                    tls=make_tls(args.tls_dir) if args.tls else None))
            except OSError as exc:
                raise UserError(f"cannot listen on {args.host}: {exc.strerror or exc}") from None
            line = {
                "gateway_url": urls.gateway_url,
                "resume_listener_url": urls.resume_listener_url,
                "advertised_url": urls.advertised_url,
                "resume_gateway_url": urls.resume_gateway_url,
                "rest_url": urls.rest_url,  # the /api/v10 base, as clients take it
                "api_url": urls.rest_url,  # deprecated: the old name of the same base
                "control_url": urls.control_url,
                "token": config.token,
            }
            if urls.ca_file:
                line["ca_file"] = urls.ca_file
            tune_gc_for_a_server_process()
            print(json.dumps(line), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    sink = None
    if args.trace:
        try:
            sink = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UserError(f"--trace: cannot write {args.trace}: {exc.strerror}") from None
    try:
        trio.run(_serve, args, config, sink)
    finally:
        if sink is not None:
            sink.close()
    print("gateway-harness serve: stopped", file=sys.stderr)
    return 0
