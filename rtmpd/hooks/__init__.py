"""Event hooks: the server's lifecycle events (``rtmpd.notify``) sent to webhooks and commands.

``HookService`` (``service``) subscribes to the notifier and hands each event
to its sinks: ``WebhookSink`` (``webhook``: a signed JSON POST, in order,
retried with backoff) and ``ExecSink`` (``command``: a command run with the
event in its environment and on stdin). Each sink has a bounded queue and
counts its deliveries by result (``counters``). What an operator writes on
the command line is parsed in ``spec`` and ``options``; ``docs/hooks.md``
describes it all.
"""

from rtmpd.hooks.counters import RESULTS, DeliveryCounts
from rtmpd.hooks.settings import HookSettings
from rtmpd.hooks.signature import SIGNATURE_HEADER, sign, verify
from rtmpd.hooks.spec import HookConfigError, HookSpec, parse_hook

__all__ = [
    "RESULTS",
    "SIGNATURE_HEADER",
    "DeliveryCounts",
    "HookConfigError",
    "HookSettings",
    "HookSpec",
    "parse_hook",
    "sign",
    "verify",
]
