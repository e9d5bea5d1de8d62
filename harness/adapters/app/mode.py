"""App mode in a run: what the world and the client starter do differently for an unmodified app.

The world (``harness.world``) asks ``is_app(adapter)``; for an app it

* serves ``app_tls()`` (one certificate for every Discord name, signed by a per-run CA; its
  ``ca_file`` is a bundle of the system's roots plus that CA),
* announces ``ANNOUNCED_GATEWAY_URL`` in /gateway/bot and ``ANNOUNCED_RESUME_URL`` in READY, so
  the app's reconnects and resumes go through the redirect to the discovery and resume proxies,
* turns on the gateway's ``accept_any_token`` (the app brings its own token).

The starter (``harness.world_clients.app_starter``) runs the command with ``app_env`` instead of
the adapter contract's variables, and afterwards reads the hooks' log: ``app_problem`` is the
run's error when the app could not be redirected, ``app_summary`` what the report shows.
"""

from __future__ import annotations

import os
import shlex
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from fake_gateway.tls import TLSFiles
from gateway_common.errors import UserError
from harness.adapters.app.hosts import (
    DISCORD_HOSTS,
    GATEWAY,
    RESUME,
    address_of,
    child_env,
    issue_server_cert,
    redirect_map,
    write_ca_bundle,
)
from harness.adapters.contract import Adapter

# What the fake announces in app mode: Discord's own shapes, which the redirect maps back.
ANNOUNCED_GATEWAY_URL = "wss://gateway.discord.gg"
ANNOUNCED_RESUME_URL = "wss://gateway-us-east1-b.discord.gg"

REDIRECT_LOG = "redirect.jsonl"  # the hooks' log, in the client's log folder



def not_redirected(program: str) -> str:
    return (f"the app never loaded the redirect hook: is {program!r} a Python or Node.js program "
            "started with the environment it was given? (statically linked binaries, Go, Java, "
            "Deno, Bun, `python -I/-E/-S` and frozen apps are not supported; README: Test your "
            "own bot)")


_INTERPRETERS = ("python", "node", "nodejs", "uv", "poetry", "pipenv", "npx", "npm")


@dataclass(frozen=True)
class AppAdapter(Adapter):
    """An unmodified app: run with Discord's hostnames redirected, not under the contract."""


def is_app(adapter: Any) -> bool:
    return isinstance(adapter, AppAdapter)


