"""Write the seed corpus (fuzz/corpus/<fuzzer>/): a few small, valid inputs per parser, made by rtmpd.

Run from the repository root: ``python fuzz/make_corpus.py``. The files are
committed (the handshake seeds hold random bytes, so a rerun adds new files).
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtmpd.core import amf0, amf3  # noqa: E402
from rtmpd.core.amf_types import ECMAArray  # noqa: E402
from rtmpd.core.chunks import ChunkWriter  # noqa: E402
from rtmpd.core.commands import encode_command, encode_data  # noqa: E402
from rtmpd.core.handshake import ClientHandshake  # noqa: E402
from rtmpd.core.messages import Message, set_chunk_size, user_control, window_ack_size  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

CONNECT = {
    "app": "live",
    "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
    "tcUrl": "rtmp://127.0.0.1:1935/live",
    "fpad": False,
    "capabilities": 15.0,
    "audioCodecs": 4071.0,
    "videoCodecs": 252.0,
    "videoFunction": 1.0,
    "fourCcList": ["av01", "hvc1", "vp09"],
    "capsEx": 15.0,
}
METADATA = ECMAArray(
    width=1280.0, height=720.0, videocodecid=7.0, audiocodecid=10.0, framerate=30.0, encoder="obs-output"
)


def amf0_seeds() -> list[bytes]:
    reference = b"\x0a\x00\x00\x00\x02" + b"\x03\x00\x01a\x02\x00\x01x\x00\x00\x09" + b"\x07\x00\x01"
    avmplus = b"\x11" + amf3.encode({"k": [1, 2.5, "s"], "b": b"\x00\x01"})
    return [
        amf0.encode_many("connect", 1.0, CONNECT),
        amf0.encode_many("onMetaData", METADATA),
        amf0.encode_many("@setDataFrame", "onMetaData", METADATA),
        reference,
        avmplus,
    ]


def amf3_seeds() -> list[bytes]:
    # A dictionary with an int and a string key, strings and objects referenced again.
    dictionary = b"\x11\x05\x00" + b"\x04\x01" + b"\x06\x03a" + b"\x06\x03a" + b"\x04\x02"
    shared = b"\x09\x05\x01" + b"\x0a\x0b\x01\x03k\x06\x05vv\x01" + b"\x0a\x02"
    return [
        amf3.encode(CONNECT),
        amf3.encode(dict(METADATA)),
        dictionary,
        shared,
        amf3.encode([1, 2**20, -5]),
    ]


def handshake_seeds() -> list[bytes]:
    seeds = []
    for digest in (False, True):
        client = ClientHandshake(digest=digest)
        c0c1 = client.initial()
        # The server's S0+S1+S2 are not available here; C2 echoes a zero S1 like a lenient client.
        seeds.append(b"\x40" + c0c1 + bytes(1536) + b"\x02\x00")
    return seeds


def chunk_seeds() -> list[bytes]:
    writer = ChunkWriter()
    parts = [
        writer.write(3, encode_command("connect", 1.0, CONNECT)),
        writer.write(2, window_ack_size(2_500_000)),
        writer.set_chunk_size(4096),
        writer.write(3, encode_command("createStream", 2.0, None)),
        writer.write(4, encode_data("@setDataFrame", "onMetaData", METADATA, stream_id=1)),
        writer.write(6, Message(9, 0, 1, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff")),
        writer.write(6, Message(9, 33, 1, b"\x17\x01\x00\x00\x00" + bytes(300))),
        writer.write(6, Message(9, 2**24 + 5, 1, b"\x27\x01\x00\x00\x00" + bytes(50))),
        writer.write(2, user_control(6, 77)),
    ]
    small = ChunkWriter(1)
    tiny = small.write(5, Message(8, 0, 1, b"\xaf\x01abc")) + small.write(5, Message(8, 0, 1, b""))
    aggregate_body = (
        b"\x09\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00" + b"\x17\x01\x00\x00\x00" + struct.pack(">I", 16)
    )
    aggregate = ChunkWriter().write(4, Message(22, 100, 1, aggregate_body))
    return [
        b"\x7f" + b"".join(parts),
        b"\x00" + b"".join(parts[:3]),
        b"\x03" + tiny,
        b"\x10" + aggregate,
        b"\x01" + set_chunk_size(1).payload,
    ]


def media_seeds() -> list[bytes]:
    hvc1_start = b"\x90hvc1" + bytes(23)
    av01_frames = b"\x91av01" + b"\x00\x00\x00" + bytes(10)
    multitrack = b"\x96" + b"\x11" + b"hvc1" + b"\x00\x00\x00\x03abc" + b"\x01\x00\x00\x02de"
    many_codecs = b"\x96" + b"\x21" + b"hvc1\x00\x00\x00\x01a" + b"av01\x01\x00\x00\x01b"
    modex = b"\x97" + b"\x02\x00\x00\x00" + b"\x11" + b"avc1" + bytes(4)
    opus = b"\x90Opus" + bytes(19)
    audio_multi = b"\x95" + b"\x11" + b"Opus" + b"\x00\x00\x00\x01x" + b"\x01\x00\x00\x01y"
    return [
        b"\x01" + b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1",
        b"\x01" + b"\x27\x01\x00\x00\x00\x00\x00\x00\x05",
        b"\x01" + hvc1_start,
        b"\x01" + av01_frames,
        b"\x01" + multitrack,
        b"\x01" + many_codecs,
        b"\x01" + modex,
        b"\x00" + b"\xaf\x00\x12\x10",
        b"\x00" + b"\x2f" + bytes(20),
        b"\x00" + opus,
        b"\x00" + audio_multi,
    ]


def command_seeds() -> list[bytes]:
    return [
        b"\x00" + amf0.encode_many("connect", 1.0, CONNECT),
        b"\x00" + amf0.encode_many("publish", 5.0, None, "key?token=abc", "live"),
        b"\x01" + b"\x00" + amf0.encode_many("createStream", 2.0, None),
        b"\x02" + amf0.encode_many("@setDataFrame", "onMetaData", METADATA),
        b"\x03"
        + b"\x00"
        + amf0.encode("onMetaData")
        + b"\x11"
        + b"\x11\x05\x00\x04\x01\x06\x03a\x06\x03b\x04\x02",
    ]


API_TOKEN = "fuzz-token-0123456789abcdef"


def _http(method: str, path: str, body: bytes = b"", token: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if token:
        head += f"Authorization: Bearer {API_TOKEN}\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def http_api_seeds() -> list[bytes]:
    """A loopback (``\\x00``) or remote (``\\x01``) client, then one or two raw requests."""
    return [
        b"\x00" + _http("GET", "/api/v1/streams"),
        b"\x00" + _http("GET", "/api/v1/streams/live/test") + _http("HEAD", "/api/v1/server"),
        b"\x01" + _http("GET", "/api/v1/connections", token=True),
        b"\x00" + _http("POST", "/api/v1/streams/live/test/kick", b'{"reason":"fuzz"}', token=True),
        b"\x00" + _http("POST", "/api/v1/connections/c000002/drop", b'{"reason":"x"}', token=True),
        b"\x00" + _http("POST", "/api/v1/streams/live/test/record/stop", token=True),
        b"\x00"
        + _http(
            "POST", "/api/v1/relays/push", b'{"pattern":"live/*","url":"rtmp://127.0.0.1:9/o/{name}"}', True
        ),
        b"\x00" + _http("POST", "/api/v1/relays/push/1/restart", token=True),
        b"\x00" + _http("DELETE", "/api/v1/auth/reload"),
        b"\x01" + _http("POST", "/api/v1/auth/reload", b"[1,2]", token=False),
    ]


def hls_request_seeds() -> list[bytes]:
    """A window kind (first byte), then a request target under /hls/."""
    return [
        b"\x00/live/cam/index.m3u8",
        b"\x01/live/cam/index.m3u8?_HLS_msn=1&_HLS_part=2",
        b"\x02/live/cam/index.m3u8?_HLS_msn=2&_HLS_part=0&_HLS_skip=YES&exp=1700000000&sig=abc%2Bdef",
        b"\x03/live/a/b/index.m3u8?token=%22x%0A%23EXT",
        b"\x02/live/cam/e1.2.1.m4s?exp=1&sig=z",
        b"\x03/live/cam/e1.5.m4s",
        b"\x01/live/cam/e1.mp4?_HLS_msn=3",
    ]


def flv_path_seeds() -> list[bytes]:
    """Request targets of HTTP-FLV / WebSocket-FLV players."""
    return [
        b"/live/cam.flv",
        b"/live/cam.flv?exp=1700000000&sig=abc",
        b"/live/a%2Fb.flv",
        b"/app%20x/stream-1_2.flv",
        b"/live/cam.mp4",
    ]


def relay_hook_option_seeds() -> list[bytes]:
    """A parser (first byte modulo 6: webhook, exec, number option, push, pull, URL), then its text."""
    return [
        b"\x00publish_start,record_done=https://user:pw@hooks.example:8443/rtmpd?sig=1",
        b"\x01*=/usr/local/bin/on-event --flag=1",
        b"\x02" + b"2.5",
        b"\x08" + b"0",
        b"\x03live/*=rtmp://127.0.0.1:1936/out/{name}",
        b"\x03*=rtmps://[::1]:443/{app}/inst/{name}?key=abc",
        b"\x04live=rtmp://origin.example/live",
        b"\x04edge=rtmp://127.0.0.1:1935/live/{name}",
        b"\x05rtmp://a.rtmp.youtube.com:1935/live2/KEY?x=1",
    ]


def hls_http_seeds() -> list[bytes]:
    """Request targets for /hls/ serving live/cam, whose muxer generation the fuzzer names e1e1e1e1e1."""
    return [
        b"/hls/live/cam/index.m3u8",
        b"/hls/live/cam/index.m3u8?_HLS_msn=3&_HLS_part=1&sig=a%20b",
        b"/hls/live/cam/index.m3u8?_HLS_msn=99",
        b"/hls/live/cam/e1e1e1e1e1.mp4",
        b"/hls/live/cam/e1e1e1e1e1.2.m4s?exp=1",
        b"/hls/live/cam/e1e1e1e1e1.4.1.m4s",
        b"/hls/live/cam/e1e1e1e1e1.9.0.m4s",
        b"/hls/live/other/index.m3u8",
        # Whole requests (first byte 0) for the lean channel's parser: pipelined, a HEAD, a body.
        b"\x00GET /hls/live/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /hls/live/cam/e1e1e1e1e1.mp4 HTTP/1.1\r\n\r\n",
        b"\x00POST /hls/live/cam/index.m3u8 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"\x00OPTIONS /hls/live/cam/index.m3u8 HTTP/1.0\r\nOrigin: http://a\r\n\r\n",
    ]


SEEDS = {
    "amf0": amf0_seeds,
    "amf3": amf3_seeds,
    "handshake": handshake_seeds,
    "chunks": chunk_seeds,
    "media": media_seeds,
    "commands": command_seeds,
    "http_api": http_api_seeds,
    "hls_request": hls_request_seeds,
    "flv_path": flv_path_seeds,
    "relay_hook_options": relay_hook_option_seeds,
    "hls_http": hls_http_seeds,
}


def main() -> None:
    for name, make in SEEDS.items():
        directory = os.path.join(ROOT, name)
        os.makedirs(directory, exist_ok=True)
        for seed in make():
            path = os.path.join(directory, hashlib.sha1(seed).hexdigest()[:16])
            with open(path, "wb") as f:
                f.write(seed)


if __name__ == "__main__":
    main()
