"""The manhole's SSH host key, and what every part of the manhole's start-up shares.

- ``HostKeyFile``: the server's SSH host key, read from its file or created
  there (ed25519, mode 0600 from the first byte) when missing.
- ``ManholeError``: the manhole cannot start; one line for the operator.
- ``fingerprint``: a key's fingerprint as ``ssh-keygen -l`` prints it.
"""

from __future__ import annotations

import os
import stat

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key
from twisted.logger import Logger

__all__ = ["HostKeyFile", "ManholeError", "describe_os_error", "fingerprint"]


class ManholeError(Exception):
    """The manhole cannot start; the message is one line for the operator."""


def fingerprint(key: Key) -> str:
    """A key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


def describe_os_error(path: str, error: OSError) -> str:
    """``path: reason`` for an operator."""
    return f"{path}: {error.strerror or error}"


class HostKeyFile:
    """The manhole's SSH host key: read from ``path``, or created there (ed25519, mode 0600)."""

    log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Key:
        """The private host key. Raises ManholeError if it can be neither read nor created."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return self._create()
        except OSError as e:
            raise ManholeError(f"--manhole-host-key {describe_os_error(self.path, e)}") from e
        try:
            key = Key.fromString(data)
        except (BadKeyError, ValueError) as e:
            raise ManholeError(f"--manhole-host-key {self.path}: not an SSH private key ({e})") from e
        if key.isPublic():
            raise ManholeError(f"--manhole-host-key {self.path}: a public key, not a private one")
        if os.stat(self.path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.log.warn("Manhole host key is accessible to other users", path=self.path)
        self.log.info(
            "Manhole host key", path=self.path, type=key.sshType().decode(), fingerprint=fingerprint(key)
        )
        return key

    def _create(self) -> Key:
        key = Key(ed25519.Ed25519PrivateKey.generate())
        try:
            # O_EXCL: never overwrite a key another process just wrote; 0600 from the start,
            # so the private key is never readable by others, not even briefly.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(key.toString("OPENSSH"))
        except OSError as e:
            raise ManholeError(f"--manhole-host-key {describe_os_error(self.path, e)}") from e
        self.log.info(
            "Manhole host key created", path=self.path, type="ssh-ed25519", fingerprint=fingerprint(key)
        )
        return key
