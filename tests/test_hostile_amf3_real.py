"""Metadata whose keys mix strings and numbers, against a live ``twistd -n rtmpd`` that records.

The attacker publishes and sends ``onMetaData`` as AMF3 inside AMF0 (the
avmplus switch, in type 15 and type 18 data messages) and as AMF0 ECMA
arrays: AMF3 dictionaries whose keys mix strings, integers, doubles (NaN
too), booleans, null and byte arrays, repeated keys, AMF3 arrays with an
associative part and a dense part, ECMA arrays with a wrong count, tens of
thousands of entries, and counts that claim hundreds of millions of entries.
Once (issue 11) a dictionary with mixed keys raised TypeError in
``sorted(meta)`` and closed the connection with "Unhandled Error".

As in ``test_hostile_core_real``, while the attack runs an honest client
completes handshake + connect in under a second and the ffmpeg player of
another stream keeps decoding; the server's RSS grows by less than 64 MiB;
the log has a bounded number of bounded lines for the attacker and no error;
metadata that decodes is taken with only its string keys (one "Metadata
received" line each), and what cannot be decoded (an absurd count, an
unhashable key) is a typed error and a close. The recording of the
attacker's stream is finalised and its onMetaData has only string keys.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import time

from rtmpd.core import amf0
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.flvfile import publisher_metadata
from tests.test_hostile_core_real import CONNECT_BOUND, LINE_BOUND, HostileCoreTestCase
from tests.test_relay_real import FPS, rss_kib

AVMPLUS = b"\x11"


def u29(n: int) -> bytes:
    """AMF3's variable-length unsigned 29-bit integer."""
    if n < 0x80:
        return bytes([n])
    if n < 0x4000:
        return bytes([(n >> 7) | 0x80, n & 0x7F])
    if n < 0x200000:
        return bytes([(n >> 14) | 0x80, ((n >> 7) & 0x7F) | 0x80, n & 0x7F])
    return bytes([(n >> 22) | 0x80, ((n >> 15) & 0x7F) | 0x80, ((n >> 8) & 0x7F) | 0x80, n & 0xFF])


def a3_string(text: str) -> bytes:
    data = text.encode()
    return u29(len(data) << 1 | 1) + data


def a3_str(text: str) -> bytes:
    return b"\x06" + a3_string(text)


def a3_int(n: int) -> bytes:
    return b"\x04" + u29(n)


def a3_double(x: float) -> bytes:
    return b"\x05" + struct.pack(">d", x)


def a3_dictionary(pairs: list[tuple[bytes, bytes]], count: int | None = None) -> bytes:
    """An AMF3 dictionary of already encoded (key, value) pairs; ``count`` may lie."""
    n = len(pairs) if count is None else count
    return b"\x11" + u29(n << 1 | 1) + b"\x00" + b"".join(k + v for k, v in pairs)


def a3_array(assoc: list[tuple[str, bytes]], dense: list[bytes], count: int | None = None) -> bytes:
    n = len(dense) if count is None else count
    return (
        b"\x09" + u29(n << 1 | 1) + b"".join(a3_string(k) + v for k, v in assoc) + b"\x01" + b"".join(dense)
    )


def ecma(pairs: list[tuple[str, bytes]], count: int) -> bytes:
    """An AMF0 ECMA array of (key, encoded value) pairs with the count ``count`` (ignored by readers)."""
    body = b"".join(struct.pack(">H", len(k)) + k.encode() + v for k, v in pairs)
    return b"\x08" + struct.pack(">I", count) + body + b"\x00\x00\x09"


def on_metadata_amf3(value: bytes) -> Message:
    """A type 15 data message: the AMF3 format byte, then AMF0 with an avmplus switch."""
    return Message(MessageType.DATA_AMF3, 0, 1, b"\x00" + amf0.encode("onMetaData") + AVMPLUS + value)


def set_data_frame(value: bytes) -> Message:
    """A type 18 ``@setDataFrame`` as OBS and ffmpeg send it, with ``value`` raw after the name."""
    body = amf0.encode_many("@setDataFrame", "onMetaData") + value
    return Message(MessageType.DATA_AMF0, 0, 1, body)


