"""A smoke run of the benchmark (benchmarks/run.py): two players for a few seconds, not a measurement.

It proves the one command still works end to end: the stream is generated,
the servers start, the publisher and the load client play, and the report
has figures that make sense. The real benchmark is never run by CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import TestCase

from benchmarks.servers import nginx_available
from tests.support import IN_CI, require

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchmarkSmokeTests(TestCase):
    def _servers(self) -> list[str]:
        require("ffmpeg")
        servers = ["rtmpd"]
        # nginx-rtmp is the reference; in CI it must be there (scripts/install-test-deps installs it).
        if IN_CI or nginx_available():
            require("nginx")
            if not nginx_available():
                raise AssertionError("nginx is installed but libnginx-mod-rtmp is not")
            servers.insert(0, "nginx")
        return servers

    def test_two_players_for_three_seconds(self) -> None:
        servers = self._servers()
        out = tempfile.mkdtemp(prefix="bench-smoke-")
        results_path = os.path.join(out, "results.json")
        cmd = [sys.executable, "-m", "benchmarks.run", "--servers", ",".join(servers), "--scenarios", "B",
               "--players", "2", "--duration", "3", "--warmup", "1", "--sample", "1",
               "--media-seconds", "6", "--json", results_path]
        env = {**os.environ, "RTMPD_BENCH_CACHE": os.path.join(tempfile.gettempdir(), "rtmpd-bench-smoke")}
        done = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, timeout=55, env=env,
                              stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])

        self.assertIn("### B. Fan-out", done.stdout)
        with open(results_path) as f:
            results = json.load(f)["results"]
        self.assertEqual(sorted(r["server"] for r in results), sorted(servers))
        for r in results:
            self.assertNotIn("error", r, r.get("error_detail"))
            self.assertEqual(r["playing"], 2, r)
            self.assertEqual(r["normal_players"], 2, r)
            # Each player got what the publisher sent in the same window (± chunk headers and timing).
            self.assertGreater(r["rate_share_min"], 0.8, r)
            self.assertLess(r["rate_share_median"], 1.2, r)
            self.assertGreater(r["latency_samples"], 0, r)
            self.assertEqual(r["latency_unmatched"], 0, r)
            self.assertGreaterEqual(r["server_cpu_s"], 0.0, r)
            self.assertIn(f"| 2 | {r['server']} |", done.stdout)
        # nginx may spend less than one clock tick on two players in 3 s; a Python server never does.
        rtmpd = next(r for r in results if r["server"] == "rtmpd")
        self.assertGreater(rtmpd["server_cpu_s"], 0.0, rtmpd)
        self.assertGreater(rtmpd["cpu_s_per_gb"], 0.0, rtmpd)
