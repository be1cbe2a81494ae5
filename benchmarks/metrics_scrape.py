"""What a ``/metrics`` scrape costs, and a scraper to run beside the fan-out benchmark.

In memory (default): a ``MemoryServer`` with one publisher per stream and N
players, relaying a few GOPs, then the time of one scrape (the collectors
and the text exposition, as ``/metrics`` renders it), median of many::

    python -m benchmarks.metrics_scrape --players 100 --streams 1
    python -m benchmarks.metrics_scrape --players 1000 --streams 10 --per-stream

With the fan-out benchmark, metrics on and scraped every second, against off::

    python -m benchmarks.run --scenarios B --players 100 --servers nginx,rtmpd,rtmpd+metrics

``--url URL`` scrapes a running server every ``--interval`` seconds instead
(for ``--for`` seconds, default one hour, or until Ctrl-C), printing how many
scrapes answered.
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.error
import urllib.request


def in_memory(players: int, streams: int, per_stream: bool, rounds: int) -> None:
    from prometheus_client import generate_latest

    from rtmpd.config import ServerConfig
    from rtmpd.core.messages import MessageType
    from rtmpd.tap.metrics import metrics_registry
    from rtmpd.testing import MemoryServer

    server = MemoryServer(ServerConfig())
    registry = metrics_registry(server.service, per_stream=per_stream)
    publishers = [server.publisher(f"s{i}") for i in range(streams)]
    for i in range(players):
        server.player(f"s{i % streams}")
    for client, sid in publishers:
        for frame in range(30):
            payload = bytes([0x17 if frame == 0 else 0x27, 0x01, 0, 0, 0]) + bytes(2000)
            client.send_media(MessageType.VIDEO, sid, frame * 33, payload)
    server.flush()
    times = []
    size = 0
    for _ in range(rounds):
        start = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - start)
    ms = sorted(t * 1000 for t in times)
    print(
        f"{players} players, {streams} streams, per-stream={per_stream}: one scrape "
        f"min {ms[0]:.2f} ms, median {statistics.median(ms):.2f} ms, p90 {ms[int(rounds * 0.9)]:.2f} ms, "
        f"{size} bytes"
    )


def scrape_loop(url: str, interval: float, duration: float) -> None:
    answered = failed = 0
    end = time.monotonic() + duration
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=interval * 5) as response:
                    response.read()
                answered += 1
            except (urllib.error.URLError, OSError):
                failed += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    print(f"{answered} scrapes answered, {failed} failed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=100)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--per-stream", action="store_true")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--url", help="scrape this URL every --interval seconds instead")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--for", dest="duration", type=float, default=3600.0)
    args = parser.parse_args()
    if args.url:
        scrape_loop(args.url, args.interval, args.duration)
    else:
        in_memory(args.players, args.streams, args.per_stream, args.rounds)


if __name__ == "__main__":
    main()
