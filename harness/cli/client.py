"""`gateway-harness client`: the reference client as a process, judged like any third-party client.

Flags default to the adapter-contract variables (GATEWAY_HARNESS_GATEWAY_URL, _REST_URL, _TOKEN,
_CA_FILE, _DELIVERY_LOG), so the harness can run it exactly as it runs discord.py or discord.js.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from gateway_common.errors import UserError
from harness.client.core import ClientConfig, StateChanged
from harness.client.driver import CAFileError, GatewayClient, tls_context_for

if TYPE_CHECKING:
    from harness.client.mutants import CoreFactory

ENV = {
    "gateway_url": "GATEWAY_HARNESS_GATEWAY_URL",
    "rest_url": "GATEWAY_HARNESS_REST_URL",
    "token": "GATEWAY_HARNESS_TOKEN",
    "ca_file": "GATEWAY_HARNESS_CA_FILE",
    "delivery_log": "GATEWAY_HARNESS_DELIVERY_LOG",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def env_help(text: str, key: str) -> str:
        return f"{text} (default: ${ENV[key]})"

    parser.add_argument("--gateway-url", metavar="URL",
                        help=env_help("discovery gateway URL, ws:// or wss://; if unset, the "
                                      "one /gateway/bot returns", "gateway_url"))
    parser.add_argument("--rest-url", metavar="URL",
                        help=env_help("REST base ending in /api/v10 (an origin like "
                                      "https://127.0.0.1:PORT means its /api/v10 base), for "
                                      "/gateway/bot (the identify budget)", "rest_url"))
    parser.add_argument("--token", metavar="T", help=env_help("bot token", "token"))
    parser.add_argument("--ca-file", metavar="F",
                        help=env_help("PEM file of the CA to trust for wss/https", "ca_file"))
    parser.add_argument("--delivery-log", metavar="FILE",
                        help=env_help("append one JSON line per dispatch delivered: "
                                      '{"s","t","session_id","ts"}', "delivery_log"))
    parser.add_argument("--show-state", action="store_true",
                        help="print every connection-state transition (time, state, reason) "
                             "to stderr as it happens")
    parser.add_argument("--intents", type=int, default=513, help="IDENTIFY intents (513)")
    parser.add_argument("--compress", choices=["zlib-stream", "zstd-stream", "none"],
                        default="zlib-stream", help="transport compression (zlib-stream)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for heartbeat jitter and backoff (default: random)")
    parser.add_argument("--run-for", type=float, default=None, metavar="SECONDS",
                        help="stop (close 1000) after this long; default: run until killed")
    parser.add_argument("--mutant", metavar="NAME",
                        help="run a planted-bug mutant instead of the reference client "
                             "(`gateway-harness fuzz --list` names them)")


def _setting(args: argparse.Namespace, key: str) -> str | None:
    value = getattr(args, key)
    if value:
        return str(value)
    return os.environ.get(ENV[key]) or None


def config_from_args(args: argparse.Namespace) -> tuple[ClientConfig, str | None]:
    """The client config and the delivery-log path, or a UserError naming the flag."""
    token = _setting(args, "token")
    if not token:
        raise UserError(f"--token: required (or set {ENV['token']})")
    gateway_url = _setting(args, "gateway_url")
    rest_url = _setting(args, "rest_url")
    if gateway_url is None and rest_url is None:
        raise UserError(f"--gateway-url or --rest-url: at least one is required "
                        f"(or set {ENV['gateway_url']} / {ENV['rest_url']})")
    if gateway_url is not None and not gateway_url.startswith(("ws://", "wss://")):
        raise UserError(f"--gateway-url: {gateway_url!r} is not a ws:// or wss:// URL")
    if rest_url is not None and not rest_url.startswith(("http://", "https://")):
        raise UserError(f"--rest-url: {rest_url!r} is not an http:// or https:// URL")
    ca_file = _setting(args, "ca_file")
    if ca_file is not None:
        try:
            tls_context_for(ca_file)  # said at start-up, not as a failed connect later
        except CAFileError as exc:
            raise UserError(f"--ca-file: {exc.path}: {exc.why}") from None
    if args.run_for is not None and args.run_for <= 0:
        raise UserError("--run-for: must be a positive number of seconds")
    compress = None if args.compress == "none" else args.compress
    config = ClientConfig(token=token, gateway_url=gateway_url, rest_url=rest_url,
                          ca_file=ca_file, intents=args.intents, compress=compress)
    return config, _setting(args, "delivery_log")


def main(args: argparse.Namespace) -> int:
    config, delivery_log = config_from_args(args)
    core_factory = None
    if args.mutant is not None:
        from harness.client.mutants import MUTANTS

        if args.mutant not in MUTANTS:
            raise UserError(f"--mutant: unknown mutant {args.mutant!r}; known: "
                            f"{', '.join(MUTANTS)}")
        core_factory = MUTANTS[args.mutant]
    if delivery_log is not None:
        try:
            open(delivery_log, "a", encoding="utf-8").close()
        except OSError as exc:
            raise UserError(f"--delivery-log: {delivery_log}: {exc.strerror}") from None
    rng = random.Random(args.seed)
    client = trio.run(_run, config, delivery_log, rng, args.show_state, args.run_for,
                      core_factory, args.mutant)
    stop = client.stop_info
    if stop is not None and stop.fatal:
        if client.config_error is None:  # else the one line saying why is out already
            print(f"gateway-harness client: stopped: {stop.reason}", file=sys.stderr)
        return 1
    return 0


async def _run(config: ClientConfig, delivery_log: str | None, rng: random.Random,
               show_state: bool, run_for: float | None, core_factory: CoreFactory | None = None,
               mutant: str | None = None) -> GatewayClient:
    extra: dict[str, Any] = {} if core_factory is None else {"core_factory": core_factory}
    client = GatewayClient(config, rng=rng, delivery_log=delivery_log, delivery_clock=time.time,
                           **extra)
    # A configuration error is said at once, in one line, even without --show-state.
    client.on_config_error(lambda message: print(f"gateway-harness client: {message}",
                                                 file=sys.stderr, flush=True))
    if show_state:
        started = trio.current_time()

        def show(change: StateChanged) -> None:
            print(f"[{change.ts - started:9.3f}s] {change.state:<12} {change.reason}",
                  file=sys.stderr, flush=True)

        client.on_state(show)
    # The adapter contract's version line (the harness puts it into results and bug bundles).
    lib = "gateway-harness-reference" if mutant is None else f"gateway-harness-mutant:{mutant}"
    print(json.dumps({"lib": lib, "version": _version(),
                      "runtime": f"python {platform.python_version()}"}), flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, client)
        if run_for is not None:
            nursery.start_soon(_stop_after, client, run_for)
        await client.run()
        nursery.cancel_scope.cancel()
    print(json.dumps({"client_counters": client.counters()}), file=sys.stderr, flush=True)
    return client


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gateway-harness")
    except PackageNotFoundError:
        return "unknown"


async def _stop_on_signal(client: GatewayClient) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            client.stop("signal received")
            return


async def _stop_after(client: GatewayClient, seconds: float) -> None:
    await trio.sleep(seconds)
    client.stop(f"--run-for {seconds:g} s elapsed")
