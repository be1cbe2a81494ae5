"""The Twisted client endpoint for a remote URL: TCP for ``rtmp://``, TLS for ``rtmps://``.

TLS verifies the server's certificate and host name by default, against the
system's trust store, or against the certificates of ``ca_file`` (PEM, one or
more) when one is given: a test CA, or a private ingest's. There is no option
to skip verification.

TLS itself (``twisted.internet.ssl``, pyOpenSSL) is imported only for an
``rtmps://`` URL or a CA file: a process that was started without TLS
(``rtmpd.tls``) answers those with ``TLSUnavailable`` (for a connection: a
failed attempt whose error says how to start rtmpd instead).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer, endpoints

from rtmpd import tls
from rtmpd.remote.urls import RemoteURL

__all__ = ["CAFileError", "TLSUnavailable", "client_endpoint", "load_trust_root"]

TLSUnavailable = tls.TLSUnavailable

#: Seconds to wait for the TCP connection itself.
CONNECT_TIMEOUT = 10.0
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class CAFileError(ValueError):
    """The CA file cannot be read or holds no PEM certificate."""


def load_trust_root(ca_file: str) -> Any:
    """A trust root of every certificate in ``ca_file``. Raises CAFileError, or TLSUnavailable."""
    tls.require(f"the CA file {ca_file}")
    from twisted.internet import ssl

    try:
        with open(ca_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CAFileError(f"{ca_file}: {e.strerror}") from e
    blocks = _PEM.findall(data)
    if not blocks:
        raise CAFileError(f"{ca_file}: no PEM certificate in it")
    try:
        return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(block) for block in blocks])
    except Exception as e:  # pyOpenSSL raises its own error types for a damaged certificate
        raise CAFileError(f"{ca_file}: {e}") from e


def client_endpoint(reactor: Any, url: RemoteURL, trust_root: Any = None) -> Any:
    """The endpoint that reaches ``url``'s server; TLS for rtmps (``trust_root`` None: the system's)."""
    tcp = endpoints.HostnameEndpoint(reactor, url.host, url.port, timeout=CONNECT_TIMEOUT)
    if not url.tls:
        return tcp
    if not tls.available():
        return _Unavailable(f"{url.scheme}://{url.host}:{url.port}")
    from twisted.internet import ssl

    options = ssl.optionsForClientTLS(url.host, trustRoot=trust_root)
    return endpoints.wrapClientTLS(options, tcp)


class _Unavailable:
    """A client endpoint whose every attempt fails with TLSUnavailable (TLS left out at start-up)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def connect(self, factory: Any) -> Any:
        return defer.fail(tls.unavailable(self.where))
