"""A short run of every coverage-guided fuzzer in ``fuzz/`` (the long runs are in docs/security.md).

Each fuzzer runs a few thousand inputs, starting from the committed seed
corpus (read only: new inputs go to a temporary directory), with its
per-input time and memory budgets. A crash, an untyped exception or a
budget overrun makes atheris exit non-zero with the input saved.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import IN_CI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZERS = (
    "handshake",
    "chunks",
    "amf0",
    "amf3",
    "media",
    "commands",
    "http_api",
    "hls_request",
    "hls_http",
    "flv_path",
    "relay_hook_options",
)
RUNS = 3000


def _have_atheris() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if IN_CI:
            raise AssertionError("atheris is not installed (pip install -e .[test])") from None
        raise SkipTest("atheris is not installed") from None


class ShortFuzzRunTests(TestCase):
    timeout = 300

    def run_fuzzer(self, name: str) -> str:
        _have_atheris()
        with tempfile.TemporaryDirectory() as scratch:
            corpus = os.path.join(scratch, "corpus")
            os.mkdir(corpus)
            cmd = [
                sys.executable,
                os.path.join(ROOT, "fuzz", f"fuzz_{name}.py"),
                f"-runs={RUNS}",
                "-seed=1",
                f"-artifact_prefix={scratch}/",
                corpus,
                os.path.join(ROOT, "fuzz", "corpus", name),
            ]
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=scratch)
            crashes = [f for f in os.listdir(scratch) if f.startswith(("crash-", "timeout-", "oom-"))]
        output = result.stderr + result.stdout
        self.assertEqual(result.returncode, 0, output[-3000:])
        self.assertEqual(crashes, [])
        self.assertIn(f"Done {RUNS} runs", output)
        coverage = re.findall(r"cov: (\d+)", output)
        self.assertTrue(coverage and int(coverage[-1]) > 20, output[-2000:])
        return output

    def test_handshake(self) -> None:
        self.run_fuzzer("handshake")

    def test_chunks(self) -> None:
        self.run_fuzzer("chunks")

    def test_amf0(self) -> None:
        self.run_fuzzer("amf0")

    def test_amf3(self) -> None:
        self.run_fuzzer("amf3")

    def test_media(self) -> None:
        self.run_fuzzer("media")

    def test_commands(self) -> None:
        self.run_fuzzer("commands")

    def test_http_api(self) -> None:
        self.run_fuzzer("http_api")

    def test_hls_request(self) -> None:
        self.run_fuzzer("hls_request")

    def test_hls_http(self) -> None:
        self.run_fuzzer("hls_http")

    def test_flv_path(self) -> None:
        self.run_fuzzer("flv_path")

    def test_relay_hook_options(self) -> None:
        self.run_fuzzer("relay_hook_options")

    def test_every_fuzzer_is_run_and_has_seeds(self) -> None:
        files = os.listdir(os.path.join(ROOT, "fuzz"))
        on_disk = {f[len("fuzz_") : -3] for f in files if f.startswith("fuzz_")}
        self.assertEqual(on_disk, set(FUZZERS))
        for name in FUZZERS:
            self.assertTrue(os.listdir(os.path.join(ROOT, "fuzz", "corpus", name)), name)


class FoundByFuzzingTests(SynchronousTestCase):
    """What the fuzzers of the HTTP surfaces and option parsers found, each fixed in its module
    (the inputs are in the seed corpus too, so the short runs above replay them)."""

    def test_a_non_ascii_digit_in_an_hls_query_is_a_query_error(self) -> None:
        from rtmpd.hls.names import QueryError, parse_playlist_query

        for query in ("_HLS_msn=1%C2%B2", "_HLS_msn=1&_HLS_part=%C2%B9"):
            with self.assertRaises(QueryError):
                parse_playlist_query(query)
        self.assertEqual(parse_playlist_query("_HLS_msn=12&_HLS_part=3").part, 3)

    def test_a_non_ascii_request_target_is_a_400_not_a_server_error(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from twisted.web.resource import Resource

        from rtmpd.http.site import HTTPSite

        client = IPv4Address("TCP", "127.0.0.1", 40000)
        for request in (
            b"POST /hls/live/\x98am/index.m3u8 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ):
            channel = HTTPSite(Resource()).buildProtocol(client)
            transport = StringTransport(peerAddress=client)
            channel.makeConnection(transport)
            channel.dataReceived(request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:100])
            self.flushLoggedErrors()
            channel.connectionLost(None)

    def test_http_flv_refuses_the_app_names_rtmp_refuses(self) -> None:
        from rtmpd.http.flv.resource import parse_path
        from rtmpd.http.jsonio import HTTPError

        for app in ("..", ".", "li\x0fve", "a\\b", "live?x"):
            with self.assertRaises(HTTPError) as raised:
                parse_path(app, "cam.flv")
            self.assertEqual(raised.exception.status, 404)
        self.assertEqual(parse_path("live", "cam.flv"), ("live", "cam"))

    def test_url_templates_refuse_format_specs_and_conversions(self) -> None:
        from rtmpd.remote.pull import pull_template
        from rtmpd.remote.urls import URLError, render

        for template in (
            "rtmp://h/live/{name:>999999999}",
            "rtmp://h/live/{name:1935/l}",
            "rtmp://h/{app!r}/{name}",
            "rtmp://h/{app!x}/{name}",
        ):
            with self.assertRaises(URLError):
                render(template, "live/cam")
            with self.assertRaises(URLError):
                pull_template(template)
        self.assertEqual(render("rtmp://h/out/{name}", "live/cam").name, "cam")
