"""Operator views and actions on a running server: what the manhole's helpers are made of.

``Admin`` reads the server's live objects (the registry's streams, the
factory's connections, the recorder) and acts on them on behalf of one named
operator: ``kick`` a publisher, ``drop`` a connection, ``stop_recording``.
Every action is logged with that operator's name. Nothing here knows about
SSH, so tests drive it against an in-memory server.

Views return a ``Table``: a list of row dicts (raw values, for code) whose
``repr`` is an aligned text table (for the prompt). Actions return a
``Report`` (a str that prints without quotes) or raise ``AdminError``.

Bit rates come from ``RateSampler``: every connection's byte counters are
sampled every ``SAMPLE_INTERVAL`` seconds and a rate is the difference over
the last interval, in bits per second on the wire (RTMP framing included).
Until a connection has been sampled twice (2 to 4 seconds after it connects)
its rate is unknown (shown ``-``).
"""

from __future__ import annotations

import os
import pydoc
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

if TYPE_CHECKING:
    from rtmpd.server.protocol import RTMPProtocol
    from rtmpd.relay.registry import Stream
    from rtmpd.server.service import RTMPService

#: Seconds between two samples of the connections' byte counters.
SAMPLE_INTERVAL = 2.0


class AdminError(Exception):
    """An action could not be done (unknown stream or connection, nothing to stop); nothing changed."""


class Report(str):
    """The outcome of an action: a string that shows without quotes at the prompt."""

    def __repr__(self) -> str:
        return str(self)


# -- formatting -----------------------------------------------------------------


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _kbps(bits_per_second: float | None) -> str:
    return "-" if bits_per_second is None else f"{bits_per_second / 1000:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Column:
    """One column of a ``Table``: a header, the row key it shows, how to format it."""

    def __init__(self, header: str, key: str, fmt: Callable[[Any], str] = _text, right: bool = False) -> None:
        self.header = header
        self.key = key
        self.fmt = fmt
        self.right = right


