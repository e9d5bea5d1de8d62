"""`gateway-harness serve`: run the fake gateway and its REST surface until interrupted.

Prints exactly one JSON line on stdout once listening (gateway_url, advertised_url,
resume_gateway_url, rest_url (the REST base ending in /api/v10; api_url is a deprecated alias),
control_url, control_token (the endpoint's `Authorization: Bearer` token), token, and ca_file
with --tls on).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
from functools import partial
from typing import IO, Any

import trio

from fake_gateway.config import SERVE_FLAGS, GatewayConfig
from fake_gateway.opened import open_gateway
from fake_gateway.server import FakeGateway, tune_gc_for_a_server_process
from fake_gateway.tls import make_tls
from gateway_common.errors import UserError
from gateway_common.trace import Trace
from harness.cli.common import add_tls_argument, check_loopback_host


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="discovery WebSocket port (0: any)")
    parser.add_argument("--resume-port", type=int, default=0, help="resume WebSocket port")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (0: any)")
    add_tls_argument(parser, default="off", choices=("on", "off"), bare_was_on=True,
                     help="on: wss/https with a generated CA")
    parser.add_argument("--tls-dir", help="where to write ca.pem and server.pem (default: temp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", metavar="FILE", help="write the trace here as JSON lines")
    # The gateway's knobs, from GatewayConfig's table (a flag left out keeps the field default).
    for flag, k in SERVE_FLAGS.items():
        about = k.knob.help.replace("%", "%%")  # argparse formats help with %
        if k.type is bool:  # a switch that turns the default off (or on)
            state = "on, this flag turns it off" if k.default else "off, this flag turns it on"
            parser.add_argument(flag, dest=k.name, action="store_const", const=not k.default,
                                help=f"{about} ({state})")
        else:
            shown = "" if k.default is None or k.name == "token" else f" (default: {k.default})"
            parser.add_argument(flag, dest=k.name, type=k.type, help=about + shown)


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    check_loopback_host(args.host)
    for flag, value in (("--port", args.port), ("--resume-port", args.resume_port),
                        ("--rest-port", args.rest_port)):
        if not 0 <= value <= 65535:
            raise UserError(f"{flag}: {value} is not a TCP port")
    given: dict[str, Any] = {}
    for flag, k in SERVE_FLAGS.items():
        value = getattr(args, k.name)
        if value is None:
            continue
        problem = k.problem(value)
        if problem is not None:
            raise UserError(f"{flag}: {problem}")
        given[k.name] = value.rstrip("/") if k.knob.bare_url else value
    return GatewayConfig(**given)


async def _serve(args: argparse.Namespace, config: GatewayConfig, sink: IO[str] | None) -> None:
    trace = Trace(clock=trio.current_time, sink=sink, keep=False)
    gateway = FakeGateway(config, trace, random.Random(args.seed))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                urls = await nursery.start(partial(
                    open_gateway, gateway, host=args.host, port=args.port,
                    resume_port=args.resume_port, rest_port=args.rest_port,
                    tls=make_tls(args.tls_dir) if args.tls == "on" else None))
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
                "control_token": urls.gateway.control_token,  # Authorization: Bearer ...
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
        with tempfile.TemporaryDirectory(prefix="fake-gateway-tls-") as tls_dir:
            # Without --tls-dir the CA and the server's private key live only as long as serve.
            args.tls_dir = args.tls_dir or tls_dir
            trio.run(_serve, args, config, sink)
    except BaseExceptionGroup as group:  # a UserError raised inside the nursery: one line
        user, _ = group.split(UserError)
        if user is None:
            raise
        leaf: BaseException = user
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
    finally:
        if sink is not None:
            sink.close()
    print("gateway-harness serve: stopped", file=sys.stderr)
    return 0
