"""Scenario files: the model, the loader and the trigger helper the runner executes.

A scenario is one TOML file (see the README section "Scenario files" for a full example)::

    name = "seed-tls-reset-on-resume"
    source = "seed"                     # "seed", "generated", "F1".."F22", "protocol §N",
                                        # or upstream issues "owner/repo#N[, owner/repo#N]"
    tags = ["seed", "tls"]
    description = '''One paragraph: the real-world failure this models.'''
    seed = 7                            # optional: the run seed a replay must use

    [gateway]                           # knobs of the fake gateway (all optional)
    heartbeat_interval = 1000           # ms, advertised in HELLO
    tls = true

    [expect]
    outcome = "resume"                  # resume | reidentify | stop (optional)
    recovery_bound = 4.0                # s after the last fault clears (LV1)
    duration = 10.0                     # s the run lasts
    [expect.tolerances]                 # optional overrides of harness.oracle.Tolerances
    heartbeat_slack = 0.5

    [[steps]]                           # one table per fault step, in any order
    kind = "toxic"                      # toxic | proxy | control
    type = "reset_after"
    attributes = { bytes = 1 }
    target = "resume"                   # discovery | resume | both
    only_connection = 1
    start = { after = "ready" }
    duration = 3.0

Triggers (``start`` and ``stop``) are data, so the runner can execute them:

- ``{at = 2.5}``: 2.5 s after the run starts (the runner's clock).
- ``{after = EVENT, count = N, delay = D, ...filters}``: the Nth trace record (default 1st) that
  is an EVENT and passes the filters, plus ``delay`` seconds (default 0). EVENT is one of
  ``EVENTS``: ``connection`` (conn_open), ``hello``, ``ready``, ``resumed``, ``live`` (READY or
  RESUMED), ``client_op`` (frame_in, needs ``op``: 1 heartbeat, 2 IDENTIFY, 6 RESUME),
  ``server_op`` (frame_out, needs ``op``), ``seq`` (a dispatch with ``s >= seq``; needs ``seq``),
  ``close`` (conn_close; optional ``code`` and ``by`` filters), ``rejected`` (ws_rejected). Every
  event takes the optional filters ``listener`` ("discovery" | "resume") and ``conn`` (a
  connection id).

A step switches on when ``start`` fires and off after ``duration`` seconds, or when ``stop`` fires
(a stop trigger counts only records after the step switched on), or never (it stays on until the
run ends; the oracle then cannot judge LV1). One-shot controls (``ONE_SHOT_CONTROLS``) take neither.

The runner's loop: for each step, ``watch = TriggerWatch(step.start)``; feed every trace record to
``watch.feed(record)``; when it returns True, wait ``trigger.delay`` and switch the step on; time
triggers are ``trigger.at`` seconds after the start. It writes a ``fault`` record for every switch
with ``Step.fault_params()`` as ``params`` (the oracle reads ``target`` from it).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

from fake_gateway.config import SCENARIO_KNOBS, GatewayConfig, scenario_config
from gateway_common.errors import UserError
from gateway_common.facts import (
    COMPRESSIONS,
    CONTROLS,
    ENCODINGS,
    ONE_SHOT_CONTROLS,
    OP_DISPATCH,
    OP_HELLO,
)
from harness.oracle.model import Expectations, Outcome, Tolerances  # the model only, no checks

Record = dict[str, Any]

TOXIC_ATTRIBUTES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "latency": {"latency": int, "jitter": int},
    "bandwidth": {"rate": int},
    "slow_close": {"delay": int},
    "timeout": {"timeout": int},
    "reset_peer": {"timeout": int},
    "slicer": {"average_size": int, "size_variation": int, "delay": int},
    "limit_data": {"bytes": int},
    "reset_after": {"bytes": int, "mode": str, "forward": bool},
    "blackhole": {},
}
PROXY_ACTIONS = frozenset({"down"})
TARGET_URLS = ("discovery", "resume", "both")
OUTCOMES: tuple[str, ...] = get_args(Outcome)
SCENARIO_COMPRESSIONS = ("none", *COMPRESSIONS)
EVENTS = (
    "connection",
    "hello",
    "ready",
    "resumed",
    "live",
    "client_op",
    "server_op",
    "seq",
    "close",
    "rejected",
)
# "generated": a schedule written by the fuzzer (harness/schedules.py), not modelled on one source.
# "owner/repo#N": an upstream issue or pull request where users reported the failure (the
# real-world catalogue, shared/reference/real-world-failures.md). A source may name several,
# comma-separated: a failure mode and the upstream reports of it ("F12, owner/repo#N").
UPSTREAM_REF = r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}#[1-9][0-9]{0,9}"
_ONE_SOURCE = rf"(seed|generated|F([1-9]|1[0-9]|2[0-2])|protocol §\d+(\.\d+)?|{UPSTREAM_REF})"
SOURCE_PATTERN = re.compile(rf"^{_ONE_SOURCE}(, {_ONE_SOURCE})*$")
REAL_WORLD_TAG = "real-world"  # a row of the catalogue: its source names the upstream report
SOURCE_FORMS = ("'seed', 'generated', F1..F22, 'protocol §N' or 'owner/repo#N' "
                "(several comma-separated)")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# ------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Trigger:
    """When a step switches: at a time (``at``) or after a protocol event (``after``)."""

    at: float | None = None
    after: str | None = None
    count: int = 1
    delay: float = 0.0
    op: int | None = None
    seq: int | None = None
    code: int | None = None
    by: str | None = None
    listener: str | None = None
    conn: int | None = None

    @property
    def is_time(self) -> bool:
        return self.at is not None

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether this trace record is one occurrence of the event (counts toward ``count``)."""
        if self.after is None:
            return False
        kind = record.get("kind")
        if self.listener is not None and record.get("listener", self.listener) != self.listener:
            return False
        if self.conn is not None and record.get("conn") != self.conn:
            return False
        op, t = record.get("op"), record.get("t")
        if self.after == "connection":
            return kind == "conn_open"
        if self.after == "hello":
            return kind == "frame_out" and op == OP_HELLO
        if self.after in ("ready", "resumed", "live"):
            wanted = {"ready": ("READY",), "resumed": ("RESUMED",), "live": ("READY", "RESUMED")}
            return kind == "frame_out" and op == OP_DISPATCH and t in wanted[self.after]
        if self.after == "client_op":
            return kind == "frame_in" and op == self.op
        if self.after == "server_op":
            return kind == "frame_out" and op == self.op
        if self.after == "seq":
            s = record.get("s")
            return (kind == "frame_out" and op == OP_DISPATCH and isinstance(s, int)
                    and s >= (self.seq or 0))
        if self.after == "close":
            if kind != "conn_close":
                return False
            if self.code is not None and record.get("code") != self.code:
                return False
            return self.by is None or record.get("by") == self.by
        if self.after == "rejected":
            return kind == "ws_rejected"
        return False

    def describe(self) -> str:
        if self.at is not None:
            return f"at {self.at:g} s"
        parts = [f"after {self.after}"]
        for name in ("op", "seq", "code", "by", "listener", "conn"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if self.count != 1:
            parts.append(f"#{self.count}")
        if self.delay:
            parts.append(f"+{self.delay:g} s")
        return " ".join(parts)


class TriggerWatch:
    """Counts matching records and says when an event trigger fires (exactly once).

    Records of the conn_open kind carry ``listener``; other records do not, so a ``listener`` filter
    on a frame event is resolved through the connection's conn_open, which the watch remembers.
    """

    def __init__(self, trigger: Trigger):
        self.trigger = trigger
        self.seen = 0
        self.fired = False
        self._listeners: dict[int, str] = {}

    def feed(self, record: Mapping[str, Any]) -> bool:
        """Feed one trace record; True the moment the trigger fires (then wait trigger.delay)."""
        if self.fired or self.trigger.after is None:
            return False
        conn = record.get("conn")
        if record.get("kind") in ("conn_open", "ws_upgrade") and isinstance(conn, int):
            if record.get("listener") is not None:
                self._listeners[conn] = str(record["listener"])
        if self.trigger.listener is not None and "listener" not in record and isinstance(conn, int):
            record = {**record, "listener": self._listeners.get(conn)}
        if self.trigger.matches(record):
            self.seen += 1
            if self.seen >= self.trigger.count:
                self.fired = True
                return True
        return False


def trigger_fires(trigger: Trigger, records: Iterable[Mapping[str, Any]]) -> int | None:
    """The index of the record at which an event trigger fires in a finished trace, or None."""
    watch = TriggerWatch(trigger)
    for idx, rec in enumerate(records):
        if watch.feed(rec):
            return idx
    return None


@dataclass(frozen=True)
class Step:
    """One fault: a toxic, a proxy action or a gateway control, switched by triggers."""

    name: str
    kind: str  # "toxic" | "proxy" | "control"
    start: Trigger
    duration: float | None = None
    stop: Trigger | None = None
    # toxic
    type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    stream: str = "downstream"
    toxicity: float = 1.0
    # toxic and proxy
    target: str = "both"
    only_connection: int | None = None
    from_connection: int | None = None
    # proxy
    action: str | None = None
    # control
    params: dict[str, Any] = field(default_factory=dict)
    conn_target: int | str = "all"  # control target: a connection id, "all" or "next"

    @property
    def one_shot(self) -> bool:
        return self.kind == "control" and self.action in ONE_SHOT_CONTROLS

    @property
    def persistent_until_end(self) -> bool:
        return not self.one_shot and self.duration is None and self.stop is None

    def fault_params(self) -> dict[str, Any]:
        """What the runner writes as ``params`` of this step's ``fault`` records."""
        if self.kind == "toxic":
            out: dict[str, Any] = {
                "type": self.type,
                "attributes": dict(self.attributes),
                "stream": self.stream,
                "toxicity": self.toxicity,
                "target": self.target,
            }
            if self.only_connection is not None:
                out["only_connection"] = self.only_connection
            if self.from_connection is not None:
                out["from_connection"] = self.from_connection
            return out
        if self.kind == "proxy":
            return {"action": self.action, "target": self.target}
        return {"action": self.action, "target": self.conn_target, **self.params}

    def toxic_json(self) -> dict[str, Any]:
        """The Toxiproxy API body for a toxic step (extensions included)."""
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }
        if self.only_connection is not None:
            body["only_connection"] = self.only_connection
        if self.from_connection is not None:
            body["from_connection"] = self.from_connection
        return body

    def describe(self) -> str:
        if self.kind == "toxic":
            attrs = ", ".join(f"{k}={v}" for k, v in self.attributes.items())
            what = f"toxic {self.type}({attrs}) {self.stream} on {self.target}"
            if self.only_connection is not None:
                what += f" conn #{self.only_connection} only"
            if self.from_connection is not None:
                what += f" from conn #{self.from_connection}"
        elif self.kind == "proxy":
            what = f"proxy {self.action} on {self.target}"
        else:
            args = ", ".join(f"{k}={v}" for k, v in self.params.items())
            what = f"control {self.action}({args}) -> {self.conn_target}"
        when = self.start.describe()
        if self.duration is not None:
            when += f" for {self.duration:g} s"
        elif self.stop is not None:
            when += f" until {self.stop.describe()}"
        return f"{what}, {when}"


