"""Markdown tables from the benchmark's results (the dicts that ``benchmarks.scenarios`` returns).

Every ratio is "this server / nginx" measured in the same run; a result that
failed shows its error in place of figures.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["render"]

REFERENCE = "nginx"
#: A process using at least this share of one core is the bottleneck of its measurement.
SATURATED = 0.9


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _pct(share: Any) -> str:
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "–"
    return f"{share * 100:.0f}%"


def _ratio(value: Any, reference: Any) -> str:
    if not value or not reference or any(isinstance(v, float) and math.isnan(v) for v in (value, reference)):
        return ""
    return f"{value / reference:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _reference(results: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in results:
        if r["server"] == REFERENCE and "error" not in r and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _error_row(r: dict[str, Any], lead: list[str], width: int) -> list[str]:
    return lead + [f"**failed**: {r['error']}"] + [""] * (width - len(lead) - 1)


def _ingest(results: list[dict[str, Any]]) -> list[str]:
    header = ["publisher", "recording", "server", "MB/s", "vs nginx", "CPU-s per GB", "vs nginx",
              "server CPU (sys)", "publisher CPU", "recorded / ingested"]
    rows = []
    for r in results:
        pace = f"paced {r['rate_mb']:g} MB/s" if r["rate_mb"] else "flat out"
        lead = [pace, "on" if r["record"] else "off", r["server"]]
        if "error" in r:
            rows.append(_error_row(r, lead, len(header)))
            continue
        ref = _reference(results, record=r["record"], rate_mb=r["rate_mb"])
        is_ref = r["server"] == REFERENCE
        mb_per_s = _num(r["mb_per_s"], 1)
        if r["publisher_cpu_share"] >= SATURATED and not r["rate_mb"]:
            mb_per_s += " (publisher-bound)"
        rows.append(lead + [
            mb_per_s, "" if is_ref else _ratio(r["mb_per_s"], ref and ref["mb_per_s"]),
            _num(r["cpu_s_per_gb"]), "" if is_ref else _ratio(r["cpu_s_per_gb"], ref and ref["cpu_s_per_gb"]),
            f"{_pct(r['server_cpu_share'])} ({_pct(r['server_sys_share'])})", _pct(r["publisher_cpu_share"]),
            _num(r["recorded_share"], 2) if r["record"] else "–",
        ])
    return _table(header, rows)


def _fanout(results: list[dict[str, Any]]) -> list[str]:
    modes = {r.get("client", "epoll") for r in results}
    header = ["N", *(["client"] if len(modes) > 1 else []), "server", "CPU-s per GB", "vs nginx",
              "server CPU (sys)", "RSS MB", "rate min / median", "real time", "latency p50 / p99 ms",
              "clients' CPU"]
    rows = []
    ordered = sorted(results, key=lambda r: (r["players"], r.get("client", "epoll")))
    for r in ordered if len(modes) > 1 else results:
        mode = r.get("client", "epoll")
        lead = [str(r["players"]), *([mode] if len(modes) > 1 else []), r["server"]]
        if "error" in r:
            rows.append(_error_row(r, lead, len(header)))
            continue
        ref = _reference(results, players=r["players"], client=mode)
        is_ref = r["server"] == REFERENCE
        realtime = f"{r['realtime_players']}/{r['normal_players']}"
        if r["failed_players"]:
            realtime += f" ({r['failed_players']} failed)"
        clients = f"{_pct(r['client_cpu_share'])} ({r['client_workers']} proc)"
        if r["client_cpu_share"] >= SATURATED * r["client_workers"]:
            clients += " saturated"
        rows.append(lead + [
            _num(r["cpu_s_per_gb"]), "" if is_ref else _ratio(r["cpu_s_per_gb"], ref and ref["cpu_s_per_gb"]),
            f"{_pct(r['server_cpu_share'])} ({_pct(r['server_sys_share'])})", _num(r["rss_mb"], 1),
            f"{_num(r['rate_share_min'], 3)} / {_num(r['rate_share_median'], 3)}", realtime,
            f"{_num(r['latency_p50_ms'], 1)} / {_num(r['latency_p99_ms'], 1)}", clients,
        ])
    return _table(header, rows)


def _latency(results: list[dict[str, Any]]) -> list[str]:
    header = ["N", "server", "p50 ms", "p99 ms", "vs nginx (p99)", "max ms", "messages timed", "clients' CPU"]
    rows = []
    for r in results:
        lead = [str(r["players"]), r["server"]]
        if "error" in r:
            rows.append(_error_row(r, lead, len(header)))
            continue
        ref = _reference(results, players=r["players"])
        is_ref = r["server"] == REFERENCE
        rows.append(lead + [
            _num(r["latency_p50_ms"]), _num(r["latency_p99_ms"]),
            "" if is_ref else _ratio(r["latency_p99_ms"], ref and ref["latency_p99_ms"]),
            _num(r["latency_max_ms"], 1), str(r["latency_samples"]), _pct(r["client_cpu_share"]),
        ])
    return _table(header, rows)


def _slow(results: list[dict[str, Any]]) -> list[str]:
    header = ["server", "normal players' rate min / median", "real time", "RSS start → end MB", "RSS max MB",
              "RSS growth MB", "server CPU", "stalled player at the end"]
    rows = []
    for r in results:
        lead = [r["server"]]
        if "error" in r:
            rows.append(_error_row(r, lead, len(header)))
            continue
        rows.append(lead + [
            f"{_num(r['rate_share_min'], 3)} / {_num(r['rate_share_median'], 3)}",
            f"{r['realtime_players']}/{r['normal_players']}",
            f"{_num(r['rss_start_mb'], 1)} → {_num(r['rss_mb'], 1)}", _num(r["rss_max_mb"], 1),
            _num(r["rss_mb"] - r["rss_start_mb"], 1), _pct(r["server_cpu_share"]),
            ", ".join("still connected" if s == "established" else f"dropped by the server ({s})"
                      for s in r.get("stalled_states", [])),
        ])
    return _table(header, rows)


def _push(pushes: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    header = ["destinations", "server", "server CPU (sys)", "CPU-s per GB", "sink rate", "RSS MB",
              "same N of local players: server CPU", "push / players"]
    rows = []
    for r in pushes:
        lead = [str(r["players"]), r["server"]]
        if "error" in r:
            rows.append(_error_row(r, lead, len(header)))
            continue
        local = next((b for b in results if b["scenario"] == "B" and b["server"] == r["server"]
                      and b["players"] == r["players"] and "error" not in b), None)
        rows.append(lead + [
            f"{_pct(r['server_cpu_share'])} ({_pct(r['server_sys_share'])})", _num(r["cpu_s_per_gb"]),
            _num(r["sink_rate_share"], 3), _num(r["rss_mb"], 1),
            _pct(local["server_cpu_share"]) if local else "–",
            _ratio(r["server_cpu_share"], local and local["server_cpu_share"]) if local else "–",
        ])
    return _table(header, rows)


def render(results: list[dict[str, Any]], preamble: list[str] | None = None) -> str:
    """The whole report: ``preamble`` lines, then one table per scenario that has results."""
    lines = list(preamble or [])
    sections = [
        ("A", "A. Ingest: one publisher, flat out or paced", _ingest,
         "MB/s of RTMP bytes taken from the publisher; CPU-s per GB = server CPU-seconds (user+sys) per GB "
         "ingested. Server CPU is the share of one core used during the window (system time in "
         "parentheses). Recorded / ingested = growth "
         "of the recording directory / bytes ingested in the window (≈ 1 when the recording keeps up)."),
        ("B", "B. Fan-out: one real-time publisher, N players", _fanout,
         "CPU-s per GB = server CPU-seconds (user+sys) per GB delivered to all players. Server CPU = share "
         "of one core during the window, of which system time in parentheses. Rate = bytes each "
         "player received / bytes the publisher sent in the same window (1.000 = real time); a player keeps "
         "real time at ≥ 0.95. Latency from the sampled players. Clients' CPU: share of one core used by "
         "the load-client processes together."),
        ("C", "C. Server-added latency", _latency,
         "Time from the publisher's completed write of a message to the sampled player's read of its last "
         "byte (same CLOCK_MONOTONIC), over every audio and video message in the window."),
        ("H", "H. Fan-out to low-latency HLS viewers", _fanout,
         "N viewers (benchmarks.hlsclient: blocking playlist reloads, every part fetched once), against "
         "N RTMP players in table B. CPU-s per GB = server CPU-seconds per GB of init segments and parts "
         "delivered (playlists not counted); latency is not sampled."),
        ("P", "P. Push to other servers", _push,
         "One real-time publisher and no players, pushed on (--push) to that many stream names on an "
         "nginx-rtmp sink whose CPU is not counted; compared with the same number of local RTMP players "
         "(table B). Sink rate: what one player on the sink received / what was published (1.000 = real "
         "time); CPU-s per GB counts every destination as carrying that much."),
        ("D", "D. One stalled player among 10 normal ones", _slow,
         "The stalled player connects, plays and then never reads again. RSS sampled every second."),
    ]
    for key, title, render_table, legend in sections:
        chosen = [r for r in results if r["scenario"] == key]
        if not chosen:
            continue
        table = _push(chosen, results) if key == "P" else render_table(chosen)
        lines += ["", f"### {title}", "", *table, "", legend]
        notes = [f"- {_what(r)}: {error}" for r in chosen for error in r.get("server_errors", [])]
        if notes:
            lines += ["", "Errors the servers logged:", *notes]
        scraped = [f"- {_what(r)}: {r['scrapes']} scrapes of /metrics ({r['scrape_bytes']} bytes the last), "
                   f"{r['scrape_failures']} failed" for r in chosen if "scrapes" in r]
        if scraped:
            lines += ["", "Metrics scraped during the runs:", *scraped]
    return "\n".join(lines) + "\n"


def _what(r: dict[str, Any]) -> str:
    if r["scenario"] == "A":
        pace = f"paced {r['rate_mb']:g} MB/s" if r["rate_mb"] else "flat out"
        return f"{r['server']}, {pace}, recording {'on' if r['record'] else 'off'}"
    return f"{r['server']}, N={r['players']}"
