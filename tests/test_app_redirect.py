"""App mode's redirect (issue 18): an unmodified Python or Node program that asks for
``https://discord.com`` or ``wss://gateway.discord.gg`` lands on the harness's listeners.

Three real TLS listeners on 127.0.0.1 (random ports) stand in for the harness's REST, gateway
and resume listeners; each answers plain HTTPS with ``{"listener": name}`` and WebSocket
upgrades with the same message, and records the SNI and Host it received. A child process
(``sys.executable`` or ``node``) gets ``child_env`` and runs plain library calls against
Discord's real URLs. This machine has no DNS for Discord (and CI's real answer would fail the
certificate check), so a request only succeeds if the hooks redirected it.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from websockets.http11 import Request, Response
from websockets.trio.server import ServerConnection, serve

from harness.adapters.app.hosts import (
    DISCORD_HOSTS,
    ENV_REDIRECT,
    GATEWAY,
    PYTHON_HOOK_DIR,
    RESUME,
    address_of,
    cert_identities,
    child_env,
    issue_server_cert,
    read_redirect_log,
    redirect_map,
    write_ca_bundle,
)

pytestmark = pytest.mark.timeout(120)

ROLES = ("rest", GATEWAY, RESUME)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Listeners:
    ports: dict[str, int]
    sni: dict[str, list[str | None]] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)  # one per request or upgrade

    def at(self, role: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["listener"] == role]


@asynccontextmanager
async def listeners(ca: trustme.CA) -> AsyncIterator[Listeners]:
    cert = issue_server_cert(ca)
    found = Listeners(ports={})
    async with trio.open_nursery() as nursery:
        for role in ROLES:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            context.set_alpn_protocols(["http/1.1"])
            found.sni[role] = []
            context.sni_callback = (
                lambda _obj, name, _ctx, names=found.sni[role]: names.append(name))

            def process_request(connection: ServerConnection, request: Request,
                                role: str = role) -> Response | None:
                upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
                found.seen.append({"listener": role, "host": request.headers.get("Host"),
                                   "path": request.path, "ws": upgrade})
                return None if upgrade else connection.respond(
                    HTTPStatus.OK, json.dumps({"listener": role}))

            async def handler(ws: ServerConnection, role: str = role) -> None:
                await ws.send(json.dumps({"listener": role}))

            tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
            found.ports[role] = tcp[0].socket.getsockname()[1]
            await nursery.start(lambda task_status, h=handler, p=process_request, c=context, t=tcp:
                                serve(h, listeners=t, ssl=c, process_request=p,
                                      task_status=task_status))
        yield found
        nursery.cancel_scope.cancel()


def app_env(found: Listeners, ca: trustme.CA, tmp_path: Path, **kw: Any) -> dict[str, str]:
    redirects = redirect_map(rest=("127.0.0.1", found.ports["rest"]),
                             gateway=("127.0.0.1", found.ports[GATEWAY]),
                             resume=("127.0.0.1", found.ports[RESUME]))
    bundle = write_ca_bundle(ca.cert_pem.bytes(), tmp_path / "ca-bundle.pem")
    return child_env(redirects, ca_file=bundle, log_file=tmp_path / "redirect.jsonl", **kw)


async def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = await trio.run_process(cmd, env=env, cwd=cwd, capture_stdout=True,
                                  capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def run_python(code: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    return await run([sys.executable, "-c", textwrap.dedent(code)], env, cwd)


REST_URL = "https://discord.com/api/v10/gateway"
GATEWAY_URL = "wss://gateway.discord.gg/?v=10&encoding=json"
RESUME_URL = "wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json"

# Each snippet fetches REST_URL over HTTPS and/or opens GATEWAY_URL and RESUME_URL, printing
# the bodies; `expects` says which listeners must have seen which requests.
PYTHON_CLIENTS: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "urllib": (None, """
        import urllib.request
        print(urllib.request.urlopen(REST_URL).read().decode())
    """, ("rest",)),
    "requests": ("requests", """
        import requests
        print(requests.get(REST_URL, timeout=30).text)
    """, ("rest",)),
    "httpx": (None, """
        import httpx
        print(httpx.get(REST_URL).text)
    """, ("rest",)),
    "httpx-asyncio": (None, """
        import asyncio, httpx
        async def main():
            async with httpx.AsyncClient() as client:
                print((await client.get(REST_URL)).text)
        asyncio.run(main())
    """, ("rest",)),
    "httpx-trio": (None, """
        import httpx, trio
        async def main():
            async with httpx.AsyncClient() as client:
                print((await client.get(REST_URL)).text)
        trio.run(main)
    """, ("rest",)),
    "aiohttp": ("aiohttp", """
        import asyncio, aiohttp
        async def main():  # aiohttp's default resolver: AsyncResolver when aiodns is installed
            async with aiohttp.ClientSession() as session:
                async with session.get(REST_URL) as r:
                    print(await r.text())
                async with session.ws_connect(GATEWAY_URL) as ws:  # discord.py's way
                    print(await ws.receive_str())
                async with session.ws_connect(RESUME_URL) as ws:
                    print(await ws.receive_str())
        asyncio.run(main())
    """, ("rest", GATEWAY, RESUME)),
    "aiohttp-threaded": ("aiohttp", """
        import asyncio, aiohttp
        async def main():
            connector = aiohttp.TCPConnector(resolver=aiohttp.ThreadedResolver())
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(REST_URL) as r:
                    print(await r.text())
        asyncio.run(main())
    """, ("rest",)),
    "aiohttp-aiodns": ("aiodns", """
        import asyncio, aiohttp
        async def main():
            connector = aiohttp.TCPConnector(resolver=aiohttp.AsyncResolver())
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(REST_URL) as r:
                    print(await r.text())
        asyncio.run(main())
    """, ("rest",)),
    "websockets": (None, """
        import asyncio
        from websockets.asyncio.client import connect
        async def main():
            async with connect(GATEWAY_URL) as ws:
                print(await ws.recv())
            async with connect(RESUME_URL) as ws:
                print(await ws.recv())
        asyncio.run(main())
    """, (GATEWAY, RESUME)),
    "websockets-sync": (None, """
        from websockets.sync.client import connect
        with connect(GATEWAY_URL) as ws:
            print(ws.recv())
    """, (GATEWAY,)),
}

SNI = {"rest": "discord.com", GATEWAY: "gateway.discord.gg",
       RESUME: "gateway-us-east1-b.discord.gg"}
PATHS = {"rest": "/api/v10/gateway", GATEWAY: "/?v=10&encoding=json",
         RESUME: "/?v=10&encoding=json"}


def assert_landed(found: Listeners, expects: tuple[str, ...], stdout: str) -> None:
    for role in ROLES:
        seen = found.at(role)
        if role not in expects:
            assert seen == [] and found.sni[role] == []
            continue
        assert [s["host"] for s in seen] == [SNI[role]], seen  # Host: the name the app used
        assert [s["path"] for s in seen] == [PATHS[role]]
        assert [s["ws"] for s in seen] == [role != "rest"]
        assert found.sni[role] == [SNI[role]]  # SNI kept, and the certificate matched it
        assert json.dumps({"listener": role}) in stdout


def prelude() -> str:
    return (f"REST_URL = {REST_URL!r}\nGATEWAY_URL = {GATEWAY_URL!r}\n"
            f"RESUME_URL = {RESUME_URL!r}\n")


@pytest.mark.parametrize("lib", list(PYTHON_CLIENTS))
async def test_python_client_lands_on_the_harness(lib: str, ca: trustme.CA,
                                                  tmp_path: Path) -> None:
    needs, code, expects = PYTHON_CLIENTS[lib]
    if needs is not None:
        pytest.importorskip(needs, reason=f"{needs} is not installed in this venv")
    async with listeners(ca) as found:
        env = app_env(found, ca, tmp_path)
        rc, out, err = await run_python(prelude() + textwrap.dedent(code), env, tmp_path)
    assert rc == 0, err
    assert_landed(found, expects, out)


async def test_the_default_aiohttp_resolver_is_the_one_that_bypasses_getaddrinfo() -> None:
    """The `aiohttp` case above covers AsyncResolver only if aiodns makes it the default."""
    aiohttp_resolver = pytest.importorskip("aiohttp.resolver")
    pytest.importorskip("aiodns")
    assert aiohttp_resolver.DefaultResolver is aiohttp_resolver.AsyncResolver


async def test_the_hook_logs_that_it_loaded_and_what_it_redirected(
        ca: trustme.CA, tmp_path: Path) -> None:
    async with listeners(ca) as found:
        env = app_env(found, ca, tmp_path)
        rc, _, err = await run_python(prelude() + textwrap.dedent("""
            import urllib.request
            urllib.request.urlopen(REST_URL).read()
            urllib.request.urlopen(REST_URL).read()
        """), env, tmp_path)
    assert rc == 0, err
    log = read_redirect_log(tmp_path / "redirect.jsonl")
    assert [r["event"] for r in log] == ["loaded", "redirect"]  # once per name and mechanism
    assert log[1]["host"] == "discord.com"
    assert log[1]["to"] == ["127.0.0.1", found.ports["rest"]]


async def test_without_the_variable_the_hook_changes_nothing(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PYTHON_HOOK_DIR))
    env.pop(ENV_REDIRECT, None)
    rc, out, err = await run_python("""
        import json, socket, sys, sitecustomize
        print(json.dumps({
            "hook": sitecustomize.__file__,
            "getaddrinfo": socket.getaddrinfo.__code__.co_filename,
            "finders": [type(f).__name__ for f in sys.meta_path],
        }))
    """, env, tmp_path)
    assert rc == 0, err
    seen = json.loads(out)
    assert Path(seen["hook"]).parent == PYTHON_HOOK_DIR  # the hook did run
    assert seen["getaddrinfo"] == socket_module_file()
    assert "_AfterImport" not in seen["finders"]


def socket_module_file() -> str:
    import socket

    return socket.__file__


async def test_the_apps_own_sitecustomize_still_runs(ca: trustme.CA, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "sitecustomize.py").write_text("import builtins\nbuiltins.APP_HOOK_RAN = True\n")
    async with listeners(ca) as found:
        env = app_env(found, ca, tmp_path, base=dict(os.environ, PYTHONPATH=str(app_dir)))
        rc, out, err = await run_python(prelude() + textwrap.dedent("""
            import builtins, urllib.request
            print(urllib.request.urlopen(REST_URL).read().decode())
            print("app hook", getattr(builtins, "APP_HOOK_RAN", False))
        """), env, tmp_path)
    assert rc == 0, err
    assert "app hook True" in out
    assert_landed(found, ("rest",), out)


async def test_a_malformed_map_stops_the_python_app_before_it_reaches_discord(
        tmp_path: Path) -> None:
    env = child_env({}, base=os.environ)
    env[ENV_REDIRECT] = "not json"
    rc, out, err = await run_python("print('app ran')", env, tmp_path)
    assert rc == 2 and "app ran" not in out
    assert ENV_REDIRECT in err and len(err.strip().splitlines()) == 1


# --- Node -----------------------------------------------------------------------------------

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


def ws_package() -> Path | None:
    """`ws` from a client the harness installed (discord.js and midjourney bring it)."""
    from harness.adapters.registry import default_clients_dir

    found = sorted(default_clients_dir().glob("*/node_modules/ws/package.json"))
    return found[0].parent if found else None


NODE_PRELUDE = f"""
const REST_URL = {json.dumps(REST_URL)};
const GATEWAY_URL = {json.dumps(GATEWAY_URL)};
const RESUME_URL = {json.dumps(RESUME_URL)};
const out = (what, body) => console.log(JSON.stringify({{ what, body }}));
"""

NODE_HTTPS = r"""
const https = require('https');
const tls = require('tls');
const dns = require('dns');
function httpsGet(url) {
  return new Promise((resolve, reject) => {
    https.get(url, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}
async function main() {
  out('fetch', await (await fetch(REST_URL)).text());
  out('https.get', await httpsGet(REST_URL));
  out('dns.lookup', await dns.promises.lookup('discord.com'));
  out('tls.connect', await new Promise((resolve, reject) => {  // verified against cdn's name
    const sock = tls.connect({ host: 'cdn.discordapp.com', port: 443 }, () => {
      sock.write('GET /x.png HTTP/1.1\r\nHost: cdn.discordapp.com\r\nConnection: close\r\n\r\n');
    });
    let body = '';
    sock.on('data', (d) => { body += d; });
    sock.on('end', () => resolve(body.split('\r\n\r\n')[1]));
    sock.on('error', reject);
  }));
}
main().catch((e) => { console.error(e); process.exit(1); });
"""

NODE_WS = r"""
const WebSocket = require(WS_PATH);
async function main() {
  for (const url of [GATEWAY_URL, RESUME_URL]) {
    const ws = new WebSocket(url);
    out('ws', await new Promise((resolve, reject) => {
      ws.on('message', (m) => { resolve(m.toString()); ws.close(); });
      ws.on('error', reject);
    }));
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
"""


async def run_node(script: str, found: Listeners, ca: trustme.CA,
                   tmp_path: Path) -> list[dict[str, Any]]:
    assert NODE is not None
    env = app_env(found, ca, tmp_path)
    rc, out, err = await run([NODE, "-e", NODE_PRELUDE + script], env, tmp_path)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


@needs_node
async def test_node_fetch_https_and_tls_land_on_the_harness(ca: trustme.CA,
                                                            tmp_path: Path) -> None:
    async with listeners(ca) as found:
        results = await run_node(NODE_HTTPS, found, ca, tmp_path)
    rest = found.at("rest")  # fetch (undici), https.get, then a bare tls.connect
    assert [s["host"] for s in rest] == ["discord.com", "discord.com", "cdn.discordapp.com"]
    assert found.sni["rest"][:2] == ["discord.com"] * 2
    assert [r["body"] for r in results if r["what"] != "dns.lookup"] == [
        json.dumps({"listener": "rest"})] * 3
    assert [r["body"] for r in results if r["what"] == "dns.lookup"] == [
        {"address": "127.0.0.1", "family": 4}]  # by name only: dns.lookup has no port
    assert found.at(GATEWAY) == found.at(RESUME) == []


WS = ws_package() if NODE is not None else None


@needs_node
@pytest.mark.skipif(WS is None, reason="no `ws` package: install the discord.js or midjourney "
                    "client (GATEWAY_HARNESS_CLIENTS_DIR or .clients/) to test Node's ws")
async def test_node_ws_lands_on_the_gateway_and_resume_listeners(ca: trustme.CA,
                                                                 tmp_path: Path) -> None:
    script = f"const WS_PATH = {json.dumps(str(WS))};\n" + NODE_WS
    async with listeners(ca) as found:
        results = await run_node(script, found, ca, tmp_path)
    assert [r["body"] for r in results] == [json.dumps({"listener": GATEWAY}),
                                            json.dumps({"listener": RESUME})]
    assert_landed(found, (GATEWAY, RESUME), "\n".join(r["body"] for r in results))


@needs_node
async def test_node_without_the_variable_the_preload_changes_nothing(tmp_path: Path) -> None:
    assert NODE is not None
    env = child_env({}, base=os.environ)
    env.pop(ENV_REDIRECT)
    env["GATEWAY_HARNESS_REDIRECT_LOG"] = str(tmp_path / "log.jsonl")
    show = [NODE, "-e", "console.log(require('net').Socket.prototype.connect.toString())"]
    rc, out, err = await run(show, env, tmp_path)
    assert rc == 0, err
    clean = await run(show, {k: v for k, v in env.items() if k != "NODE_OPTIONS"}, tmp_path)
    assert "GATEWAY" not in env["NODE_OPTIONS"] and "preload.cjs" in env["NODE_OPTIONS"]
    assert out == clean[1]  # Node's own function
    assert read_redirect_log(tmp_path / "log.jsonl") == []


@needs_node
async def test_a_malformed_map_stops_the_node_app_before_it_reaches_discord(
        tmp_path: Path) -> None:
    assert NODE is not None
    env = child_env({}, base=os.environ)
    env[ENV_REDIRECT] = "[1, 2]"
    rc, out, err = await run([NODE, "-e", "console.log('app ran')"], env, tmp_path)
    assert rc == 2 and "app ran" not in out
    assert ENV_REDIRECT in err and len(err.strip().splitlines()) == 1


# --- the map, the environment, the certificate ----------------------------------------------


def test_the_map_sends_each_name_to_its_listener() -> None:
    redirects = redirect_map(rest=("127.0.0.1", 1), gateway=("127.0.0.1", 2),
                             resume=("127.0.0.1", 3))
    assert redirects["discord.com"] == ("127.0.0.1", 1)
    assert redirects["cdn.discordapp.com"] == ("127.0.0.1", 1)
    assert redirects["gateway.discord.gg"] == ("127.0.0.1", 2)
    assert redirects["*.discord.gg"] == ("127.0.0.1", 3)
    assert set(redirects) == {h.name for h in DISCORD_HOSTS}
    no_resume = redirect_map(rest=("127.0.0.1", 1), gateway=("127.0.0.1", 2))
    assert no_resume["*.discord.gg"] == ("127.0.0.1", 2)
    assert address_of("wss://127.0.0.1:4321/") == ("127.0.0.1", 4321)
    assert address_of("https://localhost") == ("localhost", 443)


def test_the_environment_keeps_what_the_user_had() -> None:
    base = {"PYTHONPATH": "/app/lib", "NODE_OPTIONS": "--max-old-space-size=512",
            "NO_PROXY": "internal.example", "HTTPS_PROXY": "http://proxy.example:3128"}
    env = child_env(redirect_map(rest=("127.0.0.1", 1), gateway=("127.0.0.1", 2)),
                    ca_file="/tmp/ca.pem", base=base)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PYTHON_HOOK_DIR), "/app/lib"]
    assert env["NODE_OPTIONS"].startswith("--max-old-space-size=512 --require ")
    assert env["NODE_OPTIONS"].endswith("preload.cjs")
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"] \
        == "/tmp/ca.pem"
    no_proxy = env["NO_PROXY"].split(",")
    assert no_proxy[0] == "internal.example" and "discord.com" in no_proxy
    assert ".discord.gg" in no_proxy and env["no_proxy"] == env["NO_PROXY"]
    assert json.loads(env[ENV_REDIRECT])["gateway.discord.gg"] == ["127.0.0.1", 2]


async def test_the_certificate_covers_every_discord_name_and_nothing_else(
        ca: trustme.CA) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    names = [n.replace("*.", "gateway-us-east1-b.") for n in cert_identities()]
    async with listeners(ca) as found:
        for name in [*names, "example.com", "a.b.discord.gg"]:
            stream = await trio.open_tcp_stream("127.0.0.1", found.ports["rest"])
            tls = trio.SSLStream(stream, client, server_hostname=name)
            try:
                await tls.do_handshake()
                ok = True
            except trio.BrokenResourceError as exc:
                assert isinstance(exc.__cause__, ssl.SSLCertVerificationError), exc
                ok = False
            finally:
                await stream.aclose()
            assert ok == (name in names), name
