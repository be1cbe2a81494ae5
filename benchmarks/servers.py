"""The servers under test: rtmpd (twistd -n) and nginx-rtmp, each started on its own loopback port.

Both run as one process with the same outgoing chunk size (4096), logging
at warning level only, and optionally recording every stream to a
directory. ``pid`` is the process whose CPU and memory are the server's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from string import Template

from benchmarks.procs import free_port, wait_listening

__all__ = ["NGINX_MODULE_PATHS", "NginxServer", "RtmpdServer", "Server", "export_tree", "make_server",
           "nginx_available", "split_name"]

#: Where Debian's libnginx-mod-rtmp puts the module.
NGINX_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
)
_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf.template")
_START_TIMEOUT = 30.0
#: Appended to an rtmpd server name: run it with /metrics on and scraped every second.
METRICS_SUFFIX = "+metrics"
#: ``+wN`` appended to an rtmpd server name: run it as N worker processes (``--workers N``).
WORKERS_PREFIX = "+p"
WINDOW_PREFIX = "+w"


def split_name(name: str) -> tuple[str, int, str | None, bool]:
    """(base, workers, send window, scraped) of a server name such as ``rtmpd@REF+p2+w10+metrics``.

    Modifiers, for rtmpd only: ``+pN`` runs N worker processes (``--workers N``), ``+wMS`` runs with
    ``--send-window-ms MS``, ``+metrics`` serves /metrics and scrapes it. Raises ValueError.
    """
    base, *modifiers = name.split("+")
    workers, window, scraped = 1, None, False
    for modifier in modifiers:
        kind, value = modifier[:1], modifier[1:]
        if modifier == METRICS_SUFFIX[1:]:
            scraped = True
        elif kind == WORKERS_PREFIX[1:] and value.isdigit() and int(value) >= 1:
            workers = int(value)
        elif kind == WINDOW_PREFIX[1:] and value.replace(".", "", 1).isdigit():
            window = value
        else:
            raise ValueError(f"unknown server modifier +{modifier} in {name!r} (+metrics, +pN, +wMS)")
    if (workers > 1 or scraped or window is not None) and not base.startswith("rtmpd"):
        raise ValueError(f"{name!r}: +metrics, +pN and +wMS are for rtmpd only")
    return base, workers, window, scraped


def _nginx_module() -> str | None:
    return next((path for path in NGINX_MODULE_PATHS if os.path.exists(path)), None)


def nginx_available() -> bool:
    """Whether nginx and its RTMP module are installed."""
    return shutil.which("nginx") is not None and _nginx_module() is not None


def _twistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(beside):
        return beside
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("twistd is not installed (pip install twisted)")
    return found


class Server:
    """One server process under test. ``start`` returns once it accepts connections."""

    name = ""

    def __init__(self, workdir: str, name: str = "") -> None:
        self.workdir = workdir
        self.name = name or self.name
        self.process: subprocess.Popen | None = None
        self._log = None
        #: Extra environment variables for the server process.
        self.env: dict[str, str] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, port: int, record_dir: str | None) -> list[str]:
        raise NotImplementedError

    def start(self, port: int, record_dir: str | None = None) -> None:
        """Start on 127.0.0.1:``port``; RuntimeError (with the log's tail) if it does not come up."""
        os.makedirs(self.workdir, exist_ok=True)
        cmd = self.command(port, record_dir)
        self._log = open(self.log_path, "w")
        env = {**os.environ, **self.env} if self.env else None
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        try:
            wait_listening(port, self.process, _START_TIMEOUT, self.name)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}\n{self.log_tail()}") from None

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "server.out")

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-size:]
        except OSError:
            return ""

    def errors(self, limit: int = 3) -> list[str]:
        """The first ``limit`` error-level lines the server logged (for the report's notes)."""
        return []

    def extra_results(self) -> dict:
        """Figures of this server variant to add to each result (e.g. scrapes made)."""
        return {}

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID, then SIGKILL if it does not exit in time. Returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode


class RtmpdServer(Server):
    """rtmpd from the working tree, or from ``source_tree`` (a directory holding ``rtmpd/`` and
    ``twisted/plugins/``) put first on PYTHONPATH, e.g. an older commit for a before/after table."""

    name = "rtmpd"

    def __init__(self, workdir: str, extra_args: list[str] | None = None, *, name: str = "",
                 source_tree: str | None = None, scrape_metrics: bool = False, http: bool = False) -> None:
        super().__init__(workdir, name)
        self.extra_args = list(extra_args or [])
        if source_tree is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (source_tree, os.environ.get("PYTHONPATH", "")) if p)
        #: Lift the per-connection ingest rate budget (scenario A measures how fast ingest can go).
        self.unlimited_ingest = False
        #: The HTTP listener's port (``--http``), or 0 when it has none.
        self.http_port = free_port() if (http or scrape_metrics) else 0
        #: With metrics: a thread of ours fetches /metrics every second.
        self.scraper = MetricsScraper(self.http_port) if scrape_metrics else None

    def command(self, port: int, record_dir: str | None) -> list[str]:
        cmd = [_twistd(), "-n", "--pidfile=", "rtmpd", "--port", f"tcp:{port}:interface=127.0.0.1",
               "--log-level", "warn", "--log-format", "json", "--chunk-size", "4096"]
        if record_dir is not None:
            cmd += ["--record-dir", record_dir]
        if self.http_port:
            cmd += ["--http", f"tcp:{self.http_port}:interface=127.0.0.1"]
        if self.unlimited_ingest and "--media-byte-rate" in self._help():
            # Builds with a media rate budget (docs/security.md) would cut a flat-out publisher off.
            cmd += ["--media-rate", "0", "--media-byte-rate", "0"]
        return cmd + self.extra_args

    def _help(self) -> str:
        """This build's ``twistd rtmpd --help`` (what options it knows)."""
        env = {**os.environ, **self.env}
        cmd = [_twistd(), "rtmpd", "--help"]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60).stdout

    def start(self, port: int, record_dir: str | None = None) -> None:
        super().start(port, record_dir)
        if self.scraper is not None:
            assert self.process is not None
            self.scraper.start(self.process)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.scraper is not None:
            self.scraper.stop()
        return super().stop(timeout)

    def extra_results(self) -> dict:
        if self.scraper is None:
            return {}
        return {"scrapes": self.scraper.scrapes, "scrape_failures": self.scraper.failures,
                "scrape_bytes": self.scraper.last_size}

    def errors(self, limit: int = 3) -> list[str]:
        found = []
        try:
            with open(self.log_path) as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("level") in ("error", "critical"):
                        detail = event.get("cause") or event.get("detail") or ""
                        found.append(f"{event.get('msg')}: {detail}" if detail else str(event.get("msg")))
                        if len(found) >= limit:
                            break
        except OSError:
            pass
        return found


