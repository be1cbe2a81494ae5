"""The webhook signature: ``X-Rtmpd-Signature: sha256=<hex HMAC-SHA256 of the body>``, and its secret file.

The receiver recomputes the HMAC over the exact body bytes it received with
the shared secret and compares in constant time (``verify`` does it; the docs
show it without rtmpd installed).
"""

from __future__ import annotations

import hashlib
import hmac

from rtmpd.hooks.spec import HookConfigError

__all__ = ["SIGNATURE_HEADER", "read_secret", "sign", "verify"]

SIGNATURE_HEADER = "X-Rtmpd-Signature"
#: A secret file larger than this is surely not a secret file.
MAX_SECRET_BYTES = 4096


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: bytes) -> bool:
    """Whether ``header`` is the signature of ``body`` with ``secret``."""
    if not header:
        return False
    return hmac.compare_digest(header.strip().encode("ascii", "replace"), sign(body, secret).encode("ascii"))


def read_secret(path: str) -> bytes:
    """The secret in ``path``: its bytes without surrounding whitespace (a trailing newline is usual).

    Raises HookConfigError when the file cannot be read, is empty or is too long."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise HookConfigError(f"--hook-secret-file {path}: {e.strerror}") from e
    if len(data) > MAX_SECRET_BYTES:
        raise HookConfigError(f"--hook-secret-file {path}: longer than {MAX_SECRET_BYTES} bytes")
    secret = data.strip()
    if not secret:
        raise HookConfigError(f"--hook-secret-file {path}: empty")
    return secret
