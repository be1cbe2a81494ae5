"""Stream keys: who may publish (and, optionally, play) which stream, from a file an operator edits.

The file has one key a line::

    # APP   KEY              [play]  [name=NAME]  [record=yes|no]
    live    9f2c1e-alice             name=alice
    live    0d77b3-bob               record=no
    live    viewers-4412     play    name=alice

- A publish line (no ``play``) lets a client publish on ``APP/KEY`` (the
  Stream Key field of OBS). With ``name=NAME`` the stream is published as
  ``APP/NAME`` instead, so viewers never learn the key. ``record=no`` turns
  recording off for it; ``record=yes`` asks for it.
- A play line lets a client play ``APP/KEY`` (the stream ``NAME`` with
  ``name=``, else the stream ``KEY``). An application with no play line
  leaves playing open; one with any play line requires a play key.
- Publishing on an application with no publish line is refused: a key file
  is a list of who may publish.
- Connect is always allowed (a connect names no stream).

``KeyFile.reload()`` reads the file again and swaps the table in one
assignment (live streams are untouched: only new requests see the new
table) and reports what changed; a file that does not parse raises
``KeyFileError`` naming the line and keeps the old table. A reload's report
counts keys and names the streams whose publish key went away (for
``--auth-revoke-live``) but never prints a key that was not already a
stream name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Decision, Deny, Reloaded, Request
from rtmpd.access.errors import KeyFileError
from rtmpd.access.lines import read_text, records
from rtmpd.relay.names import MAX_NAME_LENGTH, IllegalName, split_stream_name, validate_app

__all__ = ["KeyChanges", "KeyEntry", "KeyFile", "KeyTable", "StreamKeys"]

_ROLES = ("publish", "play")
_RECORD_VALUES = {"yes": True, "no": False}


@dataclass(frozen=True)
class KeyEntry:
    """One line of the key file."""

    app: str
    key: str
    role: str  # "publish" or "play"
    name: str | None = None
    record: bool | None = None
    line: int = 0

    @property
    def stream(self) -> str:
        """The stream key (``app/name``) this entry publishes or plays."""
        return f"{self.app}/{self.name or self.key}"

    def same_grant(self, other: KeyEntry) -> bool:
        return (self.name, self.record) == (other.name, other.record)


def _stream_name(source: str, number: int, value: str, what: str) -> str:
    """``value`` if it is a legal stream name without a query. Raises KeyFileError (not quoting it)."""
    try:
        name, query = split_stream_name(value)
    except IllegalName:
        name, query = "", "?"
    if query or name != value:
        raise KeyFileError(
            source,
            number,
            f"bad {what}: a stream name of at most {MAX_NAME_LENGTH} printable characters, "
            "no '?' or backslash, no empty, '.' or '..' segment",
        )
    return name


def _parse_line(source: str, number: int, fields: list[str]) -> KeyEntry:
    if len(fields) < 2:
        raise KeyFileError(source, number, "expected 'APP KEY [play] [name=NAME] [record=yes|no]'")
    app, key, *options = fields
    try:
        if validate_app(app) != app:
            raise IllegalName("application name must not carry '/' at its ends or a '?'")
    except IllegalName as e:
        raise KeyFileError(source, number, f"bad application name: {e}") from None
    _stream_name(source, number, key, "key")
    role, name, record = "publish", None, None
    for option in options:
        label, eq, value = option.partition("=")
        if not eq and option in _ROLES:
            role = option
        elif label == "name" and eq:
            name = _stream_name(source, number, value, "name=")
        elif label == "record" and value in _RECORD_VALUES:
            record = _RECORD_VALUES[value]
        else:
            # Name the option's label only: its value might be a mistyped secret.
            raise KeyFileError(source, number, f"unknown option {label!r} (play, name=NAME, record=yes|no)")
    return KeyEntry(app, key, role, name, record, number)


class KeyTable:
    """The keys of a key file, immutable, by (app, role, key)."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[tuple[str, str, str], KeyEntry] = {}
        self._apps_with: dict[str, set[str]] = {role: set() for role in _ROLES}
        for entry in entries:
            self._entries[(entry.app, entry.role, entry.key)] = entry
            self._apps_with[entry.role].add(entry.app)

    @classmethod
    def parse(cls, text: str, source: str = "<keys>") -> KeyTable:
        """Raises ``KeyFileError`` naming the first bad line (never quoting it)."""
        seen: dict[tuple[str, str, str], int] = {}
        entries = []
        for number, fields in records(text):
            entry = _parse_line(source, number, fields)
            ident = (entry.app, entry.role, entry.key)
            if ident in seen:
                raise KeyFileError(source, number, f"the same {entry.role} key as line {seen[ident]}")
            seen[ident] = number
            entries.append(entry)
        return cls(entries)

    def lookup(self, app: str, role: str, key: str) -> KeyEntry | None:
        return self._entries.get((app, role, key))

    def requires(self, app: str, role: str) -> bool:
        """Whether ``role`` on ``app`` needs a key: publishing always does, playing when a play key exists."""
        return role == "publish" or app in self._apps_with[role]

    def entries(self) -> list[KeyEntry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class KeyChanges:
    """What a reload changed, as (app, role, key) triples, and the streams whose publish key went away."""

    added: frozenset[tuple[str, str, str]]
    removed: frozenset[tuple[str, str, str]]
    changed: frozenset[tuple[str, str, str]]
    #: Stream keys (``app/name``) published through a publish key that was removed: ``--auth-revoke-live``
    #: ends their publishers.
    revoked_streams: frozenset[str]
    total: int

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
            f"{self.total} keys in all"
        )


