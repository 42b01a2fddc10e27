"""Tests for the size-limited body reader: it stops reading and drops the connection past the limit."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from vxsandbox_resources_http import DataLimitError
from vxsandbox_resources_http.transport import read_body


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
