"""Server memory idle and per idle connection: N clients that finish the handshake and ``connect``, then wait.

    python -m benchmarks.idle_memory --connections 1000
    python -m benchmarks.idle_memory --connections 0 --rtmpd-arg=--tls --rtmpd-arg=on

Starts ``twistd -n rtmpd`` on a loopback port (listening only: no manhole, no HTTP, unless given with
``--rtmpd-arg``), prints its idle RSS (and how much of it is anonymous memory, and whether pyOpenSSL is
mapped), then the difference per connection, and stops the server.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import time

from benchmarks.servers import _twistd
from rtmpd.core.chunks import ChunkWriter
from rtmpd.core.commands import encode_command
from rtmpd.core.handshake import HANDSHAKE_SIZE, ClientHandshake


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_map(pid: int) -> tuple[int, bool]:
    """(anonymous kB, whether cryptography (under pyOpenSSL) is mapped) of process ``pid``."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        anonymous = next(int(line.split()[1]) for line in rollup if line.startswith("Anonymous:"))
    with open(f"/proc/{pid}/maps") as maps:
        tls = any("/cryptography/" in line for line in maps)
    return anonymous, tls


def open_idle(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    handshake = ClientHandshake()
    sock.sendall(handshake.initial())
    reply = b""
    while len(reply) < 1 + 2 * HANDSHAKE_SIZE:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed during the handshake")
        reply += chunk
    sock.sendall(handshake.receive(reply[: 1 + 2 * HANDSHAKE_SIZE]))
    connect = encode_command("connect", 1.0, {"app": "live", "tcUrl": f"rtmp://127.0.0.1:{port}/live"})
    sock.sendall(ChunkWriter().write(3, connect))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--port", type=int, default=19777)
    parser.add_argument("--rtmpd-arg", action="append", default=[], help="extra rtmpd option (repeatable)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 100)), hard))
    server = subprocess.Popen(
        [
            _twistd(),
            "-n",
            "--pidfile=",
            "rtmpd",
            "--port",
            f"tcp:{args.port}:interface=127.0.0.1",
            "--log-level",
            "warn",
            *args.rtmpd_arg,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sockets = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(1)  # let start-up allocations settle before the baseline
        base = rss_kb(server.pid)
        anonymous, tls = memory_map(server.pid)
        print(f"idle RSS {base} kB ({anonymous} kB anonymous); cryptography mapped: {'yes' if tls else 'no'}")
        if not args.connections:
            return
        sockets = [open_idle(args.port) for _ in range(args.connections)]
        time.sleep(2)
        after = rss_kb(server.pid)
        print(
            f"RSS {base} kB -> {after} kB with {args.connections} idle connections: "
            f"{(after - base) / args.connections:.1f} kB per connection"
        )
    finally:
        for sock in sockets:
            sock.close()
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
