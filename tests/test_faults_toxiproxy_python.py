"""toxiproxy-python 0.1.1 (unmodified, from PyPI) against both servers: ours (embedded) and
Shopify's toxiproxy-server 2.12.0 (real).

Mirrors the client's own upstream test suite (douglas/toxiproxy-python ``test/``), with real
echo traffic where that suite only checked return values.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.faults.testing import RealToxiproxyServer, ToxiproxyServerThread, echo_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    with echo_server() as port:
        yield port


Server = ToxiproxyServerThread | RealToxiproxyServer


@pytest.fixture(scope="module")
def embedded() -> Iterator[ToxiproxyServerThread]:
    with ToxiproxyServerThread(seed=3) as running:
        yield running


@pytest.fixture(scope="module", params=["embedded", "real"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running: Server = request.getfixturevalue(
        "real_toxiproxy" if request.param == "real" else "embedded"
    )
    saved = APIConsumer.host, APIConsumer.port
    APIConsumer.host, APIConsumer.port = "127.0.0.1", running.port
    yield running
    APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def toxiproxy(server: ToxiproxyServerThread) -> Iterator[Toxiproxy]:
    client = Toxiproxy()
    yield client
    client.destroy_all()


def connectable(listen: str) -> bool:
    host, port = listen.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except OSError:
        return False


def echo(listen: str, payload: bytes) -> bytes:
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload) and (chunk := sock.recv(65536)):
            got += chunk
        return got


def test_running_version_and_not_found(toxiproxy: Toxiproxy) -> None:
    assert toxiproxy.running()
    assert toxiproxy.version() == b'{"version": "2.12.0"}\n'
    with pytest.raises(NotFound):
        APIConsumer.get("/not_found")


def test_create_find_and_destroy(toxiproxy: Toxiproxy, echo_port: int) -> None:
    proxy = toxiproxy.create(upstream=f"localhost:{echo_port}", name="echo")
    assert proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0")
    assert echo(proxy.listen, b"via toxiproxy-python") == b"via toxiproxy-python"
    assert toxiproxy.get_proxy("echo").upstream == f"localhost:{echo_port}"
    assert toxiproxy.get_proxy("nope") is None
    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream="localhost:1", name="echo")
    assert toxiproxy.destroy(proxy)
    assert toxiproxy.destroy("echo") is False
    assert toxiproxy.proxies() == {}


def test_create_disabled_keeps_listen_verbatim(toxiproxy: Toxiproxy) -> None:
    port = _free_port()
    proxy = toxiproxy.create(
        upstream="localhost:3306", name="db", listen=f"127.0.0.1:{port}", enabled=False
    )
    assert (proxy.listen, proxy.enabled) == (f"127.0.0.1:{port}", False)
    assert not connectable(proxy.listen)


def test_proxy_exists_without_listen(server: Server) -> None:
    first = APIConsumer.post("/proxies", json={"name": "dup", "upstream": "localhost:1"})
    assert first.status_code == 201
    with pytest.raises(ProxyExists):
        APIConsumer.post("/proxies", json={"name": "dup", "upstream": "localhost:1"})
    APIConsumer.delete("/proxies/dup")


def test_disable_enable_and_take_endpoint_down(toxiproxy: Toxiproxy, echo_port: int) -> None:
    proxy = toxiproxy.create(upstream=f"localhost:{echo_port}", name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 123})
    proxy.disable()
    assert not connectable(proxy.listen)
    proxy.enable()
    assert echo(proxy.listen, b"back") == b"back"
    assert proxy.toxics()["latency_downstream"].attributes["latency"] == 123
    with proxy.down():
        assert not connectable(proxy.listen)
    assert connectable(proxy.listen)


def test_toxics_apply_and_delete(toxiproxy: Toxiproxy, echo_port: int, server: Server) -> None:
    proxy = toxiproxy.create(upstream=f"localhost:{echo_port}", name="echo")
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 20})
    proxy.add_toxic(type="latency", name="second", attributes={"latency": 20})
    proxy.add_toxic(type="slicer", attributes={"average_size": 3, "delay": 100})
    assert sorted(proxy.toxics()) == ["latency_upstream", "second", "slicer_downstream"]
    assert echo(proxy.listen, b"sliced and delayed") == b"sliced and delayed"
    proxy.destroy_toxic("second")
    assert "second" not in proxy.toxics()
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="lolstream")
    if isinstance(server, RealToxiproxyServer):  # Go takes it (and stalls): README
        proxy.add_toxic(type="bandwidth", name="zero", attributes={"rate": 0})
        assert "zero" in proxy.toxics()
    else:
        with pytest.raises(InvalidToxic):
            proxy.add_toxic(type="bandwidth", name="zero", attributes={"rate": 0})


def test_reset_reenables_and_clears(toxiproxy: Toxiproxy, echo_port: int) -> None:
    proxy = toxiproxy.create(upstream=f"localhost:{echo_port}", name="echo")
    proxy.disable()
    proxy.add_toxic(type="latency", attributes={"latency": 50})
    assert toxiproxy.reset()
    again = toxiproxy.get_proxy("echo")
    assert again.enabled and again.listen == proxy.listen and again.toxics() == {}
    assert connectable(proxy.listen)


def test_client_side_populate(toxiproxy: Toxiproxy, echo_port: int) -> None:
    first, second = _free_port(), _free_port()
    created = toxiproxy.populate(
        [
            {"name": "a", "upstream": f"localhost:{echo_port}", "listen": f"localhost:{first}"},
            {"name": "b", "upstream": f"localhost:{echo_port}", "listen": f"localhost:{second}"},
        ]
    )
    assert sorted(p.name for p in created) == ["a", "b"]
    assert echo(f"127.0.0.1:{first}", b"A") == b"A"
    assert echo(f"127.0.0.1:{second}", b"B") == b"B"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
