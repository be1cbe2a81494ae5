"""Helpers for tests that run the real server (twistd) and real clients (ffmpeg, rtmpdump, GStreamer).

Waiting is always on an event (a log line, a process exit), bounded by a
timeout; never a bare sleep. In CI (``CI=true``) a missing tool fails the
test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SkipTest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(tool: str) -> str:
    """The path of ``tool``; skip the test if it is missing, or fail in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (scripts/install-test-deps installs it)"
        if IN_CI:
            raise AssertionError(message)
        raise SkipTest(message)
    return path


def twistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.path.exists(beside) else require("twistd")


def gst_require(*elements: str) -> str:
    """gst-launch-1.0's path, after checking that each element exists (skip or fail as ``require``)."""
    launch = require("gst-launch-1.0")
    inspect = require("gst-inspect-1.0")
    for element in elements:
        if subprocess.run([inspect, "--exists", element], capture_output=True).returncode != 0:
            message = f"GStreamer element {element} is not installed"
            if IN_CI:
                raise AssertionError(message)
            raise SkipTest(message)
    return launch


class ServerProcess:
    """``twistd -n rtmpd`` on a free loopback port, its JSON log lines collected as dicts."""

    def __init__(self, *args: str, cwd: str | None = None, log_level: str = "debug") -> None:
        self.args = list(args)
        self.cwd = cwd
        self.log_level = log_level
        self.events: list[dict[str, Any]] = []
        self.output: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cmd = [
            twistd(),
            "-n",
            "--pidfile=",
            "rtmpd",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--log-format",
            "json",
            "--log-level",
            self.log_level,
            *self.args,
        ]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.cwd, text=True, bufsize=1
        )
        threading.Thread(target=self._read, daemon=True).start()
        try:
            listening = self.wait_for(lambda e: e.get("msg") == "RTMP server listening", timeout)
        except BaseException:
            self.kill()
            raise
        self.port = int(listening["addr"].rsplit(":", 1)[1])
        return self

    def port_of(self, what: str, timeout: float = 20.0) -> int:
        """The port of the listener logged as ``{what} listening`` (``"HTTP server"``, ``"Manhole"``)."""
        event = self.wait_for(lambda e: e.get("msg") == f"{what} listening", timeout)
        return int(event["addr"].rsplit(":", 1)[1])

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.output.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"msg": line.rstrip("\n"), "level": "raw"}
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0, start: int = 0
    ) -> dict[str, Any]:
        """The first log event (from index ``start``) matching ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching log event within {timeout}s; log tail:\n" + "".join(self.output[-40:])
                    )
                self._changed.wait(min(remaining, 0.5))

    def wait_for_msg(self, msg: str, timeout: float = 20.0, start: int = 0, **fields: Any) -> dict[str, Any]:
        return self.wait_for(
            lambda e: e.get("msg") == msg and all(e.get(k) == v for k, v in fields.items()), timeout, start
        )

    def messages(self, msg: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e.get("msg") == msg]

    def url(self, key: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key}"

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def errors(self) -> list[dict[str, Any]]:
        """Log events at error level or above, and tracebacks."""
        with self._changed:
            return [e for e in self.events if e.get("level") in ("error", "critical") or "traceback" in e]


def ffmpeg_publish(
    url: str,
    seconds: float,
    *,
    size: str = "640x360",
    rate: int = 30,
    gop_seconds: int = 2,
    realtime: bool = True,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    """ffmpeg publishing testsrc (H.264) + sine (AAC) to ``url``."""
    ffmpeg = require("ffmpeg")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
    if realtime:
        cmd.append("-re")
    cmd += [
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        str(rate * gop_seconds),
        "-keyint_min",
        str(rate * gop_seconds),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        *(extra or []),
        "-f",
        "flv",
        url,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ffprobe_streams(target: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """ffprobe's view of the streams of a URL or file."""
    ffprobe = require("ffprobe")
    result = run([ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", target], timeout)
    if result.returncode != 0:
        raise AssertionError(f"ffprobe {target} failed: {result.stderr}")
    return json.loads(result.stdout)["streams"]
