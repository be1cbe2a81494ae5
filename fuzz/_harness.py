"""What every fuzzer here shares: per-input budgets and the rule that only typed errors escape.

``run(target, allowed)`` hands atheris a test function that calls
``target(data)`` and lets exceptions of the ``allowed`` types (subclasses of
``rtmpd.core.errors.RTMPError``) pass; anything else escapes and atheris
reports it as a crash, with the input saved. Each input must also finish
within ``TIME_BUDGET`` seconds of CPU time (not wall time: a fuzzer under
``nice -n 19`` on a busy machine waits for the CPU for seconds; a first long
run that measured wall time stopped on an input that takes 1.4 ms) and may not grow the process's peak RSS by
more than ``RSS_BUDGET_MB`` over what it was after the first input: either
is an ``AssertionError`` (a crash too). libFuzzer's own ``-timeout`` and
``-rss_limit_mb`` stay as the backstop for a hang or a runaway.

Run one fuzzer (see docs/security.md for the long runs)::

    python fuzz/fuzz_amf0.py -max_total_time=60 /tmp/amf0-corpus fuzz/corpus/amf0
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable

import atheris

#: CPU seconds one input may take (instrumented code runs several times slower than normal).
TIME_BUDGET = float(os.environ.get("RTMPD_FUZZ_TIME_BUDGET", "2.0"))
#: Megabytes one input may add to the process's peak RSS.
RSS_BUDGET_MB = int(os.environ.get("RTMPD_FUZZ_RSS_BUDGET_MB", "256"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run(target: Callable[[bytes], object], allowed: tuple[type[BaseException], ...]) -> None:
    """Fuzz ``target`` with atheris using ``sys.argv`` (libFuzzer flags and corpus directories)."""
    baseline: list[float] = []

    def test_one_input(data: bytes) -> None:
        start = time.process_time()
        try:
            target(data)
        except allowed:
            pass
        elapsed = time.process_time() - start
        if elapsed > TIME_BUDGET:
            raise AssertionError(
                f"input of {len(data)} bytes took {elapsed:.3f} s of CPU, budget {TIME_BUDGET} s"
            )
        peak = _peak_rss_mb()
        if not baseline:
            baseline.append(peak)
        elif peak - baseline[0] > RSS_BUDGET_MB:
            raise AssertionError(
                f"peak RSS grew by {peak - baseline[0]:.0f} MB (input of {len(data)} bytes), "
                f"budget {RSS_BUDGET_MB} MB"
            )

    argv = list(sys.argv)
    if not any(arg.startswith("-rss_limit_mb") for arg in argv):
        argv.insert(1, "-rss_limit_mb=2048")
    if not any(arg.startswith("-timeout") for arg in argv):
        argv.insert(1, "-timeout=20")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
