"""Enhanced RTMP (E-RTMP v1/v2) through the server, in memory: negotiation, relay, late join, reconnect.

Tags are written out by hand from the veovera Enhanced RTMP v2
specification, so these tests do not share rtmpd's constants. The
classification of single tags is ``tests/test_media.py``'s; here the same
kinds of tags go through a publisher, the relay and players.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application import service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.commands import Command, decode_command
from rtmpd.core.ertmp import (
    CAPS_EX_MODEX,
    CAPS_EX_MULTITRACK,
    CAPS_EX_RECONNECT,
    CAPS_EX_TIMESTAMP_NANO_OFFSET,
    client_capabilities,
    connect_result_properties,
    reconnect_request,
)
from rtmpd.core.messages import MessageType
from rtmpd.server import service as server_module
from rtmpd.server.listening import ListeningService
from rtmpd.testing import MemoryServer, RTMPTestClient, result_of, status_code
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V, D = MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0
RECONNECT = "NetConnection.Connect.ReconnectRequest"

# -- hand-made E-RTMP tags -------------------------------------------------------------

KEY, INTER, COMMAND = 1, 2, 5
SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X, METADATA, MPEG2TS_START = 0, 1, 2, 3, 4, 5
VIDEO_MULTITRACK, MODEX = 6, 7
AUDIO_MULTICHANNEL_CONFIG, AUDIO_MULTITRACK = 4, 5
ONE_TRACK, MANY_TRACKS, MANY_TRACKS_MANY_CODECS = 0, 1, 2


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def ex_video(frame_type: int, packet_type: int, fourcc: bytes, body: bytes = b"") -> bytes:
    """ExVideoTagHeader: IsExHeader | FrameType | PacketType, FourCC, then the body."""
    return bytes([0x80 | frame_type << 4 | packet_type]) + fourcc + body


def ex_video_tracks(
    frame_type: int, packet_type: int, tracks: list[tuple[bytes, int, bytes]], mt_type: int = MANY_TRACKS
) -> bytes:
    """A multitrack video tag: (FourCC, track id, body) per track."""
    out = bytes([0x80 | frame_type << 4 | VIDEO_MULTITRACK, mt_type << 4 | packet_type])
    return out + _tracks(tracks, mt_type)


def ex_audio(packet_type: int, fourcc: bytes, body: bytes = b"") -> bytes:
    """ExAudioTagHeader: SoundFormat 9 | PacketType, FourCC, then the body."""
    return bytes([0x90 | packet_type]) + fourcc + body


def ex_audio_tracks(
    packet_type: int, tracks: list[tuple[bytes, int, bytes]], mt_type: int = MANY_TRACKS
) -> bytes:
    """A multitrack audio tag: (FourCC, track id, body) per track."""
    return bytes([0x90 | AUDIO_MULTITRACK, mt_type << 4 | packet_type]) + _tracks(tracks, mt_type)


def _tracks(tracks: list[tuple[bytes, int, bytes]], mt_type: int) -> bytes:
    out = b"" if mt_type == MANY_TRACKS_MANY_CODECS else tracks[0][0]
    for fourcc, track_id, body in tracks:
        if mt_type == MANY_TRACKS_MANY_CODECS:
            out += fourcc
        out += bytes([track_id])
        out += body if mt_type == ONE_TRACK else u24(len(body)) + body
    return out


def hevc_config(n: int = 0) -> bytes:
    return ex_video(KEY, SEQUENCE_START, b"hvc1", bytes([1, 1, 0x60, n]) + b"\x00" * 19)


def hevc_key(n: int) -> bytes:
    # CodedFrames carries a composition time offset before the NAL units.
    return ex_video(KEY, CODED_FRAMES, b"hvc1", u24(0) + bytes([0x26, n & 0xFF]) * 40)


def hevc_inter(n: int) -> bytes:
    # CodedFramesX: composition time offset implied 0.
    return ex_video(INTER, CODED_FRAMES_X, b"hvc1", bytes([0x02, n & 0xFF]) * 20)


OPUS_HEAD = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
OPUS_CONFIG = ex_audio(SEQUENCE_START, b"Opus", OPUS_HEAD)


def opus_frame(n: int) -> bytes:
    return ex_audio(CODED_FRAMES, b"Opus", bytes([0xFC, n & 0xFF]) * 10)


#: Per video FourCC: (codec name, sequence start, keyframe, inter frame).
VIDEO_CODECS = {
    b"hvc1": "H265",
    b"av01": "AV1",
    b"vp09": "VP9",
    b"vp08": "VP8",
    b"avc1": "H264",
    b"vvc1": "VVC",
}


def video_config(fourcc: bytes) -> bytes:
    return ex_video(KEY, SEQUENCE_START, fourcc, b"\x81\x00\x0c\x00" + fourcc)


def video_key(fourcc: bytes, n: int) -> bytes:
    return ex_video(KEY, CODED_FRAMES, fourcc, u24(0) + bytes([n & 0xFF]) * 30)


def video_inter(fourcc: bytes, n: int) -> bytes:
    return ex_video(INTER, CODED_FRAMES, fourcc, u24(0) + bytes([n & 0xFF]) * 15)


# -- negotiation, pure -------------------------------------------------------------------


class NegotiationTests(SynchronousTestCase):
    def test_legacy_client_gets_nothing_new(self) -> None:
        caps = client_capabilities({"app": "live", "flashVer": "FMLE/3.0", "videoCodecs": 252.0})
        self.assertFalse(caps.enhanced)
        self.assertFalse(caps.reconnect)
        self.assertIsNone(caps.summary())
        self.assertEqual(connect_result_properties(caps), {})

    def test_v1_fourcc_list_is_echoed_with_forwarding_maps(self) -> None:
        caps = client_capabilities({"fourCcList": ["hvc1", "av01", "vp09"]})
        self.assertEqual(caps.fourcc_list, ("hvc1", "av01", "vp09"))
        props = connect_result_properties(caps)
        self.assertEqual(props["fourCcList"], ["hvc1", "av01", "vp09"])
        self.assertEqual(props["videoFourCcInfoMap"], {"*": 4.0})
        self.assertEqual(props["audioFourCcInfoMap"], {"*": 4.0})

    def test_v2_server_states_its_own_caps_and_forwards_every_named_codec(self) -> None:
        caps = client_capabilities(
            {
                "videoFourCcInfoMap": {"hvc1": 3.0, "av01": 1.0, "*": 4.0},
                "audioFourCcInfoMap": {"Opus": 3.0},
                "capsEx": float(CAPS_EX_RECONNECT | CAPS_EX_MULTITRACK),
            }
        )
        self.assertTrue(caps.reconnect)
        self.assertTrue(caps.multitrack)
        props = connect_result_properties(caps)
        # What rtmpd supports, not an echo of the client's bits.
        self.assertEqual(
            props["capsEx"],
            float(CAPS_EX_RECONNECT | CAPS_EX_MULTITRACK | CAPS_EX_MODEX | CAPS_EX_TIMESTAMP_NANO_OFFSET),
        )
        self.assertEqual(props["videoFourCcInfoMap"], {"*": 4.0, "hvc1": 4.0, "av01": 4.0})
        self.assertEqual(props["audioFourCcInfoMap"], {"*": 4.0, "Opus": 4.0})
        self.assertNotIn("fourCcList", props)

    def test_malformed_values_count_as_absent(self) -> None:
        for caps_ex in ("1", True, math.nan, math.inf, -1.0, 1.5, 2.0**40, None, [1]):
            caps = client_capabilities({"capsEx": caps_ex})
            self.assertTrue(caps.enhanced, caps_ex)
            self.assertEqual(caps.caps_ex, 0, caps_ex)
            self.assertFalse(caps.reconnect)
        caps = client_capabilities(
            {
                "fourCcList": [1.0, None, "much too long", "", "av01", "av01", {"x": 1}],
                "videoFourCcInfoMap": ["hvc1"],
                "audioFourCcInfoMap": {"Opus": "all", "fLaC": -4.0, "ac-3": 4.0, "way too long": 4.0},
            }
        )
        self.assertEqual(caps.fourcc_list, ("av01",))
        self.assertEqual(dict(caps.video_fourccs), {})
        self.assertEqual(dict(caps.audio_fourccs), {"ac-3": 4})
        self.assertEqual(client_capabilities({"fourCcList": "hvc1"}).fourcc_list, ())

    def test_reconnect_request_is_a_netconnection_on_status(self) -> None:
        message = reconnect_request("rtmp://other.example/live", "Moving you.")
        self.assertEqual((message.type_id, message.stream_id), (MessageType.COMMAND_AMF0, 0))
        command = decode_command(message)
        self.assertEqual(
            (command.name, command.transaction_id, command.command_object), ("onStatus", 0.0, None)
        )
        self.assertEqual(
            command.args[0],
            {
                "level": "status",
                "code": RECONNECT,
                "description": "Moving you.",
                "tcUrl": "rtmp://other.example/live",
            },
        )
        self.assertNotIn("tcUrl", decode_command(reconnect_request()).args[0])


# -- through the server ------------------------------------------------------------------


class ERTMPTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer(self.config())

    def config(self) -> ServerConfig:
        return ServerConfig()

    def client(self, **connect_params):
        client, sid = self.server.session(**connect_params)
        self.connect_result: Command = client.connect_result
        return client, sid

    def publisher(self, name: str = "test", **connect_params):
        client, sid = self.client(**connect_params)
        self.server.settle(client.publish(sid, name))
        return client, sid

    def player(self, name: str = "test"):
        return self.server.player(name)

    def send(self, pub: RTMPTestClient, sid: int, items: list[tuple[int, int, bytes]]) -> None:
        for type_id, ts, payload in items:
            pub.send_media(type_id, sid, ts, payload)
        self.server.flush()

    def payloads(self, client: RTMPTestClient, sid: int, type_id: int | None = None) -> list[bytes]:
        return [m.payload for m in client.media(sid) if type_id is None or m.type_id == type_id]

    def stream(self, name: str = "test"):
        return self.server.registry.get(f"live/{name}")


class ConnectTests(ERTMPTestCase):
    def test_enhanced_client_is_told_what_rtmpd_forwards(self) -> None:
        self.client(fourCcList=["hvc1", "av01", "vp09"], capsEx=1.0, videoFourCcInfoMap={"hvc1": 1.0})
        props = self.connect_result.command_object
        self.assertEqual(props["fourCcList"], ["hvc1", "av01", "vp09"])
        self.assertEqual(props["capsEx"], 15.0)
        self.assertEqual(props["videoFourCcInfoMap"], {"*": 4.0, "hvc1": 4.0})
        self.assertEqual(props["audioFourCcInfoMap"], {"*": 4.0})
        self.assertEqual(self.connect_result.args[0]["code"], "NetConnection.Connect.Success")

    def test_legacy_client_result_is_unchanged(self) -> None:
        self.client()
        props = self.connect_result.command_object
        self.assertEqual(set(props), {"fmsVer", "capabilities", "mode"})

    def test_malformed_capabilities_do_not_refuse_the_connection(self) -> None:
        client, sid = self.client(capsEx="lots", fourCcList={"not": "a list"}, videoFourCcInfoMap=3.0)
        self.assertEqual(self.connect_result.command_object["capsEx"], 15.0)
        self.assertTrue(client.connected_transport)
        self.assertEqual(sid, 1)

    def test_connect_log_says_what_the_client_advertised(self) -> None:
        with capturedLogs() as events:
            self.client(fourCcList=["hvc1"], capsEx=3.0)
        connect = next(e for e in events if e.get("log_format") == "connect command")
        self.assertEqual(connect["enhanced"]["capsEx"], 3)
        self.assertEqual(connect["enhanced"]["fourCcList"], ["hvc1"])


class EnhancedRelayTests(ERTMPTestCase):
    def test_every_video_fourcc_relayed_untouched_and_late_joiners_start_at_a_keyframe(self) -> None:
        for fourcc, codec in VIDEO_CODECS.items():
            name = fourcc.decode()
            pub, psid = self.publisher(name)
            live, lsid = self.player(name)
            pub.send_metadata(psid, {"videocodecid": float(int.from_bytes(fourcc, "big"))})
            sent = [(A, 0, OPUS_CONFIG), (V, 0, video_config(fourcc))]
            for gop in range(2):
                start = gop * 1000
                sent.append((V, start, video_key(fourcc, gop)))
                for i in range(1, 4):
                    sent.append((A, start + i * 20, opus_frame(i)))
                    sent.append((V, start + i * 40, video_inter(fourcc, i)))
            self.send(pub, psid, sent)
            self.assertEqual(self.payloads(live, lsid, V), [p for t, _, p in sent if t == V], codec)
            self.assertEqual(self.payloads(live, lsid, A), [p for t, _, p in sent if t == A], codec)

            late, sid = self.player(name)
            media = late.media(sid)
            self.assertEqual(media[0].type_id, D)
            self.assertEqual([m.payload for m in media[1:3]], [OPUS_CONFIG, video_config(fourcc)], codec)
            self.assertEqual(media[3].payload, video_key(fourcc, 1), codec)
            self.assertEqual(media[3].timestamp, 1000)
            stats = self.stream(name).stats
            self.assertEqual((stats.video_codec, stats.audio_codec), (codec, "Opus"))

    def test_codecs_detected_names_the_enhanced_codecs(self) -> None:
        with capturedLogs() as events:
            pub, psid = self.publisher()
            self.send(pub, psid, [(V, 0, hevc_config()), (A, 0, OPUS_CONFIG)])
        detected = [e for e in events if e.get("log_format") == "Codecs detected"]
        self.assertEqual(len(detected), 1)
        self.assertEqual((detected[0]["videoCodec"], detected[0]["audioCodec"]), ("H265", "Opus"))
        headers = [e for e in events if e.get("log_format") == "Cached {kind} sequence header"]
        self.assertEqual({(e["kind"], e["fourcc"]) for e in headers}, {("video", "hvc1"), ("audio", "Opus")})

    def test_track_configuration_messages_are_cached_not_gop(self) -> None:
        color = ex_video(KEY, METADATA, b"hvc1", b"\x02\x00\x09colorInfo\x03\x00\x00\x09")
        channels = ex_audio(AUDIO_MULTICHANNEL_CONFIG, b"Opus", b"\x01\x06\x00\x00\x00\x3f")
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            [
                (A, 0, OPUS_CONFIG),
                (A, 0, channels),
                (V, 0, color),
                (V, 0, hevc_config()),
                (V, 0, hevc_key(0)),
                (V, 40, hevc_inter(1)),
                (V, 1000, hevc_key(1)),
            ],
        )
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [OPUS_CONFIG, channels, color, hevc_config(), hevc_key(1)])

    def test_newer_configuration_replaces_older_for_late_joiners(self) -> None:
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            [
                (V, 0, hevc_config(1)),
                (V, 0, hevc_key(0)),
                (V, 900, ex_video(KEY, SEQUENCE_END, b"hvc1")),
                (V, 1000, hevc_config(2)),
                (V, 1000, hevc_key(1)),
            ],
        )
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [hevc_config(2), hevc_key(1)])

    def test_mpeg2ts_sequence_start_is_a_sequence_header(self) -> None:
        ts_start = ex_video(KEY, MPEG2TS_START, b"av01", b"\x81\x00\x0c\x00\x0a\x0b")
        pub, psid = self.publisher()
        self.send(pub, psid, [(V, 0, ts_start), (V, 0, video_key(b"av01", 0))])
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [ts_start, video_key(b"av01", 0)])
        self.assertEqual(self.stream().stats.video_codec, "AV1")

    def test_sequence_end_and_command_frames_are_relayed(self) -> None:
        pub, psid = self.publisher()
        live, lsid = self.player()
        command = bytes([0x80 | COMMAND << 4 | CODED_FRAMES, 0])  # VideoCommand.StartSeek, no FourCC
        end = ex_video(KEY, SEQUENCE_END, b"hvc1")
        audio_end = ex_audio(SEQUENCE_END, b"Opus")
        sent = [
            (V, 0, hevc_config()),
            (V, 0, hevc_key(0)),
            (V, 40, command),
            (V, 80, end),
            (A, 80, audio_end),
        ]
        with capturedLogs() as events:
            self.send(pub, psid, sent)
        self.assertEqual(self.payloads(live, lsid), [p for _, _, p in sent])
        # All of these are known tags: nothing is reported as unknown or unparsed.
        self.assertEqual(
            [
                e["log_format"]
                for e in events
                if e.get("log_format") in ("Unknown media tag relayed untouched", "Unparsed media tag")
            ],
            [],
        )

    def test_modex_prefixed_keyframe_starts_the_gop(self) -> None:
        # ModEx: size-1 = 3 (4 bytes of TimestampOffsetNano data), then type 0 | next packet type CodedFrames.
        modex = bytes([0x80 | KEY << 4 | MODEX, 3, 0, 0x0F, 0x42, 0x40, 0x00 | CODED_FRAMES])
        keyframe = modex + b"hvc1" + u24(0) + b"\x26\x01" * 20
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            [
                (V, 0, hevc_config()),
                (V, 0, hevc_key(0)),
                (V, 40, hevc_inter(1)),
                (V, 1000, keyframe),
                (V, 1040, hevc_inter(2)),
            ],
        )
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [hevc_config(), keyframe, hevc_inter(2)])

    def test_unknown_fourccs_and_packet_types_pass_through_with_one_debug_log_each(self) -> None:
        unknown_video = ex_video(KEY, CODED_FRAMES, b"xyz1", u24(0) + b"\x00" * 10)
        unknown_type = bytes([0x80 | INTER << 4 | 9]) + b"hvc1" + b"\x00" * 10
        unknown_audio = ex_audio(CODED_FRAMES, b"vorb", b"\x01" * 10)
        unknown_audio_type = ex_audio(3, b"Opus", b"\x01")
        pub, psid = self.publisher()
        live, lsid = self.player()
        sent = [(V, 0, hevc_config()), (V, 0, hevc_key(0))]
        sent += [(V, 40 * i, unknown_video) for i in range(1, 3)] + [(V, 200, unknown_type)] * 2
        sent += [(A, 20 * i, unknown_audio) for i in range(3)] + [(A, 300, unknown_audio_type)]
        with capturedLogs() as events:
            self.send(pub, psid, sent)
        self.assertEqual(self.payloads(live, lsid), [p for _, _, p in sent])
        logged = [
            (e["kind"], e["codec"], e["packet_type"])
            for e in events
            if e.get("log_format") == "Unknown media tag relayed untouched"
        ]
        self.assertEqual(
            sorted(logged),
            sorted(
                [
                    ("video", "unknown(xyz1)", 1),
                    ("video", "H265", 9),
                    ("audio", "unknown(vorb)", 1),
                    ("audio", "Opus", 3),
                ]
            ),
        )
        self.assertTrue(
            all(
                e["log_level"] == LogLevel.debug
                for e in events
                if e.get("log_format") == "Unknown media tag relayed untouched"
            )
        )

    def test_truncated_tags_are_relayed_and_the_publisher_keeps_going(self) -> None:
        truncated = [
            b"\x91",
            b"\x91hv",
            b"\x97",
            b"\x97\x05\x00",
            b"\x96",
            b"\x96\x10hvc1\x00\x00\x00\x09ab",
            b"\x96\x21hvc1\x00" + u24(1) + b"x" + b"av0",
        ]
        truncated_audio = [
            b"\x91",
            b"\x91Op",
            b"\x95\x10Opus",
            b"\x95\x11Opus\x00" + u24(1) + b"x\x01" + u24(4),
            b"\xaf",
        ]
        pub, psid = self.publisher()
        live, lsid = self.player()
        sent = [(V, 0, hevc_config()), (V, 0, hevc_key(0))]
        sent += [(V, 10 + i, p) for i, p in enumerate(truncated)]
        sent += [(A, 10 + i, p) for i, p in enumerate(truncated_audio)]
        sent += [(V, 1000, hevc_key(1))]
        with capturedLogs() as events:
            self.send(pub, psid, sent)
        self.assertEqual(self.payloads(live, lsid), [p for _, _, p in sent])
        self.assertTrue(pub.connected_transport)
        unparsed = [e for e in events if e.get("log_format") == "Unparsed media tag"]
        self.assertGreaterEqual(len(unparsed), len(truncated) - 1)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.error], [])
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid, V)[:2], [hevc_config(), hevc_key(1)])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([A, V]), st.binary(max_size=24)), max_size=12))
    def test_any_bytes_are_relayed_and_never_break_the_stream(self, tags: list[tuple[int, bytes]]) -> None:
        server = MemoryServer()
        self.server = server
        pub, psid = self.publisher()
        live, lsid = self.player()
        prefix = [(V, 0, hevc_config()), (V, 0, hevc_key(0))]
        # E-RTMP-looking prefixes make the random tails reach the deeper parsing paths.
        sent = prefix + [
            (t, 10 + i, (b"\x96\x11hvc1" if i % 2 else b"\x95\x01") + body if body[:1] == b"\x00" else body)
            for i, (t, body) in enumerate(tags)
        ]
        self.send(pub, psid, sent)
        self.assertTrue(pub.connected_transport)
        audio_sent = [p for t, _, p in sent if t == A]
        # Not live.media(): it leaves out what looks like |RtmpSampleAccess, and so may these bytes.
        received = [m.payload for m in live.messages if m.type_id == A and m.stream_id == lsid]
        self.assertEqual(received, audio_sent)
        # A late joiner gets only what was sent (rtmpd never rewrites media), and at least some of it.
        late, sid = self.player()
        self.assertTrue(late.connected_transport)
        self.assertLessEqual(set(self.payloads(late, sid)), {p for _, _, p in sent})
        self.assertTrue(self.payloads(late, sid, V))


class MultitrackTests(ERTMPTestCase):
    def ffmpeg_layout(self) -> list[tuple[int, int, bytes]]:
        """As ffmpeg 9's FLV muxer writes two tracks: track 0 legacy, track 1 in OneTrack multitrack tags."""
        return [
            (A, 0, AAC_SEQUENCE_HEADER),
            (A, 0, ex_audio_tracks(SEQUENCE_START, [(b"Opus", 1, OPUS_HEAD)], ONE_TRACK)),
            (
                A,
                0,
                ex_audio_tracks(
                    AUDIO_MULTICHANNEL_CONFIG, [(b"Opus", 1, b"\x01\x01\x00\x00\x00\x04")], ONE_TRACK
                ),
            ),
            (V, 0, AVC_SEQUENCE_HEADER),
            (V, 0, ex_video_tracks(KEY, SEQUENCE_START, [(b"hvc1", 1, b"\x01\x01\x60")], ONE_TRACK)),
        ]

    def track1_key(self, n: int) -> bytes:
        return ex_video_tracks(KEY, CODED_FRAMES, [(b"hvc1", 1, u24(0) + bytes([n]) * 20)], ONE_TRACK)

    def track1_inter(self, n: int) -> bytes:
        return ex_video_tracks(INTER, CODED_FRAMES, [(b"hvc1", 1, u24(0) + bytes([n]) * 10)], ONE_TRACK)

    def test_every_track_configuration_precedes_frames_for_late_joiners(self) -> None:
        headers = self.ffmpeg_layout()
        with capturedLogs() as events:
            pub, psid = self.publisher()
            live, lsid = self.player()
            frames = [
                (V, 0, avc_keyframe(0)),
                (V, 0, self.track1_key(0)),
                (A, 0, aac_frame(0)),
                (V, 40, avc_interframe(1)),
                (V, 40, self.track1_inter(1)),
                (V, 2000, avc_keyframe(2)),
                (V, 2000, self.track1_key(2)),
                (A, 2000, aac_frame(2)),
                (V, 2040, avc_interframe(3)),
                (V, 2040, self.track1_inter(3)),
            ]
            self.send(pub, psid, headers + frames)
        self.assertEqual(self.payloads(live, lsid), [p for _, _, p in headers + frames])
        late, sid = self.player()
        # Audio configuration (both tracks, then track 1's channel layout), video configuration, the GOP.
        self.assertEqual(self.payloads(late, sid), [p for _, _, p in headers] + [p for _, _, p in frames[5:]])
        stats = self.stream().stats
        self.assertTrue(stats.multitrack)
        self.assertEqual(
            stats.tracks, {"audio0": "AAC", "audio1": "Opus", "video0": "H264", "video1": "H265"}
        )
        self.assertEqual((stats.video_codec, stats.audio_codec), ("H264", "AAC"))
        detected = [
            (e["kind"], e["track"], e["codec"]) for e in events if e.get("log_format") == "Track detected"
        ]
        self.assertEqual(detected, [("video", 1, "H265")])
        codecs = next(e for e in events if e.get("log_format") == "Codecs detected")
        self.assertEqual(codecs["tracks"], {"audio0": "AAC", "audio1": "Opus", "video0": "H264"})

    def test_a_message_configuring_many_tracks_is_cached_for_each_and_sent_once(self) -> None:
        both = ex_video_tracks(
            KEY,
            SEQUENCE_START,
            [(b"hvc1", 0, b"\x01\x00"), (b"av01", 1, b"\x81\x01")],
            MANY_TRACKS_MANY_CODECS,
        )
        key = ex_video_tracks(
            KEY,
            CODED_FRAMES,
            [(b"hvc1", 0, u24(0) + b"k0"), (b"av01", 1, u24(0) + b"k1")],
            MANY_TRACKS_MANY_CODECS,
        )
        pub, psid = self.publisher()
        self.send(pub, psid, [(V, 0, both), (V, 0, key)])
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [both, key])
        stream = self.stream()
        self.assertEqual(stream.stats.tracks, {"video0": "H265", "video1": "AV1"})
        self.assertEqual(sorted(stream.cache.video_headers), [0, 1])

        # A newer configuration of track 1 alone goes after the older one that also covered it.
        track1 = ex_video_tracks(KEY, SEQUENCE_START, [(b"av01", 1, b"\x81\x02")], ONE_TRACK)
        self.send(pub, psid, [(V, 1000, track1), (V, 1000, key)])
        later, sid2 = self.player()
        self.assertEqual(self.payloads(later, sid2), [both, track1, key])

    def test_keyframes_of_other_tracks_do_not_restart_the_gop(self) -> None:
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            self.ffmpeg_layout()
            + [
                (V, 0, avc_keyframe(0)),
                (V, 0, self.track1_key(0)),
                (V, 40, avc_interframe(1)),
                (V, 500, self.track1_key(5)),
                (V, 540, avc_interframe(2)),
            ],
        )
        late, sid = self.player()
        gop = self.payloads(late, sid, V)[2:]
        self.assertEqual(
            gop,
            [avc_keyframe(0), self.track1_key(0), avc_interframe(1), self.track1_key(5), avc_interframe(2)],
        )

    def test_other_track_keyframe_sent_just_before_the_primary_one_joins_its_gop(self) -> None:
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            self.ffmpeg_layout()
            + [
                (V, 0, avc_keyframe(0)),
                (V, 1960, avc_interframe(1)),
                (A, 2000, aac_frame(1)),
                (V, 2000, self.track1_key(2)),
                (V, 2000, avc_keyframe(2)),
                (V, 2040, self.track1_inter(3)),
            ],
        )
        late, sid = self.player()
        self.assertEqual(
            self.payloads(late, sid, V)[2:], [self.track1_key(2), avc_keyframe(2), self.track1_inter(3)]
        )

    def test_late_joiner_gets_no_frames_of_another_track_before_its_keyframe(self) -> None:
        pub, psid = self.publisher()
        self.send(
            pub,
            psid,
            self.ffmpeg_layout()
            + [
                (V, 0, avc_keyframe(0)),
                (V, 0, self.track1_inter(0)),
                (V, 40, avc_interframe(1)),
                (V, 40, self.track1_inter(1)),
                (V, 80, self.track1_key(2)),
                (V, 120, self.track1_inter(3)),
            ],
        )
        late, sid = self.player()
        self.assertEqual(
            self.payloads(late, sid, V)[2:],
            [avc_keyframe(0), avc_interframe(1), self.track1_key(2), self.track1_inter(3)],
        )

    def test_the_lowest_track_with_a_header_is_the_primary_one(self) -> None:
        pub, psid = self.publisher()
        config = ex_video_tracks(KEY, SEQUENCE_START, [(b"vp09", 2, b"\x01"), (b"vp09", 3, b"\x02")])
        key2 = ex_video_tracks(KEY, CODED_FRAMES, [(b"vp09", 2, u24(0) + b"a")], ONE_TRACK)
        key3 = ex_video_tracks(KEY, CODED_FRAMES, [(b"vp09", 3, u24(0) + b"b")], ONE_TRACK)
        self.send(pub, psid, [(V, 0, config), (V, 0, key2), (V, 0, key3), (V, 500, key3)])
        self.assertEqual(self.stream().primary_video_track, 2)
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [config, key2, key3, key3])

    def test_many_audio_tracks_in_one_message(self) -> None:
        config = ex_audio_tracks(
            SEQUENCE_START,
            [(b"Opus", 0, OPUS_HEAD), (b"fLaC", 1, b"fLaC\x00"), (b"ac-3", 2, b"\x0b\x77")],
            MANY_TRACKS_MANY_CODECS,
        )
        frames = ex_audio_tracks(
            CODED_FRAMES,
            [(b"Opus", 0, b"\xfc"), (b"fLaC", 1, b"\xff\xf8"), (b"ac-3", 2, b"\x0b\x77")],
            MANY_TRACKS_MANY_CODECS,
        )
        pub, psid = self.publisher()
        live, lsid = self.player()
        self.send(pub, psid, [(A, 0, config), (A, 20, frames)])
        self.assertEqual(self.payloads(live, lsid), [config, frames])
        self.assertEqual(self.stream().stats.tracks, {"audio0": "Opus", "audio1": "FLAC", "audio2": "AC3"})
        late, sid = self.player()
        self.assertEqual(self.payloads(late, sid), [config])


