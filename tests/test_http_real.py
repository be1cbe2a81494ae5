"""The HTTP listener (``--http``) of a real ``twistd -n rtmpd``: health, readiness, errors, bad requests."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import urllib.error
import urllib.request

from twisted.trial.unittest import TestCase

from rtmpd.core.handshake import HANDSHAKE_SIZE
from tests.support import ServerProcess


def get(url: str, timeout: float = 10.0) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


class HTTPListenerTests(TestCase):
    def setUp(self) -> None:
        self.record_dir = tempfile.mkdtemp(prefix="rtmpd-http-")
        self.server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", "--record-dir", self.record_dir)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.base = f"http://127.0.0.1:{self.server.port_of('HTTP server')}"

    def assertRTMPAnswers(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            s.sendall(b"\x03" + bytes(HANDSHAKE_SIZE))
            got = b""
            while len(got) < 1 + 2 * HANDSHAKE_SIZE:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "server closed during the handshake")
                got += chunk
            self.assertEqual(got[0], 3)

    def test_healthz_and_dashboard(self) -> None:
        status, headers, body = get(self.base + "/healthz")
        self.assertEqual((status, body), (200, {"status": "ok"}))
        self.assertEqual(headers["Content-Type"], "application/json; charset=utf-8")
        self.assertEqual(headers["Cache-Control"], "no-store")
        with urllib.request.urlopen(self.base + "/", timeout=10) as response:
            self.assertEqual(response.headers["Content-Type"], "text/html; charset=utf-8")
            self.assertIn(b"<title>rtmpd</title>", response.read())

    def test_readyz_follows_the_record_dir(self) -> None:
        status, _, body = get(self.base + "/readyz")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["checks"]["listeners"]["ok"], True)
        self.assertEqual(body["checks"]["record_dir"], {"ok": True, "detail": "writable"})
        os.rmdir(self.record_dir)
        status, _, body = get(self.base + "/readyz")
        self.assertEqual((status, body["status"]), (503, "not ready"))
        self.assertEqual(body["checks"]["record_dir"]["ok"], False)

    def test_unknown_path_is_a_json_404(self) -> None:
        status, _, body = get(self.base + "/no/such/thing")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["status"], 404)
        self.assertEqual(body["error"]["path"], "/no/such/thing")

    def test_hostile_requests_get_errors_and_rtmp_goes_on(self) -> None:
        port = self.server.port_of("HTTP server")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * 20000 + b"\r\n\r\n")
            answer = s.recv(4096)
        # Twisted answers 400 and closes while the rest of the request is unread, so the kernel may reset
        # the connection before the answer is read: either is a clean refusal.
        self.assertTrue(answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:80])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"\x00\xff garbage that is no request line\r\n\r\n")
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer[:80])
        self.assertRTMPAnswers()
        status, _, _ = get(self.base + "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(self.server.errors(), [])
