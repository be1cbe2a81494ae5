"""Who may use the JSON API: the bearer token, and the loopback rule for reads.

- A mutation (POST) needs ``Authorization: Bearer TOKEN`` with the token of
  ``--api-token-file``. Without a token file mutations are off: 403, and the
  message says how to turn them on.
- A read (GET, HEAD) is open to loopback clients (127.0.0.0/8, ::1, a unix
  socket) unless ``--api-token-always`` is given; from any other address it
  needs the token (403 without a token file, as no token could succeed).
- A missing or wrong token is 401 with ``WWW-Authenticate: Bearer``.

The token is compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat

from twisted.internet.address import UNIXAddress
from twisted.web.server import Request

from rtmpd.http.api.errors import APIError

__all__ = ["MIN_TOKEN_LENGTH", "TokenAuth", "TokenFileError", "read_token_file"]

#: Shortest token accepted from a token file: anything shorter could be guessed.
MIN_TOKEN_LENGTH = 16

_ENABLE = "start rtmpd with --api-token-file FILE (a file holding one secret token)"


class TokenFileError(Exception):
    """The token file cannot be used; the message is one line for the operator."""


def read_token_file(path: str) -> tuple[bytes, bool]:
    """The token in ``path`` (surrounding whitespace removed) and whether others than the owner
    may read the file. Raises TokenFileError when it cannot be read or the token is too short."""
    try:
        with open(path, "rb") as f:
            token = f.read(4096).strip()
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise TokenFileError(f"--api-token-file {path}: {e.strerror}") from e
    if len(token) < MIN_TOKEN_LENGTH or any(b <= 0x20 or b >= 0x7F for b in token):
        raise TokenFileError(
            f"--api-token-file {path}: the token must be at least {MIN_TOKEN_LENGTH} printable "
            "characters without spaces"
        )
    return token, bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def is_loopback(request: Request) -> bool:
    """Whether the client is this host: a loopback address or a unix socket."""
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        return True
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class TokenAuth:
    """The API's access rule (see the module doc) for ``token`` (None: no token file)."""

    def __init__(self, token: bytes | None, always: bool = False) -> None:
        self.token = token
        self.always = always

    def check(self, request: Request, mutation: bool) -> None:
        """Return if ``request`` may go on; else raise APIError 401 or 403."""
        if not mutation and not self.always and is_loopback(request):
            return
        if self.token is None:
            if mutation:
                raise APIError(403, f"changes through the API are off: {_ENABLE}")
            raise APIError(
                403,
                f"reads from other hosts than this one need a token: {_ENABLE}"
                + ("" if not self.always else " (--api-token-always is given)"),
            )
        given = bearer_token(request)
        if given is None:
            raise _unauthorized("this needs Authorization: Bearer TOKEN", invalid=False)
        if not hmac.compare_digest(given, self.token):
            raise _unauthorized("the bearer token is not the one of --api-token-file", invalid=True)


def bearer_token(request: Request) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, None when there is none such."""
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def _unauthorized(message: str, invalid: bool) -> APIError:
    challenge = b'Bearer realm="rtmpd"' + (b', error="invalid_token"' if invalid else b"")
    return APIError(401, message, {b"www-authenticate": challenge})