class Table(list):
    """Rows (dicts of raw values) that print as an aligned text table."""

    def __init__(self, columns: list[Column], rows: Iterable[dict[str, Any]], empty: str) -> None:
        super().__init__(rows)
        self.columns = columns
        self.empty = empty

    def __repr__(self) -> str:
        if not self:
            return self.empty
        cells = [[c.header for c in self.columns]]
        cells += [[c.fmt(row.get(c.key)) for c in self.columns] for row in self]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]
        lines = []
        for line in cells:
            parts = [
                cell.rjust(width) if column.right else cell.ljust(width)
                for cell, width, column in zip(line, widths, self.columns, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        return "\n".join(lines)

    __str__ = __repr__


# -- bit rates ------------------------------------------------------------------


class RateSampler(service.Service):
    """Bit rates in and out of every connection, over the last sampling interval."""

    def __init__(
        self, connections: Mapping[str, RTMPProtocol], clock: IReactorTime, interval: float = SAMPLE_INTERVAL
    ) -> None:
        self.connections = connections
        self.clock = clock
        self.interval = interval
        self._last: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        if self._loop.running:
            self._loop.stop()
        return super().stopService()

    def sample(self) -> None:
        """Take one sample of every connection's byte counters; forget connections that are gone."""
        now = self.clock.seconds()
        last, rates = {}, {}
        for conn_id, conn in list(self.connections.items()):
            current = last[conn_id] = (now, conn.bytes_in, conn.bytes_out)
            previous = self._last.get(conn_id)
            if previous is not None and now > previous[0]:
                elapsed = now - previous[0]
                rates[conn_id] = (
                    (current[1] - previous[1]) * 8 / elapsed,
                    (current[2] - previous[2]) * 8 / elapsed,
                )
        self._last, self._rates = last, rates

    def rates(self, conn_id: str) -> tuple[float, float] | None:
        """(bits/s in, bits/s out) of a connection, or None before it has been sampled twice."""
        return self._rates.get(conn_id)


# -- views and actions ----------------------------------------------------------

_HELP = """\
rtmpd manhole: a Python prompt inside the running server.

Objects
  registry      the StreamRegistry: registry.streams maps 'app/name' to Stream
  service       the top service (RTMPService): .factory.connections, .config, .recorder
  recorder      the recorder, or None when rtmpd does not record
  reactor       the running reactor

Views (each returns a list of row dicts that prints as a table)
  streams()             every stream: publisher, codecs, size, bit rates, uptime, subscribers, GOP cache,
                        recording file
  subscribers(key)      the players of one stream: peer, conn_id, bytes sent, dropped frames, buffered bytes
  conns()               every connection: what it publishes or plays, bytes and bit rates in and out

Actions (logged with your user name)
  kick(key)             disconnect the publisher of a stream; its players get NetStream.Play.UnpublishNotify
  drop(conn_id)         disconnect one connection (a conn_id such as 'c000042', or 42)
  stop_recording(key)   stop recording a stream
  reconnect(key=None, tc_url=None, force=False)
                        ask Enhanced RTMP publishers to reconnect (here, or to tc_url)
  help(obj)             the documentation of obj

Bit rates are in kbit/s on the wire, averaged over the last {interval:g} s.
Everything runs in the server's only thread: a slow or blocking call stalls every stream.
exit() or Ctrl-D ends the session."""

_MISSING = object()


class Admin:
    """The manhole's helpers for one operator (``user``): views of the server and logged actions."""

    log = Logger()

    def __init__(self, top: RTMPService, user: str, sampler: RateSampler | None = None) -> None:
        self.service = top
        self.user = user
        self.sampler = sampler

    @property
    def registry(self):
        return self.service.registry

    def helpers(self) -> dict[str, Callable[..., Any]]:
        """The helpers by the names the manhole's namespace gives them."""
        names = ("streams", "subscribers", "conns", "kick", "drop", "stop_recording", "reconnect", "help")
        return {name: getattr(self, name) for name in names}

    def _now(self) -> float:
        return self.service.factory.clock.seconds()

    def _rates(self, conn: RTMPProtocol | None) -> tuple[float | None, float | None]:
        rates = self.sampler.rates(conn.conn_id) if self.sampler is not None and conn is not None else None
        return rates if rates is not None else (None, None)

    def _stream(self, key: str) -> Stream:
        stream = self.registry.get(key)
        if stream is None:
            known = ", ".join(sorted(self.registry.streams)) or "none"
            raise AdminError(f"no stream {key!r} (streams: {known})")
        return stream

    # -- views ----------------------------------------------------------------

    def streams(self) -> Table:
        """Every stream: publisher, codecs, size, bit rates, uptime, subscribers, GOP cache, recording."""
        now = self._now()
        rows = []
        for stream in sorted(self.registry, key=lambda s: s.key):
            publication, stats = stream.publisher, stream.stats
            conn = publication.peer if publication is not None else None
            rate_in = self._rates(conn)[0]
            # Players that joined within the last interval have no rate yet: count those that do.
            outs = [r for r in (self._rates(player.peer)[1] for player in stream.players) if r is not None]
            rate_out = sum(outs) if outs or not stream.players else None
            codecs = "/".join(c for c in (stats.video_codec, stats.audio_codec) if c)
            if stats.multitrack and stats.tracks:
                # Multitrack: every track's codec, e.g. "H264+H265/AAC+Opus".
                kinds = [
                    [codec for name, codec in sorted(stats.tracks.items()) if name.startswith(kind)]
                    for kind in ("video", "audio")
                ]
                codecs = "/".join("+".join(k) for k in kinds if k)
            size = f"{stats.width}x{stats.height}" if stats.width and stats.height else None
            rows.append(
                {
                    "key": stream.key,
                    "publisher": conn.peer_addr if conn is not None else None,
                    "conn_id": conn.conn_id if conn is not None else None,
                    "video_codec": stats.video_codec,
                    "audio_codec": stats.audio_codec,
                    "codecs": codecs or None,
                    "width": stats.width,
                    "height": stats.height,
                    "resolution": size,
                    "bitrate_in": rate_in,
                    "bitrate_out": rate_out,
                    "uptime": now - publication.started_at if publication is not None else None,
                    "subscribers": len(stream.players),
                    "tracks": dict(stats.tracks),
                    "gop_cache_bytes": stream.cache.gop_bytes,
                    "recording": self._recording_file(stream),
                }
            )
        columns = [
            Column("key", "key"),
            Column("publisher", "publisher"),
            Column("codecs", "codecs"),
            Column("size", "resolution"),
            Column("in kb/s", "bitrate_in", _kbps, True),
            Column("out kb/s", "bitrate_out", _kbps, True),
            Column("uptime", "uptime", _duration, True),
            Column("subs", "subscribers", _text, True),
            Column("gop cache", "gop_cache_bytes", _bytes, True),
            Column("recording", "recording"),
        ]
        return Table(columns, rows, "(no streams)")

    def _recording_file(self, stream: Stream) -> str | None:
        """The file a stream is recorded into (relative to the record dir), with the recording's state
        when it is not plain "recording"; None when the recorder keeps nothing for the stream."""
        recording = stream.recording
        if recording is None:
            return None
        paths = (getattr(recording, name, None) for name in ("file", "path", "filename"))
        path = next((p for p in paths if p), None)
        if path is None:
            return str(recording)
        path = os.fspath(path)
        record_dir = self.service.config.record_dir
        if record_dir:
            inside = os.path.relpath(os.path.abspath(path), os.path.abspath(record_dir))
            if not inside.startswith(os.pardir):
                path = inside
        state = getattr(recording, "state", None)
        return f"{path} ({state})" if isinstance(state, str) and state != "recording" else path

    def subscribers(self, key: str) -> Table:
        """The players of one stream: peer, conn_id, bytes sent, bit rate out, dropped frames, buffered bytes.

        Raises AdminError for an unknown key.
        """
        rows = []
        for player in self._stream(key).players:
            row = dict(player.stats())
            row["bitrate_out"] = self._rates(player.peer)[1]
            rows.append(row)
        columns = [
            Column("peer", "peer"),
            Column("conn_id", "conn_id"),
            Column("bytes sent", "bytes_sent", _bytes, True),
            Column("out kb/s", "bitrate_out", _kbps, True),
            Column("dropped", "dropped_frames", _text, True),
            Column("buffered", "buffered_bytes", _bytes, True),
        ]
        return Table(columns, rows, f"(no subscribers on {key})")

    def conns(self) -> Table:
        """Every connection: app, what it publishes or plays, bytes and bit rates in and out, buffered."""
        rows = []
        for conn_id, conn in sorted(self.service.factory.connections.items()):
            rate_in, rate_out = self._rates(conn)
            rows.append(
                {
                    "conn_id": conn_id,
                    "peer": conn.peer_addr,
                    "app": conn.app or None,
                    "role": _role(conn) or None,
                    "bytes_in": conn.bytes_in,
                    "bytes_out": conn.bytes_out,
                    "bitrate_in": rate_in,
                    "bitrate_out": rate_out,
                    "buffered_bytes": conn.buffered_bytes,
                }
            )
        columns = [
            Column("conn_id", "conn_id"),
            Column("peer", "peer"),
            Column("app", "app"),
            Column("role", "role"),
            Column("bytes in", "bytes_in", _bytes, True),
            Column("bytes out", "bytes_out", _bytes, True),
            Column("in kb/s", "bitrate_in", _kbps, True),
            Column("out kb/s", "bitrate_out", _kbps, True),
            Column("buffered", "buffered_bytes", _bytes, True),
        ]
        return Table(columns, rows, "(no connections)")

    # -- actions --------------------------------------------------------------

    def kick(self, key: str) -> Report:
        """Disconnect the publisher of ``key``; its players get UnpublishNotify and stay subscribed.

        Raises AdminError if the stream is unknown or has no publisher.
        """
        stream = self._stream(key)
        if stream.publisher is None:
            raise AdminError(f"{key} has no publisher")
        conn = stream.publisher.peer
        self.log.info(
            "Manhole kick", user=self.user, stream_key=key, conn_id=conn.conn_id, peer_addr=conn.peer_addr
        )
        # Abort rather than close: the publisher must be gone now, whatever it has not read.
        conn.abort(f"kicked by {self.user}")
        return Report(f"kicked {conn.conn_id} ({conn.peer_addr}), the publisher of {key}")

    def drop(self, conn_id: str | int) -> Report:
        """Disconnect one connection (``'c000042'`` or ``42``). Raises AdminError if there is none such."""
        if isinstance(conn_id, int):
            conn_id = f"c{conn_id:06d}"
        conn = self.service.factory.connections.get(conn_id)
        if conn is None:
            raise AdminError(f"no connection {conn_id!r}")
        role = _role(conn)
        self.log.info(
            "Manhole drop", user=self.user, conn_id=conn.conn_id, peer_addr=conn.peer_addr, role=role or None
        )
        conn.abort(f"dropped by {self.user}")
        return Report(f"dropped {conn.conn_id} ({conn.peer_addr}{', ' + role if role else ''})")

    def stop_recording(self, key: str) -> Report | Deferred:
        """Stop recording ``key`` through the recorder's ``stop_recording(key)``.

        The recorder may answer False (nothing was being recorded: AdminError), a
        Deferred (returned as is), or anything else (done). Raises AdminError when
        rtmpd does not record or its recorder cannot stop one stream.
        """
        recorder = self.service.recorder
        if recorder is None:
            raise AdminError("rtmpd is not recording (started without --record-dir)")
        stop = getattr(recorder, "stop_recording", None)
        if stop is None:
            raise AdminError("this recorder cannot stop a single recording")
        stream = self.registry.get(key)
        path = self._recording_file(stream) if stream is not None else None
        result = stop(key)
        if result is False:
            raise AdminError(f"{key} is not being recorded")
        self.log.info("Manhole stop recording", user=self.user, stream_key=key, path=path)
        if isinstance(result, Deferred):
            return result
        return Report(f"stopped recording {key}" + (f" ({path})" if path else ""))

    def reconnect(self, key: str | None = None, tc_url: str | None = None, force: bool = False) -> Report:
        """Ask publishers (of ``key``, or all) that advertised Enhanced RTMP Reconnect to reconnect,
        to ``tc_url`` if given (moving them to another server), else here. ``force`` asks the others too.

        Raises AdminError when no publisher was asked.
        """
        asked = self.service.request_reconnect(tc_url, f"Requested by {self.user}.", key=key, force=force)
        if not asked:
            raise AdminError(
                "no publisher "
                + (f"of {key} " if key else "")
                + "advertised Reconnect"
                + ("" if force else " (force=True asks them anyway)")
            )
        ids = [conn.conn_id for conn in asked]
        self.log.info("Manhole reconnect request", user=self.user, stream_key=key, tcUrl=tc_url, conn_ids=ids)
        return Report(f"asked {len(ids)} publisher(s) to reconnect: {', '.join(ids)}")

    def help(self, obj: Any = _MISSING) -> Report:
        """What the manhole offers; ``help(obj)`` is obj's documentation (the builtin help() would read the
        server's own stdin)."""
        if obj is _MISSING:
            interval = self.sampler.interval if self.sampler is not None else SAMPLE_INTERVAL
            return Report(_HELP.format(interval=interval))
        return Report(pydoc.render_doc(obj, renderer=pydoc.plaintext))


def _role(conn: RTMPProtocol) -> str:
    """What a connection does: ``publish live/a``, ``play live/b``, both, or ''."""
    roles = []
    for ns in conn.net_streams.values():
        if ns.publication is not None and ns.stream is not None:
            roles.append(f"publish {ns.stream.key}")
        elif ns.player is not None:
            roles.append(f"play {ns.player.stream.key}")
    return ", ".join(roles)
