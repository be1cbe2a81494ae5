"""The JSON API of a real ``twistd -n rtmpd --http ...``, asked with curl while ffmpeg publishes and
ffmpeg, rtmpdump and a raw RTMP client (``rtmpd.testing.RTMPTestClient`` over TCP) play."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import rtmpd
from tests.support import ServerProcess, ffmpeg_publish, ffprobe_streams, require, run
from tests.test_relay_real import FfmpegPlayer, RtmpdumpPlayer, SocketRTMPClient, decode_file

TOKEN = "real-api-token-0123456789abcdef"
FPS = 30


class Curl:
    """curl against one HTTP base URL: (status, headers, JSON body) of a request."""

    def __init__(self, base: str) -> None:
        self.curl = require("curl")
        self.base = base

    def __call__(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        data: bytes | None = None,
        headers: tuple[str, ...] = (),
    ) -> tuple[int, dict[str, str], Any]:
        cmd = [self.curl, "-sS", "-i", "-X", method, "--max-time", "20"]
        for header in headers:
            cmd += ["-H", header]
        if token is not None:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        if data is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        result = run_with_input(cmd + [self.base + path], data)
        assert result[0] == 0, f"curl failed: {result[2]}"
        return parse_response(result[1])


def run_with_input(cmd: list[str], data: bytes | None) -> tuple[int, bytes, str]:
    import subprocess

    process = subprocess.run(cmd, input=data or b"", capture_output=True, timeout=30)
    return process.returncode, process.stdout, process.stderr.decode(errors="replace")


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """The last response in curl -i output (a ``100 Continue`` may come first); status 0 when there is
    none after it (the connection was reset)."""
    while True:
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/"):
            return 0, {}, None
        status = int(head.split(b" ", 2)[1])
        if status != 100:
            break
        raw = body
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, json.loads(body) if body.strip() else None


def decoder_errors(path: str) -> list[str]:
    """What ffmpeg says decoding ``path``, but for its null muxer's complaint about equal DTS.

    A file started by ``record/start`` begins at an audio frame, so its video timestamps are off the
    1/30 s grid ffmpeg's null muxer rounds them to: two frames 33 ms apart can round to the same tick
    ("non monotonically increasing dts to muxer"). That is about ffmpeg's output, not the file.
    """
    return [line for line in decode_file(path) if "non monotonically increasing dts to muxer" not in line]


def decoded_video_frames(path: str) -> int:
    result = run(
        [
            require("ffprobe"),
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path,
        ],
        60,
    )
    return int(result.stdout.strip() or 0)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Ask ``check`` every 0.25 s until it returns something true (the server's 2 s rate samples and a
    recording's finalisation have no event a client can wait on); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s (last: {value!r})")
        time.sleep(0.25)  # polling the API, not synchronising with an event


class StatusWatcher:
    """Reads a playing ``SocketRTMPClient`` in a thread until it sees a status code (or the timeout)."""

    def __init__(self, client: SocketRTMPClient, code: str, timeout: float) -> None:
        self.client = client
        self.code = code
        self.seen = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)
        self.thread.start()

    def codes(self) -> list[str]:
        return [c.args[0].get("code") for c in list(self.client.protocol.commands) if c.name == "onStatus"]

    def _run(self, timeout: float) -> None:
        try:
            self.client.pump_until(lambda: self.code in self.codes(), timeout)
            self.seen.set()
        except BaseException as e:  # reported by wait()
            self.error = e

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)
        if not self.seen.is_set():
            raise AssertionError(f"{self.code} not seen: {self.error!r}; codes: {self.codes()}")


class APIServerTestCase(SynchronousTestCase):
    extra_args: tuple[str, ...] = ()
    #: The token reads are sent with (None: reads are open on loopback).
    read_token: str | None = None

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-api-real-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "rec")
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(token_file, 0o600)
        self.server = ServerProcess(
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--record-dir",
            self.record_dir,
            "--api-token-file",
            token_file,
            *self.extra_args,
        )
        self.server.start()
        self.addCleanup(self.stop_server)
        self.http_port = self.server.port_of("HTTP server")
        self.api = Curl(f"http://127.0.0.1:{self.http_port}/api/v1/")

    def stop_server(self) -> None:
        self.server.stop()
        errors = self.server.errors()
        if errors:
            raise AssertionError(f"the server logged errors: {errors[:3]}")

    def cleanup_process(self, process):
        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(kill)
        return process

    def get(self, path: str) -> Any:
        status, _, body = self.api("GET", path, token=self.read_token)
        self.assertEqual(status, 200, body)
        return body

    def stream(self, key: str = "live/cam") -> dict[str, Any] | None:
        rows = [row for row in self.get("streams")["streams"] if row["key"] == key]
        return rows[0] if rows else None

    def subscriber(self, start: int) -> str:
        """The conn_id of the next player added after log event ``start``."""
        return self.server.wait_for_msg("Subscriber added", 20, start, stream_key="live/cam")["conn_id"]


class APIRealTests(APIServerTestCase):
    def test_every_endpoint_with_ffmpeg_rtmpdump_and_a_raw_client(self) -> None:
        publisher = self.cleanup_process(ffmpeg_publish(self.server.url("cam"), 90))
        self.server.wait_for_msg("Codecs detected", 20, stream_key="live/cam")

        mark = len(self.server.events)
        ffmpeg = FfmpegPlayer(self.server.url("cam"))
        self.addCleanup(ffmpeg.kill)
        ffmpeg_conn = self.subscriber(mark)
        mark = len(self.server.events)
        rtmpdump = RtmpdumpPlayer(self.server.url("cam"), os.path.join(self.tmp, "rtmpdump.flv"))
        self.addCleanup(rtmpdump.kill)
        rtmpdump_conn = self.subscriber(mark)
        raw = SocketRTMPClient(self.server.port)
        self.addCleanup(raw.close)
        raw.start_playing("cam")
        raw_conn = self.server.wait_for_msg("Connection accepted", 10, peer_addr=raw.peer_addr)["conn_id"]
        unpublished = StatusWatcher(raw, "NetStream.Play.UnpublishNotify", 120)
        publisher_conn = self.server.messages("Codecs detected")[0]["conn_id"]

        # GET streams: every field, once the publisher and all three players have been sampled twice
        # with media between the samples (ffmpeg may connect seconds before its encoder sends anything).
        def all_rated() -> bool:
            detail = self.get("streams/live/cam")["stream"]
            players = detail["players"]
            return (
                detail["bitrate_in"] is not None
                and detail["bitrate_in"] > 0
                and len(players) == 3
                and all(p["bitrate_out"] is not None for p in players)
            )

        wait_until(all_rated, 20, "rates of the publisher and three players")
        stream = self.stream()
        self.assertEqual(stream["conn_id"], publisher_conn)
        self.assertTrue(stream["publisher"].startswith("127.0.0.1:"), stream)
        self.assertEqual((stream["video_codec"], stream["audio_codec"]), ("H264", "AAC"))
        self.assertEqual(stream["tracks"], {"video0": "H264", "audio0": "AAC"})
        self.assertEqual((stream["width"], stream["height"], stream["framerate"]), (640, 360, FPS))
        self.assertGreater(stream["uptime"], 0)
        # 96 kb/s of AAC alone: the input rate is above it, and three players get about three times it.
        self.assertGreater(stream["bitrate_in"], 96_000)
        self.assertGreater(stream["bitrate_out"], 1.5 * stream["bitrate_in"])
        self.assertEqual(stream["recording_state"], "recording")
        first_file = stream["recording_file"]
        self.assertTrue(first_file.startswith("live_cam") and first_file.endswith(".flv"), first_file)

        # GET streams/live/cam: the players with their addresses, bytes and uptimes.
        detail = self.get("streams/live/cam")["stream"]
        players = {row["conn_id"]: row for row in detail["players"]}
        self.assertEqual(set(players), {ffmpeg_conn, rtmpdump_conn, raw_conn})
        self.assertEqual(players[raw_conn]["peer"], raw.peer_addr)
        for row in players.values():
            self.assertGreater(row["bytes_sent"], 0)
            self.assertGreaterEqual(row["uptime"], 0)
            self.assertEqual(row["dropped_frames"], 0)
            self.assertGreaterEqual(row["buffered_bytes"], 0)

        # GET connections and server.
        connections = {row["conn_id"]: row for row in self.get("connections")["connections"]}
        self.assertEqual(set(connections), {publisher_conn, ffmpeg_conn, rtmpdump_conn, raw_conn})
        self.assertEqual(connections[publisher_conn]["roles"], ["publish live/cam"])
        self.assertEqual(connections[rtmpdump_conn]["roles"], ["play live/cam"])
        self.assertGreater(connections[publisher_conn]["bytes_in"], 0)
        server = self.get("server")["server"]
        self.assertEqual(server["version"], str(rtmpd.__version__))
        listeners = {row["what"]: row["address"] for row in server["listeners"]}
        self.assertEqual(listeners["RTMP server"], f"127.0.0.1:{self.server.port}")
        self.assertEqual(listeners["HTTP server"], f"127.0.0.1:{self.http_port}")
        self.assertEqual((server["streams"], server["connections"], server["recording"]), (1, 4, True))
        self.assertGreater(server["uptime"], 0)
        self.assertIn("max_media_message_size", server["limits"])

        # Mutations without the token: 401, and nothing changed.
        for path in (
            "streams/live/cam/kick",
            f"connections/{ffmpeg_conn}/drop",
            "streams/live/cam/record/stop",
            "auth/reload",
        ):
            for token in (None, "not-the-token-0123456789"):
                status, headers, body = self.api("POST", path, token=token)
                self.assertEqual(status, 401, (path, body))
                self.assertTrue(headers["www-authenticate"].startswith("Bearer"), headers)
                self.assertEqual(body["error"]["status"], 401)
        still = self.stream()
        self.assertEqual((still["conn_id"], still["subscribers"]), (publisher_conn, 3))
        self.assertEqual((still["recording_file"], still["recording_state"]), (first_file, "recording"))
        self.assertIsNone(ffmpeg.process.poll())
        self.assertEqual(self.server.messages("API kick") + self.server.messages("API drop"), [])

        # Record stop, then start: a new file.
        status, _, body = self.api("POST", "streams/live/cam/record/stop", token=TOKEN)
        self.assertEqual((status, body["ok"], body["file"]), (200, True, first_file), body)
        self.assertEqual(self.stream()["recording_state"], "finished")
        status, _, body = self.api("POST", "streams/live/cam/record/start", token=TOKEN)
        self.assertEqual(status, 200, body)
        # The file is made at the next frame a player could start from (docs/security.md), so its name
        # comes with the stream's view, not with the answer.
        second_file = wait_until(
            lambda: (
                self.stream()["recording_file"] not in (None, first_file) and self.stream()["recording_file"]
            ),
            10,
            "the second file",
        )
        # Past one GOP (2 s), so that the new file holds a keyframe and its pictures.
        wait_until(
            lambda: (
                os.path.exists(os.path.join(self.record_dir, second_file))
                and (s := self.stream())["recording_state"] == "recording"
                and s["recording_duration"] > 2.5
                and s["recording_bytes"] > 0
            ),
            20,
            "the second recording",
        )
        status, _, body = self.api("POST", "streams/live/cam/record/start", token=TOKEN)
        self.assertEqual(status, 409, body)

        # Drop ends one player; the others go on.
        status, _, body = self.api("POST", f"connections/{ffmpeg_conn}/drop", token=TOKEN)
        self.assertEqual(
            (status, body["conn_id"], body["roles"]), (200, ffmpeg_conn, ["play live/cam"]), body
        )
        ffmpeg.finish(20)
        self.server.wait_for_msg("Connection closed", 10, conn_id=ffmpeg_conn)
        self.assertEqual(self.stream()["subscribers"], 2)
        self.assertIsNone(rtmpdump.process.poll())
        self.assertIsNone(publisher.poll())

        # Kick ends the publisher; players get UnpublishNotify (rtmpdump ends its session on it).
        frames_before = rtmpdump.bytes
        status, _, body = self.api("POST", "streams/live/cam/kick", token=TOKEN)
        self.assertEqual((status, body["conn_id"]), (200, publisher_conn), body)
        publisher.wait(20)
        unpublished.wait(20)
        rtmpdump.finish(20)
        self.assertGreater(rtmpdump.bytes, frames_before)
        self.assertFalse(raw.closed)
        kicked = self.server.wait_for_msg("Connection closed", 10, conn_id=publisher_conn)
        self.assertIn("kicked by api@127.0.0.1", kicked["reason"])
        self.assertIsNone(self.stream()["conn_id"] if self.stream() else None)

        # Both recordings are finalized, playable files of the stream.
        for name in (first_file, second_file):
            path = os.path.join(self.record_dir, name)
            self.server.wait_for(
                lambda e, name=name: e.get("msg") == "recording finalized" and e["file"].endswith(name), 30
            )
            streams = {s["codec_type"]: s for s in ffprobe_streams(path)}
            self.assertEqual((streams["video"]["width"], streams["video"]["height"]), (640, 360))
            self.assertEqual(decoder_errors(path), [], name)
            self.assertGreater(decoded_video_frames(path), 0, name)


class APIBadInputRealTests(APIServerTestCase):
    extra_args = ("--api-token-always",)
    read_token = TOKEN

    def test_hostile_requests_get_json_errors_and_a_player_keeps_real_time(self) -> None:
        seconds = 10
        publisher = self.cleanup_process(ffmpeg_publish(self.server.url("cam"), seconds))
        self.server.wait_for_msg("Codecs detected", 20, stream_key="live/cam")
        player = FfmpegPlayer(self.server.url("cam"))
        self.addCleanup(player.kill)

        # --api-token-always: reads from loopback need the token too.
        status, headers, body = self.api("GET", "streams")
        self.assertEqual((status, headers["www-authenticate"]), (401, 'Bearer realm="rtmpd"'))
        self.assertEqual(len(self.get("streams")["streams"]), 1)

        big = os.path.join(self.tmp, "big.json")
        with open(big, "wb") as f:
            f.write(b'{"reason": "' + b"x" * (2 * 1024 * 1024) + b'"}')
        hostile = [
            (400, "POST", "streams/live/cam/kick", b"{not json", ()),
            (400, "POST", "streams/live/cam/kick", b'{"reason": "x", "extra": 1}', ()),
            (400, "POST", "streams/live/cam/kick", b"[]", ()),
            (404, "GET", "no/such/thing", None, ()),
            (404, "GET", "streams/live/nobody", None, ()),
            (405, "DELETE", "streams", None, ()),
            (405, "GET", "auth/reload", None, ()),
            (405, "POST", "streams", None, ()),
        ]
        for _ in range(3):
            for status, method, path, data, headers in hostile:
                got, answer_headers, answer = self.api(method, path, token=TOKEN, data=data, headers=headers)
                self.assertEqual(got, status, (method, path, answer))
                self.assertEqual(answer["error"]["status"], status)
                if status == 405:
                    self.assertIn("allow", answer_headers)
            # 2 MiB bodies, by Content-Length and chunked: 413 before the body is read.
            for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
                result = run(
                    [
                        require("curl"),
                        "-sS",
                        "-i",
                        "-X",
                        "POST",
                        *extra,
                        "-H",
                        f"Authorization: Bearer {TOKEN}",
                        "--data-binary",
                        f"@{big}",
                        self.api.base + "streams/live/cam/kick",
                    ],
                    30,
                )
                # The server answers and closes at once; a client still sending may get a reset that
                # swallows the answer (or its body): a refusal all the same, and the kick did not happen.
                status, _, answer = parse_response(result.stdout.encode())
                if status:
                    self.assertEqual(status, 413, result.stdout[:200])
                    if answer is not None:
                        self.assertEqual(answer["error"]["status"], 413)
            # Garbage on the HTTP port, and a connection that sends half a request and goes away.
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
                s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 400"))
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
                s.sendall(b"POST /api/v1/auth/reload HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        self.assertIsNone(publisher.poll(), "the publisher was not disturbed")
        self.assertEqual(self.stream()["subscribers"], 1)

        # The player decoded the whole stream at the wall clock's pace, without an error.
        status = player.finish(seconds + 20)
        self.assertEqual(status, 0, "\n".join(player.stderr[-20:]))
        self.assertEqual(player.errors(), [])
        self.assertGreaterEqual(player.decoded().get("video", 0), (seconds - 1.5) * FPS)
        self.assertEqual(publisher.wait(20), 0)
        self.assertEqual(self.server.messages("API kick"), [])


class APIAuthReloadRealTests(APIServerTestCase):
    def setUp(self) -> None:
        self.keys = os.path.join(tempfile.mkdtemp(prefix="rtmpd-api-keys-"), "keys")
        self.addCleanup(shutil.rmtree, os.path.dirname(self.keys), True)
        with open(self.keys, "w") as f:
            f.write("live cam\n")
        self.extra_args = ("--auth-keys", self.keys, "--auth-revoke-live")
        super().setUp()

    def test_auth_reload_takes_the_new_key_file_and_ends_a_revoked_publisher(self) -> None:
        publisher = self.cleanup_process(ffmpeg_publish(self.server.url("cam"), 60))
        self.server.wait_for_msg("Codecs detected", 20, stream_key="live/cam")
        with open(self.keys, "w") as f:
            f.write("live cam2\n")
        status, _, body = self.api("POST", "auth/reload")
        self.assertEqual(status, 401, body)
        self.assertIsNone(publisher.poll())

        status, _, body = self.api("POST", "auth/reload", token=TOKEN)
        self.assertEqual(status, 200, body)
        [result] = body["results"]
        self.assertTrue(result["ok"], result)
        # --auth-revoke-live: the publisher of the removed key is ended; the new key publishes.
        publisher.wait(20)
        self.assertIsNone(self.stream()["conn_id"] if self.stream() else None)
        second = self.cleanup_process(ffmpeg_publish(self.server.url("cam2"), 3))
        self.server.wait_for_msg("Codecs detected", 20, stream_key="live/cam2")
        self.assertEqual(second.wait(20), 0)
        self.assertEqual(len(self.server.messages("API access reload")), 1)
