"""Decoding what the gateway sends: JSON text frames and zlib-stream / zstd-stream transports.

Sans-I/O: WebSocket messages in, payload dicts out. One decoder per connection, because each new
connection starts a fresh compression context (gateway-protocol.md 1.4). This is written
independently of the fake gateway's own codec on purpose: a shared bug would hide itself.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class FrameDecodeError(ValueError):
    """A message that cannot be turned into a gateway payload (the connection is unusable)."""


class TransportDecoder:
    """Turns the WebSocket messages of one connection into gateway payload dicts."""

    def __init__(self, compress: str | None) -> None:
        if compress not in (None, "zlib-stream", "zstd-stream"):
            raise ValueError(f"unsupported compress={compress!r}")
        self.compress = compress
        self._inflater: Any = zlib.decompressobj() if compress == "zlib-stream" else None
        self._buffer = bytearray()
        self._zstd: Any = None
        if compress == "zstd-stream":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, message: str | bytes) -> list[dict[str, Any]]:
        """Payloads completed by this message (zlib-stream may need several messages for one)."""
        if isinstance(message, str):
            # Text frames are plain JSON even when transport compression is on.
            return [_parse(message)]
        if self._inflater is not None:
            self._buffer += message
            if not self._buffer.endswith(ZLIB_SUFFIX):
                return []
            data, self._buffer = bytes(self._buffer), bytearray()
            try:
                text = self._inflater.decompress(data)
            except zlib.error as exc:
                raise FrameDecodeError(f"zlib-stream: {exc}") from None
            return [_parse(text)]
        if self._zstd is not None:
            try:
                text = self._zstd.decompress(message)
            except Exception as exc:  # zstandard.ZstdError
                raise FrameDecodeError(f"zstd-stream: {exc}") from None
            return [_parse(text)]
        return [_parse(message)]


def _parse(data: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameDecodeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FrameDecodeError(f"payload is a {type(value).__name__}, not an object")
    return value
