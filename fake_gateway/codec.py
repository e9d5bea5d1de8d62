"""Gateway payload encoding (JSON, ETF) and transport compression (zlib-stream, zstd-stream).

Sans-I/O: payload dicts in, WebSocket messages (str for plain JSON, bytes for ETF or when
compressed) out. ETF (`fake_gateway.etf`) is sent as Discord does: atom map keys, snowflakes as
integers, binary frames.
One `Encoder` per connection, so each connection gets a fresh compression context, as Discord's
clients expect (a new inflater per connection).
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import zstandard

from fake_gateway import etf
from gateway_common.facts import COMPRESSIONS, ENCODINGS

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class DecodeError(ValueError):
    """A client frame that is not a JSON object, or not an ETF map with string keys (close 4002)."""


class Encoder:
    """Encodes server payloads for one connection.

    `zlib-stream`: one deflate context per connection, each message ends with Z_SYNC_FLUSH
    (`00 00 ff ff`); `split` > 1 cuts each message into that many WebSocket frames, only the
    last carrying the suffix. `zstd-stream`: one zstd frame per connection, flushed per message
    so each WebSocket message decodes on its own without ending the frame.
    """

    def __init__(self, compress: str | None = None, split: int = 1,
                 encoding: str = "json") -> None:
        if compress is not None and compress not in COMPRESSIONS:
            raise ValueError(f"unsupported compress={compress!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unsupported encoding={encoding!r}")
        self.encoding = encoding
        self.compress = compress
        self.split = max(1, split)
        self._zlib: Any = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = (
            zstandard.ZstdCompressor().compressobj() if compress == "zstd-stream" else None
        )

    @property
    def compressed(self) -> bool:
        return self.compress is not None

    def continued(self) -> Encoder:
        """An encoder whose stream continues this one's compression context (the
        reuse_compressor fault; Discord starts a fresh one per connection). zlib: a copy, so
        this stream is left as it was; zstd's context cannot be copied, so it is shared."""
        other = Encoder(None, self.split, self.encoding)
        other.compress = self.compress
        other._zlib = self._zlib.copy() if self._zlib is not None else None
        other._zstd = self._zstd
        return other

    def encode(self, payload: dict[str, Any]) -> tuple[list[str | bytes], int]:
        """Return the WebSocket messages for one payload and the uncompressed size."""
        if self.encoding == "etf":
            raw = etf.encode(etf.gateway_terms(payload))
            text: str | bytes = raw
        else:
            text = _JSON_ENCODER.encode(payload)
            raw = text.encode()
        if self._zlib is not None:
            data = self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
            return _split(data, self.split), len(raw)
        if self._zstd is not None:
            data = self._zstd.compress(raw) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            return [data], len(raw)
        return [text], len(raw)


def corrupt_block(compress: str) -> bytes:
    """One bad block for a zlib-stream or zstd-stream, to be sent after a complete message (at a
    block boundary, where every message ends). zlib: a deflate block header of the reserved type
    3 (BFINAL 0, BTYPE 11: "invalid block type", RFC 1951 3.2.3), then the flush suffix so that a
    client inflates it at once; zstd: a block header of the reserved type 3 (RFC 8878 3.1.1.2)."""
    if compress == "zlib-stream":
        return b"\x06" + ZLIB_SUFFIX
    if compress == "zstd-stream":
        return b"\x06\x00\x00"
    raise ValueError(f"unsupported compress={compress!r}")


def _split(data: bytes, parts: int) -> list[str | bytes]:
    if parts <= 1 or len(data) < parts:
        return [data]
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


def decode_client(message: str | bytes, encoding: str = "json") -> dict[str, Any]:
    """Decode one client frame. Clients send uncompressed JSON (text or binary) or ETF."""
    if encoding == "etf":
        try:
            term = etf.decode(message.encode() if isinstance(message, str) else message,
                              allow_atom_keys=False)
        except etf.EtfError as exc:
            raise DecodeError(f"not ETF: {exc}") from None
        if not isinstance(term, dict):
            raise DecodeError("payload is not an ETF map")
        return term
    try:
        value = _json_loads(message)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError("payload is not a JSON object")
    escaped = (_SURROGATE_ESCAPE.search(message) if isinstance(message, str)
               else _SURROGATE_ESCAPE_BYTES.search(message))
    if escaped and _has_lone_surrogate(value):
        # A "\ud800" escape decodes to no Unicode text: kept, it poisoned every frame that
        # echoed it (close 1011, a session that could never resume) or the timer loop.
        raise DecodeError("not JSON: a lone surrogate escape is not Unicode text")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


# Built once: `json.dumps`/`json.loads` with any option build a new encoder or decoder (and
# its scanner) per call, which was a third of the time of encoding an ACK or decoding a
# heartbeat.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON_DECODER = json.JSONDecoder(parse_constant=_not_json)


def _json_loads(message: str | bytes) -> Any:
    """`json.loads(message, parse_constant=_not_json)`, with the decoder built once."""
    if isinstance(message, str):
        if message.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)",
                                       message, 0)
    else:
        message = message.decode(json.detect_encoding(message), "surrogatepass")
    return _JSON_DECODER.decode(message)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
    return False


def decode_server(raw: bytes | str, encoding: str = "json") -> dict[str, Any]:
    """Decode one whole (decompressed) server message, as a client does."""
    if encoding == "etf":
        term: dict[str, Any] = etf.decode(raw.encode() if isinstance(raw, str) else raw)
        return term
    result: dict[str, Any] = json.loads(raw)
    return result


class ZlibStreamDecoder:
    """Client-side zlib-stream inflater (tests, bench, reference tools)."""

    def __init__(self, encoding: str = "json") -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()
        self.encoding = encoding

    def feed(self, data: bytes) -> dict[str, Any] | None:
        self._buffer += data
        if not self._buffer.endswith(ZLIB_SUFFIX):
            return None
        text = self._inflater.decompress(bytes(self._buffer))
        self._buffer.clear()
        return decode_server(text, self.encoding)


class ZstdStreamDecoder:
    """Client-side zstd-stream decoder: one context per connection."""

    def __init__(self, encoding: str = "json") -> None:
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self.encoding = encoding

    def feed(self, data: bytes) -> dict[str, Any]:
        return decode_server(self._decompressor.decompress(data), self.encoding)
