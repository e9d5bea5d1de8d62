"""What several commands share: the flags spelled once for all, the old spellings kept for one
release, and the summary every judging command prints.

One spelling per idea (README, "Flags"):

- output folder: ``--out DIR``;
- scenarios: positional ``PATH...`` (files or folders);
- the client under test: ``--client NAME``;
- TLS: ``--tls on|off|scenario`` (``scenario``: each scenario's own setting);
- a JSON file: ``--json FILE``;
- switching a default off: ``--no-X``, never a sentinel value.

An old spelling still works and prints one line on stderr saying what replaces it.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report.model import ScenarioResult

TLS_CHOICES = ("on", "off", "scenario")


def warn_deprecated(command: str, old: str, new: str) -> None:
    """The one line an old spelling prints (``command``: e.g. ``gateway-harness run``)."""
    print(f"{command}: warning: {old} is deprecated and goes in the next release; use {new}",
          file=sys.stderr, flush=True)


class Renamed(argparse.Action):
    """An old flag name: stores into the new flag's dest and warns."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        metavar = f" {self.metavar}" if self.metavar else ""
        warn_deprecated(parser.prog, f"{option_string}{metavar}", self.new)
        setattr(namespace, self.dest, values)


class Deprecated(argparse.Action):
    """An old switch (no value) that now means ``--new-spelling`` = ``value``: sets and warns."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, value: Any,
                 **kwargs: Any) -> None:
        self.new = new
        self.value = value
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        warn_deprecated(parser.prog, str(option_string), self.new)
        setattr(namespace, self.dest, self.value)


class _NoneSentinel(argparse.Action):
    """``--flag VALUE`` where the old sentinel ``none`` meant off: now ``--no-flag``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if str(values).lower() == "none":
            name = str(option_string).removeprefix("--")
            warn_deprecated(parser.prog, f"{option_string} none", f"--no-{name}")
            setattr(namespace, f"no_{self.dest}", True)
            return
        setattr(namespace, self.dest, values)


def add_switchable(p: argparse.ArgumentParser, name: str, *, default: str | None, metavar: str,
                   help: str, off_help: str) -> None:
    """``--NAME VALUE`` and ``--no-NAME`` (args.NAME, args.no_NAME); ``--NAME none`` still means
    ``--no-NAME`` for one release."""
    dest = name.replace("-", "_")
    p.add_argument(f"--{name}", dest=dest, default=default, metavar=metavar, help=help,
                   action=_NoneSentinel)
    p.add_argument(f"--no-{name}", dest=f"no_{dest}", action="store_true", help=off_help)


class _Tls(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values is None:  # the old bare switch
            warn_deprecated(parser.prog, "--tls without a value", "--tls on")
            values = "on"
        setattr(namespace, self.dest, values)


def add_tls_argument(p: argparse.ArgumentParser, *, default: str, help: str,
                     choices: Sequence[str] = TLS_CHOICES, bare_was_on: bool = False) -> None:
    """``--tls on|off|scenario``; ``bare_was_on``: the command once took a bare ``--tls`` (it
    still means ``--tls on``, with a warning; only where no positional could be taken for its
    value)."""
    p.add_argument("--tls", choices=choices, default=default, action=_Tls,
                   nargs="?" if bare_was_on else None, const=None,
                   metavar="|".join(choices), help=f"{help} (default: {default})")


def tls_setting(value: str) -> bool | None:
    """``--tls`` as a scenario's ``tls``: True, False, or None for each scenario's own."""
    return {"on": True, "off": False}.get(value)


def add_out_argument(p: argparse.ArgumentParser, help: str, *, default: str | None = None,
                     old: str | None = None) -> None:
    """``--out DIR``, and the command's old name for it (warns) if it had another."""
    p.add_argument("--out", metavar="DIR", default=default, help=help)
    if old is not None:
        p.add_argument(old, dest="out", metavar="DIR", action=Renamed, new="--out DIR")


def add_startup_timeout_argument(p: argparse.ArgumentParser) -> None:
    """``--startup-timeout SECONDS``: how long a wall-clock run waits for the client's first
    connection attempt (the scenario's clock starts there)."""
    from harness.world import STARTUP_TIMEOUT_S

    p.add_argument("--startup-timeout", type=_positive_seconds, default=STARTUP_TIMEOUT_S,
                   metavar="SECONDS",
                   help="wall clock: a client that makes no connection attempt (TCP connect or "
                        "REST request) this long after it starts is a run error; the scenario's "
                        f"clock starts at its first attempt (default {STARTUP_TIMEOUT_S:g})")


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return seconds


def report(results: list[ScenarioResult], *, title: str, meta: dict[str, Any],
           json_path: str | None = None, junit_path: str | None = None,
           html_dir: str | Path | None = None, skipped: Sequence[tuple[str, str]] = ()) -> int:
    """Print the summary; write the JSON, JUnit and HTML reports asked for; the exit code.
    ``skipped``: (scenario, reason) pairs not run, listed after the table."""
    from harness.report.html import write_html
    from harness.report.json_results import write_json
    from harness.report.junit import write_junit
    from harness.report.model import summarize
    from harness.report.text import failure_details, summary_table

    print(summary_table(results, color=sys.stdout.isatty()))
    if skipped:
        print(f"skipped {len(skipped)} scenario(s), not run:")
        width = max(len(name) for name, _ in skipped)
        for name, reason in skipped:
            print(f"  {name:<{width}}  {reason}")
    details = failure_details(results)
    if details:
        print(details)
    if json_path:
        write_json(results, json_path, meta)
    if junit_path:
        write_junit(results, junit_path)
    if html_dir:
        path = write_html(results, html_dir, title=title, meta=meta)
        print(f"report: {path}")
    s = summarize(results)
    also = f", {len(skipped)} skipped" if skipped else ""
    print(f"{s.passed} passed, {s.failed} failed, {s.errors} errors{also} in {s.duration:.1f} s")
    return 0 if s.failed == 0 and s.errors == 0 else 1


def check_loopback_host(host: str) -> None:
    """`serve` and `proxy` listen on loopback only: a fault injector (and its control endpoint)
    is no service for other machines."""
    from gateway_common.errors import UserError

    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise UserError(f"--host: {host} is not a loopback address (loopback only)")
    except ValueError:
        if host != "localhost":
            raise UserError(f"--host: {host!r} is not an IP address") from None
