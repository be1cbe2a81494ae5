"""A second load client, unlike ``benchmarks.loadclient``: N RTMP players on one asyncio loop, each reading
in small pieces (a 4 KiB buffer per read) and acknowledging at half the server's window.

Every player does the real handshake, ``connect``, ``createStream`` and
``play`` with ``benchmarks.session.ClientSession``; once media arrives it is
*playing*. From then on most players only count bytes (acknowledging as they
go); ``--sample`` players keep parsing and log, for each audio/video message,
its type, RTMP timestamp and the ``time.monotonic()`` of the read that
completed it. The point is a different reader: asyncio's transport calls, a
small receive buffer, twice as many acknowledgements, so a server tuned to
one client's habits shows it.

The protocol with ``benchmarks.run`` is ``benchmarks.loadclient``'s: ``ready``,
then ``start``/``stop`` on stdin, the results in ``--out``, ``done``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from benchmarks.session import ClientSession
from rtmpd.core.messages import CONTROL_CSID, acknowledgement

#: Bytes a player reads at most per read.
READ_SIZE = 4096
_MAX_SETTING_UP = 32


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HalfWindowSession(ClientSession):
    """A client session that acknowledges at half the window the server asked for."""

    def acknowledge(self) -> bytes:
        window = self.ack_window // 2
        if window and self.bytes_received - self.last_ack >= window:
            self.last_ack = self.bytes_received
            return self.writer.write(CONTROL_CSID, acknowledgement(self.bytes_received))
        return b""


class Player(asyncio.BufferedProtocol):
    """One player: parses until it plays, then counts (or keeps parsing when sampled)."""

    def __init__(self, index: int, session: HalfWindowSession, sampled: bool, window: dict) -> None:
        self.index = index
        self.session = session
        self.sampled = sampled
        self.window = window
        self.buffer = bytearray(READ_SIZE)
        self.transport: asyncio.Transport | None = None
        self.playing = asyncio.get_running_loop().create_future()
        self.bytes = self.window_bytes = 0
        self.error = ""
        self.ready_at = 0.0
        self.log: list[tuple[int, int, float]] = []
        self.counting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.session.initial())

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes += nbytes
        if "start" in self.window and "stop" not in self.window:
            self.window_bytes += nbytes
        session = self.session
        if self.counting:
            session.bytes_received += nbytes
            ack = session.acknowledge()
            if ack:
                self.transport.write(ack)
            return
        try:
            reply, media = session.receive(bytes(self.buffer[:nbytes]))
        except Exception as e:  # a refused play or bad bytes: this player's result
            self.fail(f"{type(e).__name__}: {e}")
            return
        if reply:
            self.transport.write(reply)
        if media:
            now = time.monotonic()
            if self.sampled and "start" in self.window and "stop" not in self.window:
                self.log += [(m.type_id, m.timestamp, now) for m in media]
            if not self.playing.done():
                self.ready_at = now
                self.playing.set_result(None)
                # Counting needs no parsing, only the byte count; sampled players keep parsing.
                self.counting = not self.sampled

    def fail(self, error: str) -> None:
        if not self.error:
            self.error = error[:200]
        if not self.playing.done():
            self.playing.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.error and self.window.get("stop") is None:
            self.error = f"connection lost: {exc}" if exc else "server closed the connection"
        if not self.playing.done():
            self.playing.set_result(None)


async def _run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    window: dict = {}
    players: list[Player] = []
    gate = asyncio.Semaphore(_MAX_SETTING_UP)
    tc_url = f"rtmp://{args.host}:{args.port}/{args.app}"

    async def start(index: int) -> None:
        session = HalfWindowSession(args.app, args.key, "play", tc_url=tc_url)
        player = Player(index, session, index < args.sample, window)
        players.append(player)
        async with gate:
            try:
                await loop.create_connection(lambda: player, args.host, args.port)
                await asyncio.wait_for(player.playing, args.ready_timeout)
            except (TimeoutError, OSError) as e:
                player.fail(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(start(i) for i in range(args.players)))
    _emit(event="ready", playing=sum(1 for p in players if p.ready_at and not p.error),
          failed=sum(1 for p in players if p.error))
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    deadline = time.monotonic() + args.max_seconds
    while True:
        try:
            line = await asyncio.wait_for(stdin.readline(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        command = line.decode().strip()
        if command == "start":
            window["cpu_start"] = _cpu_seconds()
            window["start"] = time.monotonic()
        elif command == "stop" or not line:
            window["stop"] = time.monotonic()
            window["cpu_stop"] = _cpu_seconds()
            break
    start_t, stop_t = window.get("start", 0.0), window.get("stop", 0.0)
    result = {
        "players": len(players),
        "playing": sum(1 for p in players if p.ready_at and not p.error),
        "failed": sum(1 for p in players if p.error),
        "window": [start_t, stop_t],
        "cpu_seconds": window.get("cpu_stop", 0.0) - window.get("cpu_start", 0.0),
        "per_player": [
            {"index": p.index, "bytes": p.window_bytes, "sampled": p.sampled, "stalled": False,
             "error": p.error, "ready_at": p.ready_at, "log": p.log}
            for p in players
        ],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    _emit(event="done", out=args.out)
    for p in players:
        if p.transport is not None:
            p.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N RTMP players on an asyncio loop, small reads.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="live")
    parser.add_argument("--key", default="bench")
    parser.add_argument("--players", type=int, required=True)
    parser.add_argument("--sample", type=int, default=10, help="players that parse every message")
    parser.add_argument("--stalled", type=int, default=0, help="not supported here: must be 0")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this long")
    parser.add_argument("--out", required=True, help="results file (JSON)")
    args = parser.parse_args(argv)
    if args.stalled:
        parser.error("--stalled is only supported by benchmarks.loadclient")
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
