"""Access control with real clients against ``twistd -n rtmpd``: signed URLs, the key file, the HTTP callback.

ffmpeg publishes and plays; rtmpdump (librtmp, the library OBS's RTMP
output descends from) plays with a key-file play key. Refusals are asserted
by the text the client prints and by the absence of any recording. The HTTP
callback is a small HTTP server on 127.0.0.1 in a thread of the test process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.testing import RTMPTestClient
from tests.support import ServerProcess, ffmpeg_publish, ffprobe_streams, require, run
from tests.test_relay_real import (
    ConnectionClosed,
    FfmpegPlayer,
    RtmpdumpPlayer,
    SocketRTMPClient,
    _SocketTransport,
    decode_file,
    gst_publish,
    rss_kib,
)

SECRET = "test-secret-0123456789abcdef-ABCDEF"


class AccessRealTestCase(SynchronousTestCase):
    """A temp directory with a secrets file, a key file and a recording directory; a server per test."""

    def setUp(self) -> None:
        require("ffmpeg")
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-access-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "rec")
        self.secrets = os.path.join(self.tmp, "secrets.txt")
        with open(self.secrets, "w") as f:
            f.write(f"live {SECRET}\n")
        self.keys = os.path.join(self.tmp, "keys.txt")
        self.write_keys("live pub-key-1 name=show\nlive view-key-1 play name=show\n")

    def write_keys(self, text: str) -> None:
        with open(self.keys + ".new", "w") as f:
            f.write(text)
        os.replace(self.keys + ".new", self.keys)

    def start_server(self, *args: str) -> ServerProcess:
        server = ServerProcess("--record-dir", self.record_dir, *args, log_level="info").start()
        self.addCleanup(server.stop)
        return server

    def publish(self, url: str, seconds: float, **kwargs: Any):
        process = ffmpeg_publish(url, seconds, size="320x240", **kwargs)
        self.addCleanup(_kill, process)
        return process

    def player(self, url: str) -> FfmpegPlayer:
        player = FfmpegPlayer(url)
        self.addCleanup(player.kill)
        return player

    def signed(self, server: ServerProcess, name: str, action: str, ttl: float) -> str:
        """The URL with ``python -m rtmpd.sign``'s output appended; a negative ``ttl`` signs in the past."""
        cmd = [sys.executable, "-m", "rtmpd.sign", "--secrets", self.secrets, "--app", "live"]
        cmd += ["--name", name, "--action", action, "--ttl", str(abs(ttl))]
        if ttl < 0:
            cmd += ["--now", str(time.time() + 2 * ttl)]
        result = run(cmd, 30)
        self.assertEqual(result.returncode, 0, result.stderr)
        return f"{server.url(name)}?{result.stdout.strip()}"

    def refused(self, process, timeout: float = 30.0) -> str:
        """Wait for a refused ffmpeg; its stderr."""
        _, stderr = process.communicate(timeout=timeout)
        self.assertNotEqual(process.returncode, 0, stderr)
        return stderr

    def recordings(self) -> list[str]:
        if not os.path.isdir(self.record_dir):
            return []
        return sorted(os.listdir(self.record_dir))


def _kill(process) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _log_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


