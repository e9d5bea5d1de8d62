"""Protocol facts the fake gateway, the reference client and the oracle share, each written once.

Imports nothing of ours (gateway_common sits below fake_gateway and harness).
"""

from __future__ import annotations

FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
# Server closes after which the client should start a new session (section 13 of the reference).
REIDENTIFY_CLOSE_CODES = frozenset({4003, 4005, 4007, 4009})
# Server closes (or none) after which a client holding a session should resume.
RESUMABLE_SERVER_CLOSE_CODES = frozenset({None, 1001, 1006, 4000, 4002, 4008})
SESSION_KILLING_CLIENT_CODES = frozenset({1000, 1001})
# Control actions that happen once (their fault window has no length).
ONE_SHOT_CONTROLS = frozenset(
    {
        "reconnect",
        "invalid_session",
        "close",
        "reset",
        "expire_session",
        "invalidate_session",
        "burst",
        "heartbeat_request",
        "session_start_remaining",
    }
)
# Controls that change policy rather than inject a fault (never a fault window).
POLICY_CONTROLS = frozenset({"heartbeat_deadline"})
