"""The push service: every local stream that matches a rule is sent on to that rule's URL.

``PushService`` is a Twisted ``Service`` and a ``StreamListener`` of the
registry. A rule is ``PATTERN=URL`` (``--push``, repeatable): PATTERN is an
fnmatch over ``app/name``, URL may use ``{app}`` and ``{name}``. For each
live stream and each rule it matches there is one ``PushDestination``,
independent of every other. When the publisher leaves, the destinations
keep their connections for ``grace`` seconds: a publisher that comes back
within it continues on them; after it they send FCUnpublish/deleteStream
and close.

Loop safety: every connection rtmpd opens carries the relay mark
(``RELAY_FLASH_VER`` and the ``rtmpdRelay`` connect parameter), and a
stream whose publisher carried it is never pushed again, so two servers
that push to each other cannot loop.

The runtime API (``add``, ``remove``, ``restart``, ``destinations``,
``rules``) is what the manhole and the HTTP API call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.logger import Logger

from rtmpd.core.classify import MediaInfo
from rtmpd.core.messages import Message
from rtmpd.relay.listener import StreamListener
from rtmpd.remote.destination import PushDestination
from rtmpd.remote.shared import SharedChunks
from rtmpd.remote.urls import RemoteURL, URLError, matches, render, template_fields

if TYPE_CHECKING:
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["RELAY_FLASH_VER", "RELAY_PARAM", "PushRule", "PushService", "is_relayed"]

#: flashVer of every connection rtmpd opens as a relay; its mark ``rtmpd-relay`` is what is checked.
RELAY_FLASH_VER = "FMLE/3.0 (rtmpd-relay)"
#: The connect parameter that also marks a relay (servers other than rtmpd may show it).
RELAY_PARAM = "rtmpdRelay"
_RELAY_MARK = "rtmpd-relay"


def is_relayed(stream: Stream) -> bool:
    """Whether the stream's publisher is a relay (an rtmpd push or pull), by its connect's flashVer."""
    publisher = stream.publisher
    if publisher is None:
        return False
    return _RELAY_MARK in str(getattr(publisher.authorisation, "flash_ver", "") or "")


@dataclass(frozen=True)
class PushRule:
    ident: int
    pattern: str
    url: str
    ca_file: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"id": self.ident, "pattern": self.pattern, "url": _redacted_template(self.url)}


def _redacted_template(template: str) -> str:
    head, _, tail = template.rpartition("/")
    if "{" in tail or len(tail) <= 4:
        return template
    return f"{head}/{tail[:4]}***"


class PushService(service.Service, StreamListener):
    """Pushes matching streams to their rules' URLs (see the module docstring).

    ``connect(destination, rule)`` starts one connection attempt (see
    ``PushDestination``). ``is_self(url)`` tells whether a URL points at this
    very server; a rule that would push a stream to its own key here is
    refused (``URLError``).
    """

    log = Logger()
    name = "push"

    def __init__(
        self,
        registry: StreamRegistry,
        clock: Any,
        connect: Callable[[PushDestination, PushRule], Any],
        *,
        grace: float = 10.0,
        max_queue_bytes: int = 4 * 1024 * 1024,
        stall_timeout: float = 10.0,
        is_self: Callable[[RemoteURL], bool] = lambda url: False,
        backoff: Callable[[], Any] | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self._connect = connect
        self.grace = grace
        self.max_queue_bytes = max_queue_bytes
        self.stall_timeout = stall_timeout
        self._is_self = is_self
        self._backoff = backoff
        self._rules: dict[int, PushRule] = {}
        self._ids = itertools.count(1)
        #: stream key -> its destinations (one per matching rule).
        self._by_key: dict[str, dict[int, PushDestination]] = {}
        #: What destinations that are gone had sent and reconnected, so the totals never go down.
        self._ended = {"bytes_sent": 0, "reconnects": 0}
        self._grace: dict[str, Any] = {}
        self._relayed_logged: set[str] = set()

    # -- rules (the runtime API) ---------------------------------------------------------

    def add(self, pattern: str, url: str, ca_file: str | None = None) -> int:
        """Add a rule; streams live now that match it start pushing. Returns its id. Raises URLError."""
        self._check(pattern, url)
        rule = PushRule(next(self._ids), pattern, url, ca_file)
        self._rules[rule.ident] = rule
        self.log.info("Push rule added", rule=rule.ident, pattern=pattern, url=_redacted_template(url))
        if self.running:
            for stream in self.registry:
                if stream.live and matches(pattern, stream.key) and not is_relayed(stream):
                    self._start(rule, stream)
        return rule.ident

    def remove(self, rule_id: int) -> None:
        """Remove a rule; its destinations stop (FCUnpublish, close). Raises KeyError for an unknown id."""
        rule = self._rules.pop(rule_id)
        for key, destinations in list(self._by_key.items()):
            destination = destinations.pop(rule.ident, None)
            if destination is not None:
                destination.stop("rule removed")
                self._retire([destination])
            if not destinations:
                self._forget(key)
        self.log.info("Push rule removed", rule=rule_id)

    def restart(self, rule_id: int | None = None, key: str | None = None) -> int:
        """Reconnect now the destinations of a rule and/or a stream (all without arguments); how many."""
        count = 0
        for destination in self._destinations():
            if rule_id is not None and destination.rule_id != rule_id:
                continue
            if key is not None and destination.key != key:
                continue
            destination.restart()
            count += 1
        return count

    def rules(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self._rules.values()]

    def destinations(self) -> list[dict[str, Any]]:
        """State, bytes, reconnects and last error of every destination."""
        return [dict(d.stats(), rule=d.rule_id) for d in self._destinations()]

    def destination(self, key: str, rule_id: int) -> PushDestination | None:
        return self._by_key.get(key, {}).get(rule_id)

    def _destinations(self) -> list[PushDestination]:
        return [d for destinations in self._by_key.values() for d in destinations.values()]

    def _check(self, pattern: str, template: str) -> None:
        if not pattern:
            raise URLError("empty pattern")
        fields = template_fields(template)
        sample = render(template, "app/name")
        if self._is_self(sample):
            # Pushing to ourselves is a loop unless the target key differs from the source key.
            if fields >= {"app", "name"} and template.rstrip("/").endswith("{app}/{name}"):
                raise URLError(f"{template!r} pushes every stream to itself on this server")
            if not fields and matches(pattern, sample.key):
                raise URLError(f"{template!r} pushes {sample.key} to itself on this server")

    # -- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self not in self.registry.listeners:
            self.registry.listeners.append(self)

    def stopService(self) -> None:
        super().stopService()
        if self in self.registry.listeners:
            self.registry.listeners.remove(self)
        for key in list(self._by_key):
            for destination in self._by_key[key].values():
                destination.stop("server stopping")
            self._forget(key)

    # -- StreamListener -----------------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        key = stream.key
        if is_relayed(stream):
            if key not in self._relayed_logged:
                self._relayed_logged.add(key)
                self.log.info("Relayed stream not pushed on (loop safety)", stream_key=key)
            return
        timer = self._grace.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        destinations = self._by_key.get(key, {})
        for destination in destinations.values():
            destination.source_started(stream)
        for rule in self._rules.values():
            if rule.ident not in destinations and matches(rule.pattern, key):
                self._start(rule, stream)

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        destinations = self._by_key.get(stream.key)
        if destinations:
            # Made once for every destination that sends the same bytes (rtmpd.remote.shared).
            shared = SharedChunks(message)
            for destination in destinations.values():
                destination.source_message(message, info, shared)

    def stream_unpublished(self, stream: Stream) -> None:
        key = stream.key
        self._relayed_logged.discard(key)
        destinations = self._by_key.get(key)
        if not destinations:
            return
        for destination in destinations.values():
            destination.source_stopped()
        self.log.info(
            "Push source gone; keeping destinations for the grace", stream_key=key, grace=self.grace
        )
        previous = self._grace.pop(key, None)
        if previous is not None and previous.active():
            previous.cancel()
        self._grace[key] = self.clock.callLater(self.grace, self._grace_over, key)

    def _grace_over(self, key: str) -> None:
        self._grace.pop(key, None)
        destinations = self._by_key.get(key, {})
        for destination in destinations.values():
            destination.stop("source gone for the grace period")
        self._forget(key)

    def totals(self) -> dict[str, int]:
        """Bytes sent and reconnections of every destination there has been (for counters)."""
        live = self._destinations()
        stats = [d.stats() for d in live]
        return {
            "bytes_sent": self._ended["bytes_sent"] + sum(s["bytes_sent"] for s in stats),
            "reconnects": self._ended["reconnects"] + sum(s["reconnects"] for s in stats),
        }

    def _retire(self, destinations: list[PushDestination]) -> None:
        for destination in destinations:
            stats = destination.stats()
            self._ended["bytes_sent"] += stats["bytes_sent"]
            self._ended["reconnects"] += stats["reconnects"]

    def _forget(self, key: str) -> None:
        self._retire(list(self._by_key.get(key, {}).values()))
        self._by_key.pop(key, None)
        timer = self._grace.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _start(self, rule: PushRule, stream: Stream) -> None:
        try:
            url = render(rule.url, stream.key)
        except URLError as e:
            self.log.warn(
                "Push rule gives no usable URL", rule=rule.ident, stream_key=stream.key, error=str(e)
            )
            return
        destination = PushDestination(
            f"{rule.ident}:{stream.key}",
            stream.key,
            url,
            connect=lambda d, rule=rule: self._connect(d, rule),
            clock=self.clock,
            backoff=self._backoff() if self._backoff is not None else None,
            max_queue_bytes=self.max_queue_bytes,
            stall_timeout=self.stall_timeout,
            rule_id=rule.ident,
        )
        self._by_key.setdefault(stream.key, {})[rule.ident] = destination
        destination.start(stream)
