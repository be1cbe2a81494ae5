"""A load client of N Low-Latency HLS viewers, one thread and one keep-alive HTTP connection each.

Each viewer behaves as hls.js does in low-latency mode: it loads
``/hls/APP/KEY/index.m3u8``, fetches the init segment (``EXT-X-MAP``), then
asks for the next part with a blocking playlist reload
(``_HLS_msn``/``_HLS_part``) and fetches every part it has not fetched yet,
so it receives each part once, as soon as it exists. A viewer is *playing*
once it has fetched the init segment and one part.

Protocol with ``benchmarks.run`` (one JSON object per stdout line), as
``benchmarks.loadclient``: ``{"event": "ready"}`` once every viewer plays (or
``--ready-timeout`` passed); ``start`` on stdin opens the measurement window,
``stop`` closes it, writes the results to ``--out`` and exits. It exits by
itself after ``--max-seconds``.

Run alone: ``python -m benchmarks.hlsclient --port 8080 --key bench --viewers 50 --out r.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

#: Seconds a blocking playlist reload may take before the viewer asks again.
_BLOCK_TIMEOUT = 10.0


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _attributes(text: str) -> dict[str, str]:
    """``A=1,URI="x,y",B=YES`` → {"A": "1", "URI": "x,y", "B": "YES"}."""
    out: dict[str, str] = {}
    key, value, quoted, reading_key = "", "", False, True
    for ch in text + ",":
        if reading_key:
            if ch == "=":
                reading_key = False
            else:
                key += ch
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out[key.strip()] = value
            key, value, reading_key = "", "", True
        else:
            value += ch
    return out


@dataclass
class Playlist:
    """What a viewer needs of a media playlist: the init URI, and every part by (msn, index)."""

    init_uri: str = ""
    parts: dict[tuple[int, int], str] = field(default_factory=dict)
    #: Media sequence numbers of the segments that are complete (have an EXTINF).
    complete: set[int] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str) -> Playlist:
        playlist = cls()
        msn, index = 0, 0
        for line in text.splitlines():
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                msn = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MAP:"):
                playlist.init_uri = _attributes(line.split(":", 1)[1])["URI"]
            elif line.startswith("#EXT-X-PART:"):
                playlist.parts[(msn, index)] = _attributes(line.split(":", 1)[1])["URI"]
                index += 1
            elif line and not line.startswith("#"):
                playlist.complete.add(msn)
                msn, index = msn + 1, 0
        return playlist

    def next_after(self, part: tuple[int, int]) -> tuple[int, int]:
        msn, index = part
        if msn in self.complete and (msn, index + 1) not in self.parts:
            return (msn + 1, 0)
        return (msn, index + 1)


class Viewer:
    """One LL-HLS viewer on its own thread."""

    def __init__(
        self, index: int, host: str, port: int, path: str, window: dict, stop: threading.Event
    ) -> None:
        self.index = index
        self.host, self.port, self.path = host, port, path
        self.window = window
        self.stop = stop
        self.bytes = self.window_bytes = self.parts = self.requests = 0
        self.error = ""
        self.ready_at = 0.0
        self.playing = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"viewer {index}", daemon=True)

    def _get(self, conn: http.client.HTTPConnection, target: str) -> bytes:
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        self.requests += 1
        if response.status != 200:
            raise RuntimeError(f"GET {target}: HTTP {response.status}")
        return body

    def _count(self, size: int) -> None:
        self.bytes += size
        if "start" in self.window and "stop" not in self.window:
            self.window_bytes += size

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=_BLOCK_TIMEOUT + 5)
        base = self.path
        try:
            playlist = Playlist.parse(self._get(conn, base).decode())
            if not playlist.parts:
                raise RuntimeError("the playlist has no parts (not low-latency HLS)")
            init = self._get(conn, urllib.parse.urljoin(base, playlist.init_uri))
            self._count(len(init))
            wanted = max(playlist.parts)
            while not self.stop.is_set():
                fetched_any = False
                while wanted in playlist.parts:
                    body = self._get(conn, urllib.parse.urljoin(base, playlist.parts[wanted]))
                    self._count(len(body))
                    self.parts += 1
                    fetched_any = True
                    wanted = playlist.next_after(wanted)
                if fetched_any and not self.playing.is_set():
                    self.ready_at = time.monotonic()
                    self.playing.set()
                query = urllib.parse.urlencode({"_HLS_msn": wanted[0], "_HLS_part": wanted[1]})
                separator = "&" if "?" in base else "?"
                playlist = Playlist.parse(self._get(conn, f"{base}{separator}{query}").decode())
        except Exception as e:  # one viewer's failure is a result, not a crash of the load client
            self.error = f"{type(e).__name__}: {e}"[:200]
            self.playing.set()
        finally:
            conn.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N low-latency HLS viewers, one thread each.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the server's HTTP port")
    parser.add_argument("--app", default="live")
    parser.add_argument("--key", default="bench")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this long")
    parser.add_argument("--out", required=True, help="results file (JSON)")
    args = parser.parse_args(argv)
    window: dict = {}
    stop = threading.Event()
    path = f"/hls/{args.app}/{args.key}/index.m3u8"
    viewers = [Viewer(i, args.host, args.port, path, window, stop) for i in range(args.viewers)]
    for viewer in viewers:
        viewer.thread.start()
    deadline = time.monotonic() + args.ready_timeout
    for viewer in viewers:
        viewer.playing.wait(max(0.0, deadline - time.monotonic()))
    _emit(event="ready", playing=sum(1 for v in viewers if v.playing.is_set() and not v.error),
          failed=sum(1 for v in viewers if v.error))
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    for line in sys.stdin:
        command = line.strip()
        if command == "start":
            window["cpu_start"] = _cpu_seconds()
            window["start"] = time.monotonic()
        elif command == "stop":
            window["stop"] = time.monotonic()
            window["cpu_stop"] = _cpu_seconds()
            break
    stop.set()
    result = {
        "players": len(viewers),
        "playing": sum(1 for v in viewers if v.ready_at and not v.error),
        "failed": sum(1 for v in viewers if v.error),
        "window": [window.get("start", 0.0), window.get("stop", 0.0)],
        "cpu_seconds": window.get("cpu_stop", 0.0) - window.get("cpu_start", 0.0),
        "per_player": [
            {"index": v.index, "bytes": v.window_bytes, "sampled": False, "stalled": False, "error": v.error,
             "ready_at": v.ready_at, "parts": v.parts, "requests": v.requests, "log": []}
            for v in viewers
        ],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    _emit(event="done", out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
