"""The embedded Toxiproxy-compatible API over real HTTP (httpx) and real TCP.

Numbers in test names / comments refer to the checklist in
``/work/shared/reference/toxiproxy-spec.md`` section 9.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from harness.faults.testing import ToxiproxyServerThread, echo_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ToxiproxyServerThread]:
    with ToxiproxyServerThread(seed=7) as running:
        yield running


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    with echo_server() as port:
        yield port


@pytest.fixture
def api(server: ToxiproxyServerThread) -> Iterator[httpx.Client]:
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


def test_random_port_survives_disable_enable_and_reset(api: httpx.Client) -> None:  # 13, 36
    created = api.post("/proxies", json={"name": "p", "upstream": "localhost:1"}).json()  # 35
    listen = created["listen"]
    assert listen.startswith("127.0.0.1:") and not listen.endswith(":0")
    assert api.post("/proxies", json={"name": "p", "upstream": "x:1"}).status_code == 409
    api.post("/proxies/p/toxics", json={"type": "latency", "attributes": {"latency": 5}})
    api.post("/proxies/p", json={"enabled": False})
    assert not accepts(listen)
    assert api.post("/proxies/p", json={"enabled": True}).json()["listen"] == listen
    api.post("/proxies/p", json={"enabled": False})
    reset = api.post("/reset")
    assert (reset.status_code, reset.content) == (204, b"")
    after = api.get("/proxies/p").json()
    assert (after["listen"], after["enabled"], after["toxics"]) == (listen, True, [])
    assert accepts(listen)


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
    created = api.post("/proxies", json={"name": "p", "upstream": f"127.0.0.1:{echo_port}"}).json()
    old = created["listen"]
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
    listen = api.post("/proxies", json={"name": "p", "upstream": f"127.0.0.1:{echo_port}"}).json()[
        "listen"
    ]
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as live:
        live.sendall(b"x")
        assert live.recv(10) == b"x"
        api.post("/proxies/p", json={"enabled": False})
        assert live.recv(10) == b""  # EOF
    assert not accepts(listen)


def test_down_upstream_closes_client(api: httpx.Client) -> None:  # 39
    body = {"name": "p", "upstream": f"127.0.0.1:{free_port()}"}
    listen = api.post("/proxies", json=body).json()["listen"]
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as client:
        assert client.recv(10) == b""


def test_big_message_and_half_close(api: httpx.Client, echo_port: int) -> None:  # 37, 38
    listen = api.post("/proxies", json={"name": "p", "upstream": f"127.0.0.1:{echo_port}"}).json()[
        "listen"
    ]
    payload = bytes(range(256)) * 256  # 64 KiB
    assert echo_through(listen, payload) == payload


# -- toxics API ----------------------------------------------------------------------------------


@pytest.fixture
def proxy(api: httpx.Client, echo_port: int) -> str:
    api.post("/proxies", json={"name": "p", "upstream": f"127.0.0.1:{echo_port}"})
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


def test_invalid_stream_type_and_attributes(api: httpx.Client, proxy: str) -> None:  # 30, 31, 34
    for stream in ("walrustream", ""):
        bad = api.post(proxy, json={"type": "latency", "stream": stream})
        assert bad.text == error(400, "stream was invalid, can be either upstream or downstream")
    assert api.post(proxy, json={"type": "nope"}).text == error(400, "invalid toxic type")
    fractional = api.post(proxy, json={"type": "latency", "attributes": {"latency": 100.5}})
    assert fractional.status_code == 400
    assert fractional.json()["error"].startswith("bad request body: json: cannot unmarshal")
    assert api.post(proxy, content=b"").json()["error"] == "bad request body: EOF"
    # values that hang or crash Go Toxiproxy are refused with a clear message
    for toxic_type, attributes in (
        ("bandwidth", {"rate": 0}),
        ("bandwidth", {"rate": -5}),
        ("slicer", {"average_size": 0}),
        ("slicer", {"average_size": 10, "size_variation": 20}),
        ("latency", {"latency": -1}),
        ("timeout", {"timeout": -100}),
        ("slow_close", {"delay": -1}),
    ):
        refused = api.post(proxy, json={"type": toxic_type, "attributes": attributes})
        assert refused.status_code == 400, (toxic_type, attributes)
        assert refused.json()["error"].startswith("invalid attribute ")
    assert api.get(proxy).json() == []


def test_extension_attributes_are_echoed(api: httpx.Client, proxy: str) -> None:
    created = api.post(
        proxy,
        json={"type": "reset_after", "attributes": {"bytes": 1, "only_connection": 2}},
    ).json()
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


def test_metrics_only_with_the_flag(api: httpx.Client, echo_port: int) -> None:  # 59
    assert api.get("/metrics").text == "404 page not found\n"
    with ToxiproxyServerThread(metrics=True) as with_metrics:
        client = httpx.Client(base_url=with_metrics.url, timeout=20)
        body = {"name": "shopify_http", "upstream": f"127.0.0.1:{echo_port}"}
        listen = client.post("/proxies", json=body).json()["listen"]
        assert echo_through(listen, b"x" * 1000) == b"x" * 1000
        client.post("/proxies/shopify_http", json={"enabled": False})  # links end: counted
        text = client.get("/metrics").text
        labels = f'listener="{listen}",proxy="shopify_http",upstream="127.0.0.1:{echo_port}"'
        for metric in ("received", "sent"):
            for direction in ("upstream", "downstream"):
                line = f'toxiproxy_proxy_{metric}_bytes_total{{direction="{direction}",{labels}}}'
                assert f"{line} 1000\n" in text, text
        client.close()
