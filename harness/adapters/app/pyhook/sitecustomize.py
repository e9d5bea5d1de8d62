"""gateway-harness start-up hook for an unmodified Python app (issue 18).

The harness puts this file's folder first on the child's PYTHONPATH, so Python's ``site`` imports
it at start-up. When ``GATEWAY_HARNESS_REDIRECT`` holds a JSON object ``{"hostname or *.domain":
[host, port]}``, lookups of those names answer the harness's address *and port*; TLS keeps the
original name (SNI, certificate check). Without the variable nothing is patched. The app's own
``sitecustomize`` (next on sys.path) still runs, after this one. Plain source for Python 3.8+:
the child may run another interpreter than the harness, so this file imports nothing from it.
Limits: harness/adapters/app/__init__.py.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
from typing import Any

_ENV = "GATEWAY_HARNESS_REDIRECT"
_ENV_LOG = "GATEWAY_HARNESS_REDIRECT_LOG"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(raw: str) -> dict[str, tuple[str, int]]:
    try:
        data = json.loads(raw)
        return {str(name).lower().rstrip("."): (str(to[0]), int(to[1]))
                for name, to in data.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        # Going on unpatched would send the app, with its real token, to the real Discord.
        sys.stderr.write(f"gateway-harness: {_ENV} is not a JSON object of hostname -> "
                         f"[host, port] ({exc}); stopping so the app cannot reach Discord\n")
        sys.stderr.flush()
        os._exit(2)


def _log(event: str, **fields: Any) -> None:
    path = os.environ.get(_ENV_LOG)
    if not path:
        return
    record = {"runtime": "python", "pid": os.getpid(), "event": event}
    record.update(fields)
    try:  # one O_APPEND write per line: lines from several processes do not interleave
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


class _Redirect:
    def __init__(self, table: dict[str, tuple[str, int]]) -> None:
        self.table = table
        self.logged: set[tuple[str, str]] = set()

    def target(self, host: object, via: str) -> tuple[str, int] | None:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return None
        name = host.lower().rstrip(".")
        hit = self.table.get(name)
        if hit is None:  # "*.domain" covers exactly one more label, as in a certificate
            head, dot, domain = name.partition(".")
            if head and dot:
                hit = self.table.get("*." + domain)
        if hit is not None and (name, via) not in self.logged:
            self.logged.add((name, via))
            _log("redirect", host=name, to=list(hit), via=via)
        return hit


def _install(redirect: _Redirect) -> None:
    real_getaddrinfo = socket.getaddrinfo

    # asyncio's loop.getaddrinfo, trio, aiohttp's ThreadedResolver, urllib3, http.client and
    # websockets all call socket.getaddrinfo and connect to the sockaddr it returns, port included.
    @functools.wraps(real_getaddrinfo)
    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> Any:
        hit = redirect.target(host, "getaddrinfo")
        if hit is not None:
            host, port = hit
            if family == socket.AF_INET6 and ":" not in host:
                family = socket.AF_UNSPEC  # an IPv6-only ask for an IPv4 listener
        return real_getaddrinfo(host, port, family, type, proto, flags)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]

    # No port here: the name still lands on the harness's host rather than on Discord.
    for attr in ("gethostbyname", "gethostbyname_ex"):
        real = getattr(socket, attr)

        def by_name(host: Any, _real: Any = real, _via: str = attr) -> Any:
            hit = redirect.target(host, _via)
            return _real(hit[0] if hit is not None else host)

        setattr(socket, attr, functools.wraps(real)(by_name))

    sys.meta_path.insert(0, _AfterImport({
        "aiohttp.resolver": functools.partial(_patch_aiohttp, redirect),
        "anyio._core._sockets": functools.partial(_patch_anyio, redirect),
    }))


def _patch_aiohttp(redirect: _Redirect, module: Any) -> None:
    """aiohttp's AsyncResolver (the default when aiodns is installed, e.g. discord.py[speed])
    asks c-ares, not socket.getaddrinfo: redirected names go through the threaded resolver."""
    threaded = module.ThreadedResolver
    for attr in ("resolve", "_resolve_with_query"):
        real = getattr(module.AsyncResolver, attr, None)
        if real is None:
            continue

        async def resolve(self: Any, host: str, port: int = 0, family: int = socket.AF_INET,
                          _real: Any = real) -> Any:
            if redirect.target(host, "aiohttp.AsyncResolver") is None:
                return await _real(self, host, port, family)
            return await threaded(getattr(self, "_loop", None)).resolve(host, port, family)

        setattr(module.AsyncResolver, attr, functools.wraps(real)(resolve))


def _patch_anyio(redirect: _Redirect, module: Any) -> None:
    """anyio.connect_tcp (httpx/httpcore under asyncio) resolves, then connects each address
    to the port it was *given*, dropping the one getaddrinfo returned: rewrite before it."""
    real = module.connect_tcp

    @functools.wraps(real)
    async def connect_tcp(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        hit = redirect.target(str(remote_host), "anyio.connect_tcp")
        if hit is not None:
            if (kwargs.get("tls") or kwargs.get("ssl_context") is not None) and \
                    kwargs.get("tls_hostname") is None:
                kwargs["tls_hostname"] = str(remote_host)  # SNI and verification: the real name
            remote_host, remote_port = hit
        return await real(remote_host, remote_port, **kwargs)

    module.connect_tcp = connect_tcp


class _AfterImport:
    """A meta-path finder that runs a patch right after a module's own code, before anything
    that imports it can bind its names (``from .resolver import DefaultResolver``)."""

    def __init__(self, patches: dict[str, Any]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        patch = self.patches.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            real_exec = loader.exec_module

            def exec_module(module: Any) -> None:
                real_exec(module)
                patch(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _chain() -> None:
    """Run the ``sitecustomize`` this one shadows (an app's, a distribution's), if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.realpath(_HERE)
    rest = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _main() -> None:
    raw = os.environ.get(_ENV)
    if raw:
        _install(_Redirect(_parse(raw)))
        _log("loaded", python=sys.version.split()[0], executable=sys.executable)
    _chain()


_main()
