"""The fault engine: Toxiproxy-compatible toxics, proxies, HTTP API and backends.

- ``harness.faults.memnet``: in-memory network for simulation (``MemoryNetwork``,
  ``abort_stream``).
- ``harness.faults.toxics``: toxic definitions and sans-I/O cores.
- ``harness.faults.link``: the trio driver joining two streams through toxic chains.
- ``harness.faults.proxy``: ``Proxy``, ``ProxyCollection``, ``TcpTransport``, ``MemoryTransport``.
- ``harness.faults.api``: the Toxiproxy HTTP API (ASGI on hypercorn's trio worker).
- ``harness.faults.backend``: ``FaultBackend``, ``EmbeddedBackend``, ``ToxiproxyBackend``.

``gateway-harness proxy`` is ``harness/cli/proxy.py``.
"""
