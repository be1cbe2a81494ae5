"""The RTMP handshake (C0/C1/C2 and S0/S1/S2), sans-IO, for both sides.

This module owns everything that happens before the first chunk: the version
byte, the two 1536-byte blocks each side sends, and the "digest" (a.k.a.
complex, Flash Player 9) variant that ffmpeg, librtmp and Flash clients may
use. It never reads a clock or a socket: the caller passes its uptime in as
``epoch`` and feeds bytes in, and gets the bytes to send back.

Wire layout (RTMP 1.0 specification, section 5.2)::

    C0/S0  1 byte    version, always 3 (6, 8 and 9 ask for RTMPE encryption)
    C1/S1  1536      time (4, big-endian ms) + version/zero (4) + 1528 random
    C2/S2  1536      the peer's C1/S1 echoed (simple) or a digest response

Digest handshake (from librtmp ``handshake.h`` and nginx-rtmp
``ngx_rtmp_handshake.c``; Adobe never published it): when C1's version field
is nonzero, C1 may carry a 32-byte HMAC-SHA256 "digest" at an offset derived
from four of its own bytes, in one of two layouts (``scheme`` 0 or 1, see
:func:`digest_offset`). The digest covers the 1504 other bytes of the block
and is keyed with the first 30 bytes of :data:`GENUINE_FP_KEY` (client) or 36
bytes of :data:`GENUINE_FMS_KEY` (server). The answer (S2/C2) is 1504 random
bytes followed by an HMAC-SHA256 of them keyed with
``HMAC-SHA256(full key of the answering side, digest of the peer's block)``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from rtmpd.core.errors import HandshakeError, LocalProtocolError

__all__ = [
    "DIGEST_SIZE",
    "FLASH_PLAYER_VERSION",
    "FMS_VERSION",
    "GENUINE_FMS_KEY",
    "GENUINE_FMS_KEY_PARTIAL",
    "GENUINE_FP_KEY",
    "GENUINE_FP_KEY_PARTIAL",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "ServerHandshake",
    "block_digest",
    "digest_offset",
    "find_digest",
    "imprint_digest",
    "make_digest",
    "make_response",
    "verify_response",
]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

# The 32 bytes that follow the ASCII prefix in both keys; checked against
# nginx-rtmp's ngx_rtmp_server_key/ngx_rtmp_client_key and librtmp.
_KEY_TAIL = bytes(
    (
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    )
)  # fmt: skip
#: Full 62-byte client key; the first 30 bytes (the ASCII part) sign C1.
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
GENUINE_FP_KEY_PARTIAL = GENUINE_FP_KEY[:30]
#: Full 68-byte server key; the first 36 bytes (the ASCII part) sign S1.
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
GENUINE_FMS_KEY_PARTIAL = GENUINE_FMS_KEY[:36]

#: C1 version field sent by our digest client (Flash Player 128.0.7.2, as
#: RTMPE-capable players announce; any nonzero value marks a digest C1).
FLASH_PLAYER_VERSION = 0x80000702
#: S1 version field of a digest answer, as FMS and nginx-rtmp send. ffmpeg
#: only checks S1's digest when the first byte of this field is >= 3.
FMS_VERSION = 0x0D0E0A0D

# Where each scheme's 764-byte digest block starts; the offset of the digest
# inside it is computed from the block's first 4 bytes, modulo 728 (= 764 - 32
# - 4), so the digest always lies inside the block.
_BLOCK_START = (8, 772)
_OFFSET_MODULO = 728
_RESPONSE_RANDOM_SIZE = HANDSHAKE_SIZE - DIGEST_SIZE  # 1504
_RANDOM_SIZE = HANDSHAKE_SIZE - 8  # after time and version

# librtmp's server accepts 6 and 8; 9 is the Blowfish variant it disabled.
_ENCRYPTED_VERSIONS = {6: "RTMPE", 8: "RTMPE (XTEA)", 9: "RTMPE (Blowfish)"}

_MASK32 = 0xFFFFFFFF


# -- digest math ---------------------------------------------------------------


def _check_block(block: bytes) -> None:
    if len(block) != HANDSHAKE_SIZE:
        raise LocalProtocolError(f"handshake block must be {HANDSHAKE_SIZE} bytes, got {len(block)}")


def digest_offset(block: bytes, scheme: int) -> int:
    """Return where the 32-byte digest of a C1/S1 ``block`` (without C0/S0) lies.

    Scheme 0 puts the digest block at bytes 8..771: offset = (sum of bytes
    8..11) % 728 + 12. Scheme 1 puts it at 772..1535: offset = (sum of bytes
    772..775) % 728 + 776 (librtmp's GetDigestOffset2/GetDigestOffset1,
    ffmpeg's ``ff_rtmp_calc_digest_pos``). Raises LocalProtocolError if the
    block is not 1536 bytes or the scheme is not 0 or 1.
    """
    _check_block(block)
    if scheme not in (0, 1):
        raise LocalProtocolError(f"digest scheme must be 0 or 1, got {scheme!r}")
    start = _BLOCK_START[scheme]
    return sum(block[start : start + 4]) % _OFFSET_MODULO + start + 4


def make_digest(data_without_digest: bytes, key: bytes) -> bytes:
    """Return HMAC-SHA256(key, data): the 32-byte digest used everywhere here."""
    return hmac.new(key, data_without_digest, hashlib.sha256).digest()


def block_digest(block: bytes, scheme: int, key: bytes) -> bytes:
    """Return the digest that belongs in ``block`` at ``scheme``'s offset.

    It covers the block with those 32 bytes cut out, whatever they hold now.
    Raises LocalProtocolError like :func:`digest_offset`.
    """
    offset = digest_offset(block, scheme)
    return make_digest(block[:offset] + block[offset + DIGEST_SIZE :], key)


def imprint_digest(block: bytes, scheme: int, key: bytes) -> bytes:
    """Return ``block`` with its digest written at ``scheme``'s offset."""
    offset = digest_offset(block, scheme)
    return block[:offset] + block_digest(block, scheme, key) + block[offset + DIGEST_SIZE :]


def find_digest(c1: bytes, key: bytes) -> tuple[int, int] | None:
    """Look for a valid digest in a C1 or S1 block (1536 bytes, without C0/S0).

    Tries scheme 0, then scheme 1 (a peer may use either, librtmp tries both).
    Returns ``(scheme, offset)`` of the first digest that verifies with
    ``key`` (a partial key), or None. Never raises on any 1536-byte input.
    """
    for scheme in (0, 1):
        offset = digest_offset(c1, scheme)
        if hmac.compare_digest(c1[offset : offset + DIGEST_SIZE], block_digest(c1, scheme, key)):
            return scheme, offset
    return None


def make_response(random_part: bytes, peer_digest: bytes, full_key: bytes) -> bytes:
    """Build a digest-handshake S2/C2: ``random_part`` (1504 bytes) + signature.

    The signature is HMAC-SHA256 of ``random_part`` keyed with
    HMAC-SHA256(``full_key``, ``peer_digest``). Raises LocalProtocolError if
    ``random_part`` is not 1504 bytes.
    """
    if len(random_part) != _RESPONSE_RANDOM_SIZE:
        raise LocalProtocolError(f"response random part must be {_RESPONSE_RANDOM_SIZE} bytes")
    return random_part + make_digest(random_part, make_digest(peer_digest, full_key))


def verify_response(block: bytes, peer_digest: bytes, full_key: bytes) -> bool:
    """Tell whether a 1536-byte S2/C2 is the answer to the block whose digest is ``peer_digest``."""
    _check_block(block)
    expected = make_digest(block[:_RESPONSE_RANDOM_SIZE], make_digest(peer_digest, full_key))
    return hmac.compare_digest(block[_RESPONSE_RANDOM_SIZE:], expected)


# -- shared pieces of both state machines --------------------------------------


def _check_version(byte: int, name: str) -> None:
    """Raise HandshakeError unless ``byte`` (the C0/S0 byte) asks for plain RTMP 3."""
    if byte == RTMP_VERSION:
        return
    if byte in _ENCRYPTED_VERSIONS:
        raise HandshakeError(
            f"{name} version byte {byte} asks for {_ENCRYPTED_VERSIONS[byte]}: encryption is unsupported"
        )
    hint = ""
    if 0x20 <= byte < 0x7F:
        # An HTTP request or a stray text client on the RTMP port shows up as a letter.
        hint = f" (ASCII {chr(byte)!r}: a text protocol such as HTTP?)"
    raise HandshakeError(f"{name} version byte 0x{byte:02x} is not RTMP version {RTMP_VERSION}{hint}")


def _header(epoch: int, version: int) -> bytes:
    return (epoch & _MASK32).to_bytes(4, "big") + version.to_bytes(4, "big")


def _draw(random_bytes: Callable[[int], bytes], size: int) -> bytes:
    data = random_bytes(size)
    if len(data) != size:
        raise LocalProtocolError(f"random_bytes({size}) returned {len(data)} bytes")
    return bytes(data)


class _Side:
    """Buffering and life cycle common to both ends (not public)."""

    def __init__(self, epoch: int, random_bytes: Callable[[int], bytes]) -> None:
        self._epoch = epoch & _MASK32
        self._random_bytes = random_bytes
        self._buffer = bytearray()
        self._done = False
        self._failed = False
        self.leftover: bytes = b""

    @property
    def done(self) -> bool:
        """True once the handshake is complete; further bytes belong to the chunk stream."""
        return self._done

    def _start_feed(self, data: bytes) -> None:
        if self._done:
            raise LocalProtocolError("handshake already done: feed later bytes to the chunk reader")
        if self._failed:
            raise LocalProtocolError("handshake already failed: close the connection")
        self._buffer += data

    def _finish(self, consumed: int) -> None:
        # Whatever follows the last handshake block already belongs to the chunk stream.
        self.leftover = bytes(self._buffer[consumed:])
        self._buffer = bytearray()
        self._done = True


# -- server --------------------------------------------------------------------


class ServerHandshake(_Side):
    """The server end: consumes C0+C1+C2, produces S0+S1+S2.

    ``epoch`` is the server's uptime in ms, written into S1's time field.
    ``random_bytes(n)`` supplies the random filler (inject a deterministic one
    in tests). S0+S1+S2 are produced together as soon as C0+C1 are complete,
    as nginx-rtmp and librtmp do; clients do not wait for anything else.
    """

    def __init__(self, *, epoch: int = 0, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(epoch, random_bytes)
        #: 0 or 1 when the client's C1 carried a valid digest, None for the simple handshake.
        self.digest_scheme: int | None = None
        #: The 4-byte version field of C1 (e.g. 0x09007C02 for ffmpeg; 0 means simple handshake).
        self.client_version: int = 0
        #: The time field of C1 (the client's uptime in ms, or 0).
        self.client_epoch: int = 0
        #: Whether C2 answered our S1 (a signed response in digest mode, or an echo of S1);
        #: None until C2 arrived. Informational only: a wrong C2 is never an error.
        self.c2_valid: bool | None = None
        self._s1: bytes | None = None
        self._s1_digest: bytes | None = None

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the client; return bytes to send (S0+S1+S2 once, else b"").

        Raises HandshakeError if C0 is not version 3 (encrypted RTMPE
        included); after that, and after :attr:`done`, further calls raise
        LocalProtocolError. Bytes that follow C2 are kept in :attr:`leftover`.
        """
        self._start_feed(data)
        try:
            return self._advance()
        except HandshakeError:
            self._failed = True
            raise

    def _advance(self) -> bytes:
        out = b""
        if self._s1 is None:
            if self._buffer:
                _check_version(self._buffer[0], "C0")
            if len(self._buffer) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
            del self._buffer[: 1 + HANDSHAKE_SIZE]
            out = self._answer(c1)
        if len(self._buffer) >= HANDSHAKE_SIZE:
            self.c2_valid = self._check_c2(bytes(self._buffer[:HANDSHAKE_SIZE]))
            self._finish(HANDSHAKE_SIZE)
        return out

    def _answer(self, c1: bytes) -> bytes:
        self.client_epoch = int.from_bytes(c1[0:4], "big")
        self.client_version = int.from_bytes(c1[4:8], "big")
        # A zero version field is the spec's simple handshake; only then is C1 pure random.
        found = find_digest(c1, GENUINE_FP_KEY_PARTIAL) if self.client_version else None
        if found is None:
            # Simple handshake, also the fallback for a nonzero version without a
            # valid digest (ffmpeg and librtmp accept it). S2 is a byte-exact echo of
            # C1: librtmp compares all 1536 bytes and warns on any difference.
            self._s1 = _header(self._epoch, 0) + _draw(self._random_bytes, _RANDOM_SIZE)
            s2 = c1
        else:
            scheme, offset = found
            self.digest_scheme = scheme
            unsigned = _header(self._epoch, FMS_VERSION) + _draw(self._random_bytes, _RANDOM_SIZE)
            # Answer at the client's scheme: some clients only look for S1's digest there.
            self._s1 = imprint_digest(unsigned, scheme, GENUINE_FMS_KEY_PARTIAL)
            s1_offset = digest_offset(self._s1, scheme)
            self._s1_digest = self._s1[s1_offset : s1_offset + DIGEST_SIZE]
            client_digest = c1[offset : offset + DIGEST_SIZE]
            s2 = make_response(
                _draw(self._random_bytes, _RESPONSE_RANDOM_SIZE), client_digest, GENUINE_FMS_KEY
            )
        return bytes((RTMP_VERSION,)) + self._s1 + s2

    def _check_c2(self, c2: bytes) -> bool:
        assert self._s1 is not None
        # The spec lets C2 carry its own time2, so only the random part must echo S1.
        echoed = c2[8:] == self._s1[8:]
        if self._s1_digest is not None:
            # ffmpeg signs C2 only when playing; when publishing it echoes S1 even
            # after a digest exchange, so both answers count as valid.
            return echoed or verify_response(c2, self._s1_digest, GENUINE_FP_KEY)
        return echoed


# -- client --------------------------------------------------------------------


class ClientHandshake(_Side):
    """The client end: produces C0+C1, consumes S0+S1+S2, produces C2.

    With ``digest=True`` C1 carries a Flash Player digest at ``scheme`` (0 or
    1) and a nonzero version field, as ffmpeg and Flash Player send it.
    Call :meth:`initial` first, then feed the server's bytes to :meth:`receive`.
    """

    def __init__(
        self,
        *,
        epoch: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        digest: bool = False,
        scheme: int = 0,
    ) -> None:
        if scheme not in (0, 1):
            raise LocalProtocolError(f"digest scheme must be 0 or 1, got {scheme!r}")
        super().__init__(epoch, random_bytes)
        self._digest = digest
        self._scheme = scheme
        self._c1: bytes | None = None
        self._c1_digest: bytes | None = None
        #: For a digest handshake: whether S1 carried a valid server digest and S2
        #: a valid answer to our C1 digest. None for a simple handshake or before S2.
        self.server_digest_valid: bool | None = None
        #: The 4-byte version field of S1 (0 when the server chose the simple handshake).
        self.server_version: int = 0

    def initial(self) -> bytes:
        """Return C0+C1, to be sent first. Raises LocalProtocolError if called twice."""
        if self._c1 is not None:
            raise LocalProtocolError("initial() was already called")
        version = FLASH_PLAYER_VERSION if self._digest else 0
        c1 = _header(self._epoch, version) + _draw(self._random_bytes, _RANDOM_SIZE)
        if self._digest:
            c1 = imprint_digest(c1, self._scheme, GENUINE_FP_KEY_PARTIAL)
            offset = digest_offset(c1, self._scheme)
            self._c1_digest = c1[offset : offset + DIGEST_SIZE]
        self._c1 = c1
        return bytes((RTMP_VERSION,)) + c1

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the server; return C2 once S0+S1+S2 arrived, else b"".

        Raises HandshakeError if S0 is not version 3; LocalProtocolError if
        called before :meth:`initial`, after :attr:`done` or after a failure.
        Bytes that follow S2 are kept in :attr:`leftover`.
        """
        if self._c1 is None:
            raise LocalProtocolError("call initial() and send C0+C1 before feeding server bytes")
        self._start_feed(data)
        try:
            return self._advance()
        except HandshakeError:
            self._failed = True
            raise

    def _advance(self) -> bytes:
        if self._buffer:
            _check_version(self._buffer[0], "S0")
        if len(self._buffer) < 1 + 2 * HANDSHAKE_SIZE:
            return b""
        s1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
        s2 = bytes(self._buffer[1 + HANDSHAKE_SIZE : 1 + 2 * HANDSHAKE_SIZE])
        self.server_version = int.from_bytes(s1[4:8], "big")
        c2 = self._answer(s1, s2)
        self._finish(1 + 2 * HANDSHAKE_SIZE)
        return c2

    def _answer(self, s1: bytes, s2: bytes) -> bytes:
        if self._c1_digest is None:
            return s1  # simple handshake: echo S1, as librtmp does
        found = find_digest(s1, GENUINE_FMS_KEY_PARTIAL) if self.server_version else None
        if found is None:
            # The server chose (or fell back to) the simple handshake.
            self.server_digest_valid = False
            return s1
        _, offset = found
        self.server_digest_valid = verify_response(s2, self._c1_digest, GENUINE_FMS_KEY)
        s1_digest = s1[offset : offset + DIGEST_SIZE]
        return make_response(_draw(self._random_bytes, _RESPONSE_RANDOM_SIZE), s1_digest, GENUINE_FP_KEY)
