"""A real local HTTP server for the http resource's tests: twisted.web on 127.0.0.1, a random port."""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

MiB = 1024 * 1024
CHUNK = 64 * 1024
BINARY = bytes(range(256))


def parse_multipart(content_type: str, body: bytes) -> dict[str, dict[str, Any]]:
    """The parts of a multipart/form-data body: field name -> file_name, content_type, data."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = {"file_name": part.get_filename(), "content_type": part.get_content_type(),
                       "data": part.get_payload(decode=True)}
    return parts


@implementer(IPullProducer)
class BigBody:
    """Writes ``size`` bytes a chunk at a time, only as fast as the connection takes them."""

    def __init__(self, request: Request, size: int, server: LocalServer) -> None:
        self.request = request
        self.remaining = size
        self.server = server
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def resumeProducing(self) -> None:
        if self.remaining <= 0:
            return
        chunk = min(CHUNK, self.remaining)
        self.remaining -= chunk
        self.server.big_sent += chunk
        self.request.write(b"x" * chunk)
        if self.remaining <= 0:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.remaining = 0


class PathsResource(Resource):
    """Every path the tests use; each request is recorded on the server."""

    isLeaf = True

    def __init__(self, server: LocalServer) -> None:
        super().__init__()
        self.server = server

    def render(self, request: Request) -> Any:
        body = request.content.read()
        path = request.path.decode()
        self.server.requests.append({
            "method": request.method.decode(), "path": path, "uri": request.uri.decode(),
            "headers": {k.decode().lower(): [v.decode() for v in vs]
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
            "body": body,
        })
        parts = path.strip("/").split("/")
        handler = getattr(self, "do_" + parts[0].replace("-", "_"), None)
        if handler is None:
            request.setResponseCode(404)
            return b"no such test path"
        return handler(request, parts[1:])

    def do_echo(self, request: Request, args: list[str]) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.responseHeaders.setRawHeaders(b"x-multi", [b"one", b"two"])
        return json.dumps({"method": request.method.decode(), "uri": request.uri.decode()}).encode()

    def do_status(self, request: Request, args: list[str]) -> bytes:
        request.setResponseCode(int(args[0]))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"status {args[0]} \u2713".encode()

    def do_binary(self, request: Request, args: list[str]) -> bytes:
        request.setHeader(b"content-type", b"application/octet-stream")
        return BINARY

    def do_not_utf8(self, request: Request, args: list[str]) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"\xff\xfe not utf-8"

    def do_latin1(self, request: Request, args: list[str]) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=iso-8859-1")
        return "caf\u00e9".encode("latin-1")

    def do_slow(self, request: Request, args: list[str]) -> Any:
        self.server.slow.append(request)
        return NOT_DONE_YET

    def do_big(self, request: Request, args: list[str]) -> Any:
        size = int(args[0]) if args else 5 * MiB
        if request.args.get(b"length") == [b"1"]:
            request.setHeader(b"content-length", str(size).encode())
        request.setHeader(b"content-type", b"text/plain")
        request.registerProducer(BigBody(request, size, self.server), False)
        return NOT_DONE_YET

    def do_headers(self, request: Request, args: list[str]) -> bytes:
        """``/headers/<count>/<size>``: ``count`` response headers ``x-h<i>``, each value ``size`` bytes."""
        count, size = int(args[0]), int(args[1])
        for i in range(count):
            request.responseHeaders.setRawHeaders(f"x-h{i}".encode(), [b"h" * size])
        return b"headers sent"

    def do_redirect(self, request: Request, args: list[str]) -> bytes:
        request.redirect(request.args[b"to"][0])
        return b""


class LocalServer:
    """The server, its port and what it has seen."""

    def __init__(self, reactor: Any = default_reactor) -> None:
        self.reactor = reactor
        self.requests: list[dict[str, Any]] = []
        self.slow: list[Request] = []
        self.big_sent = 0
        site = Site(PathsResource(self))
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> Deferred[Any]:
        for request in self.slow:
            if not request.finished and request.channel is not None:
                request.channel.transport.abortConnection()
        return self.port.stopListening()


def self_signed_certificate(host: str = "localhost") -> tuple[bytes, bytes]:
    """A fresh self-signed certificate for ``host`` and 127.0.0.1, and its key, both PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class LocalTlsServer(LocalServer):
    """The same paths over https, with a self-signed certificate (``self.certificate``)."""

    def __init__(self, reactor: Any = default_reactor) -> None:
        from twisted.internet.ssl import Certificate, PrivateCertificate

        cert_pem, key_pem = self_signed_certificate()
        self.certificate = Certificate.loadPEM(cert_pem)
        private = PrivateCertificate.loadPEM(cert_pem + key_pem)
        self.reactor = reactor
        self.requests = []
        self.slow = []
        self.big_sent = 0
        site = Site(PathsResource(self))
        site.noisy = False
        self.port = reactor.listenSSL(0, site, private.options(), interface="127.0.0.1")
        self.base = f"https://127.0.0.1:{self.port.getHost().port}"
