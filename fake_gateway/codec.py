"""Gateway payload encoding (JSON) and transport compression (zlib-stream, zstd-stream).

Sans-I/O: payload dicts in, WebSocket messages (str for plain JSON, bytes when compressed) out.
One `Encoder` per connection, so each connection gets a fresh compression context, as Discord's
clients expect (a new inflater per connection).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import zstandard

ZLIB_SUFFIX = b"\x00\x00\xff\xff"
ENCODINGS = ("json",)
COMPRESSIONS = ("zlib-stream", "zstd-stream")


class DecodeError(ValueError):
    """A client frame that is not a JSON object (close 4002)."""


class Encoder:
    """Encodes server payloads for one connection.

    `zlib-stream`: one deflate context per connection, each message ends with Z_SYNC_FLUSH
    (`00 00 ff ff`); `split` > 1 cuts each message into that many WebSocket frames, only the
    last carrying the suffix. `zstd-stream`: one zstd frame per connection, flushed per message
    so each WebSocket message decodes on its own without ending the frame.
    """

    def __init__(self, compress: str | None = None, split: int = 1) -> None:
        if compress is not None and compress not in COMPRESSIONS:
            raise ValueError(f"unsupported compress={compress!r}")
        self.compress = compress
        self.split = max(1, split)
        self._zlib: Any = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = (
            zstandard.ZstdCompressor().compressobj() if compress == "zstd-stream" else None
        )

    @property
    def compressed(self) -> bool:
        return self.compress is not None

    def encode(self, payload: dict[str, Any]) -> tuple[list[str | bytes], int]:
        """Return the WebSocket messages for one payload and the uncompressed size."""
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        raw = text.encode()
        if self._zlib is not None:
            data = self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
            return _split(data, self.split), len(raw)
        if self._zstd is not None:
            data = self._zstd.compress(raw) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            return [data], len(raw)
        return [text], len(raw)


def _split(data: bytes, parts: int) -> list[str | bytes]:
    if parts <= 1 or len(data) < parts:
        return [data]
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


def decode_client(message: str | bytes) -> dict[str, Any]:
    """Decode one client frame. Clients send uncompressed JSON, as text or binary."""
    try:
        value = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError("payload is not a JSON object")
    return value


class ZlibStreamDecoder:
    """Client-side zlib-stream inflater (tests, bench, reference tools)."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> dict[str, Any] | None:
        self._buffer += data
        if not self._buffer.endswith(ZLIB_SUFFIX):
            return None
        text = self._inflater.decompress(bytes(self._buffer))
        self._buffer.clear()
        result: dict[str, Any] = json.loads(text)
        return result


class ZstdStreamDecoder:
    """Client-side zstd-stream decoder: one context per connection."""

    def __init__(self) -> None:
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._decompressor.decompress(data))
        return result
