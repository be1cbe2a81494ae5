"""Push relays against real servers: ``twistd -n rtmpd --push ...`` to nginx-rtmp and to rtmpd over TLS.

ffmpeg publishes to rtmpd; nginx-rtmp (Debian's nginx and libnginx-mod-rtmp,
started here on loopback with its own prefix) receives the push, records it
(``record_unique``: one file per publish session) and serves ffmpeg players.
What nginx recorded and what its players received are read back as FLV.
Connections are counted from the kernel's table (/proc/net/tcp), so "the
same TCP connection" is a fact, not an inference.
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from rtmpd.core.classify import classify
from rtmpd.core.flv import parse_flv
from rtmpd.core.messages import Message
from tests.support import IN_CI, ServerProcess, ffmpeg_publish, require

_MODULES = ("/usr/lib/nginx/modules/ngx_rtmp_module.so", "/usr/share/nginx/modules/ngx_rtmp_module.so")

_NGINX_CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    access_log {prefix}/access.log;
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {prefix}/rec;
            record_unique on;
        }}
        application deny {{
            live on;
            deny publish all;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` (a state outside our process: a file, the kernel's table) until true or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def established_ports(server_port: int) -> set[int]:
    """Local ports of ESTABLISHED IPv4 connections to 127.0.0.1:``server_port`` (from /proc/net/tcp)."""
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == server_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


class Nginx:
    """nginx-rtmp on 127.0.0.1:``port`` with apps ``live`` (recorded) and ``deny`` (publish refused)."""

    def __init__(self, workdir: str, port: int | None = None) -> None:
        nginx = shutil.which("nginx")
        module = next((m for m in _MODULES if os.path.exists(m)), None)
        if nginx is None or module is None:
            message = "nginx with libnginx-mod-rtmp is not installed"
            if IN_CI:
                raise AssertionError(message)
            raise SkipTest(message)
        self.prefix = workdir
        os.makedirs(os.path.join(workdir, "rec"), exist_ok=True)
        self.port = port or free_port()
        conf = os.path.join(workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(module=module, prefix=workdir, port=self.port))
        self.cmd = [nginx, "-p", workdir, "-e", os.path.join(workdir, "error.log"), "-c", conf]
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                assert self.process.poll() is None, f"nginx exited: {self.error_log()[-2000:]}"
                return False

        wait_until(listening, 10, "nginx to listen")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def access_log(self) -> list[str]:
        try:
            with open(os.path.join(self.prefix, "access.log")) as f:
                return f.readlines()
        except OSError:
            return []

    def recordings(self, name: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.prefix, "rec", f"{name}-*.flv")), key=os.path.getmtime)

    def url(self, name: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{name}"


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def recorded_ms(nginx: Nginx, name: str) -> int:
    """The timestamp of the last complete tag of the newest recording of ``name`` at nginx (0 if none)."""
    paths = nginx.recordings(name)
    if not paths or file_size(paths[-1]) < 9:
        return 0
    with open(paths[-1], "rb") as f:
        _, tags, _ = parse_flv(f.read())
    return tags[-1].timestamp if tags else 0


def flv_messages(path: str) -> list[Message]:
    with open(path, "rb") as f:
        _, tags, _ = parse_flv(f.read())
    return [Message(t.tag_type & 0x1F, t.timestamp, 0, t.payload) for t in tags]


def kinds(messages: list[Message]) -> list[str]:
    """ "meta", "aconfig", "vconfig", "key", "inter", "audio" for each message."""
    out = []
    for m in messages:
        if m.type_id == 18:
            out.append("meta")
            continue
        info = classify(m)
        if m.type_id == 9:
            out.append("vconfig" if info.config_slot else "key" if info.is_keyframe else "inter")
        else:
            out.append("aconfig" if info.config_slot else "audio")
    return out


def assert_starts_clean(test: TestCase, messages: list[Message]) -> None:
    """Codec configuration of both tracks before any frame, and the first video frame a keyframe."""
    k = kinds(messages)
    frames = [i for i, kind in enumerate(k) if kind in ("key", "inter", "audio")]
    test.assertTrue(frames, "no frames")
    head = k[: frames[0]]
    test.assertIn("vconfig", head)
    test.assertIn("aconfig", head)
    first_video = next(kind for kind in k if kind in ("key", "inter"))
    test.assertEqual(first_video, "key")


def assert_monotonic(test: TestCase, messages: list[Message]) -> None:
    for type_id in (8, 9):
        stamps = [m.timestamp for m in messages if m.type_id == type_id]
        test.assertTrue(stamps)
        backwards = [(a, b) for a, b in zip(stamps, stamps[1:], strict=False) if b < a]
        test.assertEqual(backwards, [], f"type {type_id} timestamps go back")


def log_time(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(event["time"]).timestamp()


class PlayerCopy:
    """ffmpeg playing a URL: it decodes every video and audio packet (errors on stderr) and also copies
    what it received, from the very first packet (``-copyinkf``), into an FLV file for inspection."""

    def __init__(
        self, url: str, path: str, *, rw_timeout: float = 30.0, duration: float | None = None
    ) -> None:
        self.path = path
        # A player on nginx does not end when the stream does: it stops after ``duration`` s of media.
        limit = ["-t", str(duration)] if duration is not None else []
        self.process = subprocess.Popen(
            [require("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
             "-rw_timeout", str(int(rw_timeout * 1_000_000)), "-i", url,
             "-map", "0", "-c", "copy", "-copyinkf", *limit, "-f", "flv", "-flvflags", "no_duration_filesize",
             path, "-map", "0", *limit, "-f", "null", "-"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def finish(self, timeout: float) -> str:
        """Wait for the player to end (the stream ended); what its decoders said, I/O errors aside."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"the player did not end within {timeout}s: {err}") from None
        # The end of a live stream is an I/O error for an RTMP reader: that is not a decoding problem.
        return "\n".join(line for line in err.splitlines() if "Input/output error" not in line)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


