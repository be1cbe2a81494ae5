"""Tests of rtmpd.core.handshake: simple and digest handshakes, both ends.

The digest checks here recompute everything with ``hmac`` and keys typed in
independently of the module (from nginx-rtmp's ngx_rtmp_handshake.c), so a
mistake shared by the module's own helpers cannot hide.
"""

from __future__ import annotations

import hashlib
import hmac
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from rtmpd.core.handshake import (
    GENUINE_FMS_KEY,
    GENUINE_FP_KEY,
    HANDSHAKE_SIZE,
    RTMP_VERSION,
    ClientHandshake,
    ServerHandshake,
    digest_offset,
    find_digest,
    make_digest,
)

_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + _TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _TAIL


def seeded(seed: int):
    """A deterministic stand-in for os.urandom."""
    return random.Random(seed).randbytes


def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hand_offset(block: bytes, scheme: int) -> int:
    # librtmp GetDigestOffset2 (scheme 0) and GetDigestOffset1 (scheme 1).
    if scheme == 0:
        return (block[8] + block[9] + block[10] + block[11]) % 728 + 12
    return (block[772] + block[773] + block[774] + block[775]) % 728 + 776


def hand_digest_ok(block: bytes, scheme: int, key: bytes) -> bool:
    off = hand_offset(block, scheme)
    return hmac256(key, block[:off] + block[off + 32 :]) == block[off : off + 32]


def hand_signed_c1(seed: int, scheme: int, version: bytes = bytes((9, 0, 124, 2))) -> bytes:
    """A C1 signed like ffmpeg signs it, built without the module."""
    rng = random.Random(seed)
    c1 = bytearray(b"\x00\x00\x00\x00" + version + rng.randbytes(1528))
    off = hand_offset(bytes(c1), scheme)
    c1[off : off + 32] = hmac256(FP_KEY[:30], bytes(c1[:off] + c1[off + 32 :]))
    return bytes(c1)


def simple_c1(seed: int, epoch: int = 0) -> bytes:
    return epoch.to_bytes(4, "big") + b"\x00" * 4 + random.Random(seed).randbytes(1528)


class KeysTests(SynchronousTestCase):
    def test_keys_match_independent_copy(self) -> None:
        self.assertEqual(GENUINE_FP_KEY, FP_KEY)
        self.assertEqual(len(GENUINE_FP_KEY), 62)
        self.assertEqual(GENUINE_FMS_KEY, FMS_KEY)
        self.assertEqual(len(GENUINE_FMS_KEY), 68)

    @given(st.binary(min_size=HANDSHAKE_SIZE, max_size=HANDSHAKE_SIZE), st.sampled_from([0, 1]))
    @settings(max_examples=100)
    def test_digest_offset_matches_librtmp(self, block: bytes, scheme: int) -> None:
        offset = digest_offset(block, scheme)
        self.assertEqual(offset, hand_offset(block, scheme))
        # The digest stays inside its half of the block.
        low, high = (12, 771) if scheme == 0 else (776, 1535)
        self.assertTrue(low <= offset and offset + 32 <= high + 1)

    def test_make_digest_is_hmac_sha256(self) -> None:
        self.assertEqual(make_digest(b"abc", b"key"), hmac256(b"key", b"abc"))

    def test_find_digest_on_hand_signed_c1(self) -> None:
        for scheme in (0, 1):
            c1 = hand_signed_c1(7, scheme)
            self.assertEqual(find_digest(c1, FP_KEY[:30]), (scheme, hand_offset(c1, scheme)))
            self.assertIsNone(find_digest(c1, FMS_KEY[:36]))

    def test_helpers_refuse_wrong_sizes(self) -> None:
        self.assertRaises(LocalProtocolError, digest_offset, b"\x00" * 100, 0)
        self.assertRaises(LocalProtocolError, digest_offset, b"\x00" * HANDSHAKE_SIZE, 2)
        self.assertRaises(LocalProtocolError, ClientHandshake, scheme=5)


