"""`encoding=etf`: the ETF codec (fake_gateway/etf.py), checked against an independent
implementation (erlang_py, from PyPI), and whole gateway sessions over loopback in ETF."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import erlang  # erlang_py: an independent ETF implementation, used only here
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fake_gateway import etf
from fake_gateway.codec import Encoder, decode_client
from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client, start_gateway

TOKEN = GatewayConfig().token
SNOWFLAKE = 1_234_567_890_123_456_789  # over 32 bits: SMALL_BIG_EXT
Start = Callable[..., Awaitable[tuple[FakeGateway, OpenedGateway]]]


def shape(value: Any) -> Any:
    """A comparable form that tells bool from int and keeps map order (1 == True otherwise)."""
    if isinstance(value, dict):
        return ("map", [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return ("list", [shape(item) for item in value])
    if isinstance(value, str):
        return ("str", str(value))
    return (type(value).__name__, value)


# ---- the codec, byte by byte ------------------------------------------------------------------


def atom_ext(name: bytes) -> bytes:
    return struct.pack(">BH", 100, len(name)) + name


@pytest.mark.parametrize(("value", "wire"), [
    pytest.param(None, atom_ext(b"nil"), id="nil"),
    pytest.param(True, atom_ext(b"true"), id="true"),
    pytest.param(False, atom_ext(b"false"), id="false"),
    pytest.param(7, b"a\x07", id="small-int"),
    pytest.param(256, b"b\x00\x00\x01\x00", id="int"),
    pytest.param(-1, b"b\xff\xff\xff\xff", id="negative-int"),
    pytest.param(2**31, b"n\x04\x00\x00\x00\x00\x80", id="small-big"),
    pytest.param(-(2**40), b"n\x06\x01" + (2**40).to_bytes(6, "little"), id="negative-big"),
    pytest.param(SNOWFLAKE, b"n\x08\x00" + SNOWFLAKE.to_bytes(8, "little"), id="snowflake"),
    pytest.param(2**2048, b"o\x00\x00\x01\x01\x00" + (2**2048).to_bytes(257, "little"),
                 id="large-big"),
    pytest.param(1.5, b"F" + struct.pack(">d", 1.5), id="new-float"),
    pytest.param("héllo", b"m\x00\x00\x00\x06" + "héllo".encode(), id="binary"),
    pytest.param([], b"j", id="nil-ext"),
    pytest.param([1, "a"], b"l\x00\x00\x00\x02a\x01m\x00\x00\x00\x01aj", id="list"),
    pytest.param({"op": 1}, b"t\x00\x00\x00\x01" + atom_ext(b"op") + b"a\x01", id="atom-key"),
    pytest.param({"123": 1}, b"t\x00\x00\x00\x01m\x00\x00\x00\x03123a\x01", id="snowflake-key"),
    pytest.param(etf.Atom("ok"), atom_ext(b"ok"), id="atom"),
    pytest.param(etf.Atom("é"), b"w\x02" + "é".encode(), id="utf8-atom"),
])
def test_each_term_type_has_its_tag_and_round_trips(value: Any, wire: bytes) -> None:
    data = etf.encode(value)
    assert data == b"\x83" + wire
    assert shape(etf.decode(data)) == shape(value)


def test_clients_encode_binary_keys() -> None:
    data = etf.encode({"op": 1}, atom_keys=False)
    assert data == b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x02opa\x01"


def test_nested_gateway_payload_round_trips() -> None:
    payload = {"op": 0, "s": 12, "t": etf.Atom("GUILD_CREATE"), "d": {
        "id": SNOWFLAKE, "owner_id": 2**63 + 5, "name": "guild ✓", "large": False,
        "members": [{"user": {"id": SNOWFLAKE + 1, "bot": True}, "roles": [], "nick": None}],
        "resolved": {"users": {str(SNOWFLAKE): {"id": SNOWFLAKE, "global_name": None}}},
        "features": ["A", "B"], "ratio": -0.25, "deep": {"a": {"b": {"c": [[[{"d": 1}]]]}}},
    }}
    decoded = etf.decode(etf.encode(payload))
    assert shape(decoded) == shape(payload)
    assert type(decoded["t"]) is etf.Atom and type(next(iter(decoded))) is etf.Atom
    assert type(next(iter(decoded["d"]["resolved"]["users"]))) is str  # digits: binary key


@pytest.mark.parametrize(("wire", "value"), [
    pytest.param(b"s\x02ok", etf.Atom("ok"), id="small-atom"),
    pytest.param(b"v\x00\x02" + "é".encode(), etf.Atom("é"), id="atom-utf8"),
    pytest.param(b"w\x04null", None, id="null-atom"),
    pytest.param(b"k\x00\x03\x00\x01\xff", [0, 1, 255], id="string-ext"),
    pytest.param(b"c" + b"1.50000000000000000000e+00".ljust(31, b"\x00"), 1.5, id="float-ext"),
    pytest.param(b"o\x00\x00\x00\x02\x01\x00\x01", -256, id="large-big-small-value"),
])
def test_decodes_what_other_encoders_send(wire: bytes, value: Any) -> None:
    assert shape(etf.decode(b"\x83" + wire)) == shape(value)


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x84a\x01", id="wrong-version"),
    pytest.param(b"\x83", id="no-term"),
    pytest.param(b"\x83m\x00\x00\x00\x05ab", id="truncated-binary"),
    pytest.param(b"\x83a\x01a\x02", id="trailing-bytes"),
    pytest.param(b"\x83h\x01a\x01", id="tuple"),
    pytest.param(b"\x83l\x00\x00\x00\x01a\x01a\x02", id="improper-list"),
    pytest.param(b"\x83m\x00\x00\x00\x01\xff", id="binary-not-utf8"),
    pytest.param(b"\x83P\x00\x00\x00\x02x\x9c", id="compressed"),
    pytest.param(b"\x83\x01", id="unknown-tag"),
    pytest.param(b"\x83l\xff\xff\xff\xff", id="huge-length"),
    pytest.param(b"\x83n\x01\x02\x01", id="bad-bignum-sign"),
    pytest.param(etf.encode(2**8200), id="integer-over-1024-bytes"),
    pytest.param(b"\x83t\x00\x00\x00\x01ja\x01", id="list-as-key"),
    pytest.param(b"\x83" + b"l\x00\x00\x00\x01" * 300 + b"j" + b"j" * 300, id="too-deep"),
])
def test_malformed_etf_is_an_etf_error(data: bytes) -> None:
    with pytest.raises(etf.EtfError):
        etf.decode(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_junk_and_damaged_etf_only_ever_raise_etf_error(data: st.DataObject) -> None:
    """The gateway maps EtfError to close 4002; any other exception would be a crash."""
    good = etf.encode(data.draw(terms))
    cut = data.draw(st.integers(0, len(good)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)),
                               max_size=3))
    damaged = bytearray(good[:cut] + data.draw(st.binary(max_size=8)) + good[cut:])
    for index, byte in flips:
        damaged[index % len(damaged)] = byte
    for frame in (bytes(damaged), b"\x83" + data.draw(st.binary(max_size=40))):
        try:
            etf.decode(frame)
        except etf.EtfError:
            pass


def test_atom_keys_are_rejected_when_the_caller_says_so() -> None:
    data = etf.encode({"op": 1})
    assert etf.decode(data) == {"op": 1}
    with pytest.raises(etf.EtfError, match="atom map key"):
        etf.decode(data, allow_atom_keys=False)


def test_gateway_terms_send_snowflakes_as_ints_and_t_as_an_atom() -> None:
    payload: dict[str, Any] = {"op": 0, "s": 3, "t": "MESSAGE_CREATE", "d": {
        "id": str(SNOWFLAKE), "guild_id": "81384788765712384", "session_id": "1234",
        "nonce": "42", "custom_id": "7", "permissions": "1071698660929", "name": "123",
        "member": {"roles": ["41771983423143936"], "user": {"id": "80351110224678912"}},
        "mention_ids": ["1", "x"], "application_id": None, "null": 1,
    }}
    shaped = etf.gateway_terms(payload)
    d = shaped["d"]
    assert type(shaped["t"]) is etf.Atom and shaped["t"] == "MESSAGE_CREATE"
    assert d["id"] == SNOWFLAKE and d["guild_id"] == 81384788765712384
    assert d["member"] == {"roles": [41771983423143936], "user": {"id": 80351110224678912}}
    assert (d["session_id"], d["nonce"], d["custom_id"]) == ("1234", "42", "7")
    assert (d["permissions"], d["name"], d["mention_ids"]) == ("1071698660929", "123", [1, "x"])
    assert etf.decode(etf.encode(shaped))["d"]["null"] == 1  # not the atom nil
    assert payload["d"]["id"] == str(SNOWFLAKE) and payload["t"] == "MESSAGE_CREATE"  # untouched


# ---- property: decode(encode(x)) == x -----------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.integers(0, 2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=20),
)
keys = st.one_of(st.text(max_size=12), st.from_regex(r"[0-9]{1,20}", fullmatch=True))
terms = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(terms)
def test_decode_inverts_encode(term: Any) -> None:
    assert shape(etf.decode(etf.encode(term))) == shape(term)
    assert shape(etf.decode(etf.encode(term, atom_keys=False), allow_atom_keys=False)) == shape(
        term)


# ---- cross-check with erlang_py, both ways ---------------------------------------------------


def as_erlang_py(term: Any, *, key: bool = False) -> Any:
    """What erlang_py should decode our bytes to (and encode back to what we decode)."""
    if term is None:
        return erlang.OtpErlangAtom(b"nil")
    if isinstance(term, bool | int | float):
        return term
    if isinstance(term, str):
        if isinstance(term, etf.Atom) or (key and term.isascii() and len(term) <= 255
                                          and not term.isdigit()
                                          and term not in ("nil", "null", "true", "false")):
            # erlang_py reads the atom `undefined` as None (its convention, not Discord's)
            return None if term == "undefined" else erlang.OtpErlangAtom(term.encode())
        return erlang.OtpErlangBinary(term.encode())
    if isinstance(term, list):
        return [as_erlang_py(item) for item in term]
    return {as_erlang_py(k, key=True): as_erlang_py(v) for k, v in term.items()}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(terms)
@example({"undefined": None, "nil": "undefined"})
def test_erlang_py_agrees_both_ways(term: Any) -> None:
    expected = as_erlang_py(term)
    assert erlang.binary_to_term(etf.encode(term)) == expected
    assert shape(etf.decode(erlang.term_to_binary(expected))) == shape(term)


def test_erlang_py_reads_a_whole_gateway_frame() -> None:
    messages, _ = Encoder(encoding="etf").encode({"op": 0, "s": 1, "t": "READY", "d": {
        "session_id": "ab", "user": {"id": "100000000000000001", "bot": True}}})
    decoded = erlang.binary_to_term(messages[0])
    atom, binary = erlang.OtpErlangAtom, erlang.OtpErlangBinary
    assert decoded[atom(b"t")] == atom(b"READY") and decoded[atom(b"s")] == 1
    assert decoded[atom(b"d")][atom(b"session_id")] == binary(b"ab")
    assert decoded[atom(b"d")][atom(b"user")] == {atom(b"id"): 100000000000000001,
                                                  atom(b"bot"): True}


def erlang_client_frame(op: int, d: dict[str, Any]) -> bytes:
    """A client payload as an Erlang/Elixir client's term_to_binary writes it: binary keys,
    small-int lists as STRING_EXT, UTF-8 atoms (erlang_py writes what OTP 26 writes)."""
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {erlang.OtpErlangBinary(k.encode()): convert(v) for k, v in value.items()}
        if isinstance(value, str):
            return erlang.OtpErlangBinary(value.encode())
        if isinstance(value, list) and all(type(x) is int and 0 <= x <= 255 for x in value):
            return bytes(value)  # erlang_py writes bytes as STRING_EXT
        if value is None:
            return erlang.OtpErlangAtom("nil")
        return value
    return bytes(erlang.term_to_binary(convert({"op": op, "d": d})))


def test_an_identify_written_by_erlang_py_decodes_like_the_json_one() -> None:
    d = {"token": "t", "intents": 513, "shard": [0, 1], "presence": None,
         "properties": {"os": "linux"}}
    assert decode_client(erlang_client_frame(2, d), "etf") == {"op": 2, "d": d}


# ---- whole sessions over loopback TCP ---------------------------------------------------------


@pytest.fixture
def start(nursery: trio.Nursery) -> Start:
    async def start(**overrides: Any) -> tuple[FakeGateway, OpenedGateway]:
        return await start_gateway(nursery, **{
            "heartbeat_interval_ms": 300, "heartbeat_deadline": False, "max_concurrency": 16,
            "identify_window": 0.0, "guilds": 1, **overrides})

    return start


ETF_QUERY = "v=10&encoding=etf"


async def wait_detached(gateway: FakeGateway, session_id: str) -> None:
    with trio.fail_after(5):
        while gateway.sessions[session_id].conn_id is not None:
            await trio.sleep(0.01)


@pytest.mark.parametrize("compress", [None, "zlib-stream", "zstd-stream"])
async def test_full_etf_session_with_resume_and_replay(start: Start, compress: str | None) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url, query=ETF_QUERY, compress=compress) as client:
        hello = await client.recv()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 300
        assert hello["s"] is None and hello["t"] is None
        assert (await client.heartbeat(None)) == {"op": 11, "d": None, "s": None, "t": None}
        ready = await client.identify(TOKEN)
        assert ready["s"] == 1 and type(ready["t"]) is etf.Atom
        d = ready["d"]
        assert d["user"]["id"] == 100000000000000001 and d["application"]["id"] > 2**32
        assert isinstance(d["session_id"], str) and d["resume_gateway_url"] == (
            urls.resume_listener_url)
        guild = await client.recv_dispatch("GUILD_CREATE")
        assert guild["d"]["id"] == d["guilds"][0]["id"] and isinstance(guild["d"]["id"], int)
        await client.heartbeat(guild["s"])
        gateway.controls.apply("burst", "all", count=2)
        seen = [await client.recv_op(0) for _ in range(2)]
        assert [p["s"] for p in seen] == [3, 4]
        assert client.text_frames == 0 and client.binary_frames >= 6
        await client.close(4000)
    session_id = d["session_id"]
    await wait_detached(gateway, session_id)
    gateway.controls.apply("burst", "all", count=3)  # missed: s 5, 6, 7
    async with raw_client(urls.resume_listener_url, query=ETF_QUERY, compress=compress) as client:
        await client.recv_op(10)
        await client.resume(TOKEN, session_id, 4)
        replayed = [await client.recv_op(0) for _ in range(4)]
        assert [p["s"] for p in replayed] == [5, 6, 7, 8]
        assert replayed[-1]["t"] == "RESUMED"
        assert [p["d"]["_harness_n"] for p in replayed[:3]] == [3, 4, 5]
        await client.heartbeat(8)
    outs = gateway.trace.of_kind("frame_out")
    assert all(r["compressed"] == (compress is not None) for r in outs)
    assert not gateway.trace.of_kind("frame_bad")


async def test_etf_frames_carry_atom_keys_on_the_wire(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url, query=ETF_QUERY) as client:
        raw = await client.ws.recv()
        assert isinstance(raw, bytes) and raw[:2] == b"\x83t"
        assert atom_ext(b"op") + b"a\x0a" in raw and atom_ext(b"heartbeat_interval") in raw


async def test_an_erlang_style_identify_gets_ready(start: Start) -> None:
    _, urls = await start(guilds=2)
    async with raw_client(urls.gateway_url, query=ETF_QUERY) as client:
        await client.recv_op(10)
        await client.send(erlang_client_frame(2, {
            "token": TOKEN, "intents": 513, "shard": [0, 1], "properties": {"os": "beam"}}))
        ready = await client.recv_dispatch("READY")
        assert ready["d"]["shard"] == [0, 1] and len(ready["d"]["guilds"]) == 2


def padded_heartbeat(total: int) -> bytes:
    base = etf.encode({"op": 1, "d": None, "pad": ""}, atom_keys=False)
    return etf.encode({"op": 1, "d": None, "pad": "x" * (total - len(base))}, atom_keys=False)


@pytest.mark.parametrize("frame", [
    pytest.param(b"\x00\xff\x10", id="binary-junk"),
    pytest.param('{"op": 1, "d": null}', id="json-text"),
    pytest.param(etf.encode({"op": 1, "d": None}), id="atom-keys"),
    pytest.param(etf.encode({"op": 1, "d": None}, atom_keys=False)[:-2], id="truncated"),
    pytest.param(etf.encode([1, 2]), id="not-a-map"),
    pytest.param(padded_heartbeat(4097), id="over-4096"),
])
async def test_malformed_etf_gets_4002(start: Start, frame: str | bytes) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url, query=ETF_QUERY) as client:
        await client.recv_op(10)
        await client.send(frame)
        assert await client.expect_close() == 4002
    assert gateway.trace.of_kind("frame_bad")


async def test_an_etf_payload_of_exactly_4096_bytes_is_fine(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url, query=ETF_QUERY) as client:
        await client.recv_op(10)
        await client.send(padded_heartbeat(4096))
        assert (await client.recv())["op"] == 11


async def test_unknown_encoding_still_gets_4002(start: Start) -> None:
    _, urls = await start()
    async with raw_client(urls.gateway_url, query="v=10&encoding=msgpack") as client:
        assert await client.expect_close() == 4002


async def test_deeply_nested_json_is_a_decode_error_not_a_crash(start: Start) -> None:
    gateway, urls = await start()
    async with raw_client(urls.gateway_url) as client:
        await client.recv_op(10)
        await client.send("[" * 2040 + "]" * 2040)
        assert await client.expect_close() == 4002
    async with raw_client(urls.gateway_url) as client:  # the gateway still serves
        assert (await client.recv())["op"] == 10
