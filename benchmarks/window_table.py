"""The send-window table: fan-out results (``benchmarks.run --json``) by load client, N and server.

    python -m benchmarks.window_table RESULTS.json [MORE.json ...]

For each load client and N: every server's CPU-seconds per GB delivered and
its ratio to nginx-rtmp's in the same run, write system calls per MB
delivered (``benchmarks.syscalls``; "-" when perf could not count them) and
their ratio to nginx's, latency p50/p99 and the p99 added to rtmpd's
without a window (``rtmpd+w0``, else ``rtmpd``) in the same run, the players at real time and
the server's RSS. Several files (repeated runs) give one row per run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def rows(results: list[dict[str, Any]], run: str) -> list[str]:
    """Markdown rows of one run's fan-out results."""
    out: list[str] = []
    fanout = [r for r in results if r.get("scenario") == "B" and "cpu_s_per_gb" in r]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in fanout:
        groups.setdefault((r.get("client", "epoll"), r["players"]), []).append(r)
    for (client, players), group in sorted(groups.items()):
        by_server = {r["server"]: r for r in group}
        nginx = by_server.get("nginx", {})
        base = by_server.get("rtmpd+w0", by_server.get("rtmpd", {}))
        for r in group:
            calls = r.get("write_syscalls_per_mb")
            ratio = r["cpu_s_per_gb"] / nginx["cpu_s_per_gb"] if nginx.get("cpu_s_per_gb") else None
            call_ratio = (
                calls / nginx["write_syscalls_per_mb"]
                if calls and nginx.get("write_syscalls_per_mb")
                else None
            )
            added = (
                r["latency_p99_ms"] - base["latency_p99_ms"]
                if r["server"].startswith("rtmpd")
                and base.get("latency_p99_ms") is not None
                and r.get("latency_p99_ms") is not None
                else None
            )
            out.append(
                f"| {run} | {client} | {players} | {r['server']} | {_fmt(r['cpu_s_per_gb'], '.2f')} | "
                f"{_fmt(ratio, '.2f')}x | {_fmt(calls, '.0f')} | {_fmt(call_ratio, '.2f')}x | "
                f"{_fmt(r.get('latency_p50_ms'), '.1f')} / {_fmt(r.get('latency_p99_ms'), '.1f')} | "
                f"{_fmt(added, '+.1f')} | {r.get('realtime_players', '-')}/{r.get('normal_players', '-')} | "
                f"{_fmt(r.get('rss_mb'), '.1f')} |"
            )
    return out


HEADER = (
    "| run | client | N | server | CPU-s per GB | vs nginx | write calls per MB | vs nginx | "
    "latency p50 / p99 ms | p99 added vs no window | real time | RSS MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by benchmarks.run --json")
    args = parser.parse_args(argv)
    print(HEADER)
    for index, path in enumerate(args.results, 1):
        with open(path) as f:
            data = json.load(f)
        for row in rows(data["results"], str(index)):
            print(row)


if __name__ == "__main__":
    main()
