"""Sampling profiles of the rtmpd server during a measurement, with py-spy (``pip install py-spy``).

``benchmarks.run --profile DIR`` records one profile per rtmpd fan-out
measurement, over the measurement window, without pausing the server
(``--nonblocking``). py-spy drops samples in which the thread is idle (the
reactor waiting in epoll), so the samples are where the CPU went.

``python -m benchmarks.profile FILE`` prints the hottest functions of a
recorded profile (py-spy's raw "collapsed stacks" format).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections import Counter

__all__ = ["py_spy", "record_command", "summarize"]

RATE = 100
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy executable, or None if it is not installed."""
    beside = shutil.which("py-spy", path=sys.exec_prefix + "/bin")
    return beside or shutil.which("py-spy")


def record_command(pid: int, seconds: float, out: str) -> list[str]:
    """The py-spy command that samples ``pid`` for ``seconds`` into ``out`` (collapsed stacks)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(RATE),
            "--nonblocking", "--format", "raw", "--output", out]


def _function(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file.py)": samples add up per function, not per line.
    frame = _LINE.sub(")", frame)
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(path: str, top: int = 15) -> str:
    """Markdown tables of the ``top`` functions by own samples and by samples including callees."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_function(frame) for frame in stack.split(";")]
            samples += count
            own[frames[-1]] += count
            for name in set(frames):
                total[name] += count
    if not samples:
        return "(no samples: the server was idle, or py-spy could not read it)\n"
    lines = [f"{samples} samples at {RATE} Hz (≈ {samples / RATE:.1f} CPU-seconds of the main thread).", "",
             "| own % | function | | incl. % | function (with callees) |", "|---|---|---|---|---|"]
    own_top = own.most_common(top)
    # Frames in nearly every sample are the reactor's run loop and twistd's start-up: not news.
    total_top = [(n, c) for n, c in total.most_common(top + 20) if c < 0.95 * samples][:top]
    for i in range(max(len(own_top), len(total_top))):
        left = own_top[i] if i < len(own_top) else ("", 0)
        right = total_top[i] if i < len(total_top) else ("", 0)
        lines.append(f"| {100 * left[1] / samples:.1f} | `{left[0]}` | | {100 * right[1] / samples:.1f} | "
                     f"`{right[0]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hottest functions of a py-spy raw profile.")
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    sys.stdout.write(summarize(args.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
