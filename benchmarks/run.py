"""Run the benchmark: rtmpd against nginx-rtmp, alternating, on the same stream, and print the tables.

    python -m benchmarks.run                       # everything (about 10 minutes)
    python -m benchmarks.run --quick               # a short run
    python -m benchmarks.run --scenarios B --players 100,250 --servers nginx,rtmpd,rtmpd@0f8ed36

See benchmarks/README.md for what each scenario measures and how.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks import report
from benchmarks.media import DEFAULT_SECONDS, ensure_media, load_media
from benchmarks.profile import py_spy, summarize
from benchmarks.scenarios import CLIENTS, HTTP_CLIENTS, Settings, fanout, ingest, push
from benchmarks.servers import nginx_available, split_name

SCENARIOS = ("A", "B", "C", "D", "H", "P")
DEFAULTS: dict[str, Any] = {"players": [1, 10, 100, 250, 1000], "duration": 20.0, "ingest_duration": 10.0,
                            "slow_duration": 30.0, "warmup": 3.0}
QUICK_DEFAULTS: dict[str, Any] = {"players": [1, 10, 100], "duration": 5.0, "ingest_duration": 5.0,
                                  "slow_duration": 10.0, "warmup": 2.0}
LATENCY_PLAYERS = 100
SLOW_NORMAL_PLAYERS = 10


def _ref(name: str) -> str:
    """The git ref of an "rtmpd@REF" server name (with or without "+metrics")."""
    return name.removesuffix("+metrics").split("@", 1)[1]


def _csv(kind):
    def parse(value: str) -> list:
        try:
            return [kind(v) for v in value.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=_csv(str), default=["nginx", "rtmpd"],
                        help="comma-separated: nginx, rtmpd (working tree), rtmpd@GITREF; either rtmpd "
                        "with +wMS (--send-window-ms MS) and/or +metrics (default nginx,rtmpd)")
    parser.add_argument("--scenarios", type=_csv(str.upper), default=["A", "B", "C", "D"],
                        help="subset of A,B,C,D,H,P (default A,B,C,D)")
    parser.add_argument("--players", type=_csv(int), help="N for scenario B (default 1,10,100,250,1000)")
    parser.add_argument("--clients", type=_csv(str), default=["epoll"],
                        help="load clients of scenario B, comma-separated: epoll (benchmarks.loadclient), "
                        "asyncio (benchmarks.asyncclient: small reads, acks at half the window), ffmpeg, "
                        "rtmpdump (real player processes, only at N <= --proc-max-players), httpflv "
                        "(HTTP-FLV players on the asyncio client; rtmpd only) (default epoll)")
    parser.add_argument("--proc-max-players", type=int, default=10,
                        help="largest N run with real player processes (10)")
    parser.add_argument("--hls-viewers", type=int, default=50, help="N of scenario H: LL-HLS viewers, "
                        "measured against N RTMP players (rtmpd only; not in the default scenarios)")
    parser.add_argument("--push-destinations", type=int, default=3, help="destinations of scenario P "
                        "(rtmpd only; measured against as many RTMP players)")
    parser.add_argument("--hls-arg", action="append", default=None, help="rtmpd option turning HLS on for "
                        "scenario H (repeatable; default --hls)")
    parser.add_argument("--duration", type=float, help="measurement window of B and C, seconds (20)")
    parser.add_argument("--ingest-duration", type=float, help="window of A, seconds (10)")
    parser.add_argument("--ingest-rate", type=float, default=50.0, help="MB/s of the paced ingest run with "
                        "recording (0: skip it)")
    parser.add_argument("--slow-duration", type=float, help="window of D, seconds (30)")
    parser.add_argument("--warmup", type=float, help="seconds between all players playing and the window "
                        "(late-join bursts are not measured) (3)")
    parser.add_argument("--sample", type=int, default=10, help="players that parse every message (latency)")
    parser.add_argument("--rtmpd-workers", type=_csv(int), default=[1],
                        help="the rtmpd workers axis: run each rtmpd server with each of these numbers of "
                        "worker processes (rtmpd --workers N; N > 1 is named rtmpd+pN) (default 1)")
    parser.add_argument("--workers", type=int, default=0,
                        help="load-client processes (0: one per 400 players, at most 2)")
    parser.add_argument("--quick", action="store_true", help="defaults for a short run: N up to 100, "
                        "windows of 5 s (D: 10 s), 2 s of warm-up")
    parser.add_argument("--media", help="FLV file to publish instead of the generated test stream")
    parser.add_argument("--media-seconds", type=int, default=DEFAULT_SECONDS, help="length of the generated "
                        "stream (the publisher loops it)")
    parser.add_argument("--rtmpd-arg", action="append", default=[], help="extra rtmpd option (repeatable)")
    parser.add_argument("--profile", metavar="DIR", help="profile rtmpd with py-spy during each fan-out "
                        "window and write the profiles and their summaries here (perturbs rtmpd's figures)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--markdown", help="also write the report here")
    parser.add_argument("--workdir",
                        help="keep logs and results here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    bad_clients = set(args.clients) - set(CLIENTS)
    if bad_clients:
        parser.error(f"unknown load clients: {', '.join(sorted(bad_clients))} (known: {', '.join(CLIENTS)})")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if any(n < 1 for n in args.rtmpd_workers):
        parser.error("--rtmpd-workers: each number must be at least 1")
    args.servers = [
        variant
        for name in args.servers
        for variant in ([name] if not name.startswith("rtmpd") else
                        [name if n == 1 else f"{name}+p{n}" for n in args.rtmpd_workers])
    ]
    for name in args.servers:
        try:
            base = split_name(name)[0]
        except ValueError as e:
            parser.error(str(e))
        if base not in ("nginx", "rtmpd") and not base.startswith("rtmpd@"):
            parser.error(f"unknown server {name!r}")
    if "nginx" in args.servers and not nginx_available():
        parser.error("nginx with libnginx-mod-rtmp is not installed: install it or pass --servers rtmpd")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    # Options given on the command line win over either set of defaults.
    for name, value in (QUICK_DEFAULTS if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The measurements to make, each run for every server in turn."""
    plan: list[tuple[str, dict[str, Any]]] = []
    if "A" in args.scenarios:
        plan += [("A", {"record": True, "rate_mb": 0.0}), ("A", {"record": False, "rate_mb": 0.0})]
        if args.ingest_rate:
            plan.append(("A", {"record": True, "rate_mb": args.ingest_rate}))
    if "B" in args.scenarios:
        for client in args.clients:
            real = client in ("ffmpeg", "rtmpdump")
            plan += [("B", {"players": n, "client": client}) for n in args.players
                     if not real or n <= args.proc_max_players]
    if "C" in args.scenarios and not ("B" in args.scenarios and LATENCY_PLAYERS in args.players):
        plan.append(("C", {"players": LATENCY_PLAYERS}))
    if "D" in args.scenarios:
        plan.append(("D", {"players": SLOW_NORMAL_PLAYERS}))
    if "H" in args.scenarios:
        plan.append(("H", {"players": args.hls_viewers}))
        if not ("B" in args.scenarios and args.hls_viewers in args.players):
            plan.append(("B", {"players": args.hls_viewers}))
    if "P" in args.scenarios:
        plan.append(("P", {"players": args.push_destinations}))
        planned = {p["players"] for k, p in plan if k == "B"}
        if args.push_destinations not in planned:
            plan.append(("B", {"players": args.push_destinations}))
    return plan


