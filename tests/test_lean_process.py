"""A lean process: the server built as ``twistd -n rtmpd`` builds it loads no heavy package it does not use.

Each case runs in a fresh interpreter (``sys.modules`` of this test process
holds everything the other tests imported): it parses a twistd command line
with twistd's own ``ServerOptions``, builds the service with the plugin's
``makeService`` (not started) and reports ``sys.modules``. The heavy packages
are the SSH manhole (conch), the HTTP stack (twisted.web, autobahn,
prometheus_client, treq) and the MP4 muxer; each is asserted absent without
the option that needs it, and the HTTP stack present with ``--http``, so the
check itself is proven.

TLS too: Twisted's TCP transport imports pyOpenSSL (and cryptography under
it) whenever it is installed, unless ``rtmpd.tls.keep_out()`` ran first;
``rtmpd.tap`` does so when no option needs TLS (``--tls auto``). A lean
process has neither, one with an ``rtmps://`` URL, an ``https://`` callback,
an ``ssl:`` listener or ``--tls on`` has both (``tests/test_push_real.py``
proves such a server really speaks TLS), and a URL added at run time to a lean
process fails with ``TLSUnavailable``. The relay's runtime, the workers'
AMP link and the cluster come only with their options too.
docs/performance.md ("Lean process: memory") has the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

_BUILD = """
import json, sys
from twisted.scripts._twistd_unix import ServerOptions
config = ServerOptions()
config.parseOptions(["-n", "--pidfile=", "--logfile=" + sys.argv[1], "rtmpd", *sys.argv[3:]])
maker = config.loadedPlugins[config.subCommand]
maker.makeService(config.subOptions)
# A module kept out (rtmpd.tls) is None in sys.modules: it was not loaded.
with open(sys.argv[2], "w") as out:
    json.dump(sorted(m for m, v in sys.modules.items() if v is not None), out)
"""

#: After a lean build: what a push rule added at run time with an rtmps:// URL meets (printed as JSON).
_RUNTIME_TLS = """
import json, sys
from twisted.scripts._twistd_unix import ServerOptions
config = ServerOptions()
config.parseOptions(["-n", "--pidfile=", "--logfile=" + sys.argv[1], "rtmpd", "--port", "tcp:0"])
top = config.loadedPlugins[config.subCommand].makeService(config.subOptions)
from twisted.internet import reactor
from rtmpd.remote.connection import describe_failure
from rtmpd.remote.endpoints import TLSUnavailable, load_trust_root
from rtmpd.remote.options import make_connector
from rtmpd.remote.urls import RemoteURL

class Destination:
    url = RemoteURL.parse("rtmps://127.0.0.1:9/live/x")

rule = top.getServiceNamed("push").add("live/*", "rtmps://127.0.0.1:9/live/{name}")
failures = []
make_connector(reactor)(Destination()).addErrback(lambda f: failures.append(describe_failure(f)))
try:
    load_trust_root(sys.argv[1])
    ca = "loaded"
except TLSUnavailable as e:
    ca = "TLSUnavailable: " + str(e)
