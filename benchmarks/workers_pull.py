"""The cost of one internal pull between two workers: ``python -m benchmarks.workers_pull``.

With ``rtmpd --workers 2`` a key published on one worker (its origin) and
played on the other is carried by one internal pull: the origin sends the
stream once more, over loopback, and the other worker reads, parses and
republishes it for its players. This measures it directly, on one server:

1. one real-time publisher (it lands on one worker, the origin);
2. window *local*: one player on the origin (no pull);
3. window *pulled*: one player on the other worker (one internal pull).

A player is placed by trying: each new player lands where the kernel puts it
(the server logs at info level, which says on which worker the publisher and
each player landed); one that lands on the wrong worker is closed, and the
pull of a pulled window is closed (``--pull-idle 1``) before the next window. The server's CPU is
summed over the parent and both workers; the difference between the two
windows is the pull (the origin's extra send and the other worker's receive
and republish; the player costs the same on either worker). Everything
listens on 127.0.0.1 and every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from benchmarks.media import DEFAULT_SECONDS, ensure_media
from benchmarks.procs import Child, free_port, tree_cpu_times
from benchmarks.servers import RtmpdServer

_GB = 1e9


def _server_events(server: RtmpdServer, start: int) -> list[dict[str, Any]]:
    events = []
    with open(server.log_path) as f:
        for line in f.readlines()[start:]:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _log_lines(server: RtmpdServer) -> int:
    with open(server.log_path) as f:
        return sum(1 for _ in f)


def _wait_event(server: RtmpdServer, start: int, predicate, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in _server_events(server, start):
            if predicate(event):
                return event
        time.sleep(0.2)
    raise RuntimeError(f"no matching server log line within {timeout} s")


def _player(port: int, workdir: str, name: str) -> Child:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadclient",
        "--port",
        str(port),
        "--players",
        "1",
        "--sample",
        "0",
        "--ready-timeout",
        "30",
        "--max-seconds",
        "600",
        "--out",
        os.path.join(workdir, f"{name}.json"),
    ]
    return Child(cmd, name=name, stderr_path=os.path.join(workdir, f"{name}.err"), cwd=_repo_root())


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _place_player(server: RtmpdServer, port: int, workdir: str, origin: int, want_pull: bool) -> Child:
    """A playing player on the origin worker (``want_pull`` False) or on the other worker (True)."""
    for attempt in range(16):
        mark = _log_lines(server)
        player = _player(port, workdir, f"player-{want_pull}-{attempt}")
        player.wait_event("ready", 40)
        play = _wait_event(server, mark, lambda e: e.get("msg") == "play command", 10)
        if (play["worker"] != origin) == want_pull:
            return player
        player.stop()
    raise RuntimeError("no player landed where wanted in 16 tries")


def _window(server: RtmpdServer, seconds: float) -> float:
    user0, sys0 = tree_cpu_times(server.pid)
    time.sleep(seconds)
    user1, sys1 = tree_cpu_times(server.pid)
    return (user1 - user0) + (sys1 - sys0)


def measure(workdir: str, media: str, seconds: float, repeats: int) -> dict[str, Any]:
    # An idle pull closes 1 s after its last player left, so that it does not run into the next window.
    args = ["--workers", "2", "--log-level", "info", "--pull-idle", "1"]
    server = RtmpdServer(os.path.join(workdir, "server"), args, name="rtmpd+p2")
    port = free_port()
    result: dict[str, Any] = {"window_s": seconds, "local_cpu_s": [], "pulled_cpu_s": []}
    publisher = None
    players: list[Child] = []
    try:
        server.start(port)
        _wait_event(server, 0, lambda e: e.get("msg") == "Directory link up" and e.get("worker") == 2, 30)
        _wait_event(server, 0, lambda e: e.get("msg") == "Directory link up" and e.get("worker") == 1, 30)
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.publisher",
            "--port",
            str(port),
            "--media",
            media,
            "--mode",
            "realtime",
            "--log",
            os.path.join(workdir, "sends.json"),
            "--max-seconds",
            "900",
        ]
        publisher = Child(
            cmd, name="publisher", stderr_path=os.path.join(workdir, "publisher.err"), cwd=_repo_root()
        )
        ready = publisher.wait_event("ready", 30)
        result["payload_rate"] = ready["payload_rate"]
        origin = _wait_event(server, 0, lambda e: e.get("msg") == "publish command", 10)["worker"]
        for _ in range(repeats):
            for want_pull in (False, True):
                mark = _log_lines(server)
                player = _place_player(server, port, workdir, origin, want_pull)
                players.append(player)
                time.sleep(3)  # the late-join burst and the pull's start are not measured
                cpu = _window(server, seconds)
                result["pulled_cpu_s" if want_pull else "local_cpu_s"].append(cpu)
                player.stop()
                players.remove(player)
                if want_pull:
                    _wait_event(server, mark, lambda e: e.get("msg") == "Pull upstream closed", 30)
    finally:
        for child in [*players, *([publisher] if publisher else [])]:
            child.stop()
        server.stop()
    local = sum(result["local_cpu_s"]) / len(result["local_cpu_s"])
    pulled = sum(result["pulled_cpu_s"]) / len(result["pulled_cpu_s"])
    result.update(
        pull_core_share=(pulled - local) / seconds,
        pull_cpu_s_per_gb=(pulled - local) / (result["payload_rate"] * seconds / _GB),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers_pull", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each window (20)")
    parser.add_argument("--repeats", type=int, default=2, help="local/pulled window pairs (2)")
    parser.add_argument("--media", help="FLV file to publish instead of the generated test stream")
    parser.add_argument("--workdir", help="keep logs here (default: a temporary directory, removed)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    media = args.media or ensure_media(DEFAULT_SECONDS)
    workdir = args.workdir or tempfile.mkdtemp(prefix="rtmpd-pull-")
    try:
        result = measure(workdir, media, args.seconds, args.repeats)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(
        f"server CPU-s per {args.seconds:g} s window, one player on the origin: "
        f"{', '.join(f'{c:.2f}' for c in result['local_cpu_s'])}"
    )
    print(
        f"server CPU-s per {args.seconds:g} s window, one player on the other worker (one internal pull): "
        f"{', '.join(f'{c:.2f}' for c in result['pulled_cpu_s'])}"
    )
    print(
        f"internal pull: {result['pull_core_share'] * 100:.1f}% of a core per key, "
        f"{result['pull_cpu_s_per_gb']:.1f} CPU-s per GB of the stream"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