class SignedURLTests(AccessRealTestCase):
    def test_signed_publish_and_play(self) -> None:
        server = self.start_server("--auth-secrets", self.secrets)
        publisher = self.publish(self.signed(server, "cam", "publish", 120), 6)
        server.wait_for_msg("Access decision", action="publish", outcome="allow")
        player = self.player(self.signed(server, "cam", "play", 120))
        player.wait_frames(30)
        self.assertEqual(publisher.wait(30), 0)
        player.finish()
        self.assertEqual(player.errors(), [])
        self.assertEqual(len(self.recordings()), 1)

    def test_wrong_expired_missing_signatures_refused_nothing_recorded(self) -> None:
        server = self.start_server("--auth-secrets", self.secrets)
        good = self.signed(server, "cam", "publish", 120)
        wrong = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
        cases = {
            "invalid signature": wrong,
            "signature expired": self.signed(server, "cam", "publish", -10),
            "missing signature": server.url("cam"),
            # A play signature cannot publish.
            "invalid signature ": self.signed(server, "cam", "play", 120),
        }
        for reason, url in cases.items():
            stderr = self.refused(self.publish(url, 5))
            self.assertIn(f"Server error: Publish refused: {reason.strip()}", stderr)
        # A player with a publish signature is refused too.
        player = self.player(self.signed(server, "cam", "publish", 120))
        player.finish()
        self.assertTrue(
            any("Play refused: invalid signature" in line for line in player.stderr), player.stderr
        )
        self.assertEqual(self.recordings(), [])
        self.assertEqual(len(server.messages("Command refused")), 5)
        closed = [e for e in server.messages("Connection closed") if "refused" in e.get("reason", "")]
        self.assertEqual(len(closed), 5)

    def test_publisher_disconnected_at_expiry_and_recording_finalised(self) -> None:
        server = self.start_server("--auth-secrets", self.secrets)
        url = self.signed(server, "cam", "publish", 4)
        exp = int(url.split("exp=")[1].split("&")[0])
        publisher = self.publish(url, 60)
        server.wait_for_msg("recording started", timeout=20)
        expired = server.wait_for_msg("Permission expired; disconnecting", timeout=20)
        late = _log_time(expired) - exp
        self.assertGreaterEqual(late, -0.05)
        self.assertLess(late, 1.0)
        finalized = server.wait_for_msg("recording finalized", timeout=20)
        publisher.wait(20)  # ffmpeg notices the closed connection and exits
        streams = ffprobe_streams(finalized["file"])
        self.assertEqual(sorted(s["codec_type"] for s in streams), ["audio", "video"])
        self.assertEqual(decode_file(finalized["file"]), [])

    def test_unauthorised_takeover_refused_live_publisher_continues(self) -> None:
        server = self.start_server("--auth-secrets", self.secrets, "--publish-takeover")
        publisher = self.publish(self.signed(server, "cam", "publish", 120), 12)
        player = self.player(self.signed(server, "cam", "play", 120))
        player.wait_frames(15)
        stderr = self.refused(self.publish(server.url("cam") + "?exp=9999999999&sig=" + "ab" * 32, 5))
        self.assertIn("Server error: Publish refused: invalid signature", stderr)
        before = player.frames
        player.wait_frames(before + 30)
        self.assertIsNone(publisher.poll())
        self.assertEqual(server.messages("Publisher replaced"), [])
        # An authorised takeover still works.
        second = self.publish(self.signed(server, "cam", "publish", 120), 3)
        server.wait_for_msg("Publisher replaced")
        self.assertEqual(second.wait(30), 0)


