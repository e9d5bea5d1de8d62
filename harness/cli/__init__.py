"""`gateway-harness` command line: every command's module lives in this package.

Each command module defines ``add_arguments(parser)`` and ``main(args) -> int`` (or
``add_NAME_arguments`` / ``NAME_main`` when one module holds several commands). Modules only
parse, call the library and print. Flags shared by several commands, and the old spellings still
accepted for one release, are in ``harness.cli.common``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway_common.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("harness.cli.serve", "run the fake Discord gateway and its REST surface"),
    "proxy": ("harness.cli.proxy", "run the Toxiproxy-compatible fault proxy"),
    "client": ("harness.cli.client", "run the trio reference gateway client"),
    "list": ("harness.cli.run", "list scenarios with one-line descriptions"),
    "run": ("harness.cli.run", "run scenarios and judge them"),
    "rejudge": ("harness.cli.run", "re-judge a recorded trace without re-running"),
    "fuzz": ("harness.cli.fuzz", "run a Hypothesis campaign of generated disconnect schedules"),
    "replay": ("harness.cli.fuzz", "replay a scenario file exactly and print its transcript hash"),
    "validate": ("harness.cli.validate", "validate third-party gateway clients"),
    "storm": ("harness.cli.storm", "run an identify storm: many shards against one gateway, "
                                   "in simulation"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, that command's flags alone (the others' modules
    are not imported: `gateway-harness client`, started once per wall-clock run, starts in a
    third of the time without the world, the fuzzer and the reports)."""
    parser = argparse.ArgumentParser(
        prog="gateway-harness",
        description="Network fault-injection test harness for Discord gateway clients.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(p)
        runner = getattr(module, f"{name}_main", None) or module.main
        p.set_defaults(_main=runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
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