@dataclass(frozen=True)
class GatewayKnobs:
    """The ``[gateway]`` table: fake-gateway settings a scenario may set.

    ``config`` is the gateway's `GatewayConfig`: every knob whose field names a scenario key
    (``fake_gateway.config.SCENARIO_KNOBS``; ``heartbeat_interval`` is ``heartbeat_interval_ms``,
    ``shards`` is ``recommended_shards``) at the file's value, or at its scenario default
    (compressed time: 1 s heartbeats, a steady dispatch stream; ``scenario_config()``).
    ``tls`` is a property of the listeners, ``compression`` and ``encoding`` are what the client is
    told to ask for in its gateway URL (the gateway serves whatever the client asks for).
    """

    config: GatewayConfig = field(default_factory=scenario_config)
    tls: bool = False
    compression: str = "none"  # none | zlib-stream | zstd-stream
    encoding: str = "json"  # json | etf

    def config_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``GatewayConfig``: the knobs a scenario may set."""
        return {k.name: getattr(self.config, k.name) for k in SCENARIO_KNOBS.values()}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    path: Path | None = None
    tags: tuple[str, ...] = ()
    seed: int | None = None
    gateway: GatewayKnobs = field(default_factory=GatewayKnobs)
    steps: tuple[Step, ...] = ()
    expect: Expectations = field(default_factory=Expectations)
    """The [expect] table: the oracle's input (its max_concurrency is the gateway's, see below)."""

    def __post_init__(self) -> None:
        # BO2 judges IDENTIFYs against the gateway's own max_concurrency: [gateway] is its one
        # source, so the expectations take it from there however the scenario was built.
        if self.expect.max_concurrency != self.gateway.config.max_concurrency:
            expect = replace(self.expect, max_concurrency=self.gateway.config.max_concurrency)
            object.__setattr__(self, "expect", expect)

    @property
    def summary(self) -> str:
        """The description's first sentence (for `gateway-harness list`)."""
        text = " ".join(self.description.split())
        end = text.find(". ")
        return text if end < 0 else text[: end + 1]


