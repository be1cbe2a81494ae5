"""Every setting of the event hooks, frozen; ``rtmpd.hooks.options`` builds them from the command line."""

from __future__ import annotations

from dataclasses import dataclass

from rtmpd.hooks.spec import HookSpec

__all__ = ["HookSettings"]


@dataclass(frozen=True)
class HookSettings:
    """The hooks and their limits; the defaults are the documented defaults of the options
    (docs/hooks.md)."""

    hooks: tuple[HookSpec, ...] = ()
    #: File holding the webhooks' HMAC secret (required when there is a webhook).
    secret_file: str | None = None
    #: Events each sink may hold undelivered (webhook: including the one being sent; exec: waiting to run).
    queue_size: int = 1000
    #: Further attempts of a webhook delivery after the first fails.
    retries: int = 8
    #: First wait before a retry, and the longest wait (seconds).
    backoff: float = 1.0
    backoff_max: float = 60.0
    #: Seconds one HTTP request, or one command, may take.
    timeout: float = 10.0
    #: Commands of one exec hook running at once.
    exec_concurrency: int = 2
    #: Seconds a stopping server waits for queued events (and the recordings' record_done) to go out.
    shutdown_grace: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.hooks)
