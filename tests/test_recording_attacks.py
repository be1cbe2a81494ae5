"""Recording as an amplifier, tried as an attacker would over loopback against ``twistd -n rtmpd``.

A stranger allowed to publish tries to turn publishes into files, threads
and descriptors: publishes of new keys with no media, then more streams with
a few audio frames each than ``--record-max-active`` allows. Meanwhile an
honest ffmpeg publishes, an ffmpeg player watches it, and an honest client
connects. Asserted: no file without media; over the cap the honest stream
still records (and plays), the attacker's extra streams go unrecorded; the
recorder's log holds one bounded line for the whole attack; an honest
handshake + connect stays under a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.messages import MessageType
from tests.media_samples import AAC_SEQUENCE_HEADER, aac_frame
from tests.support import ServerProcess, ffmpeg_publish
from tests.test_recording_real import Recording, finish
from tests.test_relay_real import FPS, FfmpegPlayer, SocketRTMPClient, decode_file, rss_kib

#: How much the server's resident memory may grow during an attack.
RSS_BOUND_KIB = 64 * 1024

A = MessageType.AUDIO


class RecordingAttackTestCase(SynchronousTestCase):
    """A server recording into a temporary directory, an honest ffmpeg publisher and player."""

    max_active = 3

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-rec-attack-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "recordings")
        self.server = ServerProcess(
            "--record-dir", self.record_dir, "--record-max-active", str(self.max_active), log_level="info"
        ).start()
        self.addCleanup(self.server.stop)
        self.honest = ffmpeg_publish(self.server.url("honest"), 12)
        self.addCleanup(lambda: self.honest.poll() is None and (self.honest.kill(), self.honest.wait(10)))
        self.server.wait_for_msg("recording started", 20, stream_key="live/honest")
        self.player = FfmpegPlayer(self.server.url("honest"))
        self.addCleanup(self.player.kill)
        self.player.wait_frames(FPS // 2)

    def attacker(self) -> SocketRTMPClient:
        client = SocketRTMPClient(self.server.port)
        self.addCleanup(client.close)
        return client

    def conn_closed(self, client: SocketRTMPClient) -> None:
        """Close ``client`` and wait until the server has closed its side (the stream is unpublished)."""
        conn_id = self.server.wait_for_msg("Connection accepted", 10, peer_addr=client.peer_addr)["conn_id"]
        client.close()
        self.server.wait_for_msg("Connection closed", 10, conn_id=conn_id)

    def publish_key(self, client: SocketRTMPClient, name: str) -> int:
        client.handshake()
        client.wait(client.protocol.connect("live"))
        stream_id = client.wait(client.protocol.create_stream())
        client.wait(client.protocol.publish(stream_id, name))
        return stream_id

    def assert_honest_connect_is_quick(self) -> None:
        started = time.monotonic()
        client = self.attacker()
        client.handshake(timeout=1)
        client.wait(client.protocol.connect("live"), timeout=1)
        self.assertLess(time.monotonic() - started, 1.0)
        client.close()

    def recorder_lines(self, start: int, keys: set[str]) -> list[dict[str, Any]]:
        """Log lines at info or above from the recording package, or naming one of ``keys``'s recordings."""
        with self.server._changed:
            events = list(self.server.events[start:])
        return [
            e
            for e in events
            if e.get("level") in ("info", "warn", "error", "critical")
            and str(e.get("logger", "")).startswith("rtmpd.recording")
            and (e.get("stream_key") in keys or e.get("level") != "info")
        ]

    def assert_honest_recording_plays(self) -> None:
        self.assertEqual(finish(self.honest), 0)
        self.player.finish()
        self.assertEqual(self.player.errors(), [])
        self.assertGreater(self.player.media_seconds, 10.0)
        finalized = self.server.wait_for_msg("recording finalized", 30, stream_key="live/honest")
        rec = Recording(finalized["file"])
        self.assertEqual(decode_file(rec.path), [])
        self.assertGreater(rec.metadata["duration"], 11.5)
        self.assertEqual(self.server.errors(), [])


class PublishWithoutMediaTests(RecordingAttackTestCase):
    def test_fifty_publishes_of_new_keys_without_media_open_no_file(self) -> None:
        start = len(self.server.events)
        rss_before = rss_kib(self.server.process.pid)
        keys = {f"live/empty{i}" for i in range(50)}
        for i in range(50):
            client = self.attacker()
            self.publish_key(client, f"empty{i}")
            self.conn_closed(client)
            if i == 25:
                self.assert_honest_connect_is_quick()
        self.assertEqual(os.listdir(self.record_dir), [os.path.basename(self.honest_file())])
        self.assertEqual(self.recorder_lines(start, keys), [])
        self.assertLess(rss_kib(self.server.process.pid) - rss_before, RSS_BOUND_KIB)
        self.assert_honest_recording_plays()
        self.assertEqual(len(os.listdir(self.record_dir)), 1)

    def honest_file(self) -> str:
        return self.server.wait_for_msg("recording started", 10, stream_key="live/honest")["file"]


class OverTheCapTests(RecordingAttackTestCase):
    max_active = 2

    def test_over_the_cap_the_honest_stream_still_records_and_extra_streams_go_unrecorded(self) -> None:
        start = len(self.server.events)
        rss_before = rss_kib(self.server.process.pid)
        keys = {f"live/audio{i}" for i in range(8)}
        clients = []
        for i in range(8):
            client = self.attacker()
            sid = self.publish_key(client, f"audio{i}")
            client.protocol.send_media(A, sid, 0, AAC_SEQUENCE_HEADER)
            for n in range(5):
                client.protocol.send_media(A, sid, n * 21, aac_frame(n))
            clients.append((client, sid))
        self.assert_honest_connect_is_quick()
        # One attacker stream took the one free slot; the other seven are relayed, not recorded.
        warning = self.server.wait_for(
            lambda e: str(e.get("msg", "")).startswith("Recording limit reached"), 10
        )
        self.assertEqual(warning["level"], "warn")
        self.assertIn("--record-max-active", warning["cause"])
        started = self.server.wait_for_msg("recording started", 10, start=start)
        self.assertIn(started["stream_key"], keys)
        # They keep sending frames (each may start a file): still no more files, still one line.
        for client, sid in clients:
            for n in range(5, 50):
                client.protocol.send_media(A, sid, n * 21, aac_frame(n))
        self.assert_honest_connect_is_quick()
        self.assertLess(rss_kib(self.server.process.pid) - rss_before, RSS_BOUND_KIB)
        files = os.listdir(self.record_dir)
        self.assertEqual(len(files), 2, files)
        for client, _ in clients:
            self.conn_closed(client)
        self.assert_honest_recording_plays()
        lines = self.recorder_lines(start, keys)
        self.assertEqual([e for e in lines if e.get("level") != "info"], [warning])
        # The one attacker recording that was admitted: started, finalized; nothing for the others.
        self.assertEqual(
            sorted({e["stream_key"] for e in lines if e.get("level") == "info"}), [started["stream_key"]]
        )
        self.assertEqual(len(os.listdir(self.record_dir)), 2)
