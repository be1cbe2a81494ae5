"""Who may enter the manhole: authorized keys, a password file, the host key, and the login audit.

- ``AuthorizedKeys``: an OpenSSH ``authorized_keys`` file; any key in it logs in
  under any user name (the name is only what the logs call the operator). The
  file is read again at every login, so keys can be added or revoked without a
  restart. Lines with options (``from="..." ssh-ed25519 ...``) are refused, not
  half-honoured.
- ``PasswordFile``: ``user:password`` lines; a password is either a bcrypt hash
  (``$2b$``, ``$2a$``, ``$2y$``) or plain text. Any other ``$scheme$`` is refused
  at start-up rather than taken for a plain password.
- ``HostKeyFile``: the server's SSH host key, an ed25519 key created with mode
  0600 when missing.
- ``AuditedPortal``: wraps the portal for one SSH connection so that every login
  and failed login is logged with the user name, the method, the key's
  fingerprint and the peer address.

Anything that keeps the manhole from starting raises ``ManholeError`` with one
line for the operator.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Callable

import bcrypt
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.checkers import IAuthorizedKeysDB
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import userauth
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


class ManholeError(Exception):
    """The manhole cannot start; the message is one line for the operator."""


def fingerprint(key: Key) -> str:
    """A key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


def _describe_os_error(path: str, error: OSError) -> str:
    return f"{path}: {error.strerror or error}"


@implementer(IAuthorizedKeysDB)
class AuthorizedKeys:
    """The keys of an ``authorized_keys`` file, allowed under any user name."""

    log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> tuple[list[Key], list[int]]:
        """The keys in the file and the numbers of the lines that are not keys. Raises OSError."""
        keys, bad = [], []
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith(b"#"):
                    continue
                try:
                    keys.append(Key.fromString(line))
                except (BadKeyError, ValueError):
                    bad.append(number)
        return keys, bad

    def check(self) -> list[Key]:
        """The keys, for start-up: ManholeError if the file is unreadable or has none; logs bad lines."""
        try:
            keys, bad = self.read()
        except OSError as e:
            raise ManholeError(f"--manhole-keys {_describe_os_error(self.path, e)}") from e
        for number in bad:
            self.log.warn(
                "Manhole authorized_keys line ignored (not a public key, or it has options)",
                path=self.path,
                line=number,
            )
        if not keys:
            raise ManholeError(f"--manhole-keys {self.path}: no public keys in it")
        self.log.info(
            "Manhole authorized keys",
            path=self.path,
            keys=len(keys),
            fingerprints=[fingerprint(k) for k in keys],
        )
        return keys

    def getAuthorizedKeys(self, username: bytes) -> list[Key]:
        # Any user name: the file is the whole policy.
        try:
            return self.read()[0]
        except OSError as e:
            self.log.error(
                "Manhole authorized_keys unreadable: no key logs in",
                path=self.path,
                error=e.strerror or str(e),
            )
            return []


