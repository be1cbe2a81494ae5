"""``python -m rtmpd.sign``: what it prints is accepted by the signed-URL checker, and its errors."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from rtmpd import sign as sign_command
from rtmpd.access import Action, Allow, Deny, Request, SecretsTable, SignedURLs

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000
SECRET = "s3cr3t-0123456789abcdef"
NEXT_SECRET = "next-secret-fedcba9876543210"


def check(query: str, now: float, action: Action = Action.PUBLISH, name: str = "cam", secrets: str = SECRET):
    signed = SignedURLs(SecretsTable({"live": [s.encode() for s in secrets.split()]}), now=lambda: now)
    results: list = []
    signed.authorise(Request(action, "live", name, query)).addBoth(results.append)
    return results[0]


class SignCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.secrets = self.mktemp()
        with open(self.secrets, "w") as f:
            f.write(f"# app secret\nlive {SECRET}\nlive {NEXT_SECRET}\n")

    def run_module(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "rtmpd.sign", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    def main(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = sign_command.main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
        return code, out.getvalue(), err.getvalue()

    def base(self, action: str = "publish", name: str = "cam") -> list[str]:
        return ["--secrets", self.secrets, "--app", "live", "--name", name, "--action", action]

    def test_subprocess_output_is_accepted_by_the_checker(self) -> None:
        done = self.run_module(*self.base(), "--ttl", "600", "--now", str(NOW))
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        query = done.stdout.strip()
        self.assertRegex(query, r"^exp=1700000600&sig=[0-9a-f]{64}$")
        self.assertEqual(check(query, NOW), Allow(expires=NOW + 600.0, authoriser="signed-url"))
        self.assertEqual(check(query, NOW + 599.9).expires, NOW + 600.0)
        self.assertEqual(check(query, NOW + 600).reason, "signature expired")
        self.assertEqual(check(query, NOW, Action.PLAY).reason, "invalid signature")
        self.assertEqual(check(query, NOW, name="cam2").reason, "invalid signature")

    def test_play_and_base64url_and_url(self) -> None:
        code, out, _ = self.main(
            *self.base("play"), "--ttl", "60", "--now", str(NOW), "--encoding", "base64url"
        )
        self.assertEqual(code, 0)
        query = out.strip()
        self.assertRegex(query, r"^exp=1700000060&sig=[A-Za-z0-9_-]{43}$")
        self.assertIsInstance(check(query, NOW, Action.PLAY), Allow)
        self.assertIsInstance(check(query, NOW, Action.PUBLISH), Deny)
        code, out, _ = self.main(
            *self.base(), "--ttl", "60", "--now", str(NOW), "--url", "rtmp://example/live/"
        )
        url, _, query = out.strip().partition("?")
        self.assertEqual(url, "rtmp://example/live/cam")
        self.assertIsInstance(check(query, NOW), Allow)

    def test_the_first_secret_signs_and_rotation_keeps_it_valid(self) -> None:
        code, out, _ = self.main(*self.base(), "--ttl", "60", "--now", str(NOW))
        query = out.strip()
        self.assertIsInstance(check(query, NOW, secrets=SECRET), Allow)
        self.assertIsInstance(check(query, NOW, secrets=f"{NEXT_SECRET} {SECRET}"), Allow)
        self.assertIsInstance(check(query, NOW, secrets=NEXT_SECRET), Deny)

    def test_without_now_uses_the_clock(self) -> None:
        import time

        before = time.time()
        code, out, _ = self.main(*self.base(), "--ttl", "30")
        exp = int(out.strip().split("&")[0].removeprefix("exp="))
        self.assertTrue(int(before + 30) <= exp <= int(time.time() + 30))

    def test_errors(self) -> None:
        bad = self.mktemp()
        with open(bad, "w") as f:
            f.write(f"live {SECRET}\nlive tooshort\n")
        cases = [
            (["--secrets", bad, "--app", "live", "--name", "cam", "--action", "play", "--ttl", "5"], ":2:"),
            ([*self.base(), "--ttl", "0"], "--ttl must be greater than 0"),
            ([*self.base(name="cam?x=1"), "--ttl", "5"], "without a query"),
            (
                [
                    "--secrets",
                    self.secrets,
                    "--app",
                    "other",
                    "--name",
                    "c",
                    "--action",
                    "play",
                    "--ttl",
                    "5",
                ],
                "no secret",
            ),
            ([*self.base(action="record"), "--ttl", "5"], "invalid choice"),
            (
                [
                    "--secrets",
                    self.mktemp(),
                    "--app",
                    "live",
                    "--name",
                    "c",
                    "--action",
                    "play",
                    "--ttl",
                    "5",
                ],
                "cannot read",
            ),
        ]
        for args, message in cases:
            code, out, err = self.main(*args)
            self.assertEqual((code, out), (2, ""), args)
            self.assertIn(message, err)
            self.assertNotIn(SECRET, err)
            self.assertNotIn("tooshort", err)
        done = self.run_module(*self.base(), "--ttl", "-1")
        self.assertEqual(done.returncode, 2)
        self.assertIn("--ttl must be greater than 0", done.stderr)
