"""Fixed TLS material for simulation mode, so a TLS run replays byte for byte.

A fresh trustme CA per run (what wall-clock mode uses) has random ECDSA keys, serial numbers and
signatures whose lengths vary by a byte or two, so a toxic that counts bytes (``reset_after``,
``limit_data``, ``slicer``) would cut a TLS handshake at a different point in every process and
a failing schedule would not replay. Simulation uses this one RSA-2048 CA and 127.0.0.1 /
localhost / ::1 certificate instead: RSA(-PSS) signatures have a fixed length, so every
handshake has the same size. The key is public on purpose: it only ever secures in-memory
streams inside one simulated world. Valid until 2099.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from fake_gateway.tls import TLSFiles

CA_PEM = """-----BEGIN CERTIFICATE-----
MIIDbTCCAlWgAwIBAgIUaLfwEjq4ycsjTY0PFwNddIKiA7AwDQYJKoZIhvcNAQEL
BQAwTDEjMCEGA1UECgwaZ2F0ZXdheS1oYXJuZXNzIHNpbXVsYXRpb24xJTAjBgNV
BAsMHFRlc3RpbmcgQ0EgI0diMzhNTGhsYUl6MGtQSGMwIBcNMDAwMTAxMDAwMDAw
WhgPMzAwMDAxMDEwMDAwMDBaMEwxIzAhBgNVBAoMGmdhdGV3YXktaGFybmVzcyBz
aW11bGF0aW9uMSUwIwYDVQQLDBxUZXN0aW5nIENBICNHYjM4TUxobGFJejBrUEhj
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0rAfmmuGGJroSUJY3kry
Jy6/iEbL262Fm63Ebpj6uofIa8YgO/3Cir/nsPVDCl81BWDho2u3h5ULnrXuN4pH
tCjYR3LjhW1qHKL38Y+EqXkFzMRNdeHaymt+9Lh+HnuIREtYZB8+z39e5AnAir9Z
ebD5AwCFNycHktsvIRO+E97aDaG3ZOEXOm8lvdEMlneKWjavnSRRISLKRlnIQrtj
HhmHpYE7y8LDyU++pzJo8/RSKAXrmXw07Vk1/9NNpe7TaHDhsJmtMRHaRCV7VJgQ
nP1UJ0BCmddvXGfV3R5ketZ+iO9Jp86NZ/Se0jk+uRkC+KQjcb7f13HpskuKp5uB
4QIDAQABo0UwQzAdBgNVHQ4EFgQUVIa5KyBAjfcXrw30iMeutCpc4wgwEgYDVR0T
AQH/BAgwBgEB/wIBCTAOBgNVHQ8BAf8EBAMCAYYwDQYJKoZIhvcNAQELBQADggEB
AMjgjrJJzjAHmfc2J5u73MsAPJWuqFJXaGWsFcAj8KwEOYRXDByffzGG+ZoMgJZg
iCoUTj3c/M/VAflSki1vbIFiNBZg2iRB7WyK54HM/vwdLUkN6TYBkSvXNgN8aXES
1WPZwkvfY3k601w3wUkEVdhH4yJXZTYFLW4UDKF+tfamzpqtVALHJ2JpNnSRmJEE
UiZjmJfJfcNBO9KjwayeJesivX4sokwnBn27Y6BGDqoDA8beGGYzg0oaL0oSAeb3
ChOnnTq1Z8Q2GuLOcc1UgK8cUDwpyrlqXbFabx79MJ3zIkC1K177T23FO37XaNP6
5t3T7lSG20vYWU6tZbkNQbg=
-----END CERTIFICATE-----
"""

SERVER_KEY_AND_CHAIN_PEM = """-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEA1URnNCVMeD3WcZ+3ZHtbWoR+mBujSSCL/frtv7+fldjqwZEn
622ceYPrydG3GNyleQhmTcHqEDRiQelARO6a2qRqc9/nZeJaISjy5dnKM33ydHq0
nfUGllx6BUgXAuknq/XK2Ly0BCgzCKgvHIeXhOyva9Qrxhz+dIdGPI1td4LSNObz
moVvkn7p2Xc3bfgIvZ14g8YAc4LsBXxm+Bh85vEmbNyRCCy0PWvEx78AdkZ2naIu
rLQt41lqYzVcj9geRX6CVn5Xwo+jK3exbKT2K3MZNYD5c7KDF75popFGayNr0Y4Z
U+W4++5QNjWkIC5o3KQi2EpbGc1igNikUHYKPwIDAQABAoIBADdojTO0GRkIX+Wn
bFtT3Vk4ITfdvl+qcBStlAWEgK7K67scvnVhRg0gJCuMK/juoqM+dm3vWqOZKIod
UtBV+a+ilfHDE3iaBXamD+191xXnvA1dL/32Ah8gqacjoq7j6qW3t1r2NAL8er3e
DFdqNwiXAcCPIExZjhayaqIi0HUC82WA3n71wJg2oeY6Cwnj3fSWNeC+/3RWdOco
6PLZr6iNKuP7siqb9ioFC2rYfzUDYITjBqca6Z8Ur+DvrwuILYCqjpDin8EuydEG
jd5lL9VlupSIu3vqcNq7ZULffBUjm0TLlkwRKI0UfEIivujEE5NsrnRCd+dEwgTy
v7TCUAkCgYEA+xwak6z870XpxfSh+ZkV8aW9r3YudLPL+kmrMTiGfiTXEEOib621
65X88aNfsu3fdmIXDi/YxWeYPkObV40e/VnZOdbgoYeW5fJ3Du5eojvkGnKhB/qw
wLMB2dU2F+iW7z9wrczEbIsBf4p7AViOwg7hnGkjwvc6AvZAgY3UuX0CgYEA2Wuj
Cy2u/1CbyLGrgCL9ugzZ3qD/FqqunH3FVKns6zloJC+2ngxyHIETXFKTcXlEtpZk
NVbXGON2A2ZB5mlJx363cSGdXxc5tIUt0Pto48gF87TjOHkVSw79D84/P1b3luQS
lBURcUXssJOwJ+Q4ZscFNPnKBYxd3Aj/HYU9/2sCgYAXYViAI30xchsAGXTzXnOS
mlH9Ak31A8CcPzu3S4IKQLfdhc6cA1qK4t44SXPhnxBNX3iyE3Zleu3L7lOKZVNb
V4BISF+F6q/8HQVE2KDrDhSA+edQbOEEMCad96Ifu8JB6HA/Xm9zg8XR8DzftTUl
kGklPQzdXFOEbxU2etQxqQKBgF0F+JRnz1/dlUmg+sewMO7RYMYoC/weuuapySwY
KA3cWfphj7i/inM3ppjxm7QJNqUIY4eOyCkV6QA7WCbFFZQNW19ECpkMztu1v4yS
hKYwhptm4XDgHYQnvY5tqBHpm7Urj+dbvELCsCo8hjoLIzaWIFwyI4WMMPxbvQtc
XtJRAoGAPLsbICB1CoPjhIGw4ZZjUlkynlqtjwkHKx/ipp7v3wRGICHYTtG9rR5J
YzQMlIe/iV+81jzhQNHNO3tFkHOBmgotfFJpvCxCd1887+RMNkUOhF79tX/orZyE
IVKno89DDxDwhmtjssLIqtwIrdY8wjzYsz+ynxnEvX8XK+nxqgA=
-----END RSA PRIVATE KEY-----
-----BEGIN CERTIFICATE-----
MIID3TCCAsWgAwIBAgIUem5WLDUrPF6BMnWO0ubNvAxil2owDQYJKoZIhvcNAQEL
BQAwTDEjMCEGA1UECgwaZ2F0ZXdheS1oYXJuZXNzIHNpbXVsYXRpb24xJTAjBgNV
BAsMHFRlc3RpbmcgQ0EgI0diMzhNTGhsYUl6MGtQSGMwIBcNMDAwMTAxMDAwMDAw
WhgPMjA5OTAxMDEwMDAwMDBaMEIxFzAVBgNVBAoMDnRydXN0bWUgdjEuMi4xMScw
JQYDVQQLDB5UZXN0aW5nIGNlcnQgI2t3NV9UUFpwZ2w4aFU5aUQwggEiMA0GCSqG
SIb3DQEBAQUAA4IBDwAwggEKAoIBAQDVRGc0JUx4PdZxn7dke1tahH6YG6NJIIv9
+u2/v5+V2OrBkSfrbZx5g+vJ0bcY3KV5CGZNweoQNGJB6UBE7prapGpz3+dl4loh
KPLl2cozffJ0erSd9QaWXHoFSBcC6Ser9crYvLQEKDMIqC8ch5eE7K9r1CvGHP50
h0Y8jW13gtI05vOahW+SfunZdzdt+Ai9nXiDxgBzguwFfGb4GHzm8SZs3JEILLQ9
a8THvwB2Rnadoi6stC3jWWpjNVyP2B5FfoJWflfCj6Mrd7FspPYrcxk1gPlzsoMX
vmmikUZrI2vRjhlT5bj77lA2NaQgLmjcpCLYSlsZzWKA2KRQdgo/AgMBAAGjgb4w
gbswHQYDVR0OBBYEFEN2VtFfLJMW+G5jcSKX7Wl3/PqRMAwGA1UdEwEB/wQCMAAw
HwYDVR0jBBgwFoAUVIa5KyBAjfcXrw30iMeutCpc4wgwLwYDVR0RAQH/BCUwI4cE
fwAAAYIJbG9jYWxob3N0hxAAAAAAAAAAAAAAAAAAAAABMA4GA1UdDwEB/wQEAwIF
oDAqBgNVHSUBAf8EIDAeBggrBgEFBQcDAgYIKwYBBQUHAwEGCCsGAQUFBwMDMA0G
CSqGSIb3DQEBCwUAA4IBAQCmMYrpcN4cjgF+McymiacaBx266Qx5azbD7BYVZAFr
kLMh+Vag+rSK5et/JNE+Y0ydcAyNAHcDKq0XpG2zSaMIELXPFG4SzYcKtm9o9VVu
VExUZKhYXfxfWx6U8pqgXmlXbZ1VHBm7hV54KBPaMg7Y+9qo72lsgApoa5TwTXZw
tC8zO7Fzd20bYFZPeVT+EtWzyoXsvk2/MiIYHxEkXXdwRjtDpC48PmXKzB2OQ/gP
aUaTOhznKbr6LdnnR1OBHB7X8uUrfEwKlcjojIjr6dP5oXA6d/kItRsSmwTN4mFa
32Q5YHj1gOg9WRJHDF5+kbxSx9aP1L6GcPT4uMm2rYEa
-----END CERTIFICATE-----
"""


def sim_tls(directory: str | os.PathLike[str]) -> TLSFiles:
    """The fixed CA and server certificate, written as PEM into ``directory``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / "ca.pem"
    cert_file = folder / "server.pem"
    ca_file.write_text(CA_PEM, encoding="ascii")
    cert_file.write_text(SERVER_KEY_AND_CHAIN_PEM, encoding="ascii")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file))
    context.set_alpn_protocols(["http/1.1"])
    return TLSFiles(context, str(ca_file), str(cert_file))
