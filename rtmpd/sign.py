"""``python -m rtmpd.sign``: print the query string that signs a stream name for publish or play.

    python -m rtmpd.sign --secrets secrets.txt --app live --name KEY --action publish --ttl 3600
    exp=1767229200&sig=5c0f...

Append it to the stream name after ``?`` (``KEY?exp=...&sig=...``: OBS's
Stream Key field, or ``rtmp://host/live/KEY?exp=...&sig=...`` for ffmpeg).
``--url rtmp://host/live`` prints the whole URL instead. The app's first
secret in the file signs (rotation: see docs/access.md). ``--now`` replaces
the clock (Unix time), for tests and for signing ahead of time.

Exit status 0 on success, 2 on a usage error or a secrets file that does
not parse (the message names the line and never shows a secret).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rtmpd.access.errors import SecretsFileError
from rtmpd.access.signed import SecretsFile, signed_query

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rtmpd.sign",
        description="Print exp=...&sig=... to append to a stream name (KEY?exp=...&sig=...).",
    )
    parser.add_argument("--secrets", required=True, metavar="FILE", help="secrets file of 'APP SECRET' lines")
    parser.add_argument("--app", required=True, help="application name (live in rtmp://host/live/KEY)")
    parser.add_argument("--name", required=True, metavar="KEY", help="stream name, without any query")
    parser.add_argument("--action", required=True, choices=("publish", "play"))
    parser.add_argument("--ttl", required=True, type=float, metavar="SECONDS", help="lifetime, > 0")
    parser.add_argument("--now", type=float, metavar="UNIX", help="sign as if it were this time")
    parser.add_argument("--encoding", choices=("hex", "base64url"), default="hex")
    parser.add_argument("--url", metavar="BASE", help="print BASE/KEY?query (e.g. rtmp://host/live)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.ttl > 0:
        parser.error("--ttl must be greater than 0")
    if "?" in args.name or not args.name:
        parser.error("--name is the stream name without a query")
    try:
        secrets = SecretsFile(args.secrets).secrets_for(args.app)
    except SecretsFileError as e:
        parser.error(str(e))
    if not secrets:
        parser.error(f"no secret for app {args.app!r} in {args.secrets}")
    now = time.time() if args.now is None else args.now
    exp = int(now + args.ttl)
    query = signed_query(secrets[0], args.action, args.app, args.name, exp, args.encoding)
    if args.url:
        print(f"{args.url.rstrip('/')}/{args.name}?{query}")
    else:
        print(query)
    return 0


if __name__ == "__main__":
    sys.exit(main())
