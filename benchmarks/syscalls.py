"""How many write system calls a server makes during a window, counted by ``perf stat`` on kernel tracepoints.

CPU-seconds are noisy on a shared machine; the number of ``sendmsg``/
``writev``/``write``/``sendto`` calls a server makes per byte delivered is
not, and it is what a send window changes. ``SyscallCounter(pid).start()``
attaches ``perf stat`` to the server; ``stop()`` detaches it (SIGINT) and
returns the counts by call, or None when perf or the syscall tracepoints
are not available (the figures are then left out, never guessed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

#: The calls a server writes to sockets with (rtmpd: sendmsg and write; nginx: writev and sendmsg).
CALLS = ("sendmsg", "writev", "write", "sendto")


class SyscallCounter:
    """Counts one process's write system calls between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process: subprocess.Popen | None = None
        self._out = ""

    def start(self) -> SyscallCounter:
        perf = shutil.which("perf")
        if perf is None:
            return self
        fd, self._out = tempfile.mkstemp(prefix="rtmpd-bench-perf-", suffix=".csv")
        os.close(fd)
        events = ",".join(f"syscalls:sys_enter_{call}" for call in CALLS)
        self._process = subprocess.Popen(
            [perf, "stat", "-x", ",", "-o", self._out, "-e", events, "-p", str(self.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> dict[str, int] | None:
        process = self._process
        if process is None:
            return None
        try:
            process.send_signal(signal.SIGINT)
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        try:
            with open(self._out) as f:
                return _parse(f.read())
        finally:
            os.unlink(self._out)

    def __repr__(self) -> str:
        return f"SyscallCounter(pid={self.pid})"


def _parse(text: str) -> dict[str, int] | None:
    """``perf stat -x ,`` lines: ``count,unit,event,...``; None unless every call was counted."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[2].startswith("syscalls:sys_enter_"):
            continue
        if not fields[0].isdigit():
            return None  # "<not supported>" or "<not counted>"
        counts[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
    return counts if set(counts) == set(CALLS) else None
