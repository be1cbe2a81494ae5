"""Two "hosts" with a real Redis: ``twistd -n rtmpd --cluster redis://...`` on 127.0.0.2 and 127.0.0.3.

Each node has its own record directory and HTTP listener; the Redis is
Debian's redis-server, started here on 127.0.0.1 (``RedisServer``). ffmpeg
publishes on one node and plays on the other (decoding every frame); the
nodes' logs, their JSON API and Redis itself are what the test waits on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import TestCase

from rtmpd.cluster.redis import PREFIX, redis_client
from rtmpd.testing import RTMPTestClient
from tests.support import ServerProcess, ffmpeg_publish, require
from tests.test_cluster_redis import RedisServer
from tests.test_push_real import (
    PlayerCopy,
    _kill,
    assert_monotonic,
    assert_starts_clean,
    flv_messages,
    kinds,
    wait_until,
)
from tests.test_relay_real import SocketRTMPClient, _SocketTransport

TTL = 3.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class HostClient(SocketRTMPClient):
    """``SocketRTMPClient`` to any loopback address (a node of the cluster)."""

    def __init__(self, host: str, port: int, connect_timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), connect_timeout)
        self.local_port = self.sock.getsockname()[1]
        self.protocol = RTMPTestClient()
        self.closed = False
        self.protocol.makeConnection(_SocketTransport(self.sock))


class Host:
    """One node: its rtmpd process, address, RTMP and HTTP ports, record directory."""

    def __init__(self, test: _Hosts, name: str, address: str, *extra: str) -> None:
        self.name = name
        self.address = address
        self.port = free_port(address)
        self.record_dir = os.path.join(test.tmp, f"rec-{name}")
        self.process = ServerProcess(
            "--port",
            f"tcp:{self.port}:interface={address}",
            "--http",
            f"tcp:0:interface={address}",
            "--cluster",
            test.redis.url,
            "--node-id",
            name,
            "--cluster-ttl",
            str(TTL),
            "--pull-idle",
            "3",
            "--record-dir",
            self.record_dir,
            *extra,
            cwd=test.tmp,
            log_level="info",
        )
        test.addCleanup(self.process.kill)
        self.process.start()
        self.http_port = self.process.port_of("HTTP server")

    def url(self, key: str) -> str:
        return f"rtmp://{self.address}:{self.port}/live/{key}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.address}:{self.http_port}/api/v1/{path}", timeout=10) as r:
            return json.load(r)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.http_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def player(self, key: str) -> HostClient:
        client = HostClient(self.address, self.port)
        client.start_playing(key)
        return client

    def recordings(self, key: str) -> list[str]:
        if not os.path.isdir(self.record_dir):
            return []
        # rtmpd.recording.names: live_KEY_YYYYMMDD_HHMMSS.flv
        return [n for n in os.listdir(self.record_dir) if n.startswith(f"live_{key}_") and n.endswith(".flv")]


def video_kinds(client: SocketRTMPClient) -> list[str]:
    return [k for k in kinds([m for m in client.protocol.media() if m.type_id == 9])]


class _Hosts(TestCase):
    """A Redis and two nodes, host-a on 127.0.0.2 and host-b on 127.0.0.3, started with ``extra``."""

    timeout = 240
    extra: tuple[str, ...] = ()

    def setUp(self) -> None:
        require("ffmpeg")
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-cluster-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.a = Host(self, "host-a", "127.0.0.2", *self.extra)
        self.b = Host(self, "host-b", "127.0.0.3", *self.extra)
        self.client = redis_client(self.redis.url)
        self.addCleanup(self.client.close)

    def owner(self, key: str) -> str | None:
        value = self.client.get(PREFIX + "live/" + key)
        return value.split(" ")[0] if value else None

    def publish(self, host: Host, key: str, seconds: float) -> subprocess.Popen:
        process = ffmpeg_publish(host.url(key), seconds, size="320x240", rate=25, gop_seconds=1)
        self.addCleanup(_kill, process)
        return process

    def player(self, host: Host, key: str, name: str, **kwargs: Any) -> PlayerCopy:
        player = PlayerCopy(host.url(key), os.path.join(self.tmp, name), **kwargs)
        self.addCleanup(player.kill)
        return player


class ClusterOfHosts(_Hosts):
    def test_publish_on_one_play_on_the_other_refuse_the_second_publisher(self) -> None:
        a, b = self.a, self.b
        publisher = self.publish(a, "cam", 8)
        a.process.wait_for_msg("Key claimed", 20, stream_key="live/cam", node_id="host-a")
        a.process.wait_for_msg("Codecs detected", 20, stream_key="live/cam")
        self.assertEqual(self.owner("cam"), "host-a")
        remote = self.player(b, "cam", "remote.flv")
        b.process.wait_for_msg("Internal pull started", 20, stream_key="live/cam", origin="host-a")
        b.process.wait_for_msg("Pulled stream published", 20, stream_key="live/cam")
        # The views: b shows the stream's origin and its internal pull; a holds the claim.
        (row,) = [s for s in b.api("streams")["streams"] if s["key"] == "live/cam"]
        self.assertEqual(row["origin"], "host-a")
        cluster_b = b.api("cluster")["cluster"]
        self.assertEqual([p["origin"] for p in cluster_b["internal_pulls"]], ["host-a"])
        self.assertEqual(a.api("cluster")["cluster"]["claims"], ["live/cam"])
        self.assertEqual(
            [(s["key"], s["node_id"]) for s in b.api("cluster/streams")["streams"]], [("live/cam", "host-a")]
        )
        scrape = b.metrics()
        self.assertIn('rtmpd_cluster_internal_pulls{state="playing"} 1.0', scrape)
        self.assertIn('rtmpd_cluster_node_info{node_id="host-b",pull_url="rtmp://127.0.0.3:', scrape)
        self.assertIn("rtmpd_cluster_claims 1.0", a.metrics())
        check = subprocess.run(
            [require("promtool"), "check", "metrics"],
            input=scrape,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual((check.returncode, check.stdout, check.stderr), (0, "", ""))
        # A second publisher of the key on the other host is refused, as on one server.
        second = self.publish(b, "cam", 5)
        b.process.wait_for_msg("Publish refused: the key is live on another node", 20, stream_key="live/cam")
        _, err = second.communicate(timeout=30)
        self.assertNotEqual(second.returncode, 0)
        self.assertEqual(self.owner("cam"), "host-a")
        self.assertEqual(publisher.wait(30), 0)
        self.assertEqual(remote.finish(40), "")
        played = flv_messages(remote.path)
        assert_starts_clean(self, played)
        assert_monotonic(self, played)
        self.assertGreater(kinds(played).count("key"), 3)
        a.process.wait_for_msg("Key released", 20, stream_key="live/cam")
        self.assertIsNone(self.owner("cam"))
        # One recording, on the origin.
        self.assertEqual(len(a.recordings("cam")), 1)
        self.assertEqual(b.recordings("cam"), [])
        self.assertEqual(a.process.errors() + b.process.errors(), [])

    def test_the_key_moves_when_its_publisher_dies_players_on_both_hosts_resume(self) -> None:
        a, b = self.a, self.b
        first = self.publish(a, "mv", 60)
        a.process.wait_for_msg("Codecs detected", 20, stream_key="live/mv")
        on_a, on_b = a.player("mv"), b.player("mv")
        for client in (on_a, on_b):
            self.addCleanup(client.sock.close)
            client.pump_until(lambda c=client: "key" in video_kinds(c), 20)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        a.process.wait_for_msg("Key released", 20, stream_key="live/mv")
        marks = {client: len(video_kinds(client)) for client in (on_a, on_b)}
        second = self.publish(b, "mv", 60)
        b.process.wait_for_msg("Key claimed", 20, stream_key="live/mv", node_id="host-b")
        self.assertEqual(self.owner("mv"), "host-b")
        a.process.wait_for_msg("Internal pull started", 20, stream_key="live/mv", origin="host-b")
        for client in (on_a, on_b):
            client.pump_until(lambda c=client: "key" in video_kinds(c)[marks[c] :], 30)
            self.assertIn("vconfig", video_kinds(client)[marks[client] :], "the new publisher's config first")
        # A new player on a, which now pulls the key from b, decodes cleanly from its first keyframe.
        late = self.player(a, "mv", "late.flv", duration=3)
        self.assertEqual(late.finish(40), "")
        played = flv_messages(late.path)
        assert_starts_clean(self, played)
        assert_monotonic(self, played)
        second.kill()
        self.assertEqual(len(a.recordings("mv")), 1, "a recorded while it was the origin")
        self.assertEqual(len(b.recordings("mv")), 1, "b records since it is the origin")

    def test_a_dead_host_frees_its_keys_within_the_ttl(self) -> None:
        a, b = self.a, self.b
        self.publish(a, "dead", 60)
        a.process.wait_for_msg("Key claimed", 20, stream_key="live/dead")
        a.process.signal(signal.SIGKILL)
        killed = time.monotonic()
        a.process.process.wait(10)
        wait_until(lambda: self.owner("dead") is None, TTL + 5, "the dead host's claim to expire")
        self.assertLessEqual(time.monotonic() - killed, TTL + 1.0)
        self.publish(b, "dead", 10)
        b.process.wait_for_msg("Key claimed", 20, stream_key="live/dead", node_id="host-b")
        self.assertEqual(self.owner("dead"), "host-b")

    def test_redis_down_live_streams_and_local_plays_go_on_remote_plays_fail_then_recover(self) -> None:
        a, b = self.a, self.b
        self.publish(a, "live1", 90)
        a.process.wait_for_msg("Codecs detected", 20, stream_key="live/live1")
        remote = b.player("live1")
        self.addCleanup(remote.sock.close)
        remote.pump_until(lambda: "key" in video_kinds(remote), 20)
        self.redis.stop()
        a.process.wait_for(lambda e: str(e.get("msg")).startswith("Cluster directory unavailable"), 20)
        # Live streams go on: the remote player keeps getting keyframes, a local play starts.
        mark = len(video_kinds(remote))
        remote.pump_until(lambda: video_kinds(remote)[mark:].count("key") >= 2, 20)
        local = a.player("live1")
        self.addCleanup(local.sock.close)
        local.pump_until(lambda: "key" in video_kinds(local), 20)
        # A new key published on a while Redis is down cannot be found from b: a clear status and a log.
        self.publish(a, "new", 90)
        a.process.wait_for_msg("Codecs detected", 20, stream_key="live/new")
        failing = self.player(b, "new", "failing.flv", rw_timeout=20)
        _, err = failing.process.communicate(timeout=30)
        self.assertNotEqual(failing.process.returncode, 0)
        self.assertIn("cluster directory unavailable", err)
        b.process.wait_for_msg("Cluster directory unavailable: plays of keys not live here fail", 20)
        self.assertIn("rtmpd_cluster_directory_up 0.0", b.metrics())
        # Redis returns (empty: it saves nothing): the nodes claim their keys again, remote plays work.
        started = len(a.process.events)
        self.redis.start()
        a.process.wait_for_msg("Key claimed", 20, start=started, stream_key="live/new", node_id="host-a")
        wait_until(lambda: self.owner("live1") == "host-a", 20, "live1 claimed again")
        again = b.player("new")
        self.addCleanup(again.sock.close)
        again.pump_until(lambda: "key" in video_kinds(again), 20)
        self.assertIn("rtmpd_cluster_directory_up 1.0", b.metrics())
        self.assertEqual(a.process.errors() + b.process.errors(), [])


class TakeoverAcrossHosts(_Hosts):
    extra = ("--publish-takeover",)

    def test_a_new_publisher_on_another_host_takes_the_key_over(self) -> None:
        a, b = self.a, self.b
        first = self.publish(a, "tk", 60)
        a.process.wait_for_msg("Codecs detected", 20, stream_key="live/tk")
        on_b = b.player("tk")
        self.addCleanup(on_b.sock.close)
        on_b.pump_until(lambda: "key" in video_kinds(on_b), 20)
        mark = len(video_kinds(on_b))
        second = self.publish(b, "tk", 60)
        b.process.wait_for_msg("Key claimed", 20, stream_key="live/tk", node_id="host-b")
        self.assertEqual(self.owner("tk"), "host-b")
        # a finds its claim gone at its next refresh and closes its publisher.
        lost = a.process.wait_for_msg("Claim lost: the key is live on another node", 20, stream_key="live/tk")
        self.assertEqual(lost["owner"], "host-b")
        first.communicate(timeout=20)
        self.assertEqual(self.owner("tk"), "host-b")
        on_b.pump_until(
            lambda: "vconfig" in video_kinds(on_b)[mark:] and "key" in video_kinds(on_b)[mark:], 30
        )
        second.kill()