class KeyFileTests(AccessRealTestCase):
    def test_publish_key_accepted_wrong_key_refused_rtmpdump_plays_with_play_key(self) -> None:
        require("rtmpdump")
        server = self.start_server("--auth-keys", self.keys)
        stderr = self.refused(self.publish(server.url("wrong-key"), 5))
        self.assertIn("Server error: Publish refused: unknown stream key", stderr)
        publisher = self.publish(server.url("pub-key-1"), 8)
        server.wait_for_msg(
            "Publish started" if False else "Access decision", action="publish", outcome="allow"
        )
        path = os.path.join(self.tmp, "dump.flv")
        dump = RtmpdumpPlayer(server.url("view-key-1"), path)
        self.addCleanup(dump.kill)
        # librtmp prints the status code of a refused play (not its description) and gives up.
        bad = run(
            [require("rtmpdump"), "-r", server.url("wrong-view"), "--live", "-m", "5", "-o", os.devnull], 30
        )
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("ERROR: Closing connection: NetStream.Play.Failed", bad.stderr)
        publisher.wait(30)
        dump.finish()
        self.assertGreater(len(dump.video), 30)
        self.assertEqual(decode_file(path), [])
        # The key never reaches the recordings: the stream is recorded under its name.
        self.assertEqual([name.startswith("live_show_") for name in self.recordings()], [True])

    def test_gstreamer_rtmp2sink_publishes_with_the_key(self) -> None:
        server = self.start_server("--auth-keys", self.keys)
        wrong = gst_publish(server.url("wrong-key"), 3)
        self.addCleanup(_kill, wrong)
        _, stderr = wrong.communicate(timeout=30)
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn('"description": "Publish refused: unknown stream key"', stderr)
        right = gst_publish(server.url("pub-key-1"), 3)
        self.addCleanup(_kill, right)
        _, stderr = right.communicate(timeout=30)
        self.assertEqual(right.returncode, 0, stderr)
        finalized = server.wait_for_msg("recording finalized", timeout=20)
        self.assertIn("live_show_", finalized["file"])
        # ffprobe, not a full decode: what GStreamer's flvmux timestamps is not this test's business.
        streams = ffprobe_streams(finalized["file"])
        self.assertEqual(sorted(s["codec_type"] for s in streams), ["audio", "video"])

    def test_sighup_reload_while_live(self) -> None:
        server = self.start_server("--auth-keys", self.keys)
        live = self.publish(server.url("pub-key-1"), 30)
        player = self.player(server.url("view-key-1"))
        player.wait_frames(15)
        self.write_keys("live pub-key-2 name=other\nlive view-key-1 play name=show\n")
        start = len(server.events)
        server.signal(signal.SIGHUP)
        server.wait_for_msg("Access reloaded", start=start)
        # The new key works at once; the removed one is refused for new publishes.
        second = self.publish(server.url("pub-key-2"), 2)
        self.assertEqual(second.wait(30), 0)
        stderr = self.refused(self.publish(server.url("pub-key-1"), 5))
        self.assertIn("Server error: Publish refused: unknown stream key", stderr)
        # The live stream went on throughout.
        before = player.frames
        player.wait_frames(before + 30)
        self.assertIsNone(live.poll())

    def test_revoke_live_ends_the_publisher_of_a_removed_key(self) -> None:
        server = self.start_server("--auth-keys", self.keys, "--auth-revoke-live")
        live = self.publish(server.url("pub-key-1"), 60)
        server.wait_for_msg("recording started", timeout=20)
        self.write_keys("live view-key-1 play name=show\n")
        server.signal(signal.SIGHUP)
        server.wait_for_msg("Publish key removed; ending its live publisher", stream_key="live/show")
        live.wait(20)
        finalized = server.wait_for_msg("recording finalized", timeout=20)
        self.assertEqual(decode_file(finalized["file"]), [])


