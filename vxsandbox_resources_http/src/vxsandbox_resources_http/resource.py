"""The ``http`` resource: lets a sandboxed app make HTTP requests through treq, to guarded destinations.

Commands ``get``, ``head``, ``post``, ``put``, ``patch`` and ``delete`` take
the seed's fields (``url``, ``headers``, ``data``, ``files``,
``verify_options``, ``ssl_method``) and reply with ``code``, ``body`` and
the response ``headers``. See the distribution's README for every field,
reply and config option.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hyperlink
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent, _HTTP11ClientFactory
from twisted.web.http_headers import Headers

from vxsandbox_core.dispatch import CommandError
from vxsandbox_core.protocol import Command
from vxsandbox_core.resources import SandboxResource

from .config import HttpClientConfig
from .errors import DataLimitError, DestinationRefusedError
from .guard import DestinationGuard
from .transport import (
    SSL_METHODS,
    VERIFY_OPTIONS,
    GuardedEndpointFactory,
    HeadLimits,
    TlsSettings,
    read_body,
)

if TYPE_CHECKING:
    from vxsandbox_core.dispatch import SandboxApi

log = logging.getLogger(__name__)

#: content types that are text even though they are not ``text/*``
_TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/javascript", "application/x-javascript",
    "application/ecmascript", "application/x-www-form-urlencoded", "application/xhtml+xml",
    "application/rss+xml", "application/atom+xml", "application/soap+xml", "image/svg+xml",
})
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class HttpRequest:
    """A request as the app asked for it, validated."""

    method: str
    url: str
    host: str
    headers: Headers
    data: bytes | None
    files: dict[str, tuple[str, str, bytes]] | None
    tls: TlsSettings


def _fail(field: str, problem: str) -> CommandError:
    return CommandError(f"{field}: {problem}")


def _parse_url(command: Command) -> tuple[str, str]:
    url = command.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _fail("url", f"expected a non-empty string (the URL to request), got {url!r}")
    try:
        parsed = hyperlink.URL.from_text(url.strip())
    except (hyperlink.URLParseError, ValueError) as e:
        raise _fail("url", f"{url!r} is not a valid URL ({e})")
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        raise _fail("url", f"scheme {scheme or 'none'!r} is not allowed (only http and https)")
    if not parsed.host:
        raise _fail("url", f"{url!r} has no host")
    return url.strip(), parsed.host


def _parse_headers(command: Command) -> Headers:
    raw = command.get("headers")
    headers = Headers()
    if raw is None:
        return headers
    if not isinstance(raw, dict):
        raise _fail("headers", f"expected a mapping of header names to lists of strings, got {raw!r}")
    for name, values in raw.items():
        if not name or not set(name) <= _TOKEN_CHARS:
            raise _fail("headers", f"{name!r} is not a valid header name")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _fail(f"headers[{name!r}]", f"expected a list of strings, got {values!r}")
        for value in values:
            # Twisted would quietly turn these into spaces; a header the app did not write is worse than an error.
            if any(c in value for c in "\r\n\0"):
                raise _fail(f"headers[{name!r}]", "values may not contain CR, LF or NUL")
        headers.setRawHeaders(name.encode("ascii"), [v.encode("utf-8") for v in values])
    return headers


def _parse_files(command: Command) -> dict[str, tuple[str, str, bytes]] | None:
    raw = command.get("files")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail("files", "expected a mapping of field names to "
                             f"{{file_name, content_type, data (base64)}}, got {raw!r}")
    files = {}
    for name, spec in raw.items():
        where = f"files[{name!r}]"
        if not isinstance(spec, dict):
            raise _fail(where, f"expected a mapping with file_name, content_type and data, got {spec!r}")
        for key in ("file_name", "content_type", "data"):
            if not isinstance(spec.get(key), str):
                raise _fail(f"{where}.{key}", f"expected a string, got {spec.get(key)!r}")
        try:
            content = base64.b64decode(spec["data"], validate=True)
        except (binascii.Error, ValueError):
            raise _fail(f"{where}.data", "is not valid base64")
        files[name] = (spec["file_name"], spec["content_type"], content)
    return files


def _parse_tls(command: Command, trust_root: Any) -> TlsSettings:
    verify = True
    options = command.get("verify_options")
    if options is not None:
        if not isinstance(options, list) or not options:
            raise _fail("verify_options", f"expected a non-empty list of {', '.join(VERIFY_OPTIONS)}, got {options!r}")
        unknown = [o for o in options if o not in VERIFY_OPTIONS]
        if unknown:
            raise _fail("verify_options", f"unknown option(s) {unknown!r}; expected {', '.join(VERIFY_OPTIONS)}")
        # VERIFY_NONE is 0 in OpenSSL, so with any other flag the seed verified.
        verify = any(o != "VERIFY_NONE" for o in options)
    method = command.get("ssl_method")
    if method is not None and method not in SSL_METHODS:
        hint = " (SSLv3 is insecure and no longer available)" if method == "SSLv3" else ""
        raise _fail("ssl_method", f"{method!r} is not supported{hint}; expected one of {', '.join(SSL_METHODS)}")
    return TlsSettings(verify=verify, version=SSL_METHODS.get(method) if method else None, trust_root=trust_root)


def parse_request(method: str, command: Command, trust_root: Any = None) -> HttpRequest:
    """Validate a command's fields into an :class:`HttpRequest`.

    :raises CommandError: a field is missing or wrong; the reason names it.
    """
    url, host = _parse_url(command)
    headers = _parse_headers(command)
    data = command.get("data")
    if data is not None and not isinstance(data, str):
        raise _fail("data", f"expected a string (the request body) or null, got {type(data).__name__}")
    files = _parse_files(command)
    if data is not None and files is not None:
        raise _fail("data", "cannot be combined with files (files sends a multipart/form-data body)")
    return HttpRequest(method, url, host, headers, None if data is None else data.encode("utf-8"), files,
                       _parse_tls(command, trust_root))


def _content_type(headers: Headers) -> tuple[str | None, str | None]:
    raw = headers.getRawHeaders(b"content-type")
    if not raw:
        return None, None
    parts = raw[0].decode("latin-1").split(";")
    mime = parts[0].strip().lower() or None
    charset = None
    for param in parts[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return mime, charset


def encode_body(body: bytes, headers: Headers) -> dict[str, str]:
    """The reply fields for a body: text as ``body``, anything else base64 with ``body_encoding: base64``.

    A body is text when its content type is textual (or missing) and it
    decodes in its declared charset (UTF-8 when none is declared).
    """
    mime, charset = _content_type(headers)
    textual = (mime is None or mime.startswith("text/") or mime in _TEXT_TYPES
               or mime.endswith("+json") or mime.endswith("+xml"))
    if textual:
        try:
            return {"body": body.decode(charset or "utf-8")}
        except (UnicodeDecodeError, LookupError):
            pass
    return {"body": base64.b64encode(body).decode("ascii"), "body_encoding": "base64"}


def response_headers(headers: Headers) -> dict[str, list[str]]:
    """Response headers as the app sees them: name to list of values."""
    result = {}
    for name, values in headers.getAllRawHeaders():
        decoded = [v.decode("latin-1") for v in values]
        # Twisted's ContentDecoderAgent leaves an empty Content-Encoding on responses the server never encoded.
        if name.lower() == b"content-encoding" and not any(decoded):
            continue
        result[name.decode("latin-1")] = decoded
    return result


def describe_failure(error: BaseException) -> str:
    """A one-line reason for a failed request, digging into Twisted's wrapped failures."""
    nested = getattr(error, "reasons", None)
    if nested:
        return "; ".join(describe_failure(f.value) if isinstance(f, Failure) else str(f) for f in nested)
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, DestinationRefusedError) else text


