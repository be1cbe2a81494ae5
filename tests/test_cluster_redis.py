"""``RedisDirectory`` against a real Redis (Debian's redis-server, started here on loopback).

``RedisServer`` is also the Redis of the two-host test (tests/test_cluster_real.py):
it listens on 127.0.0.1 at a free port with ``--save ""`` (nothing written to
disk), is awaited by its "Ready to accept connections" line, and is stopped
by its PID.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from rtmpd.cluster.directory import DirectoryUnavailable, Node
from rtmpd.cluster.redis import PREFIX, RedisDirectory, redis_client
from tests.support import require

A = Node("a", "rtmp://127.0.0.2:1935")
B = Node("b", "rtmp://127.0.0.3:1935")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = require("redis-server")
        self.lines = []
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read(process: subprocess.Popen) -> None:
            for line in process.stdout:
                self.lines.append(line)
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=read, args=(self.process,), daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise AssertionError(f"redis-server did not start: {''.join(self.lines)[-2000:]}")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)


class RedisDirectoryTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.a = RedisDirectory(redis_client(self.redis.url), A, ttl=1.0, reactor=reactor)
        self.b = RedisDirectory(redis_client(self.redis.url), B, ttl=1.0, reactor=reactor)
        for directory in (self.a, self.b):
            self.addCleanup(directory.client.close)

    def test_claim_refresh_release_lookup(self):
        async def run() -> None:
            self.assertEqual(await self.a.claim("live/k"), A)
            self.assertEqual(await self.b.claim("live/k"), A, "a live claim stays its owner's")
            self.assertEqual(await self.a.claim("live/k"), A, "claiming again is a refresh")
            self.assertEqual(await self.b.lookup("live/k"), A)
            self.assertTrue(await self.a.refresh("live/k"))
            self.assertFalse(await self.b.refresh("live/k"), "b cannot refresh a's claim")
            await self.b.release("live/k")
            self.assertEqual(await self.b.lookup("live/k"), A, "b cannot release a's claim")
            ttl_ms = self.a.client.pttl(PREFIX + "live/k")
            self.assertTrue(0 < ttl_ms <= 1000, ttl_ms)
            self.assertEqual(await self.a.claims(), {"live/k": A})
            await self.a.release("live/k")
            self.assertIsNone(await self.b.lookup("live/k"))
            self.assertEqual(await self.b.claim("live/k"), B)

        return ensureDeferred(run())

    def test_takeover_and_expiry(self):
        async def run() -> None:
            await self.a.claim("live/t")
            self.assertEqual(await self.b.claim("live/t", takeover=True), B)
            self.assertFalse(await self.a.refresh("live/t"), "a lost its claim")
            await self.a.claim("live/e")
            deadline = time.monotonic() + 5
            while self.a.client.exists(PREFIX + "live/e") and time.monotonic() < deadline:
                await self.a.lookup("live/e")  # ask Redis again; its own clock expires the key
            self.assertIsNone(await self.b.lookup("live/e"), "not refreshed: expired within the TTL")
            self.assertEqual(await self.b.claim("live/e"), B)

        return ensureDeferred(run())

    def test_many_claims_listed(self):
        a = RedisDirectory(self.a.client, A, ttl=60.0, reactor=reactor)
        b = RedisDirectory(self.b.client, B, ttl=60.0, reactor=reactor)

        async def run() -> None:
            for i in range(1200):
                await (a if i % 2 else b).claim(f"live/{i}")
            claims = await a.claims()
            self.assertEqual(len(claims), 1200)
            self.assertEqual(claims["live/7"], A)
            self.assertEqual(claims["live/8"], B)

        return ensureDeferred(run())

    def test_redis_down_is_directory_unavailable_and_recovers(self):
        async def run() -> None:
            await self.a.claim("live/d")
            self.redis.stop()
            started = time.monotonic()
            for call in (
                lambda: self.a.claim("live/x"),
                lambda: self.a.refresh("live/d"),
                lambda: self.a.release("live/d"),
                lambda: self.a.lookup("live/d"),
                lambda: self.a.claims(),
            ):
                with self.assertRaises(DirectoryUnavailable) as caught:
                    await call()
                self.assertIn("redis", str(caught.exception))
            self.assertLess(time.monotonic() - started, 10, "fails fast")
            self.redis.start()
            self.assertEqual(await self.a.claim("live/x"), A)

        return ensureDeferred(run())