class _Callback(BaseHTTPRequestHandler):
    """POST handler: asks the server's ``decide(body) -> (status, body bytes) or None`` (None: hang)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        answer = self.server.decide(body)  # type: ignore[attr-defined]
        if answer is None:
            self.server.release.wait(60)  # type: ignore[attr-defined]
            return
        status, payload = answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


class CallbackTests(AccessRealTestCase):
    def callback(self, decide: Callable[[dict], tuple[int, bytes] | None]) -> str:
        http = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
        http.daemon_threads = True
        http.decide = decide  # type: ignore[attr-defined]
        http.requests = []  # type: ignore[attr-defined]
        http.release = threading.Event()  # type: ignore[attr-defined]
        self.http = http
        threading.Thread(target=http.serve_forever, daemon=True).start()

        def stop() -> None:
            http.release.set()  # type: ignore[attr-defined]
            http.shutdown()
            http.server_close()

        self.addCleanup(stop)
        return f"http://127.0.0.1:{http.server_address[1]}/auth"

    def test_allow_deny_rename_record_false(self) -> None:
        def decide(body: dict) -> tuple[int, bytes]:
            if body["action"] != "publish":
                return 204, b""
            return {
                "denied": (403, b""),
                "secret": (200, json.dumps({"allow": True, "name": "renamed"}).encode()),
                "norec": (200, json.dumps({"record": False}).encode()),
            }.get(body["name"], (200, b""))

        server = self.start_server("--auth-callback", self.callback(decide))
        stderr = self.refused(self.publish(server.url("denied"), 5))
        self.assertIn("Server error: Publish refused: refused by the authorisation service", stderr)
        renamed = self.publish(server.url("secret?token=t1"), 6)
        server.wait_for_msg("Access decision", action="publish", outcome="allow", renamed_to="renamed")
        player = self.player(server.url("renamed"))
        player.wait_frames(30)
        self.assertEqual(renamed.wait(30), 0)
        norec = self.publish(server.url("norec"), 2)
        self.assertEqual(norec.wait(30), 0)
        plain = self.publish(server.url("plain"), 2)
        self.assertEqual(plain.wait(30), 0)
        recorded = self.recordings()
        self.assertEqual([n.split("_")[1] for n in recorded], ["plain", "renamed"], recorded)
        publish = [r for r in self.http.requests if r["action"] == "publish" and r["name"] == "secret"]
        self.assertEqual(publish[0]["query"], "token=t1")
        self.assertEqual(publish[0]["addr"], "127.0.0.1")
        self.assertIn("Lavf", publish[0]["flashVer"])
        self.assertTrue(publish[0]["tcUrl"].startswith("rtmp://127.0.0.1:"))

    def test_callback_down_closed_refuses_open_allows(self) -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/auth"
        server = self.start_server("--auth-callback", url)
        stderr = self.refused(self.publish(server.url("cam"), 5))
        self.assertIn("Connect refused: authorisation service unavailable", stderr)
        server.stop()
        server = self.start_server("--auth-callback", url, "--auth-failure-policy", "open")
        self.assertEqual(self.publish(server.url("cam"), 2).wait(30), 0)
        self.assertEqual(len(self.recordings()), 1)

    def test_callback_that_never_answers_refused_at_timeout_others_play_on(self) -> None:
        server = self.start_server(
            "--auth-callback", self.callback(lambda body: None if body["name"] == "slow" else (204, b"")),
            "--auth-callback-timeout", "3",
        )  # fmt: skip
        good = self.publish(server.url("good"), 20)
        player = self.player(server.url("good"))
        player.wait_frames(15)
        started = time.monotonic()
        frames_before, media_before = player.frames, player.media_seconds
        stderr = self.refused(self.publish(server.url("slow"), 5))
        waited = time.monotonic() - started
        self.assertIn("Publish refused: authorisation service unavailable", stderr)
        self.assertGreaterEqual(waited, 3.0)
        # The other stream kept playing in real time meanwhile.
        self.assertGreater(player.frames - frames_before, 30 * (waited - 1.5))
        self.assertGreater(player.media_seconds - media_before, waited - 1.5)
        self.assertIsNone(good.poll())


class BruteForceTests(AccessRealTestCase):
    ATTACKER = "127.0.0.2"

    def attempt(self, port: int) -> str:
        """One wrong publish from ATTACKER; the code the server answered with."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.ATTACKER, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        client = SocketRTMPClient.__new__(SocketRTMPClient)
        client.sock, client.local_port, client.closed = sock, sock.getsockname()[1], False
        client.protocol = RTMPTestClient()
        client.protocol.makeConnection(_SocketTransport(sock))
        try:
            client.handshake()
            try:
                client.wait(client.protocol.connect("live"))
            except Exception as e:
                return str(getattr(e, "info", {}).get("code", e))
            sid = client.wait(client.protocol.create_stream())
            try:
                client.wait(client.protocol.publish(sid, "cam?exp=9999999999&sig=" + "cd" * 32))
            except Exception as e:
                return str(getattr(e, "info", {}).get("code", e))
            return "accepted"
        except ConnectionClosed:
            return "closed"
        finally:
            sock.close()

    def test_two_hundred_wrong_attempts(self) -> None:
        server = self.start_server("--auth-secrets", self.secrets)
        publisher = self.publish(self.signed(server, "cam", "publish", 120), 40)
        player = self.player(self.signed(server, "cam", "play", 120))
        player.wait_frames(15)
        rss_before = rss_kib(server.process.pid)
        started = time.monotonic()
        frames_before, media_before = player.frames, player.media_seconds
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _: self.attempt(server.port), range(200)))
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 20.0)
        self.assertNotIn("accepted", codes)
        self.assertGreaterEqual(codes.count("NetConnection.Connect.Rejected"), 150, codes)
        late = self.attempt(server.port)
        self.assertEqual(late, "NetConnection.Connect.Rejected")
        self.assertTrue(
            server.messages("Address locked out after repeated authorisation failures"), "no lockout logged"
        )
        growth_mib = (rss_kib(server.process.pid) - rss_before) / 1024
        self.assertLess(growth_mib, 64)
        player.wait_frames(frames_before + 1)
        self.assertGreater(player.media_seconds - media_before, elapsed - 1.5)
        self.assertIsNone(publisher.poll())