def _measure(kind: str, params: dict[str, Any], server: str, settings: Settings,
             args: argparse.Namespace) -> dict[str, Any]:
    if kind == "A":
        return ingest(server, settings, record=params["record"], rate_mb=params["rate_mb"])
    if kind == "D":
        return fanout(server, settings, params["players"], stalled=1, scenario="D",
                      duration=args.slow_duration)
    if kind == "H":
        return fanout(server, settings, params["players"], scenario="H", viewers="hls")
    if kind == "P":
        return push(server, settings, params["players"])
    return fanout(server, settings, params["players"], scenario=kind, client=params.get("client", "epoll"))


def _git(*cmd: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _nginx_version() -> str:
    nginx = shutil.which("nginx")
    if not nginx:
        return "not installed"
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    return out.stderr.strip().replace("nginx version: ", "")


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def _preamble(args: argparse.Namespace, argv: list[str], media_path: str, payload_rate: float,
              load_at_start: str, started: datetime.datetime) -> list[str]:
    import rtmpd

    ended = datetime.datetime.now(datetime.UTC)
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "rtmpd") else ""
    return [
        f"Command: `{shlex.join(['python', '-m', 'benchmarks.run', *argv])}`",
        "",
        f"- When: {started.strftime('%Y-%m-%d %H:%M')}–{ended.strftime('%H:%M UTC')}",
        f"- Machine: {os.cpu_count()} cores, {_cpu_model()}; Linux {platform.release()}; Python "
        f"{platform.python_version()}",
        f"- Servers: rtmpd {rtmpd.__version__}, working tree at {commit or 'unknown commit'}{dirty}; "
        f"{_nginx_version()} with libnginx-mod-rtmp; both one process, chunk size 4096, "
        "logging at warning level",
        *[f"- {name}: rtmpd/ as of commit {_git('rev-parse', '--short', _ref(name)) or '?'} "
          f"({_git('log', '-1', '--format=%s', _ref(name))})"
          for name in args.servers if name.startswith("rtmpd@")],
        *[f"- {name}: with --http, its /metrics fetched every second during each run"
          for name in args.servers if name.endswith("+metrics")],
        *[f"- {name}: with --send-window-ms {split_name(name)[2]}"
          for name in args.servers if split_name(name)[2] is not None],
        f"- Stream: {os.path.basename(media_path)}: 1280x720 30 fps H.264 (2 s GOP, CBR 3 Mb/s) + AAC 48 kHz "
        f"stereo; audio+video payload {payload_rate * 8 / 1e6:.2f} Mb/s",
        f"- Windows: B/C {args.duration:g} s, A {args.ingest_duration:g} s, D {args.slow_duration:g} s, "
        f"after {args.warmup:g} s of warm-up; {args.sample} sampled players per measurement",
        f"- Load average (1 min) when the run started / ended: {load_at_start} / {_loadavg()} (anything "
        "else running on the machine shares its 2 cores; CPU figures are per process, so they hold, but "
        "latency and real-time figures may suffer)",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # 1000 players need more descriptors than a default soft limit of 1024 (the children inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    load_at_start = _loadavg()
    started = datetime.datetime.now(datetime.UTC)
    media_path = args.media or ensure_media(args.media_seconds)
    payload_rate = load_media(media_path).payload_rate
    workdir = args.workdir or tempfile.mkdtemp(prefix="rtmpd-bench-")
    os.makedirs(workdir, exist_ok=True)
    settings = Settings(media=os.path.abspath(media_path), workdir=workdir, duration=args.duration,
                        warmup=args.warmup, sample=args.sample, workers=args.workers,
                        rtmpd_args=tuple(args.rtmpd_arg),
                        profile_dir=os.path.abspath(args.profile) if args.profile else None,
                        hls_args=tuple(args.hls_arg or ["--hls"]))
    settings_ingest = Settings(**{**settings.__dict__, "duration": args.ingest_duration})
    results: list[dict[str, Any]] = []
    plan = _plan(args)
    interrupted = False
    try:
        for index, (kind, params) in enumerate(plan):
            # Alternate which server goes first, so a drift over the run does not favour one of them.
            servers = args.servers if index % 2 == 0 else list(reversed(args.servers))
            measured = []
            for server in servers:
                http_only = kind in ("H", "P") or params.get("client") in HTTP_CLIENTS
                if http_only and not server.startswith("rtmpd"):
                    continue  # nginx-rtmp makes no HTTP-FLV nor LL-HLS; its push is not what P measures
                label = ", ".join(f"{k}={v}" for k, v in params.items())
                print(f"[{kind} {label}] {server} ...", file=sys.stderr, flush=True)
                result = _measure(kind, params, server, settings_ingest if kind == "A" else settings, args)
                if "error" in result:
                    print(f"  failed: {result['error']} (logs in {workdir} with --workdir)", file=sys.stderr,
                          flush=True)
                measured.append(result)
            measured.sort(key=lambda r: args.servers.index(r["server"]))
            results += measured
            if (kind == "B" and "C" in args.scenarios and params["players"] == LATENCY_PLAYERS
                    and params.get("client") == "epoll"):
                results += [{**r, "scenario": "C"} for r in measured]
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: reporting what was measured", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report.render(results, _preamble(args, argv, media_path, payload_rate, load_at_start, started))
    for r in results:
        if r.get("profile") and r["scenario"] != "C" and os.path.exists(r["profile"]):
            text += f"\n### Profile of {r['server']}, scenario {r['scenario']}, N={r['players']}\n\n"
            text += summarize(r["profile"])
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": argv, "payload_rate": payload_rate, "results": results}, f, indent=1)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
