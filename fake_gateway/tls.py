"""TLS for the fake gateway's listeners and REST: a CA generated at start-up and a server
certificate for 127.0.0.1, localhost and ::1 (trustme), written as PEM for clients to trust.

Below both the WebSocket driver (`server`) and the REST server (`rest`), which both take it.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class TLSFiles:
    context: ssl.SSLContext
    ca_file: str
    cert_file: str  # key and certificate chain, PEM


def make_tls(directory: str | os.PathLike[str] | None = None) -> TLSFiles:
    """A fresh trustme CA and a 127.0.0.1/localhost/::1 server certificate, written as PEM."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    folder = Path(directory) if directory is not None else Path(
        tempfile.mkdtemp(prefix="fake-gateway-tls-"))
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / "ca.pem"
    cert_file = folder / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert_file.chmod(0o600)  # it holds the private key
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return TLSFiles(context, str(ca_file), str(cert_file))
