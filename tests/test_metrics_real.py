"""``/metrics`` of a real ``twistd -n rtmpd`` while ffmpeg publishes and plays (promtool, bytes, Prometheus).

- ``promtool check metrics`` (Debian's ``prometheus`` package) accepts a scrape taken while a stream plays;
- the players gauge goes up and down with a real ffmpeg player, and ``rtmpd_sent_bytes_total`` grows by the
  bytes that player received (counted by a TCP relay between it and rtmpd) within 5 %;
- a real Prometheus server, started here on loopback with a 1 s scrape interval, scrapes rtmpd and its query
  API shows the live value of ``rtmpd_players``.

These take some 10-30 s each (real-time media); they run in CI, where a missing tool is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.support import ServerProcess, ffmpeg_publish, require


class ByteCountingRelay:
    """A TCP relay on 127.0.0.1 to ``port``: counts the bytes it delivers to its (one) client."""

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        #: Bytes the client was sent (``sendall`` returned for them).
        self.delivered = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)
        for s in (client, upstream):
            s.close()
        self.done.set()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            except OSError:
                break
            if count:
                self.delivered += len(data)
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def ffmpeg_play(url: str, seconds: float) -> subprocess.Popen:
    """ffmpeg playing ``url`` for ``seconds`` of media into the null muxer."""
    cmd = [require("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-rw_timeout", "15000000",
           "-i", url, "-t", str(seconds), "-f", "null", "-"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsTestCase(TestCase):
    #: More rtmpd options for the server under test.
    server_args: tuple[str, ...] = ()

    def setUp(self) -> None:
        args = [a.replace("{tmp}", self.mktemp()) for a in self.server_args]
        self.server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", *args, log_level="info")
        self.server.start()
        self.addCleanup(self.server.stop)
        self.http_port = self.server.port_of("HTTP server")
        self.metrics_url = f"http://127.0.0.1:{self.http_port}/metrics"

    def scrape_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            self.assertEqual(response.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
            return response.read().decode()

    def scrape(self) -> dict[tuple[str, tuple], float]:
        samples = {}
        for family in text_string_to_metric_families(self.scrape_text()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def publish(self, key: str, seconds: float) -> subprocess.Popen:
        publisher = ffmpeg_publish(self.server.url(key), seconds)
        self.addCleanup(end, publisher)
        self.server.wait_for_msg("Codecs detected", stream_key=f"live/{key}", timeout=30)
        return publisher


class LiveScrapeTests(MetricsTestCase):
    # Recording and per-stream series are in the scrape promtool checks.
    server_args = ("--record-dir", "{tmp}", "--metrics-per-stream")

    def test_promtool_accepts_a_live_scrape_and_counters_follow_a_real_player(self) -> None:
        promtool = require("promtool")
        self.publish("m", 40)
        before = self.scrape()
        live = (("app", "live"),)
        self.assertEqual(before[("rtmpd_publishers", live)], 1)
        self.assertEqual(before[("rtmpd_players", live)], 0)

        relay = ByteCountingRelay(self.server.port)
        self.addCleanup(relay.close)
        player = ffmpeg_play(f"rtmp://127.0.0.1:{relay.port}/live/m", 6)
        self.addCleanup(end, player)
        added = self.server.wait_for_msg("Subscriber added", stream_key="live/m", timeout=30)

        text = self.scrape_text()
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
        self.assertEqual((check.returncode, check.stdout, check.stderr), (0, "", ""), text)
        during = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                during[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        self.assertEqual(during[("rtmpd_players", live)], 1)
        self.assertEqual(during[("rtmpd_connections", ())], 2)
        self.assertEqual(during[("rtmpd_stream_players", (("stream", "live/m"),))], 1)
        self.assertEqual(during[("rtmpd_recordings_active", ())], 1)
        self.assertGreater(during[("rtmpd_recording_bytes_total", ())], 0)

        self.assertEqual(player.wait(60), 0, player.stderr.read() if player.stderr else "")
        self.assertTrue(relay.done.wait(30))
        closed = self.server.wait_for_msg("Connection closed", conn_id=added["conn_id"], timeout=30)
        after = self.scrape()
        self.assertEqual(after[("rtmpd_players", live)], 0)
        self.assertEqual(after[("rtmpd_plays_total", live)], 1)
        self.assertGreaterEqual(after[("rtmpd_play_first_keyframe_seconds_count", ())], 1)

        grown = after[("rtmpd_sent_bytes_total", live)] - before[("rtmpd_sent_bytes_total", live)]
        received = relay.delivered
        self.assertGreater(received, 100_000, "the player should have been sent seconds of media")
        self.assertLess(abs(grown - received) / received, 0.05, (grown, received, closed["bytes_out"]))
        # Nothing is counted twice: the growth is this player's bytes (and the publisher's few acks).
        self.assertGreaterEqual(grown, closed["bytes_out"])
        self.assertLess(grown - closed["bytes_out"], 1000)


class PrometheusServerTests(MetricsTestCase):
    def start_prometheus(self) -> str:
        prometheus = require("prometheus")
        work = tempfile.mkdtemp(prefix="rtmpd-prometheus-")
        self.addCleanup(shutil.rmtree, work, True)
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: rtmpd\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{self.http_port}']\n"
            )
        port = free_port()
        log = open(os.path.join(work, "prometheus.log"), "w")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(work, 'data')}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work,
        )
        self.addCleanup(end, process)
        self.prometheus_log = log.name
        return f"http://127.0.0.1:{port}"

    def query(self, base: str, expression: str) -> list[dict]:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        self.assertEqual(body["status"], "success", body)
        return body["data"]["result"]

    def wait_for_value(self, base: str, expression: str, expected: str, timeout: float = 40.0) -> None:
        """Ask Prometheus every 0.5 s until ``expression`` has the one value ``expected``."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            try:
                result = self.query(base, expression)
            except OSError as e:  # Prometheus still starting
                seen = e
            else:
                seen = result
                if len(result) == 1 and result[0]["value"][1] == expected:
                    return
            time.sleep(0.5)
        with open(self.prometheus_log) as f:
            tail = f.read()[-3000:]
        self.fail(f"{expression} never became {expected}: last answer {seen!r}\nprometheus log:\n{tail}")

    def test_prometheus_scrapes_the_live_players_gauge(self) -> None:
        base = self.start_prometheus()
        self.publish("p", 60)
        player = ffmpeg_play(self.server.url("p"), 50)
        self.addCleanup(end, player)
        self.server.wait_for_msg("Subscriber added", stream_key="live/p", timeout=30)
        self.wait_for_value(base, 'up{job="rtmpd"}', "1")
        self.wait_for_value(base, 'rtmpd_players{app="live"}', "1")
        self.wait_for_value(base, 'rtmpd_publishers{app="live"}', "1")
        end(player)
        self.server.wait_for_msg("Subscriber removed", stream_key="live/p", timeout=30)
        self.wait_for_value(base, 'rtmpd_players{app="live"}', "0")
