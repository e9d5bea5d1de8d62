"""`gateway-harness storm`: the fleet storm (``harness.fleet``), many reference-client shards
against one fake gateway in simulation, with waves of op 7, close 4009 and a gateway restart."""

from __future__ import annotations

import argparse
import json

from gateway_common.errors import UserError
from harness.fleet import WAVES, FleetConfig, run_fleet


class _JsonFile(argparse.Action):
    """``--json FILE``; the old bare ``--json`` (the report as JSON on stdout) warns."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from harness.cli.common import warn_deprecated

        if values is None:
            warn_deprecated(parser.prog, "--json without FILE (JSON on stdout)", "--json FILE")
            namespace.json_stdout = True
        else:
            namespace.json = values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--session-start-total", type=int, default=None)
    p.add_argument("--waves", default=",".join(WAVES),
                   help=f"comma-separated waves from {', '.join(WAVES)} ('' for none)")
    p.add_argument("--uncoordinated", action="store_true",
                   help="no shared identify queue: each shard only spaces its own IDENTIFYs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", nargs="?", const=None, action=_JsonFile,
                   help="also write the report as JSON into FILE")
    p.set_defaults(json_stdout=False)


def main(args: argparse.Namespace) -> int:
    config = FleetConfig(
        shards=args.shards, max_concurrency=args.max_concurrency,
        session_start_total=args.session_start_total,
        waves=tuple(w for w in args.waves.split(",") if w),
        coordinated=not args.uncoordinated, seed=args.seed,
    )
    report = run_fleet(config)
    if args.json_stdout:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(report.text())
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_json(), f, indent=2)
        except OSError as exc:
            raise UserError(f"--json: cannot write {args.json}: {exc.strerror}") from None
    return 0