# ------------------------------------------------------------------------------------------------
# Locating a key in the TOML text (for error messages)

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the key at ``path`` (e.g. ("steps", 1, "start", "after")) in TOML text.

    Falls back to the deepest enclosing table or key that exists (a missing key is reported at its
    table's header).
    """
    array_counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    best_line: int | None = None
    best_depth = -1
    in_multiline: str | None = None
    target = tuple(path)

    def resolve(names: list[str]) -> tuple[str | int, ...]:
        out: list[str | int] = []
        for name in names:
            out.append(name)
            key = tuple(out)
            if key in array_counts:
                out.append(array_counts[key] - 1)
        return tuple(out)

    for lineno, line in enumerate(text.splitlines(), 1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header and "=" not in line.split("]")[0]:
            names = [n.strip().strip("\"'") for n in header.group(2).split(".")]
            if header.group(1) == "[[":
                prefix = resolve(names[:-1]) + (names[-1],)
                array_counts[prefix] = array_counts.get(prefix, 0) + 1
                table = prefix + (array_counts[prefix] - 1,)
            else:
                table = resolve(names)
            depth = _common(table, target)
            if depth == len(table) and depth > best_depth:
                best_line, best_depth = lineno, depth
            continue
        key = _KEY.match(line)
        if key:
            names = [n.strip().strip("\"'") for n in key.group(1).split(".")]
            full = table + tuple(names)
            depth = _common(full, target)
            if depth == len(full) and depth > best_depth:
                best_line, best_depth = lineno, depth
            # An inline table on this line holds deeper keys: credit them to this line.
            if depth == len(full) and len(target) > len(full):
                rest = line.split("=", 1)[1]
                for deeper in range(len(full), len(target)):
                    name = target[deeper]
                    if isinstance(name, str) and re.search(rf"\b{re.escape(name)}\s*=", rest):
                        best_depth = deeper + 1
                        best_line = lineno
            value = line.split("=", 1)[1]
            for quote in ('"""', "'''"):
                if value.count(quote) == 1:
                    in_multiline = quote
    return best_line


def _common(a: tuple[str | int, ...], b: tuple[str | int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# Validation


class _Fields:
    """Reads one TOML table, remembering its path; every error names file, line and field."""

    def __init__(self, loader: _Loader, table: Mapping[str, Any], path: tuple[str | int, ...]):
        self.loader = loader
        self.table = table
        self.path = path
        self.used: set[str] = set()

    def error(self, key: str | int | None, message: str) -> UserError:
        path = self.path + ((key,) if key is not None else ())
        return self.loader.error(path, message)

    def get(
        self, key: str, types: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.error(None, f"missing required field {_dotted(self.path + (key,))!r}")
            return default
        value = self.table[key]
        if not _is_type(value, types):
            raise self.error(key, f"expected {_type_name(types)}, got {_value_repr(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf
            raise self.error(key, f"must be a finite number, got {value}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # tomllib reads any size
            raise self.error(key, f"must fit in 64 bits (TOML integers do), got "
                                  f"{len(str(abs(value)))} digits")
        return value

    def number(
        self, key: str, default: float | None = None, minimum: float = 0.0, required: bool = False
    ) -> Any:
        value = self.get(key, (int, float), default, required)
        if value is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum:g}, got {value}")
        return None if value is None else float(value)

    def integer(self, key: str, default: int | None = None, minimum: int = 0) -> Any:
        value = self.get(key, int, default)
        if value is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def choice(
        self, key: str, choices: Sequence[str], default: str | None = None, required: bool = False
    ) -> Any:
        value = self.get(key, str, default, required)
        if value is not None and value not in choices:
            guess = difflib.get_close_matches(value, choices, n=1)
            if guess:
                raise self.error(key, f"unknown value {value!r}; did you mean {guess[0]!r}?")
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def table_of(self, key: str) -> _Fields | None:
        value = self.get(key, dict)
        return None if value is None else _Fields(self.loader, value, self.path + (key,))

    def known_keys(self, allowed: Mapping[str, type | tuple[type, ...]], owner: str,
                   noun: str) -> dict[str, Any]:
        """Every key of this table, type-checked; a key not in ``allowed`` is an error naming
        the ones that are (``owner`` has no ``noun`` 'x')."""
        values: dict[str, Any] = {}
        for key in list(self.table):
            if key not in allowed:
                names = ", ".join(allowed) or "none"
                raise self.error(key, f"{owner} has no {noun} {key!r} ({noun}s: {names})")
            values[key] = self.get(key, allowed[key])
        self.finish()
        return values

    def finish(self) -> None:
        unknown = [k for k in self.table if k not in self.used]
        if unknown:
            where = f" in [{_dotted(self.path)}]" if self.path else ""
            guess = difflib.get_close_matches(unknown[0], sorted(self.used), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise self.error(unknown[0], f"unknown field {unknown[0]!r}{where}{hint}")


class _Loader:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text

    def error(self, path: tuple[str | int, ...], message: str) -> UserError:
        line = locate(self.text, path)
        where = f"{self.path}:{line}" if line else str(self.path)
        field_name = _dotted(path)
        prefix = (
            f"{field_name}: " if field_name and not message.startswith("missing required") else ""
        )
        return UserError(f"{where}: {prefix}{message}")

    def load(self) -> Scenario:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            line = f":{match.group(1)}" if match else ""
            raise UserError(f"{self.path}{line}: not valid TOML: {exc}") from None
        except ValueError:  # tomllib's int() refuses more than 4,300 digits
            match = re.search(r"\d{4300,}", self.text)
            line = f":{self.text.count(chr(10), 0, match.start()) + 1}" if match else ""
            raise UserError(f"{self.path}{line}: not valid TOML: an integer of more than 4,300 "
                            f"digits") from None
        top = _Fields(self, data, ())
        name = top.get("name", str, required=True)
        if not NAME_PATTERN.match(name):
            raise top.error(
                "name", f"use lower-case letters, digits, '.', '_' and '-'; got {name!r}"
            )
        description = top.get("description", str, required=True).strip()
        if len(description.split()) < 5:
            raise top.error("description", "write a sentence or more on the failure this models")
        source = top.get("source", str, required=True)
        if not SOURCE_PATTERN.match(source):
            raise top.error(
                "source", f"must be {SOURCE_FORMS}; got {source!r}"
            )
        tags = top.get("tags", list, [])
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not NAME_PATTERN.match(tag):
                raise top.error(
                    "tags", f"tag #{i + 1} must be a lower-case word; got {_value_repr(tag)}"
                )
        if REAL_WORLD_TAG in tags and not re.search(UPSTREAM_REF, source):
            raise top.error("source", f"a scenario tagged {REAL_WORLD_TAG!r} names the upstream "
                                      f"report it reproduces, 'owner/repo#N'; got {source!r}")
        seed = top.integer("seed")
        gateway = self._gateway(top.table_of("gateway"))
        expect = self._expect(top.table_of("expect"))
        raw_steps = top.get("steps", list, [])
        steps = tuple(self._step(i, raw) for i, raw in enumerate(raw_steps))
        for i, step in enumerate(steps):
            self._within_the_run(i, step, expect.duration)
        names = [s.name for s in steps]
        for i, step_name in enumerate(names):
            if names.index(step_name) != i:
                raise self.error(("steps", i, "name"), f"step name {step_name!r} is used twice")
        top.finish()
        return Scenario(
            name=name,
            description=description,
            source=source,
            path=self.path,
            tags=tuple(tags),
            seed=seed,
            gateway=gateway,
            steps=steps,
            expect=expect,
        )

    def _within_the_run(self, index: int, step: Step, run: float) -> None:
        """A step that starts, or lasts, past the run's end would pass silently, never done."""
        start = step.start
        earliest = start.at if start.at is not None else start.delay
        where = ("steps", index, "start", "at" if start.at is not None else "delay")
        if earliest >= run:
            raise self.error(where, f"starts at {earliest:g} s or later, but the run ends at "
                                    f"{run:g} s ([expect] duration)")
        if step.duration is not None and earliest + step.duration > run:
            raise self.error(("steps", index, "duration"),
                             f"{step.duration:g} s from {earliest:g} s ends after the run does "
                             f"({run:g} s, [expect] duration)")

    def _gateway(self, f: _Fields | None) -> GatewayKnobs:
        if f is None:
            return GatewayKnobs()
        values: dict[str, Any] = {}
        for key, k in SCENARIO_KNOBS.items():
            if k.type is bool:
                value = f.get(key, bool)
            elif k.type is str:
                value = f.choice(key, k.knob.choices)
            elif k.type is int:
                value = f.integer(key, minimum=int(k.knob.minimum or 0))
            else:
                value = f.number(key, minimum=k.knob.minimum or 0.0)
            if value is not None:
                problem = k.problem(value)
                if problem is not None:
                    raise f.error(key, problem)
                values[k.name] = value
        d = GatewayKnobs()
        knobs = GatewayKnobs(
            config=scenario_config(**values),
            tls=f.get("tls", bool, d.tls),
            compression=f.choice("compression", SCENARIO_COMPRESSIONS, d.compression),
            encoding=f.choice("encoding", ENCODINGS, d.encoding),
        )
        f.finish()
        return knobs

    def _expect(self, f: _Fields | None) -> Expectations:
        if f is None:
            raise self.error(
                (), "missing required table [expect] (at least duration and recovery_bound)"
            )
        d = Expectations()
        outcome = f.choice("outcome", OUTCOMES)
        recovery_bound = f.number("recovery_bound", required=True, minimum=0.0)
        duration = f.number("duration", required=True, minimum=0.1)
        max_identifies = f.integer("max_identifies")
        max_resumes = f.integer("max_resumes")
        tolerances = d.tolerances
        tol = f.table_of("tolerances")
        if tol is not None:
            values: dict[str, Any] = {}
            for spec in fields(Tolerances):
                default = getattr(Tolerances(), spec.name)
                if isinstance(default, int):
                    values[spec.name] = tol.integer(spec.name, default)
                else:
                    values[spec.name] = tol.number(spec.name, default)
            tol.finish()
            tolerances = Tolerances(**values)
        f.finish()
        return Expectations(
            outcome=outcome,
            recovery_bound=recovery_bound,
            duration=duration,
            max_identifies=max_identifies,
            max_resumes=max_resumes,
            tolerances=tolerances,
        )

    def _trigger(self, f: _Fields) -> Trigger:
        at = f.number("at")
        after = f.choice("after", EVENTS)
        if (at is None) == (after is None):
            raise f.error(
                None, f"{_dotted(f.path)} needs exactly one of 'at' (seconds) or 'after' (an event)"
            )
        count = f.integer("count", 1, minimum=1)
        delay = f.number("delay", 0.0)
        op = f.integer("op")
        seq = f.integer("seq", minimum=1)
        code = f.integer("code")
        by = f.choice("by", ("client", "server", "network"))
        listener = f.choice("listener", ("discovery", "resume"))
        conn = f.integer("conn", minimum=1)
        if after in ("client_op", "server_op") and op is None:
            raise f.error("after", f"event {after!r} needs 'op' (the opcode to wait for)")
        if after == "seq" and seq is None:
            raise f.error("after", "event 'seq' needs 'seq' (the sequence number to wait for)")
        if op is not None and after not in ("client_op", "server_op"):
            raise f.error("op", "'op' only applies to the client_op and server_op events")
        if seq is not None and after != "seq":
            raise f.error("seq", "'seq' only applies to the seq event")
        if (code is not None or by is not None) and after != "close":
            raise f.error(
                "code" if code is not None else "by",
                "'code' and 'by' only apply to the close event",
            )
        if at is not None:
            for key in ("count", "delay", "listener", "conn"):
                if key in f.table:
                    raise f.error(key, f"{key!r} only applies to event triggers ('after')")
        f.finish()
        return Trigger(at, after, count, delay or 0.0, op, seq, code, by, listener, conn)

    def _step(self, index: int, raw: Any) -> Step:
        path: tuple[str | int, ...] = ("steps", index)
        if not isinstance(raw, dict):
            raise self.error(path, "each step must be a table ([[steps]])")
        f = _Fields(self, raw, path)
        kind = f.choice("kind", ("toxic", "proxy", "control"), required=True)
        name = f.get("name", str, f"step{index + 1}")
        start_f = f.table_of("start")
        if start_f is None:
            for key in f.table:  # a misspelt start is the error, not the missing one
                if key != "start" and difflib.get_close_matches(key, ["start"], cutoff=0.8):
                    raise f.error(key, f"unknown field {key!r}; did you mean 'start'?")
            raise f.error(
                None,
                f"missing required field {_dotted(path + ('start',))!r} (e.g. start = "
                f"{{at = 2.0}})",
            )
        start = self._trigger(start_f)
        duration = f.number("duration")
        stop_f = f.table_of("stop")
        stop = self._trigger(stop_f) if stop_f is not None else None
        if duration is not None and stop is not None:
            raise f.error("stop", "give either 'duration' or 'stop', not both")
        if duration is not None and duration <= 0:
            raise f.error("duration", f"must be positive, got {duration:g}")
        if stop is not None and stop.is_time:
            raise f.error("stop", "a stop trigger must be an event; for a time use 'duration'")
        step = Step(name=name, kind=kind, start=start, duration=duration, stop=stop)
        if kind == "toxic":
            step = self._toxic(f, step)
        elif kind == "proxy":
            action = f.choice("action", tuple(sorted(PROXY_ACTIONS)), required=True)
            target = f.choice("target", TARGET_URLS, "both")
            step = _replace(step, action=action, target=target)
        else:
            step = self._control(f, step)
        f.finish()
        return step

    def _toxic(self, f: _Fields, step: Step) -> Step:
        toxic_type = f.choice("type", tuple(TOXIC_ATTRIBUTES), required=True)
        attrs_f = f.table_of("attributes")
        attrs: dict[str, Any] = {}
        if attrs_f is not None:
            attrs = attrs_f.known_keys(TOXIC_ATTRIBUTES[toxic_type], f"toxic {toxic_type!r}",
                                       "attribute")
            for key, value in attrs.items():
                if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                    raise attrs_f.error(key, f"must not be negative, got {value}")
        if toxic_type == "slicer":
            avg = attrs.get("average_size", 0)
            if avg <= 0:
                raise f.error("attributes", "slicer needs average_size > 0")
            if attrs.get("size_variation", 0) > avg:
                raise f.error("attributes", "slicer size_variation must not exceed average_size")
        if toxic_type == "bandwidth" and attrs.get("rate", 0) <= 0:
            raise f.error(
                "attributes", "bandwidth needs rate > 0 (KB/s; 0 stalls Toxiproxy forever)"
            )
        if toxic_type == "reset_after":
            if attrs.get("mode", "rst") not in ("rst", "fin"):
                raise f.error(
                    "attributes", f"reset_after mode must be 'rst' or 'fin', got {attrs['mode']!r}"
                )
        stream = f.choice("stream", ("upstream", "downstream"), "downstream")
        toxicity = f.number("toxicity", 1.0)
        if toxicity is not None and toxicity > 1.0:
            raise f.error("toxicity", f"must be between 0 and 1, got {toxicity:g}")
        target = f.choice("target", TARGET_URLS, "both")
        only = f.integer("only_connection", minimum=1)
        from_conn = f.integer("from_connection", minimum=1)
        if only is not None and from_conn is not None:
            raise f.error(
                "from_connection", "give either only_connection or from_connection, not both"
            )
        return _replace(
            step,
            type=toxic_type,
            attributes=attrs,
            stream=stream,
            toxicity=float(toxicity if toxicity is not None else 1.0),
            target=target,
            only_connection=only,
            from_connection=from_conn,
        )

    def _control(self, f: _Fields, step: Step) -> Step:
        action = f.choice("action", tuple(CONTROLS), required=True)
        target = f.get("target", (int, str), "all")
        if isinstance(target, str) and target not in ("all", "next"):
            raise f.error(
                "target", f"a control targets a connection id, 'all' or 'next'; got {target!r}"
            )
        if isinstance(target, int) and target < 1:
            raise f.error("target", f"connection ids start at 1, got {target}")
        params_f = f.table_of("params")
        params: dict[str, Any] = {}
        if params_f is not None:
            # The runner adds ``on = true/false`` itself when it switches a persistent control.
            spec = CONTROLS[action].params
            allowed = {name: param.types for name, param in spec.items()}
            params = params_f.known_keys(allowed, f"control {action!r}", "param")
            for name, value in params.items():
                problem = spec[name].problem(value)
                if problem is not None:
                    raise params_f.error(name, problem)
        if action in ONE_SHOT_CONTROLS and (step.duration is not None or step.stop is not None):
            raise f.error(
                "duration" if step.duration is not None else "stop",
                f"control {action!r} happens once; it takes no duration or stop",
            )
        return _replace(step, action=action, params=params, conn_target=target)


def _replace(step: Step, **changes: Any) -> Step:
    from dataclasses import replace

    return replace(step, **changes)


def _is_type(value: Any, types: type | tuple[type, ...]) -> bool:
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in wanted:
        return False
    if float in wanted and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, wanted)


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    wanted = types if isinstance(types, tuple) else (types,)
    if set(wanted) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in wanted)


def _value_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += ("." if out else "") + part
    return out


# ------------------------------------------------------------------------------------------------
# Public API


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file; a problem raises UserError naming file, line, field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    return _Loader(path, text).load()


def parse_scenario(text: str, path: str | Path = "<scenario>") -> Scenario:
    """Validate scenario TOML text (for generated schedules and tests)."""
    return _Loader(Path(path), text).load()


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """The scenario files in the given files and folders.

    A folder is a suite: its own ``*.toml`` files, sorted, not those of its sub-folders (the
    built-in ``scenarios/`` is the default suite, ``scenarios/extended/`` a second one).
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.glob("*.toml")))
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: no such scenario file or folder")
    return out


def load_scenarios(paths: Iterable[str | Path], tags: Iterable[str] = ()) -> list[Scenario]:
    """Load every scenario under the paths, keeping those with any of ``tags`` (all if none).

    A folder is a suite; so is a tag. Names must be unique across what is loaded.
    """
    wanted = set(tags)
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for path in scenario_files(paths):
        scenario = load_scenario(path)
        if scenario.name in seen:
            raise UserError(
                f"{path}: name {scenario.name!r} is already used by {seen[scenario.name]}"
            )
        seen[scenario.name] = path
        if not wanted or wanted & set(scenario.tags):
            scenarios.append(scenario)
    return scenarios


def builtin_scenarios_dir() -> Path:
    """The built-in suite shipped in the repository's scenarios/ folder."""
    return Path(__file__).resolve().parent.parent / "scenarios"


def run_settled(scenario: Scenario, records: Sequence[Record], now: float, beats: int = 2) -> bool:
    """Whether a run may end before ``expect.duration`` without changing any verdict's meaning.

    True once every step has switched on (and off, unless one-shot or meant to last), and then
    either the client is live again with ``beats`` ACKed heartbeats after the last fault cleared
    (LV1 passes), or, for ``outcome = "stop"``, the recovery bound plus one interval has passed in
    silence. The runner may poll this to keep the suite short; ``duration`` stays the hard limit.
    """
    # Here, not at the top: loading a scenario must not load the checks.
    from harness.oracle.liveness import check_lv1, last_fault_cleared
    from harness.oracle.view import RunView

    switched: dict[str, set[str]] = {}
    for rec in records:
        if rec.get("kind") == "fault":
            switched.setdefault(str(rec.get("name")), set()).add(str(rec.get("state")))
    for step in scenario.steps:
        states = switched.get(step.name, set())
        if "on" not in states:
            return False
        if not step.one_shot and not step.persistent_until_end and "off" not in states:
            return False
    view = RunView([*records, {"ts": now, "kind": "note", "text": "settled?"}])
    cleared, _, _ = last_fault_cleared(view)
    if cleared is None:
        return False
    exp = scenario.expect
    if exp.outcome == "stop":
        interval = scenario.gateway.config.heartbeat_interval
        return (
            now >= cleared + exp.recovery_bound + interval and check_lv1(view, exp).status == "pass"
        )
    if check_lv1(view, exp).status != "pass":
        return False
    acked = 0
    for conn in view.conns.values():
        if conn.live is None or conn.close is not None:
            continue
        acks = conn.acks()
        acked = max(
            acked,
            sum(
                1
                for b in conn.beats()
                if b.ts >= cleared and b.idx > conn.live.idx and any(a.idx > b.idx for a in acks)
            ),
        )
    return acked >= beats


# ------------------------------------------------------------------------------------------------
# Writing scenarios back (a failing run leaves a file that replays it; generated schedules too)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _trigger_table(trigger: Trigger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in fields(Trigger):
        value = getattr(trigger, spec.name)
        if value != spec.default:
            out[spec.name] = value
    if trigger.at is not None:
        out["at"] = trigger.at
    return out


def scenario_to_toml(
    scenario: Scenario, seed: int | None = None, comments: Sequence[str] = ()
) -> str:
    """The scenario as a TOML file that loads back to the same scenario (``seed`` overrides;
    ``comments`` become ``#`` lines at the top)."""
    lines = [f"# {line}" for comment in comments for line in comment.splitlines() or [""]]
    lines += [f"name = {_toml_value(scenario.name)}", f"source = {_toml_value(scenario.source)}"]
    lines.append(f"tags = {_toml_value(list(scenario.tags))}")
    description = scenario.description.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines.append(f'description = """\n{description}\n"""')
    chosen_seed = scenario.seed if seed is None else seed
    if chosen_seed is not None:
        lines.append(f"seed = {chosen_seed}")
    gateway = scenario.gateway
    knobs = [
        f"{key} = {_toml_value(getattr(gateway.config, k.name))}"
        for key, k in SCENARIO_KNOBS.items()
        if getattr(gateway.config, k.name) != k.scenario_default
    ] + [
        f"{spec.name} = {_toml_value(getattr(gateway, spec.name))}"
        for spec in fields(GatewayKnobs)
        if spec.name != "config" and getattr(gateway, spec.name) != spec.default
    ]
    if knobs:
        lines += ["", "[gateway]", *knobs]
    exp = scenario.expect
    lines += ["", "[expect]"]
    if exp.outcome is not None:
        lines.append(f"outcome = {_toml_value(exp.outcome)}")
    lines.append(f"recovery_bound = {_toml_value(exp.recovery_bound)}")
    lines.append(f"duration = {_toml_value(exp.duration)}")
    for name in ("max_identifies", "max_resumes"):
        if getattr(exp, name) is not None:
            lines.append(f"{name} = {getattr(exp, name)}")
    tolerances = [
        f"{spec.name} = {_toml_value(getattr(exp.tolerances, spec.name))}"
        for spec in fields(Tolerances)
        if getattr(exp.tolerances, spec.name) != getattr(Tolerances(), spec.name)
    ]
    if tolerances:
        lines += ["", "[expect.tolerances]", *tolerances]
    for step in scenario.steps:
        lines += [
            "",
            "[[steps]]",
            f"name = {_toml_value(step.name)}",
            f"kind = {_toml_value(step.kind)}",
        ]
        if step.kind == "toxic":
            lines.append(f"type = {_toml_value(step.type)}")
            if step.attributes:
                lines.append(f"attributes = {_toml_value(step.attributes)}")
            lines.append(f"stream = {_toml_value(step.stream)}")
            if step.toxicity != 1.0:
                lines.append(f"toxicity = {_toml_value(step.toxicity)}")
        else:
            lines.append(f"action = {_toml_value(step.action)}")
        if step.kind in ("toxic", "proxy"):
            lines.append(f"target = {_toml_value(step.target)}")
            for name in ("only_connection", "from_connection"):
                if getattr(step, name) is not None:
                    lines.append(f"{name} = {getattr(step, name)}")
        else:
            if step.params:
                lines.append(f"params = {_toml_value(step.params)}")
            lines.append(f"target = {_toml_value(step.conn_target)}")
        lines.append(f"start = {_toml_value(_trigger_table(step.start))}")
        if step.duration is not None:
            lines.append(f"duration = {_toml_value(step.duration)}")
        if step.stop is not None:
            lines.append(f"stop = {_toml_value(_trigger_table(step.stop))}")
    return "\n".join(lines) + "\n"