#: Keys of every AMF3 kind, some repeated, with a string key among them that must survive.
MIXED = a3_dictionary(
    [
        (a3_int(1), a3_str("one")),
        (a3_str("width"), a3_double(1280.0)),
        (a3_double(2.5), a3_str("two and a half")),
        (a3_double(float("nan")), a3_int(1)),
        (a3_double(float("nan")), a3_int(2)),
        (b"\x03", a3_str("true")),
        (b"\x01", a3_str("null")),
        (b"\x0c" + u29(3 << 1 | 1) + b"abc", a3_int(3)),  # a ByteArray key
        (a3_str("1"), a3_str("the string one")),
        (a3_int(1), a3_str("one again")),
        (a3_str("width"), a3_double(1920.0)),
        (a3_str("height"), a3_double(1080.0)),
    ]
)


class MixedKeyMetadataTests(HostileCoreTestCase):
    """The attacker publishes ``live/mixed`` on a server that records it."""

    def setUp(self) -> None:
        self.record_dir = tempfile.mkdtemp(prefix="rtmpd-amf3-attack-")
        self.addCleanup(shutil.rmtree, self.record_dir, True)
        self.server_args = (*type(self).server_args, "--record-dir", self.record_dir)
        super().setUp()

    def publishing_attacker(self, first: Message | None = None):
        """An attacker publishing live/mixed: ``first`` (metadata), then an AVC sequence header and a
        keyframe (the recording opens at the first media frame, with the metadata known by then)."""
        attacker, conn_id = self.attacker()
        attacker.connect_and_publish("mixed")
        self.wait_publishing("mixed")
        if first is not None:
            attacker.send(4, first)
        attacker.send(
            6, Message(MessageType.VIDEO, 0, 1, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x00")
        )
        attacker.send(6, Message(MessageType.VIDEO, 0, 1, b"\x17\x01\x00\x00\x00" + bytes(64)))
        return attacker, conn_id

    def metadata_lines(self, conn_id: str, count: int) -> list[dict]:
        deadline = time.monotonic() + 30
        while True:
            lines = [e for e in self.server.messages("Metadata received") if e.get("conn_id") == conn_id]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)  # the server's reader thread has no event for "n lines seen"

    def assertBoundedLog(self, conn_id: str) -> None:
        """The attacker's connection left a bounded number of bounded lines at info and above (the
        level operators run at), however many messages it sent; no error anywhere."""
        lines = [line for line in self.server.output if conn_id in line]
        self.assertLess(max(map(len, lines)), LINE_BOUND)
        logged = [e for e in self.server.events if e.get("conn_id") == conn_id and e.get("level") != "debug"]
        self.assertLess(len(logged), 30, [e.get("msg") for e in logged])
        self.assertEqual(self.server.errors(), [])

    def test_mixed_repeated_and_many_keys_keep_only_string_keys(self) -> None:
        attacker, conn_id = self.publishing_attacker(on_metadata_amf3(MIXED))
        many_numbers = a3_dictionary(
            [(a3_int(i), a3_int(i)) for i in range(10_000)] + [(a3_str("framerate"), a3_double(30.0))]
        )
        one_key_many_times = a3_dictionary([(a3_str("width"), a3_int(i)) for i in range(10_000)])
        mixed_array = a3_array([("width", a3_double(640.0)), ("1", a3_str("x"))], [a3_int(7), a3_str("y")])
        wrong_count = ecma(
            [("0", amf0.encode(1.0)), ("width", amf0.encode(2.0)), ("width", amf0.encode(3.0))], 0xFFFFFFFF
        )
        messages = [
            on_metadata_amf3(MIXED),
            set_data_frame(AVMPLUS + MIXED),
            on_metadata_amf3(mixed_array),
            set_data_frame(wrong_count),
            on_metadata_amf3(many_numbers),
            on_metadata_amf3(one_key_many_times),
        ]
        rounds = 20
        stop = threading.Event()

        def attack() -> None:
            # About 1 MB of metadata a second for two seconds, each message decoded within the AMF budget.
            for _ in range(rounds):
                for message in messages:
                    if stop.is_set():
                        return
                    attacker.send(4, message)
                time.sleep(0.1)

        started = time.monotonic(), self.player.media_seconds
        thread = threading.Thread(target=attack, daemon=True)
        thread.start()
        self.addCleanup(stop.set)
        self.assertLess(self.honest_connect_seconds(), CONNECT_BOUND)
        thread.join(60)
        self.assertFalse(thread.is_alive())
        lines = self.metadata_lines(conn_id, 1 + rounds * len(messages))
        ended = [e for e in self.server.events if e.get("conn_id") == conn_id and e.get("level") != "debug"]
        self.assertEqual(len(lines), 1 + rounds * len(messages), [e.get("msg") for e in ended][-6:])
        # The keys 1, 2.5, NaN, true, null and b"abc" are left out; the string "1" stays.
        self.assertEqual(lines[0]["fields"], ["1", "height", "width"])
        self.assertEqual(lines[1]["fields"], ["1", "height", "width"])
        self.assertEqual(lines[2]["fields"], ["1", "height", "width"])
        self.assertEqual(lines[3]["fields"], ["0", "1", "width"])
        self.assertEqual(lines[4]["fields"], ["0", "width"])
        self.assertEqual(lines[5]["fields"], ["framerate"])
        self.assertEqual((lines[6]["fields"], lines[6]["field_count"]), (["width"], 1))
        # Still publishing: nothing here is an error.
        self.assertEqual(
            [e for e in self.server.messages("Protocol error") if e.get("conn_id") == conn_id], []
        )
        # The player of the other stream kept up with the wall clock while all that was decoded.
        self.player.wait_frames(self.player.frames + FPS // 2, timeout=10)
        wall = time.monotonic() - started[0]
        self.assertGreaterEqual(self.player.media_seconds - started[1], wall - 1.5)
        self.assertStreamStillFlows()
        growth = self.rss_growth()
        self.assertLess(growth, 64 * 1024, f"server RSS grew by {growth} KiB")
        self.assertBoundedLog(conn_id)
        # The recording opened with the mixed-key metadata: its onMetaData keeps the string keys only.
        attacker.close()
        finalized = self.server.wait_for_msg("recording finalized", 20, stream_key="live/mixed")
        recorded = self.recorded_metadata(finalized["file"])
        self.assertEqual((recorded.get("width"), recorded.get("height")), (1920.0, 1080.0))
        self.assertEqual(recorded.get("1"), "the string one")
        self.assertTrue(all(isinstance(k, str) for k in recorded), list(recorded))

    def test_absurd_counts_and_unhashable_keys_are_typed_errors(self) -> None:
        attacks = [
            # 2^28 - 1 entries claimed, three sent.
            on_metadata_amf3(a3_dictionary([(a3_str("width"), a3_int(1))] * 3, count=(1 << 28) - 1)),
            on_metadata_amf3(a3_array([], [a3_int(1)] * 3, count=(1 << 28) - 1)),
            # An AMF3 object as a dictionary key: not a key Python can hold.
            on_metadata_amf3(
                a3_dictionary([(b"\x0a\x0b\x01" + a3_string("k") + a3_int(1) + b"\x01", a3_int(1))])
            ),
            on_metadata_amf3(a3_dictionary([(a3_array([], [a3_int(1)]), a3_int(1))])),
        ]
        for message in attacks:
            attacker, conn_id = self.publishing_attacker()
            started = time.monotonic()
            attacker.send(4, message)
            self.assertLess(self.honest_connect_seconds(), CONNECT_BOUND)
            event = self.protocol_error(conn_id, "AMFDecodeError")
            self.assertLess(time.monotonic() - started, 5)
            self.assertLess(len(event["detail"]), 1000)
            self.assertClosedByServer(attacker.sock)
            self.assertBoundedLog(conn_id)
        self.assertStreamStillFlows()
        growth = self.rss_growth()
        self.assertLess(growth, 64 * 1024, f"server RSS grew by {growth} KiB")

    def rss_growth(self) -> int:
        return rss_kib(self.server.process.pid) - self.rss_before

    def recorded_metadata(self, path: str) -> dict:
        """The publisher's part of the onMetaData tag of the FLV recording at ``path``."""
        if not os.path.isabs(path):
            path = os.path.join(self.record_dir, path)
        with open(path, "rb") as f:
            data = f.read(1 << 20)
        # FLV header (9) + PreviousTagSize (4), then the onMetaData script tag (11-byte header).
        self.assertEqual(data[13], 18)
        size = int.from_bytes(data[14:17], "big")
        return publisher_metadata(data[24 : 24 + size])