class SimpleHandshakeTests(SynchronousTestCase):
    def test_golden(self) -> None:
        c1 = simple_c1(1, epoch=77)
        server = ServerHandshake(epoch=0x01020304, random_bytes=seeded(2))
        out = server.receive(bytes((3,)) + c1)
        self.assertEqual(len(out), 1 + 2 * HANDSHAKE_SIZE)
        s0, s1, s2 = out[0], out[1:1537], out[1537:]
        self.assertEqual(s0, 0x03)
        self.assertEqual(s1[:4], b"\x01\x02\x03\x04")
        self.assertEqual(s1[4:8], b"\x00\x00\x00\x00")
        self.assertEqual(s1[8:], random.Random(2).randbytes(1528))
        self.assertEqual(s2, c1)  # byte-exact echo, as librtmp checks
        self.assertIsNone(server.digest_scheme)
        self.assertEqual(server.client_version, 0)
        self.assertEqual(server.client_epoch, 77)
        self.assertFalse(server.done)

        self.assertEqual(server.receive(s1), b"")
        self.assertTrue(server.done)
        self.assertTrue(server.c2_valid)
        self.assertEqual(server.leftover, b"")

    def test_c2_with_own_time2_is_valid_and_wrong_c2_is_not_an_error(self) -> None:
        server = ServerHandshake(random_bytes=seeded(3))
        s1 = server.receive(b"\x03" + simple_c1(4))[1:1537]
        ok = ServerHandshake(random_bytes=seeded(3))
        ok.receive(b"\x03" + simple_c1(4))
        ok.receive(s1[:4] + b"\x00\x00\x00\x09" + s1[8:])
        self.assertTrue(ok.c2_valid)

        server.receive(b"\xaa" * HANDSHAKE_SIZE)
        self.assertTrue(server.done)
        self.assertFalse(server.c2_valid)

    def test_epoch_wraps_at_32_bits(self) -> None:
        out = ServerHandshake(epoch=2**32 + 5, random_bytes=seeded(0)).receive(b"\x03" + simple_c1(0))
        self.assertEqual(out[1:5], b"\x00\x00\x00\x05")

    def test_client_and_server_simple(self) -> None:
        client = ClientHandshake(epoch=9, random_bytes=seeded(5))
        server = ServerHandshake(epoch=11, random_bytes=seeded(6))
        c0c1 = client.initial()
        self.assertEqual(c0c1[0], 3)
        self.assertEqual(c0c1[1:9], b"\x00\x00\x00\x09\x00\x00\x00\x00")
        s = server.receive(c0c1)
        c2 = client.receive(s)
        self.assertEqual(c2, s[1:1537])
        self.assertTrue(client.done)
        self.assertIsNone(client.server_digest_valid)
        self.assertEqual(server.receive(c2), b"")
        self.assertTrue(server.done)
        self.assertTrue(server.c2_valid)

    def test_nonzero_version_without_digest_falls_back_to_simple(self) -> None:
        c1 = b"\x00\x00\x00\x00\x09\x00\x7c\x02" + random.Random(8).randbytes(1528)
        server = ServerHandshake(random_bytes=seeded(9))
        out = server.receive(b"\x03" + c1)
        self.assertIsNone(server.digest_scheme)
        self.assertEqual(server.client_version, 0x09007C02)
        self.assertEqual(out[5:9], b"\x00\x00\x00\x00")
        self.assertEqual(out[1537:], c1)

    def test_digest_client_accepts_simple_server(self) -> None:
        client = ClientHandshake(digest=True, random_bytes=seeded(10))
        c1 = client.initial()[1:]
        s1 = b"\x00" * 8 + random.Random(11).randbytes(1528)
        c2 = client.receive(b"\x03" + s1 + c1)
        self.assertEqual(c2, s1)
        self.assertIs(client.server_digest_valid, False)
        self.assertEqual(client.server_version, 0)


