"""Discord's hostnames, the redirect map, the child's environment and the certificate for them.

The integrator calls, in this order::

    cert = issue_server_cert(ca)                       # serve it on every listener
    bundle = write_ca_bundle(ca.cert_pem.bytes(), run_dir / "ca-bundle.pem")
    redirects = redirect_map(rest=(h, p), gateway=(h, p), resume=(h, p))
    env = child_env(redirects, ca_file=bundle, log_file=run_dir / "redirect.jsonl")
    ... run the app with env ...
    read_redirect_log(run_dir / "redirect.jsonl")     # did the hooks load, what did they map
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

Address = tuple[str, int]

ENV_REDIRECT = "GATEWAY_HARNESS_REDIRECT"  # JSON {"hostname or *.domain": [host, port]}
ENV_REDIRECT_LOG = "GATEWAY_HARNESS_REDIRECT_LOG"  # optional: the hooks append JSON lines here

PYTHON_HOOK_DIR = Path(__file__).resolve().parent / "pyhook"  # holds only sitecustomize.py
NODE_PRELOAD = Path(__file__).resolve().parent / "preload.cjs"

REST, GATEWAY, RESUME = "rest", "gateway", "resume"  # the harness listener a name goes to


@dataclass(frozen=True)
class DiscordHost:
    name: str  # a hostname, or "*.domain": any one label in front of domain, as in a certificate
    role: str  # REST, GATEWAY or RESUME
    used_by: str  # for the README


DISCORD_HOSTS: tuple[DiscordHost, ...] = (
    DiscordHost("discord.com", REST,
                "the API base of every current library (https://discord.com/api/v10)"),
    DiscordHost("canary.discord.com", REST, "the Canary client's API base, used by some tools"),
    DiscordHost("ptb.discord.com", REST, "the PTB client's API base, used by some tools"),
    DiscordHost("discordapp.com", REST, "the API base before 2020 (older library versions)"),
    DiscordHost("canary.discordapp.com", REST, "the old Canary API base"),
    DiscordHost("ptb.discordapp.com", REST, "the old PTB API base"),
    DiscordHost("cdn.discordapp.com", REST, "avatars, emoji, attachments (every library)"),
    DiscordHost("media.discordapp.net", REST, "the media proxy (discord.py, hikari, discord.js)"),
    DiscordHost("*.discordapp.net", REST, "other media proxies, e.g. images-ext-1.discordapp.net"),
    DiscordHost("discord.gg", REST, "invite links"),
    DiscordHost("gateway.discord.gg", GATEWAY,
                "the gateway: discord.py's and midjourney's default, GET /gateway's answer"),
    DiscordHost("*.discord.gg", RESUME,
                "READY's resume_gateway_url, e.g. wss://gateway-us-east1-b.discord.gg"),
)

LOCAL_IDENTITIES = ("127.0.0.1", "localhost", "::1")  # the harness's own URLs keep working


def address_of(url: str) -> Address:
    """``wss://127.0.0.1:4321/`` -> ``("127.0.0.1", 4321)`` (default port by scheme)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if parts.scheme in ("https", "wss") else 80
    return parts.hostname, parts.port or default


def redirect_map(
    rest: Address, gateway: Address, resume: Address | None = None
) -> dict[str, Address]:
    """Every name in DISCORD_HOSTS -> the listener for its role (resume: the gateway's if None)."""
    by_role = {REST: rest, GATEWAY: gateway, RESUME: resume or gateway}
    return {host.name: (by_role[host.role][0], int(by_role[host.role][1]))
            for host in DISCORD_HOSTS}


def cert_identities() -> tuple[str, ...]:
    return tuple(host.name for host in DISCORD_HOSTS) + LOCAL_IDENTITIES


def issue_server_cert(ca: trustme.CA) -> trustme.LeafCert:
    """One certificate for every Discord name (wildcards included) and 127.0.0.1/localhost/::1,
    so each listener serves it whatever SNI the client sends."""
    return ca.issue_cert(*cert_identities())


def write_ca_bundle(ca_pem: bytes, path: str | os.PathLike[str], *, system: bool = True) -> Path:
    """The harness CA, after the system's roots when ``system``: SSL_CERT_FILE and
    REQUESTS_CA_BUNDLE *replace* the default trust, and an app that also talks to other HTTPS
    services (hikari's PyPI update check, midjourney's Hugging Face calls) must still reach them."""
    out = Path(path)
    parts = []
    if system:
        cafile = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile
        if cafile and os.path.isfile(cafile):
            parts.append(Path(cafile).read_bytes().rstrip(b"\n") + b"\n")
    parts.append(ca_pem)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(parts))
    return out


def _no_proxy_entry(name: str) -> str:
    return name[1:] if name.startswith("*.") else name  # ".discord.gg": any subdomain


def _node_require(path: Path) -> str:
    text = str(path)
    if any(c.isspace() or c in "\"\\" for c in text):  # NODE_OPTIONS understands "..." quoting
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"--require {text}"


def child_env(
    redirects: Mapping[str, Address],
    *,
    ca_file: str | os.PathLike[str] | None = None,
    log_file: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for the app: ``base`` (default: this process's) plus the redirect map,
    the Python hook first on PYTHONPATH, the Node preload appended to NODE_OPTIONS, the CA
    (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS) and the names in NO_PROXY, so
    an HTTPS_PROXY in the user's environment does not carry Discord's names past the hooks."""
    env = dict(os.environ if base is None else base)
    env[ENV_REDIRECT] = json.dumps({name: [host, int(port)]
                                    for name, (host, port) in redirects.items()})
    if log_file is not None:
        env[ENV_REDIRECT_LOG] = str(log_file)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PYTHON_HOOK_DIR), env.get("PYTHONPATH", "")) if p)
    env["NODE_OPTIONS"] = " ".join(
        p for p in (env.get("NODE_OPTIONS", ""), _node_require(NODE_PRELOAD)) if p)
    if ca_file is not None:
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
            env[var] = str(ca_file)
    existing = [e.strip() for var in ("NO_PROXY", "no_proxy")
                for e in env.get(var, "").split(",") if e.strip()]
    merged = list(dict.fromkeys(existing + [_no_proxy_entry(n) for n in redirects]))
    env["NO_PROXY"] = env["no_proxy"] = ",".join(merged)
    return env


def read_redirect_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The hooks' records: ``{"runtime": "python"|"node", "pid", "event": "loaded"}`` once per
    process that loaded a hook, ``{"event": "redirect", "host", "to", "via"}`` once per name and
    mechanism. No "loaded" record: the app ran no Python or Node process that honoured the hooks
    (see the limits); "loaded" but no gateway connection: it resolved Discord some other way."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a killed process
    return records


def describe_hosts() -> str:
    """A Markdown table of the redirected names, for the README."""
    rows = [f"| `{h.name}` | {h.role} | {h.used_by} |" for h in DISCORD_HOSTS]
    return "\n".join(["| hostname | harness listener | used by |", "|---|---|---|", *rows])


__all__ = [
    "DISCORD_HOSTS", "ENV_REDIRECT", "ENV_REDIRECT_LOG", "NODE_PRELOAD", "PYTHON_HOOK_DIR",
    "Address", "DiscordHost", "address_of", "cert_identities", "child_env", "describe_hosts",
    "issue_server_cert", "read_redirect_log", "redirect_map", "write_ca_bundle",
]
