"""Pull relays (edge) against real origins: ``twistd -n rtmpd --pull ...`` playing from nginx-rtmp and rtmpd.

Many players on the edge make one upstream connection (counted in the
kernel's table at the origin's port); a late joiner on the edge starts from
the edge's GOP cache; the upstream closes after the idle time; an origin
that restarts is reconnected to and the edge's players get the stream again.
"""

from __future__ import annotations

import time

from rtmpd.core.classify import classify
from rtmpd.core.messages import MessageType
from tests.support import ServerProcess
from tests.test_push_real import (
    RealPushCase,
    assert_monotonic,
    assert_starts_clean,
    established_ports,
    flv_messages,
    free_port,
)
from tests.test_relay_real import SocketRTMPClient

VIDEO = int(MessageType.VIDEO)


def video_kinds(client: SocketRTMPClient) -> list[str]:
    out = []
    for m in client.protocol.media():
        if m.type_id == VIDEO:
            info = classify(m)
            out.append("header" if info.config_slot else "key" if info.is_keyframe else "inter")
    return out


class PullFromOrigins(RealPushCase):
    def socket_player(self, port: int, name: str) -> SocketRTMPClient:
        client = SocketRTMPClient(port)
        self.addCleanup(client.sock.close)
        client.start_playing(name)
        return client

    def test_edge_of_nginx_one_upstream_late_join_idle_close(self) -> None:
        nginx = self.nginx("origin")
        publisher = self.publish(nginx.url("p"), 40)
        edge = self.rtmpd("--pull", f"live=rtmp://127.0.0.1:{nginx.port}/live", "--pull-idle", "2")
        decoding = self.player(edge.url("p"), "edge.flv", duration=4)
        edge.wait_for_msg("Pull upstream playing", 20, stream_key="live/p")
        players = [self.socket_player(edge.port, "p") for _ in range(19)]
        for client in players:
            client.pump_until(lambda c=client: "key" in video_kinds(c), 15)
        self.assertEqual(len(edge.messages("Pull upstream connecting")), 1)
        # At the origin: the ffmpeg publisher and the edge's one upstream, whatever the number of players.
        self.assertEqual(len(established_ports(nginx.port)), 2)
        for client in players:
            client.sock.close()
        # A late joiner starts at once: configuration, then a keyframe from the GOP cache.
        started = time.monotonic()
        late = self.socket_player(edge.port, "p")
        late.pump_until(lambda: "key" in video_kinds(late), 10)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(video_kinds(late)[:2], ["header", "key"])
        late.sock.close()
        self.assertEqual(decoding.finish(30), "")
        played = flv_messages(decoding.path)
        assert_starts_clean(self, played)
        assert_monotonic(self, played)
        closed = edge.wait_for_msg("Pull upstream closed", 20, stream_key="live/p")
        self.assertEqual(closed["reason"], "no player for 2 s")
        deadline = time.monotonic() + 10
        while len(established_ports(nginx.port)) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(len(established_ports(nginx.port)), 1, "only the publisher is left at the origin")
        publisher.kill()
        self.assertEqual(edge.errors(), [])

    def test_edge_of_rtmpd_reconnects_after_an_origin_restart(self) -> None:
        port = free_port()
        listen = f"tcp:{port}:interface=127.0.0.1"
        origin = self.rtmpd("--port", listen)
        edge = self.rtmpd("--pull", f"live=rtmp://127.0.0.1:{port}/live", "--pull-idle", "5")
        first = self.publish(origin.url("r"), 60)
        origin.wait_for_msg("Codecs detected", 20, stream_key="live/r")
        player = self.socket_player(edge.port, "r")
        player.pump_until(lambda: "key" in video_kinds(player), 15)
        # The origin's connection from the edge is marked as a relay.
        origin.wait_for_msg("connect command", 10, flashVer="FMLE/3.0 (rtmpd-relay)")
        origin.kill()
        first.kill()
        # The edge's players are told the stream stopped, and stay subscribed.
        player.pump_until(lambda: any("UnpublishNotify" in str(c.args) for c in player.protocol.commands), 10)
        edge.wait_for(lambda e: str(e.get("msg", "")).startswith("Pull upstream failed"), 10)
        restarted = ServerProcess("--port", listen, cwd=self.tmp, log_level="info")
        self.addCleanup(restarted.kill)
        restarted.start()
        second = self.publish(restarted.url("r"), 30)
        self.addCleanup(second.kill)
        before = len(video_kinds(player))
        player.pump_until(lambda: "key" in video_kinds(player)[before:], 40)
        self.assertIn("header", video_kinds(player)[before:])
        edge.wait_for(lambda e: e.get("msg") == "Pull upstream playing" and e.get("attempt", 0) >= 2, 10)
        self.assertEqual(len(edge.messages("Pull upstream closed")), 0, "the same upstream, reconnected")
        self.assertEqual(edge.errors(), [])
