"""The ``--hook-*`` command-line options of the twistd plugin.

``HookOptions`` is mixed into ``rtmpd.tap.Options``: ``--hook-webhook`` and
``--hook-exec`` are repeatable; every value is checked at start-up (a bad
hook, number or secret file stops start-up with one line) and the frozen
``HookSettings`` are left in ``hook_settings``.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from rtmpd.core.text import bounded_number
from rtmpd.hooks.settings import HookSettings
from rtmpd.hooks.signature import read_secret
from rtmpd.hooks.spec import HookConfigError, parse_hook

__all__ = ["HOOK_PARAMETERS", "HookOptions"]

_defaults = HookSettings()


_positive_int = bounded_number(int, 1, "an integer >= 1")
_count = bounded_number(int, 0, "an integer >= 0")
_seconds = bounded_number(float, 0, "a number of seconds > 0", above=True)
_grace = bounded_number(float, 0, "a number of seconds >= 0")

HOOK_PARAMETERS: list[list[Any]] = [
    [
        "hook-secret-file",
        None,
        None,
        "File holding the webhooks' HMAC-SHA256 secret (required with webhooks)",
    ],
    [
        "hook-queue-size",
        None,
        _defaults.queue_size,
        "Events each hook may hold undelivered; more are dropped and counted",
        _positive_int,
    ],
    ["hook-retries", None, _defaults.retries, "Retries of a failed webhook delivery", _count],
    ["hook-backoff", None, _defaults.backoff, "Seconds before a webhook's first retry (doubling)", _seconds],
    ["hook-backoff-max", None, _defaults.backoff_max, "Longest wait between webhook retries", _seconds],
    [
        "hook-timeout",
        None,
        _defaults.timeout,
        "Seconds one webhook request or hook command may take",
        _seconds,
    ],
    [
        "hook-exec-concurrency",
        None,
        _defaults.exec_concurrency,
        "Commands of one exec hook running at once",
        _positive_int,
    ],
    [
        "hook-shutdown-grace",
        None,
        _defaults.shutdown_grace,
        "Seconds a stopping server keeps delivering queued events",
        _grace,
    ],
]


class HookOptions:
    """The repeatable ``--hook-webhook``/``--hook-exec`` and the settings check (mixed into the tap's
    Options)."""

    hook_settings: HookSettings

    def init_hooks(self) -> None:
        self["hooks"] = []  # type: ignore[index]

    def opt_hook_webhook(self, value: str) -> None:
        """EVENTS=URL: POST these events ('*' or a comma list) as signed JSON to URL (repeatable)."""
        self["hooks"].append(_hook("--hook-webhook", "webhook", value))  # type: ignore[index]

    def opt_hook_exec(self, value: str) -> None:
        """EVENTS=COMMAND: run COMMAND (with /bin/sh) for these events, the event in RTMPD_* variables
        and as JSON on stdin (repeatable)."""
        self["hooks"].append(_hook("--hook-exec", "exec", value))  # type: ignore[index]

    def hook_settings_from_options(self) -> HookSettings:
        get = self.__getitem__  # type: ignore[attr-defined]
        hooks = tuple(get("hooks"))
        secret_file = get("hook-secret-file")
        if any(h.kind == "webhook" for h in hooks):
            if secret_file is None:
                raise usage.UsageError(
                    "--hook-webhook needs --hook-secret-file (the HMAC secret receivers check)"
                )
            try:
                read_secret(secret_file)
            except HookConfigError as e:
                raise usage.UsageError(str(e)) from e
        if get("hook-backoff-max") < get("hook-backoff"):
            raise usage.UsageError("--hook-backoff-max must be >= --hook-backoff")
        return HookSettings(
            hooks=hooks,
            secret_file=secret_file,
            queue_size=get("hook-queue-size"),
            retries=get("hook-retries"),
            backoff=get("hook-backoff"),
            backoff_max=get("hook-backoff-max"),
            timeout=get("hook-timeout"),
            exec_concurrency=get("hook-exec-concurrency"),
            shutdown_grace=get("hook-shutdown-grace"),
        )


def _hook(option: str, kind: str, value: str):
    try:
        return parse_hook(kind, value)
    except HookConfigError as e:
        raise usage.UsageError(f"{option}: {e}") from e
