"""What "REST URL" means, for the fake and for every client the harness points at it.

A REST URL is the base the API lives under, ending in ``/api/v10``
(``https://127.0.0.1:PORT/api/v10``), as the adapter contract says. An origin with an empty path
(``https://127.0.0.1:PORT``) is accepted too and means the ``/api/v10`` base on it. A module of
its own, light to import: the reference client uses it without pulling in the REST server.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

API_BASE_PATH = "/api/v10"


def rest_base(url: str) -> str:
    """The REST base for ``url``: an origin (``scheme://host:port``) gets ``/api/v10``; a URL
    with a path is the base itself; anything else comes back as it was, for the caller to
    reject. Never a trailing slash, so ``f"{base}/gateway/bot"`` is right."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if parts.netloc and not path:
        path = API_BASE_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
