"""The direct-send write path keeps Twisted's ordering and flow-control guarantees.

These tests run over real loopback TCP so they fail if a Twisted upgrade
changes the private buffer attributes rtmpd.fastwrite relies on.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, protocol, reactor, tcp
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from rtmpd import fastwrite


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class Sink(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self)


class Collector(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.expected = 0
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.expected and len(self.data) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.data))


class FastWriteTests(TestCase):
    async def connected(self, reading: bool = True):
        """A server-side tcp transport connected to a client collecting what it receives."""
        server_factory = protocol.Factory.forProtocol(Sink)
        server_factory.made = defer.Deferred()
        port = reactor.listenTCP(0, server_factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        collector = Collector()
        client = protocol.ClientCreator(reactor, lambda: collector)
        client_proto = await client.connectTCP("127.0.0.1", port.getHost().port)
        server_proto = await server_factory.made
        self.addCleanup(server_proto.transport.abortConnection)
        if not reading:
            client_proto.transport.stopReading()
        return server_proto.transport, collector, client_proto

    async def test_twisted_buffer_attributes_mean_what_fastwrite_assumes(self) -> None:
        transport, collector, _ = await self.connected()
        self.assertIsInstance(transport, tcp.Connection)
        self.assertEqual((transport.dataBuffer, transport.offset, transport._tempDataLen), (b"", 0, 0))
        self.assertFalse(transport._writeDisconnected)
        self.assertTrue(fastwrite._idle_tcp(transport))
        transport.write(b"queued")
        # A write is buffered, not sent, until the reactor runs: exactly what _idle_tcp must see.
        self.assertEqual(transport._tempDataLen, 6)
        self.assertFalse(fastwrite._idle_tcp(transport))
        collector.expected = 6
        await collector.done
        self.assertTrue(fastwrite._idle_tcp(transport))

    async def test_idle_transport_sends_at_once_in_order(self) -> None:
        transport, collector, _ = await self.connected()
        chunks = [b"a" * 10, b"b" * 20, b"c" * 5]
        collector.expected = 35
        self.assertEqual(fastwrite.write_chunks(transport, chunks), 35)
        # Nothing was left for the reactor: the buffer is empty right after the call.
        self.assertEqual((transport.dataBuffer, transport._tempDataLen), (b"", 0))
        self.assertEqual(await collector.done, b"a" * 10 + b"b" * 20 + b"c" * 5)

    async def test_buffered_data_is_never_bypassed(self) -> None:
        transport, collector, _ = await self.connected()
        transport.write(b"first")
        self.assertEqual(fastwrite.write_chunks(transport, [b"second"]), 0)
        self.assertEqual(transport._tempDataLen, len(b"firstsecond"))
        collector.expected = len(b"firstsecond")
        self.assertEqual(await collector.done, b"firstsecond")

    async def test_partial_send_buffers_the_rest_and_pauses_the_producer(self) -> None:
        transport, collector, client = await self.connected(reading=False)
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        producer = Producer()
        transport.registerProducer(producer, True)
        chunks = [bytes([i % 251]) * 50_000 for i in range(8)]
        total = sum(map(len, chunks))
        sent = fastwrite.write_chunks(transport, chunks)
        self.assertLess(sent, total)
        self.assertEqual(len(transport.dataBuffer) - transport.offset + transport._tempDataLen, total - sent)
        self.assertEqual(producer.paused, 1)
        # Once the peer reads, Twisted drains the remainder in order and resumes the producer.
        collector.expected = total
        client.transport.startReading()
        self.assertEqual(await collector.done, b"".join(chunks))
        self.assertEqual(producer.resumed, 1)
        transport.unregisterProducer()

    def test_non_tcp_transport_takes_the_ordinary_path(self) -> None:
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        self.assertEqual(fastwrite.write_chunks(transport, [b"x", b"y"]), 0)
        self.assertEqual(transport.value(), b"xy")
