"""Toxics: their definitions (attribute schemas, validation, JSON shape) and sans-I/O cores.

A *core* is the per-connection, per-direction state of one toxic. It never sleeps, reads a clock
or opens a socket: the driver (``harness.faults.link``) hands it chunks, end-of-stream and the
current time, and executes the ``Step`` list it returns:

- ``Forward(data, ts)``: pass these bytes on (``ts`` is the chunk's timestamp for later toxics);
- ``WaitUntil(t)`` / ``Sleep(seconds)``: wait (absolute trio time / relative to when the step
  starts); an interrupt (toxic updated or removed) skips waits and flushes pending forwards;
- ``End(mode)``: end the stream here: ``"fin"`` (graceful close of the whole connection, as
  Toxiproxy's stage close) or ``"rst"`` (reset both sides);
- ``SilencePeer()``: from now on the other direction delivers nothing (so a reply cannot slip
  through between a forwarded chunk and the reset that follows it).

Randomness comes only from the ``random.Random`` the driver passes in (derived from the run seed).
Semantics follow Shopify/toxiproxy 2.12 (``toxics/*.go``) except where noted in
``/README.md`` ("Fault proxy").
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------------------------
# Steps


class Forward(NamedTuple):
    data: bytes
    ts: float


class WaitUntil(NamedTuple):
    deadline: float


class Sleep(NamedTuple):
    seconds: float


class End(NamedTuple):
    mode: str  # "fin" | "rst"


class SilencePeer(NamedTuple):
    """Deliver nothing more in the other direction of this connection (from now on)."""


Step = Forward | WaitUntil | Sleep | End | SilencePeer

FIN = "fin"
RST = "rst"

INT64_MAX = 2**63 - 1


class ToxicError(ValueError):
    """A toxic request the API answers with 400 (message is the whole error text)."""


class ToxicExists(ValueError):
    """The toxic's name is already used on that proxy (409)."""


# ---------------------------------------------------------------------------------------------
# Cores


class ToxicCore:
    """Base core: pass everything through; forward end-of-stream."""

    def __init__(self, attributes: dict[str, Any], rng: random.Random) -> None:
        self.attributes = attributes
        self.rng = rng

    def update(self, attributes: dict[str, Any]) -> None:
        """New attribute values; per-connection state (e.g. byte counters) is kept."""
        self.attributes = attributes

    def on_start(self, now: float) -> list[Step]:
        """The stage (re)started: at connection creation, live add, or update."""
        return []

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        return [Forward(data, ts)]

    def on_end(self, mode: str, now: float) -> list[Step]:
        return [End(mode)]

    def idle_deadline(self) -> float | None:
        """Time at which ``on_idle`` fires if no input arrives before it (None: never)."""
        return None

    def on_idle(self, now: float) -> list[Step]:
        return []

    def release(self) -> list[Step]:
        """The toxic is being removed: what it still holds goes on (ahead of its pending steps)."""
        return []


class NoopCore(ToxicCore):
    pass


class LatencyCore(ToxicCore):
    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        delay_ms = self.attributes["latency"]
        jitter = self.attributes["jitter"]
        if jitter > 0:
            delay_ms += self.rng.randrange(2 * jitter) - jitter
        due = ts + max(delay_ms, 0) / 1000
        # The forwarded chunk carries its due time, so a second latency toxic adds its own delay.
        return [WaitUntil(due), Forward(data, max(due, now))]


class BandwidthCore(ToxicCore):
    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        rate = self.attributes["rate"]  # KB/s, 1 KB = 1000 B; validated > 0
        piece_size = rate * 100  # what may pass per 100 ms
        steps: list[Step] = []
        start = now
        sent_pieces = 0
        while len(data) > piece_size:
            sent_pieces += 1
            steps += [WaitUntil(start + sent_pieces * 0.1), Forward(data[:piece_size], ts)]
            data = data[piece_size:]
        total = (len(data) + sent_pieces * piece_size) / (rate * 1000)
        steps += [WaitUntil(start + total), Forward(data, ts)]
        return steps


class SlowCloseCore(ToxicCore):
    def on_end(self, mode: str, now: float) -> list[Step]:
        return [Sleep(self.attributes["delay"] / 1000), End(mode)]


