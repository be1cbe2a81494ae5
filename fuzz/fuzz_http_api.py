"""Fuzz the JSON API (``/api/v1/``) with raw HTTP requests: the router, the token rule and JSON bodies.

The input's first byte picks the client's address (loopback or not); the
rest is written as is into an HTTP connection of the real ``HTTPSite`` (its
body and time limits included), whose tree holds the API of an in-memory
server with ``live/test`` published and played and a push service. Every
answer must be one of the API's documented statuses (never 500) with a JSON
body, and nothing may be logged as a failure. A request that changed the
server (a POST answered 200) makes the next input start from a fresh server,
so every input meets the same state.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports(include=["rtmpd"]):
    # The API's modules, the HTTP tree and the Site's limits (each imports the rest it needs).
    from rtmpd.http.api.resource import APIResource  # noqa: F401
    from rtmpd.http.root import HTTPRoot
    from rtmpd.http.site import HTTPSite

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.defer import fail  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from rtmpd.core.messages import MessageType  # noqa: E402
from rtmpd.remote.push import PushService  # noqa: E402
from rtmpd.tap.api import install_api  # noqa: E402
from rtmpd.testing import MemoryServer  # noqa: E402

#: The bearer token of the fuzzed API (the seed corpus uses it, so mutations can pass the token rule).
TOKEN = "fuzz-token-0123456789abcdef"
#: Statuses the API and the Site's limits document, and twisted.web's own 400 (a request it cannot parse)
#: and 501 (a method no resource outside the API has); anything else (a 500 above all) is a finding.
STATUSES = {200, 400, 401, 403, 404, 405, 408, 409, 413, 501}
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
_ADDRESSES = (IPv4Address("TCP", "127.0.0.1", 40000), IPv4Address("TCP", "192.0.2.7", 40000))

_failures: list[dict] = []


def _observe(event: dict) -> None:
    if "log_failure" in event:
        _failures.append(event)


globalLogPublisher.addObserver(_observe)


class World:
    """An in-memory server publishing and playing live/test, with the API on an HTTPSite."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-fuzz-api-")
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)
        os.chmod(token_file, 0o600)
        self.server = MemoryServer()
        top = self.server.service
        PushService(
            top.registry,
            self.server.clock,
            lambda destination, rule: fail(ConnectionRefusedError("fuzz")),
            max_queue_bytes=1 << 20,
            stall_timeout=5.0,
        ).setServiceParent(top)
        root = HTTPRoot()
        install_api(top, root, token_file, False, lambda: [])
        self.site = HTTPSite(root, reactor=self.server.clock, max_body=4096, request_timeout=5)
        publisher, sid = self.server.publisher()
        publisher.send_metadata(sid, {"width": 640.0, "height": 360.0})
        publisher.send_media(MessageType.VIDEO, sid, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff")
        self.server.player()
        self.server.flush()
        os.unlink(token_file)
        os.rmdir(self.tmp)

    def request(self, address: IPv4Address, raw: bytes) -> bytes:
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        self.server.flush()
        answer = transport.value()
        channel.connectionLost(Failure(ConnectionDone("the client left")))
        return answer


_world: list[World] = []


def _first_response(answer: bytes) -> tuple[int | None, bytes, bytes]:
    """Status, lowercased head and body (by Content-Length or chunked) of the first answer."""
    match = _STATUS.match(answer)
    if match is None:
        return None, b"", b""
    head, _, rest = answer.partition(b"\r\n\r\n")
    head = head.lower()
    length = re.search(rb"\r\ncontent-length: (\d+)", head)
    if length is not None:
        return int(match[1]), head, rest[: int(length[1])]
    if b"transfer-encoding: chunked" in head:
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if not size or int(size, 16) == 0:
                return int(match[1]), head, body
            body += rest[: int(size, 16)]
            rest = rest[int(size, 16) + 2 :]
    return int(match[1]), head, rest


def target(data: bytes) -> None:
    if not data:
        return
    if not _world:
        _world.append(World())
    del _failures[:]
    raw = data[1:]
    answer = _world[0].request(_ADDRESSES[data[0] & 1], raw)
    assert not _failures, f"logged a failure: {_failures[0].get('log_format')!r}"
    status, head, body = _first_response(answer)
    if status is None:
        return
    assert status in STATUSES, f"status {status} for {raw[:200]!r}"
    if b"application/json" in head and body.strip() and not raw.lstrip().startswith(b"HEAD"):
        json.loads(body)
    if b"POST" in raw and b" 200 " in answer:
        _world.clear()  # it changed the server: the next input starts from a fresh one


if __name__ == "__main__":
    run(target, ())
