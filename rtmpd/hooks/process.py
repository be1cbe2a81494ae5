"""One run of a hook command: started in its own process group, fed the event on stdin, its output
logged line by line (bounded), killed on timeout.

The command runs as ``/bin/sh -c COMMAND`` in a new session, so that its
process id is also its process group id: a timeout signals that group
(SIGTERM, then SIGKILL after ``KILL_GRACE`` seconds), which reaches whatever
the shell started, and nothing else. Only processes this run started are
signalled: the group is signalled only while its leader has not been reaped
(after that, a SIGKILL mops up what it left behind, still in its group).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["KILL_GRACE", "MAX_LINE", "MAX_LINES", "CommandRun", "LineLimiter", "shell_argv"]

#: Seconds between SIGTERM and SIGKILL for a command past its timeout.
KILL_GRACE = 2.0
#: Characters of one output line logged; the rest of the line is cut.
MAX_LINE = 1000
#: Lines of output logged per run (stdout and stderr together); the rest are counted.
MAX_LINES = 50

# Makes the child a session (and process group) leader, then becomes the shell: the pid stays the same.
# Python ignores SIGPIPE and SIGXFSZ and the child would inherit that: shell pipelines (`yes | head`)
# expect the defaults back, as subprocess's restore_signals gives them.
_SETSID_EXEC = (
    "import os,signal as s,sys;"
    "[s.signal(n,s.SIG_DFL) for n in (s.SIGPIPE,s.SIGXFSZ)];"
    "os.setsid();os.execv(sys.argv[1],sys.argv[1:])"
)


def shell_argv(command: str) -> tuple[str, list[str]]:
    """The executable and argv that run ``command`` with ``/bin/sh -c`` in a new process group."""
    return sys.executable, [sys.executable, "-I", "-S", "-c", _SETSID_EXEC, "/bin/sh", "-c", command]


class LineLimiter:
    """Splits a byte stream into lines for ``emit(line)``, each at most ``max_line`` characters; past
    ``max_lines`` lines (shared by everyone with the same ``budget``), lines are only counted. Holds
    at most ``max_line`` bytes of an unfinished line."""

    def __init__(self, emit: Callable[[str], None], budget: list[int], max_line: int = MAX_LINE) -> None:
        self._emit = emit
        self._budget = budget
        self.max_line = max_line
        self._partial = b""
        self._cut = False  # the rest of the current line is being skipped
        self.omitted = 0

    def feed(self, data: bytes) -> None:
        while data:
            newline = data.find(b"\n")
            chunk, data = (data, b"") if newline < 0 else (data[:newline], data[newline + 1 :])
            if not self._cut:
                self._partial += chunk
                if len(self._partial) > self.max_line:
                    self._line(self._partial[: self.max_line] + b" [cut]")
                    self._partial = b""
                    self._cut = True
            if newline >= 0:
                if not self._cut:
                    self._line(self._partial)
                self._partial = b""
                self._cut = False

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        if self._budget[0] <= 0:
            self.omitted += 1
            return
        self._budget[0] -= 1
        self._emit(raw.decode("utf-8", "replace").rstrip("\r"))


class CommandRun(ProcessProtocol):
    """One run; ``done`` fires with ``(result, detail)``: ``("ok", "exit 0")``, or ``("failed", why)``
    when the command exited non-zero, was killed by a signal or on timeout. ``start`` raises nothing:
    a command that cannot start fires ``done`` with ``failed``."""

    log = Logger()

    def __init__(
        self,
        hook: str,
        event_name: str,
        stdin: bytes,
        clock: IReactorTime,
        timeout: float,
        *,
        kill: Callable[[int, int], None] = os.killpg,
    ) -> None:
        self.hook = hook
        self.event_name = event_name
        self._stdin = stdin
        self._clock = clock
        self.timeout = timeout
        self._kill = kill
        self.done: defer.Deferred = defer.Deferred()
        self.pid: int | None = None
        self.timed_out = False
        self.exit_code: int | None = None
        self._reaped = False
        self._process: Any = None
        self._timer: IDelayedCall | None = None
        self._kill_timer: IDelayedCall | None = None
        self.started_at = 0.0
        budget = [MAX_LINES]
        self._lines = {
            1: LineLimiter(lambda line: self._log_line("stdout", line), budget),
            2: LineLimiter(lambda line: self._log_line("stderr", line), budget),
        }

    def start(self, spawn: Callable[..., Any], command: str, env: Mapping[str, str]) -> defer.Deferred:
        executable, argv = shell_argv(command)
        self.started_at = self._clock.seconds()
        try:
            self._process = spawn(self, executable, argv, env=dict(env))
        except Exception as e:  # OSError (fork failed, too many files) or a bad argument
            self.log.error(
                "Hook command could not start", hook=self.hook, event_name=self.event_name, error=str(e)
            )
            self._finish(("failed", f"could not start: {e}"))
            return self.done
        self.pid = getattr(self._process, "pid", None)
        self._process.write(self._stdin)
        self._process.closeStdin()
        self._timer = self._clock.callLater(self.timeout, self._expired)
        return self.done

    def _log_line(self, stream: str, line: str) -> None:
        self.log.info(
            "Hook output: {line}",
            hook=self.hook,
            event_name=self.event_name,
            stream=stream,
            line=line,
            pid=self.pid,
        )

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        limiter = self._lines.get(childFD)
        if limiter is not None:
            limiter.feed(data)

    def _signal_group(self, sig: int) -> None:
        if self.pid is None:
            return
        try:
            self._kill(self.pid, sig)
        except ProcessLookupError:
            pass
        except OSError as e:
            self.log.warn("Could not signal hook command", hook=self.hook, pid=self.pid, error=str(e))

    def _expired(self) -> None:
        self._timer = None
        self.timed_out = True
        self.log.warn(
            "Hook command timed out; ending its process group",
            hook=self.hook,
            event_name=self.event_name,
            pid=self.pid,
            timeout=self.timeout,
        )
        if not self._reaped:
            self._signal_group(signal.SIGTERM)
            self._kill_timer = self._clock.callLater(KILL_GRACE, self._kill_now)
        else:
            # The shell is gone but something it started still holds our pipes open.
            self._kill_now()

    def _kill_now(self) -> None:
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        self._signal_group(signal.SIGKILL)
        if self._process is not None:
            # Our ends of the pipes: processEnded follows even if a stray holder survived.
            self._process.loseConnection()

    def processExited(self, reason: Failure) -> None:
        self._reaped = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        if self.timed_out:
            # Whatever the shell left behind in its group goes with it.
            self._kill_now()

    def processEnded(self, reason: Failure) -> None:
        self._reaped = True
        for limiter in self._lines.values():
            limiter.close()
        omitted = sum(limiter.omitted for limiter in self._lines.values())
        if omitted:
            self.log.info(
                "Hook output cut", hook=self.hook, event_name=self.event_name, omitted_lines=omitted
            )
        value = reason.value
        if self.timed_out:
            outcome = ("failed", f"timed out after {self.timeout:g} s")
        elif isinstance(value, error.ProcessDone):
            outcome = ("ok", "exit 0")
        elif getattr(value, "signal", None) is not None:
            outcome = ("failed", f"killed by signal {value.signal}")
        else:
            outcome = ("failed", f"exit {getattr(value, 'exitCode', '?')}")
        self._finish(outcome)

    def abort(self) -> None:
        """End the run now (shutdown): its group gets SIGKILL."""
        if not self.done.called:
            self.timed_out = True
            if not self._reaped:
                self._signal_group(signal.SIGKILL)
            self._cancel_timers()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._kill_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._kill_timer = None

    def _finish(self, outcome: tuple[str, str]) -> None:
        self._cancel_timers()
        if not self.done.called:
            self.done.callback(outcome)
