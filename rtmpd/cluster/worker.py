"""``python -m rtmpd.cluster.worker TWISTD-ARGS rtmpd ... --worker-spec SPEC``: one worker process.

The parent of ``--workers N`` starts each worker with this module: it is
twistd itself, run under a name that says what the process is. It leaves the
parent's process group first: a Ctrl-C at the terminal reaches the parent
alone, which stops its workers in order (they finalise their recordings).
"""

from __future__ import annotations

import os


def main() -> None:
    os.setpgrp()
    from twisted.scripts.twistd import run

    run()


if __name__ == "__main__":
    main()
