"""What a world hands a client and gets back: the types between ``harness.world`` (which runs a
scenario) and ``harness.world_clients`` (the clients it can run), below both.

A client starter starts its client inside the world's nursery and returns a ``stop`` coroutine;
calling it ends the client and returns the ``ClientOutcome``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from gateway_common.trace import Record


@dataclass
class ClientEnv:
    """Everything a client needs to reach the world (the adapter contract, plus sim hooks)."""

    gateway_url: str  # the discovery URL (through its proxy), bare
    rest_url: str | None  # REST base ending in /api/v10 (real mode)
    token: str
    ca_file: str | None
    open_stream: Callable[[str, int], Awaitable[trio.abc.Stream]] | None  # sim: memnet connect
    fetch_gateway_bot: Callable[[], Awaitable[dict[str, Any]]] | None  # sim: no HTTP
    seed: int
    delivery_log_path: Path | None
    compress: str | None = None  # transport compression the scenario asks the client to use
    log_dir: Path | None = None  # where a client process's full stdout/stderr logs go
    expects_stop: bool = False  # the scenario expects the client to give up (fatal close)
    deadline: float | None = None  # seconds a client process may live
    # called when the client ends on its own (the world stops waiting for its first contact)
    on_exit: Callable[[], None] | None = None
    resume_url: str | None = None  # the resume listener through its proxy (app mode)


@dataclass
class ClientOutcome:
    delivery_log: list[Record] | None = None
    stderr_tail: str = ""
    error: str | None = None  # the harness could not run the client at all
    crash: str | None = None  # the client died, raised or hung (judged as PR1): the evidence
    exited: bool = False  # the crash is the process ending on its own, right if a stop is expected
    info: dict[str, Any] = field(default_factory=dict)


# A client runner starts the client and returns once it is running; calling the returned
# ``stop`` ends it and returns its outcome.
ClientStop = Callable[[], Awaitable[ClientOutcome]]
ClientStarter = Callable[[trio.Nursery, ClientEnv], Awaitable[ClientStop]]
