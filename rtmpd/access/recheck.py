"""``PublisherRecheck``: live publishers asked about again, like nginx-rtmp's ``on_update``.

Every ``interval`` seconds each live publication that access control allowed
is put to the policy again with the request it was allowed on. A refusal
ends that publisher (its players get UnpublishNotify and its recording is
finalised by the usual teardown); an allow, or a decision still pending at
the next round, changes nothing. The callback's failure policy decides what
"the callback is down" means here as at publish time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.access.errors import AccessDenied
from rtmpd.access.policy import AccessPolicy


class PublisherRecheck(service.Service):
    """Re-asks ``policy`` about every publication ``publications()`` yields (see the module doc).

    A publication is anything with ``authorisation`` (the request it was allowed on, or None) and
    ``peer`` (with ``conn_id`` and ``close(reason)``).
    """

    log = Logger()
    name = "access-recheck"

    def __init__(
        self, policy: AccessPolicy, publications: Callable[[], Iterable[Any]], interval: float, clock: Any
    ) -> None:
        self.policy = policy
        self.publications = publications
        self.interval = interval
        self._loop = task.LoopingCall(self.recheck)
        self._loop.clock = clock
        self._pending: dict[int, Deferred] = {}

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        for d in list(self._pending.values()):
            d.cancel()

    def recheck(self) -> None:
        """One round: ask about every live publication not already being asked about."""
        for publication in list(self.publications()):
            request = publication.authorisation
            if request is None or id(publication) in self._pending:
                continue
            d = self.policy.authorise(request)
            if d.called:
                d.addBoth(self._decided, publication)
                continue
            self._pending[id(publication)] = d
            d.addBoth(self._settled, publication)

    def _settled(self, result: Any, publication: Any) -> None:
        self._pending.pop(id(publication), None)
        self._decided(result, publication)

    def _decided(self, result: Any, publication: Any) -> None:
        if not isinstance(result, Failure):
            return
        if result.check(AccessDenied):
            self.log.warn(
                "Publisher no longer authorised; ending its stream",
                conn_id=publication.peer.conn_id,
                stream_key=publication.authorisation.key,
                reason=str(result.value),
            )
            publication.peer.close("publish permission withdrawn")
        elif not result.check(CancelledError):
            self.log.failure("Re-checking a publisher failed", result, conn_id=publication.peer.conn_id)
