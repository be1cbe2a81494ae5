"""Late joiners of other kinds than RTMP, reading at full speed, miss no frame (issue 11's acceptance).

"A late joiner on a 6 Mb/s 720p stream with a 4 s GOP, reading at full
speed, receives every frame from its first keyframe on (no timestamp gap
larger than three frame intervals); the same for a late HTTP or relay
player." The RTMP joiner is ``test_hostile_server_real.LateJoinAtFullSpeedTests``;
here, against real ``twistd -n rtmpd`` processes and a real ffmpeg publisher:

- an HTTP-FLV player: a plain socket reading ``/live/hd.flv`` as fast as the
  server sends, joining 3 s into the second GOP;
- a relay: an rtmpd edge pulling (``--pull``) from an rtmpd origin. Its first
  player (rtmpdump, at full speed) arrives 3 s into the origin's second GOP,
  so the edge's upstream is itself a late joiner at the origin; a second
  rtmpdump joins the edge 3 s into the third GOP, from the edge's own cache.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from tests.support import ServerProcess
from tests.test_hostile_server_real import FRAME_MS, HD_GOP_SECONDS, max_gap, publish_hd
from tests.test_relay_real import RealClientTestCase, RtmpdumpPlayer, decode_file

#: The HD stream's length, in seconds.
SECONDS = 18.0
#: Where the first late joiner joins (media time of an observer playing from the start): 3 s into GOP 2.
JOIN_AT = HD_GOP_SECONDS + 3.0


class HTTPFLVReader:
    """An HTTP-FLV player on a plain socket, reading as fast as the server sends (HTTP/1.0: the
    body ends when the server closes). Notes each video frame as ``RtmpdumpPlayer`` does and keeps
    the whole FLV in ``path``."""

    def __init__(self, port: int, target: str, path: str) -> None:
        self.path = path
        self.status = ""
        #: (monotonic time, FLV timestamp ms, is keyframe) of each video frame (sequence headers left out).
        self.video: list[tuple[float, int, bool]] = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stream = self.sock.makefile("rb")
        self.status = stream.readline().decode("latin-1").strip()
        while stream.readline() not in (b"\r\n", b""):
            pass
        with open(self.path, "wb") as out:
            header = stream.read(13)  # FLV header + first PreviousTagSize
            out.write(header)
            while True:
                tag = stream.read(11)
                if len(tag) < 11:
                    return
                size = int.from_bytes(tag[1:4], "big")
                body = stream.read(size + 4)
                out.write(tag + body)
                if len(body) < size + 4:
                    return
                timestamp = int.from_bytes(tag[4:7], "big") | tag[7] << 24
                # AVC video: byte 1 is the AVCPacketType; 1 is a coded frame (0 the sequence header).
                if tag[0] == 9 and size >= 2 and body[1] == 1:
                    self.video.append((time.monotonic(), timestamp, body[0] >> 4 == 1))

    def finish(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the HTTP-FLV body did not end within {timeout}s")

    def close(self) -> None:
        self.sock.close()


class LateJoinAtFullSpeedTestCase(RealClientTestCase):
    def wait_media_time(self, observer: RtmpdumpPlayer, seconds: float, timeout: float = 40) -> None:
        """Until ``observer`` (playing from the start) has seen video of media time ``seconds``."""
        deadline = time.monotonic() + timeout
        while not (observer.video and observer.video[-1][1] >= seconds * 1000):
            self.assertLess(time.monotonic(), deadline, f"the observer saw no media up to {seconds}s")
            time.sleep(0.02)  # polling the observer's reader thread, which has no event to wait on

    def assertEveryFrameFrom(self, video: list[tuple[float, int, bool]], gop_start: float, who: str) -> None:
        """``video`` starts with the keyframe of the GOP at ``gop_start`` s and has no gap to the end."""
        self.assertTrue(video, f"{who} got no video")
        self.assertTrue(video[0][2], f"{who}'s first frame is not a keyframe")
        timestamps = [ts for _, ts, _ in video]
        self.assertLessEqual(abs(timestamps[0] - gop_start * 1000), 2 * FRAME_MS, (who, timestamps[0]))
        self.assertLessEqual(max_gap(timestamps), 3 * FRAME_MS, who)
        self.assertGreaterEqual(timestamps[-1], (SECONDS - 1) * 1000, f"{who}: {len(video)} frames")
        # Every frame of 30 fps from the first keyframe to the last frame, none lost.
        self.assertGreaterEqual(len(timestamps), (timestamps[-1] - timestamps[0]) / FRAME_MS - 2, who)


class HTTPFLVLateJoinTests(LateJoinAtFullSpeedTestCase):
    server_args = ("--http", "tcp:0:interface=127.0.0.1")

    def test_late_http_flv_player_reading_at_full_speed_gets_every_frame(self) -> None:
        http_port = self.server.port_of("HTTP server")
        publisher = self.cleanup_process(publish_hd(self.server.url("hd"), SECONDS))
        self.wait_live("hd")
        observer = self.rtmpdump_player("hd", "observer.flv")
        self.wait_media_time(observer, JOIN_AT)
        reader = HTTPFLVReader(http_port, "/live/hd.flv", os.path.join(self.tmp, "http.flv"))
        self.addCleanup(reader.close)
        self.assertEqual(publisher.wait(60), 0, publisher.stderr.read() if publisher.stderr else "")
        reader.finish()
        self.assertEqual(observer.finish(), 0)
        self.assertEqual(reader.status.split()[1:], ["200", "OK"])
        self.server.wait_for_msg("HTTP-FLV player started", 10)
        # Its burst (3 s of 6 Mb/s at once) was not taken for slowness.
        self.assertEqual(self.server.messages("Slow subscriber dropping frames"), [])
        self.assertEveryFrameFrom(reader.video, HD_GOP_SECONDS, "the HTTP-FLV player")
        self.assertEqual(decode_file(reader.path), [])


class RelayLateJoinTests(LateJoinAtFullSpeedTestCase):
    def edge(self) -> ServerProcess:
        edge = ServerProcess(
            "--pull", f"live=rtmp://127.0.0.1:{self.server.port}/live", cwd=self.tmp, log_level="info"
        )
        self.addCleanup(edge.stop)
        edge.start()
        return edge

    def edge_player(self, edge: ServerProcess, name: str) -> RtmpdumpPlayer:
        player = RtmpdumpPlayer(edge.url("hd"), os.path.join(self.tmp, name))
        self.addCleanup(player.kill)
        return player

    def test_late_edge_and_its_late_player_reading_at_full_speed_get_every_frame(self) -> None:
        edge = self.edge()
        publisher = self.cleanup_process(publish_hd(self.server.url("hd"), SECONDS))
        self.wait_live("hd")
        observer = self.rtmpdump_player("hd", "observer.flv")
        self.wait_media_time(observer, JOIN_AT)
        # The edge's first player: the edge's upstream joins the origin now, 3 s into its second GOP.
        first = self.edge_player(edge, "edge-first.flv")
        edge.wait_for_msg("Pull upstream playing", 20, stream_key="live/hd")
        self.wait_media_time(observer, 2 * HD_GOP_SECONDS + 3.0)
        # A late joiner at the edge, 3 s into the third GOP, from the edge's cache.
        second = self.edge_player(edge, "edge-second.flv")
        self.assertEqual(publisher.wait(60), 0, publisher.stderr.read() if publisher.stderr else "")
        self.assertEqual(observer.finish(), 0)
        self.assertEqual(first.finish(), 0)
        self.assertEqual(second.finish(), 0)
        self.assertEqual(len(edge.messages("Pull upstream connecting")), 1)
        for server in (self.server, edge):
            self.assertEqual(server.messages("Slow subscriber dropping frames"), [])
        self.assertEveryFrameFrom(first.video, HD_GOP_SECONDS, "the edge's first player")
        self.assertEveryFrameFrom(second.video, 2 * HD_GOP_SECONDS, "the edge's late player")
        self.assertEqual(decode_file(second.path), [])
        self.assertEqual(edge.errors(), [])