class MetricsScraper:
    """Fetches ``/metrics`` from 127.0.0.1:``port`` once a second in a thread, as Prometheus would with
    ``scrape_interval: 1s``, counting scrapes and failures. Its CPU is the benchmark's, not the server's."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self.port = port
        self.interval = interval
        self.scrapes = self.failures = self.last_size = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, process: subprocess.Popen) -> None:
        wait_listening(self.port, process, _START_TIMEOUT, "rtmpd's HTTP listener")
        self._thread = threading.Thread(target=self._run, name="metrics scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/metrics"
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    self.last_size = len(response.read())
                self.scrapes += 1
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class NginxServer(Server):
    name = "nginx"

    def command(self, port: int, record_dir: str | None) -> list[str]:
        nginx = shutil.which("nginx")
        module = _nginx_module()
        if nginx is None or module is None:
            raise RuntimeError("nginx or its RTMP module is missing (apt-get install libnginx-mod-rtmp)")
        record = "            record off;"
        if record_dir is not None:
            record = f"            record all;\n            record_path {record_dir};"
        with open(_TEMPLATE) as f:
            config = Template(f.read()).substitute(module=module, prefix=self.workdir, port=port,
                                                   record=record)
        path = os.path.join(self.workdir, "nginx.conf")
        with open(path, "w") as f:
            f.write(config)
        return [nginx, "-p", self.workdir, "-e", os.path.join(self.workdir, "error.log"), "-c", path]

    def errors(self, limit: int = 3) -> list[str]:
        found = []
        try:
            with open(os.path.join(self.workdir, "error.log")) as f:
                for line in f:
                    if any(level in line for level in ("[error]", "[crit]", "[alert]", "[emerg]")):
                        found.append(line.strip())
                        if len(found) >= limit:
                            break
        except OSError:
            pass
        return found

    def log_tail(self, size: int = 3000) -> str:
        parts = [super().log_tail(size)]
        try:
            with open(os.path.join(self.workdir, "error.log")) as f:
                parts.append(f.read()[-size:])
        except OSError:
            pass
        return "\n".join(p for p in parts if p)


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_tree(ref: str, directory: str) -> str:
    """Extract ``rtmpd/`` and ``twisted/plugins/`` as of git ``ref`` into ``directory``.

    Uses ``git archive``, which only reads the repository.

    Returns the directory. Raises RuntimeError if git cannot resolve ``ref``.
    """
    if os.path.isdir(os.path.join(directory, "rtmpd")):
        return directory
    os.makedirs(directory, exist_ok=True)
    cmd = ["git", "-C", _repo_root(), "archive", "--format=tar", ref, "rtmpd", "twisted/plugins"]
    archive = subprocess.run(cmd, capture_output=True, timeout=60)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True, timeout=60)
    return directory


#: "rtmpd+w10": rtmpd with --send-window-ms 10.
def make_server(name: str, workdir: str, rtmpd_args: list[str] | None = None,
                trees_dir: str | None = None, http: bool = False) -> Server:
    """A server object for ``name``: "nginx", "rtmpd" (the working tree) or "rtmpd@REF" (a git commit);
    an rtmpd name may carry the modifiers of ``split_name``: "+metrics" also serves /metrics, scraped
    every second during the run; "+pN" runs N worker processes (measured over the parent and all
    workers); "+wMS" runs with ``--send-window-ms MS``.

    Raises ValueError for any other name, RuntimeError if REF cannot be extracted.
    """
    base, workers, window, scraped = split_name(name)
    if workers > 1:
        # The parent opens the port at once; its workers accept from it once they are up.
        rtmpd_args = [*(rtmpd_args or []), "--workers", str(workers)]
    if window is not None:
        rtmpd_args = [*(rtmpd_args or []), "--send-window-ms", window]
    if base == "rtmpd":
        return RtmpdServer(workdir, rtmpd_args, name=name, scrape_metrics=scraped, http=http)
    if base.startswith("rtmpd@"):
        ref = base.split("@", 1)[1]
        tree = export_tree(ref, os.path.join(trees_dir or workdir, "tree-" + ref.replace("/", "_")))
        return RtmpdServer(workdir, rtmpd_args, name=name, source_tree=tree, scrape_metrics=scraped,
                           http=http)
    if name == "nginx":
        return NginxServer(workdir)
    raise ValueError(f"unknown server {name!r}: nginx, rtmpd or rtmpd@GITREF (+metrics, +pN, +wMS)")
