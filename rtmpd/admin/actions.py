"""What an operator may do to a running server: kick a publisher, drop a connection, start or stop a
recording, ask publishers to reconnect, reload the access-control files. Each action is logged with the
operator's name and the front end it came through ("Manhole kick", "API kick").

Shared by every front end (the manhole, the HTTP API ``rtmpd.http.api``): an
action returns a ``Report`` (or, for a recording being finalised, a Deferred)
or raises ``AdminError`` (``NotFound`` for an unknown stream or connection),
and then nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rtmpd import conn_ids
from rtmpd.access.policy import ReloadResult
from rtmpd.admin.errors import AdminError, NotFound
from rtmpd.admin.views import Server, ServerViews

__all__ = ["Actions", "AdminError", "NotFound", "Report"]


class Report(str):
    """The outcome of an action: a one-line string that shows without quotes at the prompt, and in
    ``data`` the same facts as plain values (conn_id, file, ...) for front ends that serve JSON."""

    data: dict[str, Any]

    def __new__(cls, text: str, **data: Any) -> Report:
        report = super().__new__(cls, text)
        report.data = data
        return report

    def __repr__(self) -> str:
        return str(self)


class Actions:
    """Actions on ``server`` on behalf of the operator ``user``, whose name every log line carries;
    ``front`` names the front end in the log messages ("Manhole", "API").

    Connections are reached only through ``rtmpd.relay.peer.Peer``.
    """

    log = Logger()

    def __init__(
        self,
        server: Server,
        user: str,
        views: ServerViews | None = None,
        reload_access: Callable[[], Sequence[ReloadResult]] | None = None,
        front: str = "Manhole",
    ) -> None:
        self.server = server
        self.user = user
        self.front = front
        self.views = views if views is not None else ServerViews(server)
        self._reload_access = reload_access

    def _message(self, action: str) -> str:
        # The front end's name is ours, never a client's: no braces reach the log format.
        return f"{self.front} {action}"

    def reload_auth(self) -> Report:
        """Reload the access-control files (key file, secrets), as SIGHUP does: live streams are untouched
        (with --auth-revoke-live, publishers of removed keys are ended). Raises AdminError when access
        control has no file to reload."""
        if self._reload_access is None:
            raise AdminError("access control has no file to reload (no --auth-keys or --auth-secrets)")
        self.log.info(self._message("access reload"), user=self.user)
        results = self._reload_access()
        lines = [
            f"{r.authoriser}: {'reloaded' if r.ok else 'kept the old table'}: {r.summary}" for r in results
        ]
        data = [{"authoriser": r.authoriser, "ok": r.ok, "summary": r.summary} for r in results]
        return Report("\n".join(lines) or "nothing to reload", results=data)

    def kick(self, key: str, reason: str | None = None) -> Report:
        """Disconnect the publisher of ``key``; its players get UnpublishNotify and stay subscribed.
        ``reason`` goes into the log lines.

        Raises NotFound for an unknown stream, AdminError if it has no publisher.
        """
        stream = self.views.stream(key)
        if stream.publisher is None:
            raise AdminError(f"{key} has no publisher")
        peer = stream.publisher.peer
        self.log.info(
            self._message("kick"),
            user=self.user,
            stream_key=key,
            conn_id=peer.conn_id,
            peer_addr=peer.peer_addr,
            reason=reason,
        )
        # Abort rather than close: the publisher must be gone now, whatever it has not read.
        peer.abort(f"kicked by {self.user}" + (f": {reason}" if reason else ""))
        return Report(
            f"kicked {peer.conn_id} ({peer.peer_addr}), the publisher of {key}",
            key=key,
            conn_id=peer.conn_id,
            peer=peer.peer_addr,
        )

    def drop(self, conn_id: str | int, reason: str | None = None) -> Report:
        """Disconnect one connection (``'c000042'``, or ``42`` for this process's connection 42: in worker 2
        of ``--workers``, ``'w2-c000042'``); ``reason`` goes into the log lines. Raises NotFound if there is
        none such."""
        if isinstance(conn_id, int):
            conn_id = conn_ids.conn_id(conn_id)
        peer = self.server.connections.get(conn_id)
        if peer is None:
            raise NotFound(f"no connection {conn_id!r}")
        role = ", ".join(peer.roles())
        self.log.info(
            self._message("drop"),
            user=self.user,
            conn_id=peer.conn_id,
            peer_addr=peer.peer_addr,
            role=role or None,
            reason=reason,
        )
        roles = peer.roles()
        peer.abort(f"dropped by {self.user}" + (f": {reason}" if reason else ""))
        return Report(
            f"dropped {peer.conn_id} ({peer.peer_addr}{', ' + role if role else ''})",
            conn_id=peer.conn_id,
            peer=peer.peer_addr,
            roles=roles,
        )

    def stop_recording(self, key: str) -> Report | Deferred:
        """Finalise the recording of ``key`` now (the stream goes on, unrecorded, until published again).

        Returns a Report, or a Deferred that fires with one once the file is
        finalised. Raises AdminError when rtmpd does not record or ``key`` is
        not being recorded.
        """
        recorder = self.server.recorder
        if recorder is None:
            raise AdminError("rtmpd is not recording (started without --record-dir)")
        recording = self.views.recording(key)
        path = recording["file"] if recording is not None else None
        result = recorder.stop_recording(key)
        if result is False:
            raise AdminError(f"{key} is not being recorded")
        self.log.info(self._message("stop recording"), user=self.user, stream_key=key, path=path)
        report = Report(f"stopped recording {key}" + (f" ({path})" if path else ""), key=key, file=path)
        if isinstance(result, Deferred):
            return result.addCallback(lambda _: report)
        return report

    def start_recording(self, key: str) -> Report:
        """Start a new recording of live stream ``key`` now, into a new file, whatever --record-match
        says. Raises NotFound for an unknown stream, AdminError when rtmpd does not record, ``key``
        has no publisher, or it is being recorded already."""
        recorder = self.server.recorder
        if recorder is None:
            raise AdminError("rtmpd is not recording (started without --record-dir)")
        stream = self.views.stream(key)
        if stream.publisher is None:
            raise AdminError(f"{key} has no publisher")
        recording = recorder.start_recording(key)
        if recording is None:
            raise AdminError(f"{key} is being recorded already")
        path = self.views.recording(key)
        file = path["file"] if path is not None else None
        self.log.info(self._message("start recording"), user=self.user, stream_key=key, path=file)
        return Report(f"started recording {key}" + (f" ({file})" if file else ""), key=key, file=file)

    def reconnect(self, key: str | None = None, tc_url: str | None = None, force: bool = False) -> Report:
        """Ask publishers (of ``key``, or all) that advertised Enhanced RTMP Reconnect to reconnect,
        to ``tc_url`` if given (moving them to another server), else here. ``force`` asks the others too.

        Raises AdminError when no publisher was asked.
        """
        asked = self.server.request_reconnect(tc_url, f"Requested by {self.user}.", key=key, force=force)
        if not asked:
            raise AdminError(
                "no publisher "
                + (f"of {key} " if key else "")
                + "advertised Reconnect"
                + ("" if force else " (force=True asks them anyway)")
            )
        ids = [peer.conn_id for peer in asked]
        self.log.info(
            self._message("reconnect request"), user=self.user, stream_key=key, tcUrl=tc_url, conn_ids=ids
        )
        return Report(f"asked {len(ids)} publisher(s) to reconnect: {', '.join(ids)}", conn_ids=ids)
