"""The client's transport decoder: zlib-stream across split frames, zstd-stream, text frames."""

from __future__ import annotations

import json
import zlib

import pytest
import zstandard

from harness.client.codec import FrameDecodeError, TransportDecoder


def _zlib_messages(payloads: list[dict[str, object]]) -> list[bytes]:
    deflater = zlib.compressobj()
    return [deflater.compress(json.dumps(p).encode()) + deflater.flush(zlib.Z_SYNC_FLUSH)
            for p in payloads]


def test_zlib_stream_keeps_one_inflater_and_joins_split_frames():
    first, second = _zlib_messages([{"op": 10, "d": {"heartbeat_interval": 1}}, {"op": 11}])
    decoder = TransportDecoder("zlib-stream")
    assert decoder.feed(first[:5]) == []  # no Z_SYNC_FLUSH suffix yet
    assert decoder.feed(first[5:]) == [{"op": 10, "d": {"heartbeat_interval": 1}}]
    # The second message only inflates with the first one's context.
    assert decoder.feed(second) == [{"op": 11}]
    with pytest.raises(FrameDecodeError):
        TransportDecoder("zlib-stream").feed(second)  # a fresh inflater cannot read it


def test_text_frames_are_plain_json_even_with_compression_on():
    assert TransportDecoder("zlib-stream").feed('{"op": 7, "d": null}') == [{"op": 7, "d": None}]


def test_zstd_stream_decodes_each_message_without_ending_the_frame():
    compressor = zstandard.ZstdCompressor().compressobj()
    decoder = TransportDecoder("zstd-stream")
    for payload in ({"op": 10, "d": {}}, {"op": 11}):
        data = compressor.compress(json.dumps(payload).encode())
        data += compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        assert decoder.feed(data) == [payload]


@pytest.mark.parametrize("message", [b"\x00\x00\xff\xff", "[1, 2]", "not json"])
def test_garbage_raises_frame_decode_error(message: str | bytes):
    with pytest.raises(FrameDecodeError):
        TransportDecoder("zlib-stream").feed(message)
