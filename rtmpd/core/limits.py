"""Resource limits of one connection, as named, documented settings.

Every limit here is enforced by the core before it buffers anything, so a
peer that announces an absurd size is refused at the header.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    #: Largest audio/video/data/aggregate message accepted (bytes). The wire's
    #: 24-bit length field cannot say more than 16 MiB - 1, so a 16 MiB limit
    #: would refuse nothing at the header; 8 MiB is still several times the
    #: largest real keyframe (4K at high bitrate is 1-3 MB).
    max_media_message_size: int = 8 * 1024 * 1024
    #: Largest command, control or shared-object message accepted (bytes).
    max_command_message_size: int = 256 * 1024
    #: Most chunk streams a peer may have open on one connection.
    max_chunk_streams: int = 64
    #: Seconds a peer has to finish the handshake (cleared once it is done).
    handshake_timeout: float = 10.0
    #: Deepest nesting of AMF objects/arrays accepted in a command.
    max_amf_depth: int = 64