class TimeoutCore(ToxicCore):
    """Drops data; closes the connection after ``timeout`` ms without incoming data (0: never)."""

    def __init__(self, attributes: dict[str, Any], rng: random.Random) -> None:
        super().__init__(attributes, rng)
        self.armed_at = 0.0

    def on_start(self, now: float) -> list[Step]:
        self.armed_at = now
        return []

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        self.armed_at = now
        return []

    def idle_deadline(self) -> float | None:
        timeout = self.attributes["timeout"]
        return self.armed_at + timeout / 1000 if timeout > 0 else None

    def on_idle(self, now: float) -> list[Step]:
        return [End(FIN)]

    def on_end(self, mode: str, now: float) -> list[Step]:
        return [End(mode)]


class ResetPeerCore(ToxicCore):
    """On the first chunk (dropped) or end-of-stream: wait ``timeout`` ms, then reset."""

    def _fire(self) -> list[Step]:
        return [Sleep(self.attributes["timeout"] / 1000), End(RST)]

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        return self._fire()

    def on_end(self, mode: str, now: float) -> list[Step]:
        return self._fire()


class SlicerCore(ToxicCore):
    def _cut(self, data: bytes) -> list[bytes]:
        average = self.attributes["average_size"]
        variation = self.attributes["size_variation"]
        pieces: list[bytes] = []
        spans = [data]  # a stack, so pieces come out in order without recursion
        while spans:
            span = spans.pop()
            if len(span) - average <= variation:
                pieces.append(span)
                continue
            offset = len(span) // 2
            if variation > 0:
                offset += self.rng.randrange(2 * variation) - variation
            spans.append(span[offset:])
            spans.append(span[:offset])
        return pieces

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        pause = Sleep(self.attributes["delay"] / 1_000_000)
        steps: list[Step] = []
        for piece in self._cut(data):
            steps += [Forward(piece, ts), pause]
        return steps


class LimitDataCore(ToxicCore):
    def __init__(self, attributes: dict[str, Any], rng: random.Random) -> None:
        super().__init__(attributes, rng)
        self.passed = 0  # survives updates and restarts, as in Toxiproxy

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        remaining = self.attributes["bytes"] - self.passed
        if remaining <= 0:
            return [End(FIN)]
        piece = data[:remaining]
        self.passed += len(piece)
        steps: list[Step] = [Forward(piece, ts)]
        if self.passed >= self.attributes["bytes"]:
            steps.append(End(FIN))
        return steps


class ResetAfterCore(ToxicCore):
    """Extension: once ``bytes`` bytes have passed in this direction, reset (or FIN) the connection.

    ``bytes: 0`` fires as soon as the connection is set up. With ``forward`` the chunk that
    reached the count is passed on first (chunk granularity: the whole first write of a client,
    e.g. a TLS ClientHello, goes up), otherwise it is dropped. From the moment it fires nothing
    more is delivered in the other direction, so no reply gets through before the reset.
    """

    def __init__(self, attributes: dict[str, Any], rng: random.Random) -> None:
        super().__init__(attributes, rng)
        self.seen = 0
        self.fired = False

    def _fire(self, forward: list[Step]) -> list[Step]:
        self.fired = True
        end = End(RST if self.attributes["mode"] == RST else FIN)
        return [SilencePeer(), *forward, end]

    def on_start(self, now: float) -> list[Step]:
        if not self.fired and self.attributes["bytes"] <= self.seen:
            return self._fire([])
        return []

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        if self.fired:
            return []
        self.seen += len(data)
        if self.seen < self.attributes["bytes"]:
            return [Forward(data, ts)]
        return self._fire([Forward(data, ts)] if self.attributes["forward"] else [])


# What a blackhole reads and holds per direction before it stops reading (the sender then
# backs up, as into a full TCP send buffer and receive window).
BLACKHOLE_HOLD_LIMIT = 1 << 20


