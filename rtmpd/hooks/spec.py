"""One hook as the operator writes it, ``EVENTS=TARGET``, parsed and checked.

``EVENTS`` is ``*`` or a comma list of event names (``rtmpd.notify.EVENT_NAMES``);
``TARGET`` is an http(s) URL for a webhook or a shell command for an exec
hook. Everything after the first ``=`` is the target, so URLs with query
strings and commands with ``=`` need no quoting beyond the shell's.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from rtmpd.notify import EVENT_NAMES

__all__ = ["HookConfigError", "HookSpec", "parse_events", "parse_hook"]

KINDS = ("webhook", "exec")


class HookConfigError(ValueError):
    """A hook option or file is wrong; the message is one line that says what and where."""


@dataclass(frozen=True)
class HookSpec:
    """A hook: its ``kind`` ("webhook" or "exec"), the ``events`` it is told of, and its ``target``
    (a URL or a command)."""

    kind: str
    events: frozenset[str]
    target: str

    def wants(self, name: str) -> bool:
        return name in self.events

    def describe(self) -> str:
        """The hook for logs: events and target, with a URL's password and query left out."""
        events = "*" if self.events == frozenset(EVENT_NAMES) else ",".join(sorted(self.events))
        return f"{self.kind} {events} -> {redact(self.target) if self.kind == 'webhook' else self.target}"


def redact(url: str) -> str:
    """``url`` without its user info, query and fragment (they may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_events(text: str) -> frozenset[str]:
    """``*`` or a comma list of event names; HookConfigError names any unknown one."""
    text = text.strip()
    if text == "*":
        return frozenset(EVENT_NAMES)
    names = [n.strip() for n in text.split(",")]
    if not text or any(not n for n in names):
        raise HookConfigError(f"empty event name in {text!r}")
    unknown = [n for n in names if n not in EVENT_NAMES]
    if unknown:
        raise HookConfigError(
            f"unknown event {unknown[0]!r} (expected '*' or a comma list of: {', '.join(EVENT_NAMES)})"
        )
    return frozenset(names)


def parse_hook(kind: str, text: str) -> HookSpec:
    """Parse ``EVENTS=TARGET`` for a hook of ``kind``; HookConfigError says what is wrong."""
    if kind not in KINDS:
        raise HookConfigError(f"unknown hook kind {kind!r}")
    events_text, sep, target = text.partition("=")
    if not sep:
        raise HookConfigError(f"expected EVENTS=TARGET, e.g. 'record_done=...', got {text!r}")
    events = parse_events(events_text)
    target = target.strip()
    if not target:
        raise HookConfigError(f"no {'URL' if kind == 'webhook' else 'command'} after '=' in {text!r}")
    if kind == "webhook":
        _check_url(target)
    return HookSpec(kind, events, target)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as e:
        raise HookConfigError(f"bad webhook URL {redact_safely(url)!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise HookConfigError(f"webhook URL must start with http:// or https://, got {redact_safely(url)!r}")
    if not parts.hostname:
        raise HookConfigError(f"webhook URL has no host: {redact_safely(url)!r}")


def redact_safely(url: str) -> str:
    try:
        return redact(url)
    except ValueError:
        return url.split("?", 1)[0]
