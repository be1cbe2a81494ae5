"""The relay end to end over in-memory transports: commands, late join, re-publish, slow players."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.commands import Command
from rtmpd.core.messages import MessageType, UserControl, UserControlEvent
from rtmpd.testing import CommandFailed, MemoryServer, result_of, status_code
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO


class RelayTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer(self.config())

    def config(self) -> ServerConfig:
        return ServerConfig()

    def client(self):
        return self.server.session()

    def publisher(self, name: str = "test"):
        return self.server.publisher(name)

    def player(self, name: str = "test"):
        return self.server.player(name)

    def send_headers(self, pub, sid, ts: int = 0) -> None:
        pub.send_metadata(sid, {"width": 640.0, "height": 360.0, "framerate": 30.0})
        pub.send_media(A, sid, ts, AAC_SEQUENCE_HEADER)
        pub.send_media(V, sid, ts, AVC_SEQUENCE_HEADER)

    def send_gop(self, pub, sid, start: int, frames: int = 5) -> None:
        pub.send_media(V, sid, start, avc_keyframe(start))
        pub.send_media(A, sid, start, aac_frame(start))
        for i in range(1, frames):
            pub.send_media(V, sid, start + i * 33, avc_interframe(i))
            pub.send_media(A, sid, start + i * 33, aac_frame(i))
        self.server.flush()


class ConnectTests(RelayTestCase):
    def test_connect_result_and_control_messages(self) -> None:
        client, _ = self.server.connect_client()
        self.server.flush()
        d = client.connect("live")
        self.server.flush()
        result: Command = result_of(d)
        self.assertEqual(result.command_object["fmsVer"][:4], "FMS/")
        self.assertEqual(result.args[0]["code"], "NetConnection.Connect.Success")
        self.assertEqual(client.peer_chunk_size(), 4096)

    def test_enhanced_rtmp_fourcc_list_is_echoed(self) -> None:
        client, _ = self.server.connect_client()
        self.server.flush()
        d = client.connect("live", fourCcList=["hvc1", "av01", "vp09"])
        self.server.flush()
        self.assertEqual(result_of(d).command_object["fourCcList"], ["hvc1", "av01", "vp09"])

    def test_unknown_command_gets_error_and_connection_lives(self) -> None:
        client, _ = self.client()
        d = client.call("noSuchCommand")
        self.server.flush()
        failure = self.failureResultOf(d, CommandFailed)
        self.assertEqual(failure.value.info["code"], "NetConnection.Call.Failed")
        d = client.create_stream()
        self.server.flush()
        self.assertEqual(result_of(d), 2)

    def test_publish_before_connect_closes_connection(self) -> None:
        client, _ = self.server.connect_client()
        self.server.flush()
        client.call("publish", None, "x")
        self.server.flush()
        self.assertFalse(client.connected_transport)

    def test_ping_request_is_answered(self) -> None:
        from rtmpd.core.messages import user_control

        client, _ = self.client()
        client.send(2, user_control(UserControlEvent.PING_REQUEST, 1234))
        self.server.flush()
        self.assertIn(UserControl(UserControlEvent.PING_RESPONSE, 1234), client.controls)


class PublishPlayTests(RelayTestCase):
    def test_live_relay_preserves_payloads_and_timestamps(self) -> None:
        pub, psid = self.publisher()
        player, sid = self.player()
        self.send_headers(pub, psid)
        self.send_gop(pub, psid, 1000)
        media = player.media(sid)
        videos = [m for m in media if m.type_id == V]
        self.assertEqual(videos[0].payload, AVC_SEQUENCE_HEADER)
        self.assertEqual(videos[1].payload, avc_keyframe(1000))
        self.assertEqual(videos[1].timestamp, 1000)
        self.assertEqual([m.timestamp for m in videos[1:]], [1000 + i * 33 for i in range(5)])
        data = [m for m in media if m.type_id == MessageType.DATA_AMF0]
        self.assertTrue(data[0].payload.startswith(b"\x02\x00\x0aonMetaData"))

    def test_late_joiner_gets_headers_then_gop_from_keyframe(self) -> None:
        pub, psid = self.publisher()
        self.send_headers(pub, psid)
        self.send_gop(pub, psid, 0)
        self.send_gop(pub, psid, 2000, frames=3)
        player, sid = self.player()
        media = player.media(sid)
        kinds = [(m.type_id, m.payload[:2]) for m in media]
        self.assertEqual(kinds[0][0], MessageType.DATA_AMF0)
        self.assertEqual(media[1].payload, AAC_SEQUENCE_HEADER)
        self.assertEqual(media[2].payload, AVC_SEQUENCE_HEADER)
        self.assertEqual(media[3].payload, avc_keyframe(2000))
        self.assertEqual(media[3].timestamp, 2000)
        # Nothing from the previous GOP, and headers are never stamped before the keyframe.
        self.assertNotIn(avc_keyframe(0), [m.payload for m in media])
        # onMetaData at 0 (ffmpeg reads a later script tag as subtitles); time never goes back after it.
        self.assertEqual(media[0].timestamp, 0)
        self.assertTrue(all(m.timestamp >= 2000 for m in media[1:]))

    def test_without_gop_cache_player_waits_for_next_keyframe(self) -> None:
        self.server = MemoryServer(ServerConfig(gop_cache=False))
        pub, psid = self.publisher()
        self.send_headers(pub, psid)
        self.send_gop(pub, psid, 0)
        player, sid = self.player()
        pub.send_media(V, psid, 300, avc_interframe(9))
        self.send_gop(pub, psid, 2000, frames=2)
        videos = [m for m in player.media(sid) if m.type_id == V]
        self.assertEqual(videos[0].payload, AVC_SEQUENCE_HEADER)
        self.assertEqual(videos[1].payload, avc_keyframe(2000))

    def test_duplicate_publish_refused_first_untouched(self) -> None:
        pub, psid = self.publisher()
        second, sid2 = self.client()
        d = second.publish(sid2, "test")
        self.server.flush()
        failure = self.failureResultOf(d, CommandFailed)
        self.assertEqual(failure.value.info["code"], "NetStream.Publish.BadName")
        self.assertTrue(pub.connected_transport)
        player, sid = self.player()
        self.send_gop(pub, psid, 0)
        self.assertTrue(player.media(sid))

    def test_disconnected_publisher_frees_key_at_once(self) -> None:
        pub, _ = self.publisher()
        pub.transport.loseConnection()
        self.server.flush()
        again, sid = self.client()
        d = again.publish(sid, "test")
        self.server.flush()
        self.assertEqual(status_code(result_of(d)), "NetStream.Publish.Start")

    def test_idle_publisher_is_replaced_after_timeout(self) -> None:
        self.server = MemoryServer(ServerConfig(publisher_timeout=5))
        pub, _ = self.publisher()
        self.server.clock.advance(5.5)
        second, sid = self.client()
        d = second.publish(sid, "test")
        self.server.flush()
        self.assertEqual(status_code(result_of(d)), "NetStream.Publish.Start")
        self.assertFalse(pub.connected_transport)

    def test_takeover_option_lets_newest_publisher_win(self) -> None:
        self.server = MemoryServer(ServerConfig(publish_takeover=True))
        pub, _ = self.publisher()
        second, sid = self.client()
        d = second.publish(sid, "test")
        self.server.flush()
        self.assertEqual(status_code(result_of(d)), "NetStream.Publish.Start")
        self.assertFalse(pub.connected_transport)

    def test_player_before_publisher_and_across_republish(self) -> None:
        player, sid = self.player()
        pub, psid = self.publisher()
        self.send_headers(pub, psid)
        self.send_gop(pub, psid, 0, frames=2)
        self.assertIn(avc_keyframe(0), [m.payload for m in player.media(sid)])
        pub.transport.loseConnection()
        self.server.flush()
        self.assertIn("NetStream.Play.UnpublishNotify", [status_code(c) for c in player.commands])
        self.assertIn(UserControl(UserControlEvent.STREAM_EOF, sid), player.controls)
        self.assertTrue(player.connected_transport)
        before = len(player.media(sid))
        pub2, psid2 = self.publisher()
        self.assertIn("NetStream.Play.PublishNotify", [status_code(c) for c in player.commands])
        pub2.send_media(V, psid2, 0, AVC_SEQUENCE_HEADER)
        self.send_gop(pub2, psid2, 0, frames=2)
        videos = [m.payload for m in player.media(sid)[before:] if m.type_id == V]
        self.assertEqual(videos[:2], [AVC_SEQUENCE_HEADER, avc_keyframe(0)])

    def test_keys_do_not_cross_talk(self) -> None:
        pub_a, sid_a = self.publisher("a")
        pub_b, sid_b = self.publisher("b")
        play_a, pa = self.player("a")
        play_b, pb = self.player("b")
        pub_a.send_media(V, sid_a, 0, avc_keyframe(1))
        pub_b.send_media(V, sid_b, 0, avc_keyframe(2))
        self.server.flush()
        self.assertEqual([m.payload for m in play_a.media(pa)], [avc_keyframe(1)])
        self.assertEqual([m.payload for m in play_b.media(pb)], [avc_keyframe(2)])

    def test_query_string_is_not_part_of_the_key(self) -> None:
        pub, psid = self.publisher("test?token=abc")
        player, sid = self.player("test")
        pub.send_media(V, psid, 0, avc_keyframe(1))
        self.server.flush()
        self.assertEqual(len(player.media(sid)), 1)
        self.assertEqual(self.server.registry.get("live/test").publisher.query, "token=abc")

    def test_play_of_dotdot_name_is_refused_and_closed(self) -> None:
        client, sid = self.client()
        d = client.play(sid, "../etc/passwd")
        self.server.flush()
        self.failureResultOf(d, CommandFailed)
        self.assertFalse(client.connected_transport)

    def test_timestamps_past_24_bits_and_wrapping(self) -> None:
        pub, psid = self.publisher()
        player, sid = self.player()
        stamps = [0xFFFFF0, 0xFFFFFF, 0x1000010, 0xFFFFFFF0, 0x10]
        for ts in stamps:
            pub.send_media(V, psid, ts, avc_keyframe(ts))
        self.server.flush()
        self.assertEqual([m.timestamp for m in player.media(sid)], stamps)


class SlowPlayerTests(RelayTestCase):
    def config(self) -> ServerConfig:
        return ServerConfig(max_queue_bytes=10_000, play_timeout=3)

    def test_paused_transport_drops_video_until_keyframe_and_times_out(self) -> None:
        pub, psid = self.publisher()
        slow, ssid = self.player()
        fast, fsid = self.player()
        self.send_gop(pub, psid, 0, frames=2)
        slow_conn = slow.server_protocol
        slow_conn.pauseProducing()
        before = len(slow.media(ssid))
        self.send_gop(pub, psid, 1000, frames=4)
        slow_msgs = slow.media(ssid)[before:]
        self.assertTrue(all(m.type_id == A for m in slow_msgs))
        self.assertEqual([m.payload for m in fast.media(fsid)][-8], avc_keyframe(1000))
        self.assertGreater(slow_conn.net_streams[ssid].player.dropped_frames, 0)
        slow_conn.resumeProducing()
        pub.send_media(V, psid, 2000, avc_interframe(1))
        self.send_gop(pub, psid, 2033, frames=1)
        videos = [m for m in slow.media(ssid)[before:] if m.type_id == V]
        self.assertEqual(videos[0].payload, avc_keyframe(2033))
        slow_conn.pauseProducing()
        self.server.advance(1.0)
        self.server.advance(1.0)
        self.server.advance(1.0)
        self.server.advance(1.0)
        self.assertFalse(slow.connected_transport)
        self.assertTrue(fast.connected_transport)
