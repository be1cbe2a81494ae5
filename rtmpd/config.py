"""Server settings: one frozen value built from the command line (or by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtmpd.core.limits import Limits


@dataclass(frozen=True)
class ServerConfig:
    """Every setting of a running server, frozen; ``tap.Options.config()`` builds it from the command line.

    The defaults are the documented defaults of the options (README, docs/operations.md).
    """

    limits: Limits = field(default_factory=Limits)
    #: Outgoing chunk size, announced with Set Chunk Size after connect.
    chunk_size: int = 4096
    #: Window Acknowledgement Size and Set Peer Bandwidth we send at connect.
    window_ack_size: int = 5_000_000
    #: A publisher that sends nothing for this long (seconds) is dropped.
    publisher_timeout: float = 10.0
    #: When true, a new publish on a live key replaces the current publisher.
    publish_takeover: bool = False
    #: A player whose socket makes no progress for this long (seconds) is dropped.
    play_timeout: float = 10.0
    #: Bytes a slow player may have queued before everything but sequence headers is dropped.
    max_queue_bytes: int = 4 * 1024 * 1024
    #: GOP cache for late joiners: on/off and its bounds.
    gop_cache: bool = True
    gop_cache_max_bytes: int = 16 * 1024 * 1024
    gop_cache_max_duration: float = 30.0
    #: Recording: directory (None = off), fnmatch patterns on app/name (empty = all), segmentation.
    record_dir: str | None = None
    record_match: tuple[str, ...] = ()
    record_max_size: int | None = None
    record_interval: float | None = None
    # -- recording limits and durability (issue 11), recording format (issue 15) --
    #: Recordings with an open file at once; a stream over it is relayed but not recorded.
    record_max_active: int = 100
    #: New recording files (first files and segments) per minute, in bursts of as many.
    record_max_new: int = 120
    #: Open recordings are fsynced this often (seconds; 0: only when a file is finalized).
    record_fsync_interval: float = 5.0
    #: Recording file format: "flv" (every tag as received) or "mp4" (fragmented, rtmpd.recording.mp4file).
    record_format: str = "flv"
    # -- hostile clients (issue 11, server and relay): connection limits, deadlines, request bounds --
    #: Most connections at once (0: no limit). ``tap`` derives its default from the descriptor limit.
    max_connections: int = 0
    #: Most connections at once from one IP address (0: no limit). ``tap`` derives its default too.
    max_connections_per_address: int = 0
    #: Seconds from the end of the handshake to a successful ``connect``.
    connect_timeout: float = 90.0
    #: Seconds a connected client may spend neither publishing nor playing (from ``connect``, and
    #: again whenever it stops its last publish or play).
    idle_timeout: float = 120.0
    #: ``createStream``, ``publish``, ``play`` and ``play2`` requests one connection may make in its life.
    max_stream_requests: int = 128
    #: Most messages in a stream's GOP cache (each also counts a fixed overhead against its bytes).
    gop_cache_max_messages: int = 20_000
    # -- send windows (issue 17) --
    #: Seconds a player's relayed media may wait for more before it is written, so that one system call
    #: carries all of it (0: written when the input that produced it is handled). See docs/performance.md;
    #: ``--send-window-ms`` has its own default (``rtmpd.server.options.DEFAULT_SEND_WINDOW_MS``).
    send_window: float = 0.0