class DigestHandshakeTests(SynchronousTestCase):
    def run_digest(self, scheme: int) -> None:
        client = ClientHandshake(epoch=5, digest=True, scheme=scheme, random_bytes=seeded(20 + scheme))
        server = ServerHandshake(epoch=1000, random_bytes=seeded(30 + scheme))
        c0c1 = client.initial()
        c1 = c0c1[1:]
        # Our C1 looks like a Flash Player's: nonzero version, valid digest at the chosen scheme.
        self.assertNotEqual(c1[4:8], b"\x00\x00\x00\x00")
        self.assertTrue(hand_digest_ok(c1, scheme, FP_KEY[:30]))
        c1_off = hand_offset(c1, scheme)
        c1_digest = c1[c1_off : c1_off + 32]

        out = server.receive(c0c1)
        self.assertEqual(server.digest_scheme, scheme)
        s1, s2 = out[1:1537], out[1537:]
        self.assertEqual(out[0], 3)
        self.assertEqual(s1[:4], (1000).to_bytes(4, "big"))
        self.assertGreaterEqual(s1[4], 3)  # ffmpeg only checks S1's digest when this byte >= 3
        self.assertTrue(hand_digest_ok(s1, scheme, FMS_KEY[:36]))
        self.assertEqual(s2[-32:], hmac256(hmac256(FMS_KEY, c1_digest), s2[:1504]))

        c2 = client.receive(out)
        self.assertTrue(client.done)
        self.assertIs(client.server_digest_valid, True)
        s1_off = hand_offset(s1, scheme)
        self.assertEqual(c2[-32:], hmac256(hmac256(FP_KEY, s1[s1_off : s1_off + 32]), c2[:1504]))

        self.assertEqual(server.receive(c2), b"")
        self.assertTrue(server.done)
        self.assertIs(server.c2_valid, True)

    def test_scheme_0(self) -> None:
        self.run_digest(0)

    def test_scheme_1(self) -> None:
        self.run_digest(1)

    def test_hand_signed_c1_is_recognised(self) -> None:
        for scheme in (0, 1):
            c1 = hand_signed_c1(40 + scheme, scheme)
            server = ServerHandshake(random_bytes=seeded(50))
            out = server.receive(b"\x03" + c1)
            self.assertEqual(server.digest_scheme, scheme)
            self.assertEqual(server.client_version, 0x09007C02)
            off = hand_offset(c1, scheme)
            s2 = out[1537:]
            self.assertEqual(s2[-32:], hmac256(hmac256(FMS_KEY, c1[off : off + 32]), s2[:1504]))
            self.assertTrue(hand_digest_ok(out[1:1537], scheme, FMS_KEY[:36]))

    def test_client_notices_forged_s2(self) -> None:
        client = ClientHandshake(digest=True, random_bytes=seeded(60))
        out = ServerHandshake(random_bytes=seeded(61)).receive(client.initial())
        forged = out[:-1] + bytes((out[-1] ^ 1,))
        client.receive(forged)
        self.assertIs(client.server_digest_valid, False)

    def test_s1_echo_as_c2_in_digest_mode_is_valid(self) -> None:
        # ffmpeg does this when it publishes (checked against ffmpeg 5.1).
        server = ServerHandshake(random_bytes=seeded(64))
        out = server.receive(ClientHandshake(digest=True, random_bytes=seeded(65)).initial())
        self.assertEqual(server.digest_scheme, 0)
        server.receive(out[1:1537])
        self.assertIs(server.c2_valid, True)

    def test_wrong_c2_in_digest_mode_is_only_flagged(self) -> None:
        client = ClientHandshake(digest=True, random_bytes=seeded(62))
        server = ServerHandshake(random_bytes=seeded(63))
        server.receive(client.initial())
        server.receive(b"\x00" * HANDSHAKE_SIZE)
        self.assertTrue(server.done)
        self.assertIs(server.c2_valid, False)


class FeedingTests(SynchronousTestCase):
    def feed_bytewise(self, side, data: bytes) -> bytes:
        return b"".join(side.receive(data[i : i + 1]) for i in range(len(data)))

    def test_server_byte_at_a_time_is_identical(self) -> None:
        for digest in (False, True):
            c0c1 = ClientHandshake(digest=digest, random_bytes=seeded(70)).initial()
            whole = ServerHandshake(epoch=3, random_bytes=seeded(71))
            split = ServerHandshake(epoch=3, random_bytes=seeded(71))
            expected = whole.receive(c0c1)
            self.assertEqual(len(expected), 3073)
            self.assertEqual(self.feed_bytewise(split, c0c1), expected)
            c2 = expected[1:1537]
            self.assertEqual(self.feed_bytewise(split, c2), b"")
            self.assertTrue(split.done)

    def test_client_byte_at_a_time_is_identical(self) -> None:
        for digest in (False, True):
            answer = ServerHandshake(random_bytes=seeded(72)).receive(
                ClientHandshake(digest=digest, random_bytes=seeded(73)).initial()
            )
            whole = ClientHandshake(digest=digest, random_bytes=seeded(73))
            split = ClientHandshake(digest=digest, random_bytes=seeded(73))
            whole.initial()
            split.initial()
            expected = whole.receive(answer)
            self.assertEqual(len(expected), HANDSHAKE_SIZE)
            self.assertEqual(self.feed_bytewise(split, answer), expected)
            self.assertTrue(split.done)

    def test_leftover_after_c2(self) -> None:
        client = ClientHandshake(random_bytes=seeded(74))
        server = ServerHandshake(random_bytes=seeded(75))
        c2 = client.receive(server.receive(client.initial()))
        self.assertEqual(server.receive(c2 + b"\x02chunk-bytes"), b"")
        self.assertTrue(server.done)
        self.assertEqual(server.leftover, b"\x02chunk-bytes")

    def test_everything_in_one_call(self) -> None:
        c0c1 = b"\x03" + simple_c1(1)
        probe = ServerHandshake(random_bytes=seeded(76)).receive(c0c1)
        server = ServerHandshake(random_bytes=seeded(76))
        out = server.receive(c0c1 + probe[1:1537] + b"tail")
        self.assertEqual(out, probe)
        self.assertTrue(server.done)
        self.assertTrue(server.c2_valid)
        self.assertEqual(server.leftover, b"tail")

    def test_client_leftover_after_s2(self) -> None:
        client = ClientHandshake(random_bytes=seeded(77))
        answer = ServerHandshake(random_bytes=seeded(78)).receive(client.initial())
        client.receive(answer + b"\x02\x00")
        self.assertEqual(client.leftover, b"\x02\x00")

    def test_feeding_after_done_is_a_local_error(self) -> None:
        client = ClientHandshake(random_bytes=seeded(79))
        server = ServerHandshake(random_bytes=seeded(80))
        server.receive(client.receive(server.receive(client.initial())))
        self.assertTrue(server.done)
        self.assertRaises(LocalProtocolError, server.receive, b"x")
        self.assertRaises(LocalProtocolError, client.receive, b"x")

    def test_client_misuse(self) -> None:
        client = ClientHandshake()
        self.assertRaises(LocalProtocolError, client.receive, b"\x03")
        client.initial()
        self.assertRaises(LocalProtocolError, client.initial)


