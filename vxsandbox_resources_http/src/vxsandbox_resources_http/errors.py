"""Errors of the http resource; every one derives from HttpResourceError."""

from __future__ import annotations

from vxsandbox_core.errors import VxSandboxError


class HttpResourceError(VxSandboxError):
    """Base of every error the http resource raises on purpose."""


class DestinationRefusedError(HttpResourceError):
    """The destination guard refused a host or address; the message says which and by what rule."""


class DataLimitError(HttpResourceError):
    """A response body is larger than the configured ``data_limit``."""


class HeaderLimitError(DataLimitError):
    """A response's headers pass ``max_headers`` lines or ``max_header_bytes`` bytes."""
