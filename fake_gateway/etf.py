"""Erlang External Term Format (version 131), the subset Discord's gateway speaks (`encoding=etf`).

Sans-I/O and dependency-free: Python values in, bytes out, and back.

Python -> ETF (`encode`):
    None -> atom `nil`, True/False -> atoms `true`/`false`, `Atom` -> atom,
    int -> SMALL_INTEGER_EXT (0..255), INTEGER_EXT (signed 32 bit), SMALL_BIG_EXT or
    LARGE_BIG_EXT (snowflakes and anything wider), float -> NEW_FLOAT_EXT,
    str/bytes -> BINARY_EXT (UTF-8), list/tuple -> LIST_EXT (NIL_EXT when empty), dict -> MAP_EXT.
    Atoms go out as ATOM_EXT (100) when ASCII, which every decoder reads (Discord's erlpack for
    JavaScript reads no UTF-8 atom tags), else as (SMALL_)ATOM_UTF8_EXT.

Map keys: with `atom_keys=True` (what the gateway sends) a str key goes out as an atom, as
Discord's Elixir gateway does (Elixir clients such as nostrum read `payload.op` and
`payload.d.heartbeat_interval` straight from `binary_to_term`), except keys made of digits only
(maps keyed by snowflake, which Discord sends with binary keys), keys that cannot be an atom
(non-ASCII or over 255 bytes) and `nil`/`null`/`true`/`false` (they would come back as None or
bools), which go out as binaries. With `atom_keys=False` (what a client must
send) every str key is a binary.

ETF -> Python (`decode`): the above, plus SMALL_ATOM_EXT, the UTF-8 atom tags, FLOAT_EXT and
STRING_EXT (a list of bytes, which Erlang's term_to_binary emits for `[0, 1]`, decoded as a list
of ints). Atoms come back as `Atom` (a str, so `payload["op"]` works whichever key type was sent),
`nil` and `null` as None. Binaries must be UTF-8 and come back as str. Anything else (tuples, pids,
references, funs, compressed terms, improper lists, trailing bytes) raises `EtfError`.
`allow_atom_keys=False` rejects atom map keys, as Discord does for client payloads (close 4002).
"""

from __future__ import annotations

import struct
from typing import Any

VERSION = 131
NEW_FLOAT_EXT = 70
COMPRESSED = 80
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
FLOAT_EXT = 99
ATOM_EXT = 100
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
SMALL_ATOM_EXT = 115
MAP_EXT = 116
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119

MAX_DEPTH = 256  # deeper client payloads are a decode error, not a RecursionError
# Wider integers are a decode error: like JSON's 4300-digit limit, so every decoded value can still
# be written to the trace (2,466 digits at most).
MAX_BIG_BYTES = 1024
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class EtfError(ValueError):
    """Bytes that are not a term this codec reads, or a value it cannot write."""


