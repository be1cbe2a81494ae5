"""What an operator's manhole session starts with: the server's objects, and the views and actions as
helpers that print.

``make_namespace`` gives one operator's names: ``registry``, ``service``,
``recorder``, ``reactor``, the views of ``rtmpd.admin.views`` wrapped in text
tables (``streams()``, ``subscribers(key)``, ``conns()``), the actions of
``rtmpd.admin.actions`` in that operator's name, and ``help``. A table's rows
are the view's dicts plus the short labels its columns show (``codecs``,
``resolution``, ``recording``, ``role``).
"""

from __future__ import annotations

import pydoc
import time
from collections.abc import Callable
from typing import Any

from rtmpd.access.policy import AccessPolicy
from rtmpd.admin.actions import Actions, Report
from rtmpd.admin.cluster import cluster_table
from rtmpd.admin.format import Column, Table, duration, kbps, size, text
from rtmpd.admin.rates import WINDOW, RateSampler
from rtmpd.admin.views import Server, ServerViews

__all__ = ["make_namespace"]

_HELP = """\
rtmpd manhole: a Python prompt inside the running server.

Objects
  registry      the StreamRegistry: registry.streams maps 'app/name' to Stream
  service       the top service (RTMPService): .connections, .config, .recorder
  recorder      the recorder, or None when rtmpd does not record
  reactor       the running reactor

Views (each returns a list of row dicts that prints as a table)
  streams()             every stream: publisher, codecs, size, bit rates, uptime, subscribers, GOP cache,
                        recording file
  subscribers(key)      the players of one stream: peer, conn_id, bytes sent, dropped frames, buffered bytes
  conns()               every connection: what it publishes or plays, bytes and bit rates in and out
  cluster_streams()     with --cluster: every live key of the cluster, from the directory (its node, pull URL)

Actions (logged with your user name)
  kick(key)             disconnect the publisher of a stream; its players get NetStream.Play.UnpublishNotify
  drop(conn_id)         disconnect one connection (a conn_id such as 'c000042', or 42)
  stop_recording(key)   stop recording a stream
  reconnect(key=None, tc_url=None, force=False)
                        ask Enhanced RTMP publishers to reconnect (here, or to tc_url)
  auth()                access control: its configuration (no secrets) and the recent refusals
  reload_auth()         reload the key file and secrets (as SIGHUP does)
  help(obj)             the documentation of obj

Bit rates are in kbit/s on the wire, averaged over the last {interval:g} s.
Everything runs in the server's only thread: a slow or blocking call stalls every stream.
exit() or Ctrl-D ends the session."""

_STREAM_COLUMNS = [
    Column("key", "key"),
    Column("publisher", "publisher"),
    Column("codecs", "codecs"),
    Column("size", "resolution"),
    Column("in kb/s", "bitrate_in", kbps, True),
    Column("out kb/s", "bitrate_out", kbps, True),
    Column("uptime", "uptime", duration, True),
    Column("subs", "subscribers", text, True),
    Column("gop cache", "gop_cache_bytes", size, True),
    Column("recording", "recording"),
]
_PLAYER_COLUMNS = [
    Column("peer", "peer"),
    Column("conn_id", "conn_id"),
    Column("bytes sent", "bytes_sent", size, True),
    Column("out kb/s", "bitrate_out", kbps, True),
    Column("dropped", "dropped_frames", text, True),
    Column("buffered", "buffered_bytes", size, True),
]
_CONNECTION_COLUMNS = [
    Column("conn_id", "conn_id"),
    Column("peer", "peer"),
    Column("app", "app"),
    Column("role", "role"),
    Column("bytes in", "bytes_in", size, True),
    Column("bytes out", "bytes_out", size, True),
    Column("in kb/s", "bitrate_in", kbps, True),
    Column("out kb/s", "bitrate_out", kbps, True),
    Column("buffered", "buffered_bytes", size, True),
]

_MISSING = object()


def _codecs(row: dict[str, Any]) -> str | None:
    """``H264/AAC``; for multitrack, every track's codec: ``H264+H265/AAC+Opus``."""
    tracks = row["tracks"]
    if row["multitrack"] and tracks:
        kinds = [
            [codec for name, codec in sorted(tracks.items()) if name.startswith(kind)]
            for kind in ("video", "audio")
        ]
        return "/".join("+".join(k) for k in kinds if k) or None
    return "/".join(c for c in (row["video_codec"], row["audio_codec"]) if c) or None


