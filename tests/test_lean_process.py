"""A lean process: the server built as ``twistd -n rtmpd`` builds it loads no heavy package it does not use.

Each case runs in a fresh interpreter (``sys.modules`` of this test process
holds everything the other tests imported): it parses a twistd command line
with twistd's own ``ServerOptions``, builds the service with the plugin's
``makeService`` (not started) and reports ``sys.modules``. The heavy packages
are the SSH manhole (conch), the HTTP stack (twisted.web, autobahn,
prometheus_client, treq) and the MP4 muxer; each is asserted absent without
the option that needs it, and the HTTP stack present with ``--http``, so the
check itself is proven.

Not here: cryptography and pyOpenSSL. Twisted's reactor imports pyOpenSSL
whenever it is installed (``twisted.internet.tcp`` -> ``_newtls``), with
or without rtmpd; docs/performance.md has the figures.
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
with open(sys.argv[2], "w") as out:
    json.dump(sorted(sys.modules), out)
"""

#: Packages that only some options need, and the modules that show one was loaded.
HTTP_STACK = ("twisted.web", "autobahn", "prometheus_client", "treq")
MANHOLE = ("twisted.conch",)
MP4 = ("rtmpd.recording.mp4file", "rtmpd.core.fmp4")
HEAVY = HTTP_STACK + MANHOLE + MP4


def loaded(modules: list[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


class LeanProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rtmpd-lean-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def modules_after_build(self, *args: str) -> list[str]:
        """``sys.modules`` of a fresh interpreter after twistd's options and the plugin's makeService."""
        out = self.tmp / "modules.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run(
            [sys.executable, "-c", _BUILD, str(self.tmp / "twistd.log"), str(out), *args],
            cwd=self.tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
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