class _StopRecorder(service.Service):
    """A child service that notes what the publishers were doing when it was stopped (as the recorder is)."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.live_at_stop: list[str] | None = None

    def stopService(self):
        super().stopService()
        self.live_at_stop = [s.key for s in self.registry if s.live]


class ReconnectTests(ERTMPTestCase):
    def setUp(self) -> None:
        super().setUp()
        top = self.server.service
        self.child = _StopRecorder(self.server.registry)
        self.child.setServiceParent(top)
        self.listening = ListeningService(
            "tcp:0:interface=127.0.0.1", self.server.factory, reactor=MemoryReactorClock()
        )
        self.listening.setServiceParent(top)

    def requests(self, client: RTMPTestClient) -> list[Command]:
        return [c for c in client.commands if status_code(c) == RECONNECT]

    def test_shutdown_asks_capable_publishers_and_waits_for_them_to_leave(self) -> None:
        capable, csid = self.publisher("a", capsEx=float(CAPS_EX_RECONNECT | CAPS_EX_MULTITRACK))
        legacy, _ = self.publisher("b")
        playing, psid = self.client(capsEx=1.0)
        d = playing.play(psid, "a")
        self.server.flush()
        result_of(d)

        with capturedLogs() as events:
            stopping = self.server.service.stopService()
            self.server.flush()
        request = self.requests(capable)
        self.assertEqual(len(request), 1)
        self.assertEqual(
            (request[0].stream_id, request[0].transaction_id, request[0].command_object), (0, 0.0, None)
        )
        self.assertEqual(request[0].args[0]["level"], "status")
        self.assertNotIn("tcUrl", request[0].args[0])
        self.assertEqual(self.requests(legacy), [])
        self.assertEqual(self.requests(playing), [])
        asked = [e for e in events if e.get("log_format") == "Reconnect requested"]
        self.assertEqual([e["stream_keys"] for e in asked], [["live/a"]])
        # Listening stops at once, but nothing else does while the publisher finishes its GOP.
        self.assertIsNone(self.listening.port)
        self.assertNoResult(stopping)
        self.assertIsNone(self.child.live_at_stop)
        self.send(capable, csid, [(V, 0, hevc_config()), (V, 0, hevc_key(0))])
        self.assertEqual(self.payloads(playing, psid, V), [hevc_config(), hevc_key(0)])

        capable.transport.loseConnection()
        self.server.flush()
        self.server.advance(0)
        self.successResultOf(stopping)
        # The rest of the service (the recorder among it) stopped after the publisher left.
        self.assertEqual(self.child.live_at_stop, ["live/b"])

    def test_a_publisher_that_unpublishes_without_leaving_counts_as_gone(self) -> None:
        capable, csid = self.publisher("a", capsEx=1.0)
        stopping = self.server.service.stopService()
        self.server.flush()
        capable.notify("deleteStream", float(csid))
        self.server.flush()
        self.server.advance(0)
        self.successResultOf(stopping)
        self.assertEqual(self.child.live_at_stop, [])

    def test_shutdown_goes_on_when_the_grace_period_ends(self) -> None:
        capable, _ = self.publisher("a", capsEx=1.0)
        with capturedLogs() as events:
            stopping = self.server.service.stopService()
            self.server.flush()
            self.server.advance(server_module.RECONNECT_GRACE - 0.1)
            self.assertNoResult(stopping)
            self.server.advance(0.2)
        self.successResultOf(stopping)
        self.assertEqual(self.child.live_at_stop, ["live/a"])
        late = [e for e in events if e.get("log_format") == "Publishers did not reconnect in time"]
        self.assertEqual(len(late), 1)
        self.assertEqual(late[0]["log_level"], LogLevel.warn)

    def test_without_capable_publishers_shutdown_is_as_before(self) -> None:
        legacy, _ = self.publisher("b")
        stopping = self.server.service.stopService()
        self.server.flush()
        self.assertEqual(self.requests(legacy), [])
        if stopping is not None:
            self.successResultOf(stopping)
        self.assertEqual(self.child.live_at_stop, ["live/b"])

    def test_operator_request_with_a_new_tcurl_for_one_stream(self) -> None:
        a, _ = self.publisher("a", capsEx=1.0)
        b, _ = self.publisher("b", capsEx=1.0)
        legacy, _ = self.publisher("c")
        service_ = self.server.service
        asked = service_.request_reconnect("rtmp://edge2.example/live", "Moving to edge2.", key="live/a")
        self.server.flush()
        self.assertEqual([c.conn_id for c in asked], [a.server_protocol.conn_id])
        info = self.requests(a)[0].args[0]
        self.assertEqual(
            (info["tcUrl"], info["description"]), ("rtmp://edge2.example/live", "Moving to edge2.")
        )
        self.assertEqual(self.requests(b), [])
        # Nobody is disconnected: clients leave once they have reconnected.
        self.assertTrue(a.connected_transport)
        self.assertEqual(service_.request_reconnect(key="live/c"), [])
        forced = service_.request_reconnect(key="live/c", force=True)
        self.server.flush()
        self.assertEqual(len(forced), 1)
        self.assertEqual(len(self.requests(legacy)), 1)
