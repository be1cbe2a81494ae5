"""``Admission``: how many connections the server holds, in total and per address, and who is refused.

A connection over a limit is refused at accept (the factory builds no
protocol, so Twisted closes the socket at once): it costs a descriptor for
an instant and nothing else. Refusals are logged without letting a flood of
connections flood the log: the first refusal of an address in a window of
``REFUSAL_LOG_WINDOW`` seconds is logged at once, the others of that window
are counted and summed up in one line when it ends (``flush_refusals``,
called from the factory's sweep).
"""

from __future__ import annotations

from twisted.logger import Logger

#: Seconds during which further refusals of one address are only counted.
REFUSAL_LOG_WINDOW = 60.0
#: Addresses whose refusals are counted separately; beyond, they are counted under "*".
MAX_TRACKED_REFUSALS = 1024


class Admission:
    """Counts live connections by address; ``admit`` says whether one more may come in.

    A limit of 0 means none. The address "" (a UNIX socket, a test transport)
    counts towards the total only.
    """

    log = Logger()

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.total = 0
        self.by_address: dict[str, int] = {}
        #: address -> (window start, refusals since the logged one, reason).
        self._refusals: dict[str, tuple[float, int, str]] = {}

    def admit(self, host: str, now: float) -> bool:
        """Count a new connection from ``host`` if the limits allow it; else log the refusal, False."""
        if self.max_connections and self.total >= self.max_connections:
            self._refused(host, now, "max-connections", self.max_connections)
            return False
        if host and self.max_per_address and self.by_address.get(host, 0) >= self.max_per_address:
            self._refused(host, now, "max-connections-per-address", self.max_per_address)
            return False
        self.total += 1
        if host:
            self.by_address[host] = self.by_address.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        """A connection ``admit`` counted is gone."""
        self.total -= 1
        if host:
            left = self.by_address.get(host, 1) - 1
            if left > 0:
                self.by_address[host] = left
            else:
                self.by_address.pop(host, None)

    def _refused(self, host: str, now: float, limit: str, value: int) -> None:
        key = host if host in self._refusals or len(self._refusals) < MAX_TRACKED_REFUSALS else "*"
        window = self._refusals.get(key)
        if window is not None:
            self._refusals[key] = (window[0], window[1] + 1, limit)
            return
        self._refusals[key] = (now, 0, limit)
        self.log.warn(
            "Connection refused: {limit} reached",
            limit=limit,
            value=value,
            peer_host=host if key != "*" else "*",
            connections=self.total,
        )

    def flush_refusals(self, now: float) -> None:
        """End the refusal windows older than ``REFUSAL_LOG_WINDOW``, logging one line for each that
        counted more refusals than the one it logged."""
        for key, (start, more, limit) in list(self._refusals.items()):
            if now - start < REFUSAL_LOG_WINDOW:
                continue
            del self._refusals[key]
            if more:
                self.log.warn(
                    "Connections refused: {limit} reached",
                    limit=limit,
                    peer_host=key,
                    refused=more,
                    seconds=round(now - start, 1),
                )
