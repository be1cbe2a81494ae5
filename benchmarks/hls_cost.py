"""What 50 LL-HLS viewers of one stream cost the server, next to 50 RTMP players of the same stream.

    python -m benchmarks.hls_cost --viewers 50 --seconds 20

Starts ``twistd -n rtmpd --http ... --hls`` on loopback, publishes a 1280x720 30 fps H.264 stream at
about 3 Mb/s with AAC (ffmpeg, live), then measures the server's CPU time (utime+stime from /proc)
and RSS over three windows of ``--seconds``: the publisher alone, ``--viewers`` LL-HLS viewers, and
``--viewers`` RTMP players (``benchmarks.loadclient``). An LL-HLS viewer here does what hls.js
does at the live edge: a blocking playlist reload for the next part (``_HLS_msn``/``_HLS_part``),
then a GET of that part, over one keep-alive connection. The server runs its default part duration
unless ``--part-duration`` is given; ``--profile FILE`` records py-spy over the HLS window
(``python -m benchmarks.profile FILE`` prints it). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

from benchmarks.profile import record_command
from tests.support import ServerProcess, ffmpeg_publish

_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([0-9a-f]+)\.(\d+)\.(\d+)\.m4s"')


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Client(threading.Thread):
    """A viewer's thread: one keep-alive connection, counts of requests, errors and media bytes."""

    def __init__(self, port: int, path: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.stop_event = port, path, stop
        self.bytes = self.requests = self.errors = 0

    def get(self, conn: http.client.HTTPConnection, url: str) -> bytes:
        conn.request("GET", url)
        response = conn.getresponse()
        body = response.read()
        self.requests += 1
        if response.status != 200:
            self.errors += 1
        return body


class ClassicViewer(_Client):
    """One classic HLS viewer: reloads the playlist every target duration, fetches each new segment."""

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        seen: set[str] = set()
        while not self.stop_event.is_set():
            lines = self.get(conn, self.path + "index.m3u8").decode().splitlines()
            target = int(
                next(line for line in lines if line.startswith("#EXT-X-TARGETDURATION:")).split(":")[1]
            )
            uris = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("#EXTINF:")]
            for uri in uris[-3:] if not seen else uris:
                if uri not in seen:
                    seen.add(uri)
                    self.bytes += len(self.get(conn, self.path + uri))
            self.stop_event.wait(target)
        conn.close()


class Viewer(_Client):
    """One LL-HLS viewer at the live edge: blocking reload for the next part, then that part."""

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        playlist = self.get(conn, self.path + "index.m3u8").decode()
        while not self.stop_event.is_set():
            hint = _HINT.search(playlist)
            if hint is None:
                break
            epoch, msn, part = hint[1], int(hint[2]), int(hint[3])
            playlist = self.get(conn, f"{self.path}index.m3u8?_HLS_msn={msn}&_HLS_part={part}").decode()
            data = self.get(conn, f"{self.path}{epoch}.{msn}.{part}.m4s")
            self.bytes += len(data)
        conn.close()


def window(pid: int, seconds: float) -> dict:
    (user0, system0), wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    (user1, system1), wall = cpu_seconds(pid), time.monotonic() - wall0
    user, system = user1 - user0, system1 - system0
    return {
        "cpu_seconds": round(user + system, 2),
        "user": round(user, 2),
        "system": round(system, 2),
        "cpu_percent": round(100 * (user + system) / wall, 1),
        "rss_mb": round(rss_mb(pid), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--part-duration", help="--hls-part-duration of the server (default: the server's)")
    parser.add_argument("--classic", action="store_true", help="classic HLS viewers (segments only)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy profile of the server over the HLS window")
    args = parser.parse_args()
    total = 3 * args.seconds + 30
    parts = ("--hls-part-duration", args.part_duration) if args.part_duration else ()
    server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", "--hls", *parts, log_level="info").start()
    publisher = None
    try:
        http_port = server.port_of("HTTP server")
        pid = server.process.pid
        publisher = ffmpeg_publish(
            server.url("bench"),
            total,
            size="1280x720",
            extra=["-b:v", "3M", "-minrate", "3M", "-maxrate", "3M", "-bufsize", "1M"],
        )
        time.sleep(5)  # the encoder settles; the GOP cache fills
        result = {
            "viewers": args.viewers,
            "seconds": args.seconds,
            "hls_viewer": "classic"
            if args.classic
            else f"LL-HLS, parts of {args.part_duration or 'default'} s",
            "publisher_only": window(pid, args.seconds),
        }

        stop = threading.Event()
        kind = ClassicViewer if args.classic else Viewer
        viewers = [kind(http_port, "/hls/live/bench/", stop) for _ in range(args.viewers)]
        for v in viewers:
            v.start()
        time.sleep(3)
        before = sum(v.bytes for v in viewers)
        spy = None
        if args.profile:
            spy = subprocess.Popen(record_command(pid, args.seconds, args.profile), stdout=subprocess.DEVNULL)
        result["hls"] = window(pid, args.seconds)
        if spy is not None:
            spy.wait(30)
        result["hls"]["mbit_per_s_delivered"] = round(
            (sum(v.bytes for v in viewers) - before) * 8 / args.seconds / 1e6, 1
        )
        stop.set()
        for v in viewers:
            v.join(10)
        result["hls"]["requests"] = sum(v.requests for v in viewers)
        result["hls"]["errors"] = sum(v.errors for v in viewers)

        out = f"/tmp/hls-cost-rtmp-{os.getpid()}.json"
        players = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.loadclient",
                "--port",
                str(server.port),
                "--key",
                "bench",
                "--players",
                str(args.viewers),
                "--sample",
                "0",
                "--out",
                out,
                "--max-seconds",
                str(total),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        players.stdout.readline()  # {"event": "ready", ...}
        players.stdin.write("start\n")
        players.stdin.flush()
        result["rtmp"] = window(pid, args.seconds)
        players.stdin.write("stop\n")
        players.stdin.flush()
        players.wait(30)
        with open(out) as f:
            rtmp = json.load(f)
        os.unlink(out)
        result["rtmp"]["loadclient"] = {k: v for k, v in rtmp.items() if not isinstance(v, list)}
        print(json.dumps(result, indent=1))
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
            publisher.wait(10)
        server.stop()


if __name__ == "__main__":
    main()
