"""Resource limits of one connection, as named, documented settings.

Every limit here is enforced by the core before it buffers anything, so a
peer that announces an absurd size is refused at the header. Each check is
constant work per message, chunk or read (an integer comparison or two),
never work per byte. ``docs/security.md`` says what happens at each one.
A rate of 0 turns that budget off.
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

    # -- hostile clients (issue 11) ----------------------------------------------

    #: Bytes that the messages in progress on all chunk streams of a connection
    #: may announce together (their full lengths count as soon as their headers
    #: arrive). One largest media message plus everything else an honest client
    #: interleaves with it.
    max_partial_message_bytes: int = 16 * 1024 * 1024
    #: Values one AMF message may decode to, a reference counting every value it
    #: stands for each time it is used. connect and onMetaData hold tens; a
    #: yamdi keyframe index of a 10-hour file at one keyframe a second ~72,000.
    max_amf_nodes: int = 100_000
    #: String and byte-array bytes one AMF message may decode to, references
    #: counted each time used. Checked against the larger of this and the
    #: message's own size, so a message without references never reaches it.
    max_amf_decoded_bytes: int = 8 * 1024 * 1024
    #: Longest command name accepted (characters); real ones are under 32.
    max_command_name: int = 256
    #: Before ``publish``: messages a second (commands, control, pings).
    command_messages_per_second: float = 100.0
    #: Before ``publish``: bytes a second (chunk headers counted, see ``chunk_cost``).
    command_bytes_per_second: float = 256.0 * 1024
    #: After ``publish``: messages a second (real streams send under 1,000).
    media_messages_per_second: float = 10_000.0
    #: After ``publish``: bytes a second, 100 Mb/s (several times the highest real bitrates).
    media_bytes_per_second: float = 12_500_000.0
    #: Seconds of each rate a connection may send at once (its budget starts full).
    rate_window: float = 2.0
    #: Bytes charged to the byte budget per chunk, on top of its payload: a chunk
    #: costs the server a header parse whatever it carries, so chunk size 1 or
    #: empty messages pay for what they cost.
    chunk_cost: int = 64
    #: Distinct (kind, track id) pairs an Enhanced RTMP publisher may use, and
    #: track entries in one multitrack tag.
    max_tracks: int = 32
    #: Distinct codec FourCCs an Enhanced RTMP publisher may use (audio and video together).
    max_codecs: int = 16


#: Command-line options of the hostile-client limits (``rtmpd.tap``): option name, ``Limits`` field,
#: help. A rate option takes 0 for "no budget"; the others must be positive.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "max-partial-bytes",
        "max_partial_message_bytes",
        "Bytes all unfinished messages of a connection may announce",
    ),
    ("max-amf-nodes", "max_amf_nodes", "Values one AMF message may decode to (references counted each use)"),
    ("max-amf-bytes", "max_amf_decoded_bytes", "String bytes one AMF message may decode to (references too)"),
    ("max-command-name", "max_command_name", "Longest command name accepted, in characters"),
    ("command-rate", "command_messages_per_second", "Messages a second before publish (0: no limit)"),
    ("command-byte-rate", "command_bytes_per_second", "Bytes a second before publish (0: no limit)"),
    ("media-rate", "media_messages_per_second", "Messages a second after publish (0: no limit)"),
    ("media-byte-rate", "media_bytes_per_second", "Bytes a second after publish (0: no limit)"),
    ("rate-window", "rate_window", "Seconds of each rate a connection may send at once"),
    ("chunk-cost", "chunk_cost", "Bytes charged to the byte rate per chunk header"),
    ("max-tracks", "max_tracks", "Enhanced RTMP tracks a publisher may use"),
    ("max-codecs", "max_codecs", "Distinct Enhanced RTMP codecs (FourCCs) a publisher may use"),
)
#: The options above whose value may be 0.
OPTIONS_ZERO_OK = frozenset(
    {"command-rate", "command-byte-rate", "media-rate", "media-byte-rate", "chunk-cost"}
)
