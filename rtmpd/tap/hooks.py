"""Wiring of the event hooks (``--hook-*``): the sinks, their HTTP client, the hook service."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from rtmpd.hooks.settings import HookSettings

if TYPE_CHECKING:
    from rtmpd.hooks.service import HookService
    from rtmpd.server.service import RTMPService


def install_hooks(top: RTMPService, settings: HookSettings, reactor: Any) -> HookService:
    """Add the hook service with one sink per configured hook to ``top``; it is told of every event of
    ``top.registry.notifier``. Exits with one line when the secret file cannot be read."""
    from rtmpd.hooks.backoff import Backoff
    from rtmpd.hooks.command import ExecSink
    from rtmpd.hooks.service import HookService
    from rtmpd.hooks.signature import read_secret
    from rtmpd.hooks.sink import Sink
    from rtmpd.hooks.spec import HookConfigError
    from rtmpd.hooks.webhook import WebhookSink, treq_poster

    sinks: list[Sink] = []
    closers = []
    secret = b""
    if any(h.kind == "webhook" for h in settings.hooks):
        try:
            secret = read_secret(settings.secret_file or "")
        except HookConfigError as e:
            sys.exit(f"rtmpd: error: {e}")
    for spec in settings.hooks:
        if spec.kind == "webhook":
            post, close = treq_poster(reactor, settings.timeout)
            closers.append(close)
            sinks.append(
                WebhookSink(
                    spec,
                    secret=secret,
                    post=post,
                    clock=reactor,
                    queue_size=settings.queue_size,
                    retries=settings.retries,
                    backoff=Backoff(settings.backoff, settings.backoff_max),
                    timeout=settings.timeout,
                )
            )
        else:
            sinks.append(
                ExecSink(
                    spec,
                    spawn=reactor.spawnProcess,
                    clock=reactor,
                    queue_size=settings.queue_size,
                    concurrency=settings.exec_concurrency,
                    timeout=settings.timeout,
                )
            )

    def recordings_closed() -> defer.Deferred | None:
        # Files finalized at shutdown announce record_done: wait for them before draining.
        recorder = top.recorder
        if recorder is None or not recorder.unfinished:
            return None
        return defer.DeferredList([r.when_closed() for r in recorder.unfinished])

    hooks = HookService(
        top.registry.notifier,
        sinks,
        reactor,
        shutdown_grace=settings.shutdown_grace,
        before_drain=recordings_closed,
        on_stopped=lambda: [close() for close in closers],
    )
    hooks.setServiceParent(top)
    return hooks
