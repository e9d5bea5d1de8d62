"""Run the embedded Toxiproxy-compatible server in a background thread (for synchronous code).

    with ToxiproxyServerThread(seed=1) as server:
        requests.get(f"{server.url}/proxies")
        # or point toxiproxy-python at it:
        toxiproxy.api.APIConsumer.host, toxiproxy.api.APIConsumer.port = "127.0.0.1", server.port

The server runs its own ``trio.run`` with real loopback TCP, exactly as ``gateway-harness proxy``
does; ``stop()`` (or leaving the ``with`` block) shuts it down and joins the thread.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import trio

from harness.faults.api import serve_api
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


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


@contextmanager
def echo_server() -> Iterator[int]:
    """A threaded TCP echo server on 127.0.0.1 (an upstream for proxies); yields its port."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
