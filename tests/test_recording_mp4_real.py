"""MP4 recording with real clients: ``twistd -n rtmpd --record-format mp4``, ffmpeg, ffprobe.

Each file is checked as an operator would: one ``.mp4`` of the documented
name, ffprobe's codecs and duration, a silent ``ffmpeg -v error`` decode, a
seek; after a SIGKILL the file decodes to within about a second of the
kill; HEVC, AV1 and Opus recordings (published by the modern ffmpeg over
Enhanced RTMP) decode with that ffmpeg; segments play alone and add up.
The box layout is checked with rtmpd's own reader: fragments about a second
apart, an ``mfra`` whose entries point at ``moof`` boxes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
from typing import Any

from rtmpd.recording.mp4file import fragment_sync_samples
from tests.support import ServerProcess, require, run
from tests.test_ertmp_real import AUDIO_ENCODERS, VIDEO_ENCODERS, ffmpeg9
from tests.test_recording_real import RecordingTestCase, finish, publish

NAME = re.compile(r"^live_(?P<stream>.+)_(?P<date>\d{8})_(?P<time>\d{6})(?:_\d+)?\.mp4$")


def top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level box; a box cut short by the end of the file is left out."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        if size < 8 or pos + size > len(data):
            break
        boxes.append((kind, pos, size))
        pos += size
    return boxes


class Mp4File:
    """One recorded MP4 as ffprobe, ffmpeg and a box walk see it."""

    def __init__(self, path: str, ffmpeg: str | None = None, ffprobe: str | None = None) -> None:
        self.path = path
        self.ffmpeg = ffmpeg or require("ffmpeg")
        self.ffprobe = ffprobe
        with open(path, "rb") as f:
            self.data = f.read()
        self.boxes = top_boxes(self.data)

    def kinds(self) -> list[bytes]:
        return [kind for kind, _, _ in self.boxes]

    def probe(self) -> dict[str, Any]:
        result = run(
            [
                self.ffprobe or require("ffprobe"),
                "-v",
                "error",
                "-show_streams",
                "-show_format",
                "-of",
                "json",
                self.path,
            ],
            30,
        )
        if result.returncode != 0:
            raise AssertionError(f"ffprobe {self.path}: {result.stderr}")
        return json.loads(result.stdout)

    def decode_errors(self) -> str:
        """What ``ffmpeg -v error -i FILE -f null -`` prints (nothing for a clean file)."""
        result = run(
            [self.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", self.path, "-f", "null", "-"], 120
        )
        return result.stderr + ("" if result.returncode == 0 else f"(exit {result.returncode})")

    def decoded_video_seconds(self) -> float:
        """The presentation time of the last video frame ffmpeg decodes, plus one frame (seconds)."""
        result = run(
            [
                self.ffmpeg,
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-i",
                self.path,
                "-map",
                "0:v:0",
                "-f",
                "framecrc",
                "-",
            ],
            120,
        )
        lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
        tb = next(line for line in result.stdout.splitlines() if line.startswith("#tb 0:"))
        num, den = (int(x) for x in tb.split(":")[1].strip().split("/"))
        last = max(int(line.split(",")[2]) for line in lines)
        duration = int(lines[-1].split(",")[3])
        return (last + duration) * num / den

    def first_video_packet_after_seek(self, seconds: float) -> tuple[float, bool]:
        """``ffmpeg -ss SECONDS -i FILE``: where the first video packet lands (seconds, keyframe?)."""
        result = run(
            [
                self.ffmpeg,
                "-hide_banner",
                "-v",
                "error",
                "-ss",
                str(seconds),
                "-i",
                self.path,
                "-map",
                "0:v:0",
                "-c",
                "copy",
                "-copyts",
                "-frames:v",
                "1",
                "-f",
                "framecrc",
                "-",
            ],
            30,
        )
        lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
        tb = next(line for line in result.stdout.splitlines() if line.startswith("#tb 0:"))
        num, den = (int(x) for x in tb.split(":")[1].strip().split("/"))
        if result.returncode != 0 or not lines:
            raise AssertionError(f"seek in {self.path} failed: {result.stderr}")
        fields = [f.strip() for f in lines[0].split(",")]
        return int(fields[2]) * num / den, "K" in (fields[6] if len(fields) > 6 else "K")


class Mp4RecordingTestCase(RecordingTestCase):
    server_args: tuple[str, ...] = ("--record-format", "mp4")

    def start_server(self) -> ServerProcess:
        return ServerProcess("--record-dir", self.record_dir, *self.server_args, log_level="info").start()


class Mp4AcceptanceTests(Mp4RecordingTestCase):
    def test_ten_second_publish_gives_one_seekable_mp4(self) -> None:
        pub, _ = publish(self.server.url("acceptance"), 10, gop_seconds=1)
        self.spawned(pub)
        self.assertEqual(finish(pub), 0)
        (event,) = self.wait_finalized("live/acceptance")
        (name,) = self.files()
        self.assertRegex(name, NAME)
        self.assertEqual(event["file"], os.path.join(self.record_dir, name))
        mp4 = Mp4File(event["file"])
        self.assertEqual(event["bytes"], len(mp4.data))
        # ftyp, moov, about one fragment a second, the index last; nothing after it.
        kinds = mp4.kinds()
        self.assertEqual(kinds[:2], [b"ftyp", b"moov"])
        self.assertEqual(kinds[-1], b"mfra")
        self.assertEqual(sum(size for _, _, size in mp4.boxes), len(mp4.data))
        moofs = [offset for kind, offset, _ in mp4.boxes if kind == b"moof"]
        self.assertTrue(9 <= len(moofs) <= 12, len(moofs))
        self.assertEqual(set(kinds[2:-1]), {b"moof", b"mdat"})
        # Every index entry points at a moof whose first sync sample of that track it names.
        tfra_offsets = self.tfra_offsets(mp4)
        self.assertEqual(set(tfra_offsets[1]) - set(moofs), set())
        self.assertGreaterEqual(len(tfra_offsets[1]), 9)
        for offset in tfra_offsets[1][:3]:
            size = next(s for _, o, s in mp4.boxes if o == offset)
            self.assertEqual(fragment_sync_samples(mp4.data[offset : offset + size])[0][0], 1)

        probe = mp4.probe()
        self.assertEqual([s["codec_name"] for s in probe["streams"]], ["h264", "aac"])
        self.assertEqual((probe["streams"][0]["width"], probe["streams"][0]["height"]), (640, 360))
        self.assert_close(float(probe["format"]["duration"]), 10.0, delta=0.2)
        self.assert_close(event["duration"], 10.0, delta=0.2)
        self.assertEqual(mp4.decode_errors(), "")
        landed, is_key = mp4.first_video_packet_after_seek(5.0)
        self.assertTrue(is_key)
        # Within a keyframe interval (1 s) of the time asked for.
        self.assert_close(landed, 5.0, delta=1.0 + 0.05)

    def tfra_offsets(self, mp4: Mp4File) -> dict[int, list[int]]:
        (offset, size) = next((o, s) for k, o, s in mp4.boxes if k == b"mfra")
        mfra = mp4.data[offset : offset + size]
        self.assertEqual(mfra[-16:-12], struct.pack(">I", 16))
        self.assertEqual(mfra[-12:-8], b"mfro")
        self.assertEqual(struct.unpack(">I", mfra[-4:])[0], size)
        found, pos = {}, 8
        while pos < size - 16:
            box_size, kind = struct.unpack_from(">I4s", mfra, pos)
            self.assertEqual(kind, b"tfra")
            track_id, _, count = struct.unpack_from(">III", mfra, pos + 12)
            found[track_id] = [struct.unpack_from(">QQ", mfra, pos + 24 + 28 * i)[1] for i in range(count)]
            pos += box_size
        return found

    def test_sigkill_leaves_an_mp4_that_decodes_to_within_a_second(self) -> None:
        pub, progress = publish(self.server.url("crash"), 20)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/crash")
        progress.wait_seconds(8.0)
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(20)
        (name,) = self.files()
        mp4 = Mp4File(os.path.join(self.record_dir, name))
        # Never finalized: no index, but every fragment written is whole.
        self.assertNotIn(b"mfra", mp4.kinds())
        self.assertEqual(sum(size for _, _, size in mp4.boxes), len(mp4.data))
        self.assertEqual(mp4.decode_errors(), "")
        self.assertGreaterEqual(mp4.decoded_video_seconds(), 7.0)
        # Its duration was patched as it grew: about how long it is.
        self.assertGreater(float(mp4.probe()["format"]["duration"]), 6.5)

    def test_sigterm_finalizes_the_open_mp4(self) -> None:
        pub, progress = publish(self.server.url("term"), 20)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/term")
        progress.wait_seconds(3.0)
        self.server.signal(signal.SIGTERM)
        self.assertIn(self.server.process.wait(30), (0, -signal.SIGTERM))
        self.assertEqual(self.server.errors(), [])
        (event,) = self.server.messages("recording finalized")
        mp4 = Mp4File(event["file"])
        self.assertEqual(mp4.kinds()[-1], b"mfra")
        self.assertEqual(mp4.decode_errors(), "")
        self.assertGreater(event["duration"], 2.5)


class Mp4SegmentTests(Mp4RecordingTestCase):
    server_args = ("--record-format", "mp4", "--record-interval", "2")

    def test_segments_play_alone_and_add_up(self) -> None:
        pub, _ = publish(self.server.url("seg"), 7, gop_seconds=1)
        self.spawned(pub)
        self.assertEqual(finish(pub), 0)
        started = self.server.messages("recording started")
        events = self.wait_finalized("live/seg", len(started))
        self.assertGreaterEqual(len(started), 3)
        self.assertEqual(len(self.files()), len(started))
        total = 0.0
        for event in events:
            self.assertTrue(event["file"].endswith(".mp4"))
            mp4 = Mp4File(event["file"])
            self.assertEqual(mp4.decode_errors(), "")
            self.assertEqual([s["codec_name"] for s in mp4.probe()["streams"]], ["h264", "aac"])
            total += event["duration"]
        self.assert_close(total, 7.0, delta=0.3)


class ModernCodecMp4Tests(Mp4RecordingTestCase):
    """The modern ffmpeg publishes HEVC, AV1 or VP9 and Opus or AAC over Enhanced RTMP, decodes the MP4."""

    def publish9(self, key: str, video: str, audio: str, seconds: float = 4) -> subprocess.Popen:
        cmd = [
            ffmpeg9(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            *VIDEO_ENCODERS[video],
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-pix_fmt",
            "yuv420p",
            *AUDIO_ENCODERS[audio],
            "-f",
            "flv",
            self.server.url(key),
        ]
        return self.spawned(
            subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
            )
        )

    def check(self, video: str, audio: str, codecs: list[str]) -> None:
        pub = self.publish9(video, video, audio)
        self.assertEqual(finish(pub), 0, pub.stderr.read() if pub.stderr else "")
        (event,) = self.wait_finalized(f"live/{video}")
        ffmpeg = ffmpeg9()
        ffprobe = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
        mp4 = Mp4File(event["file"], ffmpeg=ffmpeg, ffprobe=ffprobe if os.path.exists(ffprobe) else None)
        self.assertEqual(mp4.decode_errors(), "")
        streams = self.streams_of(ffmpeg, mp4.path)
        self.assertEqual(streams, codecs)
        self.assertGreater(mp4.decoded_video_seconds(), 3.0)
        self.assertEqual(self.server.errors(), [])

    @staticmethod
    def streams_of(ffmpeg: str, path: str) -> list[str]:
        """The codec of each stream as the modern ffmpeg names it (it ships no ffprobe)."""
        result = run([ffmpeg, "-hide_banner", "-nostdin", "-i", path], 30)
        return re.findall(r"Stream #0:\d+[^:]*: (?:Video|Audio): (\w+)", result.stderr)

    def test_hevc_aac(self) -> None:
        self.check("hevc", "aac", ["hevc", "aac"])

    def test_av1_opus(self) -> None:
        self.check("av1", "opus", ["av1", "opus"])

    def test_vp9_opus(self) -> None:
        self.check("vp9", "opus", ["vp9", "opus"])
