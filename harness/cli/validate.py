"""`gateway-harness validate`: run third-party clients through a scenario suite, judge them and
print a conformance matrix (clients x scenarios).

    gateway-harness validate --client discord.py               # a built-in client, by name
    gateway-harness validate --client hikari@2.6.0 --client nextcord   # another version; several
    gateway-harness validate --all                             # every built-in client
    gateway-harness validate --command 'node bot.js' --name mybot      # your own client
    gateway-harness validate --app 'python bot.py'         # your unmodified bot (app mode)

Each client runs in wall-clock mode behind the fault proxy, over wss with the generated CA
(every scenario is switched to TLS unless ``--tls`` says otherwise), once per scenario, under the
adapter contract (``harness/adapters/contract.py``). The default suite is
``harness.adapters.suite``; scenario paths (files or folders) replace it.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway_common.errors import UserError
from harness.adapters.app.mode import app_adapter, app_report, is_app
from harness.adapters.contract import Adapter
from harness.adapters.registry import ADAPTERS, get_spec
from harness.adapters.suite import validation_suite
from harness.cli.common import (
    Deprecated,
    add_out_argument,
    add_startup_timeout_argument,
    add_tls_argument,
    report,
    tls_setting,
    warn_deprecated,
)
from harness.report.matrix import conformance_matrix, matrix_html, matrix_markdown
from harness.report.model import ScenarioResult
from harness.runner import default_results_dir, run_many
from harness.world import RunOptions

REFERENCE = "reference"  # our own client, run beside third-party ones for comparison
# Exit code when no cell failed but some are flaky (k of N runs failed): not a pass (a run showed
# a failure, with its evidence), yet not a failure that reproduces every time.
EXIT_FLAKY = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="scenario files or folders (default: the built-in validation suite)")
    p.add_argument("--client", dest="clients", action="append", default=[],
                   metavar="NAME[@VERSION]",
                   help=f"a built-in client (repeatable): {', '.join(ADAPTERS)}; "
                        f"'{REFERENCE}' adds our own client for comparison")
    p.add_argument("--all", action="store_true", help="every built-in client")
    # dest differs from "command": the top-level parser keeps the subcommand name there
    p.add_argument("--command", dest="client_command", metavar="CMD",
                   help="your own client: a command line run under the contract")
    p.add_argument("--app", metavar="CMD",
                   help="your unmodified bot or app (Python or Node.js), run with Discord's "
                        "hostnames redirected to the harness and its own token")
    p.add_argument("--name", help="the name --command's or --app's client gets in results")
    p.add_argument("--ignores-hello-interval", action="store_true",
                   help="--command's or --app's client beats on its own clock: give it the real "
                        "41.25 s")
    p.add_argument("--suite", dest="old_suite", action="append", default=[],
                   help=argparse.SUPPRESS)  # the old spelling of PATH
    p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
    add_tls_argument(p, default="on",
                     help="on: wss/https for every run; off: ws/http for every run; scenario: "
                          "each scenario's own tls setting")
    p.add_argument("--no-tls", dest="tls", action=Deprecated, new="--tls scenario",
                   value="scenario")
    p.add_argument("--seed", type=int, default=0, help="the run seed (a scenario's own seed wins)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every scenario N times per client (the same seed): a cell passes "
                        "if every run passed, fails if none did, and is flaky otherwise")
    add_startup_timeout_argument(p)
    p.add_argument("--json", metavar="FILE", help="results as JSON, each entry with its client")
    p.add_argument("--markdown", metavar="FILE", help="the conformance matrix as Markdown")
    add_out_argument(p, "traces, report.html (evidence, timelines) and matrix.html into DIR "
                        f"(default: traces only, into {default_results_dir()}/)", old="--report")
    p.add_argument("--junit", metavar="FILE", help="JUnit XML, one testcase per run")
    p.add_argument("--clients-dir", metavar="DIR",
                   help="where built-in clients are installed "
                        "(default: $GATEWAY_HARNESS_CLIENTS_DIR or .clients/)")
    p.add_argument("--toxiproxy-url",
                   help="use a real Toxiproxy server instead of the embedded one")


def main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {args.jobs}")
    if args.repeat < 1:
        raise UserError(f"--repeat: must be at least 1, got {args.repeat}")
    paths, named = _old_positional_clients(args.paths)
    if args.old_suite:
        warn_deprecated("gateway-harness validate", "--suite PATH", "PATH (positional)")
        paths += args.old_suite
    clients = [*args.clients, *named]
    # "reference" runs our own client beside third-party ones (side by side in one report).
    with_reference = REFERENCE in clients
    clients = [c for c in clients if c != REFERENCE]
    only_reference = with_reference and not (clients or args.all or args.client_command
                                             or args.app)
    adapters = [] if only_reference else _adapters(  # _adapters: "name a client" error
        clients, all_builtin=args.all, command=args.client_command, name=args.name,
        ignores_hello_interval=args.ignores_hello_interval, clients_dir=args.clients_dir,
        app=args.app)
    if args.app and args.tls == "off":
        raise UserError("--tls off: --app runs the app against Discord's https/wss URLs, "
                        "always over TLS")
    scenarios = validation_suite(paths, args.tag)
    tls = tls_setting(args.tls)
    if tls is not None:  # real clients meet the gateway as in production: over TLS
        scenarios = [dataclasses.replace(s, gateway=dataclasses.replace(s.gateway, tls=tls))
                     for s in scenarios]
    out_dir = Path(args.out) if args.out else default_results_dir()  # traces are kept
    results: list[ScenarioResult] = []
    times = f", {args.repeat} times each" if args.repeat > 1 else ""
    for adapter in adapters:
        versions = ", ".join(f"{k} {v}" for k, v in adapter.versions.items())
        print(f"validating {adapter.name}" + (f" ({versions})" if versions else "")
              + f" against {len(scenarios)} scenario(s){times}", file=sys.stderr, flush=True)
        options = RunOptions(mode="real", client=adapter.name, seed=args.seed, out_dir=out_dir,
                             toxiproxy_url=args.toxiproxy_url, adapter=adapter,
                             startup_timeout=args.startup_timeout)
        results.extend(run_many(scenarios, options, args.jobs, repeat=args.repeat))
    if with_reference:
        print(f"validating reference (gateway-harness) against {len(scenarios)} scenario(s)"
              f"{times}", file=sys.stderr, flush=True)
        options = RunOptions(mode="real", client=REFERENCE, seed=args.seed, out_dir=out_dir,
                             toxiproxy_url=args.toxiproxy_url,
                             startup_timeout=args.startup_timeout)
        results.extend(run_many(scenarios, options, args.jobs, repeat=args.repeat))
    client = ",".join([a.name for a in adapters] + ([REFERENCE] if with_reference else []))
    # The exit code is the matrix's, judged per cell (a flaky cell's failing runs do not make a
    # failed cell), not report()'s per run.
    report(results, title="gateway-harness validate",
           meta={"mode": "real", "client": client, "seed": args.seed, "repeat": args.repeat},
           json_path=args.json, junit_path=args.junit, html_dir=args.out)
    print()
    print(matrix_markdown(results), end="")
    if args.markdown:
        _write(args.markdown, matrix_markdown(results), "--markdown")
    _write(out_dir / "matrix.html", matrix_html(results), "--out")
    print(f"matrix: {out_dir / 'matrix.html'}")
    for app in filter(is_app, adapters):
        print(app_report(app.name, [r.records for r in results if r.client == app.name]))
    return matrix_exit_code(results)


def matrix_exit_code(results: Sequence[ScenarioResult]) -> int:
    """1 if a cell failed, errored or judged nothing in every run; else EXIT_FLAKY if a cell is
    flaky; else 0."""
    statuses = conformance_matrix(results).statuses()
    if statuses & {"fail", "error", "unjudged"}:
        return 1
    return EXIT_FLAKY if "flaky" in statuses else 0


def _old_positional_clients(positionals: Sequence[str]) -> tuple[list[str], list[str]]:
    """(scenario paths, client names): positionals were client names before they were scenario
    paths; one that names no file or folder and looks like a name (no '/', no .toml) is still
    taken as a client, with a warning."""
    paths: list[str] = []
    clients: list[str] = []
    for value in positionals:
        if Path(value).exists() or "/" in value or value.endswith(".toml"):
            paths.append(value)
        else:
            clients.append(value)
    if clients:
        warn_deprecated("gateway-harness validate", f"validate {' '.join(clients)}",
                        " ".join(f"--client {c}" for c in clients))
    return paths, clients


def _adapters(names: list[str], *, all_builtin: bool, command: str | None, name: str | None,
              ignores_hello_interval: bool, clients_dir: str | None,
              app: str | None = None) -> list[Adapter]:
    named = list(names)
    if all_builtin:
        names = [*names, *(n for n in ADAPTERS if n not in names)]
    if command and app:
        raise UserError("--command and --app: give one (--app for an unmodified bot, --command "
                        "for a client that reads GATEWAY_HARNESS_*)")
    if name and not (command or app):
        raise UserError("--name: only applies to --command or --app")
    if not names and not command and not app:
        raise UserError("name a client (e.g. --client discord.py), or use --all, "
                        "--command 'CMD' or --app 'CMD'")
    where_installed = Path(clients_dir).resolve() if clients_dir else None
    adapters: list[Adapter] = []
    for name_or_pin in names:
        client, _, version = name_or_pin.partition("@")
        spec = get_spec(client)
        no_node = shutil.which("node") is None or shutil.which("npm") is None
        if spec.ecosystem == "npm" and no_node:
            if all_builtin and client not in named:
                print(f"skipping {client}: Node.js/npm not found on PATH", file=sys.stderr)
                continue
        if not spec.is_installed(version or None, where_installed):
            where = spec.install_dir(version or None, where_installed)
            print(f"installing {spec.requirement(version or None)} into {where} (first use)",
                  file=sys.stderr, flush=True)
        adapters.append(spec.install(version or None, where_installed))
    if command:
        adapters.append(Adapter.from_command(
            command, name, honours_hello_interval=not ignores_hello_interval))
    if app:
        adapters.append(app_adapter(app, name, honours_hello_interval=not ignores_hello_interval))
    return adapters


def _write(path: str | Path, text: str, flag: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{flag}: cannot write {path}: {exc.strerror}") from None