def diff(old: KeyTable, new: KeyTable) -> KeyChanges:
    old_entries = {(e.app, e.role, e.key): e for e in old.entries()}
    new_entries = {(e.app, e.role, e.key): e for e in new.entries()}
    added = new_entries.keys() - old_entries.keys()
    removed = old_entries.keys() - new_entries.keys()
    changed = {
        k for k in old_entries.keys() & new_entries.keys() if not old_entries[k].same_grant(new_entries[k])
    }
    revoked = {old_entries[k].stream for k in removed | changed if k[1] == "publish"}
    return KeyChanges(frozenset(added), frozenset(removed), frozenset(changed), frozenset(revoked), len(new))


class KeyFile:
    """A ``KeyTable`` read from a file, reloadable (module doc). The first load raises ``KeyFileError``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = KeyTable.parse(read_text(path, KeyFileError), path)

    def reload(self) -> KeyChanges:
        """Read the file again; swap the table only if it parses. Raises ``KeyFileError`` otherwise."""
        new = KeyTable.parse(read_text(self.path, KeyFileError), self.path)
        old, self.table = self.table, new
        return diff(old, new)

    def describe(self) -> str:
        return f"{self.path} ({len(self.table)} keys)"


class StreamKeys(Authoriser):
    """Allows publish and play by the key table of a ``KeyFile`` or ``KeyTable`` (module doc)."""

    name = "key-file"

    def __init__(self, keys: KeyFile | KeyTable) -> None:
        self.keys = keys

    @property
    def table(self) -> KeyTable:
        return self.keys.table if isinstance(self.keys, KeyFile) else self.keys

    def check(self, request: Request) -> Decision:
        if request.action is Action.CONNECT:
            return ALLOW
        role = str(request.action)
        table = self.table  # one read: a reload in between swaps the whole table
        if not table.requires(request.app, role):
            return ALLOW
        entry = table.lookup(request.app, role, request.name)
        if entry is None:
            return Deny("unknown stream key", self.name, f"no {role} key matches in app {request.app!r}")
        return Allow(
            name=entry.name, record=entry.record, authoriser=self.name, detail=f"key line {entry.line}"
        )

    def reload(self) -> Reloaded:
        """Reload the key file (``KeyFile.reload``): raises ``KeyFileError`` and keeps the old table."""
        if not isinstance(self.keys, KeyFile):
            return Reloaded("keys given in code: nothing to reload")
        changes = self.keys.reload()
        return Reloaded(f"{self.keys.path}: {changes.summary()}", changes.revoked_streams)

    def describe(self) -> str:
        source = self.keys.describe() if isinstance(self.keys, KeyFile) else f"{len(self.keys)} keys"
        return f"{self.name} ({source})"
