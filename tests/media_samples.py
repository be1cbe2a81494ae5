"""Hand-made FLV tag bodies for unit tests (just enough of each codec's layout)."""

AVC_SEQUENCE_HEADER = bytes(
    [
        0x17,
        0x00,
        0,
        0,
        0,
        0x01,
        0x64,
        0x00,
        0x1F,
        0xFF,
        0xE1,
        0x00,
        0x04,
        0x67,
        0x64,
        0x00,
        0x1F,
        0x01,
        0x00,
        0x02,
        0x68,
        0xEE,
    ]
)
AAC_SEQUENCE_HEADER = bytes([0xAF, 0x00, 0x11, 0x90])


def avc_keyframe(n: int = 0, size: int = 100) -> bytes:
    return bytes([0x17, 0x01, 0, 0, 0]) + bytes([n & 0xFF]) * size


def avc_interframe(n: int = 0, size: int = 50) -> bytes:
    return bytes([0x27, 0x01, 0, 0, 0]) + bytes([n & 0xFF]) * size


def aac_frame(n: int = 0, size: int = 20) -> bytes:
    return bytes([0xAF, 0x01]) + bytes([n & 0xFF]) * size
