"""A cheap load client: N RTMP players in one process on one epoll loop.

Every player does the real handshake, ``connect``, ``createStream`` and
``play`` (through ``benchmarks.session``), and acknowledges what it receives
at the server's window, as real players do. Once its first video message
arrives (a server without a GOP cache starts video at the next keyframe)
the player is *playing*, and from then on:

- most players only count bytes: one ``recv_into`` into a shared buffer per
  readiness event, no parsing at all, so 1000 players fit in one process;
- ``--sample`` players keep parsing every chunk (rtmpd's own ChunkReader)
  and log, for each audio/video message, its type, RTMP timestamp and the
  ``time.monotonic()`` at which its last byte was read (the server-added
  latency is computed from this and the publisher's send log);
- ``--stalled`` players stop reading altogether (the slow-player scenario).

Protocol with ``benchmarks.run`` (one JSON object per stdout line): it
prints ``{"event": "ready", ...}`` once every player is playing (or
``--ready-timeout`` passed); ``start`` on stdin opens the measurement window,
``stop`` closes it, writes the results to ``--out`` and exits. It exits by
itself after ``--max-seconds`` whatever happens.

Run alone: ``python -m benchmarks.loadclient --port 1935 --key bench --players 100 --out r.json``,
then type ``start`` and ``stop``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time

from benchmarks.session import ClientSession, SessionError
from rtmpd.core.errors import RTMPError
from rtmpd.core.messages import MessageType

_RECV_SIZE = 256 * 1024
# Players in handshake/command exchange at once: a gentle ramp that never overflows a listen backlog.
_MAX_SETTING_UP = 32
_VIDEO = int(MessageType.VIDEO)
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Linux TCP states (include/net/tcp_states.h) a player's socket can be in at the end.
_TCP_STATES = {1: "established", 7: "closed", 8: "close-wait"}


def _tcp_state(sock: socket.socket | None) -> str:
    """The kernel's TCP state of a socket: tells whether the server dropped a player that never reads.

    A stalled player cannot learn it by reading (its receive buffer is full of
    data), but the kernel knows once the server's FIN or RST arrived.
    """
    if sock is None or sock.fileno() < 0:
        return "closed"
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return "unknown"
    return _TCP_STATES.get(state, str(state))


class Player:
    """One player connection: its protocol state, what it received, and its message log if sampled."""

    __slots__ = ("index", "sock", "session", "out", "sampled", "stalled", "connected", "playing", "counting",
                 "received", "next_ack", "window_start", "window_bytes", "log", "error", "ready_at")

    def __init__(self, index: int, session: ClientSession, sampled: bool, stalled: bool) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.session = session
        self.out = b""
        self.sampled = sampled
        self.stalled = stalled
        self.connected = False
        self.playing = False
        #: True once only bytes are counted (no parsing) for this player.
        self.counting = False
        #: Bytes received since the handshake (what acknowledgements count).
        self.received = 0
        self.next_ack = 0
        self.window_start = 0
        self.window_bytes = 0
        #: For sampled players: [type, rtmp timestamp, monotonic receipt time] per media message.
        self.log: list[tuple[int, int, float]] = []
        self.error = ""
        self.ready_at = 0.0


class LoadClient:
    """Owns the sockets and the epoll loop; see the module docstring for what it measures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epoll = select.epoll()
        self.by_fd: dict[int, Player] = {}
        tc_url = f"rtmp://{args.host}:{args.port}/{args.app}"
        self.players = [
            Player(i, ClientSession(args.app, args.key, "play", tc_url=tc_url),
                   sampled=args.stalled <= i < args.stalled + args.sample, stalled=i < args.stalled)
            for i in range(args.players)
        ]
        self.to_start = list(reversed(self.players))
        self.setting_up = 0
        self.ready_count = 0
        self.failed = 0
        self.announced_ready = False
        self.started_at = time.monotonic()
        self.window: dict[str, float] = {}
        self.stdin_buffer = b""
        self.finished = False

    # -- connection set-up -----------------------------------------------------

    def _start_more(self) -> None:
        while self.to_start and self.setting_up < _MAX_SETTING_UP:
            player = self.to_start.pop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((self.args.host, self.args.port))
            if code not in (0, errno.EINPROGRESS):
                self._fail(player, f"connect: {os.strerror(code)}", sock)
                continue
            player.sock = sock
            self.by_fd[sock.fileno()] = player
            self.setting_up += 1
            self.epoll.register(sock.fileno(), _OUT)

    def _connected(self, player: Player) -> None:
        code = player.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(player, f"connect: {os.strerror(code)}")
            return
        player.connected = True
        self.epoll.modify(player.sock.fileno(), _IN)
        self._send(player, player.session.initial())

    def _send(self, player: Player, data: bytes) -> None:
        if not data:
            return
        if player.out:
            player.out += data
            return
        try:
            sent = player.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._fail(player, f"send: {e}")
            return
        if sent < len(data):
            player.out = data[sent:]
            self.epoll.modify(player.sock.fileno(), _IN | _OUT)

    def _flush(self, player: Player) -> None:
        data, player.out = player.out, b""
        self.epoll.modify(player.sock.fileno(), _IN)
        self._send(player, data)

    def _fail(self, player: Player, error: str, sock: socket.socket | None = None) -> None:
        if not player.error:
            player.error = error
            self.failed += 1
            if not player.playing and player.sock is not None:
                self.setting_up -= 1  # it was counted when its socket was made
        sock = sock or player.sock
        if sock is not None:
            if sock.fileno() >= 0:
                self.by_fd.pop(sock.fileno(), None)
                try:
                    self.epoll.unregister(sock.fileno())
                except (OSError, ValueError):
                    pass
            sock.close()

    def _now_playing(self, player: Player, now: float) -> None:
        player.playing = True
        player.ready_at = now - self.started_at
        self.setting_up -= 1
        self.ready_count += 1
        player.received = player.session.bytes_received
        player.next_ack = player.session.last_ack + player.session.ack_window
        if player.stalled:
            # Never read again: the server's send buffer for it fills up and stays full.
            self.epoll.unregister(player.sock.fileno())
        elif not player.sampled:
            player.counting = True

    # -- reading -----------------------------------------------------------------

    def _readable_parsing(self, player: Player, now: float) -> None:
        try:
            data = player.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(player, f"recv: {e}")
            return
        if not data:
            self._fail(player, "server closed the connection")
            return
        now = time.monotonic()
        try:
            out, media = player.session.receive(data)
        except (SessionError, RTMPError) as e:
            self._fail(player, f"{type(e).__name__}: {e}")
            return
        self._send(player, out)
        if media:
            if player.sampled:
                log = player.log
                for message in media:
                    log.append((message.type_id, message.timestamp, now))
            if not player.playing and any(m.type_id == _VIDEO for m in media):
                self._now_playing(player, now)
        if player.playing:
            player.received = player.session.bytes_received

    def _count(self, player: Player, buffer: bytearray) -> None:
        try:
            n = player.sock.recv_into(buffer)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(player, f"recv: {e}")
            return
        if not n:
            self._fail(player, "server closed the connection")
            return
        player.received += n
        if player.received >= player.next_ack and player.session.ack_window:
            self._ack(player)

    def _ack(self, player: Player) -> None:
        session = player.session
        session.bytes_received = player.received
        self._send(player, session.acknowledge())
        player.next_ack = session.last_ack + session.ack_window

    # -- control ---------------------------------------------------------------------

    def _stdin(self) -> None:
        chunk = os.read(0, 4096)
        if not chunk:
            self.finished = True
            return
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            line, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            command = line.strip().decode()
            if command == "start":
                self.window = {"start": time.monotonic(), "cpu_start": _cpu_seconds()}
                for player in self.players:
                    player.window_start = player.received
                _emit(event="started", t=self.window["start"])
            elif command == "stop":
                self.window["stop"] = time.monotonic()
                self.window["cpu_stop"] = _cpu_seconds()
                for player in self.players:
                    player.window_bytes = player.received - player.window_start
                self.finished = True

    def _maybe_ready(self, now: float) -> None:
        if self.announced_ready:
            return
        timed_out = now - self.started_at > self.args.ready_timeout
        if self.ready_count + self.failed >= len(self.players) or timed_out:
            self.announced_ready = True
            errors = sorted({p.error for p in self.players if p.error})[:5]
            _emit(event="ready", playing=self.ready_count, failed=self.failed, seconds=now - self.started_at,
                  timed_out=timed_out and self.ready_count + self.failed < len(self.players), errors=errors)

    def run(self) -> None:
        epoll = self.epoll
        by_fd = self.by_fd
        buffer = bytearray(_RECV_SIZE)
        epoll.register(0, _IN)
        deadline = self.started_at + self.args.max_seconds
        self._start_more()
        while not self.finished:
            events = epoll.poll(0.25)
            now = time.monotonic()
            for fd, mask in events:
                player = by_fd.get(fd)
                if player is None:
                    if fd == 0:
                        self._stdin()
                    continue
                if player.counting and mask == _IN:
                    # The hot path: count bytes, acknowledge when a window is full.
                    self._count(player, buffer)
                    continue
                if mask & _OUT:
                    if not player.connected:
                        self._connected(player)
                    elif player.out:
                        self._flush(player)
                    if player.error or mask == _OUT:
                        continue
                if player.counting:
                    self._count(player, buffer)
                else:
                    self._readable_parsing(player, now)
            if self.to_start and self.setting_up < _MAX_SETTING_UP:
                self._start_more()
            self._maybe_ready(now)
            if now > deadline:
                break
        self._write_results()

    def _write_results(self) -> None:
        window = self.window
        start, stop = window.get("start", 0.0), window.get("stop", 0.0)
        result = {
            "players": len(self.players),
            "playing": self.ready_count,
            "failed": self.failed,
            "window": [start, stop],
            "cpu_seconds": window.get("cpu_stop", 0.0) - window.get("cpu_start", 0.0),
            "per_player": [
                {"index": p.index, "bytes": p.window_bytes, "sampled": p.sampled, "stalled": p.stalled,
                 "error": p.error, "ready_at": p.ready_at, "tcp_state": _tcp_state(p.sock),
                 "log": [entry for entry in p.log if start <= entry[2] <= stop] if p.sampled else []}
                for p in self.players
            ],
        }
        with open(self.args.out, "w") as f:
            json.dump(result, f)
        _emit(event="done", out=self.args.out)
        for player in self.players:
            if player.sock is not None:
                player.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N cheap RTMP players on one epoll loop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="live")
    parser.add_argument("--key", default="bench")
    parser.add_argument("--players", type=int, required=True)
    parser.add_argument("--sample", type=int, default=10, help="players that parse every message")
    parser.add_argument("--stalled", type=int, default=0, help="players that stop reading once playing")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this long")
    parser.add_argument("--out", required=True, help="results file (JSON)")
    args = parser.parse_args(argv)
    LoadClient(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
