"""App mode (issue 18): run an unmodified Python or Node.js program against the harness.

The program connects to ``discord.com`` and ``gateway.discord.gg`` on port 443 as in production.
``hosts.child_env`` gives it an environment where

* a Python start-up hook (``pyhook/sitecustomize.py``, first on ``PYTHONPATH``) answers lookups
  of Discord's names (``hosts.DISCORD_HOSTS``) with the harness's address *and port* at
  ``socket.getaddrinfo``, which asyncio, trio, aiohttp's threaded resolver, urllib3/requests,
  http.client/urllib and websockets use; it also routes aiohttp's aiodns-based ``AsyncResolver``
  and ``anyio.connect_tcp`` (httpx/httpcore under asyncio, which drops the looked-up port);
* a Node preload (``preload.cjs``, ``NODE_OPTIONS=--require``) rewrites
  ``net.Socket.prototype.connect``, where ``net``/``tls``/``https``, undici/``fetch`` and ``ws``
  all end, and ``dns.lookup``;
* TLS keeps the original name (SNI and certificate check), so the harness serves
  ``hosts.issue_server_cert(ca)``, which covers every name, and the child trusts the CA through
  ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` and ``NODE_EXTRA_CA_CERTS``. Nothing is installed
  system-wide and no root is needed.

The hooks append what they did to ``$GATEWAY_HARNESS_REDIRECT_LOG`` (``hosts.read_redirect_log``),
so a run can say "the app never loaded the hook" instead of timing out silently.

In a run (``validate --app``, the ``gateway_app`` fixture): ``mode`` has what the world does
differently for an app (its certificate, the Discord-looking URLs it announces, the app's own
token) and ``starter`` runs the app as a client process with the redirect on top.

Limits (what is not redirected; the app then tries the real Discord, which a harness run should
report as "could not redirect" rather than as a client failure):

* Programs that are neither CPython nor Node.js: Go programs (their own resolver and TLS stack,
  ``SSL_CERT_FILE`` honoured on Linux but no hook point), Rust, Java/JVM (its own trust store,
  ``-Djavax.net.ssl.trustStore``), .NET, Deno and Bun (no ``NODE_OPTIONS`` preload), and any
  statically linked binary. An ``LD_PRELOAD`` shim could cover dynamically linked C programs
  and is not built.
* Python started with ``-I``, ``-E`` or ``-S`` (no ``PYTHONPATH`` or no ``site``), or a frozen
  app (PyInstaller) that ignores ``PYTHONPATH``; a Node app packed into one executable (pkg,
  single-executable applications) that may ignore ``NODE_OPTIONS``; a launcher that starts
  the real program with a cleared environment.
* Apps that bring their own resolver: uvloop (libuv resolves in C), gevent's resolver, an
  explicit DNS client (dnspython, c-ares bindings other than aiohttp's ``AsyncResolver``),
  Node's ``dns.Resolver``/``dns.resolve*``, DNS-over-HTTPS, or a hard-coded IP address.
  ``socket.gethostbyname`` and ``dns.lookup`` are redirected by name only (they carry no port).
* Pinned certificates or a custom trust store that ignores the environment (``certifi``-only
  code, ``ssl.create_default_context(cafile=...)`` with a bundled file, ``ca`` passed to Node's
  ``tls.connect``): the handshake fails on the harness's certificate. (An app that turns
  verification off still works.)
* An HTTP(S) or SOCKS proxy the app configures itself (not through ``HTTPS_PROXY``, which
  ``child_env`` neutralises with ``NO_PROXY``): the proxy resolves Discord's names, not the app.
* Names outside ``DISCORD_HOSTS`` (voice: ``*.discord.media`` over UDP) and ``*.domain``
  patterns match exactly one label, as in a certificate (``a.b.discord.gg`` is not covered).
* The redirect ignores the port the app asked for: any connection to a listed name lands on
  the listener for its role (an ``http://discord.com`` request reaches a TLS listener and fails).
"""
