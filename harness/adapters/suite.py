"""The validation suite: the scenarios `gateway-harness validate` runs third-party clients through.

``DEFAULT_SUITE`` names built-in scenarios (paths under ``scenarios/``, no suffix); the files in
``validation/`` come on top (scenarios written for real clients, e.g. op 9 d=true). Scenario
paths given by the user replace both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway_common.errors import UserError
from harness.scenario import Scenario, builtin_scenarios_dir, load_scenario, load_scenarios

VALIDATION_DIR = Path(__file__).parent / "validation"

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
    # Real-world catalogue rows (shared/reference/real-world-failures.md) that separate the
    # built-in clients best; each costs 5-20 s per client (offline-reconnect-loop-15s 20-35 s),
    # and `validate --all` takes about 16 minutes on a 2-core machine (README: Conformance
    # matrix).
    "malformed-websocket-frame",       # 23: a fragmented control frame mid-session
    "resume-url-kept-after-resume",    # 12: resume_gateway_url kept after the first resume
    "op9-in-answer-to-resume",         # 11: op 9 d=false in answer to RESUME
    "close-4009-socket-slow-to-close", # 6: close 4009, then a socket slow to go away
    "f20-resume-rst-then-op9",         # 10: every RESUME reset, then op 9
    "reconnect-handshake-hangs",       # 3: the reconnect's TLS handshake hangs
    # 7: every reconnect reset for 15 s, long enough to prove a reconnect loop
    "extended/offline-reconnect-loop-15s",
)


def validation_suite(paths: Sequence[str | Path], tags: Sequence[str]) -> list[Scenario]:
    """The scenarios under ``paths`` (default: the validation suite) with any of ``tags``."""
    if paths:
        scenarios = load_scenarios(paths, tags)
    else:
        builtin = builtin_scenarios_dir()
        scenarios = []
        for name in DEFAULT_SUITE:
            path = builtin / f"{name}.toml"
            if not path.exists():
                raise UserError(f"validation suite: built-in scenario {name!r} not found under "
                                f"{builtin}")
            scenarios.append(load_scenario(path))
        scenarios += load_scenarios([VALIDATION_DIR], [])
        if tags:
            scenarios = [s for s in scenarios if set(tags) & set(s.tags)]
    if not scenarios:
        raise UserError("no scenarios matched the given paths and --tag filters")
    return scenarios