openssl = sys.modules.get("OpenSSL") is not None
print(json.dumps({"rule": rule, "failures": failures, "ca": ca, "openssl": openssl}))
"""

#: Packages that only some options need, and the modules that show one was loaded.
HTTP_STACK = ("twisted.web", "autobahn", "prometheus_client", "treq")
MANHOLE = ("twisted.conch",)
MP4 = ("rtmpd.recording.mp4file", "rtmpd.core.fmp4")
TLS = ("OpenSSL", "cryptography", "bcrypt", "twisted.internet.ssl", "twisted.protocols.tls")
#: The workers' AMP link to their parent, and the cluster's directory.
CLUSTER = ("twisted.protocols.amp", "rtmpd.cluster")
HEAVY = HTTP_STACK + MANHOLE + MP4 + TLS + CLUSTER


def loaded(modules: list[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


class FreshInterpreterCase(SynchronousTestCase):
    """A scratch directory, and scripts run in a fresh interpreter."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rtmpd-lean-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_python(self, script: str, *args: str) -> str:
        """Run ``script`` in a fresh interpreter (this checkout first on its path); its stdout."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=self.tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return result.stdout


class LeanProcessTests(FreshInterpreterCase):
    def modules_after_build(self, *args: str) -> list[str]:
        """``sys.modules`` of a fresh interpreter after twistd's options and the plugin's makeService."""
        out = self.tmp / "modules.json"
        self.run_python(_BUILD, str(self.tmp / "twistd.log"), str(out), *args)
        return json.loads(out.read_text())

    def assertAbsent(self, modules: list[str], packages: tuple[str, ...]) -> None:
        self.assertEqual([p for p in packages if loaded(modules, p)], [])

    def test_listening_only(self) -> None:
        """A server that only listens loads none of the heavy packages."""
        modules = self.modules_after_build("--port", "tcp:0:interface=127.0.0.1")
        self.assertIn("rtmpd.server.service", modules)
        self.assertAbsent(modules, HEAVY)

    def test_recording_flv_and_auth_keys(self) -> None:
        """FLV recording and a key file need neither the MP4 muxer nor the callback's HTTP client."""
        keys = self.tmp / "keys"
        keys.write_text("live/a secret\n")
        modules = self.modules_after_build(
            "--port", "tcp:0:interface=127.0.0.1", "--record-dir", str(self.tmp / "rec"),
            "--auth-keys", str(keys),
        )  # fmt: skip
        self.assertIn("rtmpd.recording.recorder", modules)
        self.assertIn("rtmpd.access.keyfile", modules)
        self.assertAbsent(modules, HEAVY)

    def test_each_option_loads_what_it_needs(self) -> None:
        """The check can fail: with the options, the same packages are there (the MP4 muxer is loaded
        later, when a recording in MP4 starts)."""
        modules = self.modules_after_build(
            "--port", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1",
            "--record-dir", str(self.tmp / "rec"), "--record-format", "mp4",
            "--auth-callback", "http://127.0.0.1:9/auth",
        )  # fmt: skip
        for package in ("twisted.web", "prometheus_client", "treq"):
            self.assertTrue(loaded(modules, package), package)

    def test_http_callback_and_webhook_without_tls(self) -> None:
        """An http:// access callback and webhook load their HTTP client, and still no TLS."""
        secret = self.tmp / "hook-secret"
        secret.write_text("s3cret\n")
        modules = self.modules_after_build(
            "--port", "tcp:0:interface=127.0.0.1", "--auth-callback", "http://127.0.0.1:9/auth",
            "--hook-webhook", "*=http://127.0.0.1:9/hook", "--hook-secret-file", str(secret),
        )  # fmt: skip
        self.assertTrue(loaded(modules, "treq"))
        self.assertIn("twisted.internet.tcp", modules)
        self.assertAbsent(modules, TLS + MANHOLE + CLUSTER)

    def test_manhole_without_pyopenssl(self) -> None:
        """The SSH manhole loads conch and the cryptography it needs for its keys, not pyOpenSSL."""
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from twisted.conch.ssh.keys import Key

        keys = self.tmp / "authorized_keys"
        keys.write_bytes(Key(ed25519.Ed25519PrivateKey.generate()).public().toString("OPENSSH") + b"\n")
        modules = self.modules_after_build(
            "--port", "tcp:0:interface=127.0.0.1", "--manhole", "tcp:0:interface=127.0.0.1",
            "--manhole-keys", str(keys), "--manhole-host-key", str(self.tmp / "host_key"),
        )  # fmt: skip
        self.assertTrue(loaded(modules, "twisted.conch"))
        self.assertAbsent(modules, ("OpenSSL", "twisted.internet.ssl", "twisted.protocols.tls"))

    def test_options_that_need_tls_load_it(self) -> None:
        """An https:// callback, an rtmps:// push or pull, an ssl: listener or --tls on: TLS is there."""
        from tests.test_push_real import write_test_pki

        _, cert, key = write_test_pki(str(self.tmp), "lean")
        for args in (
            ["--auth-callback", "https://127.0.0.1:9/auth"],
            ["--push", "live/*=rtmps://127.0.0.1:9/live/{name}"],
            ["--pull", "live=rtmps://127.0.0.1:9/live"],
            ["--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
            ["--tls", "on"],
        ):
            modules = self.modules_after_build("--port", "tcp:0:interface=127.0.0.1", *args)
            for package in ("OpenSSL", "cryptography", "twisted.protocols.tls"):
                self.assertTrue(loaded(modules, package), (args, package))

    def test_rtmps_added_at_run_time_to_a_lean_process_fails_typed(self) -> None:
        """A push rule added through the runtime API is taken, but its connections fail with
        TLSUnavailable, which says to start with --tls on; a CA file is refused the same way."""
        report = json.loads(self.run_python(_RUNTIME_TLS, str(self.tmp / "twistd.log")))
        self.assertEqual(report["rule"], 1)
        (failure,) = report["failures"]
        self.assertTrue(failure.startswith("TLSUnavailable: rtmps://127.0.0.1:9 needs TLS"), failure)
        self.assertIn("--tls on", failure)
        self.assertTrue(report["ca"].startswith("TLSUnavailable: the CA file"), report["ca"])
        self.assertFalse(report["openssl"])


_KEPT_OUT = """
import json, sys
from rtmpd import tls
kept_out = tls.keep_out()
try:
    import OpenSSL
    openssl = "imported"
except ImportError:
    openssl = "ImportError"
from twisted.internet import endpoints, reactor, tcp
from twisted.internet.interfaces import ITLSTransport
print(json.dumps({
    "kept_out": kept_out, "openssl": openssl, "available": tls.available(),
    "tcp_tls": tcp.Connection.TLS, "itls": tcp.ITLSTransport is ITLSTransport,
    "wrap": endpoints.TLSMemoryBIOFactory is not None, "listen_ssl": hasattr(reactor, "listenSSL"),
    "crypto": "cryptography" in sys.modules,
}))
"""

_TOO_LATE = """
import json
from twisted.internet import tcp
from rtmpd import tls
print(json.dumps({"kept_out": tls.keep_out(), "available": tls.available()}))
"""


class KeepTLSOutTests(FreshInterpreterCase):
    """What ``rtmpd.tls.keep_out`` relies on in Twisted: these fail if an upgrade changes it."""

    def test_twisted_runs_without_pyopenssl(self) -> None:
        """Kept out first: OpenSSL cannot be imported, Twisted's TCP has no TLS (its supported
        fallback), wrapClientTLS has no factory, and cryptography is not loaded either."""
        report = json.loads(self.run_python(_KEPT_OUT))
        self.assertEqual(
            report,
            {
                "kept_out": True, "openssl": "ImportError", "available": False, "tcp_tls": False,
                "itls": False, "wrap": False, "listen_ssl": True, "crypto": False,
            },
        )  # fmt: skip

    def test_too_late_once_twisted_tcp_is_loaded(self) -> None:
        """After Twisted's TCP transport was imported (with TLS), keep_out changes nothing."""
        self.assertEqual(json.loads(self.run_python(_TOO_LATE)), {"kept_out": False, "available": True})


class TLSReasonsTests(SynchronousTestCase):
    """``rtmpd.tap.tls.tls_reasons``: which options need TLS (parsed in-process: no switch is made)."""

    def reasons(self, *args: str) -> list[str]:
        from rtmpd.tap import Options
        from rtmpd.tap.tls import tls_reasons

        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
        return tls_reasons(options)

    def test_plain_options_need_none(self) -> None:
        self.assertEqual(
            self.reasons(
                "--listen", "tcp6:0:interface=\\:\\:1", "--listen", "unix:/tmp/rtmpd-lean.sock",
                "--push", "live/*=rtmp://127.0.0.1:9/live/{name}", "--auth-callback", "http://127.0.0.1:9/a",
            ),
            [],
        )  # fmt: skip

    def test_each_tls_option_is_named(self) -> None:
        self.assertEqual(self.reasons("--tls", "on"), ["--tls on"])
        self.assertEqual(self.reasons("--push", "live/*=RTMPS://h/live/{name}"), ["--push (a TLS URL)"])
        self.assertEqual(self.reasons("--pull", "live=rtmps://h/live"), ["--pull (a TLS URL)"])
        self.assertEqual(self.reasons("--auth-callback", "https://h/a"), ["--auth-callback (a TLS URL)"])
        self.assertEqual(self.reasons("--cluster", "redis://127.0.0.1:9/0"), ["--cluster"])


class ListenerChecksTests(SynchronousTestCase):
    """Endpoint descriptions are parsed after the TLS choice, by ``rtmpd.tap.listeners``."""

    def test_every_endpoint_option_is_checked_after_parsing(self) -> None:
        from rtmpd.tap import Options
        from rtmpd.tap.coerce import endpoint_description
        from rtmpd.tap.listeners import LISTENER_OPTIONS

        taking = {p[0] for p in Options.optParameters if p[4:5] == [endpoint_description]} | {"listen"}
        self.assertEqual(taking, set(LISTENER_OPTIONS))

    def test_a_bad_description_is_still_refused_with_one_line(self) -> None:
        from rtmpd.tap import Options

        for option in ("--port", "--listen", "--http"):
            with self.assertRaises(SystemExit) as raised:
                Options().parseOptions([option, "tcp:1935:bogus=1"])
            message = str(raised.exception.code)
            self.assertTrue(message.startswith(f"rtmpd: error: {option}: not a port number"), message)
