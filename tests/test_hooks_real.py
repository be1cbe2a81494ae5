"""Event hooks of a real ``twistd -n rtmpd`` with real clients: webhooks to a real HTTP receiver, exec
hooks running a real script.

The receiver is an ``http.server`` on 127.0.0.1 in a thread of the test
process; it checks nothing itself: it keeps every request (headers and body
bytes) for the test. ffmpeg publishes and plays.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.hooks import verify
from tests.support import ServerProcess, ffmpeg_publish, ffprobe_streams, require
from tests.test_relay_real import FfmpegPlayer

SECRET = b"hook-secret-0123456789abcdef"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Handler(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        """An upload (the documented record_done script's curl -T): kept like a POST."""
        self.do_POST()

    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.took({**self.headers, "method": self.command, "path": self.path}, body)
        if receiver.hang:
            receiver.release.wait(60)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Receiver:
    """A webhook receiver on 127.0.0.1:``port`` (0: any); ``hang`` makes it take requests and never answer."""

    def __init__(self, port: int = 0, hang: bool = False) -> None:
        self.hang = hang
        self.release = threading.Event()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._changed = threading.Condition()
        self.http = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.http.daemon_threads = True
        self.http.receiver = self  # type: ignore[attr-defined]
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def took(self, headers: dict[str, str], body: bytes) -> None:
        with self._changed:
            self.requests.append((headers, body))
            self._changed.notify_all()

    def events(self) -> list[dict[str, Any]]:
        with self._changed:
            return [json.loads(body) for _, body in self.requests]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate([json.loads(body) for _, body in self.requests]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [json.loads(body)["event"] for _, body in self.requests]
                    raise AssertionError(f"receiver did not get the expected events; got {names}")
                self._changed.wait(min(remaining, 0.5))

    def stop(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


def free_port() -> int:
    """A loopback port nobody listens on (a receiver that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


PUBLISH_ONLY = ["connect", "publish_start", "codec_detected", "publish_stop", "disconnect"]


class HooksRealTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        require("ffmpeg")
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-hooks-real-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.secret_file = os.path.join(self.tmp, "hook-secret")
        with open(self.secret_file, "wb") as f:
            f.write(SECRET + b"\n")

    def receiver(self, port: int = 0, hang: bool = False) -> Receiver:
        receiver = Receiver(port, hang)
        self.addCleanup(receiver.stop)
        return receiver

    def start_server(self, url: str, *args: str) -> ServerProcess:
        server = ServerProcess(
            "--hook-webhook", f"*={url}", "--hook-secret-file", self.secret_file, *args, log_level="info"
        ).start()  # fmt: skip
        self.addCleanup(server.stop)
        return server

    def publish(self, url: str, seconds: float):
        process = ffmpeg_publish(url, seconds, size="320x240")
        self.addCleanup(_kill, process)
        return process

    def player(self, url: str) -> FfmpegPlayer:
        player = FfmpegPlayer(url)
        self.addCleanup(player.kill)
        return player

    def stopped_counts(self, server: ServerProcess) -> dict[str, int]:
        """The sink's counts as the server logged them when it stopped."""
        server.stop()  # twistd ends with the signal that stopped it (-15)
        self.assertEqual(server.errors(), [])
        [line] = [e for e in server.events if str(e.get("msg", "")).startswith("Event hook stopped")]
        return {k: line[k] for k in ("ok", "retry", "failed", "dropped")}


def _kill(process) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


class WebhookTests(HooksRealTestCase):
    def test_publish_play_stop_in_order_with_fields_and_valid_signatures(self) -> None:
        receiver = self.receiver()
        server = self.start_server(receiver.url)
        publisher = self.publish(server.url("cam"), 6)
        receiver.wait_for(lambda events: "codec_detected" in names(events))
        player = self.player(server.url("cam"))
        player.wait_frames(15)
        player.kill()
        receiver.wait_for(lambda events: "disconnect" in names(events))
        self.assertEqual(publisher.wait(30), 0)
        receiver.wait_for(lambda events: len(events) >= 9)
        events = receiver.events()
        self.assertEqual(
            names(events),
            [
                "connect",
                "publish_start",
                "codec_detected",
                "connect",
                "play_start",
                "play_stop",
                "disconnect",
                "publish_stop",
                "disconnect",
            ],
        )
        for headers, body in receiver.requests:
            self.assertTrue(verify(body, headers["X-Rtmpd-Signature"], SECRET), headers)
            self.assertEqual(headers["X-Rtmpd-Event"], json.loads(body)["event"])
            self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(len({e["id"] for e in events}), 9)
        times = [e["time"] for e in events]
        self.assertEqual(times, sorted(times))
        self.assertLess(abs(times[0] - time.time()), 60)
        pub, play = events[0]["conn_id"], events[3]["conn_id"]
        self.assertNotEqual(pub, play)
        stream = {"stream_key": "live/cam", "app": "live", "name": "cam"}
        for index, conn in ((1, pub), (4, play), (5, play), (7, pub)):
            self.assertEqual({k: events[index][k] for k in stream}, stream, events[index])
            self.assertEqual(events[index]["conn_id"], conn)
            self.assertEqual(events[index]["peer_addr"].rsplit(":", 1)[0], "127.0.0.1")
        self.assertEqual((events[2]["video_codec"], events[2]["audio_codec"]), ("H264", "AAC"))
        self.assertIn("profile", events[2]["video"])
        self.assertEqual(events[2]["audio"]["sample_rate"], 48000)
        self.assertIn("Lavf", events[0]["flash_ver"])
        self.assertEqual((events[6]["conn_id"], events[8]["conn_id"]), (play, pub))
        self.assertGreater(events[7]["bytes_in"], 50_000)
        self.assertGreater(events[6]["bytes_out"], 10_000)
        self.assertEqual(self.stopped_counts(server), {"ok": 9, "retry": 0, "failed": 0, "dropped": 0})

    def test_receiver_down_10s_then_up_nothing_lost_within_the_bound(self) -> None:
        # Two servers side by side: one with room for every event, one whose queue holds 3.
        ports = free_port(), free_port()
        retrying = ("--hook-backoff", "0.2", "--hook-backoff-max", "1", "--hook-retries", "1000")
        roomy = self.start_server(f"http://127.0.0.1:{ports[0]}/hook", *retrying)
        small = self.start_server(f"http://127.0.0.1:{ports[1]}/hook", *retrying, "--hook-queue-size", "3")
        started = time.monotonic()
        publishers = [self.publish(roomy.url("cam"), 10), self.publish(small.url("cam"), 10)]
        self.assertEqual([p.wait(60) for p in publishers], [0, 0])
        for server in (roomy, small):
            server.wait_for_msg("Connection closed")
            server.wait_for(lambda e: e.get("msg") == "Webhook attempt failed; retrying" and e["retry"] >= 5)
        small.wait_for_msg("Hook queue full; dropping events until it has room")
        self.assertGreaterEqual(time.monotonic() - started, 10.0)
        receivers = self.receiver(ports[0]), self.receiver(ports[1])
        receivers[0].wait_for(lambda events: len(events) >= len(PUBLISH_ONLY))
        receivers[1].wait_for(lambda events: len(events) >= 3)
        self.assertEqual(names(receivers[0].events()), PUBLISH_ONLY)
        # The small queue kept the first three; what came while it was full was dropped and counted.
        self.assertEqual(names(receivers[1].events()), PUBLISH_ONLY[:3])
        roomy_counts, small_counts = self.stopped_counts(roomy), self.stopped_counts(small)
        self.assertEqual(
            {k: roomy_counts[k] for k in ("ok", "failed", "dropped")}, {"ok": 5, "failed": 0, "dropped": 0}
        )
        self.assertEqual(
            {k: small_counts[k] for k in ("ok", "failed", "dropped")}, {"ok": 3, "failed": 0, "dropped": 2}
        )
        self.assertGreaterEqual(roomy_counts["retry"], 5)
        self.assertEqual(len(receivers[1].events()), 3, "nothing more arrived after the counts")

    def test_a_receiver_that_hangs_never_delays_media(self) -> None:
        receiver = self.receiver(hang=True)
        server = self.start_server(
            receiver.url, "--hook-timeout", "2", "--hook-backoff", "0.2", "--hook-backoff-max", "0.5",
            "--hook-shutdown-grace", "1",
        )  # fmt: skip
        self.publish(server.url("cam"), 25)
        player = self.player(server.url("cam"))
        player.wait_frames(15)
        started = time.monotonic()
        frames_before, media_before = player.frames, player.media_seconds
        # The receiver hangs on the first event; two of its timeouts pass while the stream plays.
        server.wait_for(lambda e: e.get("msg") == "Webhook attempt failed; retrying" and e["retry"] >= 2, 30)
        late = self.player(server.url("cam"))
        late.wait_frames(1, timeout=10)
        self.assertLess(late.first_frame_after(), 5.0)
        player.wait_frames(player.frames + 60)
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 4.0)
        self.assertGreater(player.frames - frames_before, 30 * (waited - 1.5))
        self.assertGreater(player.media_seconds - media_before, waited - 1.5)
        timeouts = [
            e for e in server.messages("Webhook attempt failed; retrying") if "no answer" in e["reason"]
        ]
        self.assertGreaterEqual(len(timeouts), 2)
        # One event (the publisher's connect), tried again and again; the rest wait their turn.
        tried = receiver.events()
        self.assertGreaterEqual(len(tried), 3)
        self.assertEqual({(e["event"], e["id"]) for e in tried}, {("connect", tried[0]["id"])})


SCRIPT = r"""#!/bin/sh
# A record_done hook: what it was told goes into OUT/<file name>.txt (as an upload script would use it).
set -eu
out="$1/$(basename "$RTMPD_PATH").txt"
{
    printf '%s\n' "$RTMPD_EVENT" "$RTMPD_PATH" "$RTMPD_DURATION" "$RTMPD_BYTES" "$RTMPD_STREAM_KEY"
    cat
} > "$out.part"
mv "$out.part" "$out"
echo "hook saw $RTMPD_PATH"
"""


class ExecHookTests(HooksRealTestCase):
    def test_record_done_runs_a_script_with_path_and_duration(self) -> None:
        record_dir = os.path.join(self.tmp, "rec")
        out_dir = os.path.join(self.tmp, "out")
        os.mkdir(out_dir)
        script = os.path.join(self.tmp, "on-record-done.sh")
        with open(script, "w") as f:
            f.write(SCRIPT)
        os.chmod(script, 0o755)
        server = ServerProcess(
            "--record-dir", record_dir, "--hook-exec", f"record_done={script} {out_dir}", log_level="info"
        ).start()
        self.addCleanup(server.stop)
        self.assertEqual(self.publish(server.url("cam"), 4).wait(30), 0)
        done = server.wait_for_msg("Hook command done", event_name="record_done")
        [recording] = os.listdir(record_dir)
        path = os.path.join(record_dir, recording)
        with open(os.path.join(out_dir, recording + ".txt")) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:2], ["record_done", path])
        self.assertLess(abs(float(lines[2]) - 4.0), 1.0, lines[2])
        self.assertEqual(int(lines[3]), os.path.getsize(path))
        self.assertEqual(lines[4], "live/cam")
        told = json.loads(lines[5])
        self.assertEqual((told["event"], told["path"], told["bytes"]), ("record_done", path, int(lines[3])))
        self.assertEqual(told["duration"], float(lines[2]))
        self.assertIsNone(told["error"])
        output = server.wait_for_msg(f"Hook output: hook saw {path}")
        self.assertEqual((output["pid"], output["stream"]), (done["pid"], "stdout"))
        # A stream still live at shutdown: its file is finalized and its hook still runs before exit.
        self.publish(server.url("late"), 30)
        started = server.wait_for_msg("recording started", stream_key="live/late")
        server.stop()
        late = os.path.basename(started["file"])
        with open(os.path.join(out_dir, late + ".txt")) as f:
            self.assertEqual(f.read().splitlines()[:2], ["record_done", started["file"]])
        self.assertEqual(server.errors(), [])

    def test_the_documented_record_done_script_remuxes_and_uploads(self) -> None:
        require("curl")
        with open(os.path.join(ROOT, "docs", "hooks.md")) as f:
            doc = f.read()
        section = doc[doc.index("### `record_done`: remux and upload") :]
        start = section.index("```sh\n") + 6
        script_text = section[start : section.index("\n```", start)]
        self.assertTrue(script_text.startswith("#!/bin/sh\n"), script_text[:100])
        script = os.path.join(self.tmp, "on-record-done.sh")
        with open(script, "w") as f:
            f.write(script_text + "\n")
        os.chmod(script, 0o755)
        uploads = self.receiver()
        record_dir = os.path.join(self.tmp, "rec")
        upload_env = f"UPLOAD_URL=http://127.0.0.1:{uploads.port}/videos UPLOAD_TOKEN=t0ken"
        server = ServerProcess(
            "--record-dir", record_dir, "--hook-exec", f"record_done=env {upload_env} {script}",
            "--hook-timeout", "60", "--hook-exec-concurrency", "1", log_level="info",
        ).start()  # fmt: skip
        self.addCleanup(server.stop)
        self.assertEqual(self.publish(server.url("cam"), 4).wait(30), 0)
        ended = server.wait_for(lambda e: e.get("msg") in ("Hook command done", "Hook command failed"), 60)
        self.assertEqual(ended["msg"], "Hook command done", "".join(server.output[-10:]))
        [mp4] = os.listdir(record_dir)  # the FLV was removed after the upload
        self.assertTrue(mp4.startswith("live_cam_") and mp4.endswith(".mp4"), mp4)
        [(headers, body)] = uploads.requests
        self.assertEqual((headers["method"], headers["path"]), ("PUT", f"/videos/{mp4}"))
        self.assertEqual(headers["Authorization"], "Bearer t0ken")
        with open(os.path.join(record_dir, mp4), "rb") as f:
            self.assertEqual(f.read(), body)
        streams = ffprobe_streams(os.path.join(record_dir, mp4))
        self.assertEqual(sorted(s["codec_name"] for s in streams), ["aac", "h264"])
        self.assertLess(abs(float(streams[0]["duration"]) - 4.0), 1.0)
        said = [e["msg"] for e in server.events if str(e.get("msg", "")).startswith("Hook output: uploaded")]
        self.assertEqual(said, [f"Hook output: uploaded {mp4} (" + said[0].split("(", 1)[1]])
        self.assertIn("s of live/cam)", said[0])
