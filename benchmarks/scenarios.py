"""One measurement of one server: ingest (A), fan-out (B, and the latency of C), a stalled player (D).

Each function starts a fresh server, the publisher and the load client(s)
as separate processes, waits until every player is playing and a warm-up
has passed, measures over a window delimited by the same ``start``/``stop``
commands for every process, and stops everything it started (by PID, also
on errors). CPU figures are the kernel's accounting of each process; the
publisher's and the load client's are reported separately and never
counted as the server's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.procs import Child, RSSSampler, cpu_times, free_port, process_tree, rss_bytes, tree_cpu_times
from benchmarks.profile import record_command
from benchmarks.servers import NginxServer, make_server
from benchmarks.syscalls import SyscallCounter

__all__ = ["Settings", "fanout", "ingest", "split_players"]

#: A player keeps real time when it received at least this share of what was published in the window.
REALTIME_SHARE = 0.95
_GB = 1e9
_MB = 1e6


@dataclass(frozen=True)
class Settings:
    media: str
    workdir: str
    duration: float = 20.0
    warmup: float = 3.0
    sample: int = 10
    #: Load-client processes; 0 picks one per 400 players, at most 2.
    workers: int = 0
    ready_timeout: float = 120.0
    rtmpd_args: tuple[str, ...] = ()
    #: When set, rtmpd servers are profiled with py-spy over each fan-out window, into this directory.
    profile_dir: str | None = None
    #: rtmpd options that turn HLS on (scenario H), besides the HTTP listener the benchmark gives it.
    hls_args: tuple[str, ...] = ("--hls",)


#: The load clients, by name: the module (and its leading arguments) that plays N players.
CLIENTS: dict[str, tuple[str, ...]] = {
    "epoll": ("benchmarks.loadclient",),
    "asyncio": ("benchmarks.asyncclient",),
    "ffmpeg": ("benchmarks.procclient", "--kind", "ffmpeg"),
    "rtmpdump": ("benchmarks.procclient", "--kind", "rtmpdump"),
    "httpflv": ("benchmarks.asyncclient", "--protocol", "httpflv"),
}
#: Clients that play over the server's HTTP listener (rtmpd only).
HTTP_CLIENTS = frozenset({"httpflv"})


def split_players(players: int, workers: int) -> list[int]:
    """How many players each of ``workers`` load-client processes gets (as even as possible)."""
    base, extra = divmod(players, workers)
    return [base + (1 if i < extra else 0) for i in range(workers) if base + (1 if i < extra else 0)]


def _workers(settings: Settings, players: int) -> int:
    if settings.workers:
        return settings.workers
    return min(2, max(1, -(-players // 400)))


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


class _Run:
    """The processes of one measurement; ``close`` stops whatever was started."""

    def __init__(self, server_name: str, settings: Settings, label: str, viewers: str = "rtmp",
                 client: str = "epoll") -> None:
        self.settings = settings
        #: Which load client plays: see ``CLIENTS``.
        self.client = client
        self.dir = os.path.join(settings.workdir, label)
        os.makedirs(self.dir, exist_ok=True)
        self.viewers = viewers
        args = [*settings.rtmpd_args, *(settings.hls_args if viewers == "hls" else ())]
        self.server = make_server(server_name, os.path.join(self.dir, "server"), args,
                                  trees_dir=settings.workdir, http=viewers == "hls" or client in HTTP_CLIENTS)
        self.port = free_port()
        self.publisher: Child | None = None
        self.clients: list[Child] = []

    def start_server(self, record_dir: str | None = None) -> None:
        self.server.start(self.port, record_dir)

    def start_publisher(self, mode: str, rate: float = 0.0) -> dict[str, Any]:
        log = os.path.join(self.dir, "sends.json")
        cmd = _python_module("benchmarks.publisher", "--port", str(self.port), "--media", self.settings.media,
                             "--mode", mode, "--rate", str(rate), "--log", log, "--max-seconds", "900")
        self.publisher = Child(cmd, name="publisher", stderr_path=os.path.join(self.dir, "publisher.err"),
                               cwd=_repo_root())
        return self.publisher.wait_event("ready", 30)

    def start_clients(self, players: int, stalled: int = 0) -> list[dict[str, Any]]:
        if self.viewers == "hls":
            return self._start_hls_clients(players)
        shares = split_players(players, _workers(self.settings, players))
        sample_left, stalled_left = self.settings.sample, stalled
        for i, share in enumerate(shares):
            sample = min(sample_left, share - min(stalled_left, share))
            stall = min(stalled_left, share)
            sample_left -= sample
            stalled_left -= stall
            port = getattr(self.server, "http_port", 0) if self.client in HTTP_CLIENTS else self.port
            if not port:
                raise RuntimeError(f"{self.server.name} has no HTTP listener for {self.client} players")
            cmd = _python_module(*CLIENTS[self.client], "--port", str(port), "--players", str(share),
                                 "--sample", str(sample), "--stalled", str(stall),
                                 "--ready-timeout", str(self.settings.ready_timeout), "--max-seconds", "900",
                                 "--out", os.path.join(self.dir, f"client{i}.json"))
            self.clients.append(Child(cmd, name=f"load client {i}",
                                      stderr_path=os.path.join(self.dir, f"client{i}.err"), cwd=_repo_root()))
        return [c.wait_event("ready", self.settings.ready_timeout + 30) for c in self.clients]

    def _start_hls_clients(self, viewers: int) -> list[dict[str, Any]]:
        port = getattr(self.server, "http_port", 0)
        if not port:
            raise RuntimeError(f"{self.server.name} has no HTTP listener: HLS viewers need rtmpd")
        cmd = _python_module("benchmarks.hlsclient", "--port", str(port), "--viewers", str(viewers),
                             "--ready-timeout", str(self.settings.ready_timeout), "--max-seconds", "900",
                             "--out", os.path.join(self.dir, "client0.json"))
        err = os.path.join(self.dir, "client0.err")
        self.clients.append(Child(cmd, name="HLS load client", stderr_path=err, cwd=_repo_root()))
        return [c.wait_event("ready", self.settings.ready_timeout + 30) for c in self.clients]

    def client_results(self) -> list[dict[str, Any]]:
        results = []
        for i, client in enumerate(self.clients):
            client.wait_event("done", 60)
            with open(os.path.join(self.dir, f"client{i}.json")) as f:
                results.append(json.load(f))
        return results

    def publisher_log(self) -> dict[str, Any]:
        assert self.publisher is not None
        self.publisher.send("stop")
        self.publisher.wait_event("done", 30)
        with open(os.path.join(self.dir, "sends.json")) as f:
            return json.load(f)

    def close(self, result: dict[str, Any]) -> None:
        for child in [*self.clients, *([self.publisher] if self.publisher else [])]:
            child.stop()
        self.server.stop()
        result["server_errors"] = self.server.errors()
        result.update(self.server.extra_results())


def _error(e: Exception) -> dict[str, str]:
    """A failure's one-line summary (its first line and, for a crash, the last line of the log) and detail."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if not lines:
        return {"error": type(e).__name__, "error_detail": repr(e)}
    summary = lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1].strip()}"
    return {"error": summary, "error_detail": str(e)}


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def ingest(server_name: str, settings: Settings, *, record: bool, rate_mb: float = 0.0) -> dict[str, Any]:
    """Scenario A: one publisher sending as fast as the server takes it (or at ``rate_mb`` MB/s),
    recording on or off."""
    label = f"A-{'record' if record else 'plain'}-{rate_mb or 'max'}-{server_name}"
    run = _Run(server_name, settings, label)
    if hasattr(run.server, "unlimited_ingest"):
        run.server.unlimited_ingest = True
    record_dir = os.path.join(run.dir, "recordings") if record else None
    result: dict[str, Any] = {"scenario": "A", "server": server_name, "record": record, "rate_mb": rate_mb}
    try:
        if record_dir:
            os.makedirs(record_dir, exist_ok=True)
        run.start_server(record_dir)
        run.start_publisher("flat", rate_mb * _MB)
        publisher = run.publisher
        assert publisher is not None
        time.sleep(min(1.0, settings.warmup))
        publisher.send("mark")
        first = publisher.wait_event("mark", 30)
        (user0, sys0), pub0 = cpu_times(run.server.pid), publisher.cpu_seconds()
        rec0 = _dir_size(record_dir) if record_dir else 0
        time.sleep(settings.duration)
        publisher.send("mark")
        last = publisher.wait_event("mark", 30)
        (user1, sys1), pub1 = cpu_times(run.server.pid), publisher.cpu_seconds()
        rss = rss_bytes(run.server.pid)
        rec1 = _dir_size(record_dir) if record_dir else 0
        seconds = last["t"] - first["t"]
        sent = last["bytes"] - first["bytes"]
        cpu = (user1 - user0) + (sys1 - sys0)
        result.update(
            seconds=seconds, bytes=sent, mb_per_s=sent / seconds / _MB, server_cpu_s=cpu,
            server_cpu_share=cpu / seconds, server_sys_share=(sys1 - sys0) / seconds,
            cpu_s_per_gb=cpu / (sent / _GB) if sent else float("nan"),
            recorded_mb=(rec1 - rec0) / _MB, recorded_share=(rec1 - rec0) / sent if sent else float("nan"),
            rss_mb=rss / _MB, publisher_cpu_share=(pub1 - pub0) / seconds)
    except Exception as e:  # one failed measurement must not lose the others
        result.update(_error(e))
    finally:
        run.close(result)
        if record_dir:
            # Ingest recordings run to gigabytes: keep the disk free for the next measurement.
            for root, _, files in os.walk(record_dir):
                for name in files:
                    os.unlink(os.path.join(root, name))
    return result