class RealPushCase(TestCase):
    timeout = 180

    def setUp(self) -> None:
        require("ffmpeg")
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-push-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._procs: list[Any] = []

    def nginx(self, name: str, *, start: bool = True, port: int | None = None) -> Nginx:
        nginx = Nginx(os.path.join(self.tmp, name), port)
        self.addCleanup(nginx.stop)
        return nginx.start() if start else nginx

    def rtmpd(self, *args: str) -> ServerProcess:
        server = ServerProcess(*args, cwd=self.tmp, log_level="info")
        self.addCleanup(server.kill)
        server.start()
        return server

    def publish(self, url: str, seconds: float, **kwargs: Any) -> subprocess.Popen:
        process = ffmpeg_publish(url, seconds, size="320x240", rate=25, gop_seconds=1, **kwargs)
        self.addCleanup(_kill, process)
        return process

    def player(self, url: str, name: str, **kwargs: Any) -> PlayerCopy:
        player = PlayerCopy(url, os.path.join(self.tmp, name), **kwargs)
        self.addCleanup(player.kill)
        return player


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=10)


class PushToNginx(RealPushCase):
    def test_player_on_nginx_decodes_from_the_first_keyframe(self) -> None:
        nginx = self.nginx("n1")
        server = self.rtmpd("--push", f"live/*={nginx.url('{name}')}", "--push-grace", "1")
        # The player waits at nginx before anything is published: it gets exactly what the push sends.
        player = self.player(nginx.url("cam"), "player.flv", duration=4)
        publisher = self.publish(server.url("cam"), 5)
        server.wait_for_msg("Push destination publishing", 20, stream_key="live/cam")
        self.assertEqual(publisher.wait(30), 0)
        server.wait_for_msg("Push destination stopped", 20, stream_key="live/cam")
        self.assertEqual(player.finish(30), "")
        played = flv_messages(player.path)
        assert_starts_clean(self, played)
        assert_monotonic(self, played)
        self.assertGreater(kinds(played).count("key"), 3)
        (recording,) = nginx.recordings("cam")
        recorded = flv_messages(recording)
        assert_starts_clean(self, recorded)
        assert_monotonic(self, recorded)
        # nginx writes a session's access line when it has closed it, a moment after rtmpd did.
        deadline = time.monotonic() + 10
        while not any("PUBLISH" in line for line in nginx.access_log()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (line,) = [line for line in nginx.access_log() if "PUBLISH" in line]
        self.assertIn("rtmpd-relay", line)
        self.assertEqual(server.errors(), [])

    def test_two_destinations_one_down_retried_with_growing_delays(self) -> None:
        up = self.nginx("up")
        down = self.nginx("down", start=False)
        server = self.rtmpd(
            "--push",
            f"live/*={up.url('{name}')}",
            "--push",
            f"live/*={down.url('{name}')}",
            "--push-grace",
            "1",
        )
        local = self.player(server.url("two"), "local.flv", rw_timeout=30)
        remote = self.player(up.url("two"), "up.flv", duration=20)
        # nginx keeps no GOP: a player that joins after the push began starts at a later frame and shows a
        # hole that is not rtmpd's. Under load ffmpeg may take a second to get there, so wait for its play.
        wait_until(lambda: "play: name='two'" in up.error_log(), 30, "the player at nginx to play")
        publisher = self.publish(server.url("two"), 24)
        failed = server.wait_for(
            lambda e: (
                e.get("msg", "").startswith("Push destination failed")
                and e.get("destination") == "2:live/two"
                and e.get("attempt") == 4
            ),
            30,
        )
        self.assertIn("ConnectionRefusedError", failed["error"])
        down.start()
        resumed = server.wait_for_msg("Push destination publishing", 20, destination="2:live/two")
        attempts = [
            log_time(e)
            for e in server.messages("Push destination connecting")
            if e["destination"] == "2:live/two"
        ]
        self.assertEqual(len(attempts), 5)
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        for gap, step in zip(gaps, [1, 2, 4, 8], strict=True):
            # Jitter draws from [0.8, 1] of the step; the rest is scheduling.
            self.assertGreaterEqual(gap, 0.8 * step - 0.05)
            self.assertLessEqual(gap, step + 1.0)
        # It resumed within the backoff step that was running when nginx came back.
        self.assertLessEqual(log_time(resumed) - log_time(failed), failed["delay"] + 2)
        self.assertEqual(publisher.wait(40), 0)
        server.wait_for_msg("Push destination stopped", 20, destination="2:live/two")
        self.assertEqual(local.finish(30), "")
        self.assertEqual(remote.finish(30), "")
        for path in (local.path, remote.path):
            played = flv_messages(path)
            assert_starts_clean(self, played)
            assert_monotonic(self, played)
        # The healthy destination and the local player saw the whole stream: no holes while the other failed.
        video = [m.timestamp for m in flv_messages(remote.path) if m.type_id == 9]
        self.assertLess(max(b - a for a, b in zip(video, video[1:], strict=False)), 500)
        self.assertGreater(video[-1] - video[0], 19_000)
        (recording,) = down.recordings("two")
        assert_starts_clean(self, flv_messages(recording))
        self.assertEqual(down.error_log().count("[error]"), 0)

    def test_grace_same_connection_across_publishers_then_fcunpublish_and_close(self) -> None:
        nginx = self.nginx("grace")
        server = self.rtmpd("--push", f"live/*={nginx.url('{name}')}", "--push-grace", "6")
        player = self.player(nginx.url("g"), "player.flv", duration=6.5)
        first = self.publish(server.url("g"), 60)
        publishing = server.wait_for_msg("Push destination publishing", 20, stream_key="live/g")
        connections = {int(publishing["local"].rsplit(":", 1)[1])}
        self.assertEqual(established_ports(nginx.port) & connections, connections)
        server.wait_for_msg("Codecs detected", 20, stream_key="live/g")
        mark = len(server.events)
        wait_until(lambda: recorded_ms(nginx, "g") >= 3000, 20, "nginx to record 3 s of the push")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        server.wait_for_msg("Push source gone; keeping destinations for the grace", 10, mark)
        second = self.publish(server.url("g"), 4)
        server.wait_for_msg("Codecs detected", 20, mark, stream_key="live/g")
        self.assertEqual(established_ports(nginx.port) & connections, connections, "the same TCP connection")
        self.assertEqual(second.wait(30), 0)
        stopped = server.wait_for_msg("Push destination stopped", 20, mark, stream_key="live/g")
        self.assertEqual(stopped["reason"], "source gone for the grace period")
        self.assertEqual(server.messages("Push destination publishing").__len__(), 1, "never reconnected")
        wait_until(
            lambda: not (established_ports(nginx.port) & connections), 10, "the push connection to close"
        )
        self.assertEqual(player.finish(30), "")
        played = flv_messages(player.path)
        assert_starts_clean(self, played)
        assert_monotonic(self, played)
        # One publish session at nginx, one recording holding both publishers.
        self.assertEqual(len([line for line in nginx.access_log() if "PUBLISH" in line]), 1)
        (recording,) = nginx.recordings("g")
        assert_monotonic(self, flv_messages(recording))


def write_test_pki(directory: str, name: str) -> tuple[str, str, str]:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, key, signer, *, ca: bool) -> x509.Certificate:
        name_ = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name_)
            .issuer_name(issuer or name_)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build(f"{name} test CA", None, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", ca_cert.subject, key, ca_key, ca=False)
    paths = [os.path.join(directory, f"{name}-{part}.pem") for part in ("ca", "cert", "key")]
    pem = serialization.Encoding.PEM
    for path, data in zip(
        paths,
        [
            ca_cert.public_bytes(pem),
            cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ],
        strict=True,
    ):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


class PushOverTLS(RealPushCase):
    def test_rtmps_push_to_rtmpd_verifies_the_certificate(self) -> None:
        ca, cert, key = write_test_pki(self.tmp, "good")
        other_ca, _, _ = write_test_pki(self.tmp, "other")
        receiver = self.rtmpd("--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        target = f"rtmps://127.0.0.1:{receiver.port}/live/{{name}}"
        trusting = self.rtmpd("--push", f"live/*={target}", "--push-ca", ca)
        distrusting = self.rtmpd("--push", f"live/*={target}", "--push-ca", other_ca)
        good = self.publish(trusting.url("tls"), 4)
        bad = self.publish(distrusting.url("wrong"), 4)
        trusting.wait_for_msg("Push destination publishing", 20, stream_key="live/tls")
        connect = receiver.wait_for_msg("connect command", 20, flashVer="FMLE/3.0 (rtmpd-relay)")
        self.assertTrue(connect["tcUrl"].startswith("rtmps://127.0.0.1:"))
        receiver.wait_for_msg("Codecs detected", 20, stream_key="live/tls")
        refused = distrusting.wait_for(
            lambda e: (
                e.get("msg", "").startswith("Push destination failed") and e.get("stream_key") == "live/wrong"
            ),
            20,
        )
        self.assertIn("TLS error: certificate verify failed", refused["error"])
        self.assertEqual(
            receiver.messages("publish command").__len__(), 1, "only the trusted push got through"
        )
        self.assertEqual(good.wait(30), 0)
        self.assertEqual(bad.wait(30), 0)


class MisbehavingDestinations(RealPushCase):
    def test_silent_refusing_and_stalled_destinations_leave_the_source_alone(self) -> None:
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing is ever read or answered
        refusing = self.nginx("refusing")
        stalling = self.nginx("stalling")
        server = self.rtmpd(
            "--push", f"live/*=rtmp://127.0.0.1:{silent.getsockname()[1]}/live/{{name}}",
            "--push", f"live/*={refusing.url('{name}', app='deny')}",
            "--push", f"live/*={stalling.url('{name}')}",
            "--play-timeout", "3", "--max-queue-bytes", "500000", "--push-grace", "1",
        )  # fmt: skip
        local = self.player(server.url("m"), "local.flv", rw_timeout=30)
        publisher = self.publish(
            server.url("m"),
            30,
            # 8 Mb/s of constant bitrate (filler NALs) fills the stalled socket's buffers in a few seconds.
            extra=[
                "-b:v",
                "8M",
                "-minrate",
                "8M",
                "-maxrate",
                "8M",
                "-bufsize",
                "2M",
                "-x264-params",
                "nal-hrd=cbr",
            ],
        )
        server.wait_for_msg("Push destination publishing", 20, destination="3:live/m")
        os.kill(stalling.process.pid, signal.SIGSTOP)
        stalled = server.wait_for(
            lambda e: e.get("destination") == "3:live/m" and "stalled" in str(e.get("error", "")), 40
        )
        slow = server.messages("Push destination too slow; dropping to the next keyframe")
        self.assertTrue(slow and log_time(slow[0]) <= log_time(stalled), "queue bound hit before the stall")
        os.kill(stalling.process.pid, signal.SIGCONT)
        server.wait_for(
            lambda e: (
                e.get("msg") == "Push destination publishing"
                and e.get("destination") == "3:live/m"
                and e.get("attempt") == 2
            ),
            30,
        )
        silent_failure = server.wait_for(
            lambda e: (
                e.get("destination") == "1:live/m" and e.get("msg", "").startswith("Push destination failed")
            ),
            20,
        )
        self.assertIn("no started stream within 10 s (stuck at handshake)", silent_failure["error"])
        refusals = [
            e
            for e in list(server.events)
            if e.get("destination") == "2:live/m" and e.get("msg", "").startswith("Push destination failed")
        ]
        # nginx's "deny publish" answers NetStream.Publish.Start, then closes the connection.
        self.assertGreaterEqual(len(refusals), 3, "the refusing destination is retried")
        self.assertEqual({e["error"] for e in refusals}, {"ConnectionDone: Connection was closed cleanly."})
        self.assertEqual([e["delay"] >= 0.8 * 2**i for i, e in enumerate(refusals)], [True] * len(refusals))
        self.assertEqual(publisher.wait(60), 0)
        self.assertEqual(local.finish(30), "")
        video = [m.timestamp for m in flv_messages(local.path) if m.type_id == 9]
        self.assertLess(
            max(b - a for a, b in zip(video, video[1:], strict=False)), 500, "the source never paused"
        )
        self.assertGreater(video[-1] - video[0], 25_000)
        self.assertEqual(server.errors(), [])