def app_adapter(command: str, name: str | None = None, *, honours_hello_interval: bool = True,
                cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                flag: str = "--app") -> AppAdapter:
    """An app from a shell-style command line (``--app 'python bot.py'``), run in ``cwd`` with
    ``env`` on top of the harness's environment."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise UserError(f"{flag}: cannot parse {command!r}: {exc}") from None
    if not argv:
        raise UserError(f"{flag}: empty command line")
    return AppAdapter(name=name or _default_name(argv), argv=argv, env=dict(env or {}),
                      cwd=str(cwd) if cwd is not None else None,
                      honours_hello_interval=honours_hello_interval)


def _default_name(argv: Sequence[str]) -> str:
    """``python bot.py`` -> ``bot.py``: the program, not its interpreter."""
    first = Path(argv[0]).name
    if first.startswith(_INTERPRETERS):
        for arg in argv[1:]:
            if not arg.startswith("-"):
                return Path(arg).name
    return first


def app_tls(directory: str | os.PathLike[str]) -> TLSFiles:
    """The world's TLS in app mode: ``issue_server_cert`` on every listener, and as ``ca_file``
    the system's roots plus the run's CA (the app's other HTTPS calls still verify)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = issue_server_cert(ca)
    cert_file = folder / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    bundle = write_ca_bundle(ca.cert_pem.bytes(), folder / "ca-bundle.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return TLSFiles(context, str(bundle), str(cert_file))


def app_env(rest_url: str, gateway_url: str, resume_url: str | None, ca_file: str | None,
            log_dir: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The app's environment: ``base`` with Discord's names mapped to the REST listener and the
    discovery and resume proxies, the hooks, the CA bundle and the hooks' log in ``log_dir``."""
    redirects = redirect_map(rest=address_of(rest_url), gateway=address_of(gateway_url),
                             resume=address_of(resume_url) if resume_url else None)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / REDIRECT_LOG
    log.write_bytes(b"")  # this run's records only
    return child_env(redirects, ca_file=ca_file, log_file=log, base=base)


_GATEWAY_NAMES = {h.name for h in DISCORD_HOSTS if h.role in (GATEWAY, RESUME)}


def _gateway_name(host: str) -> bool:
    head, dot, domain = host.partition(".")
    return host in _GATEWAY_NAMES or bool(dot) and f"*.{domain}" in _GATEWAY_NAMES


def app_problem(log: list[dict[str, Any]], program: str, crash: str | None = None) -> str | None:
    """Why the app was not tested, in one line, from the hooks' log (None: it was redirected
    to the gateway, and whatever happened next is the oracle's to judge). ``crash``: how the
    process ended, if it ended on its own."""
    if not any(r.get("event") == "loaded" for r in log):
        return not_redirected(program)
    looked_up = sorted({str(r.get("host")) for r in log if r.get("event") == "redirect"})
    if any(_gateway_name(host) for host in looked_up):
        return None
    only = f" (it looked up only {', '.join(looked_up)})" if looked_up else ""
    if crash is not None:
        return (f"the app ({_runtimes(log)}) ended before it connected to the gateway{only}: "
                f"{crash}")
    guess = only or " (no Discord hostname looked up: its own resolver, a proxy or an address?)"
    return f"the app ({_runtimes(log)}) never connected to the gateway{guess}"


def _runtimes(log: list[dict[str, Any]]) -> str:
    seen: dict[str, set[int]] = {}
    for r in log:
        if r.get("event") == "loaded":
            version = r.get("python") or r.get("node") or ""
            seen.setdefault(f"{r.get('runtime')} {version}".strip(), set()).add(r.get("pid", 0))
    return ", ".join(f"{name}" + (f" x{len(pids)}" if len(pids) > 1 else "")
                     for name, pids in seen.items())


def app_summary(log: list[dict[str, Any]]) -> str:
    """One line for the report: where the hooks loaded and which names they redirected."""
    if not any(r.get("event") == "loaded" for r in log):
        return "app mode: the redirect hook never loaded"
    hosts = sorted({str(r.get("host")) for r in log if r.get("event") == "redirect"})
    return (f"app mode: redirect hook loaded in {_runtimes(log)}; redirected: "
            f"{', '.join(hosts) or 'nothing'}")


def tokens_seen(records: list[dict[str, Any]]) -> list[str]:
    """The tokens the app presented (redacted, as the gateway traced them), first seen first."""
    seen: dict[str, None] = {}
    for rec in records:
        if rec.get("kind") == "frame_in" and "token_seen" in rec:
            seen.setdefault(str(rec["token_seen"]), None)
    return list(seen)


def unimplemented_rest(records: list[dict[str, Any]]) -> list[str]:
    """``GET /api/v10/x`` for each REST call the fake answered with Discord's 404."""
    seen: dict[str, None] = {}
    for rec in records:
        if rec.get("kind") == "rest" and rec.get("implemented") is False:
            seen.setdefault(f"{rec.get('method')} {rec.get('path')}", None)
    return list(seen)


def app_report(name: str, traces: Sequence[list[dict[str, Any]]]) -> str:
    """What `validate --app` prints after the matrix: the token the app presented (redacted) and
    the REST calls the fake answered with Discord's 404, over all of its runs."""
    tokens = list(dict.fromkeys(t for records in traces for t in tokens_seen(records)))
    missing = list(dict.fromkeys(c for records in traces for c in unimplemented_rest(records)))
    said = (f"the app presented token {', '.join(tokens)}" if tokens
            else "the app sent no IDENTIFY or RESUME")
    if missing:
        said += (f"; the fake answered Discord's 404 to {', '.join(missing)} (`rest` records in "
                 f"the traces)")
    return f"app {name}: {said}"
