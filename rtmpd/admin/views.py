"""What an operator sees of a running server, as plain data: streams, one stream's players, connections,
the server itself.

Every view is a list (or dict) of dicts of raw values (str, int, float,
None, and lists and dicts of those): served as is by the JSON API
(``rtmpd.http.api``), or wrapped in a text table by the manhole
(``rtmpd.admin.namespace``). Nothing here formats text for a person. Units:
bytes, seconds, bits per second on the wire (RTMP framing included).

The views read the registry, the server's connections (only through
``rtmpd.relay.peer.Peer``), the bit-rate sampler, the start times
(``rtmpd.admin.uptimes``) and the recorder, at every call. They change
nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from rtmpd.admin.cluster import cluster_view, stream_origin
from rtmpd.admin.errors import NotFound

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from rtmpd.admin.rates import RateSampler
    from rtmpd.admin.uptimes import StartTimes
    from rtmpd.config import ServerConfig
    from rtmpd.recording.recorder import Recorder
    from rtmpd.relay.peer import Peer
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["Server", "ServerViews"]


class Server(Protocol):
    """What the views and actions need of the running server (``rtmpd.server.service.RTMPService``)."""

    registry: StreamRegistry
    config: ServerConfig
    #: None when rtmpd does not record.
    recorder: Recorder | None
    #: The open connections by conn_id.
    connections: Mapping[str, Peer]
    clock: IReactorTime

    def request_reconnect(
        self,
        tc_url: str | None = None,
        description: str = "Please reconnect.",
        *,
        key: str | None = None,
        force: bool = False,
    ) -> list[Peer]:
        """Ask publishers to reconnect; the connections asked."""


class ServerViews:
    """Read-only views of ``server`` as lists of dicts of raw values.

    Bit rates come from ``sampler`` (None without one, or before it sampled a
    connection twice), uptimes of connections and players from ``times``
    (None without it). ``players`` and ``stream_detail`` raise ``NotFound``
    for an unknown stream.
    """

    def __init__(
        self, server: Server, sampler: RateSampler | None = None, times: StartTimes | None = None
    ) -> None:
        self.server = server
        self.sampler = sampler
        self.times = times

    def stream(self, key: str) -> Stream:
        """The stream ``key`` ("app/name"). Raises NotFound, naming the streams there are."""
        registry = self.server.registry
        stream = registry.get(key)
        if stream is None:
            known = ", ".join(sorted(s.key for s in registry)) or "none"
            raise NotFound(f"no stream {key!r} (streams: {known})")
        return stream

    def streams(self) -> list[dict[str, Any]]:
        """Every stream, by key: its publisher, codecs and tracks, picture size and frame rate, bit
        rates, uptime, number of players, late-join cache size and recording."""
        now = self.server.clock.seconds()
        return [self._stream_row(stream, now) for stream in sorted(self.server.registry, key=lambda s: s.key)]

    def stream_detail(self, key: str) -> dict[str, Any]:
        """One stream's row of ``streams`` with its ``players`` (the rows of ``players``). Raises
        NotFound for an unknown key."""
        row = self._stream_row(self.stream(key), self.server.clock.seconds())
        row["players"] = self.players(key)
        return row

    def _stream_row(self, stream: Stream, now: float) -> dict[str, Any]:
        publication, stats = stream.publisher, stream.stats
        peer = publication.peer if publication is not None else None
        # Players that joined within the last interval have no rate yet: count those that do.
        outs = [r for r in (self._rates(player.peer)[1] for player in stream.players) if r is not None]
        recording = self.recording(stream.key)
        return {
            "key": stream.key,
            "publisher": peer.peer_addr if peer is not None else None,
            "conn_id": peer.conn_id if peer is not None else None,
            "video_codec": stats.video_codec,
            "audio_codec": stats.audio_codec,
            "tracks": dict(stats.tracks),
            "multitrack": stats.multitrack,
            "video_config": dict(stats.video_config),
            "audio_config": dict(stats.audio_config),
            "width": stats.width,
            "height": stats.height,
            "framerate": announced_framerate(stream),
            "bitrate_in": self._rates(peer)[0],
            "bitrate_out": sum(outs) if outs or not stream.players else None,
            "uptime": now - publication.started_at if publication is not None else None,
            "subscribers": len(stream.players),
            "gop_cache_bytes": stream.cache.gop_bytes,
            "recording_file": recording["file"] if recording is not None else None,
            "recording_state": recording["state"] if recording is not None else None,
            "recording_bytes": recording["bytes"] if recording is not None else None,
            "recording_duration": recording["duration"] if recording is not None else None,
            # The node it comes from in a cluster (--cluster); None on a single server.
            "origin": stream_origin(self.server, stream.key) if publication is not None else None,
        }

    def players(self, key: str) -> list[dict[str, Any]]:
        """The players of stream ``key``: peer, conn_id, bytes sent, bit rate out, dropped frames,
        buffered bytes, and with start times, ``uptime`` (seconds since it started playing). Raises
        NotFound for an unknown key."""
        times = self.times
        rows = []
        for player in self.stream(key).players:
            row = dict(player.stats())
            row["bitrate_out"] = self._rates(player.peer)[1]
            if times is not None:
                row["uptime"] = times.play_uptime(player.peer.conn_id, key)
            rows.append(row)
        return rows

    def connections(self) -> list[dict[str, Any]]:
        """Every connection, by conn_id: peer, app, what it publishes or plays (``roles``), bytes and
        bit rates in and out, bytes buffered for it, and with start times, ``uptime`` (seconds since
        its RTMP connect)."""
        times = self.times
        rows = []
        for conn_id, peer in sorted(self.server.connections.items()):
            rate_in, rate_out = self._rates(peer)
            row = {
                "conn_id": conn_id,
                "peer": peer.peer_addr,
                "app": peer.app or None,
                "roles": peer.roles(),
                "bytes_in": peer.bytes_in,
                "bytes_out": peer.bytes_out,
                "bitrate_in": rate_in,
                "bitrate_out": rate_out,
                "buffered_bytes": peer.buffered_bytes,
            }
            if times is not None:
                row["uptime"] = times.connection_uptime(conn_id)
            rows.append(row)
        return rows

    def server_info(self) -> dict[str, Any]:
        """The server: version, uptime (None without start times), protocol ``limits`` and other
        ``settings`` (the ServerConfig), listeners (what, endpoint description, bound address; None
        while not listening), and counts of streams and connections."""
        from rtmpd import __version__

        config = self.server.config
        settings = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
        limits = settings.pop("limits", {})
        return {
            "version": str(__version__),
            "uptime": self.times.uptime() if self.times is not None else None,
            "limits": limits,
            "settings": settings,
            "listeners": listeners_of(self.server),
            "streams": len(list(self.server.registry)),
            "connections": len(self.server.connections),
            "recording": self.server.recorder is not None,
            "cluster": cluster_view(self.server),
        }

    def recording(self, key: str) -> dict[str, Any] | None:
        """The recording of stream ``key`` as ``{"file", "state", "bytes", "duration"}`` (the current
        file: its path relative to the record directory when it is inside it, bytes and seconds
        written to it so far); None when nothing is recorded."""
        recorder = self.server.recorder
        recording = recorder.recording_for(key) if recorder is not None else None
        if recording is None:
            return None
        path = recording.file
        record_dir = self.server.config.record_dir
        if path is not None and record_dir:
            inside = os.path.relpath(os.path.abspath(path), os.path.abspath(record_dir))
            if not inside.startswith(os.pardir):
                path = inside
        return {
            "file": path,
            "state": recording.state,
            "bytes": getattr(recording, "bytes", None),
            "duration": getattr(recording, "duration", None),
        }

    def _rates(self, peer: Peer | None) -> tuple[float | None, float | None]:
        rates = self.sampler.rates(peer.conn_id) if self.sampler is not None and peer is not None else None
        return rates if rates is not None else (None, None)


def announced_framerate(stream: Stream) -> float | None:
    """The frame rate the publisher announced in ``onMetaData`` (``framerate``), None if it did not."""
    # As the connection decoded it, under the server's AMF limits: a client's bytes are decoded once.
    values = stream.cache.metadata_values
    rate = values.get("framerate", values.get("videoframerate"))
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < 10_000:
        return float(rate)
    return None


def listeners_of(services: Iterable[Any]) -> list[dict[str, Any]]:
    """Every listening service in a service tree: ``what`` it serves, its endpoint ``description``,
    the ``address`` it is bound to (None while not listening)."""
    found = []
    for child in services:
        if hasattr(child, "description") and hasattr(child, "what") and hasattr(child, "port"):
            port = child.port
            host = port.getHost() if port is not None else None
            address = None
            if host is not None:
                address = (
                    f"{host.host}:{host.port}" if hasattr(host, "port") else str(getattr(host, "name", host))
                )
            found.append({"what": child.what, "endpoint": child.description, "address": address})
        elif hasattr(child, "namedServices") or isinstance(child, Iterable):
            found.extend(listeners_of(child))
    return found