class BlackholeCore(ToxicCore):
    """Extension: a path that carries nothing. Reads and holds everything (up to
    ``BLACKHOLE_HOLD_LIMIT`` bytes, then stops reading), never forwards, never closes (not even
    on EOF); on removal what it holds goes on in order, as TCP's retransmissions would deliver
    it once the path is back. It never drops bytes: a live connection has no holes."""

    def __init__(self, attributes: dict[str, Any], rng: random.Random) -> None:
        super().__init__(attributes, rng)
        self.held: list[Forward] = []
        self.held_bytes = 0

    def on_chunk(self, data: bytes, ts: float, now: float) -> list[Step]:
        self.held.append(Forward(data, ts))
        self.held_bytes += len(data)
        if self.held_bytes >= BLACKHOLE_HOLD_LIMIT:
            return [WaitUntil(float("inf"))]  # take no more input: the sender backs up
        return []

    def on_end(self, mode: str, now: float) -> list[Step]:
        return []

    def release(self) -> list[Step]:
        held, self.held, self.held_bytes = self.held, [], 0
        return list(held)


# ---------------------------------------------------------------------------------------------
# Definitions: attribute schemas, validation and JSON


@dataclass(frozen=True)
class Attr:
    name: str
    kind: type  # int | str | bool
    default: Any
    check: Callable[[Any, dict[str, Any]], str | None] = lambda value, attrs: None
    go_type: str = ""  # the Go field's type, for decode errors ("" = int64 / string / bool)


def _positive(value: Any, attrs: dict[str, Any]) -> str | None:
    return "must be > 0 (0 or less stalls or crashes Toxiproxy)" if value <= 0 else None


def _variation(value: Any, attrs: dict[str, Any]) -> str | None:
    if value < 0:
        return "must be >= 0"
    if value > attrs["average_size"]:
        return "must not exceed average_size (Toxiproxy panics on that)"
    return None


def _mode(value: Any, attrs: dict[str, Any]) -> str | None:
    return None if value in (RST, FIN) else 'must be "rst" or "fin"'


def _connection_number(value: Any, attrs: dict[str, Any]) -> str | None:
    return "must be >= 1 (connections are numbered from 1)" if value < 1 else None


@dataclass(frozen=True)
class ToxicType:
    name: str
    go_struct: str
    attrs: tuple[Attr, ...]
    core: type[ToxicCore]
    extension: bool = False  # not known to a real Toxiproxy server
    default_stream: str = "downstream"
    closes_on_removal: bool = False  # Toxiproxy "cleanup": removing it closes the connection


TOXIC_TYPES: dict[str, ToxicType] = {
    t.name: t
    for t in (
        ToxicType("noop", "NoopToxic", (), NoopCore),
        ToxicType(
            "latency",
            "LatencyToxic",
            (
                Attr("latency", int, 0),
                Attr("jitter", int, 0),
            ),
            LatencyCore,
        ),
        ToxicType("bandwidth", "BandwidthToxic", (Attr("rate", int, 0, _positive),), BandwidthCore),
        ToxicType(
            "slow_close",
            "SlowCloseToxic",
            (Attr("delay", int, 0),),
            SlowCloseCore,
        ),
        ToxicType(
            "timeout",
            "TimeoutToxic",
            (Attr("timeout", int, 0),),
            TimeoutCore,
            closes_on_removal=True,
        ),
        ToxicType(
            "reset_peer",
            "ResetToxic",
            (Attr("timeout", int, 0),),
            ResetPeerCore,
        ),
        ToxicType(
            "slicer",
            "SlicerToxic",
            (
                Attr("average_size", int, 0, _positive, "int"),
                Attr("size_variation", int, 0, _variation, "int"),
                Attr("delay", int, 0, go_type="int"),
            ),
            SlicerCore,
        ),
        ToxicType(
            "limit_data",
            "LimitDataToxic",
            (Attr("bytes", int, 0),),
            LimitDataCore,
        ),
        ToxicType(
            "reset_after",
            "ResetAfterToxic",
            (
                Attr("bytes", int, 0),
                Attr("mode", str, RST, _mode),
                Attr("forward", bool, True),
            ),
            ResetAfterCore,
            extension=True,
            default_stream="upstream",
        ),
        ToxicType("blackhole", "BlackholeToxic", (), BlackholeCore, extension=True),
    )
}

# Extension attributes any toxic may carry (absent = every connection).
TARGET_ATTRS = (
    Attr("only_connection", int, None, _connection_number),
    Attr("from_connection", int, None, _connection_number),
)


class JsonFloat(float):
    """A JSON number with a fraction or exponent, remembering how it was written: Go's decode
    errors quote it (``number 1e3``). Pass as ``parse_float`` to a ``json`` decoder."""

    literal: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.literal = text
        return number