class Atom(str):
    """An Erlang atom. Encoded as an atom; decoded atoms are returned as this type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


# ---- encoding ---------------------------------------------------------------------------------


def encode(term: Any, *, atom_keys: bool = True) -> bytes:
    """`term` as ETF bytes, starting with the version byte 131."""
    out = bytearray([VERSION])
    _encode(term, out, atom_keys, 0)
    return bytes(out)


def _atom(name: str, out: bytearray) -> None:
    data = name.encode()
    if len(name) > 255:
        raise EtfError(f"atom longer than 255 characters: {name[:20]!r}...")
    if data.isascii():
        out += struct.pack(">BH", ATOM_EXT, len(data))
    elif len(data) <= 255:
        out += struct.pack(">BB", SMALL_ATOM_UTF8_EXT, len(data))
    else:
        out += struct.pack(">BH", ATOM_UTF8_EXT, len(data))
    out += data


_SPECIAL_ATOMS = frozenset({"nil", "null", "true", "false"})  # decoded as None/True/False


def _key_as_atom(key: str) -> bool:
    return (key.isascii() and len(key) <= 255 and not key.isdigit()
            and key not in _SPECIAL_ATOMS)


def _encode(term: Any, out: bytearray, atom_keys: bool, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EtfError(f"nested deeper than {MAX_DEPTH}")
    if term is None:
        _atom("nil", out)
    elif term is True:
        _atom("true", out)
    elif term is False:
        _atom("false", out)
    elif isinstance(term, Atom):
        _atom(term, out)
    elif isinstance(term, int):
        _encode_int(term, out)
    elif isinstance(term, float):
        out += struct.pack(">Bd", NEW_FLOAT_EXT, term)
    elif isinstance(term, str | bytes):
        data = term.encode() if isinstance(term, str) else term
        out += struct.pack(">BI", BINARY_EXT, len(data))
        out += data
    elif isinstance(term, list | tuple):
        if not term:
            out.append(NIL_EXT)
            return
        out += struct.pack(">BI", LIST_EXT, len(term))
        for item in term:
            _encode(item, out, atom_keys, depth + 1)
        out.append(NIL_EXT)
    elif isinstance(term, dict):
        out += struct.pack(">BI", MAP_EXT, len(term))
        for key, value in term.items():
            if atom_keys and type(key) is str and _key_as_atom(key):
                _atom(key, out)
            else:
                _encode(key, out, atom_keys, depth + 1)
            _encode(value, out, atom_keys, depth + 1)
    else:
        raise EtfError(f"cannot encode {type(term).__name__} as ETF")


def _encode_int(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out += struct.pack(">BB", SMALL_INTEGER_EXT, value)
    elif _INT32_MIN <= value <= _INT32_MAX:
        out += struct.pack(">Bi", INTEGER_EXT, value)
    else:
        magnitude = abs(value)
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) <= 255:
            out += struct.pack(">BBB", SMALL_BIG_EXT, len(digits), value < 0)
        else:
            out += struct.pack(">BIB", LARGE_BIG_EXT, len(digits), value < 0)
        out += digits


# ---- decoding ---------------------------------------------------------------------------------


def decode(data: bytes, *, allow_atom_keys: bool = True) -> Any:
    """The one term in `data` (version byte first, nothing after it)."""
    if not data or data[0] != VERSION:
        raise EtfError("not ETF: the first byte is not 131")
    reader = _Reader(bytes(data), allow_atom_keys)
    value = reader.term(0)
    if reader.pos != len(reader.data):
        raise EtfError(f"{len(reader.data) - reader.pos} bytes after the term")
    return value


class _Reader:
    def __init__(self, data: bytes, allow_atom_keys: bool) -> None:
        self.data = data
        self.pos = 1
        self.allow_atom_keys = allow_atom_keys

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise EtfError("truncated term")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, fmt: str, min_item_bytes: int) -> int:
        """A length prefix, checked against what is left so junk cannot make us loop long."""
        length: int = self.unpack(fmt)
        if length * min_item_bytes > len(self.data) - self.pos:
            raise EtfError("length prefix runs past the end")
        return length

    def term(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise EtfError(f"nested deeper than {MAX_DEPTH}")
        tag = self.unpack(">B")
        if tag == SMALL_INTEGER_EXT:
            return self.unpack(">B")
        if tag == INTEGER_EXT:
            return self.unpack(">i")
        if tag in (SMALL_BIG_EXT, LARGE_BIG_EXT):
            size = self.count(">B" if tag == SMALL_BIG_EXT else ">I", 0)
            if size > MAX_BIG_BYTES:
                raise EtfError(f"integer of {size} bytes (at most {MAX_BIG_BYTES})")
            sign = self.unpack(">B")
            if sign > 1:
                raise EtfError(f"bad bignum sign byte {sign}")
            magnitude = int.from_bytes(self.take(size), "little")
            return -magnitude if sign else magnitude
        if tag == NEW_FLOAT_EXT:
            return self.unpack(">d")
        if tag == FLOAT_EXT:
            text = self.take(31).split(b"\x00", 1)[0]
            try:
                return float(text)
            except ValueError:
                raise EtfError(f"bad FLOAT_EXT {text!r}") from None
        if tag in (ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT):
            return self.atom(tag)
        if tag == BINARY_EXT:
            return self.text(self.take(self.count(">I", 1)))
        if tag == NIL_EXT:
            return []
        if tag == STRING_EXT:
            return list(self.take(self.count(">H", 1)))
        if tag == LIST_EXT:
            items = [self.term(depth + 1) for _ in range(self.count(">I", 1))]
            if self.unpack(">B") != NIL_EXT:
                raise EtfError("improper list (tail is not [])")
            return items
        if tag == MAP_EXT:
            result: dict[Any, Any] = {}
            for _ in range(self.count(">I", 2)):
                key = self.key(depth + 1)
                result[key] = self.term(depth + 1)
            return result
        if tag == COMPRESSED:
            raise EtfError("compressed term (clients must not send compressed messages)")
        raise EtfError(f"unsupported term tag {tag}")

    def atom(self, tag: int) -> Any:
        size = self.unpack(">H" if tag in (ATOM_EXT, ATOM_UTF8_EXT) else ">B")
        raw = self.take(size)
        name = raw.decode("latin-1") if tag in (ATOM_EXT, SMALL_ATOM_EXT) else self.text(raw)
        if name in ("nil", "null"):
            return None
        if name in ("true", "false"):
            return name == "true"
        return Atom(name)

    def key(self, depth: int) -> Any:
        if self.data[self.pos : self.pos + 1] and self.data[self.pos] in (
                ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT):
            if not self.allow_atom_keys:
                raise EtfError("atom map key (payloads must use string keys)")
        key = self.term(depth)
        if isinstance(key, list | dict):
            raise EtfError("list or map used as a map key")
        return key

    @staticmethod
    def text(raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise EtfError("binary is not UTF-8 text") from None


# ---- Discord's conventions for what the gateway sends ------------------------------------------

# `*_id` keys whose values are not snowflakes.
_NOT_SNOWFLAKES = frozenset({"session_id", "custom_id", "sync_id", "nonce"})


def _snowflake(value: Any) -> Any:
    if isinstance(value, str) and value.isascii() and value.isdigit() and (
            value == "0" or value[0] != "0"):
        number = int(value)
        if number < 2**64:
            return number
    return value


def _is_snowflake_key(key: Any) -> bool:
    return isinstance(key, str) and key not in _NOT_SNOWFLAKES and (
        key == "id" or key.endswith("_id"))


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        shaped: dict[Any, Any] = {}
        for key, item in value.items():
            if _is_snowflake_key(key):
                shaped[key] = _snowflake(item)
            elif isinstance(key, str) and (key.endswith("_ids") or key == "roles") and isinstance(
                    item, list) and all(isinstance(x, str) for x in item):
                shaped[key] = [_snowflake(x) for x in item]
            else:
                shaped[key] = _shape(item)
        return shaped
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return value


def gateway_terms(payload: dict[str, Any]) -> dict[str, Any]:
    """A gateway payload as Discord sends it over ETF, as a new object (the input is untouched).

    Snowflakes travel as 64-bit integers (gateway docs, "Using ETF"): digit strings under `id`,
    `*_id` (not `session_id`, `custom_id`, `sync_id`, `nonce`), and in `*_ids` / member `roles`
    lists become ints. The event name `t` is an atom, as Elixir clients match `:READY`.
    """
    shaped: dict[str, Any] = _shape(payload)
    t = shaped.get("t")
    if isinstance(t, str):
        shaped["t"] = Atom(t)
    return shaped
