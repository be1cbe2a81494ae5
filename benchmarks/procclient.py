"""A load client of real player processes: N ``ffmpeg`` or ``rtmpdump`` players, for small N.

Each player process plays the stream and writes what it received to its
stdout (ffmpeg: ``-c copy -f flv pipe:1``; rtmpdump: ``--live -o -``), and a
thread here counts those bytes. FLV tags carry the same audio/video payloads
as the RTMP messages, with a few bytes less framing, so the counts are a
fair measure of what each player received. A player is *playing* once it has
written more than its FLV header and codec configuration (64 KiB).

The protocol with ``benchmarks.run`` is ``benchmarks.loadclient``'s: ``ready``,
then ``start``/``stop`` on stdin, the results in ``--out``, ``done``.
The players' CPU (read from /proc) is reported as the load client's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time

from benchmarks.procs import cpu_seconds

#: Bytes a player must have written before it counts as playing.
_PLAYING_BYTES = 64 * 1024


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def player_command(kind: str, url: str) -> list[str]:
    """The command of one ``kind`` ("ffmpeg" or "rtmpdump") player of ``url``, writing FLV to stdout."""
    tool = shutil.which(kind)
    if tool is None:
        raise RuntimeError(f"{kind} is not installed")
    if kind == "ffmpeg":
        return [tool, "-nostdin", "-loglevel", "error", "-i", url, "-c", "copy", "-f", "flv", "pipe:1"]
    if kind == "rtmpdump":
        return [tool, "--quiet", "--live", "-r", url, "-o", "-"]
    raise ValueError(f"unknown player kind {kind!r}: ffmpeg or rtmpdump")


class ProcessPlayer:
    """One player process and the thread counting its output."""

    def __init__(self, index: int, command: list[str], window: dict) -> None:
        self.index = index
        self.window = window
        self.bytes = self.window_bytes = 0
        self.ready_at = 0.0
        self.error = ""
        self.playing = threading.Event()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._count, name=f"player {index}", daemon=True)
        self.thread.start()

    def _count(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            data = stdout.read1(65536)
            if not data:
                break
            self.bytes += len(data)
            if "start" in self.window and "stop" not in self.window:
                self.window_bytes += len(data)
            if self.bytes >= _PLAYING_BYTES and not self.playing.is_set():
                self.ready_at = time.monotonic()
                self.playing.set()
        if "stop" not in self.window:
            err = self.process.stderr
            stderr = err.read().decode(errors="replace").strip() if err is not None else ""
            last = stderr.splitlines()[-1] if stderr else f"status {self.process.poll()}"
            self.error = f"player exited: {last}"[:200]
        self.playing.set()

    def cpu(self) -> float:
        try:
            return cpu_seconds(self.process.pid)
        except OSError:
            return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N real player processes (ffmpeg or rtmpdump).")
    parser.add_argument("--kind", choices=("ffmpeg", "rtmpdump"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="live")
    parser.add_argument("--key", default="bench")
    parser.add_argument("--players", type=int, required=True)
    parser.add_argument("--sample", type=int, default=0, help="ignored: real players are not sampled")
    parser.add_argument("--stalled", type=int, default=0, help="not supported here: must be 0")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this long")
    parser.add_argument("--out", required=True, help="results file (JSON)")
    args = parser.parse_args(argv)
    if args.stalled:
        parser.error("--stalled is only supported by benchmarks.loadclient")
    url = f"rtmp://{args.host}:{args.port}/{args.app}/{args.key}"
    command = player_command(args.kind, url)
    window: dict = {}
    players = [ProcessPlayer(i, command, window) for i in range(args.players)]
    timer = threading.Timer(args.max_seconds, lambda: [p.stop() for p in players])
    timer.daemon = True
    timer.start()
    try:
        deadline = time.monotonic() + args.ready_timeout
        for player in players:
            player.playing.wait(max(0.0, deadline - time.monotonic()))
        _emit(event="ready", playing=sum(1 for p in players if p.ready_at and not p.error),
              failed=sum(1 for p in players if p.error))
        for line in sys.stdin:
            command_line = line.strip()
            if command_line == "start":
                window["cpu_start"] = sum(p.cpu() for p in players)
                window["start"] = time.monotonic()
            elif command_line == "stop":
                window["stop"] = time.monotonic()
                window["cpu_stop"] = sum(p.cpu() for p in players)
                break
    finally:
        window.setdefault("stop", time.monotonic())
        for player in players:
            player.stop()
    result = {
        "players": len(players),
        "playing": sum(1 for p in players if p.ready_at and not p.error),
        "failed": sum(1 for p in players if p.error),
        "window": [window.get("start", 0.0), window["stop"]],
        "cpu_seconds": window.get("cpu_stop", 0.0) - window.get("cpu_start", 0.0),
        "per_player": [
            {"index": p.index, "bytes": p.window_bytes, "sampled": False, "stalled": False, "error": p.error,
             "ready_at": p.ready_at, "log": []}
            for p in players
        ],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    _emit(event="done", out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