def fanout(server_name: str, settings: Settings, players: int, *, stalled: int = 0,
           scenario: str = "B", duration: float | None = None, viewers: str = "rtmp",
           client: str = "epoll") -> dict[str, Any]:
    """Scenarios B/C (``stalled=0``) and D: one real-time publisher, ``players`` players (+ ``stalled``);
    H: the players are low-latency HLS viewers (``viewers="hls"``, ``benchmarks.hlsclient``).
    ``client`` names the RTMP load client (``CLIENTS``)."""
    duration = settings.duration if duration is None else duration
    run = _Run(server_name, settings, f"{scenario}-{players}-{client}-{server_name}", viewers, client)
    result: dict[str, Any] = {"scenario": scenario, "server": server_name, "players": players,
                              "stalled": stalled, "client": client if viewers == "rtmp" else "hls"}
    try:
        run.start_server()
        ready = run.start_publisher("realtime")
        payload_rate = ready["payload_rate"]
        t_ready = time.monotonic()
        readiness = run.start_clients(players + stalled, stalled)
        result["ramp_s"] = time.monotonic() - t_ready
        result["playing"] = sum(r["playing"] for r in readiness)
        time.sleep(settings.warmup)
        # A server of several processes (rtmpd --workers N) is measured over all of them.
        sampler = RSSSampler(run.server.pid, 1.0 if stalled else 0.5, tree=True)
        by_process0 = _cpu_by_process(run.server.pid)
        user0, sys0 = tree_cpu_times(run.server.pid)
        pub0 = run.publisher.cpu_seconds()
        client0 = sum(c.cpu_seconds() for c in run.clients)
        for client in run.clients:
            client.send("start")
        sampler.start()
        syscalls = SyscallCounter(run.server.pid).start()
        t0 = time.monotonic()
        profiler = _start_profiler(run, settings, duration, f"{scenario}-{players}-{server_name}")
        time.sleep(duration)
        for client in run.clients:
            client.send("stop")
        t1 = time.monotonic()
        user1, sys1 = tree_cpu_times(run.server.pid)
        by_process1 = _cpu_by_process(run.server.pid)
        pub1 = run.publisher.cpu_seconds()
        client1 = sum(c.cpu_seconds() for c in run.clients)
        rss = sampler.stop()
        write_calls = syscalls.stop()
        clients = run.client_results()
        sends = run.publisher_log()["sends"]
        if profiler is not None:
            result["profile"] = _finish_profiler(*profiler)
        result.update(_fanout_figures(clients, sends, payload_rate))
        if write_calls is not None:
            # Write system calls per MB delivered: what a send window saves, free of the machine's noise.
            result["write_syscalls"] = write_calls
            mb = result["delivered_bytes"] / _MB
            result["write_syscalls_per_mb"] = sum(write_calls.values()) / mb if mb else None
        seconds = t1 - t0
        cpu = (user1 - user0) + (sys1 - sys0)
        delivered = result["delivered_bytes"]
        result.update(
            seconds=seconds, server_cpu_s=cpu, server_cpu_share=cpu / seconds,
            server_sys_share=(sys1 - sys0) / seconds,
            cpu_s_per_gb=cpu / (delivered / _GB) if delivered else float("nan"),
            rss_mb=rss[-1][1] / _MB if rss else float("nan"),
            rss_start_mb=rss[0][1] / _MB if rss else float("nan"),
            rss_max_mb=max(r for _, r in rss) / _MB if rss else float("nan"),
            rss_series_mb=[round(r / _MB, 1) for _, r in rss] if stalled else [],
            publisher_cpu_share=(pub1 - pub0) / seconds,
            client_cpu_share=(client1 - client0) / seconds,
            client_workers=len(run.clients),
            server_processes=len(by_process1),
            server_cpu_s_by_process=[round(by_process1[pid] - by_process0.get(pid, 0.0), 3)
                                     for pid in by_process1],
        )
    except Exception as e:  # one failed measurement must not lose the others
        result.update(_error(e))
    finally:
        run.close(result)
    return result


