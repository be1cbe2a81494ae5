"""Supervision of a host's worker processes: start N, restart the dead, stop them all cleanly.

``WorkerSupervisor`` owns the policy and none of the mechanics: ``spawn``
starts worker ``i`` with a process protocol and returns its process
transport, ``clock`` schedules restarts, and ``on_death`` is told the id of
a worker as soon as it is gone (the parent drops that worker's claims then,
so its publishers can publish again at once, through a new worker).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["WorkerSupervisor", "restart_delay"]

#: A worker that lived this many seconds was healthy: its death restarts it at once.
STABLE_UPTIME = 10.0
#: Delay before restarting a worker that died young, doubled per further young death, at most MAX_DELAY.
FIRST_DELAY = 0.25
MAX_DELAY = 30.0
#: Seconds workers get to finish (finalise recordings) after SIGTERM before SIGKILL.
STOP_TIMEOUT = 30.0


def restart_delay(young_deaths: int) -> float:
    """Seconds before a restart after ``young_deaths`` deaths in a row within STABLE_UPTIME of a start."""
    if young_deaths <= 0:
        return 0.0
    return min(FIRST_DELAY * 2 ** (young_deaths - 1), MAX_DELAY)


@dataclass
class _Worker:
    worker_id: int
    process: IProcessTransport | None = None
    #: Kept apart: a process transport forgets its pid once the process ended.
    pid: int | None = None
    started: float = 0.0
    young_deaths: int = 0
    restart: IDelayedCall | None = None
    ended: Deferred | None = field(default=None, repr=False)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, worker: _Worker) -> None:
        self.supervisor = supervisor
        self.worker = worker

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self.worker, reason)


class WorkerSupervisor:
    """Keeps ``count`` workers (ids 1..count) running until ``stop``.

    A worker that dies is restarted after ``restart_delay`` (at once after a
    healthy run); ``stop`` sends SIGTERM to every worker and answers a
    Deferred that fires once all have exited (SIGKILL after ``stop_timeout``).
    """

    log = Logger()

    def __init__(
        self,
        count: int,
        spawn: Callable[[int, ProcessProtocol], IProcessTransport],
        clock: IReactorTime,
        on_death: Callable[[int], Any] = lambda worker_id: None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.workers = {i: _Worker(i) for i in range(1, count + 1)}
        self._spawn = spawn
        self._clock = clock
        self._on_death = on_death
        self._stop_timeout = stop_timeout
        self.stopping = False
        self.restarts = 0

    def start(self) -> None:
        for worker in self.workers.values():
            self._start(worker)

    def pids(self) -> dict[int, int | None]:
        """The pid of each worker now (None while it is down)."""
        return {i: w.pid for i, w in self.workers.items()}

    def _start(self, worker: _Worker) -> None:
        worker.restart = None
        worker.started = self._clock.seconds()
        worker.ended = Deferred()
        worker.process = self._spawn(worker.worker_id, _WorkerProtocol(self, worker))
        worker.pid = worker.process.pid
        self.log.info("Worker started", worker=worker.worker_id, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid, worker.pid, worker.process = worker.pid, None, None
        status = reason.value
        fields = {"exit_code": getattr(status, "exitCode", None), "signal": getattr(status, "signal", None)}
        try:
            self._on_death(worker.worker_id)
        except Exception:
            self.log.failure("Releasing a dead worker's claims failed", worker=worker.worker_id)
        ended, worker.ended = worker.ended, None
        if self.stopping:
            self.log.info("Worker stopped", worker=worker.worker_id, pid=pid, **fields)
        else:
            uptime = self._clock.seconds() - worker.started
            worker.young_deaths = worker.young_deaths + 1 if uptime < STABLE_UPTIME else 0
            delay = restart_delay(worker.young_deaths)
            self.log.warn(
                "Worker died; restarting it",
                worker=worker.worker_id,
                pid=pid,
                uptime=round(uptime, 3),
                delay=delay,
                **fields,
            )
            self.restarts += 1
            worker.restart = self._clock.callLater(delay, self._start, worker)
        if ended is not None:
            ended.callback(None)

    def stop(self) -> Deferred[None]:
        """SIGTERM every worker (no more restarts); fires once all exited."""
        self.stopping = True
        waiting = []
        for worker in self.workers.values():
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
                worker.restart = None
            if worker.process is not None and worker.ended is not None:
                waiting.append(worker.ended)
                self._signal(worker, signal.SIGTERM)
        if not waiting:
            return succeed(None)
        killer = self._clock.callLater(self._stop_timeout, self._kill_remaining)
        done = gatherResults(waiting)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()

        return done.addCallback(finished)

    def _kill_remaining(self) -> None:
        for worker in self.workers.values():
            if worker.process is not None:
                self.log.warn("Worker did not stop in time; killing it", worker=worker.worker_id)
                self._signal(worker, signal.SIGKILL)

    def _signal(self, worker: _Worker, signum: int) -> None:
        try:
            worker.process.signalProcess(signum)
        except Exception as e:  # ProcessExitedAlready: its processEnded is on the way
            self.log.debug("Worker not signalled", worker=worker.worker_id, reason=repr(e))
