"""Access control (``rtmpd.access``) without the server: signed URLs, the key file, the HTTP callback,
address rules, failure throttling, the chain and the policy.

The HTTP callback is exercised against a real ``twisted.web`` server on
127.0.0.1 started by each test; timeouts and caches run on a ``Clock``.
Nothing sleeps: every wait is on an event (a request arriving, a connection
closing).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from rtmpd.access import (
    ALLOW,
    AccessCounters,
    AccessDenied,
    AccessPolicy,
    AccessSettings,
    Action,
    AddressRules,
    Allow,
    Authoriser,
    CallbackConfigError,
    Chain,
    ConnectDenied,
    Deny,
    FailurePolicy,
    FailureThrottle,
    HTTPCallback,
    KeyFile,
    KeyFileError,
    KeyTable,
    PlayDenied,
    PublishDenied,
    Request,
    RuleError,
    SecretsFile,
    SecretsFileError,
    SecretsTable,
    SignedURLs,
    StreamKeys,
    build_policy,
    parse_rule,
    sign,
    signed_query,
)
from rtmpd.access.callback import REFUSED, UNAVAILABLE
from rtmpd.access.decision import merge
from rtmpd.access.errors import MAX_DESCRIPTION
from rtmpd.access.policy import LOCKED_OUT
from rtmpd.access.signed import MAX_QUERY_LENGTH, parse_signature
from rtmpd.access.throttle import address_bucket

ROOT = Path(__file__).resolve().parent.parent

NOW = 1_700_000_000
SECRET = b"s3cr3t-0123456789abcdef"
OLD_SECRET = b"old-secret-fedcba9876543210"


def request(action: Action = Action.PUBLISH, name: str = "cam", query: str = "", **kw: Any) -> Request:
    fields = {"app": "live", "addr": "192.0.2.10", "conn_id": "c1"}
    fields.update(kw)
    if action is Action.CONNECT:
        name = ""
    return Request(action, name=name, query=query, **fields)


def decide(authoriser: Authoriser, req: Request) -> Any:
    """The decision of a synchronous authoriser (its Deferred has fired)."""
    results: list[Any] = []
    authoriser.authorise(req).addBoth(results.append)
    assert len(results) == 1, "the authoriser did not answer synchronously"
    return results[0]


def write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


# -- signed URLs ---------------------------------------------------------------------------------


class SignedURLTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.now = float(NOW)
        self.signed = SignedURLs(SecretsTable({"live": [SECRET]}), now=lambda: self.now)

    def check(self, query: str, action: Action = Action.PUBLISH, name: str = "cam", app: str = "live") -> Any:
        return decide(self.signed, request(action, name, query, app=app))

    def test_signature_is_hmac_sha256_of_action_app_name_exp(self) -> None:
        """The documented formula, computed independently."""
        expected = hmac.new(SECRET, b"publish|live/cam|1700000600", hashlib.sha256).digest()
        self.assertEqual(sign(SECRET, "publish", "live", "cam", NOW + 600), expected.hex())
        self.assertEqual(
            sign(SECRET, "publish", "live", "cam", NOW + 600, "base64url"),
            base64.urlsafe_b64encode(expected).decode().rstrip("="),
        )
        self.assertEqual(
            signed_query(SECRET, "publish", "live", "cam", NOW + 600), f"exp={NOW + 600}&sig={expected.hex()}"
        )
        self.assertRaises(ValueError, sign, SECRET, "publish", "live", "cam", 1, "base32")

    def test_valid_hex_allows_until_exp(self) -> None:
        decision = self.check(signed_query(SECRET, "publish", "live", "cam", NOW + 600))
        self.assertEqual(decision, Allow(expires=float(NOW + 600), authoriser="signed-url"))

    def test_valid_base64url_allows(self) -> None:
        query = signed_query(SECRET, "play", "live", "cam", NOW + 60, "base64url")
        self.assertEqual(len(query.partition("sig=")[2]), 43)
        self.assertIsInstance(self.check(query, Action.PLAY), Allow)
        self.assertIsInstance(self.check(query + "=", Action.PLAY), Allow, "one '=' of padding is accepted")

    def test_uppercase_hex_and_other_parameters_are_accepted(self) -> None:
        exp = NOW + 60
        sig = sign(SECRET, "publish", "live", "cam", exp).upper()
        self.assertIsInstance(self.check(f"foo=1&exp={exp}&bar&sig={sig}"), Allow)

    def test_wrong_secret_is_invalid(self) -> None:
        decision = self.check(signed_query(b"another-secret-0123456789", "publish", "live", "cam", NOW + 60))
        self.assertEqual((decision.reason, decision.authoriser), ("invalid signature", "signed-url"))

    def test_expired(self) -> None:
        for exp in (NOW, NOW - 1, 0):
            decision = self.check(signed_query(SECRET, "publish", "live", "cam", exp))
            self.assertEqual(decision.reason, "signature expired", exp)
        self.now = NOW - 0.5
        self.assertIsInstance(self.check(signed_query(SECRET, "publish", "live", "cam", NOW)), Allow)

    def test_missing(self) -> None:
        exp = NOW + 60
        sig = sign(SECRET, "publish", "live", "cam", exp)
        for query in ("", "foo=bar", f"exp={exp}", f"sig={sig}", "exp", "sig"):
            self.assertEqual(self.check(query).reason, "missing signature", query)

    def test_other_app(self) -> None:
        signed = SignedURLs(SecretsTable({"live": [SECRET], "other": [SECRET]}), now=lambda: NOW)
        query = signed_query(SECRET, "publish", "live", "cam", NOW + 60)
        self.assertEqual(decide(signed, request(query=query, app="other")).reason, "invalid signature")
        unknown = decide(signed, request(query=query, app="nowhere"))
        self.assertEqual(unknown.reason, "invalid signature")
        self.assertIn("no secret for app", unknown.detail)

    def test_rotated_secrets_are_all_valid(self) -> None:
        signed = SignedURLs(SecretsTable({"live": [SECRET, OLD_SECRET]}), now=lambda: NOW)
        for secret in (SECRET, OLD_SECRET):
            query = signed_query(secret, "publish", "live", "cam", NOW + 60)
            self.assertIsInstance(decide(signed, request(query=query)), Allow)

    def test_tampered_name_action_exp_and_sig(self) -> None:
        exp = NOW + 60
        sig = sign(SECRET, "publish", "live", "cam", exp)
        self.assertEqual(self.check(f"exp={exp}&sig={sig}", name="cam2").reason, "invalid signature")
        self.assertEqual(self.check(f"exp={exp}&sig={sig}", Action.PLAY).reason, "invalid signature")
        self.assertEqual(self.check(f"exp={exp + 1}&sig={sig}").reason, "invalid signature")
        self.assertEqual(self.check(f"exp={exp + 3600}&sig={sig}").reason, "invalid signature")
        flipped = ("0" if sig[-1] != "0" else "1") + sig[1:]
        self.assertEqual(self.check(f"exp={exp}&sig={flipped}").reason, "invalid signature")
        play_query = signed_query(SECRET, "play", "live", "cam", exp)
        self.assertEqual(self.check(play_query, Action.PUBLISH).reason, "invalid signature")

    def test_garbage_is_malformed(self) -> None:
        exp = NOW + 60
        sig = sign(SECRET, "publish", "live", "cam", exp)
        b64 = sign(SECRET, "publish", "live", "cam", exp, "base64url")
        # The last base64url character carries two unused bits: a second spelling must not verify.
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        other_spelling = b64[:-1] + last[last.index(b64[-1]) + 1]
        cases = [
            f"exp={exp}a&sig={sig}",
            f"exp=-{exp}&sig={sig}",
            f"exp=1e9&sig={sig}",
            f"exp=\u0663\u0663&sig={sig}",  # Arabic-Indic digits: str.isdigit() says yes
            f"exp={'9' * 13}&sig={sig}",
            f"exp=&sig={sig}",
            f"exp={exp}&sig={sig[:-1]}",
            f"exp={exp}&sig={sig}0",
            f"exp={exp}&sig={sig[:-1]}g",
            f"exp={exp}&sig={other_spelling}",
            f"exp={exp}&sig=",
            f"exp={exp}&sig={sig}&sig={sig}",
            f"exp={exp}&exp={exp}&sig={sig}",
            f"exp={exp}&sig={sig}&" + "&".join(f"p{i}" for i in range(40)),
            f"exp={exp}&sig={sig}&pad=" + "x" * MAX_QUERY_LENGTH,
        ]
        for query in cases:
            self.assertEqual(self.check(query).reason, "malformed signature", query[:80])
        self.assertIsNone(parse_signature(other_spelling))
        self.assertEqual(len(parse_signature(b64) or b""), 32)

    @given(st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_any_query_is_a_typed_refusal(self, query: str) -> None:
        decision = self.check(query)
        self.assertIsInstance(decision, Deny)
        self.assertIn(decision.reason, ("missing signature", "malformed signature", "invalid signature"))

    def test_huge_inputs_are_refused_quickly(self) -> None:
        start = time.perf_counter()
        for query in ("exp=" + "1" * 1_000_000, "&" * 1_000_000, "sig=" + "a" * 1_000_000):
            self.assertIsInstance(self.check(query), Deny)
        self.assertLess(time.perf_counter() - start, 1.0)

    def test_connect_and_unchecked_actions_are_allowed(self) -> None:
        self.assertIs(decide(self.signed, request(Action.CONNECT)), ALLOW)
        publish_only = SignedURLs(SecretsTable({"live": [SECRET]}), now=lambda: NOW, actions=[Action.PUBLISH])
        self.assertIs(decide(publish_only, request(Action.PLAY)), ALLOW)
        self.assertIsInstance(decide(publish_only, request(Action.PUBLISH)), Deny)


class SecretsFileTests(SynchronousTestCase):
    def test_parse(self) -> None:
        table = SecretsTable.parse(
            f"# comment\n\nlive {SECRET.decode()}  # the signing one\nlive\t{OLD_SECRET.decode()}\n"
            f"other {SECRET.decode()}\nlive {SECRET.decode()}\n"
        )
        self.assertEqual(table.secrets_for("live"), (SECRET, OLD_SECRET))
        self.assertEqual(table.secrets_for("other"), (SECRET,))
        self.assertEqual(table.secrets_for("none"), ())
        self.assertEqual((table.apps(), table.secret_count()), (["live", "other"], 3))

    def test_errors_name_the_line_and_never_quote_it(self) -> None:
        cases = {
            "live\n": 1,
            f"# ok\nlive {SECRET.decode()} extra\n": 2,
            "\n\nlive short-secret\n": 3,
            f"live {'x' * 2000}\n": 1,
        }
        for text, line in cases.items():
            with self.assertRaises(SecretsFileError) as caught:
                SecretsTable.parse(text, "secrets.txt")
            self.assertEqual((caught.exception.path, caught.exception.line), ("secrets.txt", line))
            self.assertIn(f"secrets.txt:{line}:", str(caught.exception))
            for secret in ("short-secret", SECRET.decode(), "extra", "x" * 20):
                self.assertNotIn(secret, str(caught.exception))

    def test_reload_swaps_or_keeps(self) -> None:
        path = write(self.mktemp(), f"live {SECRET.decode()}\n")
        secrets = SecretsFile(path)
        signed = SignedURLs(secrets, now=lambda: NOW)
        old_query = signed_query(SECRET, "publish", "live", "cam", NOW + 60)
        new_query = signed_query(OLD_SECRET, "publish", "live", "cam", NOW + 60)
        self.assertIsInstance(decide(signed, request(query=old_query)), Allow)
        write(path, f"live {OLD_SECRET.decode()}\n")
        self.assertIn("1 apps, 1 secrets", signed.reload().summary)
        self.assertIsInstance(decide(signed, request(query=new_query)), Allow)
        self.assertEqual(decide(signed, request(query=old_query)).reason, "invalid signature")
        write(path, "live tooshort\n")
        self.assertRaises(SecretsFileError, signed.reload)
        self.assertIsInstance(decide(signed, request(query=new_query)), Allow, "a bad reload keeps the old")
        self.assertNotIn(OLD_SECRET.decode(), signed.describe())

    def test_unreadable_files(self) -> None:
        with self.assertRaises(SecretsFileError) as caught:
            SecretsFile(os.path.join(self.mktemp(), "missing"))
        self.assertEqual(caught.exception.line, 0)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"live " + SECRET + b"\nlive \xff\xfe-not-utf8-0123456789\n")
        with self.assertRaises(SecretsFileError) as caught:
            SecretsFile(path)
        self.assertEqual(caught.exception.line, 2)


# -- the key file --------------------------------------------------------------------------------

KEYS = """\
# APP  KEY           [play] [name=NAME] [record=yes|no]
live   alice-key            name=alice
live   bob-key              record=no
live   viewers-4412  play   name=alice
show   carol-key     record=yes  # a comment
"""


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.keys = StreamKeys(KeyTable.parse(KEYS))

    def test_publish_keys(self) -> None:
        self.assertEqual(
            decide(self.keys, request(name="alice-key")),
            Allow(name="alice", authoriser="key-file", detail="key line 2"),
        )
        self.assertEqual(decide(self.keys, request(name="bob-key")).record, False)
        self.assertEqual(decide(self.keys, request(name="carol-key", app="show")).record, True)
        self.assertIsNone(decide(self.keys, request(name="bob-key")).name)
        refused = decide(self.keys, request(name="wrong"))
        self.assertEqual((refused.reason, refused.authoriser), ("unknown stream key", "key-file"))
        self.assertNotIn("wrong", refused.reason)
        self.assertIsInstance(
            decide(self.keys, request(name="alice-key", app="show")), Deny, "keys are per app"
        )
        self.assertIsInstance(
            decide(self.keys, request(name="viewers-4412")), Deny, "a play key cannot publish"
        )
        self.assertIsInstance(decide(self.keys, request(name="x", app="elsewhere")), Deny)

    def test_play_keys(self) -> None:
        allow = decide(self.keys, request(Action.PLAY, name="viewers-4412"))
        self.assertEqual(allow.name, "alice")
        self.assertIsInstance(decide(self.keys, request(Action.PLAY, name="alice")), Deny)
        self.assertIsInstance(decide(self.keys, request(Action.PLAY, name="alice-key")), Deny)
        self.assertIs(decide(self.keys, request(Action.PLAY, name="anything", app="show")), ALLOW)
        self.assertIs(decide(self.keys, request(Action.CONNECT)), ALLOW)

    def test_errors_name_the_line(self) -> None:
        cases = {
            "live\n": (1, "expected"),
            "live ok\nlive k2 record=maybe\n": (2, "unknown option 'record'"),
            "live k colour=red\n": (1, "unknown option 'colour'"),
            "live k publish play\nlive k2 name=../up\n": (2, "bad name="),
            "live k name=a?b\n": (1, "bad name="),
            "live a/../b\n": (1, "bad key"),
            "live k?x=1\n": (1, "bad key"),
            "../live k\n": (1, "bad application name"),
            "live k\n\n# c\nlive k record=no\n": (4, "the same publish key as line 1"),
        }
        for text, (line, message) in cases.items():
            with self.assertRaises(KeyFileError) as caught:
                KeyTable.parse(text, "keys.txt")
            self.assertEqual(caught.exception.line, line, text)
            self.assertIn(message, str(caught.exception), text)
            self.assertTrue(str(caught.exception).startswith(f"keys.txt:{line}: "))
        with self.assertRaises(KeyFileError) as caught:
            KeyTable.parse("live supersecret frobnicate=supersecret2\n")
        self.assertNotIn("supersecret", str(caught.exception))
        # The same key may be a publish key and a play key.
        self.assertEqual(len(KeyTable.parse("live k\nlive k play\n")), 2)

    def test_reload_adds_removes_and_reports(self) -> None:
        path = write(self.mktemp(), KEYS)
        keys = StreamKeys(KeyFile(path))
        write(path, KEYS.replace("live   bob-key              record=no\n", "") + "live dave-key\n")
        write(path, open(path).read().replace("name=alice\nlive   viewers", "name=alicia\nlive   viewers"))
        reloaded = keys.reload()
        self.assertIn("1 added, 1 removed, 1 changed, 4 keys in all", reloaded.summary)
        self.assertEqual(reloaded.revoked_streams, {"live/bob-key", "live/alice"})
        self.assertNotIn("dave-key", reloaded.summary)
        self.assertIsInstance(decide(keys, request(name="dave-key")), Allow, "a new key works at once")
        self.assertIsInstance(decide(keys, request(name="bob-key")), Deny, "a removed key is refused")
        self.assertEqual(decide(keys, request(name="alice-key")).name, "alicia")

    def test_bad_reload_keeps_the_old_table(self) -> None:
        path = write(self.mktemp(), KEYS)
        key_file = KeyFile(path)
        keys = StreamKeys(key_file)
        before = key_file.table
        write(path, KEYS + "live new-key\nlive broken record=perhaps\n")
        with self.assertRaises(KeyFileError) as caught:
            keys.reload()
        self.assertEqual(caught.exception.line, 7)
        self.assertIs(key_file.table, before)
        self.assertIsInstance(decide(keys, request(name="bob-key")), Allow)
        self.assertIsInstance(decide(keys, request(name="new-key")), Deny)
        os.remove(path)
        with self.assertRaises(KeyFileError) as caught:
            keys.reload()
        self.assertEqual(caught.exception.line, 0)
        self.assertIsInstance(decide(keys, request(name="bob-key")), Allow)
        self.assertIn("4 keys", keys.describe())
        self.assertNotIn("bob-key", keys.describe())


# -- address rules ------------------------------------------------------------------------------


class AddressRuleTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            [str(r) for r in parse_rule("publish:10.0.0.0/8", True)], ["allow publish:10.0.0.0/8"]
        )
        self.assertEqual(
            [str(r) for r in parse_rule("play:2001:db8::/32", False)], ["deny play:2001:db8::/32"]
        )
        self.assertEqual(str(parse_rule("connect:192.0.2.7", True)[0].network), "192.0.2.7/32")
        self.assertEqual({r.action for r in parse_rule("all:::1", False)}, set(Action))
        for bad in ("10.0.0.0/8", "record:10.0.0.0/8", "publish:10.0.0.1/8", "publish:nonsense", "play:"):
            self.assertRaises(RuleError, parse_rule, bad, True)

    def check(self, rules: AddressRules, addr: str, action: Action = Action.PUBLISH) -> bool:
        return isinstance(decide(rules, request(action, addr=addr)), Allow)

    def test_allow_list(self) -> None:
        rules = AddressRules.from_options(allow=["publish:10.0.0.0/8", "publish:2001:db8::/32"])
        self.assertTrue(self.check(rules, "10.1.2.3"))
        self.assertTrue(self.check(rules, "2001:db8::5"))
        self.assertTrue(self.check(rules, "::ffff:10.9.9.9"), "IPv4-mapped IPv6 is the IPv4 address")
        self.assertFalse(self.check(rules, "fe80::1%eth0"))
        self.assertFalse(self.check(rules, "192.0.2.1"))
        self.assertFalse(self.check(rules, ""), "no address: in no allow list")
        self.assertFalse(self.check(rules, "garbage"))
        self.assertTrue(self.check(rules, "192.0.2.1", Action.PLAY), "play has no rule")
        self.assertTrue(self.check(rules, "192.0.2.1", Action.CONNECT))
        refused = decide(rules, request(addr="192.0.2.1"))
        self.assertEqual((refused.reason, refused.authoriser), ("address not allowed", "address"))

    def test_deny_wins_over_allow(self) -> None:
        rules = AddressRules.from_options(
            allow=["all:10.0.0.0/8"], deny=["publish:10.0.0.66/32", "all:10.6.0.0/16", "play:::1"]
        )
        self.assertTrue(self.check(rules, "10.0.0.65"))
        self.assertFalse(self.check(rules, "10.0.0.66"))
        self.assertTrue(self.check(rules, "10.0.0.66", Action.PLAY))
        self.assertFalse(self.check(rules, "10.6.1.1", Action.CONNECT))
        only_deny = AddressRules.from_options(deny=["play:::1", "play:127.0.0.0/8"])
        self.assertFalse(self.check(only_deny, "::1", Action.PLAY))
        self.assertFalse(self.check(only_deny, "127.0.0.1", Action.PLAY))
        self.assertTrue(self.check(only_deny, "::2", Action.PLAY))
        self.assertTrue(self.check(only_deny, "", Action.PLAY), "no address matches no deny network")
        self.assertIn("deny play:::1/128", only_deny.describe())


# -- failure throttling --------------------------------------------------------------------------


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def throttle(self, **kw: Any) -> FailureThrottle:
        kw.setdefault("max_failures", 3)
        kw.setdefault("window", 10.0)
        kw.setdefault("lockout", 60.0)
        return FailureThrottle(self.clock, **kw)

    def test_delay_range_and_injected_random(self) -> None:
        calls: list[tuple[float, float]] = []

        def uniform(a: float, b: float) -> float:
            calls.append((a, b))
            return b + 5  # a broken random source cannot push the delay out of range

        self.assertEqual(self.throttle(delay=(0.2, 0.9), uniform=uniform).refusal_delay(), 0.9)
        self.assertEqual(calls, [(0.2, 0.9)])
        default = self.throttle()
        delays = [default.refusal_delay() for _ in range(2000)]
        self.assertTrue(all(0.5 <= d <= 1.5 for d in delays))
        self.assertGreater(max(delays) - min(delays), 0.5, "the delay varies")
        self.assertEqual(self.throttle(delay=(0.0, 0.0)).refusal_delay(), 0.0)
        self.assertRaises(ValueError, self.throttle, delay=(2.0, 1.0))
        self.assertRaises(ValueError, self.throttle, max_failures=0)

    def test_lockout_after_n_failures_in_the_window(self) -> None:
        throttle = self.throttle()
        self.assertFalse(throttle.record_failure("192.0.2.1"))
        self.assertFalse(throttle.record_failure("192.0.2.1"))
        self.assertEqual(throttle.locked_for("192.0.2.1"), 0.0)
        self.assertTrue(throttle.record_failure("192.0.2.1"))
        self.assertEqual(throttle.locked_for("192.0.2.1"), 60.0)
        self.assertEqual(throttle.locked_for("192.0.2.2"), 0.0, "per address")
        self.clock.advance(59)
        self.assertEqual(throttle.locked_for("192.0.2.1"), 1.0)
        self.clock.advance(1)
        self.assertEqual(throttle.locked_for("192.0.2.1"), 0.0, "the lockout ends")
        self.assertFalse(throttle.record_failure("192.0.2.1"), "and the count started again")
        self.assertEqual(throttle.lockouts, 1)

    def test_failures_outside_the_window_do_not_count(self) -> None:
        throttle = self.throttle()
        for _ in range(10):
            self.assertFalse(throttle.record_failure("192.0.2.1"))
            self.clock.advance(5.01)
        self.assertEqual(throttle.locked_for("192.0.2.1"), 0.0)

    def test_success_clears_the_count(self) -> None:
        throttle = self.throttle()
        throttle.record_failure("192.0.2.1")
        throttle.record_failure("192.0.2.1")
        throttle.record_success("192.0.2.1")
        self.assertFalse(throttle.record_failure("192.0.2.1"))
        self.assertFalse(throttle.record_failure("192.0.2.1"))

    def test_ipv6_is_tracked_by_its_64(self) -> None:
        self.assertEqual(address_bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(address_bucket("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_bucket("x" * 500), "x" * 64)
        throttle = self.throttle()
        throttle.record_failure("2001:db8:1:2::1")
        throttle.record_failure("2001:db8:1:2::2")
        self.assertTrue(throttle.record_failure("2001:db8:1:2:ffff::3"))
        self.assertGreater(throttle.locked_for("2001:db8:1:2::99"), 0)
        self.assertEqual(throttle.locked_for("2001:db8:1:3::1"), 0.0)

    def test_memory_is_bounded_with_100k_addresses(self) -> None:
        throttle = self.throttle(max_addresses=1000, max_failures=2)
        start = time.perf_counter()
        for i in range(100_000):
            addr = str(ipaddress.IPv4Address(0x0A000000 + i))
            throttle.record_failure(addr)
            if i % 2:
                throttle.record_failure(addr)  # locks every other address
        self.assertLess(time.perf_counter() - start, 20)
        self.assertLessEqual(throttle.tracked, 2000)
        self.assertLessEqual(len(throttle._failures), 1000)
        self.assertLessEqual(len(throttle._locked), 1000)
        # The most recent lockout is still in force; the oldest were forgotten.
        self.assertGreater(throttle.locked_for(str(ipaddress.IPv4Address(0x0A000000 + 99_999))), 0)
        self.assertEqual(throttle.locked_for("10.0.0.1"), 0.0)

    def test_expired_lockouts_are_dropped(self) -> None:
        throttle = self.throttle(max_failures=1)
        for i in range(100):
            throttle.record_failure(f"192.0.2.{i}")
        self.assertEqual(throttle.tracked, 100)
        self.clock.advance(61)
        throttle.locked_for("198.51.100.1")
        self.assertEqual(throttle.tracked, 0)


# -- the chain -----------------------------------------------------------------------------------


class Fixed(Authoriser):
    def __init__(self, name: str, decision: Any) -> None:
        self.name = name
        self.decision = decision
        self.asked: list[Request] = []

    def check(self, request: Request) -> Any:
        self.asked.append(request)
        if isinstance(self.decision, Exception):
            raise self.decision
        return self.decision


class ChainTests(SynchronousTestCase):
    def test_all_allow_merges(self) -> None:
        counters = AccessCounters()
        a = Fixed("a", Allow(name="renamed", record=True, expires=200.0))
        b = Fixed("b", Allow(record=False, expires=100.0, detail="why"))
        c = Fixed("c", Allow(name="final"))
        decision = decide(Chain([a, b, c], counters), request())
        self.assertEqual(
            decision, Allow(name="final", record=False, expires=100.0, authoriser="a,b,c", detail="why")
        )
        self.assertEqual(counters.decisions[("publish", "allow", "b")], 1)
        self.assertTrue(a.asked[0] is b.asked[0] is c.asked[0], "each sees the client's own request")

    def test_first_deny_stops(self) -> None:
        counters = AccessCounters()
        a, b, c = Fixed("a", ALLOW), Fixed("b", Deny("no")), Fixed("c", ALLOW)
        decision = decide(Chain([a, b, c], counters), request(Action.PLAY))
        self.assertEqual(decision, Deny("no", "b"))
        self.assertEqual(c.asked, [])
        self.assertEqual(counters.decisions, {("play", "allow", "a"): 1, ("play", "deny", "b"): 1})

    def test_empty_chain_allows(self) -> None:
        self.assertEqual(decide(Chain([]), request()), Allow())
        self.assertEqual(Chain([]).describe(), "open (no authorisers)")

    def test_a_failing_authoriser_denies(self) -> None:
        decision = decide(Chain([Fixed("buggy", ZeroDivisionError("x")), Fixed("c", ALLOW)]), request())
        self.assertEqual((decision.reason, decision.authoriser), ("authorisation failed", "buggy"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        decision = decide(Chain([Fixed("odd", "yes")]), request())
        self.assertEqual(decision.reason, "authorisation failed")

    def test_asynchronous_authorisers(self) -> None:
        pending: Deferred[Any] = Deferred()

        class Later(Authoriser):
            name = "later"

            def publish(self, request: Request) -> Deferred[Any]:
                return pending

        results: list[Any] = []
        Chain([Later(), Fixed("b", Deny("no"))]).authorise(request()).addBoth(results.append)
        self.assertEqual(results, [])
        pending.callback(Allow(name="x"))
        self.assertEqual(results, [Deny("no", "b")])

    def test_merge(self) -> None:
        self.assertEqual(merge([]), Allow())
        self.assertEqual(merge([Allow(record=True), Allow()]).record, True)
        self.assertEqual(merge([Allow(record=False), Allow(record=True)]).record, False)


# -- the policy ----------------------------------------------------------------------------------


class PolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(5000)
        self.now = float(NOW)
        self.signed = SignedURLs(SecretsTable({"live": [SECRET]}), now=lambda: self.now)

    def policy(self, authorisers: list[Authoriser] | None = None, **kw: Any) -> AccessPolicy:
        kw.setdefault("throttle", FailureThrottle(self.clock, max_failures=3, delay=(1.0, 1.0)))
        return AccessPolicy(
            [self.signed] if authorisers is None else authorisers,
            clock=self.clock,
            now=lambda: self.now,
            **kw,
        )

    def outcome(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        return results[0] if results else None

    def test_open_policy_allows_at_once(self) -> None:
        policy = AccessPolicy([], clock=self.clock)
        self.assertFalse(policy.enabled)
        with capturedLogs() as events:
            for action in Action:
                self.assertIs(self.outcome(policy.authorise(request(action))), ALLOW)
        self.assertEqual(events, [])
        self.assertEqual(policy.counters.outcomes, {})
        self.assertEqual(policy.describe(), ["open: no authoriser, anyone may connect, publish and play"])

    def test_allowed(self) -> None:
        policy = self.policy()
        query = signed_query(SECRET, "publish", "live", "cam", NOW + 60)
        with capturedLogs() as events:
            allow = self.outcome(policy.publish(request(query=query)))
        self.assertEqual(allow.expires, NOW + 60)
        self.assertEqual(policy.counters.outcomes, {("publish", "allow"): 1})
        (event,) = events
        self.assertEqual(event["log_format"], "Access decision")
        self.assertEqual(
            {k: event[k] for k in ("action", "stream_key", "addr", "conn_id", "authoriser", "outcome")},
            {
                "action": "publish",
                "stream_key": "live/cam",
                "addr": "192.0.2.10",
                "conn_id": "c1",
                "authoriser": "signed-url",
                "outcome": "allow",
            },
        )
        self.assertIn("latency_ms", event)
        self.assertNotIn(query.partition("sig=")[2], repr(event), "the signature is not logged")

    def test_refusals_carry_the_status_code_after_the_delay(self) -> None:
        policy = self.policy()
        expected = {Action.CONNECT: ConnectDenied, Action.PUBLISH: PublishDenied, Action.PLAY: PlayDenied}
        codes = {
            Action.CONNECT: "NetConnection.Connect.Rejected",
            Action.PUBLISH: "NetStream.Publish.BadName",
            Action.PLAY: "NetStream.Play.Failed",
        }
        refuse_connect = Fixed("gate", Deny("closed for maintenance", detail="internal note"))
        for action, cls in expected.items():
            authorisers = [refuse_connect] if action is Action.CONNECT else [self.signed]
            policy = self.policy(authorisers, throttle=FailureThrottle(self.clock, delay=(1.0, 1.0)))
            results: list[Any] = []
            with capturedLogs() as events:
                policy.authorise(request(action, addr=f"192.0.2.{len(action)}")).addBoth(results.append)
                self.assertEqual(results, [], "no answer before the delay")
                self.clock.advance(1.0)
            (failure,) = results
            self.assertIsInstance(failure.value, cls)
            error: AccessDenied = failure.value
            self.assertEqual(
                (error.status_code, error.fatal, error.action), (codes[action], True, str(action))
            )
            self.assertNotIn("internal note", error.description)
            self.assertEqual(events[0]["outcome"], "deny")
            self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertEqual(error.description, "Play refused: missing signature")
        self.assertEqual(error.reason, "missing signature")

    def test_lockout_refuses_connect_at_once(self) -> None:
        policy = self.policy([self.signed, Fixed("gate", ALLOW)])
        for _ in range(3):
            d = policy.publish(request(query="sig=bad"))
            self.clock.advance(1.0)
            self.assertIsInstance(self.outcome(d).value, PublishDenied)
        failure = self.outcome(policy.connect(request(Action.CONNECT)))
        self.assertIsInstance(failure.value, ConnectDenied, "refused at connect, without the delay")
        self.assertEqual(failure.value.reason, LOCKED_OUT)
        self.assertEqual(policy.counters.decisions[("connect", "deny", "throttle")], 1)
        self.assertIsInstance(self.outcome(policy.connect(request(Action.CONNECT, addr="192.0.2.99"))), Allow)
        refusal = policy.counters.refusals[-1]
        self.assertEqual(
            (refusal.action, refusal.authoriser, refusal.reason), ("connect", "throttle", LOCKED_OUT)
        )
        self.clock.advance(300)
        self.assertIsInstance(self.outcome(policy.connect(request(Action.CONNECT))), Allow)

    def test_cancel_during_the_delay(self) -> None:
        d = self.policy().publish(request())
        d.cancel()
        self.assertTrue(self.outcome(d).check(CancelledError))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_while_an_authoriser_is_asked(self) -> None:
        asked: list[Deferred[Any]] = []

        class Slow(Authoriser):
            name = "slow"

            def play(self, request: Request) -> Deferred[Any]:
                asked.append(Deferred())
                return asked[-1]

        policy = self.policy([Slow(), Fixed("after", ALLOW)])
        with capturedLogs() as events:
            d = policy.play(request(Action.PLAY))
            d.cancel()
        self.assertTrue(self.outcome(d).check(CancelledError))
        self.assertTrue(asked[0].called, "the authoriser's Deferred was cancelled")
        self.assertEqual((events, policy.counters.outcomes, self.clock.getDelayedCalls()), ([], {}, []))

    def test_expiry(self) -> None:
        allow = Allow(expires=NOW + 60.0)
        self.assertEqual(self.policy().expiry_delay(allow), 60.0)
        self.assertEqual(self.policy(expiry_grace=30.0).expiry_delay(allow), 90.0)
        self.assertIsNone(self.policy(expiry_grace=None).expiry_delay(allow))
        self.assertIsNone(self.policy().expiry_delay(Allow()))
        self.now = NOW + 100.0
        self.assertEqual(self.policy().expiry_delay(allow), 0.0)
        self.now = float(NOW)
        ended: list[str] = []
        call = self.policy().schedule_expiry(allow, ended.append, "cam")
        self.assertIsNotNone(call)
        self.clock.advance(59.9)
        self.assertEqual(ended, [])
        self.clock.advance(0.1)
        self.assertEqual(ended, ["cam"])
        self.assertIsNone(self.policy().schedule_expiry(Allow(), ended.append))
        self.assertRaises(ValueError, self.policy, expiry_grace=-1.0)

    def test_reload_reports(self) -> None:
        keys_path = write(self.mktemp(), "live k1\n")
        secrets_path = write(self.mktemp(), f"live {SECRET.decode()}\n")
        policy = self.policy(
            [SignedURLs(SecretsFile(secrets_path)), StreamKeys(KeyFile(keys_path)), Fixed("x", ALLOW)]
        )
        write(keys_path, "live k2\n")
        write(secrets_path, "live short\n")
        with capturedLogs() as events:
            signed, keys = policy.reload()
        self.assertEqual((signed.authoriser, signed.ok), ("signed-url", False))
        self.assertIn(f"{secrets_path}:1:", signed.summary)
        self.assertNotIn("short", signed.summary.replace("shorter", ""))
        self.assertEqual((keys.authoriser, keys.ok, keys.revoked_streams), ("key-file", True, {"live/k1"}))
        self.assertEqual(sorted(e["log_level"].name for e in events), ["error", "info"])

    def test_describe_shows_no_secret(self) -> None:
        path = write(self.mktemp(), f"live {SECRET.decode()}\n")
        policy = self.policy(
            [AddressRules.from_options(deny=["all:10.0.0.0/8"]), SignedURLs(SecretsFile(path))]
        )
        text = "\n".join(policy.describe())
        self.assertIn("address (deny connect:10.0.0.0/8", text)
        self.assertIn("signed-url (play, publish; ", text)
        self.assertIn("expiry grace: 0 s", text)
        self.assertNotIn(SECRET.decode(), text)

    def test_descriptions_are_safe_for_clients(self) -> None:
        error = AccessDenied.for_action(
            "connect", "x authmod=adobe code=403 need auth ?reason=needauth\n" + "y" * 500
        )
        self.assertNotIn("authmod=", error.description)
        self.assertNotIn("code=403", error.description)
        self.assertNotIn("\n", error.description)
        self.assertLessEqual(len(error.description), MAX_DESCRIPTION)
        self.assertRaises(KeyError, AccessDenied.for_action, "record", "x")


class BuildPolicyTests(SynchronousTestCase):
    def test_nothing_configured_is_open(self) -> None:
        settings = AccessSettings()
        self.assertFalse(settings.enabled)
        policy = build_policy(settings, Clock())
        self.assertFalse(policy.enabled)
        self.assertIsNone(policy.throttle)

    def test_everything_in_order(self) -> None:
        secrets = write(self.mktemp(), f"live {SECRET.decode()}\n")
        keys = write(self.mktemp(), "live k1\n")
        settings = AccessSettings(
            secrets=secrets,
            keys=keys,
            callback="http://127.0.0.1:9/auth",
            failure_policy="open",
            allow=("publish:10.0.0.0/8",),
            expiry_grace=None,
        )
        self.assertTrue(settings.enabled)
        policy = build_policy(settings, Clock())
        names = [a.name for a in policy.chain.authorisers]
        self.assertEqual(names, ["address", "signed-url", "key-file", "callback"])
        self.assertIsNotNone(policy.throttle)
        self.assertIsNone(policy.expiry_grace)
        self.assertEqual(policy.chain.authorisers[-1].failure_policy, FailurePolicy.OPEN)

    def test_errors_are_typed(self) -> None:
        bad = write(self.mktemp(), "live short\n")
        self.assertRaises(SecretsFileError, build_policy, AccessSettings(secrets=bad), Clock())
        self.assertRaises(KeyFileError, build_policy, AccessSettings(keys=self.mktemp()), Clock())
        self.assertRaises(RuleError, build_policy, AccessSettings(deny=("everything",)), Clock())
        self.assertRaises(CallbackConfigError, build_policy, AccessSettings(callback="ftp://x/"), Clock())
        self.assertRaises(
            CallbackConfigError,
            build_policy,
            AccessSettings(callback="http://x/", failure_policy="maybe"),
            Clock(),
        )


# -- the HTTP callback, against a real twisted.web server ---------------------------------------------


class AuthResource(resource.Resource):
    """Answers each POST with ``answer(request_json)``: (code, body), or None to never answer."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answer: Any = lambda body: (200, b"")
        self.received: list[dict[str, Any]] = []
        self.headers: list[Any] = []
        self.arrived: list[Deferred[None]] = []
        self.hung: list[Any] = []

    def next_arrival(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.arrived.append(d)
        return d

    def render_POST(self, request: Any) -> Any:
        self.received.append(json.loads(request.content.read()))
        self.headers.append(request.requestHeaders)
        answer = self.answer(self.received[-1])
        if answer is None:
            self.hung.append(request)
        waiting, self.arrived = self.arrived, []
        for d in waiting:
            d.callback(None)
        if answer is None:
            return server.NOT_DONE_YET
        code, body = answer
        request.setResponseCode(code)
        if code in (301, 302):
            request.setHeader(b"Location", b"/elsewhere")
        if isinstance(body, list):  # chunked: no Content-Length
            for chunk in body:
                request.write(chunk)
            request.finish()
            return server.NOT_DONE_YET
        return body


class TrackingFactory(WrappingFactory):
    """Knows the server's open connections, and tells when they are all closed."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._idle: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def closed(self) -> Deferred[None]:
        for p in list(self.protocols):
            p.transport.abortConnection()
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d


class CallbackTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.resource = AuthResource()
        self.factory = TrackingFactory(server.Site(self.resource))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self._close)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/auth"
        self.clock = Clock()

    @inlineCallbacks
    def _close(self) -> Any:
        yield self.port.stopListening()
        yield self.factory.closed()

    def callback(self, **kw: Any) -> HTTPCallback:
        kw.setdefault("reactor", reactor)
        return HTTPCallback(kw.pop("url", self.url), **kw)

    def answer(self, code: int, body: Any = b"") -> None:
        self.resource.answer = lambda _: (
            code,
            body if not isinstance(body, dict) else json.dumps(body).encode(),
        )

    @inlineCallbacks
    def test_allow_posts_the_request_as_json(self) -> Any:
        req = Request(
            Action.PUBLISH, "live", "cam", "token=1", "192.0.2.10", "c7", "rtmp://h/live", "FMLE/3.0"
        )
        counters = AccessCounters()
        decision = yield self.callback(counters=counters).publish(req)
        self.assertEqual(decision, Allow(authoriser="callback", detail="HTTP 200"))
        self.assertEqual(
            self.resource.received,
            [
                {
                    "action": "publish",
                    "app": "live",
                    "name": "cam",
                    "query": "token=1",
                    "addr": "192.0.2.10",
                    "conn_id": "c7",
                    "tcUrl": "rtmp://h/live",
                    "flashVer": "FMLE/3.0",
                }
            ],
        )
        self.assertEqual(
            self.resource.headers[0].getRawHeaders(b"content-type"), [b"application/json; charset=UTF-8"]
        )
        self.assertEqual((counters.callback_results["allow"], counters.callback_latency.count), (1, 1))

    @inlineCallbacks
    def test_json_answers(self) -> Any:
        cb = self.callback()
        self.answer(200, {"allow": True, "name": "renamed", "record": False})
        self.assertEqual((yield cb.publish(request())), Allow("renamed", False, None, "callback", "HTTP 200"))
        self.answer(201, {"record": True, "extra": [1, 2]})
        self.assertEqual((yield cb.play(request(Action.PLAY))).record, True)
        self.answer(200, {"allow": False, "reason": "internal: user 42 banned"})
        decision = yield cb.publish(request())
        self.assertEqual((decision.reason, decision.authoriser), (REFUSED, "callback"))
        self.answer(200, {"name": "ignored"})
        self.assertIsNone((yield cb.connect(request(Action.CONNECT))).name, "connect has no stream to rename")

    @inlineCallbacks
    def test_other_statuses_deny(self) -> Any:
        cb = self.callback(failure_policy="open")
        for code in (403, 404, 302):
            self.answer(code, b"no")
            decision = yield cb.publish(request())
            self.assertEqual((decision.reason, decision.detail), (REFUSED, f"HTTP {code}"))
        self.assertEqual(len(self.resource.received), 3, "the redirect was not followed")

    @inlineCallbacks
    def test_server_errors_follow_the_failure_policy(self) -> Any:
        self.answer(500, b"Traceback: secret stuff")
        denied = yield self.callback().publish(request())
        self.assertEqual(denied.reason, UNAVAILABLE)
        self.assertIn("HTTP 500", denied.detail)
        allowed = yield self.callback(failure_policy=FailurePolicy.OPEN).publish(request())
        self.assertIsInstance(allowed, Allow)
        self.assertIn("failure policy open", allowed.detail)

    @inlineCallbacks
    def test_garbage_follows_the_failure_policy(self) -> Any:
        counters = AccessCounters()
        closed, opened = self.callback(counters=counters), self.callback(failure_policy="open")
        garbage = [
            b"not json",
            b"0",
            b"[true]",
            b'{"allow": "yes"}',
            b'{"allow": 1}',
            b'{"record": "no"}',
            b'{"name": 5}',
            b'{"name": "../../etc"}',
            b'{"name": "a?b=1"}',
            b"\xff\xfe",
            b"[" * 5000 + b"]" * 5000,
        ]
        for body in garbage:
            self.answer(200, body)
            self.assertEqual((yield closed.publish(request())).reason, UNAVAILABLE, body[:20])
            self.assertIsInstance((yield opened.publish(request())), Allow, body[:20])
        self.assertEqual(counters.callback_results["garbage"], len(garbage))

    @inlineCallbacks
    def test_oversized_bodies(self) -> Any:
        cb = self.callback(max_body=1024)
        self.answer(200, b" " * 1025)  # with a Content-Length
        decision = yield cb.publish(request())
        self.assertEqual(decision.reason, UNAVAILABLE)
        self.assertIn("1025-byte body", decision.detail)
        self.answer(200, [b" " * 1000, b" " * 1000, b"{}"])  # chunked
        decision = yield cb.publish(request())
        self.assertIn("body larger than 1024 bytes", decision.detail)
        self.answer(200, [b" " * 1000, b"{}"])
        self.assertIsInstance((yield cb.publish(request())), Allow)

    @inlineCallbacks
    def test_down(self) -> Any:
        yield self.port.stopListening()
        counters = AccessCounters()
        closed = yield self.callback(counters=counters).publish(request())
        self.assertEqual((closed.reason, closed.authoriser), (UNAVAILABLE, "callback"))
        self.assertEqual(counters.callback_results["error"], 1)
        self.assertIsInstance((yield self.callback(failure_policy="open").publish(request())), Allow)

    @inlineCallbacks
    def test_never_answers_times_out_on_the_clock(self) -> Any:
        self.resource.answer = lambda _: None
        counters = AccessCounters()
        cb = self.callback(clock=self.clock, timeout=5.0, counters=counters)
        arrived = self.resource.next_arrival()
        results: list[Any] = []
        cb.publish(request()).addBoth(results.append)
        yield arrived
        lost = self.resource.hung[0].notifyFinish()
        self.clock.advance(4.9)
        self.assertEqual(results, [])
        self.clock.advance(0.1)
        self.assertEqual(results[0].reason, UNAVAILABLE)
        self.assertIn("no answer within 5 s", results[0].detail)
        self.assertEqual(counters.callback_results["timeout"], 1)
        self.assertAlmostEqual(counters.callback_latency.recent[-1], 5.0)
        yield self.assertFailure(lost, Exception)  # the server saw the connection go

    @inlineCallbacks
    def test_never_answers_with_a_short_real_timeout(self) -> Any:
        self.resource.answer = lambda _: None
        decision = yield self.callback(timeout=0.2, failure_policy="open").publish(request())
        self.assertIsInstance(decision, Allow)
        self.assertIn("callback timeout", decision.detail)

    @inlineCallbacks
    def test_caller_cancels(self) -> Any:
        self.resource.answer = lambda _: None
        counters = AccessCounters()
        cb = self.callback(clock=self.clock, counters=counters)
        arrived = self.resource.next_arrival()
        d = cb.publish(request())
        yield arrived
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(sum(counters.callback_results.values()), 0)

    @inlineCallbacks
    def test_cache(self) -> Any:
        counters = AccessCounters()
        cb = self.callback(clock=self.clock, cache_ttl=30.0, cache_size=2, counters=counters)
        self.answer(200, {"name": "renamed"})
        first = yield cb.publish(request(query="t=1"))
        again = yield cb.publish(request(query="t=1", addr="198.51.100.1"))
        self.assertEqual((first.name, again.name), ("renamed", "renamed"))
        self.assertEqual((len(self.resource.received), counters.callback_results["cached"]), (1, 1))
        yield cb.publish(request(query="t=2"))
        yield cb.play(request(Action.PLAY, query="t=1"))
        self.assertEqual(len(self.resource.received), 3, "query and action are part of the key")
        yield cb.publish(request(query="t=1"))
        self.assertEqual(len(self.resource.received), 4, "the first entry was evicted (size 2)")
        self.clock.advance(30)
        yield cb.publish(request(query="t=1"))
        self.assertEqual(len(self.resource.received), 5, "expired")
        self.answer(403)
        denied = yield cb.publish(request(name="other"))
        self.assertEqual((yield cb.publish(request(name="other"))), denied, "refusals are cached too")
        self.assertEqual(len(self.resource.received), 6)
        self.answer(500)
        yield cb.publish(request(name="third"))
        yield cb.publish(request(name="third"))
        self.assertEqual(len(self.resource.received), 8, "failures are never cached")
        self.assertIn("cache 30 s, 2/2", cb.describe())

    @inlineCallbacks
    def test_refusal_leaks_nothing_of_the_service(self) -> Any:
        self.answer(500, b"db password hunter2")
        url = self.url.replace("http://", "http://user:pw@") + "?token=t0psecret"
        cb = self.callback(url=url)
        policy = AccessPolicy([cb], clock=self.clock)
        error = yield self.assertFailure(policy.publish(request()), PublishDenied)
        text = error.description
        self.assertEqual(text, f"Publish refused: {UNAVAILABLE}")
        for leak in ("127.0.0.1", "500", "hunter2", "t0psecret", "pw", "auth"):
            self.assertNotIn(leak, text.replace("authorisation", ""))
        self.assertEqual(
            self.resource.headers[-1].getRawHeaders(b"authorization"),
            [b"Basic " + base64.b64encode(b"user:pw")],
        )
        self.assertNotIn("t0psecret", cb.describe())
        self.assertNotIn("user:pw", cb.describe())

    def test_configuration_errors(self) -> None:
        for kw in (
            {"url": "ftp://127.0.0.1/"},
            {"url": "http://"},
            {"url": "not a url"},
            {"timeout": 0},
            {"cache_size": 0},
            {"failure_policy": "maybe"},
        ):
            self.assertRaises(CallbackConfigError, self.callback, **kw)

    @inlineCallbacks
    def test_unasked_actions_are_allowed(self) -> Any:
        cb = self.callback(actions=[Action.PUBLISH])
        self.assertIs((yield cb.play(request(Action.PLAY))), ALLOW)
        self.assertEqual(self.resource.received, [])


# -- the package's place in the house -------------------------------------------------------------


class PackageRulesTests(SynchronousTestCase):
    def test_access_imports_only_core_relay_names_and_itself(self) -> None:
        """It sees clients as Requests: nothing of the server, recording or admin."""
        allowed = ("rtmpd.access", "rtmpd.core", "rtmpd.relay.names")
        for path in sorted((ROOT / "rtmpd" / "access").glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    if name.startswith("rtmpd"):
                        self.assertTrue(name.startswith(allowed), f"{path.name} imports {name}")