def go_json_kind(value: Any, *, into_number: bool = False) -> str:
    """How Go's ``encoding/json`` names a value it cannot decode: the JSON kind, and for a
    number that does not fit a numeric field, the number as written."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {getattr(value, 'literal', value)}" if into_number else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "value"


def decode_error(kind: str, target: str) -> str:
    """Go's ``bad request body: json: cannot unmarshal ...`` for a value of the wrong type;
    ``target`` is Go's "Go value of type X" or "Go struct field F of type X"."""
    return f"bad request body: json: cannot unmarshal {kind} into {target}"


_GO_KIND = {int: "int64", str: "string", bool: "bool"}

# Go's type names in decode errors of toxic requests (toxic_collection.go).
_CREATE_BODY = "toxics.ToxicWrapper"
_UPDATE_BODY = (
    'struct { Attributes interface {} "json:\\"attributes\\""; '
    'Toxicity float32 "json:\\"toxicity\\"" }'
)


def _coerce(toxic_type: ToxicType, attr: Attr, value: Any) -> Any:
    """Check one attribute's JSON type as Go's decoder would; raise ToxicError if it fails."""
    ok = (
        (attr.kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (attr.kind is bool and isinstance(value, bool))
        or (attr.kind is str and isinstance(value, str))
    )
    if attr.kind is int and ok and not -(2**63) <= value <= INT64_MAX:
        ok = False
    if not ok:
        target = (
            f"Go struct field {toxic_type.go_struct}.attributes.{attr.name} of type "
            f"{attr.go_type or _GO_KIND[attr.kind]}"
        )
        raise ToxicError(decode_error(go_json_kind(value, into_number=attr.kind is int), target))
    return value


def merge_attributes(
    toxic_type: ToxicType, current: dict[str, Any] | None, given: Any
) -> dict[str, Any]:
    """Decode ``given`` (JSON attributes, may be None) over ``current`` (or the defaults) and
    validate the result. Unknown keys are ignored, as in Toxiproxy."""
    if given is not None and not isinstance(given, dict):
        # On create Go decodes the attributes into a placeholder first (build_toxic).
        target = f"Go struct field .attributes of type toxics.{toxic_type.go_struct}"
        raise ToxicError(decode_error(go_json_kind(given), target))
    given = given or {}
    if current is None:
        merged: dict[str, Any] = {a.name: a.default for a in toxic_type.attrs}
        merged.update({a.name: None for a in TARGET_ATTRS})
    else:
        merged = dict(current)
    for attr in (*toxic_type.attrs, *TARGET_ATTRS):
        if attr.name in given and given[attr.name] is not None:
            merged[attr.name] = _coerce(toxic_type, attr, given[attr.name])
    for attr in (*toxic_type.attrs, *TARGET_ATTRS):
        value = merged[attr.name]
        if value is None:
            continue
        problem = attr.check(value, merged)
        if problem:
            raise ToxicError(
                f"invalid attribute {attr.name}={value!r} for toxic type {toxic_type.name}: "
                f"{problem}"
            )
    return merged


@dataclass
class Toxic:
    """A toxic as the API knows it (one per name per proxy)."""

    name: str
    type: ToxicType
    stream: str  # as sent (case kept), e.g. "upstream" or "Downstream"
    toxicity: float
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return self.stream.lower()

    @property
    def only_connection(self) -> int | None:
        value = self.attributes.get("only_connection")
        return int(value) if value is not None else None

    @property
    def from_connection(self) -> int | None:
        value = self.attributes.get("from_connection")
        return int(value) if value is not None else None

    def targets(self, connection_number: int) -> bool:
        """Whether this toxic applies to the proxy's ``connection_number``-th connection."""
        only, start = self.only_connection, self.from_connection
        if only is not None and connection_number != only:
            return False
        return start is None or connection_number >= start

    def applies_to_direction(self, direction: str) -> bool:
        # A blackhole silences the whole connection, whatever stream it was filed under.
        return self.type.name == "blackhole" or self.direction == direction

    def roll_key(self, direction: str) -> str:
        return "both" if self.type.name == "blackhole" else direction

    def uses_extensions(self) -> list[str]:
        """Human-readable list of what a real Toxiproxy server would not understand."""
        found = []
        if self.type.extension:
            found.append(f"toxic type {self.type.name!r}")
        for attr in TARGET_ATTRS:
            if self.attributes.get(attr.name) is not None:
                found.append(f"attribute {attr.name!r}")
        return found

    def to_json(self) -> dict[str, Any]:
        attrs = {a.name: self.attributes[a.name] for a in self.type.attrs}
        for attr in TARGET_ATTRS:
            if self.attributes.get(attr.name) is not None:
                attrs[attr.name] = self.attributes[attr.name]
        return {
            "attributes": attrs,
            "name": self.name,
            "type": self.type.name,
            "stream": self.stream,
            "toxicity": float32_json(self.toxicity),
        }

    def make_core(self, rng: random.Random) -> ToxicCore:
        return self.type.core(dict(self.attributes), rng)


def float32_json(value: float) -> float | int:
    """The number Go prints for a float32: shortest round-trip form (0.2 -> 0.2, 1 -> 1)."""
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    if f32 == int(f32) and abs(f32) < 2**53:
        return int(f32)
    for digits in range(1, 10):
        candidate = float(f"{f32:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == f32:
            return candidate
    return float(f32)


def _body_object(body: Any, go_type: str) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ToxicError(decode_error(go_json_kind(body), f"Go value of type {go_type}"))
    return body


def _toxicity(body: dict[str, Any], go_struct: str) -> float | None:
    toxicity = body.get("toxicity")
    if toxicity is None:
        return None
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        target = f"Go struct field {go_struct}.toxicity of type float32"
        raise ToxicError(decode_error(go_json_kind(toxicity), target))
    if not abs(toxicity) <= _FLOAT32_MAX:  # stored, 1e39 broke every listing with a 500
        target = f"Go struct field {go_struct}.toxicity of type float32"
        raise ToxicError(decode_error(go_json_kind(toxicity, into_number=True), target))
    return float(toxicity)


_FLOAT32_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


def _given_attributes(body: dict[str, Any]) -> Any:
    """The request's attributes; targeting may also be given next to them (extension)."""
    given = body.get("attributes")
    for attr in TARGET_ATTRS:
        if body.get(attr.name) is not None:
            given = {**(given if isinstance(given, dict) else {}), attr.name: body[attr.name]}
    return given


def build_toxic(body: Any, name_taken: Callable[[str], bool] = lambda name: False) -> Toxic:
    """A new toxic from a create request body (Toxiproxy's checks, in Toxiproxy's order:
    body, stream, type, name conflict, attributes)."""
    body = _body_object(body, _CREATE_BODY)
    for key in ("name", "type", "stream"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            target = f"Go struct field ToxicWrapper.{key} of type string"
            raise ToxicError(decode_error(go_json_kind(value), target))
    toxicity = _toxicity(body, "ToxicWrapper")
    attributes = _given_attributes(body)
    if attributes is not None and not isinstance(attributes, dict):
        # Go decodes the whole body before it knows the type, attributes into a NoopToxic.
        target = "Go struct field ToxicWrapper.attributes of type toxics.NoopToxic"
        raise ToxicError(decode_error(go_json_kind(attributes), target))
    type_name = body.get("type") or ""
    toxic_type = TOXIC_TYPES.get(type_name)
    stream = body.get("stream")
    if stream is None:
        stream = toxic_type.default_stream if toxic_type else "downstream"
    if stream.lower() not in ("upstream", "downstream"):
        raise ToxicError("stream was invalid, can be either upstream or downstream")
    name = body.get("name") or f"{type_name}_{stream}"  # the stream as sent, as Go does
    if toxic_type is None:
        raise ToxicError("invalid toxic type")
    if name_taken(name):
        raise ToxicExists("toxic already exists")
    attributes = merge_attributes(toxic_type, None, attributes)
    return Toxic(name, toxic_type, stream, 1.0 if toxicity is None else toxicity, attributes)


def update_toxic(toxic: Toxic, body: Any) -> None:
    """Apply an update body: merge attributes, keep toxicity unless given. All-or-nothing."""
    body = _body_object(body, _UPDATE_BODY)
    toxicity = _toxicity(body, "")
    toxic.attributes = merge_attributes(toxic.type, toxic.attributes, _given_attributes(body))
    if toxicity is not None:
        toxic.toxicity = toxicity
