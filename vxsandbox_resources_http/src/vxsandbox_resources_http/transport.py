"""How requests leave the worker: guarded connections, TLS options and a size-limited body reader.

Twisted's ``Agent`` asks an endpoint factory for every connection it makes,
redirects included. The factory here hands out endpoints that resolve the
host, let the :class:`~vxsandbox_resources_http.guard.DestinationGuard`
pick an allowed address and connect to exactly that address, so the name is
never resolved a second time between the check and the connection. The URL
keeps the host name, so the ``Host`` header, SNI and certificate checks use
the name the app asked for.

Twisted's HTTP client parser keeps every response header line it reads, with
no limit of its own, so each connection's bytes pass through
:class:`_HeadLimiter` first: it counts the response head's lines and bytes
and drops the connection the moment either passes its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHostnameResolver,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory
from zope.interface import implementer

from .errors import DataLimitError, DestinationRefusedError, HeaderLimitError
from .guard import DestinationGuard, parse_address

#: ``ssl_method`` values: the seed's names, each pinning the protocol version (None: negotiate the best)
SSL_METHODS: dict[str, Any] = {
    "SSLv23": None,
    "TLSv1": TLSVersion.TLSv1_0,
    "TLSv1_1": TLSVersion.TLSv1_1,
    "TLSv1_2": TLSVersion.TLSv1_2,
    "TLSv1_3": TLSVersion.TLSv1_3,
}

#: ``verify_options`` values: the seed's OpenSSL flag names
VERIFY_OPTIONS = ("VERIFY_NONE", "VERIFY_PEER", "VERIFY_CLIENT_ONCE", "VERIFY_FAIL_IF_NO_PEER_CERT")

_DEFAULT_MINIMUM = TLSVersion.TLSv1_2
_ORDER = [TLSVersion.TLSv1_0, TLSVersion.TLSv1_1, TLSVersion.TLSv1_2, TLSVersion.TLSv1_3]


def _version_options(version: Any) -> dict[str, Any]:
    if version is None:
        return {}
    options: dict[str, Any] = {"lowerMaximumSecurityTo": version}
    if _ORDER.index(version) < _ORDER.index(_DEFAULT_MINIMUM):
        options["insecurelyLowerMinimumTo"] = version
    else:
        options["raiseMinimumTo"] = version
    return options


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS that checks neither the certificate nor the host name (``verify_options: ["VERIFY_NONE"]``)."""

    def __init__(self, hostname: str, version: Any) -> None:
        self._hostname = hostname
        self._context = CertificateOptions(verify=False, **_version_options(version)).getContext()

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if parse_address(self._hostname) is None:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        return connection


@dataclass(frozen=True)
class TlsSettings:
    """How an https request's TLS is set up: certificate checking, protocol version and trust roots."""

    verify: bool = True
    version: Any = None
    #: trust roots to use instead of the platform's (tests pass their own CA)
    trust_root: Any = None

    def creator(self, hostname: str) -> Any:
        """The TLS connection creator for a connection to ``hostname``."""
        if not self.verify:
            return _UnverifiedTLS(hostname, self.version)
        return optionsForClientTLS(hostname, trustRoot=self.trust_root,
                                   extraCertificateOptions=_version_options(self.version))


