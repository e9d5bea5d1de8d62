"""The Toxiproxy API over real HTTP (httpx) and real TCP, against both servers: ours (embedded)
and Shopify's toxiproxy-server 2.12.0 (real). Every test runs on both; the few places where we
differ on purpose (README, "Where we differ") are asserted per server.

Numbers in test names / comments refer to the checklist in
``/work/shared/reference/toxiproxy-spec.md`` section 9.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.faults.testing import RealToxiproxyServer, ToxiproxyServerThread, echo_server

pytestmark = pytest.mark.timeout(60)

Server = ToxiproxyServerThread | RealToxiproxyServer


@pytest.fixture(scope="module")
def embedded() -> Iterator[ToxiproxyServerThread]:
    with ToxiproxyServerThread(seed=7) as running:
        yield running


@pytest.fixture(scope="module", params=["embedded", "real"])
def server(request: pytest.FixtureRequest) -> Server:
    name = "real_toxiproxy" if request.param == "real" else "embedded"
    server: Server = request.getfixturevalue(name)
    return server


def is_real(server: Server) -> bool:
    return isinstance(server, RealToxiproxyServer)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    with echo_server() as port:
        yield port


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client
        for name in client.get("/proxies").json():
            client.delete(f"/proxies/{name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except OSError:
        return False


def echo_through(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def error(status: int, message: str) -> str:
    return f'{{"error":"{message}","status":{status}}}\n'


def create(api: httpx.Client, upstream: str, name: str = "p") -> str:
    """A proxy on a free loopback port (what toxiproxy-python asks for); its listen address."""
    body = {"name": name, "listen": "127.0.0.1:0", "upstream": upstream}
    return str(api.post("/proxies", json=body).json()["listen"])


# -- HTTP conventions ----------------------------------------------------------------------------


def test_version_and_request_id(api: httpx.Client) -> None:  # 1, 2
    response = api.get("/version")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.content == b'{"version": "2.12.0"}\n'
    assert response.headers["x-toxiproxy-request-id"]
    assert api.get("/proxies").headers["x-toxiproxy-request-id"]


def test_browser_user_agents_get_403(api: httpx.Client) -> None:  # 3
    response = api.get("/proxies", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert response.status_code == 403
    assert response.text == "User agent not allowed\n"
    assert api.get("/proxies", headers={"User-Agent": "Wget/2.1"}).status_code == 200


def test_unknown_path_and_wrong_method(api: httpx.Client) -> None:  # 32
    response = api.get("/not_found")
    assert response.status_code == 404
    assert response.text == "404 page not found\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert api.get("/proxies/").status_code == 404  # no trailing-slash redirect
    for method, path in (("PUT", "/proxies"), ("GET", "/reset"), ("GET", "/populate")):
        wrong = api.request(method, path)
        assert (wrong.status_code, wrong.content) == (405, b"")


def test_empty_index_and_blank_fields(api: httpx.Client) -> None:  # 4, 5, 6, 34
    index = api.get("/proxies")
    assert (index.status_code, index.content) == (200, b"{}")
    assert index.headers["content-type"] == "application/json"
    blank = api.post("/proxies", json={"name": "", "listen": "", "upstream": ""})
    assert (blank.status_code, blank.text) == (400, error(400, "missing required field: name"))
    no_up = api.post("/proxies", json={"name": "test", "upstream": ""})
    assert no_up.text == error(400, "missing required field: upstream")
    empty = api.post("/proxies", content=b"")
    assert (empty.status_code, empty.json()["error"]) == (400, "bad request body: EOF")
    garbage = api.post("/proxies", content=b"{nope")
    assert garbage.status_code == 400
    assert garbage.json()["error"].startswith("bad request body: ")
    wrong_type = api.post("/proxies", json={"name": 5, "upstream": "x:1"})
    assert wrong_type.json()["error"].startswith("bad request body: ")


# -- proxy lifecycle -----------------------------------------------------------------------------


def test_create_get_and_list(api: httpx.Client) -> None:  # 7
    port = free_port()
    created = api.post(
        "/proxies",
        json={"name": "mysql_master", "listen": f"localhost:{port}", "upstream": "localhost:20001"},
    )
    assert created.status_code == 201
    expected = (
        f'{{"name":"mysql_master","listen":"127.0.0.1:{port}","upstream":"localhost:20001",'
        '"enabled":true,"Logger":{},"toxics":[]}'
    )
    assert created.text == expected
    assert api.get("/proxies/mysql_master").text == expected
    assert api.get("/proxies").json() == {"mysql_master": created.json()}


def test_disabled_create_then_enable_disable(api: httpx.Client) -> None:  # 8, 9
    port = free_port()
    created = api.post(
        "/proxies",
        json={
            "name": "mysql_master",
            "listen": f"localhost:{port}",
            "upstream": "localhost:20001",
            "enabled": False,
        },
    ).json()
    assert created["listen"] == f"localhost:{port}" and created["enabled"] is False
    assert not accepts(f"127.0.0.1:{port}")
    assert api.post("/proxies/mysql_master", json={"enabled": True}).json()["enabled"] is True
    assert accepts(f"127.0.0.1:{port}")
    assert api.patch("/proxies/mysql_master", json={"enabled": False}).status_code == 200
    assert not accepts(f"127.0.0.1:{port}")


def test_name_conflict_and_port_conflict(api: httpx.Client) -> None:  # 10, 11, 12
    port = free_port()
    body = {"name": "mysql_master", "listen": f"127.0.0.1:{port}", "upstream": "localhost:20001"}
    assert api.post("/proxies", json=body).status_code == 201
    again = api.post("/proxies", json={**body, "listen": "127.0.0.1:0"})
    assert (again.status_code, again.text) == (409, error(409, "proxy already exists"))
    clash = api.post("/proxies", json={**body, "name": "other"})
    assert clash.status_code == 500
    assert clash.json() == {
        "error": f"listen tcp 127.0.0.1:{port}: bind: address already in use",
        "status": 500,
    }
    assert api.delete("/proxies/mysql_master").status_code == 204
    assert not accepts(f"127.0.0.1:{port}")
    gone = api.delete("/proxies/mysql_master")
    assert (gone.status_code, gone.text) == (404, error(404, "proxy not found"))
    assert api.post("/proxies", json={**body, "name": "other"}).status_code == 201
    assert api.post("/proxies", json={**body, "listen": "127.0.0.1:0"}).status_code == 201


def test_random_port_survives_disable_enable_and_reset(
    api: httpx.Client, server: Server
) -> None:  # 13, 35, 36
    created = api.post("/proxies", json={"name": "p", "upstream": "localhost:1"}).json()
    listen = created["listen"]
    host, port = listen.rsplit(":", 1)
    # No listen: Go binds every interface; we bind loopback only (README, "Where we differ").
    assert host == ("[::]" if is_real(server) else "127.0.0.1") and port != "0"
    assert accepts(f"127.0.0.1:{port}")
    assert api.post("/proxies", json={"name": "p", "upstream": "x:1"}).status_code == 409
    api.post("/proxies/p/toxics", json={"type": "latency", "attributes": {"latency": 5}})
    api.post("/proxies/p", json={"enabled": False})
    assert not accepts(f"127.0.0.1:{port}")
    assert api.post("/proxies/p", json={"enabled": True}).json()["listen"] == listen
    api.post("/proxies/p", json={"enabled": False})
    reset = api.post("/reset")
    assert (reset.status_code, reset.content) == (204, b"")
    after = api.get("/proxies/p").json()
    assert (after["listen"], after["enabled"], after["toxics"]) == (listen, True, [])
    assert accepts(f"127.0.0.1:{port}")


def test_populate(api: httpx.Client, echo_port: int) -> None:  # 14, 15, 16, 17, 20
    one, two = free_port(), free_port()
    response = api.post(
        "/populate",
        json=[
            {"name": "one", "listen": f"localhost:{one}", "upstream": f"localhost:{echo_port}"},
            {"name": "two", "listen": "127.0.0.1:0", "upstream": "x:1", "enabled": False},
        ],
    )
    assert response.status_code == 201
    proxies = response.json()["proxies"]
    assert [p["name"] for p in proxies] == ["one", "two"]
    assert proxies[0]["enabled"] is True and accepts(f"127.0.0.1:{one}")
    assert proxies[1]["enabled"] is False
    assert echo_through(f"127.0.0.1:{one}", b"ping") == b"ping"
    api.post("/proxies/one/toxics", json={"type": "latency", "attributes": {"latency": 1}})
    # same listen (by hostname) and upstream: the same proxy is kept, with its toxic
    again = api.post(
        "/populate",
        json=[
            {"name": "one", "listen": f"localhost:{one}", "upstream": f"localhost:{echo_port}"},
            {"name": "two", "listen": f"127.0.0.1:{two}", "upstream": "x:1"},
        ],
    ).json()["proxies"]
    assert again[0]["listen"] == f"127.0.0.1:{one}" and len(again[0]["toxics"]) == 1
    assert again[1]["listen"] == f"127.0.0.1:{two}" and accepts(f"127.0.0.1:{two}")
    empty = api.post("/populate", json=[])
    assert (empty.status_code, empty.content) == (201, b'{"proxies":null}')


def test_populate_errors(api: httpx.Client) -> None:  # 18, 19
    bad_name = api.post(
        "/populate", json=[{"name": "a", "upstream": "x:1"}, {"name": "", "upstream": "x:1"}]
    )
    assert bad_name.status_code == 400
    assert bad_name.headers["content-type"] == "application/json"  # api.go Populate
    assert bad_name.content == (
        b'{"error":"missing required field: name at proxy 2","status":400,"proxies":null}'
    )
    assert api.get("/proxies").json() == {}
    bad_listen = api.post(
        "/populate",
        json=[
            {"name": "a", "listen": "127.0.0.1:0", "upstream": "x:1"},
            {"name": "b", "listen": "local373", "upstream": "x:1"},
            {"name": "c", "listen": "127.0.0.1:0", "upstream": "x:1"},
        ],
    )
    assert bad_listen.status_code == 500
    body = bad_listen.json()
    assert body["error"] == "listen tcp: address local373: missing port in address"
    assert [p["name"] for p in body["proxies"]] == ["a"]
    assert sorted(api.get("/proxies").json()) == ["a"]
    assert api.post("/populate", json={"name": "a"}).status_code == 400


def test_update_listen_restarts_or_not(api: httpx.Client, echo_port: int) -> None:  # 40, 41
    old = create(api, f"127.0.0.1:{echo_port}")
    port = old.rsplit(":", 1)[1]
    host, _ = old.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as live:
        same = api.post("/proxies/p", json={"listen": f"localhost:{port}"}).json()
        assert same["listen"] == old
        live.sendall(b"still here")
        assert live.recv(100) == b"still here"  # not restarted: the connection survived
    moved = api.post("/proxies/p", json={"listen": "localhost:0"}).json()["listen"]
    assert moved != old and not moved.endswith(":0") and accepts(moved)
    api.post("/proxies/p", json={"enabled": False})
    assert not accepts(moved)
    bad = api.patch("/proxies/p", json={"listen": "local373"})
    assert bad.json() == {"error": "address local373: missing port in address", "status": 500}


def test_disable_closes_live_connections(api: httpx.Client, echo_port: int) -> None:  # 42
    listen = create(api, f"127.0.0.1:{echo_port}")
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as live:
        live.sendall(b"x")
        assert live.recv(10) == b"x"
        api.post("/proxies/p", json={"enabled": False})
        assert live.recv(10) == b""  # EOF
    assert not accepts(listen)


def test_down_upstream_closes_client(api: httpx.Client) -> None:  # 39
    listen = create(api, f"127.0.0.1:{free_port()}")
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as client:
        assert client.recv(10) == b""


def test_big_message_and_half_close(api: httpx.Client, echo_port: int) -> None:  # 37, 38
    listen = create(api, f"127.0.0.1:{echo_port}")
    payload = bytes(range(256)) * 256  # 64 KiB
    assert echo_through(listen, payload) == payload


# -- toxics API ----------------------------------------------------------------------------------


@pytest.fixture
def proxy(api: httpx.Client, echo_port: int) -> str:
    create(api, f"127.0.0.1:{echo_port}")
    return "/proxies/p/toxics"


def test_add_and_list_toxics(api: httpx.Client, proxy: str) -> None:  # 21, 22, 26, 27
    body = {
        "name": "foobar",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
        "attributes": {"latency": 100, "jitter": 10},
    }
    created = api.post(proxy, json=body)
    assert created.status_code == 200
    assert created.text == (
        '{"attributes":{"latency":100,"jitter":10},"name":"foobar","type":"latency",'
        '"stream":"downstream","toxicity":1}'
    )
    null_attrs = api.post(proxy, json={"type": "latency", "stream": "upstream", "attributes": None})
    assert null_attrs.json()["attributes"] == {"latency": 0, "jitter": 0}
    assert null_attrs.json()["toxicity"] == 1
    fraction = api.post(proxy, json={"name": "t", "type": "timeout", "toxicity": 0.2})
    assert '"toxicity":0.2}' in fraction.text
    noop = api.post(proxy, json={"type": "noop"}).json()
    assert noop == {
        "attributes": {},
        "name": "noop_downstream",
        "type": "noop",
        "stream": "downstream",
        "toxicity": 1,
    }
    listed = [t["name"] for t in api.get(proxy).json()]
    assert listed == ["latency_upstream", "foobar", "t", "noop_downstream"]  # upstream first
    assert api.get("/proxies/p").json()["toxics"] == api.get(proxy).json()


def test_toxic_conflicts_and_defaults(api: httpx.Client, proxy: str) -> None:  # 23, 24, 25
    api.post(proxy, json={"name": "x", "type": "latency", "stream": "downstream"})
    same = api.post(proxy, json={"name": "x", "type": "timeout"})
    assert (same.status_code, same.text) == (409, error(409, "toxic already exists"))
    other_stream = api.post(proxy, json={"name": "x", "type": "latency", "stream": "upstream"})
    assert other_stream.status_code == 409
    assert api.get(f"{proxy}/x").json()["type"] == "latency"
    assert api.post(proxy, json={"type": "latency", "stream": "upstream"}).status_code == 200
    assert api.post(proxy, json={"type": "latency", "stream": "downstream"}).status_code == 200
    names = {t["name"] for t in api.get(proxy).json()}
    assert {"latency_upstream", "latency_downstream"} <= names


def test_update_merges_attributes(api: httpx.Client, proxy: str) -> None:  # 28
    api.post(proxy, json={"type": "latency", "attributes": {"latency": 100, "jitter": 10}})
    first = api.patch(
        f"{proxy}/latency_downstream", json={"attributes": {"latency": 1000}, "toxicity": 0.5}
    ).json()
    assert (first["attributes"], first["toxicity"]) == ({"latency": 1000, "jitter": 10}, 0.5)
    second = api.post(f"{proxy}/latency_downstream", json={"attributes": {"latency": 500}}).json()
    assert (second["attributes"]["latency"], second["toxicity"]) == (500, 0.5)


def test_remove_and_not_found(api: httpx.Client, proxy: str) -> None:  # 29, 33
    api.post(proxy, json={"type": "noop"})
    assert api.delete(f"{proxy}/noop_downstream").status_code == 204
    assert api.get(proxy).json() == []
    for method in ("GET", "DELETE", "PATCH"):
        missing = api.request(method, f"{proxy}/noop_downstream", json={"attributes": {}})
        assert (missing.status_code, missing.text) == (404, error(404, "toxic not found"))
    no_proxy = api.post("/proxies/nope/toxics", json={"type": "noop"})
    assert (no_proxy.status_code, no_proxy.text) == (404, error(404, "proxy not found"))


def test_invalid_stream_type_and_attributes(
    api: httpx.Client, proxy: str, server: Server
) -> None:  # 30, 31, 34
    for stream in ("walrustream", ""):
        bad = api.post(proxy, json={"type": "latency", "stream": stream})
        assert bad.text == error(400, "stream was invalid, can be either upstream or downstream")
    assert api.post(proxy, json={"type": "nope"}).text == error(400, "invalid toxic type")
    fractional = api.post(proxy, json={"type": "latency", "attributes": {"latency": 100.5}})
    assert fractional.status_code == 400
    assert fractional.json()["error"].startswith("bad request body: json: cannot unmarshal")
    assert api.post(proxy, content=b"").json()["error"] == "bad request body: EOF"
    assert api.get(proxy).json() == []
    # Negative times and sizes are taken as Go takes them (no wait, nothing passes).
    for number, (toxic_type, attributes) in enumerate(
        (
            ("latency", {"latency": -1, "jitter": -2}),
            ("timeout", {"timeout": -100}),
            ("slow_close", {"delay": -1}),
            ("limit_data", {"bytes": -1}),
        )
    ):
        body = {"name": f"n{number}", "type": toxic_type, "attributes": attributes}
        assert api.post(proxy, json=body).json()["attributes"] == attributes
    api.post("/reset")
    # Values that hang or crash Go Toxiproxy: we refuse them with a clear message, Go takes
    # them (README, "Where we differ").
    for toxic_type, attributes in (
        ("bandwidth", {"rate": 0}),
        ("bandwidth", {"rate": -5}),
        ("slicer", {"average_size": 0}),
        ("slicer", {"average_size": 10, "size_variation": 20}),
        ("slicer", {"average_size": 10, "size_variation": -1}),
    ):
        answer = api.post(proxy, json={"type": toxic_type, "attributes": attributes})
        if is_real(server):
            assert answer.status_code == 200, (toxic_type, attributes)
            api.post("/reset")
        else:
            assert answer.status_code == 400, (toxic_type, attributes)
            assert answer.json()["error"].startswith("invalid attribute ")


def test_extension_attributes_are_echoed(api: httpx.Client, proxy: str, server: Server) -> None:
    created = api.post(
        proxy,
        json={"type": "reset_after", "attributes": {"bytes": 1, "only_connection": 2}},
    ).json()
    if is_real(server):  # Go knows no extension: an unknown type, an ignored attribute
        assert created == {"error": "invalid toxic type", "status": 400}
        noop = api.post(proxy, json={"type": "noop", "attributes": {"from_connection": 0}})
        assert noop.json()["attributes"] == {}
        return
    assert created == {
        "attributes": {"bytes": 1, "mode": "rst", "forward": True, "only_connection": 2},
        "name": "reset_after_upstream",
        "type": "reset_after",
        "stream": "upstream",
        "toxicity": 1,
    }
    bad_mode = api.post(
        proxy, json={"name": "m", "type": "reset_after", "attributes": {"mode": "boom"}}
    )
    assert bad_mode.status_code == 400
    bad_target = api.post(proxy, json={"type": "noop", "attributes": {"from_connection": 0}})
    assert bad_target.status_code == 400


def test_toxics_during_traffic_keep_data_intact(api: httpx.Client, proxy: str) -> None:  # 43
    listen = api.get("/proxies/p").json()["listen"]
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for i in range(100):
            stream = "upstream" if i % 2 else "downstream"
            api.post(proxy, json={"name": f"n{i}", "type": "noop", "stream": stream})
            message = f"message {i}".encode()
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(100)
            assert got == message
            api.delete(f"{proxy}/n{i}")


def test_metrics_only_with_the_flag(
    api: httpx.Client, echo_port: int, server: Server
) -> None:  # 59
    assert api.get("/metrics").text == "404 page not found\n"
    with_metrics: Server = (
        RealToxiproxyServer(server.binary, metrics=True)
        if isinstance(server, RealToxiproxyServer)
        else ToxiproxyServerThread(metrics=True)
    )
    with with_metrics:
        client = httpx.Client(base_url=with_metrics.url, timeout=20)
        listen = create(client, f"127.0.0.1:{echo_port}", "shopify_http")
        assert echo_through(listen, b"x" * 1000) == b"x" * 1000
        client.post("/proxies/shopify_http", json={"enabled": False})  # links end: counted
        text = client.get("/metrics").text
        labels = f'listener="{listen}",proxy="shopify_http",upstream="127.0.0.1:{echo_port}"'
        for metric in ("received", "sent"):
            for direction in ("upstream", "downstream"):
                line = f'toxiproxy_proxy_{metric}_bytes_total{{direction="{direction}",{labels}}}'
                assert f"{line} 1000\n" in text, text
        client.close()


# -- both servers, one script --------------------------------------------------------------------

# Requests whose answers must be the same from both servers, byte for byte once ports are named
# (P1, P2: fixed listen ports; ECHO: the upstream; PORT: any port a server picked). A body given
# as str is sent raw. Left out: the deliberate differences asserted above, and a listen host
# that fails DNS (Go's message names the machine's resolver).
def _api_script(p1: int, p2: int, echo: int) -> list[tuple[str, str, Any]]:
    up = f"127.0.0.1:{echo}"
    a = {"name": "a", "listen": f"127.0.0.1:{p1}", "upstream": up}
    c = {"name": "c", "listen": "localhost:0", "upstream": up, "enabled": False}
    q = {"name": "q", "upstream": up, "listen": "127.0.0.1:0"}
    p2_off = {**a, "name": "p2", "listen": f"127.0.0.1:{p2}", "enabled": False}
    t = "/proxies/a/toxics"
    return [
        ("GET", "/proxies", None),
        ("GET", "/version", None),
        ("POST", "/proxies", a),
        ("POST", "/proxies", a),
        ("POST", "/proxies", {**a, "name": "b"}),
        ("POST", "/proxies", c),
        ("POST", "/proxies", {**q, "name": "d", "toxics": [1]}),
        ("POST", "/proxies", [1, 2]),
        ("POST", "/proxies", '"str"'),
        ("POST", "/proxies", "{"),
        ("POST", "/proxies", '{"name":1.5}'),
        ("POST", "/proxies", {"name": "e", "upstream": up, "enabled": "yes"}),
        ("POST", "/proxies", {"name": "e", "upstream": 5}),
        ("POST", "/proxies", {"name": "e", "upstream": up, "listen": "nohost"}),
        ("POST", "/proxies", {"name": "e", "upstream": up, "listen": "127.0.0.1:99999"}),
        ("GET", "/proxies/a", None),
        ("GET", "/proxies/zz", None),
        ("PATCH", "/proxies/c", {"enabled": True}),
        ("PATCH", "/proxies/c", {}),
        ("PATCH", "/proxies/c", None),
        ("POST", "/proxies/c", {"name": "renamed", "upstream": "x:1", "enabled": None}),
        ("POST", "/proxies/c", [1]),
        ("POST", t, {"type": "latency", "attributes": {"latency": 10, "jitter": 1}}),
        ("POST", t, {"type": "latency", "stream": "UpStream", "toxicity": 0.3}),
        ("POST", t, {"type": "bandwidth", "name": "bw", "attributes": {"rate": 100}}),
        ("POST", t, {"type": "slow_close", "stream": "upstream", "attributes": {"x": 1}}),
        ("POST", t, {"type": "timeout", "name": "to", "toxicity": 0}),
        ("POST", t, {"type": "reset_peer", "toxicity": 0, "attributes": {"timeout": 3}}),
        ("POST", t, {"type": "slicer", "attributes": {"average_size": 10, "size_variation": 2}}),
        ("POST", t, {"type": "limit_data", "name": "ld", "attributes": {"bytes": 100000}}),
        ("POST", t, {"type": "noop", "name": "n", "toxicity": 2.5}),
        ("POST", t, {"type": "noop", "name": "n2", "toxicity": -1}),
        ("POST", t, {"type": "noop", "name": "n3", "toxicity": 0.1234567}),
        ("POST", t, {"type": "noop", "name": "n4", "toxicity": "x"}),
        ("POST", t, {"type": "noop", "name": "n5", "stream": 3}),
        ("POST", t, {"type": 5}),
        ("POST", t, {"type": "latency", "name": "l2", "attributes": {"latency": "5"}}),
        ("POST", t, '{"type": "latency", "name": "l3", "attributes": {"latency": 1e3}}'),
        ("POST", t, {"type": "latency", "name": "l4", "attributes": [1]}),
        ("POST", t, {"type": "latency", "name": "l5", "attributes": {"latency": True}}),
        ("POST", t, {"type": "latency", "name": "l6", "attributes": {"latency": 2**63}}),
        ("POST", t, {"type": "slicer", "name": "l7", "attributes": {"delay": 1.5}}),
        ("POST", t, {"name": "l8"}),
        ("POST", t, {"type": "", "stream": ""}),
        ("POST", t, {"type": "nope", "name": "latency_downstream"}),
        ("POST", t, {"type": "latency", "name": "latency_downstream", "attributes": {"x": "y"}}),
        ("POST", t, [1]),
        ("POST", t, None),
        ("GET", t, None),
        ("GET", "/proxies", None),
        ("PATCH", f"{t}/latency_downstream", {"attributes": {"latency": 20}}),
        ("PATCH", f"{t}/latency_downstream", {"toxicity": 0.5}),
        ("PATCH", f"{t}/latency_downstream", {"attributes": {"latency": "x"}}),
        ("PATCH", f"{t}/latency_downstream", {"attributes": {"latency": -3}}),
        ("PATCH", f"{t}/latency_downstream", {"name": "zz", "type": "noop", "stream": "upstream"}),
        ("PATCH", f"{t}/latency_downstream", {"attributes": [1]}),
        ("PATCH", f"{t}/latency_downstream", [1]),
        ("PATCH", f"{t}/latency_downstream", None),
        ("POST", f"{t}/latency_downstream", {"toxicity": None, "attributes": None}),
        ("PATCH", f"{t}/ld", {"attributes": {"bytes": 5}, "toxicity": 0}),
        ("PATCH", f"{t}/nothere", {"attributes": {}}),
        ("GET", f"{t}/latency_downstream", None),
        ("GET", f"{t}/nothere", None),
        ("DELETE", f"{t}/n", None),
        ("DELETE", f"{t}/n", None),
        ("POST", "/proxies/c/toxics", {"type": "latency"}),
        ("POST", "/populate", [{**a, "listen": f"localhost:{p1}"}, p2_off]),
        ("POST", "/populate", [{**a, "upstream": "other:1"}]),
        ("POST", "/populate", {"name": "x"}),
        ("POST", "/populate", None),
        ("POST", "/populate", "[1"),
        ("POST", "/populate", []),
        ("POST", "/populate", [None]),
        ("POST", "/populate", [1]),
        ("POST", "/populate", [{"name": 5}]),
        ("POST", "/populate", [{"name": "q", "upstream": "x:1", "enabled": "no"}]),
        ("POST", "/populate", [q, {"name": "q2"}]),
        ("POST", "/populate", [q, {**a, "name": "q3"}]),  # a holds P1: the bind fails
        ("GET", "/proxies", None),
        ("DELETE", "/proxies/c", None),
        ("POST", "/reset", None),
        ("GET", "/proxies", None),
        ("DELETE", "/proxies/a", None),
        ("DELETE", "/proxies/a", None),
        ("GET", "/proxies/", None),
        ("GET", "/reset", None),
        ("PUT", "/proxies", None),
        ("GET", "/metrics", None),
        ("POST", "/proxies/a%20b/toxics", {"type": "noop"}),
        ("OPTIONS", "/proxies", None),
    ]  # fmt: skip


def _answers(url: str, script: list[tuple[str, str, Any]], names: dict[int, str]) -> list[Any]:
    def named(text: str) -> str:
        for port, name in names.items():
            text = text.replace(f":{port}", f":{name}")
        return re.sub(r":\d{2,5}\b", ":PORT", text)

    answers = []
    with httpx.Client(base_url=url, timeout=20) as client:
        for name in client.get("/proxies").json():
            client.delete(f"/proxies/{name}")
        for method, path, body in script:
            if isinstance(body, str):
                response = client.request(method, path, content=body.encode())
            else:
                response = client.request(method, path, json=body)
            headers = dict(response.headers)
            headers.pop("date", None)
            length = headers.pop("content-length", None)  # the body's, checked; ports vary
            assert length is None or int(length) == len(response.content)
            if "x-toxiproxy-request-id" in headers:  # an opaque id: only its presence counts
                headers["x-toxiproxy-request-id"] = "present"
            answers.append((method, path, response.status_code, headers, named(response.text)))
        for name in client.get("/proxies").json():
            client.delete(f"/proxies/{name}")
    return answers


def test_both_servers_answer_a_script_alike(
    embedded: ToxiproxyServerThread, real_toxiproxy: RealToxiproxyServer, echo_port: int
) -> None:  # status, headers, bodies, error texts, list order, populate, reset, PATCH and POST
    p1, p2 = free_port(), free_port()
    script = _api_script(p1, p2, echo_port)
    names = {p1: "P1", p2: "P2", echo_port: "ECHO"}
    ours = _answers(embedded.url, script, names)
    real = _answers(real_toxiproxy.url, script, names)
    differences = [(o, r) for o, r in zip(ours, real, strict=True) if o != r]
    assert differences == []
