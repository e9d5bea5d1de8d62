"""`gateway-harness` command line: one subcommand per module, each owning its own flags.

Each subcommand module defines ``add_arguments(parser)`` and ``main(args) -> int``. Modules are
imported lazily by name so one broken or missing subcommand never takes the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway_common.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("fake_gateway.cli_serve", "run the fake Discord gateway and its REST surface"),
    "proxy": ("harness.faults.cli_proxy", "run the Toxiproxy-compatible fault proxy"),
    "client": ("harness.client.cli", "run the trio reference gateway client"),
    "list": ("harness.cli_run", "list scenarios with one-line descriptions"),
    "run": ("harness.cli_run", "run scenarios and judge them"),
    "rejudge": ("harness.cli_run", "re-judge a recorded trace without re-running"),
    "fuzz": ("harness.cli_fuzz", "run a Hypothesis campaign of generated disconnect schedules"),
    "replay": ("harness.cli_fuzz", "replay a scenario file exactly and print its transcript hash"),
    "validate": ("harness.adapters.cli", "validate third-party gateway clients"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway-harness",
        description="Network fault-injection test harness for Discord gateway clients.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(p)
        runner = getattr(module, f"{name}_main", None) or module.main
        p.set_defaults(_main=runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except UserError as exc:
        print(f"gateway-harness {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gateway-harness {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
