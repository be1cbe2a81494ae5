"""The heap trimmer: glibc's malloc_trim every few seconds gives a burst's freed pages back."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.server.heap import HeapTrimmer, libc_malloc_trim
from tests.test_lean_process import ROOT

#: A fragmented heap: 40 MB of 40 kB buffers (below glibc's mmap threshold: on the heap), all freed but
#: the last one, which sits at the top and keeps glibc from trimming by itself. RSS before and after.
_FRAGMENTED = """
import json, sys
sys.path.insert(0, sys.argv[1])
from rtmpd.server.heap import HeapTrimmer

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

buffers = [bytearray(40_000) for _ in range(1000)]
for b in buffers:
    b[::4096] = b"x" * len(b[::4096])  # touch every page
keep = buffers[-1]
del buffers
before = rss_kb()
trimmer = HeapTrimmer(5.0, clock=None)
trimmer.trim_now()
print(json.dumps({"before": before, "after": rss_kb(), "released": trimmer.released}))
"""


class HeapTrimmerTests(SynchronousTestCase):
    def test_trims_every_interval_while_running(self) -> None:
        clock, pads = Clock(), []
        trimmer = HeapTrimmer(5.0, clock, trim=lambda pad: pads.append(pad) or 1)
        trimmer.startService()
        self.assertEqual(pads, [], "not at start-up")
        clock.advance(5.0)
        clock.advance(5.0)
        self.assertEqual((pads, trimmer.calls, trimmer.released), ([0, 0], 2, 2))
        trimmer.stopService()
        clock.advance(50.0)
        self.assertEqual(trimmer.calls, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_without_malloc_trim_it_does_nothing_and_says_so(self) -> None:
        trimmer = HeapTrimmer(5.0, Clock(), trim=None)  # as on a C library without malloc_trim
        with capturedLogs() as events:
            trimmer.startService()
        self.assertEqual(
            [e["log_format"] for e in events], ["No malloc_trim in this C library: the heap is not trimmed"]
        )
        trimmer.trim_now()
        self.assertEqual(trimmer.calls, 0)
        trimmer.stopService()

    def test_glibc_gives_a_fragmented_heap_back(self) -> None:
        """For real: after a burst of freed 40 kB buffers, one trim lowers RSS by most of the 40 MB."""
        if platform.libc_ver()[0] != "glibc":
            self.skipTest("malloc_trim is glibc's")
        self.assertIsNotNone(libc_malloc_trim())
        result = subprocess.run(
            [sys.executable, "-c", _FRAGMENTED, str(ROOT)], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        report = json.loads(result.stdout)
        self.assertEqual(report["released"], 1)
        self.assertGreater(report["before"] - report["after"], 30_000, report)


class WiringTests(SynchronousTestCase):
    def build(self, *args: str):
        from rtmpd.tap import Options, makeService

        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
        return makeService(options)

    def test_on_by_default_every_5_seconds(self) -> None:
        trimmer = self.build().getServiceNamed("heap-trimmer")
        self.assertEqual(trimmer.interval, 5.0)

    def test_zero_turns_it_off(self) -> None:
        top = self.build("--heap-trim-interval", "0")
        self.assertNotIn("heap-trimmer", top.namedServices)

    def test_negative_is_refused(self) -> None:
        with self.assertRaises(SystemExit):
            self.build("--heap-trim-interval", "-1")
