"""The exec sink: a command run for each event, the event in its environment and as JSON on stdin.

At most ``concurrency`` commands of one hook run at once; further events
wait in the bounded queue, in order. Each run is a ``CommandRun``
(``rtmpd.hooks.process``): its own process group, a timeout that ends that
group, its output logged in bounded lines. A command is never retried: its
exit status 0 counts ``ok``, anything else ``failed``.

The environment is the server's, plus ``RTMPD_EVENT``, ``RTMPD_EVENT_ID``,
``RTMPD_TIME`` and ``RTMPD_<FIELD>`` for each field of the event
(``RTMPD_STREAM_KEY``, ``RTMPD_PATH``, ``RTMPD_DURATION``...): numbers and
text as they are, booleans as ``1``/``0``, None as empty, lists and dicts as
JSON. Values come from clients (stream names, flashVer): a script must quote
them ("$RTMPD_NAME"); they never pass through a shell on our side.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from rtmpd.hooks.process import CommandRun
from rtmpd.hooks.sink import HookEvent, Sink
from rtmpd.hooks.spec import HookSpec

__all__ = ["ExecSink", "event_environment"]

_NOT_NAME = re.compile(r"[^A-Z0-9]+")


def _env_value(value: Any) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text.replace("\x00", "")  # an environment string cannot hold NUL


def event_environment(event: HookEvent, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the event's ``RTMPD_*`` variables (see the module doc)."""
    env = dict(base)
    for key, value in event.payload.items():
        name = _NOT_NAME.sub("_", str(key).upper()).strip("_")
        if key == "event":
            name = "EVENT"
        elif key == "id":
            name = "EVENT_ID"
        if name:
            env[f"RTMPD_{name}"] = _env_value(value)
    return env


class ExecSink(Sink):
    """Runs ``spec.target`` for each event it wants (see the module doc); ``counts`` says how it went.

    ``spawn`` is ``reactor.spawnProcess`` (or a test's double); ``environ`` the base environment."""

    kind = "exec"

    def __init__(
        self,
        spec: HookSpec,
        *,
        spawn: Callable[..., Any],
        clock: IReactorTime,
        queue_size: int,
        concurrency: int,
        timeout: float,
        environ: Mapping[str, str] | None = None,
        kill: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__(spec, queue_size=queue_size, clock=clock)
        self.concurrency = concurrency
        self.timeout = timeout
        self._spawn = spawn
        self._environ = dict(os.environ if environ is None else environ)
        self._kill_options = {} if kill is None else {"kill": kill}
        self.running: set[CommandRun] = set()

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def _work(self) -> None:
        while self.queue and len(self.running) < self.concurrency and not self.stopped:
            self._run(self.queue.popleft())

    def _run(self, event: HookEvent) -> None:
        run = CommandRun(
            self.name, event.name, event.body + b"\n", self.clock, self.timeout, **self._kill_options
        )
        self.running.add(run)
        run.start(self._spawn, self.spec.target, event_environment(event, self._environ)).addCallback(
            self._ended, run, event
        )

    def _ended(self, outcome: tuple[str, str], run: CommandRun, event: HookEvent) -> None:
        self.running.discard(run)
        result, detail = outcome
        elapsed = round(self.clock.seconds() - run.started_at, 3)
        if result == "ok":
            self.counts.ok += 1
            self.log.info(
                "Hook command done", hook=self.name, event_name=event.name, pid=run.pid, seconds=elapsed
            )
        else:
            self.counts.failed += 1
            self.log.warn(
                "Hook command failed",
                hook=self.name,
                event_name=event.name,
                pid=run.pid,
                reason=detail,
                seconds=elapsed,
            )
        if not self.stopped:
            self._schedule()
        self._check_idle()

    def _abort(self) -> None:
        for run in list(self.running):
            run.abort()
