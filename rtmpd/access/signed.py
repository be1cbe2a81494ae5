"""Signed URLs: permission to publish or play one stream until a time, checked without a round trip.

A client appends ``exp=UNIX&sig=SIG`` to its stream name
(``rtmp://host/live/KEY?exp=1767225600&sig=...``, or ``KEY?exp=...&sig=...``
in OBS's Stream Key field), where::

    SIG = HMAC-SHA256(secret, "ACTION|APP/KEY|EXP")

in lowercase or uppercase hex (64 characters) or base64url without padding
(43). ``ACTION`` is ``publish`` or ``play``: a play URL cannot publish.

Secrets are per application, in a file of ``APP SECRET`` lines
(``SecretsFile``). An application may have several secrets, all accepted at
once, so a secret is rotated without a cut: add the new one, reload, sign
with it (the first listed signs, see ``rtmpd.sign``), and remove the old one
once the URLs it signed have expired.

Checking is constant-time in the signature (``hmac.compare_digest``); every
input is bounded before it is parsed. ``exp`` is Unix time read from the
injected ``now()``. An allowed request carries ``Allow.expires``: the
server ends the stream at that time plus its grace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Decision, Deny, Reloaded, Request
from rtmpd.access.errors import SecretsFileError
from rtmpd.access.lines import read_text, records

__all__ = [
    "MIN_SECRET_LENGTH",
    "SecretsFile",
    "SecretsTable",
    "SignedURLs",
    "parse_signature",
    "sign",
    "signed_query",
    "signing_message",
]

#: Secrets shorter than this are refused when the file is read: they could be guessed.
MIN_SECRET_LENGTH = 16
#: Longer secrets are refused too (a pasted file, not a secret).
MAX_SECRET_LENGTH = 1024
#: A query longer than this is not parsed.
MAX_QUERY_LENGTH = 2048
#: Nor one with more parameters than this.
MAX_QUERY_PARAMS = 32
#: ``exp`` has at most this many digits (Unix time until the year 33658).
MAX_EXP_DIGITS = 12

_HEX_LENGTH = 64
_B64_LENGTH = 43
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def signing_message(action: str, app: str, name: str, exp: int) -> bytes:
    """The bytes that are signed: ``action|app/name|exp``."""
    return f"{action}|{app}/{name}|{exp}".encode()


def sign(secret: bytes, action: str, app: str, name: str, exp: int, encoding: str = "hex") -> str:
    """The signature for ``action`` on ``app/name`` until ``exp``, in ``hex`` or ``base64url``."""
    digest = hmac.new(secret, signing_message(action, app, name, exp), hashlib.sha256).digest()
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    raise ValueError(f"unknown signature encoding {encoding!r} (hex or base64url)")


def signed_query(secret: bytes, action: str, app: str, name: str, exp: int, encoding: str = "hex") -> str:
    """``exp=EXP&sig=SIG``: what follows ``?`` in a signed stream name."""
    return f"exp={exp}&sig={sign(secret, action, app, name, exp, encoding)}"


def parse_signature(text: str) -> bytes | None:
    """The 32 bytes of a hex or base64url signature, or None if it is neither."""
    if len(text) == _HEX_LENGTH and all(c in _HEX_DIGITS for c in text):
        return bytes.fromhex(text)
    if len(text) == _B64_LENGTH + 1 and text.endswith("="):
        text = text[:-1]
    if len(text) == _B64_LENGTH and all(c in _B64URL_CHARS for c in text):
        try:
            raw = base64.urlsafe_b64decode(text + "=")
        except (binascii.Error, ValueError):
            return None
        # 43 characters carry 258 bits: the last two must be zero, or two spellings would verify.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
            return None
        return raw
    return None


@dataclass(frozen=True)
class _Query:
    exp: int | None = None
    sig: str | None = None
    #: Why the query cannot be checked ("" when it can); ``missing`` when it just carries no signature.
    problem: str = ""
    missing: bool = False


def _parse_query(query: str) -> _Query:
    if len(query) > MAX_QUERY_LENGTH:
        return _Query(problem=f"query longer than {MAX_QUERY_LENGTH} characters")
    params = query.split("&") if query else []
    if len(params) > MAX_QUERY_PARAMS:
        return _Query(problem=f"more than {MAX_QUERY_PARAMS} query parameters")
    found: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        if name in ("exp", "sig"):
            if name in found:
                return _Query(problem=f"{name} given twice")
            found[name] = value
    exp_text, sig = found.get("exp"), found.get("sig")
    if exp_text is None or sig is None:
        return _Query(problem="exp or sig missing", missing=True)
    if not (0 < len(exp_text) <= MAX_EXP_DIGITS and exp_text.isascii() and exp_text.isdigit()):
        return _Query(problem="exp is not a Unix time")
    return _Query(int(exp_text), sig)


class SecretsTable:
    """Secrets by application, immutable. ``parse`` reads ``APP SECRET`` lines."""

    def __init__(self, secrets: Mapping[str, Sequence[bytes]]) -> None:
        self._secrets = {app: tuple(values) for app, values in secrets.items() if values}

    @classmethod
    def parse(cls, text: str, source: str = "<secrets>") -> SecretsTable:
        """Raises ``SecretsFileError`` naming the line (never quoting it)."""
        table: dict[str, list[bytes]] = {}
        for number, fields in records(text):
            if len(fields) != 2:
                raise SecretsFileError(source, number, f"expected 'APP SECRET', found {len(fields)} fields")
            app, secret = fields
            if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
                raise SecretsFileError(
                    source,
                    number,
                    f"secret for {app!r} must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters",
                )
            values = table.setdefault(app, [])
            if secret.encode() not in values:
                values.append(secret.encode())
        return cls(table)

    def secrets_for(self, app: str) -> tuple[bytes, ...]:
        """The app's secrets, the signing one first; empty for an unknown app."""
        return self._secrets.get(app, ())

    def apps(self) -> list[str]:
        return sorted(self._secrets)

    def secret_count(self) -> int:
        return sum(len(v) for v in self._secrets.values())