@implementer(ICredentialsChecker)
class PasswordFile:
    """``user:password`` lines with bcrypt hashes or plain passwords; read again at every login.

    ``defer_to_thread`` runs a bcrypt check off the reactor thread (a check
    takes a noticeable fraction of a second, which would stall every stream).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(
        self, path: str, defer_to_thread: Callable[..., defer.Deferred] = threads.deferToThread
    ) -> None:
        self.path = path
        self._defer_to_thread = defer_to_thread

    def read(self) -> dict[bytes, bytes]:
        """User name to stored password. Raises OSError, or ValueError naming a malformed line."""
        entries: dict[bytes, bytes] = {}
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip(b"\r\n")
                if not line.strip() or line.lstrip().startswith(b"#"):
                    continue
                user, sep, password = line.partition(b":")
                if not sep or not user or not password:
                    raise ValueError(f"line {number} is not user:password")
                if password.startswith(b"$") and not password.startswith(_BCRYPT_PREFIXES):
                    scheme = password.split(b"$")[1].decode("ascii", "replace")
                    raise ValueError(f"line {number}: unsupported hash ${scheme}$ (use bcrypt)")
                entries[user] = password
        return entries

    def check(self) -> int:
        """The number of users, for start-up: ManholeError if the file is unreadable, malformed or empty."""
        try:
            entries = self.read()
        except OSError as e:
            raise ManholeError(f"--manhole-passwd {_describe_os_error(self.path, e)}") from e
        except ValueError as e:
            raise ManholeError(f"--manhole-passwd {self.path}: {e}") from e
        if not entries:
            raise ManholeError(f"--manhole-passwd {self.path}: no users in it")
        plain = sorted(u.decode("utf-8", "replace") for u, p in entries.items() if not p.startswith(b"$"))
        if plain:
            self.log.warn("Manhole password file holds plain-text passwords", path=self.path, users=plain)
        if os.stat(self.path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
            self.log.warn("Manhole password file is readable by other users", path=self.path)
        return len(entries)

    def requestAvatarId(self, credentials) -> defer.Deferred:
        try:
            stored = self.read().get(credentials.username)
        except (OSError, ValueError) as e:
            self.log.error(
                "Manhole password file unreadable: no password logs in", path=self.path, error=str(e)
            )
            return defer.fail(UnauthorizedLogin("password file unreadable"))
        if stored is None:
            return defer.fail(UnauthorizedLogin("unknown user"))
        if stored.startswith(_BCRYPT_PREFIXES):
            d = self._defer_to_thread(_bcrypt_matches, credentials.password, stored)
        else:
            d = defer.succeed(hmac.compare_digest(credentials.password, stored))
        return d.addCallback(self._verdict, credentials.username)

    @staticmethod
    def _verdict(matches: bool, username: bytes) -> bytes:
        if not matches:
            raise UnauthorizedLogin("wrong password")
        return username


def _bcrypt_matches(password: bytes, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, stored)
    except ValueError:
        # bcrypt refuses passwords over 72 bytes and malformed hashes: no match either way.
        return False


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
            raise ManholeError(f"--manhole-host-key {_describe_os_error(self.path, e)}") from e
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
            raise ManholeError(f"--manhole-host-key {_describe_os_error(self.path, e)}") from e
        self.log.info(
            "Manhole host key created", path=self.path, type="ssh-ed25519", fingerprint=fingerprint(key)
        )
        return key


def _credentials_summary(credentials) -> dict[str, str | None]:
    user = credentials.username.decode("utf-8", "replace")
    if ISSHPrivateKey.providedBy(credentials):
        try:
            print_ = fingerprint(Key.fromString(credentials.blob))
        except (BadKeyError, ValueError):
            print_ = None
        return {"user": user, "method": "publickey", "fingerprint": print_}
    return {"user": user, "method": "password", "fingerprint": None}


class AuditedPortal:
    """A portal for one SSH connection: logs every login and failed login; hands the peer to the realm."""

    log = Logger()

    def __init__(self, portal, peer: str) -> None:
        self.portal = portal
        self.peer = peer

    def listCredentialsInterfaces(self):
        return self.portal.listCredentialsInterfaces()

    def login(self, credentials, mind, *interfaces) -> defer.Deferred:
        d = self.portal.login(credentials, self.peer, *interfaces)
        return d.addCallbacks(
            self._logged_in, self._refused, callbackArgs=(credentials,), errbackArgs=(credentials,)
        )

    def _logged_in(self, result, credentials):
        self.log.info("Manhole login", peer=self.peer, **_credentials_summary(credentials))
        return result

    def _refused(self, failure: Failure, credentials) -> Failure:
        if failure.check(ValidPublicKey):
            # The client asked whether a key would do before signing with it: not an attempt yet.
            return failure
        summary = _credentials_summary(credentials)
        if failure.check(UnauthorizedLogin):
            self.log.warn("Manhole login failed", peer=self.peer, reason=failure.getErrorMessage(), **summary)
            return failure
        self.log.failure("Manhole login failed with an error", failure, peer=self.peer, **summary)
        # Logged here once; the SSH layer only needs to know the login was refused.
        return Failure(UnauthorizedLogin("internal error"))


class ManholeUserAuth(userauth.SSHUserAuthServer):
    """SSH user authentication whose portal is audited, with the peer address of this connection."""

    def serviceStarted(self) -> None:
        super().serviceStarted()
        peer = self.transport.transport.getPeer()
        address = f"{peer.host}:{peer.port}" if hasattr(peer, "port") else str(peer)
        self.portal = AuditedPortal(self.portal, address)
