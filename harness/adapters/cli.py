"""`gateway-harness validate`: run third-party clients through a scenario suite, judge them and
print a conformance matrix (clients x scenarios).

    gateway-harness validate discord.py                  # a built-in client, by name
    gateway-harness validate hikari@2.6.0 nextcord       # another version; several clients
    gateway-harness validate --all                       # every built-in client
    gateway-harness validate --command 'node bot.js' --name mybot   # your own client

Each client runs in wall-clock mode behind the fault proxy, over wss with the generated CA
(every scenario is switched to TLS unless ``--no-tls``), once per scenario, under the adapter
contract (``harness/adapters/contract.py``). The default suite is ``DEFAULT_SUITE`` below plus
the files in ``validation/``; ``--suite PATH`` (files or folders, repeatable) replaces it.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from gateway_common.errors import UserError
from harness.adapters.contract import Adapter
from harness.adapters.registry import ADAPTERS, get_spec
from harness.cli_run import DEFAULT_RESULTS_DIR
from harness.report.matrix import matrix_html, matrix_markdown
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario, load_scenarios
from harness.world import RunOptions

VALIDATION_DIR = Path(__file__).parent / "validation"

# The default validation suite: built-in scenarios (by name) plus the files in VALIDATION_DIR.
DEFAULT_SUITE = (
    "baseline-steady",                 # log in, heartbeat, receive dispatches
    "f15-resume-stays-up",             # a TCP reset mid-session, then RESUME
    "f11-ack-blackhole",               # ACKs withheld while dispatches continue (zombie)
    "seed-tls-reset-first-connect",    # the very first connect reset in its TLS handshake
    "seed-tls-reset-on-resume",        # the seed: the reconnect reset during its TLS handshake
    "f16-op7-close-code",              # op 7 Reconnect
    "f01-invalid-session-mid-session", # op 9 d=false (op 9 d=true: validation/op9-resumable)
    "close-4000-resume",               # a non-fatal close code
    "close-4004-fatal",                # a fatal close code
    "gateway-down-2s",                 # the gateway down for a while
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clients", nargs="*", metavar="CLIENT",
                   help=f"built-in clients, NAME or NAME@VERSION: {', '.join(ADAPTERS)}; "
                        "'reference' adds our own client for comparison")
    p.add_argument("--all", action="store_true", help="every built-in client")
    # dest differs from "command": the top-level parser keeps the subcommand name there
    p.add_argument("--command", dest="client_command", metavar="CMD",
                   help="your own client: a command line run under the contract")
    p.add_argument("--name", help="the name --command's client gets in results")
    p.add_argument("--ignores-hello-interval", action="store_true",
                   help="--command's client beats on its own clock: give it the real 41.25 s")
    p.add_argument("--suite", action="append", default=[], metavar="PATH",
                   help="scenario files or folders (default: the built-in validation suite)")
    p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
    p.add_argument("--no-tls", action="store_true",
                   help="keep each scenario's own tls setting (default: wss/https for every run)")
    p.add_argument("--seed", type=int, default=0, help="the run seed (a scenario's own seed wins)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    p.add_argument("--json", metavar="FILE", help="results as JSON, each entry with its client")
    p.add_argument("--markdown", metavar="FILE", help="the conformance matrix as Markdown")
    p.add_argument("--report", metavar="DIR",
                   help="traces, report.html (evidence, timelines) and matrix.html into DIR")
    p.add_argument("--junit", metavar="FILE", help="JUnit XML, one testcase per run")
    p.add_argument("--clients-dir", metavar="DIR",
                   help="where built-in clients are installed "
                        "(default: $GATEWAY_HARNESS_CLIENTS_DIR or .clients/)")
    p.add_argument("--toxiproxy-url",
                   help="use a real Toxiproxy server instead of the embedded one")


def main(args: argparse.Namespace) -> int:
    from harness.cli_run import report, run_many

    if args.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {args.jobs}")
    # "reference" runs our own client beside third-party ones (side by side in one report).
    with_reference = "reference" in args.clients
    args.clients = [c for c in args.clients if c != "reference"]
    only_reference = with_reference and not (args.clients or args.all or args.client_command)
    adapters = [] if only_reference else _adapters(args)  # _adapters: "name a client" error
    scenarios = _suite(args.suite, args.tag)
    if not args.no_tls:  # real clients meet the gateway as in production: over TLS
        scenarios = [dataclasses.replace(s, gateway=dataclasses.replace(s.gateway, tls=True))
                     for s in scenarios]
    out_dir = Path(args.report) if args.report else DEFAULT_RESULTS_DIR  # traces are kept
    results: list[ScenarioResult] = []
    for adapter in adapters:
        versions = ", ".join(f"{k} {v}" for k, v in adapter.versions.items())
        print(f"validating {adapter.name}" + (f" ({versions})" if versions else "")
              + f" against {len(scenarios)} scenario(s)", file=sys.stderr, flush=True)
        options = RunOptions(mode="real", client=adapter.name, seed=args.seed, out_dir=out_dir,
                             toxiproxy_url=args.toxiproxy_url, adapter=adapter)
        results.extend(run_many(scenarios, options, args.jobs))
    if with_reference:
        print(f"validating reference (gateway-harness) against {len(scenarios)} scenario(s)",
              file=sys.stderr, flush=True)
        options = RunOptions(mode="real", client="reference", seed=args.seed, out_dir=out_dir,
                             toxiproxy_url=args.toxiproxy_url)
        results.extend(run_many(scenarios, options, args.jobs))
    args.mode = "real"
    args.client = ",".join([a.name for a in adapters] + (["reference"] if with_reference else []))
    code = report(results, args, title="gateway-harness validate")
    print()
    print(matrix_markdown(results), end="")
    if args.markdown:
        _write(args.markdown, matrix_markdown(results), "--markdown")
    if out_dir is not None:
        _write(out_dir / "matrix.html", matrix_html(results), "--report")
        print(f"matrix: {out_dir / 'matrix.html'}")
    return code


def _adapters(args: argparse.Namespace) -> list[Adapter]:
    names: list[str] = list(args.clients)
    if args.all:
        names += [n for n in ADAPTERS if n not in names]
    if args.name and not args.client_command:
        raise UserError("--name: only applies to --command")
    if not names and not args.client_command:
        raise UserError("name a client (e.g. discord.py), or use --all or --command 'CMD'")
    clients_dir = Path(args.clients_dir).resolve() if args.clients_dir else None
    adapters: list[Adapter] = []
    for name_or_pin in names:
        name, _, version = name_or_pin.partition("@")
        spec = get_spec(name)
        no_node = shutil.which("node") is None or shutil.which("npm") is None
        if spec.ecosystem == "npm" and no_node:
            if args.all and name not in args.clients:
                print(f"skipping {name}: Node.js/npm not found on PATH", file=sys.stderr)
                continue
        if not spec.is_installed(version or None, clients_dir):
            where = spec.install_dir(version or None, clients_dir)
            print(f"installing {spec.requirement(version or None)} into {where} (first use)",
                  file=sys.stderr, flush=True)
        adapters.append(spec.install(version or None, clients_dir))
    if args.client_command:
        adapters.append(Adapter.from_command(
            args.client_command, args.name, honours_hello_interval=not args.ignores_hello_interval))
    return adapters


def _suite(paths: list[str], tags: list[str]) -> list[Scenario]:
    if paths:
        scenarios = load_scenarios(paths, tags)
    else:
        builtin = builtin_scenarios_dir()
        scenarios = []
        for name in DEFAULT_SUITE:
            path = builtin / f"{name}.toml"
            if not path.exists():
                raise UserError(f"validation suite: built-in scenario {name!r} not found in "
                                f"{builtin}")
            scenarios.append(load_scenario(path))
        scenarios += load_scenarios([VALIDATION_DIR], [])
        if tags:
            scenarios = [s for s in scenarios if set(tags) & set(s.tags)]
    if not scenarios:
        raise UserError("no scenarios matched the given --suite paths and --tag filters")
    return scenarios


def _write(path: str | Path, text: str, flag: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{flag}: cannot write {path}: {exc.strerror}") from None
