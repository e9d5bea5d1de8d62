"""Toxiproxy servers for tests and benchmarks: ours in a background thread, or the real one.

    with ToxiproxyServerThread(seed=1) as server:
        requests.get(f"{server.url}/proxies")
        # or point toxiproxy-python at it:
        toxiproxy.api.APIConsumer.host, toxiproxy.api.APIConsumer.port = "127.0.0.1", server.port

The server runs its own ``trio.run`` with real loopback TCP, exactly as ``gateway-harness proxy``
does; ``stop()`` (or leaving the ``with`` block) shuts it down and joins the thread.

``RealToxiproxyServer(find_toxiproxy_server())`` runs Shopify's ``toxiproxy-server`` binary on a
free loopback port, with the same ``url``/``port``/``with`` interface.
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import trio

from harness.faults.api import TOXIPROXY_VERSION, serve_api
from harness.faults.proxy import ProxyCollection, TcpTransport


class ToxiproxyServerThread:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, seed: int | str = 0, metrics: bool = False
    ) -> None:
        self.host = host
        self.metrics = metrics
        self.requested_port = port
        self.seed = seed
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="toxiproxy-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            collection = ProxyCollection(nursery, TcpTransport(), self.seed, metrics=self.metrics)
            self.port = await nursery.start(serve_api, collection, self.host, self.requested_port)
            self._ready.set()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await collection.close()

    def start(self) -> ToxiproxyServerThread:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"toxiproxy server thread failed: {self._error!r}")
        if not self.port:
            raise RuntimeError("toxiproxy server thread did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None and self._thread.is_alive():
            cancel = self._cancel
            try:
                trio.from_thread.run_sync(cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout=30)

    def __enter__(self) -> ToxiproxyServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


TOXIPROXY_SERVER_ENV = "TOXIPROXY_SERVER"  # path of a toxiproxy-server binary
TOXIPROXY_INSTALL = ".ci/install-toxiproxy"  # builds it (needs Go) into TOXIPROXY_INSTALLED
TOXIPROXY_INSTALLED = Path(".tools/bin/toxiproxy-server")  # relative to the checkout


class ToxiproxyServerMissing(Exception):
    """No usable real toxiproxy-server (the message says why and how to install one)."""


def find_toxiproxy_server() -> str:
    """The real ``toxiproxy-server``: ``$TOXIPROXY_SERVER``, else on PATH, else where
    ``.ci/install-toxiproxy`` puts it (run from the checkout); checked to be the version our
    API claims. Raises ``ToxiproxyServerMissing`` otherwise."""
    binary = os.environ.get(TOXIPROXY_SERVER_ENV) or shutil.which("toxiproxy-server")
    if binary is None and TOXIPROXY_INSTALLED.is_file():
        binary = str(TOXIPROXY_INSTALLED.resolve())
    hint = f"run {TOXIPROXY_INSTALL} (needs Go), or set {TOXIPROXY_SERVER_ENV}"
    if binary is None:
        raise ToxiproxyServerMissing(
            f"real Toxiproxy not found ({TOXIPROXY_SERVER_ENV} unset, no toxiproxy-server on "
            f"PATH or in {TOXIPROXY_INSTALLED}); {hint}"
        )
    try:
        out = subprocess.run(
            [binary, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except OSError as exc:
        raise ToxiproxyServerMissing(f"real Toxiproxy {binary}: {exc.strerror}; {hint}") from None
    if out != f"toxiproxy-server version {TOXIPROXY_VERSION}":
        raise ToxiproxyServerMissing(
            f"real Toxiproxy {binary} says {out!r}, need {TOXIPROXY_VERSION}; {hint}"
        )
    return binary


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealToxiproxyServer:
    """Shopify's ``toxiproxy-server`` as a child process on a free port of 127.0.0.1.

    ``start()`` returns once its API accepts connections; ``stop()`` terminates it.
    """

    START_TIMEOUT = 30.0  # seconds; it is up in milliseconds when healthy

    def __init__(self, binary: str, *, metrics: bool = False, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.host = host
        self.metrics = metrics
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RealToxiproxyServer:
        # The binary takes a port number, not 0: pick a free one; retry if someone took it.
        for _ in range(5):
            if self._spawn(_free_loopback_port()):
                return self
        raise RuntimeError(f"{self.binary} did not start: {self._log_tail()}")

    def _spawn(self, port: int) -> bool:
        self._log = tempfile.NamedTemporaryFile(prefix="toxiproxy-", suffix=".log")
        args = [self.binary, "-host", self.host, "-port", str(port)]
        if self.metrics:
            args.append("-proxy-metrics")
        env = {**os.environ, "LOG_LEVEL": "warn"}
        self._process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    self.port = port
                    return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def _log_tail(self) -> str:
        if self._log is None:
            return "no output"
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> RealToxiproxyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class UpstreamConnection:
    """What one connection brought to ``echo_server``: each read with its ``time.monotonic()``,
    and how it ended: ``"fin"``, ``"rst"`` (ECONNRESET) or ``"open"`` (not yet)."""

    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    end: str = "open"
    ended_at: float | None = None

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.arrivals)


@contextmanager
def echo_server(
    connections: list[UpstreamConnection] | None = None, *, echo: bool = True
) -> Iterator[int]:
    """A threaded TCP echo server on 127.0.0.1 (an upstream for proxies); yields its port.

    ``connections``, if given, gets one ``UpstreamConnection`` per accepted connection, in
    accept order. ``echo=False`` makes it a sink: it records and answers nothing.
    """

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen = UpstreamConnection()
            if connections is not None:
                connections.append(seen)
            try:
                while data := self.request.recv(65536):
                    seen.arrivals.append((time.monotonic(), data))
                    if echo:
                        self.request.sendall(data)
                seen.end = "fin"
            except ConnectionResetError:
                seen.end = "rst"
            except OSError:
                seen.end = "error"
            seen.ended_at = time.monotonic()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
