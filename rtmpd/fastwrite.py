"""Writing a player's queued chunks with one system call when Twisted has nothing buffered.

Twisted's ``transport.write`` always buffers: it registers the socket for
writing, and the reactor sends on its next iteration and unregisters it.
For a relay that cycle per player per message is most of the fan-out cost
(see docs/performance.md). When the transport has nothing buffered, sending
straight away with ``sendmsg`` (gather write, no join) is the same thing
Twisted would do next iteration, only sooner. Whatever the kernel does not
take goes through ``transport.writeSequence``, so Twisted's ordering and
producer flow control hold: bytes are never reordered, a non-empty buffer is
never bypassed, and a full buffer still pauses the producer.

This relies on private details of ``twisted.internet.abstract.FileDescriptor``
(``dataBuffer``, ``offset``, ``_tempDataLen``, ``_writeDisconnected``) and
``tcp.Connection.socket``; tests/test_fastwrite.py fails if a Twisted upgrade
changes them. Transports that are not plain TCP (TLS, in-memory) always take
the ordinary path.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import tcp

#: Most buffers handed to one sendmsg (IOV_MAX is 1024 on Linux).
MAX_BUFFERS = 512


def _idle_tcp(transport: object) -> bool:
    """True when ``transport`` is a connected TCP transport with an empty write buffer."""
    return (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
    )


def write_chunks(transport, chunks: Sequence[bytes]) -> int:
    """Write ``chunks`` in order on ``transport``; returns how many bytes went straight to the kernel."""
    if len(chunks) > MAX_BUFFERS or not _idle_tcp(transport):
        transport.writeSequence(chunks)
        return 0
    try:
        sent = transport.socket.sendmsg(chunks)
    except OSError:
        # Would block, or the connection is broken: Twisted's own path handles both.
        transport.writeSequence(chunks)
        return 0
    if sent == sum(map(len, chunks)):
        return sent
    rest: list[bytes] = []
    skip = sent
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        rest.append(chunk[skip:] if skip else chunk)
        skip = 0
    transport.writeSequence(rest)
    return sent
