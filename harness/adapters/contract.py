"""The adapter contract: how the harness runs a gateway client it did not write.

A client under test is a command line plus an environment. The harness starts the command with
these variables set (on top of its own environment):

``GATEWAY_HARNESS_GATEWAY_URL``
    ``wss://127.0.0.1:PORT``, bare (no path, no query): where the client should open its gateway
    connection. Libraries that discover the URL through ``GET /gateway`` or ``GET /gateway/bot``
    get the same address from the fake's REST surface.
``GATEWAY_HARNESS_REST_URL``
    The REST base, ending in ``/api/v10`` (``https://127.0.0.1:PORT/api/v10``; ``env_for``
    also takes the origin ``https://127.0.0.1:PORT`` and passes its ``/api/v10`` base).
``GATEWAY_HARNESS_TOKEN``
    The bot token the fake accepts (``base64(user_id).x.y``, the shape hikari insists on).
``GATEWAY_HARNESS_CA_FILE``
    PEM file of the CA that signed the fake's certificate. Also exported as ``SSL_CERT_FILE``
    (OpenSSL, so Python's default context) and ``NODE_EXTRA_CA_CERTS`` (Node.js). Not set when
    a scenario runs without TLS (``ws://`` and ``http://`` URLs).
``GATEWAY_HARNESS_DELIVERY_LOG``
    Optional. A path where the client appends one JSON line per dispatch it handed to its
    application: ``{"s": 12, "t": "MESSAGE_CREATE", "session_id": "...", "ts": 1700000000.0}``
    (``s`` and ``t`` are required; ``session_id`` and ``ts`` are welcome). Lines the client
    prints on stdout that start with ``{`` and carry ``s`` and ``t`` count as delivery records
    too; write each dispatch to one of the two places, not both.

Other JSON objects printed on stdout are kept as client events (for example ``{"lib":
"discord.py", "version": "2.7.1"}`` reports the library version into the results).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_gateway.urls import API_BASE_PATH, rest_base
from gateway_common.errors import UserError
from gateway_common.facts import DISCORD_HEARTBEAT_INTERVAL_MS

ENV_GATEWAY_URL = "GATEWAY_HARNESS_GATEWAY_URL"
ENV_REST_URL = "GATEWAY_HARNESS_REST_URL"
ENV_TOKEN = "GATEWAY_HARNESS_TOKEN"
ENV_CA_FILE = "GATEWAY_HARNESS_CA_FILE"
ENV_DELIVERY_LOG = "GATEWAY_HARNESS_DELIVERY_LOG"

CONTRACT_VARIABLES = (ENV_GATEWAY_URL, ENV_REST_URL, ENV_TOKEN, ENV_CA_FILE, ENV_DELIVERY_LOG)

DeliveryRecord = dict[str, Any]


def env_for(
    gateway_url: str,
    rest_url: str,
    token: str,
    ca_file: str | os.PathLike[str] | None,
    delivery_log: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The contract's variables for one client run (only these; the runner adds nothing else).

    ``ca_file`` None (or "") means plain ws:// and http://: no CA variables are set.
    """
    if not gateway_url.startswith(("ws://", "wss://")):
        raise UserError(f"gateway URL must start with ws:// or wss://, got {gateway_url!r}")
    rest = rest_base(rest_url)  # an origin means its /api/v10 base
    if not rest.endswith(API_BASE_PATH):
        raise UserError(f"REST URL must end in {API_BASE_PATH}, got {rest_url!r}")
    env = {
        ENV_GATEWAY_URL: gateway_url.rstrip("/"),
        ENV_REST_URL: rest,
        ENV_TOKEN: token,
    }
    if ca_file:
        ca = str(Path(ca_file).resolve())
        env.update({ENV_CA_FILE: ca, "SSL_CERT_FILE": ca, "NODE_EXTRA_CA_CERTS": ca})
    if delivery_log is not None:
        env[ENV_DELIVERY_LOG] = str(Path(delivery_log).resolve())
    return env


@dataclass(frozen=True)
class Adapter:
    """A runnable client: everything ``ClientProcess`` needs to start it.

    ``honours_hello_interval`` is False for clients that beat on their own clock whatever HELLO
    says; the runner then advertises the real 41.25 s interval (``hello_interval_ms``) so the
    heartbeat invariants judge the client against what it was built for.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    honours_hello_interval: bool = True

    @property
    def hello_interval_ms(self) -> int | None:
        """The HELLO interval this client needs, or None for "any (use the compressed one)"."""
        return None if self.honours_hello_interval else DISCORD_HEARTBEAT_INTERVAL_MS

    @classmethod
    def from_command(
        cls, command: str, name: str | None = None, *, honours_hello_interval: bool = True
    ) -> Adapter:
        """A user's own client from a shell-style command line (``--command 'node bot.js'``)."""
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise UserError(f"--command: cannot parse {command!r}: {exc}") from None
        if not argv:
            raise UserError("--command: empty command line")
        return cls(
            name=name or Path(argv[0]).name,
            argv=argv,
            honours_hello_interval=honours_hello_interval,
        )


def parse_stdout_line(line: str) -> dict[str, Any] | None:
    """A stdout line as a JSON object, or None (library chatter, banners, partial JSON)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def is_delivery_record(obj: Mapping[str, Any]) -> bool:
    """A dispatch the client handed to its application: an integer ``s`` and a string ``t``."""
    s, t = obj.get("s"), obj.get("t")
    return isinstance(s, int) and not isinstance(s, bool) and isinstance(t, str)


def read_delivery_log(path: str | os.PathLike[str]) -> list[DeliveryRecord]:
    """Delivery records from a client's log file; non-record lines are skipped.

    A client killed mid-write leaves a torn last line, so unparsable lines are skipped rather
    than fatal: the oracle still gets everything the client finished writing.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records: list[DeliveryRecord] = []
    for line in text.splitlines():
        obj = parse_stdout_line(line)
        if obj is not None and is_delivery_record(obj):
            records.append(obj)
    return records
