"""Micro benchmark of the push path: one stream relayed to N push destinations or N local players, in memory.

Both setups are the real code end to end up to the socket: a publisher's
messages go through ``Stream.relay`` (inside the fan-out ``Outbox``'s
hold/release, as one publisher input each), and then either to N
``PushDestination``s publishing over ``RTMPClientProtocol`` or to N local
RTMP players. Every outgoing transport is an in-memory sink that only counts
bytes, so what is measured is rtmpd's Python work per message, not the
kernel's. The stream is synthetic: 3 Mb/s of video at 30 fps with a keyframe
every 2 s, and AAC audio at 48 kHz (about 47 frames a second).

    python -m benchmarks.push_micro --n 3 --seconds 60 [--profile push|players]

prints CPU microseconds per published message for each setup, and with
``--profile`` the top functions of a cProfile of that setup.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

from twisted.internet.defer import succeed
from twisted.test import iosim

from rtmpd.config import ServerConfig
from rtmpd.core.client import ClientSession
from rtmpd.core.messages import Message, MessageType
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.destination import DestinationState
from rtmpd.remote.push import RELAY_FLASH_VER, PushService
from rtmpd.testing import MemoryServer
from tests.media_samples import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER

VIDEO = int(MessageType.VIDEO)
AUDIO = int(MessageType.AUDIO)
BITRATE = 3_000_000
FPS = 30
GOP_FRAMES = 60
AUDIO_FRAME_MS = 1024 / 48


class SinkTransport:
    """Takes every write and keeps only the count (an infinitely fast socket)."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def writeSequence(self, chunks: list[bytes]) -> None:
        self.bytes += sum(map(len, chunks))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


def stream_messages(seconds: float) -> list[Message]:
    """Video and audio of ``seconds`` of a synthetic 3 Mb/s stream, in timestamp order."""
    frame_bytes = BITRATE // 8 // FPS
    out: list[tuple[float, Message]] = []
    for i in range(int(seconds * FPS)):
        ts = int(i * 1000 / FPS)
        key = i % GOP_FRAMES == 0
        size = frame_bytes * 6 if key else frame_bytes * (GOP_FRAMES - 6) // (GOP_FRAMES - 1)
        head = bytes([0x17 if key else 0x27, 0x01, 0, 0, 0])
        out.append((ts, Message(VIDEO, ts, 1, head + bytes([i & 0xFF]) * size)))
    for i in range(int(seconds * 1000 / AUDIO_FRAME_MS)):
        ts = int(i * AUDIO_FRAME_MS)
        out.append((ts + 0.5, Message(AUDIO, ts, 1, b"\xaf\x01" + bytes([i & 0xFF]) * 370)))
    out.sort(key=lambda pair: pair[0])
    return [m for _, m in out]


class Setup:
    """A MemoryServer with a publisher on live/bench and N players or N push destinations."""

    def __init__(self, kind: str, n: int) -> None:
        self.server = MemoryServer(ServerConfig())
        self.clock = self.server.clock
        self.sinks: list[SinkTransport] = []
        publisher, sid = self.server.publisher("bench")
        publisher.send_metadata(sid, {"width": 1280.0, "height": 720.0})
        publisher.send_media(VIDEO, sid, 0, AVC_SEQUENCE_HEADER)
        publisher.send_media(AUDIO, sid, 0, AAC_SEQUENCE_HEADER)
        self.server.flush()
        self.stream = self.server.registry.get("live/bench")
        self.push: PushService | None = None
        if kind == "push":
            self.push = PushService(self.server.registry, self.clock, self._connect, grace=10.0)
            self.push.startService()
            for i in range(n):
                self.push.add("live/*", f"rtmp://127.0.0.1:1935/out/{{name}}-{i}")
            self.server.flush()
            destinations = [self.push.destination("live/bench", rule) for rule in range(1, n + 1)]
            assert all(d is not None and d.state is DestinationState.PUBLISHING for d in destinations)
            for d in destinations:
                d.client.transport = self._sink(d.client.transport)
        else:
            for _ in range(n):
                self.server.player("bench")
            for player in self.stream.players:
                player.peer.transport = self._sink(player.peer.transport)
        self.outbox = self.server.factory.outbox

    def _sink(self, transport: Any) -> SinkTransport:
        sink = SinkTransport(transport)
        self.sinks.append(sink)
        return sink

    def _connect(self, destination: Any, rule: Any) -> Any:
        url = destination.url
        session = ClientSession(
            mode="publish", app=url.app, tc_url=url.tc_url, stream_name=url.name, flash_ver=RELAY_FLASH_VER
        )
        client = RTMPClientProtocol(session, destination, self.clock, 10.0)
        server_protocol = self.server.factory.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_protocol, lambda: client, clock=self.clock, greet=False
        )
        self.server.pumps.append(pump)
        return succeed(client)

    def feed(self, messages: list[Message]) -> None:
        """Each message as one publisher input, as ``RTMPProtocol.dataReceived`` brackets it."""
        stream, outbox, clock = self.stream, self.outbox, self.clock
        base = stream.last_timestamp + 1
        for m in messages:
            outbox.hold()
            stream.relay(Message(m.type_id, m.timestamp + base, m.stream_id, m.payload))
            outbox.release()
            clock.advance(0)

    @property
    def bytes_out(self) -> int:
        return sum(s.bytes for s in self.sinks)


def measure(kind: str, n: int, messages: list[Message], profile: bool) -> dict[str, Any]:
    setup = Setup(kind, n)
    setup.feed(messages[:200])  # warm the caches and the late-join path
    before = setup.bytes_out
    profiler = cProfile.Profile() if profile else None
    t0 = time.process_time()
    if profiler is not None:
        profiler.enable()
    setup.feed(messages)
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - t0
    delivered = setup.bytes_out - before
    return {
        "kind": kind,
        "cpu_s": cpu,
        "messages": len(messages),
        "delivered": delivered,
        "us_per_message": cpu / len(messages) * 1e6,
        "profiler": profiler,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="destinations / players (default 3)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of stream fed (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", choices=["push", "players"], help="cProfile this setup (one run)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    messages = stream_messages(args.seconds)
    if args.profile:
        result = measure(args.profile, args.n, messages, True)
        print(f"{args.profile}: {result['us_per_message']:.1f} us per message (profiled)")
        stats = pstats.Stats(result["profiler"])
        stats.sort_stats("tottime").print_stats(args.top)
        return
    print(f"{len(messages)} messages, {args.n} outputs each; CPU us per published message")
    print("| run | players | push | push / players | delivered MB players / push |")
    print("|---|---|---|---|---|")
    for run in range(1, args.repeats + 1):
        players = measure("players", args.n, messages, False)
        push = measure("push", args.n, messages, False)
        print(
            f"| {run} | {players['us_per_message']:.1f} | {push['us_per_message']:.1f} | "
            f"{push['us_per_message'] / players['us_per_message']:.2f}x | "
            f"{players['delivered'] / 1e6:.1f} / {push['delivered'] / 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
