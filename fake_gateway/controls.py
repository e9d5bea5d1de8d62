"""Protocol-level faults: the actions scenario files, the control endpoint and Python code apply.

`GatewayControls.apply(action, target, **params)` validates the request against the table of
control actions (`gateway_common.facts.CONTROLS`: each action's kind and parameters; a bad
request raises `UserError` naming the field), records a `control` trace record and hands the
action to the sans-I/O core (`ConnectionCore.apply_control`, or the gateway-wide state); the
driver carries out whatever the core queued. Targets: a connection id, "all" (every open
connection and, for persistent switches, every later one) or "next" (the next connection to open).

Switches and policies take `on` (default true); one-shot actions do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fake_gateway import frames, wire
from fake_gateway.protocol import GatewayCore
from gateway_common.errors import UserError
from gateway_common.facts import CONTROLS
from gateway_common.trace import KIND_CONTROL

Target = int | str


def validate(action: str, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """Check names, types and values; return the params with defaults filled in."""
    if action not in CONTROLS:
        known = ", ".join(sorted(CONTROLS))
        raise UserError(f"control: unknown action {action!r} (known: {known})")
    if not (isinstance(target, int) and not isinstance(target, bool)) and target not in (
        "all", "next"):
        raise UserError(f"control {action}: target must be a connection id, 'all' or 'next', "
                        f"not {target!r}")
    spec = CONTROLS[action].all_params
    unknown = set(params) - set(spec)
    if unknown:
        raise UserError(f"control {action}: unknown parameter(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, param in spec.items():
        value = params.get(name, param.default)
        if not param.accepts_type(value):
            raise UserError(f"control {action}: parameter {name!r} has the wrong type "
                            f"({type(value).__name__})")
        problem = param.problem(value)
        if problem is not None:
            raise UserError(f"control {action}: {name} {problem}")
        out[name] = value
    return out


class GatewayControls:
    """Python entry point for protocol-level faults (the HTTP endpoint calls this too)."""

    def __init__(self, gateway: GatewayCore, clock: Callable[[], float]) -> None:
        self.gw = gateway
        self._clock = clock

    def apply(self, action: str, target: Target = "all", **params: Any) -> dict[str, Any]:
        params = validate(action, target, params)
        gw = self.gw
        now = self._clock()
        gw.trace.record(KIND_CONTROL, ts=now, action=action, target=target, params=params)
        affected: list[int] = []
        done = {"ok": True, "connections": affected}
        if action == "session_start_remaining":
            gw.start_limit.forced_remaining = params["remaining"]
            return done
        if action in wire.ACTIONS:  # wire-level faults (fake_gateway.wire)
            affected.extend(gw.wire.apply(action, target, params, now))
            return done
        if action in frames.ACTIONS:  # frame-level faults (fake_gateway.frames)
            if isinstance(target, int):
                if target not in gw.connections:
                    raise UserError(f"control {action}: no open connection {target}")
                affected.append(target)
            gw.frames.apply(action, target, params, now)
            return done
        if action == "flood":
            if target != "all":
                raise UserError("control flood: the flood goes to every live session; aim it "
                                "at 'all'")
            gw.set_flood(params, now)
            return done
        if action == "delay_hello" and gw.wire.delay_hello(target, params):
            return done  # held for the next connections to open
        if action == "reject_upgrade" or (action == "delay_hello" and target == "all"):
            self._gateway_wide(action, target, params)
            return done
        if action in ("expire_session", "invalidate_session") and params["session_id"]:
            self._end_session(params["session_id"], action, now)
            return done
        if target == "next":
            gw.pending_for_next.append((action, params))
            return done
        if isinstance(target, int):
            conn = gw.connections.get(target)
            if conn is None:
                raise UserError(f"control {action}: no open connection {target}")
            targets = [conn]
        else:
            targets = list(gw.connections.values())
            if CONTROLS[action].kind != "one_shot":  # delay_hello, reject_upgrade: done above
                gw.remember_for_all(action, params)
            if action in ("expire_session", "invalidate_session"):
                for session in gw.sessions.live():
                    self._end_session(session.session_id, action, now)
                return done
            if action == "burst":
                gw.burst(params, now)
                return done
        for conn in targets:
            if not conn.closed:
                conn.apply_control(action, params, now)
                affected.append(conn.conn_id)
        return done

    def _gateway_wide(self, action: str, target: Target, params: dict[str, Any]) -> None:
        gw = self.gw
        listener = params.get("listener")
        if action == "reject_upgrade":
            if target == "next":
                if params["on"]:
                    gw.reject_next.append((listener, params["status"]))
            elif params["on"]:
                gw.reject_upgrade[listener] = params["status"]
            else:
                gw.reject_upgrade.pop(listener, None)
        elif action == "delay_hello":
            if params["on"]:
                gw.hello_delay[listener] = wire.hello_delay(params)
            else:
                gw.hello_delay.pop(listener, None)

    def _end_session(self, session_id: str, action: str, now: float) -> None:
        if not self.gw.end_session(session_id, action, now):
            raise UserError(f"control {action}: no session {session_id!r}")
