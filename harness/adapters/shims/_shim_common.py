"""Shared by the Python shims: read the harness's environment, write the delivery log.

Runs inside the client's own venv, so it uses only the standard library and never imports the
harness. See harness/adapters/contract.py for the contract itself.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any


def contract(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"shim: {name} is not set (run this shim under gateway-harness)")
    return value


GATEWAY_URL = contract("GATEWAY_HARNESS_GATEWAY_URL")
REST_URL = contract("GATEWAY_HARNESS_REST_URL")  # ends in /api/v10
TOKEN = contract("GATEWAY_HARNESS_TOKEN")
CA_FILE = contract("GATEWAY_HARNESS_CA_FILE")


def emit(**fields: Any) -> None:
    """One JSON object on stdout: a client event the harness keeps with the run."""
    print(json.dumps(fields, separators=(",", ":")), flush=True)


def announce(lib: str, version: str) -> None:
    emit(lib=lib, version=version, runtime=f"python {platform.python_version()}")


class DeliveryLog:
    """Appends one line per dispatch to $GATEWAY_HARNESS_DELIVERY_LOG (stdout if unset)."""

    def __init__(self) -> None:
        path = os.environ.get("GATEWAY_HARNESS_DELIVERY_LOG")
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        self.session_id: str | None = None

    def dispatch(self, s: int, t: str, session_id: str | None = None) -> None:
        record = {"s": s, "t": t, "session_id": session_id or self.session_id, "ts": time.time()}
        line = json.dumps(record, separators=(",", ":"))
        if self._file is not None:
            self._file.write(line + "\n")
        else:
            print(line, flush=True)

    def raw_payload(self, raw: str | bytes | dict[str, Any]) -> None:
        """One decoded gateway payload (text or dict): log dispatches; READY sets the session."""
        if isinstance(raw, dict):
            payload: Any = raw
        else:
            try:
                payload = json.loads(raw)
            except ValueError:
                return
        if not isinstance(payload, dict) or payload.get("op") != 0:
            return
        if payload.get("t") == "READY":
            self.session_id = (payload.get("d") or {}).get("session_id")
        self.dispatch(payload["s"], payload["t"])
