"""The twistd plugin: options, endpoint descriptions, start-up errors, the service collection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.service import IServiceCollection
from twisted.conch.ssh.keys import Key
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

import rtmpd
from rtmpd.admin.rates import RateSampler
from rtmpd.recording.recorder import Recorder
from rtmpd.server.listening import ListeningService
from rtmpd.server.service import RTMPService
from rtmpd.tap import Options, makeService
from tests.support import twistd


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    def test_bare_port_becomes_tcp_endpoint(self) -> None:
        self.assertEqual(parse("--port", "1935")["port"], "tcp:1935")

    def test_endpoint_descriptions_pass_through(self) -> None:
        for description in (
            "tcp:1935:interface=127.0.0.1",
            "tcp6:1935:interface=\\:\\:1",
            "unix:/tmp/rtmpd.sock",
        ):
            self.assertEqual(parse("--port", description)["port"], description)

    def test_listen_is_repeatable(self) -> None:
        options = parse("--listen", "1936", "--listen", "tcp6:1937")
        self.assertEqual(options["listen"], ["tcp:1936", "tcp6:1937"])

    def test_bad_values_exit_with_one_line(self) -> None:
        for args in (
            ["--port", "99999"],
            ["--port", "nope:x"],
            ["--chunk-size", "0"],
            ["--log-level", "loud"],
            ["--bogus"],
            ["--publisher-timeout", "-1"],
        ):
            with self.assertRaises(SystemExit) as raised:
                parse(*args)
            message = str(raised.exception.code)
            self.assertTrue(message.startswith("rtmpd: error: "), message)
            self.assertNotIn("\n", message)

    def test_manhole_needs_credentials(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            parse("--manhole", "2222")
        self.assertIn("--manhole-keys or --manhole-passwd", str(raised.exception.code))

    def test_record_dir_is_created_and_must_be_writable(self) -> None:
        base = self.mktemp()
        options = parse("--record-dir", os.path.join(base, "a", "b"))
        self.assertTrue(os.path.isdir(options["record-dir"]))
        if os.geteuid() != 0:  # root can write anywhere
            os.chmod(options["record-dir"], 0o500)
            with self.assertRaises(SystemExit):
                parse("--record-dir", options["record-dir"])

    def test_no_record_wins(self) -> None:
        self.assertIsNone(parse("--record-dir", self.mktemp(), "--no-record").config().record_dir)

    def test_config_carries_limits(self) -> None:
        config = parse(
            "--max-message-size",
            "1000",
            "--max-chunk-streams",
            "8",
            "--handshake-timeout",
            "2",
            "--chunk-size",
            "60000",
            "--play-timeout",
            "3",
        ).config()
        self.assertEqual(config.limits.max_media_message_size, 1000)
        self.assertEqual(config.limits.max_chunk_streams, 8)
        self.assertEqual(config.limits.handshake_timeout, 2.0)
        self.assertEqual(config.chunk_size, 60000)
        self.assertEqual(config.play_timeout, 3.0)

    def test_make_service_builds_one_listener_per_endpoint(self) -> None:
        top = makeService(parse("--port", "0", "--listen", "tcp6:0"))
        self.assertIsInstance(top, RTMPService)
        IServiceCollection(top)
        listeners = [s for s in top if isinstance(s, ListeningService)]
        self.assertEqual([s.description for s in listeners], ["tcp:0", "tcp6:0"])

    def test_make_service_adds_the_recorder_only_when_recording(self) -> None:
        top = makeService(parse("--port", "0", "--record-dir", self.mktemp()))
        self.assertIsInstance(top.recorder, Recorder)
        self.assertIn(top.recorder, list(top))
        self.assertIs(top.recorder.registry, top.registry)
        top = makeService(parse("--port", "0"))
        self.assertIsNone(top.recorder)
        self.assertEqual([s for s in top if isinstance(s, Recorder)], [])

    def test_the_sampler_runs_only_with_the_manhole(self) -> None:
        def samplers(collection) -> list:
            found = []
            for child in collection:
                found += [child] if isinstance(child, RateSampler) else []
                if IServiceCollection(child, None) is not None:
                    found += samplers(child)
            return found

        self.assertEqual(samplers(makeService(parse("--port", "0"))), [])
        base = self.mktemp()
        os.makedirs(base)
        keys = os.path.join(base, "authorized_keys")
        with open(keys, "wb") as f:
            f.write(Key(ed25519.Ed25519PrivateKey.generate()).public().toString("OPENSSH") + b"\n")
        options = parse(
            "--port",
            "0",
            "--manhole",
            "0",
            "--manhole-keys",
            keys,
            "--manhole-host-key",
            os.path.join(base, "hk"),
        )
        with capturedLogs():
            top = makeService(options)
        manhole = top.getServiceNamed("manhole")
        [sampler] = samplers(top)
        self.assertIn(sampler, list(manhole))
        self.assertIs(sampler.connections, top.connections)
        [listener] = [s for s in manhole if isinstance(s, ListeningService)]
        self.assertEqual(listener.description, "tcp:0:interface=127.0.0.1")


class TwistdTests(SynchronousTestCase):
    def run_twistd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [twistd(), "-n", "--pidfile=", "rtmpd", *args], capture_output=True, text=True, timeout=60
        )

    def test_help_lists_every_option_with_help(self) -> None:
        result = self.run_twistd("--help")
        self.assertEqual(result.returncode, 0)
        for option in (
            "--port",
            "--listen",
            "--record-dir",
            "--publisher-timeout",
            "--play-timeout",
            "--max-message-size",
            "--log-format",
            "--manhole",
        ):
            self.assertIn(option, result.stdout)

    def test_version(self) -> None:
        result = subprocess.run(
            [sys.executable, "-c", "import rtmpd; print(rtmpd.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.stdout.strip(), rtmpd.__version__)
        self.assertRegex(rtmpd.__version__, r"^\d+\.\d+\.\d+")

    def test_port_in_use_stops_startup_with_one_line(self) -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        result = self.run_twistd("--port", f"tcp:{port}:interface=127.0.0.1", "--log-format", "text")
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "cannot listen" in line]
        self.assertEqual(len(lines), 1, result.stdout + result.stderr)
        self.assertIn(f"rtmpd: cannot listen on tcp:{port}:interface=127.0.0.1: ", lines[0])

    def test_unknown_option_stops_startup_with_one_line(self) -> None:
        result = self.run_twistd("--frobnicate")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stderr.strip(), "rtmpd: error: option --frobnicate not recognized")
