"""Label values with bounded sets: applications, close reasons.

A label value comes from a client (an application name) or from a log
reason with details in it ("kicked by admin"); exported as they are, they
would grow the number of series without bound. ``AppLabels`` gives the
first ``max_apps`` applications seen their own label and every other one
``OTHER`` (the empty name is ``NO_APP``); an application keeps its label for the life of the process, so
a counter summed by label never moves from one label to another (and never
goes down). ``close_reason`` maps a close reason to one of
``CLOSE_REASONS``.
"""

from __future__ import annotations

__all__ = ["CLOSE_REASONS", "NO_APP", "OTHER", "AppLabels", "close_reason"]

#: The label of everything beyond a cap.
OTHER = "_other"
#: The label of the empty application name.
NO_APP = "_none"
#: Longest application name used as a label value; longer names are cut.
MAX_APP_LENGTH = 64

#: Every value of the ``reason`` label of closed connections.
CLOSE_REASONS = (
    "client_closed",
    "connection_lost",
    "protocol_error",
    "handshake_timeout",
    "publisher_timeout",
    "play_timeout",
    "timeout",
    "publisher_replaced",
    "refused",
    "access",
    "admin",
    "internal_error",
    "shutdown",
    "other",
)

# (substring, bucket), tried in order on the lower-cased reason.
_REASON_PATTERNS = (
    ("play timeout", "play_timeout"),
    ("publisher timeout", "publisher_timeout"),
    ("handshake timeout", "handshake_timeout"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("deadline", "timeout"),
    ("protocol error", "protocol_error"),
    ("publisher replaced", "publisher_replaced"),
    ("refused", "refused"),
    ("permission", "access"),
    ("revoked", "access"),
    ("kicked by", "admin"),
    ("dropped by", "admin"),
    ("internal error", "internal_error"),
    ("shut", "shutdown"),
    ("closed cleanly", "client_closed"),
    ("connection lost", "connection_lost"),
    ("non-clean", "connection_lost"),
    ("connection reset", "connection_lost"),
)


def close_reason(reason: str) -> str:
    """The ``CLOSE_REASONS`` bucket of a connection's close reason (as the server logs it)."""
    lowered = reason.lower()
    for pattern, bucket in _REASON_PATTERNS:
        if pattern in lowered:
            return bucket
    return "other"


class AppLabels:
    """The label of each application name: itself for the first ``max_apps`` names, else ``OTHER``.

    Memory is bounded by ``max_apps`` names of at most ``MAX_APP_LENGTH`` characters.
    """

    def __init__(self, max_apps: int) -> None:
        self.max_apps = max_apps
        self._known: set[str] = set()

    def __call__(self, app: str) -> str:
        if not app:
            return NO_APP
        app = app[:MAX_APP_LENGTH]
        if app in self._known:
            return app
        if len(self._known) < self.max_apps and app not in (OTHER, NO_APP):
            self._known.add(app)
            return app
        return OTHER
