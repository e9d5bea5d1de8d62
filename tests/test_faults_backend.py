"""Fault backends: the embedded one on memnet (virtual time) and the Toxiproxy one over HTTP.

``ToxiproxyBackend`` is exercised through toxiproxy-python over real HTTP against both our
embedded server and Shopify's toxiproxy-server 2.12.0.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from harness.faults.backend import (
    FaultBackendError,
    ToxicSpec,
    ToxiproxyBackend,
    UnsupportedByRealToxiproxy,
    open_embedded_backend,
)
from harness.faults.memnet import MemoryNetwork


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def echo_forever(listener: trio.abc.Listener[trio.abc.Stream]) -> None:
    async def handle(stream: trio.abc.Stream) -> None:
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, [listener])


async def roundtrip(stream: trio.abc.Stream, payload: bytes) -> bytes:
    await stream.send_all(payload)
    got = b""
    while len(got) < len(payload):
        chunk = await stream.receive_some()
        if not chunk:
            break
        got += chunk
    return got


async def test_embedded_backend_on_memnet(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_forever, net.listen("gateway:443"))
        async with open_embedded_backend(network=net, seed=3) as backend:
            info = await backend.create_proxy("gw", "gateway:443", listen="edge:0")
            assert info.enabled and info.listen.startswith("edge:")
            # the reconnect (2nd connection) is reset after its first bytes; the 1st is untouched
            added = await backend.add_toxic(
                "gw", ToxicSpec("reset_after", attributes={"bytes": 1}, only_connection=2)
            )
            assert added["stream"] == "upstream" and added["attributes"]["only_connection"] == 2
            first = await net.connect(info.listen)
            assert await roundtrip(first, b"hello") == b"hello"
            second = await net.connect(info.listen)
            await second.send_all(b"\x16\x03\x01 client hello")
            with pytest.raises(trio.BrokenResourceError):
                await second.receive_some()
            assert backend.proxy("gw").accepted == 2
            await backend.add_toxic("gw", ToxicSpec("latency", attributes={"latency": 250}))
            start = trio.current_time()
            assert await roundtrip(first, b"slow") == b"slow"
            assert trio.current_time() - start == pytest.approx(0.25)
            await backend.update_toxic("gw", "latency_downstream", {"latency": 50})
            start = trio.current_time()
            await roundtrip(first, b"faster")
            assert trio.current_time() - start == pytest.approx(0.05)
            await backend.disable("gw")
            assert await first.receive_some() == b""
            with pytest.raises(ConnectionRefusedError):
                await net.connect(info.listen)
            await backend.reset()
            assert (await backend.get_proxy("gw")).enabled
            assert backend.proxy("gw").toxics == [] and backend.proxy("gw").accepted == 0
            third = await net.connect(info.listen)
            assert await roundtrip(third, b"again") == b"again"
            with pytest.raises(FaultBackendError) as missing:
                await backend.remove_toxic("gw", "nope")
            assert missing.value.status == 404
            with pytest.raises(FaultBackendError) as exists:
                await backend.create_proxy("gw", "gateway:443")
            assert exists.value.status == 409
            with pytest.raises(FaultBackendError) as invalid:
                await backend.add_toxic("gw", ToxicSpec("bandwidth", attributes={"rate": 0}))
            assert invalid.value.status == 400 and "rate" in str(invalid.value)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("server", ["embedded", "real"])
async def test_toxiproxy_backend_over_http(server: str, request: pytest.FixtureRequest) -> None:
    real_url = request.getfixturevalue("real_toxiproxy").url if server == "real" else None
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            echo_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(echo_forever, listeners[0])
            async with open_embedded_backend(api_port=0, seed=1) as embedded:
                url = real_url or embedded.api_url
                assert url is not None
                backend = ToxiproxyBackend(url)

                async def toxics() -> list[str]:
                    async with httpx.AsyncClient(base_url=url) as api:
                        listed = (await api.get("/proxies/db/toxics")).json()
                    return [toxic["name"] for toxic in listed]

                info = await backend.create_proxy("db", f"localhost:{echo_port}")
                host, port = info.listen.rsplit(":", 1)
                stream = await trio.open_tcp_stream(host, int(port))
                assert await roundtrip(stream, b"ping") == b"ping"
                toxic = await backend.add_toxic(
                    "db", ToxicSpec("latency", stream="upstream", attributes={"latency": 10})
                )
                assert toxic["name"] == "latency_upstream"
                assert toxic["attributes"] == {"latency": 10, "jitter": 0}
                updated = await backend.update_toxic(
                    "db", "latency_upstream", {"jitter": 2}, toxicity=0.5
                )
                assert updated["attributes"] == {"latency": 10, "jitter": 2}
                assert updated["toxicity"] == 0.5
                assert await roundtrip(stream, b"still") == b"still"
                for spec, what in (
                    (ToxicSpec("blackhole"), "toxic type 'blackhole'"),
                    (ToxicSpec("latency", only_connection=2), "attribute 'only_connection'"),
                    (ToxicSpec("reset_after", attributes={"bytes": 1}), "reset_after"),
                ):
                    assert backend.unsupported_reason(spec)
                    with pytest.raises(UnsupportedByRealToxiproxy) as refused:
                        await backend.add_toxic("db", spec)
                    assert str(refused.value).startswith("unsupported by real Toxiproxy: ")
                    assert what in str(refused.value)
                with pytest.raises(UnsupportedByRealToxiproxy):
                    await backend.update_toxic("db", "latency_upstream", {"from_connection": 3})
                assert await toxics() == ["latency_upstream"]  # nothing was silently added
                with pytest.raises(FaultBackendError) as invalid:
                    await backend.add_toxic("db", ToxicSpec("slicer"))
                assert invalid.value.status == 400
                await backend.remove_toxic("db", "latency_upstream")
                with pytest.raises(FaultBackendError) as missing:
                    await backend.remove_toxic("db", "latency_upstream")
                assert missing.value.status == 404
                assert not (await backend.disable("db")).enabled
                assert await stream.receive_some() == b""
                assert (await backend.enable("db")).listen == info.listen
                await backend.add_toxic("db", ToxicSpec("timeout", attributes={"timeout": 0}))
                await backend.reset()
                assert await toxics() == []
                with pytest.raises(FaultBackendError) as exists:
                    await backend.create_proxy("db", "localhost:1")
                assert exists.value.status == 409
                await backend.close()
                async with httpx.AsyncClient(base_url=url) as api:
                    assert (await api.get("/proxies")).json() == {}
            nursery.cancel_scope.cancel()


async def test_toxiproxy_backend_reports_unreachable_server() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = ToxiproxyBackend(f"http://127.0.0.1:{port}")
    with trio.fail_after(30), pytest.raises(FaultBackendError) as failed:
        await backend.reset()
    assert f"127.0.0.1:{port}" in str(failed.value)


async def test_memnet_proxy_relays_chunks_larger_than_the_buffer_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The no-toxic path writes what the memory buffer takes at once and waits for the rest;
    a toxic added while bytes are in flight keeps their order."""
    net = MemoryNetwork(buffer_size=1024)
    payload = bytes(range(251)) * 64  # 16 KiB, 16 buffers' worth; 251 so offsets show
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_forever, net.listen("gateway:443"))
        async with open_embedded_backend(network=net, seed=3) as backend:
            info = await backend.create_proxy("gw", "gateway:443", listen="edge:0")
            client = await net.connect(info.listen)
            got = bytearray()

            async def read_back() -> None:
                while len(got) < len(payload):
                    got.extend(await client.receive_some())

            async with trio.open_nursery() as inner:
                inner.start_soon(read_back)
                await client.send_all(payload[:8000])
                await backend.add_toxic("gw", ToxicSpec("latency", attributes={"latency": 10}))
                await client.send_all(payload[8000:])
            assert bytes(got) == payload
            nursery.cancel_scope.cancel()
