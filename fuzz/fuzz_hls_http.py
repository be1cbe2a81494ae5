"""Fuzz the ``/hls/`` resource itself with request targets, through the real ``HTTPSite``.

Where ``fuzz_hls_request.py`` fuzzes the parsers, this one sends
``GET <input> HTTP/1.1`` to an ``HLSResource`` serving a live stream
(``live/cam``, H.264 + AAC, a few segments and parts made by the real muxer,
its generation named ``e1e1e1e1e1`` so the seeds can name its files): the
path split, the query handling, blocking reloads and preload hints as the
resource does them. Every answer under ``/hls/`` must be a status the resource documents
(200, 400, 403, 404, 503; twisted.web's own 400 for a request line it cannot
parse and 501 for an unknown method) and nothing may be logged as a failure (an unexpected exception is a
500 and a logged traceback). A 200 playlist must have as many lines as the
playlist without a credential: a client's query cannot add a line.
Requests that wait are cancelled by closing the connection, as a client that
leaves does. Connections start on the lean ``/hls/`` channel (httptools, as
served), which hands anything else over to twisted.web; an input whose first
byte is 0 is sent as the whole request, head included, for the lean parser.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports(include=["rtmpd"]):
    from rtmpd.hls import live as hls_live
    from rtmpd.hls.access import PlayPermissions
    from rtmpd.hls.answers import HLSAnswers
    from rtmpd.hls.channel import lean_channel
    from rtmpd.hls.resource import HLSResource
    from rtmpd.http.root import HTTPRoot
    from rtmpd.http.site import HTTPSite

from types import SimpleNamespace  # noqa: E402

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from rtmpd.config import ServerConfig  # noqa: E402
from rtmpd.relay.registry import Publication, StreamRegistry  # noqa: E402
from tests.test_hls import stream_messages  # noqa: E402

EPOCH = "e1e1e1e1e1"
#: The resource's statuses, and twisted.web's 501 for a method nothing here has (never 500).
STATUSES = {200, 204, 400, 403, 404, 501, 503}
_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ")
_CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)

_failures: list[dict] = []
globalLogPublisher.addObserver(lambda event: "log_failure" in event and _failures.append(event))


class World:
    """A registry with live/cam published (6 s of media: segments, parts), ``/hls/`` on an HTTPSite."""

    def __init__(self) -> None:
        hls_live._new_epoch = lambda: EPOCH  # a fixed generation name, so seeds can name its files
        clock = Clock()
        clock.advance(1_700_000_000)
        registry = StreamRegistry(ServerConfig(), clock.seconds)
        muxers = hls_live.HLSMuxers(registry, hls_live.HLSSettings(), clock, clock.seconds)
        muxers.start()
        peer = SimpleNamespace(conn_id="c1", peer_addr="127.0.0.1:1")
        stream = registry.publish("live/cam", Publication(peer, 1, "cam", "", 0.0, 0.0))
        for message in stream_messages(180, gop=30):
            stream.relay(message)
        muxers.get("live/cam")  # the muxer starts from the late-join cache at its first request
        for message in stream_messages(180, gop=30)[2:]:
            stream.relay(message.__class__(message.type_id, message.timestamp + 6000, 1, message.payload))
        root = HTTPRoot()
        answers = HLSAnswers(muxers, PlayPermissions(lambda: None, clock.seconds))
        root.mount("hls", HLSResource(answers))
        # As served: connections start on the lean /hls/ channel, which hands over to twisted.web.
        root.lean_channel = lean_channel(answers, clock)
        self.site = HTTPSite(root, reactor=clock)
        self.plain = self.request(b"/hls/live/cam/index.m3u8")[1]
        assert self.plain.startswith(b"#EXTM3U"), self.plain[:200]

    def request(self, target: bytes) -> tuple[int | None, bytes]:
        channel = self.site.buildProtocol(_CLIENT)
        transport = StringTransport(peerAddress=_CLIENT)
        channel.makeConnection(transport)
        # A first byte 0 makes the rest the whole request (head and all); else it is the request target.
        raw = target[1:]
        if target[:1] != b"\x00":
            raw = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        channel.dataReceived(raw)
        answer = transport.value()
        # A request still waiting is cancelled, as when a client leaves.
        channel.connectionLost(Failure(ConnectionDone("the client left")))
        match = _STATUS.match(answer)
        return (int(match[1]) if match else None), answer.partition(b"\r\n\r\n")[2]


_world: list[World] = []


def target(data: bytes) -> None:
    if not _world:
        _world.append(World())
    del _failures[:]
    status, body = _world[0].request(data)
    assert not _failures, f"logged a failure: {_failures[0].get('log_format')!r} for {data[:200]!r}"
    if data.startswith(b"/hls/"):
        assert status is None or status in STATUSES, f"status {status} for {data[:200]!r}"
    else:  # the root's and twisted.web's answers ("GET * ..." is a 405): any but a server error
        assert status is None or status < 500 or status == 501, f"status {status} for {data[:200]!r}"
    # Only for a single request: an input with a line break (or a whole request) may pipeline several.
    single = data[:1] != b"\x00" and b"\n" not in data and b"\r" not in data
    if status == 200 and body.startswith(b"#EXTM3U") and single:
        assert body.count(b"\n") == _world[0].plain.count(b"\n"), body[:300]


if __name__ == "__main__":
    run(target, ())
