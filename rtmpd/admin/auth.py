"""Who may enter the manhole: authorized keys, a password file, the host key, and the login audit.

- ``AuthorizedKeys``: an OpenSSH ``authorized_keys`` file; any key in it logs in
  under any user name (the name is only what the logs call the operator). The
  file is read again at every login, so keys can be added or revoked without a
  restart. Lines with options (``from="..." ssh-ed25519 ...``) are refused, not
  half-honoured.
- ``PasswordFile``: ``user:password`` lines; a password is either a bcrypt hash
  (``$2b$``, ``$2a$``, ``$2y$``) or plain text. Any other ``$scheme$`` is refused
  at start-up rather than taken for a plain password. Every password attempt
  costs one bcrypt check at the file's cost, whoever the user: an unknown
  user or a plain-text one is checked against a decoy hash, so a failure's
  timing does not tell which users exist or how they are stored.
- ``HostKeyFile`` (``rtmpd.admin.hostkey``, re-exported): the server's SSH host
  key, an ed25519 key created with mode 0600 when missing.
- ``AuditedPortal``: wraps the portal for one SSH connection so that every login
  and failed login is logged with the user name, the method, the key's
  fingerprint and the peer address, and counted against the address
  (``rtmpd.access.throttle.FailureThrottle``): too many failures lock it out.
- ``ManholeUserAuth``: SSH user authentication through that portal; a
  locked-out address is disconnected.

Anything that keeps the manhole from starting raises ``ManholeError`` with one
line for the operator.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Callable

import bcrypt
from twisted.conch.checkers import IAuthorizedKeysDB
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import transport, userauth
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rtmpd.access.throttle import FailureThrottle
from rtmpd.admin.hostkey import HostKeyFile, ManholeError, fingerprint
from rtmpd.admin.hostkey import describe_os_error as _describe_os_error

__all__ = [
    "AuditedPortal",
    "AuthorizedKeys",
    "HostKeyFile",
    "ManholeError",
    "ManholeUserAuth",
    "PasswordFile",
    "ThrottledPortal",
    "fingerprint",
]

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
#: bcrypt's own default cost: the decoy's when the file holds no bcrypt hash.
DEFAULT_BCRYPT_COST = 12


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
    Every attempt runs exactly one such check, at the highest cost of the
    file's hashes (``DEFAULT_BCRYPT_COST`` without any): against the user's
    own hash, or against a decoy for an unknown or plain-text user (whose
    plain password is then compared in constant time).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(
        self, path: str, defer_to_thread: Callable[..., defer.Deferred] = threads.deferToThread
    ) -> None:
        self.path = path
        self._defer_to_thread = defer_to_thread
        #: Decoy hashes by cost, made once (in the checking thread) and kept.
        self._decoys: dict[int, bytes] = {}

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
        costs = {_cost(p) for p in entries.values() if p.startswith(_BCRYPT_PREFIXES)}
        if len(costs) > 1:
            self.log.warn(
                "Manhole bcrypt hashes have different costs: a failed login's time tells them apart",
                path=self.path,
                costs=sorted(costs),
            )
        # Made now, so that the first attempt costs what every later one does.
        self._decoy(_file_cost(entries))
        return len(entries)

    def _decoy(self, cost: int) -> bytes:
        decoy = self._decoys.get(cost)
        if decoy is None:
            decoy = self._decoys[cost] = bcrypt.hashpw(b"rtmpd decoy", bcrypt.gensalt(rounds=cost))
        return decoy

    def requestAvatarId(self, credentials) -> defer.Deferred:
        try:
            entries = self.read()
        except (OSError, ValueError) as e:
            self.log.error(
                "Manhole password file unreadable: no password logs in", path=self.path, error=str(e)
            )
            return defer.fail(UnauthorizedLogin("password file unreadable"))
        stored = entries.get(credentials.username)
        cost = _file_cost(entries)
        d = self._defer_to_thread(self._check, credentials.password, stored, cost)
        return d.addCallback(self._verdict, credentials.username, stored is not None)

    def _check(self, password: bytes, stored: bytes | None, cost: int) -> bool:
        """One bcrypt check whatever ``stored`` is (runs in the checking thread)."""
        if stored is not None and stored.startswith(_BCRYPT_PREFIXES):
            return _bcrypt_matches(password, stored)
        _bcrypt_matches(password, self._decoy(cost))
        return stored is not None and hmac.compare_digest(password, stored)

    @staticmethod
    def _verdict(matches: bool, username: bytes, known: bool) -> bytes:
        if not matches:
            # The reason is for the server's log only: the client sees the same failure either way.
            raise UnauthorizedLogin("wrong password" if known else "unknown user")
        return username


def _cost(stored: bytes) -> int:
    """The cost of a bcrypt hash (``$2b$12$...`` -> 12); the default if it cannot be read."""
    try:
        cost = int(stored.split(b"$")[2])
    except (IndexError, ValueError):
        return DEFAULT_BCRYPT_COST
    return min(max(cost, 4), 31)


def _file_cost(entries: dict[bytes, bytes]) -> int:
    costs = [_cost(p) for p in entries.values() if p.startswith(_BCRYPT_PREFIXES)]
    return max(costs, default=DEFAULT_BCRYPT_COST)


def _bcrypt_matches(password: bytes, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, stored)
    except ValueError:
        # bcrypt refuses passwords over 72 bytes and malformed hashes: no match either way.
        return False


def _credentials_summary(credentials) -> dict[str, str | None]:
    user = credentials.username.decode("utf-8", "replace")
    if ISSHPrivateKey.providedBy(credentials):
        try:
            print_ = fingerprint(Key.fromString(credentials.blob))
        except (BadKeyError, ValueError):
            print_ = None
        return {"user": user, "method": "publickey", "fingerprint": print_}
    return {"user": user, "method": "password", "fingerprint": None}


def _is_attempt(credentials) -> bool:
    """A password, or a signed key: an attempt that counts (a key offered without a signature is a query)."""
    return not ISSHPrivateKey.providedBy(credentials) or credentials.signature is not None


class ThrottledPortal(Portal):
    """A portal that carries the failure ``throttle`` its SSH logins are counted against."""

    def __init__(self, realm, checkers, throttle: FailureThrottle) -> None:
        super().__init__(realm, checkers)
        self.throttle = throttle


class AuditedPortal:
    """A portal for one SSH connection: logs every login and failed login; hands the peer to the realm.

    With a ``throttle`` (``rtmpd.access.throttle.FailureThrottle``), each
    failed attempt is counted against ``host`` (the peer's address without
    its port); the failure that locks the address out is logged once (WARN
    ``Manhole address locked out``), and ``locked`` tells the SSH layer to
    disconnect. A login clears the address's count.
    """

    log = Logger()

    def __init__(
        self, portal, peer: str, throttle: FailureThrottle | None = None, host: str | None = None
    ) -> None:
        self.portal = portal
        self.peer = peer
        self.throttle = throttle
        self.host = host if host is not None else peer

    @property
    def locked(self) -> bool:
        """Whether this connection's address is locked out now."""
        return self.throttle is not None and self.throttle.locked_for(self.host) > 0

    def listCredentialsInterfaces(self):
        return self.portal.listCredentialsInterfaces()

    def login(self, credentials, mind, *interfaces) -> defer.Deferred:
        d = self.portal.login(credentials, self.peer, *interfaces)
        return d.addCallbacks(
            self._logged_in, self._refused, callbackArgs=(credentials,), errbackArgs=(credentials,)
        )

    def _logged_in(self, result, credentials):
        self.log.info("Manhole login", peer=self.peer, **_credentials_summary(credentials))
        if self.throttle is not None:
            self.throttle.record_success(self.host)
        return result

    def _count_failure(self, credentials) -> None:
        if self.throttle is None or not _is_attempt(credentials):
            return
        if self.throttle.record_failure(self.host):
            self.log.warn(
                "Manhole address locked out",
                peer=self.peer,
                address=self.host,
                failures=self.throttle.max_failures,
                window=self.throttle.window,
                lockout=self.throttle.lockout,
            )

    def _refused(self, failure: Failure, credentials) -> Failure:
        if failure.check(ValidPublicKey):
            # The client asked whether a key would do before signing with it: not an attempt yet.
            return failure
        summary = _credentials_summary(credentials)
        self._count_failure(credentials)
        if failure.check(UnauthorizedLogin):
            self.log.warn("Manhole login failed", peer=self.peer, reason=failure.getErrorMessage(), **summary)
            return failure
        self.log.failure("Manhole login failed with an error", failure, peer=self.peer, **summary)
        # Logged here once; the SSH layer only needs to know the login was refused.
        return Failure(UnauthorizedLogin("internal error"))


class ManholeUserAuth(userauth.SSHUserAuthServer):
    """SSH user authentication whose portal is audited, with the peer address of this connection.

    The portal's ``throttle`` (a ``ThrottledPortal``'s) counts failures per address; an
    address locked out is disconnected after the failure that locked it, and
    at once if it asks again.
    """

    def serviceStarted(self) -> None:
        super().serviceStarted()
        peer = self.transport.transport.getPeer()
        host = getattr(peer, "host", None)
        address = f"{peer.host}:{peer.port}" if hasattr(peer, "port") else str(peer)
        throttle = getattr(self.portal, "throttle", None)
        self.portal = AuditedPortal(self.portal, address, throttle, host if host is not None else "unix")

    def ssh_USERAUTH_REQUEST(self, packet: bytes):
        if self.portal.locked:
            self._disconnect_locked()
            return None
        return super().ssh_USERAUTH_REQUEST(packet)

    def _ebBadAuth(self, reason):
        if self.portal.locked:
            self._disconnect_locked()
            return None
        return super()._ebBadAuth(reason)

    def _disconnect_locked(self) -> None:
        self.transport.sendDisconnect(
            transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"too many failed logins from this address"
        )
