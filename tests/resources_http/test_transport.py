"""Tests for the body reader and the head limiter: each stops reading and drops the connection past its limit."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from vxsandbox_resources_http import DataLimitError, HeaderLimitError
from vxsandbox_resources_http.transport import HeadLimits, _HeadLimitingFactory, read_body


class FakeTransport:
    """Records whether the reader asked to stop."""

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """A response whose body the test feeds by hand."""

    def __init__(self, length: Any = UNKNOWN_LENGTH) -> None:
        self.length = length
        self.transport = FakeTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class ReadBodyTests(SynchronousTestCase):
    """read_body's limit, completion and cancellation."""

    def test_body_within_limit(self) -> None:
        """Chunks up to the limit are joined when the body ends."""
        response = FakeResponse()
        d = read_body(response, 10)
        response.protocol.dataReceived(b"12345")
        response.protocol.dataReceived(b"67890")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(d), b"1234567890")

    def test_stops_reading_past_the_limit(self) -> None:
        """The first byte past the limit fails the read and stops the transport; later data is ignored."""
        response = FakeResponse()
        d = read_body(response, 10)
        response.protocol.dataReceived(b"123456")
        response.protocol.dataReceived(b"789012")
        self.assertTrue(response.transport.stopped)
        failure = self.failureResultOf(d, DataLimitError)
        self.assertIn("cut off after 12 bytes", str(failure.value))
        response.protocol.dataReceived(b"more")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(response.protocol.chunks, [])

    def test_declared_length_over_limit_is_not_read(self) -> None:
        """A Content-Length over the limit fails at once, before any body byte."""
        response = FakeResponse(length=11)
        failure = self.failureResultOf(read_body(response, 10), DataLimitError)
        self.assertTrue(response.transport.stopped)
        self.assertIn("11 bytes (its Content-Length)", str(failure.value))

    def test_body_ending_with_the_connection(self) -> None:
        """A body without a length that ends with the connection (PotentialDataLoss) is complete."""
        response = FakeResponse()
        d = read_body(response, 10)
        response.protocol.dataReceived(b"abc")
        response.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.assertEqual(self.successResultOf(d), b"abc")

    def test_cancel_drops_the_connection(self) -> None:
        """Cancelling the read (a timeout) stops the transport."""
        response = FakeResponse()
        d = read_body(response, 10)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(response.transport.stopped)


class Received(Protocol):
    """Keeps what reaches the HTTP client's side and how its connection ended."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason


class HeadLimiterTests(SynchronousTestCase):
    """The head limiter counts only the response head, across chunks and 1xx heads."""

    def connect(self, limits: HeadLimits) -> tuple[Any, Received, StringTransport]:
        client = Received()
        factory = _HeadLimitingFactory(Factory.forProtocol(lambda: client), limits)
        wrapper = factory.buildProtocol(None)
        transport = StringTransport()
        wrapper.makeConnection(transport)
        return wrapper, client, transport

    def test_informational_head_then_body_pass_byte_by_byte(self) -> None:
        """A 100 Continue head, the real head and a body of many lines pass whole, even one byte at a time."""
        wrapper, client, transport = self.connect(HeadLimits(max_lines=2, max_bytes=200))
        raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
               + b"body line\n" * 100)
        for i in range(len(raw)):
            wrapper.dataReceived(raw[i:i + 1])
        self.assertEqual(client.data, raw)
        self.assertFalse(transport.disconnecting)

    def test_one_line_too_many_aborts_with_the_reason(self) -> None:
        """A third header line over max_lines 2 is never passed on; the client learns why."""
        wrapper, client, transport = self.connect(HeadLimits(max_lines=2, max_bytes=200))
        wrapper.dataReceived(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        self.assertEqual(client.data, b"")
        self.assertTrue(transport.disconnecting)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(client.reason.value, HeaderLimitError)
        self.assertIn("max_headers (2)", str(client.reason.value))

    def test_bytes_past_the_limit_abort(self) -> None:
        """A head longer than max_bytes, even in one line with no end, is cut off."""
        wrapper, client, transport = self.connect(HeadLimits(max_lines=100, max_bytes=100))
        wrapper.dataReceived(b"HTTP/1.1 200 OK\r\nA: " + b"a" * 50)
        wrapper.dataReceived(b"a" * 50)
        self.assertIsNone(client.reason)
        self.assertTrue(transport.disconnecting)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertIn("max_header_bytes (100 bytes)", str(client.reason.value))
