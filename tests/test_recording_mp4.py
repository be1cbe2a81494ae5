"""MP4 recording without real clients: the file layout, fragments a second apart, the mfra index, the
crash shape, a new file on a codec change, disk errors; pymp4 reads every box."""

from __future__ import annotations

import errno
import struct

from pymp4.parser import MP4
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.classify import classify
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.mp4file import (
    FRAGMENT_MS,
    Mp4SegmentFile,
    build_mp4_prologue,
    fragment_sync_samples,
    mfra,
)
from rtmpd.recording.options import RECORD_FORMATS
from rtmpd.tap import Options
from tests.media_samples import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, aac_frame, avc_keyframe
from tests.test_fmp4 import AVCC_1080, all_samples, find, one
from tests.test_recorder import A, Disk, MemoryFile, RecorderTestCase, V
from tests.test_recording_mp4_real import top_boxes

#: Another H.264 configuration (1080p): a publisher's encoder restarted with a new size.
AVC_1080_HEADER = bytes([0x17, 0x00, 0, 0, 0]) + AVCC_1080


def split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(ftyp + moov, the fragments, mfra) of a finished file; every byte in some whole box."""
    boxes = top_boxes(data)
    assert sum(size for _, _, size in boxes) == len(data), "a box is cut short"
    kinds = [k for k, _, _ in boxes]
    assert kinds[:2] == [b"ftyp", b"moov"], kinds
    init_end = boxes[1][1] + boxes[1][2]
    end = boxes[-1][1] if kinds[-1] == b"mfra" else len(data)
    return data[:init_end], data[init_end:end], data[end:]


def tfra_entries(index: bytes) -> dict[int, list[tuple[int, int, int, int, int]]]:
    """Per track of an ``mfra``: (time, moof offset, traf, trun, sample number) of each ``tfra`` entry."""
    found, pos = {}, 8
    while index[pos + 4 : pos + 8] == b"tfra":
        size = struct.unpack_from(">I", index, pos)[0]
        version = index[pos + 8]
        track_id, lengths, count = struct.unpack_from(">III", index, pos + 12)
        assert (version, lengths) == (1, 0x3F), (version, lengths)
        found[track_id] = [struct.unpack_from(">QQIII", index, pos + 24 + 28 * i) for i in range(count)]
        pos += size
    return found


class Mp4RecorderTests(RecorderTestCase):
    record_config = {"record_format": "mp4"}

    def test_publish_records_one_mp4_with_a_fragment_a_second_and_an_index(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        pub.send_media(MessageType.DATA_AMF0, sid, 0, amf0.encode_many("onCuePoint", {"n": 1.0}))
        self.send_gops(pub, sid, 5000, gops=4)
        recording = self.unpublish(pub)
        path = "/rec/live_test_20231114_221320.mp4"
        self.assertEqual(list(self.disk.files), [path])
        self.assertEqual((recording.state, recording.file), ("finished", path))
        data = self.data(path)
        MP4.parse(data)
        init, fragments, index = split(data)
        self.assertEqual(len(find(init, b"moov", b"trak")), 2)
        # mvhd's duration (timescale 1000) is the last frame's time on the file's timeline.
        mvhd = one(init, b"moov", b"mvhd")
        self.assertEqual(struct.unpack_from(">II", mvhd, 20), (1000, 3900))
        samples = all_samples(fragments)
        self.assertEqual((len(samples[1]), len(samples[2])), (40, 40))
        self.assertEqual(samples[1][0][0], 0)
        # Four GOPs of a second: four fragments, each starting at a keyframe.
        moofs = [o for k, o, _ in top_boxes(fragments) if k == b"moof"]
        self.assertEqual(len(moofs), 4)
        for moof_offset in moofs:
            size = struct.unpack_from(">I", fragments, moof_offset)[0]
            mdat_size = struct.unpack_from(">I", fragments, moof_offset + size)[0]
            (video, *_) = fragment_sync_samples(fragments[moof_offset : moof_offset + size + mdat_size])
            self.assertEqual((video[0], video[2], video[3]), (1, 1, 1))
        # The index: one entry per fragment and track, at the moof's offset in the file.
        tfras = tfra_entries(index)
        self.assertEqual([e[1] for e in tfras[1]], [len(init) + o for o in moofs])
        self.assertEqual([e[0] for e in tfras[1]], [0, 90000, 180000, 270000])
        self.assertEqual(len(tfras[2]), 4)

    def test_what_is_written_while_recording_is_whole_boxes(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        ts = self.send_gops(pub, sid, 0, gops=3)
        recording = self.recording()
        self.calls.run_until(lambda: bool(recording.files))
        file = self.disk.only()
        self.assertTrue(
            file.wait_until(lambda f: len([b for b in top_boxes(f.contents) if b[0] == b"moof"]) >= 2)
        )
        data = file.contents
        boxes = top_boxes(data)
        # A SIGKILL now would leave exactly this: ftyp, moov and whole fragments, no index.
        self.assertEqual(sum(size for _, _, size in boxes), len(data))
        self.assertEqual([k for k, _, _ in boxes][:2], [b"ftyp", b"moov"])
        self.assertNotIn(b"mfra", [k for k, _, _ in boxes])
        MP4.parse(data)
        self.send_gops(pub, sid, ts, gops=1)
        self.unpublish(pub)

    def test_a_new_codec_configuration_starts_a_new_file(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        ts = self.send_gops(pub, sid, 0, gops=2)
        # The encoder restarts at 1080p: a new sequence header, then a keyframe.
        pub.send_media(V, sid, ts, AVC_1080_HEADER)
        self.server.flush()
        self.send_gops(pub, sid, ts, gops=2)
        recording = self.unpublish(pub)
        self.assertEqual(recording.state, "finished")
        self.assertEqual(len(recording.files), 2)
        first, second = (self.data(path) for path in recording.files)
        for data, width in ((first, 0), (second, 1920)):
            init, fragments, _ = split(data)
            MP4.parse(data)
            self.assertEqual(len(all_samples(fragments)[1]), 20)
            avc1 = find(init, b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")[0]
            if width:
                self.assertIn(AVCC_1080, avc1)
            else:
                self.assertNotIn(AVCC_1080, avc1)
        self.assertEqual(recording.files[1], "/rec/live_test_20231114_221320_1.mp4")

    def test_a_publisher_flipping_configurations_makes_files_no_faster_than_the_rate(self) -> None:
        self.recorder.admission.max_new_per_minute = 3
        self.recorder.admission._tokens = 3.0
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        ts = 0
        for flip in range(10):
            pub.send_media(V, sid, ts, AVC_1080_HEADER if flip % 2 == 0 else AVC_SEQUENCE_HEADER)
            self.server.flush()
            ts = self.send_gops(pub, sid, ts, gops=1)
        recording = self.unpublish(pub)
        # The first file and two more; then the stream waits for a token, relayed but not recorded.
        self.assertEqual(len(recording.files), 3)
        for path in recording.files:
            split(self.data(path))

    def test_segments_by_interval_each_play_alone(self) -> None:
        self.recorder.interval_ms = 2000
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=5)
        recording = self.unpublish(pub)
        self.assertEqual(len(recording.files), 3)
        counts = []
        for path in recording.files:
            _, fragments, index = split(self.data(path))
            self.assertTrue(index.startswith(struct.pack(">I", len(index)) + b"mfra"))
            counts.append(len(all_samples(fragments)[1]))
        self.assertEqual(counts, [20, 20, 10])


class Mp4DiskFullTests(RecorderTestCase):
    record_config = {"record_format": "mp4"}

    def make_disk(self) -> Disk:
        return Disk(fail_after=4000, error=errno.ENOSPC)

    def test_disk_full_keeps_whole_fragments_and_the_stream_goes_on(self) -> None:
        pub, sid = self.publisher()
        player, psid = self.player()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=6, key_size=400)
        recording = self.recording()
        self.calls.run_until(lambda: recording.state == "failed")
        self.assertIn("ENOSPC", recording.error)
        data = self.disk.only().contents
        self.assertLessEqual(len(data), 4000)
        self.assertGreater(len(data), 1000)
        boxes = top_boxes(data)
        self.assertEqual(sum(size for _, _, size in boxes), len(data))
        self.assertEqual([k for k, _, _ in boxes][:2], [b"ftyp", b"moov"])
        self.server.flush()
        self.assertGreaterEqual(len(player.media(psid)), 6 * 20)
        self.unpublish(pub)


class Mp4SegmentFileTests(SynchronousTestCase):
    def test_fragments_are_cut_on_media_time_for_audio_only_streams(self) -> None:
        file = MemoryFile()
        header = Message(A, 0, 1, AAC_SEQUENCE_HEADER)
        segment = Mp4SegmentFile(file, "a.mp4", build_mp4_prologue([header], has_video=False))
        cut_at = []
        for i in range(200):
            ts = i * 21
            if segment.append(A, ts, aac_frame(i), False, classify(Message(A, ts, 1, aac_frame(i)))):
                cut_at.append(ts)
        self.assertEqual(cut_at, [1008, 2016, 3024, 4032])
        self.assertGreaterEqual(FRAGMENT_MS, cut_at[0] - 21)
        duration, size = segment.finalize()
        self.assertEqual(duration, 199 * 21 / 1000)
        _, fragments, _ = split(file.saved)
        self.assertEqual(len(all_samples(fragments)[2]), 200)

    def test_a_file_without_samples_stays_empty(self) -> None:
        file = MemoryFile()
        segment = Mp4SegmentFile(
            file, "a.mp4", build_mp4_prologue([Message(V, 0, 1, AVC_SEQUENCE_HEADER)], True)
        )
        segment.append(V, 0, avc_keyframe(1)[:3], True)
        self.assertEqual(segment.finalize(), (0.0, 0))
        self.assertEqual(file.saved, b"")

    def test_mfra_layout(self) -> None:
        data = mfra({1: [(0, 100, 1, 1, 1), (90000, 2000, 1, 1, 3)], 2: [(0, 100, 2, 1, 1)]})
        self.assertEqual(data[4:8], b"mfra")
        inner = MP4.parse(data[8:])
        self.assertEqual([b.type for b in inner], [b"tfra", b"tfra", b"mfro"])
        self.assertEqual(inner[-1].end, len(data) - 8)
        self.assertEqual(
            tfra_entries(data), {1: [(0, 100, 1, 1, 1), (90000, 2000, 1, 1, 3)], 2: [(0, 100, 2, 1, 1)]}
        )
        self.assertEqual(struct.unpack(">I", data[-4:])[0], len(data))

    def test_the_format_option(self) -> None:
        options = Options()
        options.parseOptions(["--record-format", "mp4"])
        self.assertEqual(options.config().record_format, "mp4")
        defaults = Options()
        defaults.parseOptions([])
        self.assertEqual(defaults.config().record_format, "flv")
        self.assertEqual(RECORD_FORMATS, ("flv", "mp4"))
        with self.assertRaises(SystemExit):
            Options().parseOptions(["--record-format", "mkv"])
