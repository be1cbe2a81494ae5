"""The benchmark's publisher: replays the test stream's FLV tags to a server, paced or flat out.

Run by ``benchmarks.run`` as its own process, so its CPU is never counted
as the server's and a busy load client cannot make it late::

    python -m benchmarks.publisher --port 1935 --media FILE --mode realtime --log sends.json

``realtime`` sends each tag when its timestamp is due (like ``ffmpeg -re``),
looping the file with shifted timestamps, and records when each audio/video
message was completely handed to the kernel (``time.monotonic()``, which is
CLOCK_MONOTONIC and so comparable with the load client's clock). ``flat``
sends as fast as the server takes it, or at ``--rate`` bytes/s (the ingest
scenario).

Protocol on stdout/stdin (one JSON object per output line): it prints
``{"event": "ready"}`` once the server accepted the publish; a ``mark`` line
on stdin is answered with the bytes sent so far; ``stop`` (or end of stdin,
or ``--max-seconds``) ends it, writing the send log first.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

from benchmarks.media import MediaFile, load_media
from benchmarks.session import ClientSession, set_data_frame
from rtmpd.core.messages import Message, MessageType

_CSID = {int(MessageType.AUDIO): 4, int(MessageType.VIDEO): 6, int(MessageType.DATA_AMF0): 5}
_SEND_BLOCK = 1 << 20


def _emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Publisher:
    """A connected, publishing client socket plus the send log."""

    def __init__(self, host: str, port: int, app: str, key: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=20)
        self.session = ClientSession(app, key, "publish", tc_url=f"rtmp://{host}:{port}/{app}")
        self.stop = threading.Event()
        self.bytes_sent = 0
        #: (type, timestamp, monotonic time the message was fully sent, payload size)
        self.sends: list[tuple[int, int, float, int]] = []

    def setup(self) -> None:
        """Handshake, connect, createStream, publish; raises SessionError or OSError on failure."""
        self.sock.sendall(self.session.initial())
        while not self.session.ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection before publishing started")
            out, _ = self.session.receive(data)
            if out:
                self.sock.sendall(out)
        self.sock.settimeout(None)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        # Acknowledgements and pings from the server must be read, or its writes would block.
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.stop.set()

    def _message(self, tag, offset: int) -> Message:
        payload = set_data_frame(tag.payload) if tag.type_id == MessageType.DATA_AMF0 else tag.payload
        return Message(tag.type_id, tag.timestamp + offset, self.session.stream_id, payload)

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)
        self.bytes_sent += len(data)

    def run_realtime(self, media: MediaFile, deadline: float) -> None:
        start = time.monotonic()
        loop = 0
        while not self.stop.is_set():
            offset = loop * media.period_ms
            for tag in media.tags:
                if tag.is_header and loop:
                    continue
                due = start + (tag.timestamp + offset) / 1000
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                if self.stop.is_set() or now > deadline:
                    return
                self._send(self.session.write(_CSID[tag.type_id], self._message(tag, offset)))
                if tag.type_id != MessageType.DATA_AMF0:
                    self.sends.append((tag.type_id, (tag.timestamp + offset) & 0xFFFFFFFF, time.monotonic(),
                                       len(tag.payload)))
            loop += 1

    def _encode_pass(self, media: MediaFile, loop: int) -> bytes:
        offset = loop * media.period_ms
        return b"".join(self.session.write(_CSID[tag.type_id], self._message(tag, offset))
                        for tag in media.tags if not (tag.is_header and loop))

    def run_flat(self, media: MediaFile, deadline: float, rate: float = 0.0) -> None:
        """Send as fast as the server takes it or, with ``rate`` (bytes/s), at that average rate."""
        # Past the first pass, every pass encodes to the same bytes: each message's header
        # carries only a delta from the previous one on its chunk stream, and those deltas
        # repeat. So passes 1, 2, ... are one buffer sent again and again, and the
        # publisher's CPU goes into the socket, not into Python. Checked, not assumed:
        first, second, third = (self._encode_pass(media, loop) for loop in range(3))
        repeating = second == third
        passes = [first, second, third]
        loop = 0
        start = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < deadline:
            if loop < len(passes):
                data = passes[loop]
            elif repeating:
                data = second
            else:
                data = self._encode_pass(media, loop)
            view = memoryview(data)
            for block in range(0, len(view), _SEND_BLOCK):
                if rate:
                    ahead = self.bytes_sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                self._send(view[block : block + _SEND_BLOCK])
                if self.stop.is_set():
                    return
            loop += 1


def _control(publisher: Publisher) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command == "mark":
            _emit(event="mark", bytes=publisher.bytes_sent, t=time.monotonic())
        elif command == "stop":
            break
    publisher.stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="live")
    parser.add_argument("--key", default="bench")
    parser.add_argument("--media", required=True, help="FLV file to replay")
    parser.add_argument("--mode", choices=("realtime", "flat"), default="realtime")
    parser.add_argument("--rate", type=float, default=0.0, help="flat mode: average bytes/s (0: unlimited)")
    parser.add_argument("--log", help="write the send log (JSON) here when stopping")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args(argv)

    media = load_media(args.media)
    publisher = Publisher(args.host, args.port, args.app, args.key)
    publisher.setup()
    _emit(event="ready", stream_id=publisher.session.stream_id, payload_rate=media.payload_rate)
    threading.Thread(target=_control, args=(publisher,), daemon=True).start()
    deadline = time.monotonic() + args.max_seconds
    try:
        if args.mode == "realtime":
            publisher.run_realtime(media, deadline)
        else:
            publisher.run_flat(media, deadline, args.rate)
    except OSError as e:
        _emit(event="error", error=str(e))
    finally:
        if args.log:
            with open(args.log, "w") as f:
                json.dump({"bytes_sent": publisher.bytes_sent, "sends": publisher.sends}, f)
        _emit(event="done", bytes=publisher.bytes_sent)
        publisher.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