@implementer(IStreamClientEndpoint)
class GuardedEndpoint:
    """Connects to the address the guard allows for ``host``, resolved once, at connect time."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver, guard: DestinationGuard,
                 host: str, port: int) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.guard = guard
        self.host = host
        self.port = port

    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        address = await self.guard.address_for(self.resolver, self.host, self.port)
        endpoint_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return await endpoint_class(self.reactor, address, self.port).connect(factory)


@dataclass(frozen=True)
class HeadLimits:
    """How much of a response head (status line and headers) a connection may receive."""

    max_lines: int
    max_bytes: int


class _HeadLimiter(ProtocolWrapper):
    """Passes a connection's bytes to the HTTP client, counting the response head's lines and bytes.

    A head ends at its first empty line; a ``1xx`` informational head is
    followed by another, which counts against the same limits. Past a
    limit the connection is aborted and the request fails with a
    :class:`HeaderLimitError` saying which limit.
    """

    factory: _HeadLimitingFactory

    def __init__(self, factory: _HeadLimitingFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self.in_head = True
        self.head_bytes = 0
        self.header_lines = 0
        #: the status line of the current head (its start), None until it is read
        self.status: bytes | None = None
        self.line_length = 0
        self.line_start = b""
        self.error: HeaderLimitError | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self.in_head:
            self._scan(data)
            if self.error is not None:
                self.transport.abortConnection()
                return
        super().dataReceived(data)

    def _scan(self, data: bytes) -> None:
        limits = self.factory.limits
        start = 0
        while self.in_head and start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline + 1
            self.head_bytes += end - start
            if self.head_bytes > limits.max_bytes:
                self.error = HeaderLimitError(f"response headers exceed max_header_bytes ({limits.max_bytes} "
                                              "bytes); the connection was dropped")
                return
            piece = data[start:end - (newline >= 0)]
            self.line_length += len(piece)
            if len(self.line_start) < 16:
                self.line_start = (self.line_start + piece)[:16]
            start = end
            if newline < 0:
                return
            self._line_ended()
            if self.header_lines > limits.max_lines:
                self.error = HeaderLimitError(f"response has more than max_headers ({limits.max_lines}) "
                                              "header lines; the connection was dropped")
                return

    def _line_ended(self) -> None:
        empty = self.line_start in (b"", b"\r")
        line, self.line_start, self.line_length = self.line_start, b"", 0
        if self.status is None:
            if not empty:
                self.status = line
        elif not empty:
            self.header_lines += 1
        elif self.status.split(b" ")[1:2] and self.status.split(b" ")[1].startswith(b"1"):
            # "100 Continue" and friends: the real response's head follows.
            self.status = None
        else:
            self.in_head = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The client then fails the request with this reason instead of a bare "connection aborted".
        super().connectionLost(Failure(self.error) if self.error is not None else reason)


class _HeadLimitingFactory(WrappingFactory):
    protocol = _HeadLimiter

    def __init__(self, wrapped: Any, limits: HeadLimits) -> None:
        super().__init__(wrapped)
        self.limits = limits


@implementer(IStreamClientEndpoint)
class HeadLimitedEndpoint:
    """Wraps an endpoint so every connection's response head is bounded by ``limits`` (outside any TLS)."""

    def __init__(self, endpoint: Any, limits: HeadLimits) -> None:
        self.endpoint = endpoint
        self.limits = limits

    def connect(self, factory: Any) -> Deferred[Any]:
        d = self.endpoint.connect(_HeadLimitingFactory(factory, self.limits))
        # The Agent talks to the protocol it built (it calls its request()), not to the wrapper.
        d.addCallback(lambda wrapper: wrapper.wrappedProtocol)
        return d


@implementer(IAgentEndpointFactory)
class GuardedEndpointFactory:
    """Endpoints for an ``Agent``: only http and https, every connection through the guard, heads bounded."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver, guard: DestinationGuard,
                 tls: TlsSettings, head_limits: HeadLimits) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.guard = guard
        self.tls = tls
        self.head_limits = head_limits

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        scheme = uri.scheme.decode("ascii", "replace")
        if scheme not in ("http", "https"):
            raise DestinationRefusedError(f"scheme {scheme!r} is not allowed (only http and https)")
        host = uri.host.decode("ascii", "replace").strip("[]")
        endpoint: Any = GuardedEndpoint(self.reactor, self.resolver, self.guard, host, uri.port)
        if scheme == "https":
            endpoint = wrapClientTLS(self.tls.creator(host), endpoint)
        return HeadLimitedEndpoint(endpoint, self.head_limits)


class _LimitedBodyReader(Protocol):
    """Collects a response body, aborting the connection as soon as it passes the limit."""

    def __init__(self, limit: int, declared_length: Any, finished: Deferred[bytes]) -> None:
        self.limit = limit
        self.declared_length = declared_length
        self.finished: Deferred[bytes] | None = finished
        self.chunks: list[bytes] = []
        self.received = 0

    def connectionMade(self) -> None:
        if self.declared_length is not UNKNOWN_LENGTH and self.declared_length > self.limit:
            self._fail(DataLimitError(
                f"response body of {self.declared_length} bytes (its Content-Length) exceeds "
                f"data_limit of {self.limit} bytes; not read"))

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self.received += len(data)
        if self.received > self.limit:
            self._fail(DataLimitError(
                f"response body exceeds data_limit of {self.limit} bytes; "
                f"cut off after {self.received} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        finished, self.finished = self.finished, None
        if finished is None:
            return
        # PotentialDataLoss: an HTTP/1.0 body without a length ends when the connection does.
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(b"".join(self.chunks))
        else:
            finished.errback(reason)
        self.chunks = []

    def abort(self) -> None:
        """Stop reading and drop the connection (the request was cancelled)."""
        self.finished = None
        self.chunks = []
        if self.transport is not None:
            self.transport.stopProducing()

    def _fail(self, error: Exception) -> None:
        finished = self.finished
        self.abort()
        if finished is not None:
            finished.errback(error)


def read_body(response: Any, limit: int) -> Deferred[bytes]:
    """Read ``response``'s body, failing with :class:`DataLimitError` past ``limit`` bytes.

    The body is read as it arrives and the connection is aborted the moment
    the limit is passed (or at once, when ``Content-Length`` already says
    it would be), so a huge body never sits in memory. Cancelling the
    returned Deferred aborts the connection too.

    :param response: an ``IResponse`` whose body has not been delivered yet.
    """
    reader: _LimitedBodyReader | None = None
    finished: Deferred[bytes] = Deferred(lambda d: reader.abort() if reader is not None else None)
    reader = _LimitedBodyReader(limit, response.length, finished)
    response.deliverBody(reader)
    return finished