def _cpu_by_process(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and of each of its live descendants, in tree order."""
    found = {}
    for each in process_tree(pid):
        try:
            found[each] = sum(cpu_times(each))
        except OSError:
            continue
    return found


def _start_profiler(run: _Run, settings: Settings, seconds: float,
                    label: str) -> tuple[subprocess.Popen, str] | None:
    if settings.profile_dir is None or not run.server.name.startswith("rtmpd"):
        return None
    os.makedirs(settings.profile_dir, exist_ok=True)
    out = os.path.join(settings.profile_dir, f"{label}.txt")
    log = open(os.path.join(run.dir, "py-spy.log"), "w")
    with log:
        process = subprocess.Popen(record_command(run.server.pid, seconds, out), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    return process, out


def _finish_profiler(process: subprocess.Popen, out: str) -> str:
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return out


def _fanout_figures(clients: list[dict[str, Any]], sends: list[list[Any]],
                    payload_rate: float) -> dict[str, Any]:
    """Delivered bytes, per-player rate against what was published, and latency, from the raw logs."""
    players = [p for c in clients for p in c["per_player"]]
    normal = [p for p in players if not p["stalled"]]
    windows = [c["window"] for c in clients]
    start = min(w[0] for w in windows)
    stop = max(w[1] for w in windows)
    # What the publisher handed to the kernel during the window: the rate each player should match.
    published = sum(size for _, _, t, size in sends if start <= t <= stop)
    reference = published if published else payload_rate * (stop - start)
    shares = [p["bytes"] / reference for p in normal] if reference else []
    sent_at = {(type_id, ts): t for type_id, ts, t, _ in sends}
    latencies = []
    unmatched = 0
    for p in normal:
        for type_id, ts, t in p["log"]:
            t_sent = sent_at.get((type_id, ts))
            if t_sent is None:
                unmatched += 1
            else:
                latencies.append((t - t_sent) * 1000)
    errors = sorted({p["error"] for p in players if p["error"]})
    stalled = [p for p in players if p["stalled"]]
    return {
        "delivered_bytes": sum(p["bytes"] for p in normal),
        "published_bytes": published,
        "stream_rate_kbps": payload_rate * 8 / 1000,
        "rate_share_min": min(shares) if shares else float("nan"),
        "rate_share_median": statistics.median(shares) if shares else float("nan"),
        "realtime_players": sum(1 for s in shares if s >= REALTIME_SHARE),
        "normal_players": len(normal),
        "failed_players": sum(1 for p in normal if p["error"]),
        "player_errors": errors[:5],
        "latency_samples": len(latencies),
        "latency_unmatched": unmatched,
        "latency_p50_ms": _percentile(latencies, 0.50),
        "latency_p99_ms": _percentile(latencies, 0.99),
        "latency_max_ms": max(latencies) if latencies else float("nan"),
        "client_cpu_s": sum(c["cpu_seconds"] for c in clients),
        # Whether the server still held the stalled players' connections at the end of the window.
        "stalled_states": [p.get("tcp_state", "unknown") for p in stalled],
    }


def push(server_name: str, settings: Settings, destinations: int) -> dict[str, Any]:
    """Scenario P: one real-time publisher, no players, pushed on to ``destinations`` stream names on an
    nginx-rtmp sink (its CPU is not counted); one player on the sink checks that the push flows."""
    label = f"P-{destinations}-{server_name}"
    sink = NginxServer(os.path.join(settings.workdir, label, "sink"))
    sink_port = free_port()
    sink_url = f"rtmp://127.0.0.1:{sink_port}/live"
    pushes = tuple(f"--push=live/*={sink_url}/{{name}}-{i}" for i in range(destinations))
    run = _Run(server_name, dataclasses.replace(settings, rtmpd_args=settings.rtmpd_args + pushes), label)
    result: dict[str, Any] = {"scenario": "P", "server": server_name, "players": destinations}
    checker = None
    try:
        sink.start(sink_port)
        run.start_server()
        ready = run.start_publisher("realtime")
        payload_rate = ready["payload_rate"]
        cmd = _python_module("benchmarks.loadclient", "--port", str(sink_port), "--key", "bench-0",
                             "--players", "1", "--sample", "0", "--ready-timeout", "30",
                             "--max-seconds", "900",
                             "--out", os.path.join(run.dir, "sink-player.json"))
        checker = Child(cmd, name="sink player", stderr_path=os.path.join(run.dir, "sink-player.err"),
                        cwd=_repo_root())
        checker.wait_event("ready", 60)
        time.sleep(settings.warmup)
        checker.send("start")
        user0, sys0 = cpu_times(run.server.pid)
        t0 = time.monotonic()
        time.sleep(settings.duration)
        checker.send("stop")
        t1 = time.monotonic()
        user1, sys1 = cpu_times(run.server.pid)
        checker.wait_event("done", 60)
        with open(os.path.join(run.dir, "sink-player.json")) as f:
            sink_bytes = sum(p["bytes"] for p in json.load(f)["per_player"])
        seconds = t1 - t0
        cpu = (user1 - user0) + (sys1 - sys0)
        # Every destination carries the stream the sink's player received from one of them.
        delivered = sink_bytes * destinations
        result.update(
            seconds=seconds, server_cpu_s=cpu, server_cpu_share=cpu / seconds,
            server_sys_share=(sys1 - sys0) / seconds, delivered_bytes=delivered,
            sink_rate_share=sink_bytes / (payload_rate * seconds) if payload_rate else float("nan"),
            cpu_s_per_gb=cpu / (delivered / _GB) if delivered else float("nan"),
            rss_mb=rss_bytes(run.server.pid) / _MB,
        )
    except Exception as e:  # one failed measurement must not lose the others
        result.update(_error(e))
    finally:
        if checker is not None:
            checker.stop()
        run.close(result)
        sink.stop()
    return result