def _stream_labels(row: dict[str, Any]) -> dict[str, Any]:
    path, state = row["recording_file"], row["recording_state"]
    if path is None:
        recording = state
    else:
        recording = f"{path} ({state})" if state != "recording" else path
    return {
        **row,
        "codecs": _codecs(row),
        "resolution": f"{row['width']}x{row['height']}" if row["width"] and row["height"] else None,
        "recording": recording,
    }


_REFUSAL_COLUMNS = [
    Column("time", "when"),
    Column("action", "action"),
    Column("key", "key"),
    Column("addr", "addr"),
    Column("authoriser", "authoriser"),
    Column("reason", "reason"),
]


class Helpers:
    """The manhole's helpers for one operator: the views as tables, the actions, and ``help``."""

    def __init__(
        self,
        server: Server,
        user: str,
        sampler: RateSampler | None = None,
        access: AccessPolicy | None = None,
        reload_access: Callable[[], Any] | None = None,
    ) -> None:
        self.views = ServerViews(server, sampler)
        self.actions = Actions(server, user, self.views, reload_access)
        self.sampler = sampler
        self.access = access

    def auth(self) -> Report:
        """Access control: the configuration (no secrets), then the recent refusals, newest last."""
        if self.access is None:
            return Report("open: no authoriser, anyone may connect, publish and play")
        rows = [
            {**vars(r), "when": time.strftime("%H:%M:%S", time.gmtime(r.time))}
            for r in self.access.counters.refusals
        ]
        table = Table(_REFUSAL_COLUMNS, rows, "(no refusals)")
        return Report("\n".join([*self.access.describe(), "recent refusals:", repr(table)]))

    def namespace(self) -> dict[str, Callable[..., Any]]:
        """The helpers by the names the session knows them by."""
        actions = self.actions
        return {
            "streams": self.streams,
            "subscribers": self.subscribers,
            "conns": self.conns,
            "kick": actions.kick,
            "drop": actions.drop,
            "stop_recording": actions.stop_recording,
            "reconnect": actions.reconnect,
            "auth": self.auth,
            "reload_auth": actions.reload_auth,
            "help": self.help,
        }

    def streams(self) -> Table:
        """Every stream: publisher, codecs, size, bit rates, uptime, subscribers, GOP cache, recording."""
        rows = [_stream_labels(row) for row in self.views.streams()]
        return Table(_STREAM_COLUMNS, rows, "(no streams)")

    def subscribers(self, key: str) -> Table:
        """The players of one stream: peer, conn_id, bytes sent, bit rate out, dropped frames, buffered
        bytes. Raises NotFound (an AdminError) for an unknown key."""
        return Table(_PLAYER_COLUMNS, self.views.players(key), f"(no subscribers on {key})")

    def conns(self) -> Table:
        """Every connection: app, what it publishes or plays, bytes and bit rates in and out, buffered."""
        rows = [{**row, "role": ", ".join(row["roles"]) or None} for row in self.views.connections()]
        return Table(_CONNECTION_COLUMNS, rows, "(no connections)")

    def help(self, obj: Any = _MISSING) -> Report:
        """What the manhole offers; ``help(obj)`` is obj's documentation (the builtin help() would read the
        server's own stdin)."""
        if obj is _MISSING:
            interval = self.sampler.window if self.sampler is not None else WINDOW
            return Report(_HELP.format(interval=interval))
        return Report(pydoc.render_doc(obj, renderer=pydoc.plaintext))


def make_namespace(
    top: Server,
    user: str,
    sampler: RateSampler | None = None,
    reactor: Any = None,
    access: AccessPolicy | None = None,
    reload_access: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The names operator ``user``'s session starts with: the server's objects and the helpers."""
    if reactor is None:
        from twisted.internet import reactor
    namespace: dict[str, Any] = {
        "registry": top.registry,
        "service": top,
        "recorder": top.recorder,
        "reactor": reactor,
        "push": getattr(top, "namedServices", {}).get("push"),
    }
    namespace.update(Helpers(top, user, sampler, access, reload_access).namespace())
    namespace["cluster_streams"] = lambda: cluster_table(top)
    return namespace