def _find(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    if isinstance(error, kind):
        return error
    for f in getattr(error, "reasons", None) or ():
        found = _find(f.value, kind) if isinstance(f, Failure) else None
        if found is not None:
            return found
    return None


def _timed_out(result: Any, timeout: float) -> Any:
    # Agent wraps the CancelledError of a timed-out request in ResponseNeverReceived and the
    # like, which the default translation lets through; any failure after a timeout is the timeout.
    if isinstance(result, Failure):
        raise defer.TimeoutError(timeout, "http request")
    return result


class _QuietClientFactory(_HTTP11ClientFactory):
    # A factory per connection, each logging "Starting factory" and "Stopping
    # factory" at INFO: two lines per app request that tell an operator nothing.
    noisy = False


class _QuietConnectionPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


class HttpClientResource(SandboxResource):
    """Makes HTTP requests for the sandbox (the seed's ``HttpClientResource``), to guarded destinations only.

    Config: see :class:`~vxsandbox_resources_http.config.HttpClientConfig`.
    """

    CONFIG_CLASS = HttpClientConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")
        self.guard = DestinationGuard(self.options.allowed_hosts, self.options.denied_hosts,
                                      self.options.allowed_hosts_only)
        reactor = getattr(worker, "reactor", None)
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        #: how host names are resolved (an ``IHostnameResolver``; the reactor's, which never blocks it)
        self.resolver = reactor.nameResolver
        #: trust roots for https (``None``: the platform's); tests and private CAs set their own
        self.trust_root: Any = None
        self._in_flight: set[Deferred[Any]] = set()
        #: requests in flight per sandbox_id (an entry is dropped when it reaches zero)
        self._per_tenant: dict[str, int] = {}

    def teardown(self) -> None:
        """Cancel requests still in flight, closing their connections."""
        for d in list(self._in_flight):
            d.cancel()

    async def _perform(self, request: HttpRequest) -> tuple[Any, bytes]:
        factory = GuardedEndpointFactory(self.reactor, self.resolver, self.guard, request.tls,
                                         HeadLimits(self.options.max_headers, self.options.max_header_bytes))
        # No connection reuse: each request's TLS settings and guard decision are its own.
        pool = _QuietConnectionPool(self.reactor, persistent=False)
        agent: Any = Agent.usingEndpointFactory(self.reactor, factory, pool=pool)
        if self.options.follow_redirects:
            agent = RedirectAgent(agent, redirectLimit=self.options.max_redirects)
        # A client per request, so sandboxes never share a cookie jar.
        client = HTTPClient(agent)
        files = None if request.files is None else {
            name: (file_name, content_type, io.BytesIO(content))
            for name, (file_name, content_type, content) in request.files.items()}
        response = await client.request(
            request.method, request.url, headers=request.headers, data=request.data,
            files=files,  # type: ignore[arg-type]  # treq reads file objects, whatever its hints say
            allow_redirects=False, unbuffered=True, reactor=self.reactor)
        if request.method == "HEAD":
            return response, b""
        body = await read_body(response, self.options.data_limit)
        return response, body

    def _check_ipv6_literal(self, request: HttpRequest) -> None:
        try:
            self.guard.check_name(request.host)
            self.guard.choose(request.host, [request.host])
        except DestinationRefusedError as e:
            raise CommandError(f"{request.method} {request.url} refused: {e}")
        # hyperlink (which treq parses URLs with) cannot encode an IPv6 host; redirects to one do work.
        raise _fail("url", f"IPv6 address literals such as {request.host!r} are not supported; "
                           "use a host name that resolves to the address")

    async def _request(self, api: SandboxApi, method: str, command: Command) -> Command:
        request = parse_request(method, command, self.trust_root)
        if ":" in request.host:
            self._check_ipv6_literal(request)
        self._check_budget(api.sandbox_id, method, request.url)
        tenant = api.sandbox_id
        self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1
        try:
            return await self._send(method, command, request)
        finally:
            self._per_tenant[tenant] -= 1
            if not self._per_tenant[tenant]:
                del self._per_tenant[tenant]

    def _check_budget(self, tenant: str, method: str, url: str) -> None:
        # Slow servers hold a file descriptor per request: unbudgeted, a few tenants could
        # take every descriptor the worker has (EMFILE for everyone, the broker included).
        options = self.options
        if self._per_tenant.get(tenant, 0) >= options.max_concurrent_requests_per_tenant:
            raise CommandError(f"{method} {url} refused: this sandbox already has "
                               f"max_concurrent_requests_per_tenant ({options.max_concurrent_requests_per_tenant}) "
                               "http requests in flight; wait for a reply first")
        if len(self._in_flight) >= options.max_concurrent_requests:
            raise CommandError(f"{method} {url} refused: the worker already has max_concurrent_requests "
                               f"({options.max_concurrent_requests}) http requests in flight; try again later")

    async def _send(self, method: str, command: Command, request: HttpRequest) -> Command:
        d = Deferred.fromCoroutine(self._perform(request))
        d.addTimeout(self.options.timeout, self.reactor, onTimeoutCancel=_timed_out)
        self._in_flight.add(d)
        try:
            response, body = await d
        except defer.TimeoutError:
            raise CommandError(f"{method} {request.url} timed out after {self.options.timeout:g} seconds")
        except Exception as e:
            # Agent wraps a cancelled request's CancelledError in ResponseNeverReceived and the like.
            if _find(e, defer.CancelledError) is not None:
                raise CommandError(f"{method} {request.url} was cancelled (the worker is stopping)")
            refused = _find(e, DestinationRefusedError)
            if refused is not None:
                raise CommandError(f"{method} {request.url} refused: {refused}")
            too_big = _find(e, DataLimitError)
            if too_big is not None:
                raise CommandError(f"{method} {request.url} failed: {too_big}")
            raise CommandError(f"{method} {request.url} failed: {describe_failure(e)}")
        finally:
            self._in_flight.discard(d)
        return self.reply(command, code=response.code, headers=response_headers(response.headers),
                          **encode_body(body, response.headers))

    async def handle_get(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP GET request."""
        return await self._request(api, "GET", command)

    async def handle_head(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP HEAD request (the reply's body is empty)."""
        return await self._request(api, "HEAD", command)

    async def handle_post(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP POST request."""
        return await self._request(api, "POST", command)

    async def handle_put(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP PUT request."""
        return await self._request(api, "PUT", command)

    async def handle_patch(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP PATCH request."""
        return await self._request(api, "PATCH", command)

    async def handle_delete(self, api: SandboxApi, command: Command) -> Command:
        """Make an HTTP DELETE request."""
        return await self._request(api, "DELETE", command)