class SecretsFile:
    """A ``SecretsTable`` read from a file, reloadable. The first load raises ``SecretsFileError``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = SecretsTable.parse(read_text(path, SecretsFileError), path)

    def secrets_for(self, app: str) -> tuple[bytes, ...]:
        return self.table.secrets_for(app)

    def reload(self) -> str:
        """Read the file again and swap the table in one assignment; returns a summary (counts only).

        Raises ``SecretsFileError`` and keeps the old table if the new file is bad.
        """
        new = SecretsTable.parse(read_text(self.path, SecretsFileError), self.path)
        old, self.table = self.table, new
        return (
            f"{self.path}: {len(new.apps())} apps, {new.secret_count()} secrets "
            f"(was {len(old.apps())} apps, {old.secret_count()} secrets)"
        )

    def describe(self) -> str:
        return f"{self.path} ({len(self.table.apps())} apps, {self.table.secret_count()} secrets)"


class SignedURLs(Authoriser):
    """Allows a publish or play whose query carries a valid, unexpired signature (module doc).

    ``secrets``: a ``SecretsTable`` or ``SecretsFile`` (anything with
    ``secrets_for(app)``). ``now``: Unix time. ``actions``: which actions
    need a signature (publish and play by default); connect is always
    allowed, as it carries no stream name.
    """

    name = "signed-url"

    def __init__(
        self,
        secrets: SecretsTable | SecretsFile,
        now: Callable[[], float] = time.time,
        actions: Iterable[Action] = (Action.PUBLISH, Action.PLAY),
    ) -> None:
        self.secrets = secrets
        self._now = now
        self.actions = frozenset(actions)

    def check(self, request: Request) -> Decision:
        if request.action not in self.actions or request.action is Action.CONNECT:
            return ALLOW
        query = _parse_query(request.query)
        if query.missing:
            return Deny("missing signature", self.name, query.problem)
        raw = parse_signature(query.sig) if query.sig is not None else None
        if query.exp is None or raw is None:
            return Deny("malformed signature", self.name, query.problem or "sig is not hex or base64url")
        message = signing_message(str(request.action), request.app, request.name, query.exp)
        matched = False
        for secret in self.secrets.secrets_for(request.app):
            expected = hmac.new(secret, message, hashlib.sha256).digest()
            # No early exit: the time taken does not say which secret matched.
            matched |= hmac.compare_digest(expected, raw)
        if not matched:
            known = bool(self.secrets.secrets_for(request.app))
            return Deny("invalid signature", self.name, "" if known else f"no secret for app {request.app!r}")
        if query.exp <= self._now():
            return Deny("signature expired", self.name, f"expired at {query.exp}")
        return Allow(expires=float(query.exp), authoriser=self.name)

    def reload(self) -> Reloaded:
        """Reload the secrets file: raises ``SecretsFileError`` and keeps the old secrets if it is bad."""
        if not isinstance(self.secrets, SecretsFile):
            return Reloaded("secrets given in code: nothing to reload")
        return Reloaded(self.secrets.reload())

    def describe(self) -> str:
        source = self.secrets.describe() if isinstance(self.secrets, SecretsFile) else "in-memory secrets"
        actions = ", ".join(sorted(str(a) for a in self.actions))
        return f"{self.name} ({actions}; {source})"
