"""Protocol-level faults: the actions scenario files, the control endpoint and Python code apply.

`GatewayControls.apply(action, target, **params)` validates the request (a bad one raises
`UserError` naming the field), records a `control` trace record and changes the sans-I/O core;
the driver carries out whatever the core queued. Targets: a connection id, "all" (every open
connection and, for persistent switches, every later one) or "next" (the next connection to open).

Persistent switches take `on` (default true): withhold_acks, withhold_ready, withhold_resumed,
go_silent, ignore_client_close, reject_upgrade, delay_hello, heartbeat_deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway_common.errors import UserError
from gateway_common.trace import KIND_CONTROL

if TYPE_CHECKING:
    from fake_gateway.protocol import ConnectionCore, GatewayCore

Target = int | str

# action -> {param: (type check, default)}; None default means optional.
_PARAMS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "withhold_acks": {"on": ((bool,), True)},
    "withhold_ready": {"on": ((bool,), True)},
    "withhold_resumed": {"on": ((bool,), True)},
    "go_silent": {"on": ((bool,), True)},
    "ignore_client_close": {"on": ((bool,), True)},
    "delay_hello": {"on": ((bool,), True), "ms": ((int, float), 5000),
                    "listener": ((str,), None)},
    "reject_upgrade": {"on": ((bool,), True), "status": ((int,), 503),
                       "listener": ((str,), None)},
    "heartbeat_deadline": {"on": ((bool,), True), "code": ((int, type(None)), None),
                           "resumable": ((bool,), None)},
    "reconnect": {"close_after_ms": ((int, float, type(None)), None)},
    "invalid_session": {"resumable": ((bool,), False), "close": ((bool, type(None)), None)},
    "close": {"code": ((int, type(None)), None), "reason": ((str,), ""),
              "resumable": ((bool, type(None)), None)},
    "reset": {},
    "expire_session": {"session_id": ((str,), None)},
    "invalidate_session": {"session_id": ((str,), None)},
    "burst": {"count": ((int,), 10)},
    "heartbeat_request": {"d": ((object,), None)},
    "session_start_remaining": {"remaining": ((int, type(None)), None)},
}
ACTIONS = frozenset(_PARAMS)
SWITCHES = {"withhold_acks", "withhold_ready", "withhold_resumed", "go_silent",
            "ignore_client_close"}


def validate(action: str, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """Check names and types; return the params with defaults filled in."""
    if action not in _PARAMS:
        raise UserError(f"control: unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})")
    if not (isinstance(target, int) and not isinstance(target, bool)) and target not in (
        "all", "next"):
        raise UserError(f"control {action}: target must be a connection id, 'all' or 'next', "
                        f"not {target!r}")
    spec = _PARAMS[action]
    unknown = set(params) - set(spec)
    if unknown:
        raise UserError(f"control {action}: unknown parameter(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, (types, default) in spec.items():
        value = params.get(name, default)
        ok = value is None or (isinstance(value, types) and not (
            isinstance(value, bool) and bool not in types))
        if not ok:
            raise UserError(f"control {action}: parameter {name!r} has the wrong type "
                            f"({type(value).__name__})")
        out[name] = value
    if action == "burst" and not 0 < out["count"] <= 100_000:
        raise UserError("control burst: count must be between 1 and 100000")
    if action == "close" and out["code"] is not None and not (
            out["code"] == 1000 or 1001 <= out["code"] <= 1014 or 3000 <= out["code"] <= 4999):
        raise UserError(f"control close: code {out['code']} cannot be sent in a close frame")
    if action == "reject_upgrade" and not 400 <= out["status"] <= 599:
        raise UserError("control reject_upgrade: status must be an HTTP error (400-599)")
    return out


def apply_to_connection(gw: GatewayCore, conn: ConnectionCore, action: str,
                        params: dict[str, Any], now: float) -> None:
    """Apply one validated action to one connection."""
    if action in SWITCHES:
        setattr(conn, action if action != "go_silent" else "silent", params["on"])
        if action in ("withhold_ready", "withhold_resumed") and not params["on"]:
            conn.release_held(now)
        if action == "go_silent" and not params["on"]:
            conn.end_silence(now)
            if conn.hello_sent_at is None:
                conn.send_hello(now)
        gw.notify(conn.conn_id)
        return
    if action == "delay_hello":
        if conn.hello_sent_at is None:
            if params["on"]:
                conn.hello_delay = params["ms"] / 1000.0
                if conn.hello_due is not None:
                    conn.hello_due = conn.opened_at + conn.hello_delay
                    gw.notify(conn.conn_id)
            else:
                conn.send_hello(now)
        return
    if action == "heartbeat_deadline":
        conn.deadline_enforced = params["on"]
        if params["code"] is not None:
            conn.deadline_code = params["code"]
        if params["resumable"] is not None:
            conn.deadline_resumable = params["resumable"]
        gw.notify(conn.conn_id)
        return
    if action == "reconnect":
        conn.send_reconnect(now)
        if params["close_after_ms"] is not None:
            conn.schedule_close(now + params["close_after_ms"] / 1000.0, 4000, "reconnect", True)
        return
    if action == "invalid_session":
        if conn.session is None and not params["resumable"]:
            # Not yet resumed (op 9 raced the client's RESUME): d=false still ends the session.
            conn.session_ended_by_op9 = True
        conn.send_invalid_session(now, params["resumable"], params["close"])
        return
    if action == "close":
        conn.close(now, params["code"], params["reason"], params["resumable"])
        return
    if action == "reset":
        conn.reset(now)
        return
    if action == "heartbeat_request":
        conn.send_heartbeat_request(now, params["d"])
        return
    if action == "burst":
        if conn.session is not None:
            for _ in range(params["count"]):
                gw.emit_synthetic(now, [conn.session])
        return
    if action in ("expire_session", "invalidate_session"):
        if conn.session is not None:
            _end_session(gw, conn.session.session_id, action, now)
        return


def _end_session(gw: GatewayCore, session_id: str, action: str, now: float) -> None:
    from fake_gateway.sessions import EXPIRED, INVALIDATED

    session = gw.sessions.get(session_id)
    if session is None:
        raise UserError(f"control {action}: no session {session_id!r}")
    gw.invalidate(session, now, f"control {action}",
                  EXPIRED if action == "expire_session" else INVALIDATED)


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
        if action == "reject_upgrade" or (action == "delay_hello" and target == "all"):
            self._gateway_wide(action, target, params)
            return done
        if action in ("expire_session", "invalidate_session") and params["session_id"]:
            _end_session(gw, params["session_id"], action, now)
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
            if action in SWITCHES or action == "heartbeat_deadline":
                self._remember_for_all(action, params)
            if action in ("expire_session", "invalidate_session"):
                for session in gw.sessions.live():
                    _end_session(gw, session.session_id, action, now)
                return done
            if action == "burst":
                for _ in range(params["count"]):
                    gw.emit_synthetic(now)
                return done
        for conn in targets:
            if not conn.closed:
                apply_to_connection(gw, conn, action, params, now)
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
                gw.hello_delay[listener] = params["ms"] / 1000.0
            else:
                gw.hello_delay.pop(listener, None)

    def _remember_for_all(self, action: str, params: dict[str, Any]) -> None:
        attrs: dict[str, Any]
        if action == "heartbeat_deadline":
            attrs = {"deadline_enforced": params["on"]}
            if params["code"] is not None:
                attrs["deadline_code"] = params["code"]
            if params["resumable"] is not None:
                attrs["deadline_resumable"] = params["resumable"]
        else:
            attrs = {action if action != "go_silent" else "silent": params["on"]}
        for name, value in attrs.items():
            if value is False and name != "deadline_enforced":
                self.gw.switches_for_all.pop(name, None)
            else:
                self.gw.switches_for_all[name] = value
