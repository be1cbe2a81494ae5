"""Process plumbing for the benchmark: CPU and memory from /proc, and children that talk in JSON lines.

CPU is the kernel's own accounting (utime + stime in /proc/PID/stat), so it
counts exactly what a process spent, whatever else runs on the machine; RSS
is VmRSS from /proc/PID/status. Every child is started here and stopped by
its PID, never by name.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from typing import Any

__all__ = ["Child", "RSSSampler", "cpu_seconds", "cpu_times", "free_port", "process_tree", "rss_bytes",
           "tree_cpu_times", "tree_rss_bytes", "wait_listening"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process has used so far. Raises OSError if it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces: the fields that matter follow its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far. Raises OSError if it is gone."""
    return sum(cpu_times(pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a parent of worker processes and its workers)."""
    pids, index = [pid], 0
    while index < len(pids):
        parent = pids[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    pids += [int(child) for child in f.read().split()]
        except OSError:  # gone meanwhile
            continue
    return pids


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its live descendants, summed. Raises OSError if
    ``pid`` is gone (a descendant that vanished meanwhile counts as 0)."""
    user, system = cpu_times(pid)
    for child in process_tree(pid)[1:]:
        try:
            child_user, child_system = cpu_times(child)
        except OSError:
            continue
        user += child_user
        system += child_system
    return user, system


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants, summed. Raises OSError if ``pid`` is gone."""
    total = rss_bytes(pid)
    for child in process_tree(pid)[1:]:
        try:
            total += rss_bytes(child)
        except OSError:
            continue
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of the process in bytes. Raises OSError if it is gone."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float, what: str) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection.

    Raises RuntimeError if ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")
        time.sleep(0.05)


class Child:
    """A child process whose stdout is JSON lines (events) and whose stdin takes commands."""

    def __init__(self, cmd: list[str], *, name: str, stderr_path: str, cwd: str | None = None) -> None:
        self.name = name
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr, text=True, bufsize=1, cwd=cwd)
        self.pid = self.process.pid
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                self._events.put({"event": "output", "line": line.rstrip("\n")})
        self._events.put(None)

    def send(self, command: str) -> None:
        """Write one command line to the child's stdin (ignored if it already exited)."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event called ``name``.

        Raises RuntimeError, with the child's stderr, if it reports an error,
        exits first or ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.name}: no {name!r} event within {timeout}s{self._stderr_tail()}")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                self._events.put(None)
                raise RuntimeError(f"{self.name} exited before {name!r}{self._stderr_tail()}")
            if event.get("event") == "error":
                raise RuntimeError(f"{self.name}: {event.get('error')}{self._stderr_tail()}")
            if event.get("event") == name:
                return event

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        try:
            with open(self.stderr_path) as f:
                tail = f.read()[-2000:]
        except OSError:
            return ""
        return f"; stderr:\n{tail}" if tail.strip() else ""

    def cpu_seconds(self) -> float:
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return 0.0

    def stop(self, timeout: float = 10.0) -> None:
        """Close stdin (the children stop on end of input), then SIGTERM, then SIGKILL, all by PID."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        self._stderr.close()


class RSSSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread, between ``start()`` and ``stop()``
    (with ``tree``: summed over the process and its descendants)."""

    def __init__(self, pid: int, interval: float = 0.5, *, tree: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self._rss = tree_rss_bytes if tree else rss_bytes
        #: (monotonic time, RSS bytes)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RSSSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic(), self._rss(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.interval):
                break

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        try:
            self.samples.append((time.monotonic(), self._rss(self.pid)))
        except OSError:
            pass
        return self.samples