class VersionTests(SynchronousTestCase):
    def test_encrypted_version_refused(self) -> None:
        for byte in (6, 8):
            error = self.assertRaises(HandshakeError, ServerHandshake().receive, bytes((byte,)))
            self.assertIn("encryption is unsupported", str(error))

    def test_bad_version_byte_named(self) -> None:
        for byte, text in ((0x00, "0x00"), (0xFF, "0xff"), (0x47, "0x47")):
            server = ServerHandshake()
            error = self.assertRaises(HandshakeError, server.receive, bytes((byte,)) + simple_c1(0))
            self.assertIn(text, str(error))
            # A failed handshake cannot be resumed.
            self.assertRaises(LocalProtocolError, server.receive, b"\x03")

    def test_http_request_gets_a_hint(self) -> None:
        error = self.assertRaises(HandshakeError, ServerHandshake().receive, b"GET / HTTP/1.1\r\n")
        self.assertIn("HTTP", str(error))

    def test_client_refuses_bad_s0(self) -> None:
        client = ClientHandshake()
        client.initial()
        self.assertRaises(HandshakeError, client.receive, b"\x06")


class FuzzTests(SynchronousTestCase):
    @given(st.binary(min_size=HANDSHAKE_SIZE, max_size=HANDSHAKE_SIZE + 1600), st.integers(1, 4000))
    @settings(max_examples=150, deadline=None)
    def test_any_c1_after_valid_c0_is_answered(self, payload: bytes, cut: int) -> None:
        server = ServerHandshake(random_bytes=seeded(0))
        data = bytes((RTMP_VERSION,)) + payload
        out = server.receive(data[:cut])
        fed = data[:cut]
        if not server.done:
            out += server.receive(data[cut:])
            fed = data
        self.assertEqual(len(out), 3073)
        self.assertEqual(server.done, len(payload) >= 2 * HANDSHAKE_SIZE)
        if server.done:
            # Bytes after C2 in what was fed are kept for the chunk stream.
            self.assertEqual(server.leftover, fed[1 + 2 * HANDSHAKE_SIZE :])

    @given(
        st.sampled_from([0, 1]),
        st.lists(st.tuples(st.integers(0, HANDSHAKE_SIZE - 1), st.integers(0, 255)), min_size=1, max_size=8),
    )
    @settings(max_examples=150, deadline=None)
    def test_mutated_digest_c1_is_answered(self, scheme: int, edits: list[tuple[int, int]]) -> None:
        c1 = bytearray(ClientHandshake(digest=True, scheme=scheme, random_bytes=seeded(90)).initial()[1:])
        for index, value in edits:
            c1[index] = value
        server = ServerHandshake(random_bytes=seeded(91))
        out = server.receive(b"\x03" + bytes(c1))
        self.assertEqual(len(out), 3073)
        if server.digest_scheme is None:
            self.assertEqual(out[1537:], bytes(c1))  # fell back to the echo
        else:
            self.assertTrue(hand_digest_ok(bytes(c1), server.digest_scheme, FP_KEY[:30]))

    @given(st.binary(max_size=4000))
    @settings(max_examples=150, deadline=None)
    def test_arbitrary_bytes_raise_only_handshake_error(self, data: bytes) -> None:
        for side in (ServerHandshake(random_bytes=seeded(1)), ClientHandshake(random_bytes=seeded(2))):
            if isinstance(side, ClientHandshake):
                side.initial()
            try:
                side.receive(data)
            except HandshakeError as error:
                self.assertIsInstance(error, RemoteProtocolError)
                self.assertNotEqual(data[:1], b"\x03")
